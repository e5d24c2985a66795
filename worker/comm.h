/* comm.h - communication between the ranks of one worker group.
 * Implementations, one per file: single (comm_single.c: one rank, no-ops),
 * mpi (comm_mpi.c), nccl (kernels/cuda or worker/comm_nccl.c: device buffers).
 *
 * A comm is a communicator over a subset of the group's ranks (the whole
 * group, one pipeline stage's TP ranks, ...). Buffers are host memory unless
 * the implementation says otherwise (nccl: device memory). All calls return a
 * status; a failed peer becomes CV_ECOMM with the rank named, never a hang
 * where the transport can detect it. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"

typedef struct comm comm;
typedef struct comm_req comm_req; /* pending non-blocking op */

typedef enum comm_dtype { COMM_F32 = 0, COMM_I32, COMM_U8 } comm_dtype;

typedef struct comm_ops {
    const char *name;
    bool device_buffers; /* takes device pointers (nccl); otherwise host memory only */
    int (*rank)(comm *c);
    int (*size)(comm *c);
    cv_status (*send)(comm *c, const void *buf, size_t n_bytes, int dst, int tag, cv_err *e);
    cv_status (*recv)(comm *c, void *buf, size_t n_bytes, int src, int tag, cv_err *e);
    /* non-blocking; complete with wait */
    cv_status (*isend)(comm *c, const void *buf, size_t n_bytes, int dst, int tag, comm_req **r,
                       cv_err *e);
    cv_status (*irecv)(comm *c, void *buf, size_t n_bytes, int src, int tag, comm_req **r,
                       cv_err *e);
    cv_status (*wait)(comm *c, comm_req *r, cv_err *e);
    cv_status (*bcast)(comm *c, void *buf, size_t n_bytes, int root, cv_err *e);
    /* in-place sum over all ranks of this comm */
    cv_status (*allreduce_sum)(comm *c, void *buf, size_t count, comm_dtype dt, cv_err *e);
    /* gather variable-size byte blocks to root: recv_counts/displs only at root */
    cv_status (*gatherv)(comm *c, const void *sendbuf, size_t n_bytes, void *recvbuf,
                         const size_t *recv_counts, const size_t *displs, int root, cv_err *e);
    cv_status (*barrier)(comm *c, cv_err *e);
    void (*destroy)(comm *c);
} comm_ops;

struct comm {
    const comm_ops *ops;
    void *impl;
};

static inline int comm_rank(comm *c) { return c->ops->rank(c); }
static inline int comm_size(comm *c) { return c->ops->size(c); }
static inline cv_status comm_allreduce_sum(comm *c, void *buf, size_t count, comm_dtype dt,
                                           cv_err *e)
{
    return c->ops->allreduce_sum(c, buf, count, dt, e);
}
static inline void comm_destroy(comm *c)
{
    if (c)
        c->ops->destroy(c);
}

/* One-rank communicator: every collective is a no-op copy. */
comm *comm_single_create(void);
