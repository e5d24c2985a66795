/* comm_nccl.c - comm over NCCL on device buffers, with the communicator
 * built from an ncclUniqueId broadcast over MPI; and comm_gpu_create, which
 * falls back to the host-staged MPI comm when ranks share a GPU or a rank
 * has none. Not here: the staging itself (worker/forward.c does it for any
 * comm whose device_buffers is false). Compiled to nothing without NCCL+MPI. */
#if defined(CARAVAN_HAVE_NCCL) && defined(CARAVAN_HAVE_MPI)
#include "comm_nccl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime.h>
#include <nccl.h>

#include "comm_mpi.h"

typedef struct nccl_impl {
    ncclComm_t nc;
    MPI_Comm mc; /* owned duplicate: id broadcast, barrier */
    cudaStream_t stream;
    int device;
    int rank, size;
    bool aborted;
    char name[48];
} nccl_impl;

struct comm_req {
    cudaEvent_t ev;
};

static nccl_impl *impl_of(comm *c) { return (nccl_impl *)c->impl; }

static cv_status nccl_fail(comm *c, cv_err *e, ncclResult_t rc, const char *op, int peer)
{
    nccl_impl *m = impl_of(c);
    const char *last = m->nc ? ncclGetLastError(m->nc) : NULL;
    char who[32] = "";
    if (peer >= 0)
        snprintf(who, sizeof who, " with rank %d", peer);
    return cv_err_set(e, CV_ECOMM, "%s%s on nccl comm '%s' (rank %d of %d, cuda:%d) failed: %s%s%s",
                      op, who, m->name, m->rank, m->size, m->device, ncclGetErrorString(rc),
                      last && *last ? ": " : "", last ? last : "");
}

static cv_status cuda_fail(comm *c, cv_err *e, cudaError_t rc, const char *op)
{
    nccl_impl *m = impl_of(c);
    return cv_err_set(e, CV_EDEVICE, "%s on nccl comm '%s' (rank %d, cuda:%d): %s", op, m->name,
                      m->rank, m->device, cudaGetErrorString(rc));
}

/* Wait for the work queued on `ev` (or the whole stream when ev is NULL),
 * polling NCCL's asynchronous error so that a dead peer is reported. */
static cv_status nccl_wait_done(comm *c, cudaEvent_t ev, const char *op, int peer, cv_err *e)
{
    nccl_impl *m = impl_of(c);
    for (unsigned spins = 0;; spins++) {
        cudaError_t q = ev ? cudaEventQuery(ev) : cudaStreamQuery(m->stream);
        if (q == cudaSuccess)
            return CV_OK;
        if (q != cudaErrorNotReady)
            return cuda_fail(c, e, q, op);
        ncclResult_t async = ncclSuccess;
        ncclResult_t rc = ncclCommGetAsyncError(m->nc, &async);
        if (rc != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
            ncclCommAbort(m->nc); /* unblocks the kernels; the comm is unusable now */
            m->nc = NULL;
            m->aborted = true;
            return nccl_fail(c, e, rc != ncclSuccess ? rc : async, op, peer);
        }
        if (spins > 1000)
            usleep(spins > 100000 ? 1000 : 20);
    }
}

static cv_status usable(comm *c, const char *op, cv_err *e)
{
    nccl_impl *m = impl_of(c);
    if (m->aborted)
        return cv_err_set(e, CV_ECOMM, "%s: nccl comm '%s' was aborted after an earlier failure",
                          op, m->name);
    cudaError_t rc = cudaSetDevice(m->device);
    if (rc != cudaSuccess)
        return cuda_fail(c, e, rc, op);
    return CV_OK;
}

static cv_status check_peer(comm *c, int peer, const char *op, cv_err *e)
{
    nccl_impl *m = impl_of(c);
    if (peer < 0 || peer >= m->size)
        return cv_err_set(e, CV_EINVAL, "%s: peer rank %d out of range [0, %d) on comm '%s'", op,
                          peer, m->size, m->name);
    return CV_OK;
}

static int n_rank(comm *c) { return impl_of(c)->rank; }
static int n_size(comm *c) { return impl_of(c)->size; }

