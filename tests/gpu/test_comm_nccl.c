/* test_comm_nccl.c - comm_gpu_create (worker/comm_nccl.c) under mpirun:
 * with "cpu" every rank is a CPU rank, so the group must get the host MPI
 * comm (the host-staged path); with "gpu" rank r uses cuda:(r % devices),
 * so NCCL is expected exactly when every rank has a GPU of its own (one
 * host), and the host comm when ranks share a GPU. Then all-reduce, bcast,
 * send/recv and gatherv are checked on the comm's kind of buffer (device
 * memory for NCCL). Exits non-zero on any mismatch.
 *   mpirun -np 2 test_comm_nccl cpu|gpu */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>
#include <mpi.h>

#include "testutil.h"
#include "worker/comm_nccl.h"

static bool on_dev;

static void *buf_new(size_t n)
{
    void *p = NULL;
    if (on_dev) {
        if (cudaMalloc(&p, n) != cudaSuccess)
            return NULL;
        return p;
    }
    return malloc(n);
}
static void buf_put(void *d, const void *h, size_t n)
{
    if (on_dev)
        cudaMemcpy(d, h, n, cudaMemcpyHostToDevice);
    else
        memcpy(d, h, n);
}
static void buf_get(void *h, const void *d, size_t n)
{
    if (on_dev)
        cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost);
    else
        memcpy(h, d, n);
}
static void buf_free(void *p)
{
    if (on_dev)
        cudaFree(p);
    else
        free(p);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    bool gpu = argc > 1 && !strcmp(argv[1], "gpu");
    int ndev = 0, device = -1;
    if (gpu) {
        if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
            fprintf(stderr, "rank %d: no CUDA device\n", rank);
            MPI_Finalize();
            return 1;
        }
        device = rank % ndev;
    }
    bool expect_nccl = gpu && ndev >= size;
    comm *c = NULL;
    bool is_nccl = false;
    cv_err e = {0};
    if (comm_gpu_create(MPI_COMM_WORLD, device, "test", &c, &is_nccl, &e)) {
        fprintf(stderr, "rank %d: comm_gpu_create: %s\n", rank, e.msg);
        MPI_Finalize();
        return 1;
    }
    TU_CHECK(is_nccl == expect_nccl, "rank %d: nccl %d, expected %d (%d devices, %d ranks)", rank,
             is_nccl, expect_nccl, ndev, size);
    TU_CHECK(c->ops->device_buffers == is_nccl, "device_buffers %d", c->ops->device_buffers);
    TU_CHECK(comm_is_nccl(c) == is_nccl, "comm_is_nccl");
    TU_CHECK(comm_rank(c) == rank && comm_size(c) == size, "rank/size");
    on_dev = is_nccl;
    if (on_dev)
        cudaSetDevice(device);

    /* all-reduce of floats */
    enum { N = 1000 };
    float h[N], r[N];
    for (int i = 0; i < N; i++)
        h[i] = (float)(rank + 1) + 0.001f * (float)i;
    float *d = buf_new(sizeof h);
    buf_put(d, h, sizeof h);
    TU_CHECK(c->ops->allreduce_sum(c, d, N, COMM_F32, &e) == CV_OK, "allreduce: %s", e.msg);
    buf_get(r, d, sizeof r);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        float want = (float)(size * (size + 1) / 2) + (float)size * 0.001f * (float)i;
        bad += fabsf(r[i] - want) > 1e-4f * fabsf(want);
    }
    TU_CHECK(bad == 0, "rank %d: allreduce: %d wrong sums (r[1] = %g)", rank, bad, r[1]);

    /* bcast of bytes from the last rank */
    unsigned char bh[64], br[64];
    for (int i = 0; i < 64; i++)
        bh[i] = (unsigned char)(rank == size - 1 ? 200 - i : 0);
    unsigned char *bd = buf_new(64);
    buf_put(bd, bh, 64);
    TU_CHECK(c->ops->bcast(c, bd, 64, size - 1, &e) == CV_OK, "bcast: %s", e.msg);
    buf_get(br, bd, 64);
    for (int i = 0; i < 64; i++)
        bad += br[i] != (unsigned char)(200 - i);
    TU_CHECK(bad == 0, "rank %d: bcast wrong", rank);

    /* send/recv around a ring: even ranks send first, odd ranks receive first */
    if (size > 1) {
        int to = (rank + 1) % size, from = (rank + size - 1) % size;
        int32_t sv[16], rv[16];
        for (int i = 0; i < 16; i++)
            sv[i] = rank * 100 + i;
        int32_t *sd = buf_new(sizeof sv), *rd = buf_new(sizeof rv);
        buf_put(sd, sv, sizeof sv);
        cv_status st1, st2;
        if (rank % 2 == 0) {
            st1 = c->ops->send(c, sd, sizeof sv, to, 7, &e);
            st2 = c->ops->recv(c, rd, sizeof rv, from, 7, &e);
        } else {
            st2 = c->ops->recv(c, rd, sizeof rv, from, 7, &e);
            st1 = c->ops->send(c, sd, sizeof sv, to, 7, &e);
        }
        TU_CHECK(st1 == CV_OK && st2 == CV_OK, "rank %d: send/recv: %s", rank, e.msg);
        buf_get(rv, rd, sizeof rv);
        for (int i = 0; i < 16; i++)
            bad += rv[i] != from * 100 + i;
        TU_CHECK(bad == 0, "rank %d: recv got %d, want %d", rank, rv[0], from * 100);
        buf_free(sd), buf_free(rd);
    }

    /* gatherv: rank k contributes k+1 ints of value k */
    {
        int32_t mine[64];
        for (int i = 0; i <= rank; i++)
            mine[i] = rank;
        size_t counts[64], displs[64], total = 0;
        for (int k = 0; k < size; k++) {
            counts[k] = (size_t)(k + 1) * sizeof(int32_t);
            displs[k] = total;
            total += counts[k];
        }
        int32_t *md = buf_new(sizeof mine), *gd = buf_new(total);
        buf_put(md, mine, sizeof mine);
        TU_CHECK(c->ops->gatherv(c, md, (size_t)(rank + 1) * sizeof(int32_t), gd, counts, displs,
                                 0, &e) == CV_OK,
                 "gatherv: %s", e.msg);
        if (rank == 0) {
            int32_t *g = malloc(total);
            buf_get(g, gd, total);
            size_t o = 0;
            for (int k = 0; k < size; k++)
                for (int i = 0; i <= k; i++)
                    bad += g[o++] != k;
            TU_CHECK(bad == 0, "gatherv: wrong blocks");
            free(g);
        }
        buf_free(md), buf_free(gd);
    }
    TU_CHECK(c->ops->barrier(c, &e) == CV_OK, "barrier: %s", e.msg);
    buf_free(d), buf_free(bd);
    comm_destroy(c);
    printf("rank %d: %s comm (%s buffers)\n", rank, is_nccl ? "nccl" : "mpi host-staged",
           on_dev ? "device" : "host");
    int rc = tu_finish("test_comm_nccl");
    int any = rc, all = 0;
    MPI_Allreduce(&any, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return all;
}
