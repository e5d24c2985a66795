/* test_comm_threads.h - a communicator over threads of one process, for
 * tests that run several model shards side by side (tensor-parallel ranks as
 * threads): all-reduce (F32, summed in rank order so every rank holds the
 * same bits) and barrier; everything else is an error. Host memory only, so
 * a device backend's forward pass stages through the host as it does for an
 * MPI comm. Usage: tc_shared sh = {.n = T}; pthread_barrier_init(&sh.bar,
 * NULL, T); tc_rank r = {&sh, t}; comm c = {&tc_ops, &r}. */
#pragma once
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "worker/comm.h"

#define TC_MAX_RANKS 8

typedef struct tc_shared {
    int n;
    pthread_barrier_t bar;
    float *ptr[TC_MAX_RANKS];
} tc_shared;
typedef struct tc_rank {
    tc_shared *sh;
    int rank;
} tc_rank;

static int tc_rank_of(comm *c) { return ((tc_rank *)c->impl)->rank; }
static int tc_size(comm *c) { return ((tc_rank *)c->impl)->sh->n; }
static cv_status tc_none(cv_err *e) { return cv_err_set(e, CV_EINTERNAL, "not in the test comm"); }
static cv_status tc_send(comm *c, const void *b, size_t n, int p, int tag, cv_err *e) { return tc_none(e); }
static cv_status tc_recv(comm *c, void *b, size_t n, int p, int tag, cv_err *e) { return tc_none(e); }
static cv_status tc_isend(comm *c, const void *b, size_t n, int p, int tag, comm_req **r, cv_err *e)
{
    return tc_none(e);
}
static cv_status tc_irecv(comm *c, void *b, size_t n, int p, int tag, comm_req **r, cv_err *e)
{
    return tc_none(e);
}
static cv_status tc_wait(comm *c, comm_req *r, cv_err *e) { return tc_none(e); }
static cv_status tc_bcast(comm *c, void *b, size_t n, int root, cv_err *e) { return tc_none(e); }
static cv_status tc_gatherv(comm *c, const void *s, size_t n, void *r, const size_t *rc,
                            const size_t *d, int root, cv_err *e)
{
    return tc_none(e);
}
static cv_status tc_barrier(comm *c, cv_err *e)
{
    pthread_barrier_wait(&((tc_rank *)c->impl)->sh->bar);
    return CV_OK;
}
static cv_status tc_allreduce(comm *c, void *buf, size_t count, comm_dtype dt, cv_err *e)
{
    tc_rank *tc = c->impl;
    tc_shared *sh = tc->sh;
    if (dt != COMM_F32)
        return tc_none(e);
    sh->ptr[tc->rank] = buf;
    pthread_barrier_wait(&sh->bar);
    float *tmp = malloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) {
        float s = 0;
        for (int r = 0; r < sh->n; r++)
            s += sh->ptr[r][i];
        tmp[i] = s;
    }
    pthread_barrier_wait(&sh->bar); /* everyone has read every buffer */
    memcpy(buf, tmp, count * sizeof(float));
    free(tmp);
    return CV_OK;
}
static void tc_destroy(comm *c) {}
static const comm_ops tc_ops = {
    .name = "test-threads", .device_buffers = false, .rank = tc_rank_of, .size = tc_size,
    .send = tc_send, .recv = tc_recv, .isend = tc_isend, .irecv = tc_irecv, .wait = tc_wait,
    .bcast = tc_bcast, .allreduce_sum = tc_allreduce, .gatherv = tc_gatherv,
    .barrier = tc_barrier, .destroy = tc_destroy,
};
