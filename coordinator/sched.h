/* sched.h - the scheduler: continuous batching of sequences over one or more
 * worker groups. Pure C with no I/O: the coordinator's event loop and
 * `caravan run` both drive it the same way:
 *
 *   sched_submit(...)                    a request arrives (prompt tokens)
 *   while (sched_next_step(s, g, &st))   build micro-batches for group g
 *       link->submit(st)                 (up to link->max_inflight in flight)
 *   link->poll(&res) ... sched_step_done(s, g, &res)   apply results:
 *       on_token / on_done callbacks fire; finished slots are released
 *
 * Each step mixes decode tokens (one per running sequence) and prefill chunks
 * under a token budget; a sequence is in at most one in-flight step. When a
 * group is lost, its sequences go back to the queue and are replayed from
 * their token history (prompt + generated) on another group: sampling is a
 * pure function of (logits, params, seed, position), so they continue with
 * exactly the tokens they would have produced. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "../core/sampler.h"
#include "../core/status.h"
#include "../worker/step.h"

typedef struct sched sched;

typedef enum sched_finish {
    SCHED_FINISH_NONE = 0,
    SCHED_FINISH_STOP,      /* EOS / end-of-generation token, or stopped by the caller (stop string) */
    SCHED_FINISH_LENGTH,    /* max_tokens reached or context full */
    SCHED_FINISH_CANCELLED, /* cancelled by the client */
    SCHED_FINISH_ERROR,     /* no group can run it, or a group reported an error */
} sched_finish;

typedef struct sched_callbacks {
    /* A new token of sequence seq_id (called from sched_step_done). Return
     * false to stop the sequence now (e.g. a stop string matched):
     * it finishes with SCHED_FINISH_STOP. */
    bool (*on_token)(void *ud, int64_t seq_id, const sample_result *r);
    /* The sequence is finished (called once; the seq_id is invalid after). */
    void (*on_done)(void *ud, int64_t seq_id, sched_finish why, const char *msg);
} sched_callbacks;

typedef struct sched_request {
    const int32_t *prompt; /* n_prompt >= 1 token ids (copied) */
    int64_t n_prompt;
    int64_t max_tokens;    /* >= 1 */
    sampling_params sp;
    const int32_t *stop_tokens; /* end-of-generation ids (copied) */
    int32_t n_stop_tokens;
    void *ud;              /* passed to the callbacks */
} sched_request;

typedef struct sched_config {
    int64_t token_budget;  /* max tokens per step (default 256) */
    int64_t prefill_chunk; /* max prompt tokens of one sequence per step (default = budget) */
    int64_t max_queue;     /* waiting requests beyond which submit fails with CV_ERANGE (default 1024) */
    int64_t max_seqs_per_step; /* default: the group's running sequences / its max_inflight
                                  (so pipeline stages overlap), at most n_slots */
    sched_callbacks cb;
} sched_config;

sched *sched_create(const sched_config *cfg);
void sched_free(sched *s);

/* Groups: returns the group index (>= 0). n_ctx bounds prompt + generation. */
int sched_add_group(sched *s, int64_t n_slots, int64_t n_ctx, int max_inflight);
/* The group is gone: its in-flight steps are void, its sequences re-queued
 * (front of the queue) for replay elsewhere. */
void sched_remove_group(sched *s, int g);
int sched_n_groups(const sched *s); /* live groups */

/* Queue a request. CV_ERANGE: queue full or prompt + max_tokens over every group's context
 * (message says which); CV_EINVAL: bad parameters. */
cv_status sched_submit(sched *s, const sched_request *req, int64_t *seq_id, cv_err *e);
/* Cancel: a waiting request finishes at once; a running one finishes when its
 * in-flight step returns (its slot is released in the next step). on_done
 * gets SCHED_FINISH_CANCELLED. */
void sched_cancel(sched *s, int64_t seq_id);
/* Fail every waiting request (no group left): on_done(SCHED_FINISH_ERROR, msg). */
void sched_fail_waiting(sched *s, const char *msg);

/* Build the next step for group g into *st (owned by the scheduler, valid
 * until sched_step_done/sched_remove_group for it). False when g has nothing
 * to run or max_inflight steps are already outstanding. */
bool sched_next_step(sched *s, int g, step *st);
/* Apply the result of g's oldest outstanding step. */
void sched_step_done(sched *s, int g, const step_result *r);
/* The step failed in the group (error reported by the group, not a lost group):
 * its sequences finish with SCHED_FINISH_ERROR and msg. */
void sched_step_failed(sched *s, int g, const char *msg);

typedef struct sched_stats {
    int64_t waiting;      /* queued, not yet in a slot */
    int64_t running;      /* holding a slot */
    int64_t inflight_steps;
    int64_t tokens_generated;
    int64_t prompt_tokens;
    int64_t requests_done;
} sched_stats;
void sched_get_stats(const sched *s, sched_stats *st);
/* Per group: slots in use. */
int64_t sched_group_slots_used(const sched *s, int g);
