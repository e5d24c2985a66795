/* comm_single.c - the one-rank communicator: collectives are no-ops, and
 * point-to-point calls are errors (there is no peer). */
#include <stdlib.h>
#include <string.h>

#include "comm.h"

static int single_rank(comm *c) { return 0; }
static int single_size(comm *c) { return 1; }
static cv_status single_p2p(comm *c, const void *buf, size_t n, int peer, int tag, cv_err *e)
{
    return cv_err_set(e, CV_EINTERNAL, "single-rank comm has no peer %d", peer);
}
static cv_status single_recv(comm *c, void *buf, size_t n, int peer, int tag, cv_err *e)
{
    return single_p2p(c, buf, n, peer, tag, e);
}
static cv_status single_isend(comm *c, const void *buf, size_t n, int dst, int tag, comm_req **r,
                              cv_err *e)
{
    return single_p2p(c, buf, n, dst, tag, e);
}
static cv_status single_irecv(comm *c, void *buf, size_t n, int src, int tag, comm_req **r,
                              cv_err *e)
{
    return single_p2p(c, buf, n, src, tag, e);
}
static cv_status single_wait(comm *c, comm_req *r, cv_err *e) { return CV_OK; }
static cv_status single_bcast(comm *c, void *buf, size_t n, int root, cv_err *e) { return CV_OK; }
static cv_status single_allreduce(comm *c, void *buf, size_t count, comm_dtype dt, cv_err *e)
{
    return CV_OK;
}
static cv_status single_gatherv(comm *c, const void *sendbuf, size_t n, void *recvbuf,
                                const size_t *counts, const size_t *displs, int root, cv_err *e)
{
    if (recvbuf && sendbuf != (const char *)recvbuf + (displs ? displs[0] : 0))
        memmove((char *)recvbuf + (displs ? displs[0] : 0), sendbuf, n);
    return CV_OK;
}
static cv_status single_barrier(comm *c, cv_err *e) { return CV_OK; }
static void single_destroy(comm *c) { free(c); }

static const comm_ops single_ops = {
    .name = "single",
    .rank = single_rank,
    .size = single_size,
    .send = single_p2p,
    .recv = single_recv,
    .isend = single_isend,
    .irecv = single_irecv,
    .wait = single_wait,
    .bcast = single_bcast,
    .allreduce_sum = single_allreduce,
    .gatherv = single_gatherv,
    .barrier = single_barrier,
    .destroy = single_destroy,
};

comm *comm_single_create(void)
{
    comm *c = calloc(1, sizeof *c);
    if (c)
        c->ops = &single_ops;
    return c;
}
