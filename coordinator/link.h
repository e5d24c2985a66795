/* link.h - group_link: how the scheduler talks to one worker group.
 * Implementations, one per file: inproc (link_inproc.c: an engine or an MPI
 * group in this process) and tcp (link_tcp.c: a remote group leader over the
 * cluster protocol). Steps are submitted in order; results come back in the
 * same order. Up to max_inflight steps may be outstanding (pipeline stages). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "../core/status.h"
#include "../worker/step.h"

typedef struct group_link group_link;

typedef struct group_link_ops {
    const char *name;
    /* Queue a step (the link copies what it needs before returning). */
    cv_status (*submit)(group_link *l, const step *s, cv_err *e);
    /* Next result in submission order. timeout_ms < 0 waits forever; 0 polls.
     * Returns CV_OK with *ready=false when nothing is ready in time.
     * r->results must have room for the step's n_seqs entries. */
    cv_status (*poll)(group_link *l, step_result *r, int timeout_ms, bool *ready, cv_err *e);
    void (*destroy)(group_link *l);
} group_link_ops;

struct group_link {
    const group_link_ops *ops;
    void *impl;
    int64_t n_slots;  /* KV slots the group has */
    int64_t n_ctx;    /* positions per slot */
    int max_inflight; /* pipeline stages (1 for one stage) */
};

struct engine;
struct group;
/* In-process link over a single-process engine (not owned). */
group_link *link_inproc_engine(struct engine *eng);
/* In-process link over an MPI group whose leader is this process (not owned). */
group_link *link_inproc_group(struct group *g);
