/* forward.h - the transformer forward pass of one rank's shard, generic over
 * the backend: embedding (stage 0), this stage's layers with the two TP
 * all-reduces per layer, final norm + vocab-sliced output head (last stage).
 *
 * One call processes a batch of tokens from several sequences at different
 * positions (prefill chunks and decode tokens mixed), each with its KV slot. */
#pragma once
#include <stdint.h>

#include "../core/status.h"
#include "comm.h"
#include "model.h"

typedef struct fwd_batch {
    int64_t n_tok;
    const int32_t *tokens;  /* host (n_tok): token ids (read on stage 0; all stages get them) */
    const int32_t *pos;     /* host (n_tok): position of each token in its sequence */
    const int32_t *slot;    /* host (n_tok): KV slot of each token */
    int64_t n_out;          /* rows that need logits (last stage) */
    const int32_t *out_idx; /* host (n_out): indices into the batch, e.g. last token of each seq */
} fwd_batch;

/* Run this rank's part of the model for batch b.
 *  - stage 0 (m->shard.has_embd): embeds b->tokens; otherwise reads hidden_in
 *    (host, n_tok x n_embd).
 *  - not the last stage: writes hidden_out (host, n_tok x n_embd).
 *  - last stage (m->shard.has_head): writes logits_out (host, n_out x
 *    m->shard.n_vocab): this TP rank's vocabulary slice.
 * tp is the communicator of this stage's TP ranks (comm_single for T = 1). */
cv_status forward_stage(model *m, comm *tp, const fwd_batch *b, const float *hidden_in,
                        float *hidden_out, float *logits_out, cv_err *e);
