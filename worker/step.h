/* step.h - one scheduler step for a worker group, in plain C structs.
 *
 * The coordinator (or `caravan run`) builds a step: for each sequence in the
 * micro-batch, its KV slot, the position of its first new token, the new
 * tokens (a prefill chunk or one decode token) and its sampling parameters.
 * The group runs the forward pass and returns, for each sequence whose chunk
 * completes its prompt (or is a decode token), the sampled token. The same
 * structs back the protobuf Step/StepResult (proto/cluster.proto) and the
 * plan that travels with activations between pipeline stages. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "../core/sampler.h"

typedef struct step_seq {
    int64_t seq_id;     /* coordinator's sequence id (echoed back) */
    int32_t slot;       /* KV slot in the group, 0..n_slots-1 */
    int32_t pos;        /* position of tokens[0] */
    int32_t n_tokens;   /* >= 1 */
    int32_t *tokens;    /* n_tokens ids */
    bool want_sample;   /* sample after the last token (false for a non-final prefill chunk) */
    sampling_params sp;
} step_seq;

typedef struct step {
    uint64_t id;
    int32_t n_seqs;
    step_seq *seqs;
    int32_t n_released;     /* slots to clear before this step */
    int32_t *released_slots;
} step;

typedef struct step_seq_result {
    int64_t seq_id;
    sample_result r;
} step_seq_result;

typedef struct step_result {
    uint64_t id;
    int32_t n_results;       /* one per step_seq with want_sample */
    step_seq_result *results;
} step_result;
