/* model_config.h - hyperparameters and tokenizer-independent facts about a
 * model, read from GGUF metadata with the usual defaults. No weights; the
 * planner uses this alone (`caravan plan` never touches tensor data). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"

typedef enum model_arch { ARCH_LLAMA = 0, ARCH_QWEN2 } model_arch;

typedef struct model_config {
    model_arch arch;
    char arch_name[32];   /* "llama", "qwen2" */
    char name[128];       /* general.name, may be empty */
    int n_layer;
    int64_t n_embd;
    int n_head;
    int n_head_kv;
    int head_dim;         /* n_embd / n_head unless attention.key_length says otherwise */
    int64_t n_ff;
    int64_t n_vocab;      /* from token_embd rows (or tokenizer.ggml.tokens) */
    int64_t n_ctx_train;  /* context_length */
    float rms_eps;        /* attention.layer_norm_rms_epsilon, default 1e-5 */
    float rope_freq_base; /* rope.freq_base, default 10000 (qwen2: 1000000 if absent) */
    float rope_freq_scale;/* 1 / rope.scaling.factor for linear scaling, else 1 */
    int n_rot;            /* rope.dimension_count, default head_dim */
    int rope_mode;        /* ROPE_NORMAL (llama) or ROPE_NEOX (qwen2) */
    bool has_rope_freqs;  /* rope_freqs.weight tensor present (llama3 scaling) */
    bool tied_output;     /* no output.weight: the head reuses token_embd */
    bool has_qkv_bias;    /* qwen2 */
    int file_type;        /* general.file_type or -1 */
} model_config;

/* Reads and validates metadata + tensor shapes (not data). Unsupported
 * architecture or missing/mis-shaped tensors give a clear error naming them
 * (and listing supported architectures). */
cv_status model_config_load(const gguf_file *f, model_config *cfg, cv_err *e);
