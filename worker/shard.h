/* shard.h - what one rank of a worker group holds: its pipeline stage's
 * layer range and its tensor-parallel slice of each layer. Made by the
 * planner (coordinator/planner.c) or shard_full() for one process; consumed
 * by the model loader (worker/model.c), which maps only these tensors/slices.
 *
 * TP slicing (Megatron): rank t of T holds query heads [head0, head0+n_head)
 * and KV heads [kv_head0, kv_head0+n_head_kv), whole KV-head groups so the
 * GQA ratio is the same on every rank; FFN gate/up rows and down columns
 * [ff0, ff0+n_ff) on quantization-block boundaries; output-head vocab rows
 * [vocab0, vocab0+n_vocab). Splits may be uneven. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

typedef struct shard_spec {
    int pp_rank, pp_size;  /* pipeline stage index / count */
    int tp_rank, tp_size;  /* tensor-parallel index / count within the stage */
    int layer0, n_layers;  /* layers [layer0, layer0 + n_layers) */
    bool has_embd;         /* token embedding (stage 0) */
    bool has_head;         /* final norm + output head (last stage) */
    int head0, n_head;     /* query heads of this TP rank */
    int kv_head0, n_head_kv;
    int64_t ff0, n_ff;     /* FFN hidden rows of this TP rank */
    int64_t vocab0, n_vocab; /* output-head rows of this TP rank */
} shard_spec;

struct model_config;
/* The whole model on one rank (single process). */
void shard_full(const struct model_config *cfg, shard_spec *s);
