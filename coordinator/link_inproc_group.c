/* link_inproc_group.c - group_link over an MPI worker group led by this
 * process (rank 0): submit/poll map onto group_submit/group_poll, with up to
 * P steps in flight so the pipeline stages overlap. */
#include <stdlib.h>

#include "../worker/group.h"
#include "link.h"

static cv_status grp_submit(group_link *l, const step *s, cv_err *e)
{
    return group_submit(l->impl, s, e);
}

static cv_status grp_poll(group_link *l, step_result *r, int timeout_ms, bool *ready, cv_err *e)
{
    return group_poll(l->impl, r, timeout_ms, ready, e);
}

static void grp_destroy(group_link *l) { free(l); }

static const group_link_ops group_ops = {
    .name = "inproc-group",
    .submit = grp_submit,
    .poll = grp_poll,
    .destroy = grp_destroy,
};

group_link *link_inproc_group(struct group *g)
{
    group_link *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->ops = &group_ops;
    l->impl = g;
    l->n_slots = group_n_slots(g);
    l->n_ctx = group_n_ctx(g);
    l->max_inflight = group_max_inflight(g);
    return l;
}
