/* comm_mpi.c - comm over MPI on host memory: point-to-point (blocking and
 * non-blocking), broadcast, in-place sum all-reduce, variable-size gather,
 * barrier. Errors are returned (MPI_ERRORS_RETURN), never fatal inside MPI,
 * and name the peer so that a group can say which rank failed. Not here:
 * device buffers (comm_nccl), process launch, failure detection beyond what
 * MPI reports. */
#include "comm_mpi.h"

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

typedef struct mpi_impl {
    MPI_Comm mc;   /* owned duplicate */
    int rank, size;
    char name[48]; /* label for messages */
    int *world;    /* world rank of each rank of mc */
} mpi_impl;

struct comm_req {
    MPI_Request r;
    int peer;
    bool is_send;
};

static mpi_impl *impl_of(comm *c) { return (mpi_impl *)c->impl; }

/* Complete a request without holding the core for long: MPI's own waits
 * spin, and on a machine whose cores share execution units (SMT, VMs) a
 * spinning rank slows the rank it waits for - in tensor-parallel layers
 * that is the one computing the other half. Poll for a short while (an
 * all-reduce between balanced ranks usually completes within it: measured
 * here, polling 0.5 ms instead of ~50 us took TP2 from 0.87x to ~1x of one
 * 2-thread process), yielding now and then in case the peer waits for
 * this core, then nap with a backoff capped at 100 us. Knobs:
 * CARAVAN_COMM_SPIN_US (poll time, default 500), CARAVAN_COMM_NAP_US. */
static double mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int wait_polite(MPI_Request *r)
{
    static double spin_us = -1;
    static long nap_max = 100;
    if (spin_us < 0) {
        const char *v = getenv("CARAVAN_COMM_SPIN_US");
        spin_us = v ? atof(v) : 500;
        if ((v = getenv("CARAVAN_COMM_NAP_US")) && atol(v) > 0)
            nap_max = atol(v);
#ifdef PR_SET_TIMERSLACK
        /* naps shorter than the timer slack (50 us by default) would be
         * rounded up to it */
        prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
    }
    long us = 0;
    double t0 = 0;
    for (int spins = 0;; spins++) {
        int flag = 0;
        int rc = MPI_Test(r, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS || flag)
            return rc;
        if (spins == 0) {
            t0 = mono_us();
            continue;
        }
        if (us == 0 && ((spins & 31) || mono_us() - t0 < spin_us)) {
            if ((spins & 15) == 0)
                sched_yield(); /* oversubscribed (tests): let the peer we wait for run */
            continue;
        }
        us = us ? (us * 2 > nap_max ? nap_max : us * 2) : 2;
        struct timespec ts = {0, us * 1000};
        nanosleep(&ts, NULL);
    }
}

/* "MPI_ERR_TRUNCATE: message truncated" for an MPI error code. */
static void mpi_err_str(int rc, char *buf, size_t bufsz)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS)
        snprintf(s, sizeof s, "MPI error %d", rc);
    snprintf(buf, bufsz, "%s", s);
}

static cv_status fail_peer(comm *c, cv_err *e, int rc, const char *op, int peer)
{
    mpi_impl *m = impl_of(c);
    char s[MPI_MAX_ERROR_STRING];
    mpi_err_str(rc, s, sizeof s);
    return cv_err_set(e, CV_ECOMM, "%s with rank %d (world rank %d) on comm '%s' failed: %s", op,
                      peer, comm_mpi_world_rank(c, peer), m->name, s);
}

static cv_status fail_coll(comm *c, cv_err *e, int rc, const char *op)
{
    mpi_impl *m = impl_of(c);
    char s[MPI_MAX_ERROR_STRING];
    mpi_err_str(rc, s, sizeof s);
    return cv_err_set(e, CV_ECOMM,
                      "%s on comm '%s' (%d ranks, world ranks %d..%d, this is rank %d) failed: %s",
                      op, m->name, m->size, m->world[0], m->world[m->size - 1], m->rank, s);
}

static cv_status check_peer(comm *c, int peer, const char *op, cv_err *e)
{
    mpi_impl *m = impl_of(c);
    if (peer < 0 || peer >= m->size)
        return cv_err_set(e, CV_EINVAL, "%s: peer rank %d out of range [0, %d) on comm '%s'", op,
                          peer, m->size, m->name);
    return CV_OK;
}

/* MPI counts are int: messages over INT_MAX bytes are refused (activations
 * are far smaller; weights never travel). */
static cv_status check_count(comm *c, size_t n, const char *op, cv_err *e)
{
    if (n > (size_t)INT_MAX)
        return cv_err_set(e, CV_ERANGE, "%s of %zu bytes on comm '%s' is over the %d-byte limit",
                          op, n, impl_of(c)->name, INT_MAX);
    return CV_OK;
}

static int mpi_rank(comm *c) { return impl_of(c)->rank; }
static int mpi_size(comm *c) { return impl_of(c)->size; }