static cv_status n_isend(comm *c, const void *buf, size_t n, int dst, int tag, comm_req **r,
                         cv_err *e)
{
    nccl_impl *m = impl_of(c);
    cv_status st;
    *r = NULL;
    if ((st = usable(c, "send", e)) || (st = check_peer(c, dst, "send", e)))
        return st;
    comm_req *q = calloc(1, sizeof *q);
    if (!q)
        return cv_err_set(e, CV_ENOMEM, "send: out of memory");
    cudaError_t ce = cudaEventCreateWithFlags(&q->ev, cudaEventDisableTiming);
    if (ce != cudaSuccess) {
        free(q);
        return cuda_fail(c, e, ce, "send");
    }
    ncclResult_t rc = ncclSend(buf, n, ncclChar, dst, m->nc, m->stream);
    if (rc != ncclSuccess) {
        cudaEventDestroy(q->ev);
        free(q);
        return nccl_fail(c, e, rc, "send", dst);
    }
    cudaEventRecord(q->ev, m->stream);
    *r = q;
    return CV_OK;
}

static cv_status n_irecv(comm *c, void *buf, size_t n, int src, int tag, comm_req **r, cv_err *e)
{
    nccl_impl *m = impl_of(c);
    cv_status st;
    *r = NULL;
    if ((st = usable(c, "recv", e)) || (st = check_peer(c, src, "recv", e)))
        return st;
    comm_req *q = calloc(1, sizeof *q);
    if (!q)
        return cv_err_set(e, CV_ENOMEM, "recv: out of memory");
    cudaError_t ce = cudaEventCreateWithFlags(&q->ev, cudaEventDisableTiming);
    if (ce != cudaSuccess) {
        free(q);
        return cuda_fail(c, e, ce, "recv");
    }
    ncclResult_t rc = ncclRecv(buf, n, ncclChar, src, m->nc, m->stream);
    if (rc != ncclSuccess) {
        cudaEventDestroy(q->ev);
        free(q);
        return nccl_fail(c, e, rc, "recv", src);
    }
    cudaEventRecord(q->ev, m->stream);
    *r = q;
    return CV_OK;
}

static cv_status n_wait(comm *c, comm_req *r, cv_err *e)
{
    if (!r)
        return CV_OK;
    cv_status st = impl_of(c)->aborted ? usable(c, "wait", e) : nccl_wait_done(c, r->ev, "wait", -1, e);
    cudaEventDestroy(r->ev);
    free(r);
    return st;
}

static cv_status n_send(comm *c, const void *buf, size_t n, int dst, int tag, cv_err *e)
{
    comm_req *r;
    cv_status st = n_isend(c, buf, n, dst, tag, &r, e);
    return st ? st : n_wait(c, r, e);
}

static cv_status n_recv(comm *c, void *buf, size_t n, int src, int tag, cv_err *e)
{
    comm_req *r;
    cv_status st = n_irecv(c, buf, n, src, tag, &r, e);
    return st ? st : n_wait(c, r, e);
}

static cv_status n_bcast(comm *c, void *buf, size_t n, int root, cv_err *e)
{
    nccl_impl *m = impl_of(c);
    cv_status st;
    if ((st = usable(c, "bcast", e)) || (st = check_peer(c, root, "bcast", e)))
        return st;
    ncclResult_t rc = ncclBroadcast(buf, buf, n, ncclChar, root, m->nc, m->stream);
    if (rc != ncclSuccess)
        return nccl_fail(c, e, rc, "bcast", root);
    return nccl_wait_done(c, NULL, "bcast", root, e);
}

static cv_status n_allreduce(comm *c, void *buf, size_t count, comm_dtype dt, cv_err *e)
{
    nccl_impl *m = impl_of(c);
    cv_status st;
    if ((st = usable(c, "allreduce", e)))
        return st;
    ncclDataType_t t = dt == COMM_F32 ? ncclFloat32 : dt == COMM_I32 ? ncclInt32 : ncclUint8;
    ncclResult_t rc = ncclAllReduce(buf, buf, count, t, ncclSum, m->nc, m->stream);
    if (rc != ncclSuccess)
        return nccl_fail(c, e, rc, "allreduce", -1);
    return nccl_wait_done(c, NULL, "allreduce", -1, e);
}

