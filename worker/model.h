/* model.h - one rank's shard of a model: config, the weights of its layers
 * (or slices of them) uploaded to its backend, its KV cache and scratch.
 * Loads only its own tensors/slices from the mmapped GGUF, so resident
 * memory is about its share of the weights plus its KV cache: after loading,
 * the pages of the mapping it does not compute from are dropped from the
 * process and its own aliased ranges are faulted in (model.c). */
#pragma once
#include <stdint.h>

#include "../core/gguf.h"
#include "../core/model_config.h"
#include "../kernels/backend.h"
#include "shard.h"

typedef struct model_layer {
    be_weight attn_norm;          /* F32 (n_embd) */
    be_weight wq, wk, wv;         /* (n_head*head_dim | n_head_kv*head_dim, n_embd) rows sliced by head */
    be_weight bq, bk, bv;         /* qwen2 biases, sliced like the rows; data NULL if absent */
    be_weight wo;                 /* (n_embd, n_head*head_dim) columns sliced by head */
    be_weight ffn_norm;           /* F32 (n_embd) */
    be_weight w_gate, w_up;       /* (n_ff, n_embd) rows sliced */
    be_weight w_down;             /* (n_embd, n_ff) columns sliced */
    be_kv_layer kv;               /* this layer's KV cache (local heads) */
} model_layer;

typedef struct model_params {
    int64_t n_slots;   /* sequences that can be resident at once */
    int64_t n_ctx;     /* max positions per sequence (<= n_ctx_train unless forced) */
    int kv_type;       /* DT_F32 or DT_F16 */
    int64_t max_batch; /* max tokens per forward call (sizes scratch) */
    int weights_mmap;  /* host backends: 1 = compute straight from the file mapping (4 KiB
                          pages of the page cache); 0 (default) = copy the rank's weights
                          into anonymous memory with transparent huge pages, which streams
                          ~20% faster in decode (fewer TLB misses, prefetch across 4 KiB);
                          CARAVAN_MMAP=1 in the environment forces 1 */
} model_params;

/* Activation buffers of one rank (backend memory), sized for max_batch
 * tokens; layout known to forward.c only, allocated by model_load. */
typedef struct model_scratch {
    float *x;         /* (max_batch, n_embd) residual stream */
    float *xn;        /* (max_batch, n_embd) normed input of a block */
    float *q;         /* (max_batch, n_head_local * head_dim) */
    float *k, *v;     /* (max_batch, n_head_kv_local * head_dim) */
    float *att;       /* (max_batch, n_head_local * head_dim) attention output */
    float *proj;      /* (max_batch, n_embd) wo / w_down output (partial sums under TP) */
    float *gate, *up; /* (max_batch, n_ff_local) */
    float *logits;    /* (out_chunk, n_vocab_local) head output of one chunk of rows */
    int32_t *tokens, *pos, *slot, *out_idx; /* (max_batch) per-step arrays */
    int64_t out_chunk; /* rows of logits computed per head call */
    float *host;      /* host staging (max_batch * n_embd) for all-reduce when the
                         backend is not host memory and the comm wants host buffers */
} model_scratch;

typedef struct model {
    model_config cfg;
    shard_spec shard;
    model_params params;
    backend *be;             /* not owned */
    gguf_file *gguf;         /* owned (mapping) */
    be_weight tok_embd;      /* (n_vocab, n_embd), stage 0; also the head when tied */
    be_weight output_norm;   /* F32 (n_embd), last stage */
    be_weight output;        /* (n_vocab slice, n_embd) rows [vocab0, vocab0 + n_vocab), last stage */
    be_weight rope_freqs;    /* F32 (n_rot/2) or data NULL */
    model_layer *layers;     /* shard.n_layers entries: global layer shard.layer0 + i */
    void *scratch;           /* model_scratch*: backend buffers for activations, sized by max_batch */
    size_t weight_bytes;     /* bytes of weights this rank holds */
    size_t kv_bytes;         /* bytes of KV cache */
    size_t mapped_resident_bytes; /* bytes of the GGUF's tensor data this rank holds in host
                                     memory (the mapping's pages, or their anonymous copy): its
                                     aliased weights, page-rounded (0 when nothing is aliased) */
    struct model_anon *anon;      /* anonymous copies of the mapping's spans (weights_mmap 0) */
    int n_anon;
} model;

/* Load this rank's shard (shard NULL: the whole model) from an open GGUF
 * (ownership of f passes to the model on success). */
cv_status model_load(gguf_file *f, const shard_spec *shard, const model_params *p, backend *be,
                     model **out, cv_err *e);
void model_free(model *m);
/* After the embedding rows of tokens[0..n) were read: drop the pages the
 * lookups faulted into this process when the table lies in the file
 * mapping and nothing else holds it (not a tied head), so that a long run
 * does not accumulate the table in the resident set (the page cache keeps
 * it; the next lookup of a row faults it in again). No-op otherwise. */
void model_embd_release(const model *m, const int32_t *tokens, int64_t n);
/* Clear a KV slot (the next sequence in it starts at pos 0). */
void model_slot_clear(model *m, int32_t slot);
