/* cuda_internal.cuh - what the CUDA backend's .cu files share: the backend
 * state, the checked-call macros, and the kernel dispatchers each file
 * provides (split so that nvcc compiles the files in parallel). Included by
 * the .cu files of kernels/cuda only. */
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#ifdef CARAVAN_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

extern "C" {
#include "../../core/log.h"
#include "../../core/status.h"
#include "../backend.h"
#include "backend_cuda.h"
}
#include "cuda_quant.cuh"

#define MMV_MAX_TOK 8     /* n_tok up to this uses the matrix-vector kernel */
#define MMV_WARPS 4       /* rows (warps) per block of the matrix-vector kernel */
#define ATT_WARPS 8       /* warps per (token, head) in attention */
#define ATT_MAX_HD 256    /* head_dim limit of the attention kernel */
#define GEMM_CHUNK_EL (32ll << 20) /* dequantized F16 elements per GEMM chunk (64 MiB) */
#define STAGE_BYTES (32u << 20)    /* pinned upload staging buffer, two of them */

typedef struct cuda_backend {
    backend base;
    int device;
    char name[32];
    cudaStream_t stream;
#ifdef CARAVAN_HAVE_CUBLAS
    cublasHandle_t blas;
#endif
    void *wh;         /* dequantized weight chunk (F16) */
    size_t wh_cap;
    void *xh;         /* activations converted to F16/BF16 */
    size_t xh_cap;
    int64_t gemm_chunk_el; /* GEMM_CHUNK_EL, or CARAVAN_CUDA_GEMM_CHUNK (tests: force several chunks) */
    void *stage[2];   /* pinned host staging for uploads */
    cudaEvent_t stage_ev[2];
    int mmv_var;      /* decode matvec variant: 2 (default) or 1 (CARAVAN_CUDA_MMV=v1) */
    uint8_t *xq;      /* v2: activations quantized to int8 blocks (cuda_mmv2.cuh) */
    size_t xq_cap;
    const float *xq_src; /* the x that xq holds (NULL: none); any op but matmul clears it */
    int64_t xq_ne0, xq_ntok;
    struct {                    /* v2 matmuls on one x waiting for one launch (matmul_cuda.cu) */
        int n, type;
        bool q;                 /* integer path: x is in xq */
        int64_t ne0, n_tok;
        const float *x;
        const uint8_t *W[3];
        float *y[3];
        int64_t ne1[3];
    } mm;
    bool int_weights;           /* an integer-type matrix was uploaded: v2 ops quantize their outputs */
    bool fuse;                  /* v2 and not CARAVAN_CUDA_FUSE=0: group matmuls, fuse small ops */
    int mmv_u;                  /* v2 unroll at one token: 2 (default), or 4 (CARAVAN_CUDA_MMV_U=4) */
    struct {                    /* fuse: an add waiting for the rmsnorm that reads its output */
        bool on;
        float *y;
        const float *a, *b;
        int64_t n;
    } padd;
    struct {                    /* fuse: a rope waiting for a second one (q, then k) */
        bool on;
        float *x;
        int64_t n_tok;
        int n_head, head_dim;
        const int32_t *pos;
        rope_params rp;
    } prope;
    struct cuda_graphs *graphs; /* decode steps as CUDA graphs (default; CARAVAN_CUDA_GRAPHS=0: NULL) (cuda_graph.cu) */
    cv_status err;    /* first error (sticky) */
    char err_msg[CV_ERR_MSG_MAX];
} cuda_backend;

/* Every op starts here: make this backend's device current on the calling
 * thread (a backend may be used from another thread than the one that made it),
 * launch the pending v2 work (grouped matmuls, an add or a rope waiting for
 * the op that fuses with it) and forget the v2 quantized activations
 * (cuda_matmul keeps its own kind pending; fusing ops look first). At most
 * one kind is pending at a time: every op flushes the others. Memory
 * written behind the backend's back (an NCCL all-reduce) between two matmuls
 * on the same x would need an op in between; forward.c always has one. */
extern __thread int cv_cuda_tl_device;
void cuda_mm_flush(cuda_backend *cb); /* matmul_cuda.cu: launch the pending v2 matmuls */
void cuda_pend_flush(cuda_backend *cb); /* backend_cuda.cu: launch a pending add or rope */
static inline cuda_backend *cb_dev(backend *be)
{
    cuda_backend *cb = (cuda_backend *)be->impl;
    if (cv_cuda_tl_device != cb->device && cudaSetDevice(cb->device) == cudaSuccess)
        cv_cuda_tl_device = cb->device;
    return cb;
}
static inline cuda_backend *cb_of(backend *be)
{
    cuda_backend *cb = cb_dev(be);
    if (cb->mm.n)
        cuda_mm_flush(cb);
    if (cb->padd.on || cb->prope.on)
        cuda_pend_flush(cb);
    cb->xq_src = NULL;
    return cb;
}

