/* group.h - a worker group: one model split over the ranks of an MPI
 * communicator as P pipeline stages x T tensor-parallel ranks, behind the
 * same step call as the single-process engine (worker/engine.h).
 *
 * World rank r is stage r / T, TP rank r % T. Rank 0 (stage 0, TP rank 0) is
 * the leader: it takes steps (group_submit), computes stage 0 and gets the
 * sampled tokens back from the last stage (group_wait / group_poll), in
 * submission order, with up to P steps in flight so that stages overlap.
 * Every other rank calls group_serve, which returns when the leader calls
 * group_free (or a rank fails).
 *
 * Between stages, rank (s, t) sends rank (s+1, t) one message:
 *   | wire header (64) | plan: seqs, tokens, released slots | hidden (n_tok x n_embd f32) |
 * (format in group.c). TP ranks of stage 0 get the plan by broadcast from the
 * leader. The last stage gathers the vocabulary slices of the logits to its
 * TP rank 0, which samples (core/sampler.h, with per-slot recent tokens kept
 * from the plans, as engine.c does) and sends the results to the leader.
 *
 * Waiting ranks never spin: MPI's own waits do, and on this 2-vCPU VM any
 * activity on one vCPU (even a pause loop) slows the other by 25-50%. A
 * waiting rank polls MPI briefly and then sleeps on its doorbell, a futex
 * word in a window shared by the ranks of its node; whoever posts it a
 * message (activations, a result, the stage-0 plan broadcast, an error)
 * rings it, so it wakes within ~0.05 ms and costs nothing while it waits.
 * Ranks on other nodes, or CARAVAN_GROUP_BELL=0, fall back to naps (capped
 * at 200 us, ~0.2-0.5 ms per hop).
 *
 * Environment knobs: CARAVAN_GROUP_SPIN (polls before sleeping, default
 * 100), CARAVAN_GROUP_NAP_US (sleep cap: naps 200 us, doorbell timeout
 * 50000 us), CARAVAN_GROUP_BELL=0 (no doorbells), CARAVAN_GROUP_DEPTH=D
 * (leader's choice: P x D micro-batches in flight instead of P),
 * CARAVAN_GROUP_PROFILE=1 (each rank prints its forward and wait seconds,
 * bytes sent and, for TP, the time in all-reduces at group_free),
 * CARAVAN_GROUP_TRACE=PREFIX (each rank writes its per-step timeline -
 * submit, forward start/end, sampled, sent, wait start/end, CLOCK_MONOTONIC
 * seconds - to PREFIX.RANK at group_free), CARAVAN_TEST_FAIL=RANK:STEP
 * (tests: that rank fails at that step). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include <mpi.h>

#include "../core/gguf.h"
#include "../core/model_config.h"
#include "../core/status.h"
#include "../kernels/backend.h"
#include "model.h"
#include "step.h"

typedef struct group group;

typedef struct group_config {
    const char *model_path;   /* every rank opens (mmaps) the same GGUF path */
    backend_config be;        /* per rank: device, threads (0 = cores / local ranks), cpu level */
    model_params params;      /* n_slots, n_ctx (0 = min(n_ctx_train, 4096)), kv_type, max_batch */
    int tp, pp;               /* layout; tp * pp must equal the communicator size (0: pp = size / tp) */
    const uint64_t *mem;      /* per world rank memory to plan with (NULL: each rank reports
                                 its backend's free memory); read on rank 0 only */
    bool want_logits;         /* tests: the last stage also returns the gathered logits rows */
} group_config;

/* Collective over `mc` (e.g. MPI_COMM_WORLD): rank 0 plans (planner.h) from
 * the ranks' reported memory and broadcasts the layout; every rank builds its
 * stage/TP communicators and loads its shard. A failure on any rank (plan
 * refused, bad shard, out of memory) fails the call on every rank with a
 * message naming the rank and its reason. */
cv_status group_create(MPI_Comm mc, const group_config *cfg, group **out, cv_err *e);
/* Leader: tells the other ranks to stop (they return from group_serve), then
 * frees. Other ranks: frees after group_serve returned. */
void group_free(group *g);

bool group_is_leader(const group *g);
int group_rank(const group *g);
int group_size(const group *g);
int group_pp(const group *g);
int group_tp(const group *g);
const model_config *group_model_config(const group *g);
const gguf_file *group_gguf(const group *g); /* this rank's open GGUF (tokenizer) */
int64_t group_n_slots(const group *g);
int64_t group_n_ctx(const group *g);
int group_max_inflight(const group *g);        /* P (x CARAVAN_GROUP_DEPTH): steps the leader
                                                  may have in flight */
const shard_spec *group_shard(const group *g); /* this rank's shard */
const model *group_model(const group *g);      /* this rank's loaded shard */

/* Leader only. submit runs stage 0 for the step and passes it on; fails with
 * CV_ERANGE when group_max_inflight steps are already in flight (wait first). */
cv_status group_submit(group *g, const step *s, cv_err *e);
/* Next result in submission order; r->results needs room for the step's
 * n_seqs entries. Blocks. */
cv_status group_wait(group *g, step_result *r, cv_err *e);
/* Like group_wait, but returns *ready=false when no result has arrived within
 * timeout_ms (0 polls, < 0 blocks). */
cv_status group_poll(group *g, step_result *r, int timeout_ms, bool *ready, cv_err *e);
/* submit + wait (nothing else in flight). */
cv_status group_step(group *g, const step *s, step_result *r, cv_err *e);
int group_inflight(const group *g);

/* With want_logits: logits of the last waited step, rows in the order of its
 * want_sample sequences, each n_vocab floats (NULL otherwise). */
const float *group_last_logits(const group *g, int64_t *n_rows, int64_t *n_vocab);

/* Non-leader ranks: serve steps until the leader's shutdown (CV_OK) or a
 * failure (its status and message, naming the rank). */
cv_status group_serve(group *g, cv_err *e);

/* This rank's planned bytes (planner.h): weights, KV cache, scratch, and
 * the expected resident set of a CPU rank (total less the mapped embedding). */
void group_planned_bytes(const group *g, uint64_t *weights, uint64_t *kv, uint64_t *scratch,
                         uint64_t *resident);

/* True once a communication or compute error hit this rank's group: the
 * caller should end the job (MPI_Abort), since peers may be blocked. */
bool group_failed(const group *g);

/* Bytes this rank sent to other ranks so far: activations + plans + results
 * + logits gathers + the payload of its TP all-reduces. */
uint64_t group_bytes_sent(const group *g);
