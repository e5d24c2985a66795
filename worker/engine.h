/* engine.h - a whole model in one process behind the step interface: the
 * single-rank worker group. `caravan run` and the in-process group link
 * drive it with steps built by the scheduler (coordinator/sched.h); the MPI
 * worker group (worker/group.h) offers the same step call for many ranks.
 *
 * engine_step: runs the forward pass for every sequence of the step (mixed
 * prefill chunks and decode tokens in one batch), samples with each
 * sequence's parameters (pure function of logits, params, seed, position and
 * the slot's recent tokens) and fills one result per want_sample sequence. */
#pragma once
#include "../core/gguf.h"
#include "../core/model_config.h"
#include "../core/status.h"
#include "../kernels/backend.h"
#include "model.h"
#include "step.h"

typedef struct engine engine;

typedef struct engine_config {
    const char *model_path;
    backend_config be;       /* device, threads, cpu level */
    model_params params;     /* n_slots, n_ctx (0 = min(n_ctx_train, 4096)), kv_type, max_batch */
} engine_config;

cv_status engine_create(const engine_config *cfg, engine **out, cv_err *e);
void engine_free(engine *eng);
const model_config *engine_model_config(const engine *eng);
const gguf_file *engine_gguf(const engine *eng); /* for the tokenizer */
int64_t engine_n_slots(const engine *eng);
int64_t engine_n_ctx(const engine *eng);

/* r->results must have room for s->n_seqs entries. */
cv_status engine_step(engine *eng, const step *s, step_result *r, cv_err *e);

/* Test/bench hook: forward a batch and copy logits (n_out x n_vocab) to host. */
struct fwd_batch;
cv_status engine_forward_logits(engine *eng, const struct fwd_batch *b, float *logits, cv_err *e);