/* Record the first CUDA error of this backend with where it happened;
 * true when rc is an error. */
bool cb_fail(cuda_backend *cb, cudaError_t rc, const char *what, const char *file, int line);
/* checked call inside an op: records the error, evaluates to true on failure */
#define CB_CHECK(cb, call) cb_fail((cb), (call), #call, __FILE__, __LINE__)
/* after a kernel launch */
#define CB_LAUNCHED(cb, what) cb_fail((cb), cudaGetLastError(), what, __FILE__, __LINE__)
/* checked call in a function that returns cv_status */
#define CV_CUDA(e, call)                                                                           \
    do {                                                                                           \
        cudaError_t rc_ = (call);                                                                  \
        if (rc_ != cudaSuccess)                                                                    \
            return cv_err_set((e), CV_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,        \
                              cudaGetErrorString(rc_));                                            \
    } while (0)

static inline unsigned grid1(int64_t n, int threads)
{
    int64_t g = (n + threads - 1) / threads;
    return (unsigned)(g < 1 ? 1 : (g > 0x7fffffff ? 0x7fffffff : g));
}


/* kernel entry points chosen per weight type and tokens per launch */
typedef void (*mmv_fn)(float *, int64_t, const uint8_t *, size_t, int64_t, int64_t, const float *,
                       int64_t, bool);
mmv_fn mmv_get_basic(int type, int nt); /* mmv_basic.cu: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 */
mmv_fn mmv_get_k(int type, int nt);     /* mmv_k.cu: Q2_K .. Q6_K */
/* variant v2 (cuda_mmv2.cuh): integer types on int8 activations, float types coalesced */
struct mmv2_mats;
typedef void (*mmv2_q_fn)(const mmv2_mats, size_t, int64_t, const uint8_t *, size_t);
typedef void (*mmv2_f_fn)(const mmv2_mats, size_t, int64_t, const float *, int64_t);
mmv2_q_fn mmv2_get_q(int type, int nt, int u = 4); /* mmv2_q.cu: Q4_0..Q8_0, Q2_K..Q6_K (NULL: other types) */
mmv2_q_fn mmv2_get_qk(int type, int nt, int u = 4); /* mmv2_qk.cu: Q2_K..Q6_K */
mmv2_f_fn mmv2_get_f(int type, int nt, int u = 4); /* mmv2_f.cu: F32 F16 BF16; u: see cuda_mmv2.cuh */
bool mmv2_xq_reserve(cuda_backend *cb, int64_t ne0, int64_t n_tok); /* cb->xq big enough */
/* quantize n_tok activation rows (ldx apart) into xq; false on a launch error */
bool mmv2_quantize(cuda_backend *cb, uint8_t *xq, size_t xq_pitch, const float *x, int64_t ldx,
                   int64_t ne0, int64_t n_tok);
typedef void (*deq_f32_fn)(float *, int64_t, const uint8_t *, size_t, int64_t, int64_t,
                           const int32_t *, int64_t, int64_t);
typedef void (*deq_f16_fn)(__half *, int64_t, const uint8_t *, size_t, int64_t, int64_t,
                           const int32_t *, int64_t, int64_t);
deq_f32_fn deq_f32_get(int type); /* dequant_cuda.cu */
deq_f16_fn deq_f16_get(int type);

/* cuda_graph.cu: decode steps as CUDA graphs (default; off with CARAVAN_CUDA_GRAPHS=0) */
typedef struct cuda_graphs cuda_graphs;
void cg_init(cuda_backend *cb);    /* reads the environment; cb->graphs stays NULL when off */
void cg_destroy(cuda_backend *cb);
void cg_begin(cuda_backend *cb);   /* start capturing, if not already */
void cg_op(cuda_backend *cb);      /* an op: cg_begin, cutting long captures into pieces */
void cg_flush(cuda_backend *cb);   /* end the capture and launch it */
void cg_synced(cuda_backend *cb);  /* after a stream synchronisation */
bool cg_from_host(cuda_backend *cb, void *dst, const void *src, size_t n);
/* at the top of every op that only launches work on the stream */
#define CG_OP(cb)                                                                                  \
    do {                                                                                           \
        if ((cb)->graphs)                                                                          \
            cg_op(cb);                                                                             \
    } while (0)
/* before anything that cannot be captured (syncs, allocation, cuBLAS) */
#define CG_FLUSH(cb)                                                                               \
    do {                                                                                           \
        if ((cb)->graphs)                                                                          \
            cg_flush(cb);                                                                          \
    } while (0)

/* matmul_cuda.cu */
void cuda_matmul(backend *be, float *y, const be_weight *w, const float *x, int64_t n_tok);
void cuda_embed(backend *be, float *y, const be_weight *emb, const int32_t *tokens, int64_t n_tok);
