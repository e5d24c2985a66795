/* backend.h - the compute backend interface: buffers, weight upload, and the
 * ops one transformer layer needs. One implementation per file: cpu
 * (kernels/cpu/backend_cpu.c: scalar reference + SIMD chosen at run time)
 * and cuda (kernels/cuda/backend_cuda.cu).
 *
 * Conventions. Activations are float32, row-major, one row per token:
 * x (n_tok, n) means n_tok rows of n floats. All float and int32 pointers
 * passed to ops are *backend buffers* (host memory for cpu, device memory for
 * cuda) obtained from be->alloc or from_host; copy small per-step arrays
 * (token ids, positions, slots) in with from_host once per step. Weights are
 * be_weight handles made by weight_upload. Ops are asynchronous on cuda;
 * to_host synchronises. Backends are not thread-safe: one caller thread. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"

typedef struct backend backend;

/* A weight matrix (ne1 rows of ne0 elements) or vector (ne1 == 1). */
typedef struct be_weight {
    int type;         /* dtype id (core/dtype.h) */
    int64_t ne0;      /* columns = input dimension, contiguous */
    int64_t ne1;      /* rows = output dimension */
    size_t row_bytes; /* dtype_row_size(type, ne0) */
    void *data;       /* backend memory: host pointer (maybe into the mmap) or device pointer */
    bool owned;       /* data allocated by the backend (freed by weight_free) */
    void *priv;       /* backend-private (e.g. repacked copy) */
} be_weight;

/* KV cache of one layer: n_slots sequences x n_ctx positions x kv_dim. */
typedef struct be_kv_layer {
    int type;       /* DT_F32 or DT_F16 */
    int64_t n_slots;
    int64_t n_ctx;
    int64_t kv_dim; /* n_head_kv_local * head_dim */
    void *k;        /* (n_slots, n_ctx, kv_dim) backend buffer */
    void *v;        /* same layout */
} be_kv_layer;

typedef enum rope_mode {
    ROPE_NORMAL = 0, /* rotate adjacent pairs (x[2i], x[2i+1]): llama */
    ROPE_NEOX = 2,   /* rotate (x[i], x[i + n_rot/2]): qwen2, neox */
} rope_mode;

typedef struct rope_params {
    int mode;                  /* rope_mode */
    int n_rot;                 /* dims rotated per head (<= head_dim) */
    float freq_base;           /* theta, default 10000 */
    float freq_scale;          /* linear scaling: pos * freq_scale */
    const float *freq_factors; /* backend buffer of n_rot/2 divisors (llama3 rope_freqs) or NULL */
} rope_params;