/* NCCL has no gatherv: the root receives each block with a grouped recv. */
static cv_status n_gatherv(comm *c, const void *sendbuf, size_t n, void *recvbuf,
                           const size_t *counts, const size_t *displs, int root, cv_err *e)
{
    nccl_impl *m = impl_of(c);
    cv_status st;
    if ((st = usable(c, "gatherv", e)) || (st = check_peer(c, root, "gatherv", e)))
        return st;
    ncclResult_t rc = ncclGroupStart();
    if (m->rank == root) {
        for (int r = 0; r < m->size && rc == ncclSuccess; r++) {
            char *dst = (char *)recvbuf + displs[r];
            if (r == root) {
                if (counts[r] && dst != (const char *)sendbuf) {
                    cudaError_t ce = cudaMemcpyAsync(dst, sendbuf, counts[r],
                                                     cudaMemcpyDeviceToDevice, m->stream);
                    if (ce != cudaSuccess) {
                        ncclGroupEnd();
                        return cuda_fail(c, e, ce, "gatherv");
                    }
                }
            } else if (counts[r]) {
                rc = ncclRecv(dst, counts[r], ncclChar, r, m->nc, m->stream);
            }
        }
    } else if (n) {
        rc = ncclSend(sendbuf, n, ncclChar, root, m->nc, m->stream);
    }
    ncclResult_t rc2 = ncclGroupEnd();
    if (rc != ncclSuccess || rc2 != ncclSuccess)
        return nccl_fail(c, e, rc != ncclSuccess ? rc : rc2, "gatherv", root);
    return nccl_wait_done(c, NULL, "gatherv", root, e);
}

static cv_status n_barrier(comm *c, cv_err *e)
{
    nccl_impl *m = impl_of(c);
    cv_status st;
    if ((st = usable(c, "barrier", e)))
        return st;
    if ((st = nccl_wait_done(c, NULL, "barrier", -1, e)))
        return st;
    int rc = MPI_Barrier(m->mc);
    if (rc != MPI_SUCCESS)
        return cv_err_set(e, CV_ECOMM, "barrier on comm '%s' (MPI) failed: error %d", m->name, rc);
    return CV_OK;
}

static void n_destroy(comm *c)
{
    if (!c)
        return;
    nccl_impl *m = impl_of(c);
    if (m) {
        cudaSetDevice(m->device);
        if (m->nc) {
            cudaStreamSynchronize(m->stream);
            ncclCommDestroy(m->nc);
        }
        if (m->stream)
            cudaStreamDestroy(m->stream);
        if (m->mc != MPI_COMM_NULL)
            MPI_Comm_free(&m->mc);
        free(m);
    }
    free(c);
}

static const comm_ops nccl_ops = {
    .name = "nccl",
    .device_buffers = true,
    .rank = n_rank,
    .size = n_size,
    .send = n_send,
    .recv = n_recv,
    .isend = n_isend,
    .irecv = n_irecv,
    .wait = n_wait,
    .bcast = n_bcast,
    .allreduce_sum = n_allreduce,
    .gatherv = n_gatherv,
    .barrier = n_barrier,
    .destroy = n_destroy,
};

bool comm_is_nccl(const comm *c) { return c && c->ops == &nccl_ops; }

