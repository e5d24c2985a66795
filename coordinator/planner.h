/* planner.h - lays a model out over the ranks of a worker group: P pipeline
 * stages x T tensor-parallel ranks, from the model's shapes and weight types
 * (GGUF metadata and tensor infos only, never tensor data) and each rank's
 * memory. Produces one shard_spec per rank (worker/shard.h) and the bytes
 * each rank will hold. Used by `caravan plan`, the worker group (rank 0
 * plans for all) and the coordinator.
 *
 * Rules:
 *  - World rank r is stage r / T, TP rank r % T.
 *  - Layers: contiguous ranges. PLAN_BALANCE_MEMORY with every rank's
 *    memory known: ranges minimise the largest used fraction of any rank's
 *    memory (uneven memory gives uneven ranges). Otherwise (memory unknown,
 *    or PLAN_BALANCE_COMPUTE): ranges minimise the largest weight bytes a
 *    rank reads per token (layers + the head on the last stage; the
 *    embedding is a row lookup), with known memory as a cap. Stage 0 also
 *    holds the token embedding, the last stage the final norm and the head.
 *  - Attention: whole KV heads with their query heads (GQA groups), uneven
 *    when T does not divide n_head_kv (the first ranks get one more).
 *  - FFN: hidden rows in whole quantization blocks of ffn_down's type (256
 *    for K-quants, 32 for the other quants, 1 for float types).
 *  - Output head: vocabulary rows, as even as possible.
 *  - Bytes per rank: its weight slices + its KV cache (n_slots x n_ctx of
 *    its KV heads, per layer) + activation scratch for max_batch tokens.
 *  - Column slices (attn_output: the rank's query heads; ffn_down: its FFN
 *    rows) that do not start and end on blocks of the weight's type (e.g.
 *    128 columns of Q4_K's 256-element super-blocks) are dequantized to F32
 *    by the loader: counted at 4 bytes per element (f32_slice_bytes).
 *  - Refused, with why and what would fit: T > n_head_kv (largest T), P >
 *    n_layer (largest P), FFN blocks < T, ranks != P x T, a rank whose share
 *    is over its memory (the least memory per rank that would fit). */
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "../core/gguf.h"
#include "../core/model_config.h"
#include "../core/status.h"
#include "../worker/shard.h"

/* Weight types of one layer (dtype ids). */
typedef struct plan_layer_types {
    int wq, wk, wv, wo, w_gate, w_up, w_down;
} plan_layer_types;

/* What the planner needs to know about a model. */
typedef struct plan_model {
    model_config cfg;         /* shapes; tied_output, has_qkv_bias used */
    int tok_embd_type;
    int output_type;          /* = tok_embd_type when the head is tied */
    plan_layer_types *layers; /* cfg.n_layer entries (owned) */
} plan_model;

/* From an open GGUF (metadata + tensor infos; model_config_load validates). */
cv_status plan_model_from_gguf(const gguf_file *f, plan_model *pm, cv_err *e);
/* From shapes alone: every matrix of type `type` (embedding and head too). */
cv_status plan_model_from_shape(const model_config *cfg, int type, plan_model *pm, cv_err *e);
void plan_model_free(plan_model *pm);
/* Named shapes for `caravan plan --shape`: "llama3-70b", "llama3-8b",
 * "llama3.2-1b", "llama2-7b", "llama2-13b", "mistral-7b", "qwen2-7b". */
cv_status plan_shape_preset(const char *name, model_config *cfg, cv_err *e);
/* Comma-separated preset names (for help and errors). */
const char *plan_shape_names(void);

typedef enum plan_balance {
    PLAN_BALANCE_MEMORY = 0,  /* layer ranges proportional to memory (when every rank's is known) */
    PLAN_BALANCE_COMPUTE = 1, /* balance weight bytes read per token; memory only as a cap */
} plan_balance;

typedef struct plan_request {
    int tp, pp;
    int balance;         /* plan_balance */
    int64_t n_slots;     /* KV slots per rank (sequences resident at once) */
    int64_t n_ctx;       /* positions per slot */
    int kv_type;         /* DT_F16 or DT_F32 */
    int64_t max_batch;   /* tokens per forward call (scratch) */
    const uint64_t *mem; /* pp*tp bytes by world rank, 0 = unknown; NULL = all unknown */
} plan_request;

typedef struct plan_rank {
    shard_spec shard;
    uint64_t mem;           /* as given (0 = unknown) */
    uint64_t weight_bytes;  /* its weights and slices */
    uint64_t kv_bytes;      /* its KV cache */
    uint64_t scratch_bytes; /* activations, logits, message buffers */
    uint64_t total_bytes;   /* what must fit in the rank's memory */
    uint64_t mapped_bytes;  /* part of weight_bytes that a CPU rank maps from the GGUF but pages
                               in only by use: the token embedding table (a row lookup), less
                               the rows it also serves as a tied head on this rank */
    uint64_t resident_bytes;/* expected resident set of a CPU rank: total - mapped */
    uint64_t f32_slice_bytes; /* part of weight_bytes: column slices off their type's blocks,
                                 held dequantized as F32 */
} plan_rank;

typedef struct plan {
    int tp, pp, n_ranks;
    plan_rank *ranks;            /* n_ranks, by world rank */
    uint64_t model_weight_bytes; /* the whole model's weights, for comparison */
} plan;

cv_status planner_plan(const plan_model *pm, const plan_request *req, plan *out, cv_err *e);
void plan_free(plan *p);
/* Human-readable table: one line per rank. */
void plan_print(const plan *p, const plan_model *pm, const plan_request *req, FILE *f);

/* Bytes of `rows` rows of a matrix slice of `cols` columns of `type`
 * (columns not on a block boundary are counted as F32: the loader
 * dequantizes such slices). */
uint64_t plan_slice_bytes(int type, int64_t rows, int64_t cols);