typedef struct backend_ops {
    const char *name; /* "cpu-scalar", "cpu-avx2", "cuda:0" */
    bool host_memory; /* buffers are ordinary host memory (cpu): comm can use them directly */

    /* buffers */
    void *(*alloc)(backend *be, size_t n_bytes); /* NULL on failure */
    void (*free)(backend *be, void *buf);
    void (*from_host)(backend *be, void *dst, const void *src_host, size_t n_bytes);
    void (*to_host)(backend *be, void *dst_host, const void *src, size_t n_bytes); /* syncs */
    void (*copy)(backend *be, void *dst, const void *src, size_t n_bytes);
    void (*memset0)(backend *be, void *dst, size_t n_bytes);
    void (*sync)(backend *be);

    /* Make rows of `src` (host, row r at src + r*src_stride) usable as a
     * weight. `src_is_mapped` says src outlives the weight (mmapped file), so
     * a host backend may alias it instead of copying. */
    cv_status (*weight_upload)(backend *be, be_weight *w, int type, int64_t ne0, int64_t ne1,
                               const void *src, size_t src_stride, bool src_is_mapped, cv_err *e);
    void (*weight_free)(backend *be, be_weight *w);
    /* Optional (NULL: nothing to do): re-lay a matmul weight for this
     * backend's kernels, once, after loading. The caller promises w->data is
     * writable and that from now on the weight only goes to matmul (never to
     * embed as a table). Best effort: the weight stays valid either way. */
    void (*weight_optimize)(backend *be, be_weight *w);
    size_t (*mem_free)(backend *be); /* bytes available for weights + KV (planner) */

    /* ops */
    /* y (n_tok, w->ne1) = x (n_tok, w->ne0) @ W^T */
    void (*matmul)(backend *be, float *y, const be_weight *w, const float *x, int64_t n_tok);
    /* y (n_tok, n) = x / rms(x) * g; g is an F32 weight of ne0 == n */
    void (*rmsnorm)(backend *be, float *y, const float *x, const be_weight *g, int64_t n_tok,
                    int64_t n, float eps);
    /* x (n_tok, n_head*head_dim) rotated in place by pos[t] */
    void (*rope)(backend *be, float *x, int64_t n_tok, int n_head, int head_dim,
                 const int32_t *pos, const rope_params *rp);
    /* Store k,v (n_tok, kv->kv_dim) at (slot[t], pos[t]), then for each token t
     * out[t] = softmax(q[t] K^T * scale) V over positions 0..pos[t] of slot[t]
     * (causal). q/out (n_tok, n_head*head_dim); query head h uses kv head
     * h / (n_head / n_head_kv). */
    void (*attention)(backend *be, float *out, const float *q, const float *k, const float *v,
                      be_kv_layer *kv, const int32_t *slot, const int32_t *pos, int64_t n_tok,
                      int n_head, int n_head_kv, int head_dim, float scale);
    /* y = silu(gate) * up, n elements */
    void (*swiglu)(backend *be, float *y, const float *gate, const float *up, int64_t n);
    /* y = a + b, n elements (y may alias a) */
    void (*add)(backend *be, float *y, const float *a, const float *b, int64_t n);
    /* y (n_tok, n) += bias (F32 weight, ne0 == n) broadcast over rows */
    void (*add_bias)(backend *be, float *y, const be_weight *bias, int64_t n_tok, int64_t n);
    /* y (n_tok, emb->ne0) = dequantized rows tokens[t] of emb */
    void (*embed)(backend *be, float *y, const be_weight *emb, const int32_t *tokens,
                  int64_t n_tok);
    /* y (n_rows, n) = x rows idx[i] (gather, e.g. last token of each sequence) */
    void (*get_rows)(backend *be, float *y, const float *x, const int32_t *idx, int64_t n_rows,
                     int64_t n);
    /* y (n_rows, n) = x (n_rows, n) * s */
    void (*scale)(backend *be, float *y, const float *x, float s, int64_t n);

    void (*destroy)(backend *be);

    /* Optional (NULL on cpu): the first error of the asynchronous ops, which
     * return nothing. cuda: a failed launch or kernel fault, kept with its
     * file:line; later to_host outputs are NaN. Check after to_host. */
    cv_status (*last_error)(backend *be, cv_err *e);
} backend_ops;

struct backend {
    const backend_ops *ops;
    void *impl;
};

/* Thin wrappers so call sites read like maths. */
static inline void be_matmul(backend *be, float *y, const be_weight *w, const float *x,
                             int64_t n_tok)
{
    be->ops->matmul(be, y, w, x, n_tok);
}

/* Create backends. `spec` is "cpu" or "cuda:N". n_threads 0 = all cores.
 * cpu_level forces a narrower CPU path for tests: "scalar", "avx2", "avx512"
 * or NULL for the best the CPU has. */
typedef struct backend_config {
    const char *device;    /* "cpu" (default) or "cuda:N" */
    int n_threads;         /* cpu threads; 0 = number of online cores */
    const char *cpu_level; /* NULL = best available */
} backend_config;

cv_status backend_create(const backend_config *cfg, backend **out, cv_err *e);
void backend_destroy(backend *be);

/* CPU backend constructor (kernels/cpu). */
cv_status backend_cpu_create(int n_threads, const char *level, backend **out, cv_err *e);
/* CUDA backend constructor (kernels/cuda); returns CV_EUNSUPPORTED when built without CUDA. */
cv_status backend_cuda_create(int device, backend **out, cv_err *e);
