/* link_inproc.c - group_link over a single-process engine: submit runs the
 * step at once (the engine is synchronous) and queues its result; poll hands
 * results back in submission order. Used by `caravan run` and by a
 * coordinator that serves a model in its own process. */
#include <stdlib.h>
#include <string.h>

#include "../worker/engine.h"
#include "link.h"

typedef struct done_step {
    step_result r;
    cv_status status;
    char msg[CV_ERR_MSG_MAX];
    struct done_step *next;
} done_step;

typedef struct inproc {
    engine *eng;
    done_step *head, *tail;
} inproc;

static cv_status inproc_submit(group_link *l, const step *s, cv_err *e)
{
    inproc *ip = l->impl;
    done_step *d = calloc(1, sizeof *d);
    if (!d)
        return cv_err_set(e, CV_ENOMEM, "out of memory");
    d->r.results = calloc((size_t)(s->n_seqs > 0 ? s->n_seqs : 1), sizeof *d->r.results);
    if (!d->r.results) {
        free(d);
        return cv_err_set(e, CV_ENOMEM, "out of memory");
    }
    cv_err err = {0};
    d->status = engine_step(ip->eng, s, &d->r, &err);
    if (d->status != CV_OK)
        memcpy(d->msg, err.msg, sizeof d->msg);
    d->r.id = s->id;
    if (ip->tail)
        ip->tail->next = d;
    else
        ip->head = d;
    ip->tail = d;
    return CV_OK;
}

static cv_status inproc_poll(group_link *l, step_result *r, int timeout_ms, bool *ready, cv_err *e)
{
    inproc *ip = l->impl;
    done_step *d = ip->head;
    *ready = false;
    if (!d)
        return CV_OK;
    ip->head = d->next;
    if (!ip->head)
        ip->tail = NULL;
    cv_status st = d->status;
    if (st == CV_OK) {
        r->id = d->r.id;
        r->n_results = d->r.n_results;
        memcpy(r->results, d->r.results, (size_t)d->r.n_results * sizeof *r->results);
        *ready = true;
    } else {
        cv_err_set(e, st, "%s", d->msg);
    }
    free(d->r.results);
    free(d);
    return st;
}

static void inproc_destroy(group_link *l)
{
    inproc *ip = l->impl;
    for (done_step *d = ip->head, *n; d; d = n) {
        n = d->next;
        free(d->r.results);
        free(d);
    }
    free(ip);
    free(l);
}

static const group_link_ops inproc_ops = {
    .name = "inproc",
    .submit = inproc_submit,
    .poll = inproc_poll,
    .destroy = inproc_destroy,
};

group_link *link_inproc_engine(struct engine *eng)
{
    group_link *l = calloc(1, sizeof *l);
    inproc *ip = calloc(1, sizeof *ip);
    if (!l || !ip) {
        free(l);
        free(ip);
        return NULL;
    }
    ip->eng = eng;
    l->ops = &inproc_ops;
    l->impl = ip;
    l->n_slots = engine_n_slots(eng);
    l->n_ctx = engine_n_ctx(eng);
    l->max_inflight = 1;
    return l;
}