static cv_status mpi_send(comm *c, const void *buf, size_t n, int dst, int tag, cv_err *e)
{
    cv_status st = check_peer(c, dst, "send", e);
    if (st || (st = check_count(c, n, "send", e)))
        return st;
    int rc = MPI_Send(buf, (int)n, MPI_BYTE, dst, tag, impl_of(c)->mc);
    return rc == MPI_SUCCESS ? CV_OK : fail_peer(c, e, rc, "send", dst);
}

static cv_status mpi_recv(comm *c, void *buf, size_t n, int src, int tag, cv_err *e)
{
    cv_status st = check_peer(c, src, "recv", e);
    if (st || (st = check_count(c, n, "recv", e)))
        return st;
    MPI_Status status;
    int rc = MPI_Recv(buf, (int)n, MPI_BYTE, src, tag, impl_of(c)->mc, &status);
    return rc == MPI_SUCCESS ? CV_OK : fail_peer(c, e, rc, "recv", src);
}

static cv_status mpi_isend(comm *c, const void *buf, size_t n, int dst, int tag, comm_req **r,
                           cv_err *e)
{
    cv_status st = check_peer(c, dst, "isend", e);
    if (st || (st = check_count(c, n, "isend", e)))
        return st;
    comm_req *q = calloc(1, sizeof *q);
    if (!q)
        return cv_err_set(e, CV_ENOMEM, "isend: out of memory");
    q->peer = dst;
    q->is_send = true;
    int rc = MPI_Isend(buf, (int)n, MPI_BYTE, dst, tag, impl_of(c)->mc, &q->r);
    if (rc != MPI_SUCCESS) {
        free(q);
        return fail_peer(c, e, rc, "isend", dst);
    }
    *r = q;
    return CV_OK;
}

static cv_status mpi_irecv(comm *c, void *buf, size_t n, int src, int tag, comm_req **r,
                           cv_err *e)
{
    cv_status st = check_peer(c, src, "irecv", e);
    if (st || (st = check_count(c, n, "irecv", e)))
        return st;
    comm_req *q = calloc(1, sizeof *q);
    if (!q)
        return cv_err_set(e, CV_ENOMEM, "irecv: out of memory");
    q->peer = src;
    int rc = MPI_Irecv(buf, (int)n, MPI_BYTE, src, tag, impl_of(c)->mc, &q->r);
    if (rc != MPI_SUCCESS) {
        free(q);
        return fail_peer(c, e, rc, "irecv", src);
    }
    *r = q;
    return CV_OK;
}

/* Completes and frees r (NULL is a no-op). */
static cv_status mpi_wait(comm *c, comm_req *r, cv_err *e)
{
    if (!r)
        return CV_OK;
    int rc = wait_polite(&r->r);
    int peer = r->peer;
    bool is_send = r->is_send;
    free(r);
    if (rc != MPI_SUCCESS)
        return fail_peer(c, e, rc, is_send ? "isend" : "irecv", peer);
    return CV_OK;
}

static cv_status mpi_bcast(comm *c, void *buf, size_t n, int root, cv_err *e)
{
    cv_status st = check_peer(c, root, "bcast", e);
    if (st || (st = check_count(c, n, "bcast", e)))
        return st;
    int rc = MPI_Bcast(buf, (int)n, MPI_BYTE, root, impl_of(c)->mc);
    return rc == MPI_SUCCESS ? CV_OK : fail_coll(c, e, rc, "bcast");
}

static cv_status mpi_allreduce(comm *c, void *buf, size_t count, comm_dtype dt, cv_err *e)
{
    MPI_Datatype t;
    size_t el;
    switch (dt) {
    case COMM_F32: t = MPI_FLOAT; el = 4; break;
    case COMM_I32: t = MPI_INT32_T; el = 4; break;
    case COMM_U8: t = MPI_UINT8_T; el = 1; break;
    default: return cv_err_set(e, CV_EINVAL, "allreduce: unknown dtype %d", (int)dt);
    }
    if (count > (size_t)INT_MAX)
        return cv_err_set(e, CV_ERANGE, "allreduce of %zu elements (%zu bytes) is over the limit",
                          count, count * el);
    if (impl_of(c)->size == 1)
        return CV_OK;
    MPI_Request rq;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, t, MPI_SUM, impl_of(c)->mc, &rq);
    if (rc == MPI_SUCCESS)
        rc = wait_polite(&rq);
    return rc == MPI_SUCCESS ? CV_OK : fail_coll(c, e, rc, "allreduce");
}

