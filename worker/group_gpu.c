/* group_gpu.c - the device of each rank of a worker group and the NCCL comm
 * of a stage's TP ranks (group_gpu.h). MPI builds only (like group.c); the
 * NCCL part only with CARAVAN_HAVE_NCCL. */
#include "group_gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm_mpi.h"
#ifdef CARAVAN_HAVE_CUDA
#include "../kernels/cuda/backend_cuda.h"
#endif
#ifdef CARAVAN_HAVE_NCCL
#include "comm_nccl.h"
#endif

/* one element: "cpu", "cuda:N", "cuda:local" */
static cv_status pick_one(const char *el, size_t len, int rank, int local_rank, char *out,
                          size_t out_size, const char *spec, cv_err *e)
{
    char buf[64];
    if (len >= sizeof buf)
        return cv_err_set(e, CV_EINVAL, "--device '%s': element '%.*s...' is too long", spec, 16,
                          el);
    memcpy(buf, el, len);
    buf[len] = '\0';
    if (len == 0 || !strcmp(buf, "cpu")) {
        snprintf(out, out_size, "cpu");
        return CV_OK;
    }
    if (!strcmp(buf, "cuda:local")) {
        snprintf(out, out_size, "cuda:%d", local_rank);
        return CV_OK;
    }
    if (!strncmp(buf, "cuda:", 5)) {
        char *end = NULL;
        long n = strtol(buf + 5, &end, 10);
        if (end != buf + 5 && *end == '\0' && n >= 0 && n < 4096) {
            snprintf(out, out_size, "cuda:%ld", n);
            return CV_OK;
        }
    }
    return cv_err_set(e, CV_EINVAL,
                      "--device '%s': '%s' (rank %d) is not cpu, cuda:N or cuda:local", spec, buf,
                      rank);
}

cv_status group_gpu_device_pick(const char *spec, int rank, int size, int local_rank, char *out,
                                size_t out_size, cv_err *e)
{
    if (!spec)
        spec = "";
    if (!strchr(spec, ','))
        return pick_one(spec, strlen(spec), rank, local_rank, out, out_size, spec, e);
    int n = 1;
    for (const char *p = spec; *p; p++)
        n += *p == ',';
    if (n != size)
        return cv_err_set(e, CV_EINVAL,
                          "--device '%s' lists %d devices for a group of %d ranks (one per world "
                          "rank, in rank order)", spec, n, size);
    const char *el = spec;
    for (int i = 0; i < rank; i++)
        el = strchr(el, ',') + 1;
    const char *end = strchr(el, ',');
    size_t len = end ? (size_t)(end - el) : strlen(el);
    return pick_one(el, len, rank, local_rank, out, out_size, spec, e);
}

cv_status group_gpu_device(MPI_Comm wc, const char *spec, char *out, size_t out_size, cv_err *e)
{
    int rank = 0, size = 1, local = 0;
    MPI_Comm_rank(wc, &rank);
    MPI_Comm_size(wc, &size);
    MPI_Comm node;
    if (MPI_Comm_split_type(wc, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
        MPI_Comm_rank(node, &local);
        MPI_Comm_free(&node);
    }
    return group_gpu_device_pick(spec, rank, size, local, out, out_size, e);
}

int group_gpu_index(const char *device)
{
    if (!device || strncmp(device, "cuda:", 5))
        return -1;
    char *end = NULL;
    long n = strtol(device + 5, &end, 10);
    return end != device + 5 && *end == '\0' && n >= 0 ? (int)n : -1;
}

cv_status group_gpu_tp_comm(comm *tp, backend *be, comm **out, cv_err *e)
{
    *out = NULL;
    int device = -1;
#ifdef CARAVAN_HAVE_CUDA
    device = backend_cuda_device(be);
#endif
    MPI_Comm mc = comm_mpi_handle(tp);
    int size = 1;
    MPI_Comm_size(mc, &size);
    if (size <= 1)
        return CV_OK; /* no all-reduce to do */
#ifdef CARAVAN_HAVE_NCCL
    /* every rank must take the same branch: agree on the switch and on GPUs */
    const char *env = getenv("CARAVAN_NCCL");
    int want = !(env && !strcmp(env, "0")) && device >= 0, all = 0;
    if (MPI_Allreduce(&want, &all, 1, MPI_INT, MPI_MIN, mc) != MPI_SUCCESS)
        return cv_err_set(e, CV_ECOMM, "tp comm: MPI_Allreduce of the NCCL choice failed");
    if (!all)
        return CV_OK;
    comm *c = NULL;
    bool is_nccl = false;
    cv_status st = comm_gpu_create(mc, device, "stage tp (nccl)", &c, &is_nccl, e);
    if (st)
        return cv_err_prefix(e, "tp comm on cuda:%d", device);
    if (!is_nccl) { /* ranks share a GPU: comm_gpu_create gave an MPI comm; keep tp's */
        comm_destroy(c);
        return CV_OK;
    }
    *out = c;
    return CV_OK;
#else
    (void)device;
    (void)be;
    (void)e;
    return CV_OK;
#endif
}