cv_status comm_nccl_create(MPI_Comm mc, int device, const char *name, comm **out, cv_err *e)
{
    *out = NULL;
    comm *c = calloc(1, sizeof *c);
    nccl_impl *m = calloc(1, sizeof *m);
    if (!c || !m) {
        free(c);
        free(m);
        return cv_err_set(e, CV_ENOMEM, "nccl comm: out of memory");
    }
    c->ops = &nccl_ops;
    c->impl = m;
    m->mc = MPI_COMM_NULL;
    m->device = device;
    snprintf(m->name, sizeof m->name, "%s", name ? name : "nccl");
    cv_status st = CV_OK;
    int rc = MPI_Comm_dup(mc, &m->mc);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_set_errhandler(m->mc, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_rank(m->mc, &m->rank);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(m->mc, &m->size);
    if (rc != MPI_SUCCESS) {
        st = cv_err_set(e, CV_ECOMM, "nccl comm '%s': MPI setup failed (error %d)", m->name, rc);
        goto err;
    }
    cudaError_t ce = cudaSetDevice(device);
    if (ce == cudaSuccess)
        ce = cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking);
    /* every rank takes part in the broadcast even if its device failed, then
     * all agree on the outcome, so nobody waits in ncclCommInitRank alone */
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t nr = ncclSuccess;
    if (m->rank == 0)
        nr = ncclGetUniqueId(&id);
    rc = MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, m->mc);
    int ok = ce == cudaSuccess && nr == ncclSuccess && rc == MPI_SUCCESS, all_ok = 0;
    if (MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, m->mc) != MPI_SUCCESS)
        all_ok = 0;
    if (!all_ok) {
        if (ce != cudaSuccess)
            st = cv_err_set(e, CV_EDEVICE, "nccl comm '%s': rank %d cannot use cuda:%d: %s",
                            m->name, m->rank, device, cudaGetErrorString(ce));
        else if (nr != ncclSuccess)
            st = cv_err_set(e, CV_ECOMM, "nccl comm '%s': ncclGetUniqueId: %s", m->name,
                            ncclGetErrorString(nr));
        else
            st = cv_err_set(e, CV_ECOMM, "nccl comm '%s': another rank failed its setup", m->name);
        goto err;
    }
    nr = ncclCommInitRank(&m->nc, m->size, id, m->rank);
    if (nr != ncclSuccess) {
        m->nc = NULL;
        st = cv_err_set(e, CV_ECOMM, "nccl comm '%s': ncclCommInitRank (rank %d of %d, cuda:%d): %s",
                        m->name, m->rank, m->size, device, ncclGetErrorString(nr));
        goto err;
    }
    *out = c;
    return CV_OK;
err:
    n_destroy(c);
    return st;
}

/* identity of the GPU a rank uses: host name + PCI bus id */
typedef struct gpu_ident {
    char host[64];
    char bus[32];
    int has_gpu;
} gpu_ident;

cv_status comm_gpu_create(MPI_Comm mc, int device, const char *name, comm **out, bool *is_nccl,
                          cv_err *e)
{
    *out = NULL;
    *is_nccl = false;
    gpu_ident me;
    memset(&me, 0, sizeof me);
    gethostname(me.host, sizeof me.host - 1);
    if (device >= 0 && cudaDeviceGetPCIBusId(me.bus, sizeof me.bus, device) == cudaSuccess)
        me.has_gpu = 1;
    int size = 0;
    MPI_Comm_size(mc, &size);
    gpu_ident *all = calloc((size_t)size, sizeof *all);
    if (!all)
        return cv_err_set(e, CV_ENOMEM, "comm_gpu_create: out of memory");
    int rc = MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, mc);
    if (rc != MPI_SUCCESS) {
        free(all);
        return cv_err_set(e, CV_ECOMM, "comm '%s': MPI_Allgather of GPU ids failed (error %d)",
                          name ? name : "?", rc);
    }
    bool distinct = true;
    for (int i = 0; i < size && distinct; i++) {
        if (!all[i].has_gpu)
            distinct = false;
        for (int j = 0; j < i && distinct; j++)
            if (!strcmp(all[i].host, all[j].host) && !strcmp(all[i].bus, all[j].bus))
                distinct = false;
    }
    free(all);
    if (distinct) { /* the same answer on every rank: all take the same branch */
        cv_status st = comm_nccl_create(mc, device, name, out, e);
        if (st == CV_OK)
            *is_nccl = true;
        return st;
    }
    return comm_mpi_create(mc, name, out, e);
}
#else
/* No NCCL or no MPI in this build: GPU ranks use the host-staged MPI comm
 * (or a single rank). An empty translation unit is not valid ISO C. */
typedef int comm_nccl_unused;
#endif
