/* shard.c - the trivial shard: the whole model on one rank (one stage, one
 * TP rank). Multi-rank layouts come from the planner (coordinator/planner.c). */
#include "shard.h"

#include <string.h>

#include "../core/model_config.h"

void shard_full(const struct model_config *cfg, shard_spec *s)
{
    memset(s, 0, sizeof *s);
    s->pp_rank = 0;
    s->pp_size = 1;
    s->tp_rank = 0;
    s->tp_size = 1;
    s->layer0 = 0;
    s->n_layers = cfg->n_layer;
    s->has_embd = true;
    s->has_head = true;
    s->head0 = 0;
    s->n_head = cfg->n_head;
    s->kv_head0 = 0;
    s->n_head_kv = cfg->n_head_kv;
    s->ff0 = 0;
    s->n_ff = cfg->n_ff;
    s->vocab0 = 0;
    s->n_vocab = cfg->n_vocab;
}