static cv_status mpi_gatherv(comm *c, const void *sendbuf, size_t n, void *recvbuf,
                             const size_t *counts, const size_t *displs, int root, cv_err *e)
{
    mpi_impl *m = impl_of(c);
    cv_status st = check_peer(c, root, "gatherv", e);
    if (st || (st = check_count(c, n, "gatherv", e)))
        return st;
    int *ic = NULL, *id = NULL;
    if (m->rank == root) {
        ic = malloc(sizeof *ic * m->size);
        id = malloc(sizeof *id * m->size);
        if (!ic || !id) {
            free(ic);
            free(id);
            return cv_err_set(e, CV_ENOMEM, "gatherv: out of memory");
        }
        for (int i = 0; i < m->size; i++) {
            if (counts[i] > (size_t)INT_MAX || displs[i] > (size_t)INT_MAX) {
                free(ic);
                free(id);
                return cv_err_set(e, CV_ERANGE, "gatherv: block %d (%zu bytes at %zu) over the limit",
                                  i, counts[i], displs[i]);
            }
            ic[i] = (int)counts[i];
            id[i] = (int)displs[i];
        }
    }
    const void *sb = sendbuf;
    /* MPI forbids aliasing send and receive buffers at the root. */
    if (m->rank == root && recvbuf && sendbuf == (const char *)recvbuf + displs[root])
        sb = MPI_IN_PLACE;
    MPI_Request rq;
    int rc = MPI_Igatherv(sb, (int)n, MPI_BYTE, recvbuf, ic, id, MPI_BYTE, root, m->mc, &rq);
    if (rc == MPI_SUCCESS)
        rc = wait_polite(&rq);
    free(ic);
    free(id);
    return rc == MPI_SUCCESS ? CV_OK : fail_coll(c, e, rc, "gatherv");
}

static cv_status mpi_barrier(comm *c, cv_err *e)
{
    int rc = MPI_Barrier(impl_of(c)->mc);
    return rc == MPI_SUCCESS ? CV_OK : fail_coll(c, e, rc, "barrier");
}

static void mpi_destroy(comm *c)
{
    if (!c)
        return;
    mpi_impl *m = impl_of(c);
    if (m) {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized && m->mc != MPI_COMM_NULL)
            MPI_Comm_free(&m->mc);
        free(m->world);
        free(m);
    }
    free(c);
}

static const comm_ops mpi_ops = {
    .name = "mpi",
    .device_buffers = false,
    .rank = mpi_rank,
    .size = mpi_size,
    .send = mpi_send,
    .recv = mpi_recv,
    .isend = mpi_isend,
    .irecv = mpi_irecv,
    .wait = mpi_wait,
    .bcast = mpi_bcast,
    .allreduce_sum = mpi_allreduce,
    .gatherv = mpi_gatherv,
    .barrier = mpi_barrier,
    .destroy = mpi_destroy,
};

/* Takes ownership of `mc` (already a private duplicate or split result). */
static cv_status wrap(MPI_Comm mc, const char *name, comm **out, cv_err *e)
{
    comm *c = calloc(1, sizeof *c);
    mpi_impl *m = calloc(1, sizeof *m);
    if (!c || !m)
        goto nomem;
    m->mc = mc;
    MPI_Comm_set_errhandler(mc, MPI_ERRORS_RETURN);
    MPI_Comm_rank(mc, &m->rank);
    MPI_Comm_size(mc, &m->size);
    snprintf(m->name, sizeof m->name, "%s", name ? name : "mpi");
    m->world = malloc(sizeof *m->world * m->size);
    int *mine = malloc(sizeof *mine * m->size);
    if (!m->world || !mine) {
        free(mine);
        goto nomem;
    }
    MPI_Group g, gw;
    MPI_Comm_group(mc, &g);
    MPI_Comm_group(MPI_COMM_WORLD, &gw);
    for (int i = 0; i < m->size; i++)
        mine[i] = i;
    MPI_Group_translate_ranks(g, m->size, mine, gw, m->world);
    MPI_Group_free(&g);
    MPI_Group_free(&gw);
    free(mine);
    c->ops = &mpi_ops;
    c->impl = m;
    *out = c;
    return CV_OK;
nomem:
    if (m)
        free(m->world);
    free(m);
    free(c);
    MPI_Comm_free(&mc);
    return cv_err_set(e, CV_ENOMEM, "comm_mpi: out of memory");
}

cv_status comm_mpi_create(MPI_Comm mc, const char *name, comm **out, cv_err *e)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited)
        return cv_err_set(e, CV_EINVAL, "comm_mpi_create: MPI_Init has not been called");
    MPI_Comm dup;
    int rc = MPI_Comm_dup(mc, &dup);
    if (rc != MPI_SUCCESS) {
        char s[MPI_MAX_ERROR_STRING];
        mpi_err_str(rc, s, sizeof s);
        return cv_err_set(e, CV_ECOMM, "MPI_Comm_dup for comm '%s' failed: %s", name, s);
    }
    return wrap(dup, name, out, e);
}

cv_status comm_mpi_split(comm *parent, int color, int key, const char *name, comm **out,
                         cv_err *e)
{
    if (!comm_is_mpi(parent))
        return cv_err_set(e, CV_EINVAL, "comm_mpi_split: parent comm is '%s', not mpi",
                          parent->ops->name);
    MPI_Comm nc;
    int rc = MPI_Comm_split(impl_of(parent)->mc, color, key, &nc);
    if (rc != MPI_SUCCESS)
        return fail_coll(parent, e, rc, "MPI_Comm_split");
    return wrap(nc, name, out, e);
}

MPI_Comm comm_mpi_handle(comm *c) { return impl_of(c)->mc; }

bool comm_is_mpi(const comm *c) { return c && c->ops == &mpi_ops; }

int comm_mpi_world_rank(comm *c, int r)
{
    mpi_impl *m = impl_of(c);
    if (r < 0 || r >= m->size)
        return -1;
    return m->world[r];
}
