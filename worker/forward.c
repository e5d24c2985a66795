/* forward.c - the transformer forward pass of one rank's shard, written only
 * in backend ops and comm calls so it runs unchanged on cpu and cuda, alone
 * or as one TP rank of a pipeline stage.
 *
 *   stage 0:     x = embed(tokens)                      else x = hidden_in
 *   per layer:   h = rmsnorm(x) ; q,k,v = h Wq,Wk,Wv (+bias) ; rope(q,k)
 *                a = attention(q, KV cache(slot, pos)) ; x += allreduce(a Wo)
 *                h = rmsnorm(x) ; x += allreduce((silu(h Wg) * h Wu) Wd)
 *   last stage:  logits = rmsnorm(x[out_idx]) Wout      else hidden_out = x
 * Under TP each rank computes its own heads / FFN rows; Wo and Wd produce
 * partial sums over the rank's columns, which the all-reduce completes. */
#include "forward.h"

#include <math.h>
#include <stdlib.h>

#include "../core/dtype.h"

/* Sum buf (n floats, backend memory) over the TP ranks. */
static cv_status tp_allreduce(model *m, comm *tp, float *buf, int64_t n, cv_err *e)
{
    if (!tp || comm_size(tp) <= 1)
        return CV_OK;
    backend *be = m->be;
    model_scratch *sc = m->scratch;
    cv_status st;
    if (be->ops->host_memory || tp->ops->device_buffers) {
        if (!be->ops->host_memory)
            be->ops->sync(be); /* device comm on the default stream order */
        st = comm_allreduce_sum(tp, buf, (size_t)n, COMM_F32, e);
    } else {
        be->ops->to_host(be, sc->host, buf, (size_t)n * sizeof(float));
        st = comm_allreduce_sum(tp, sc->host, (size_t)n, COMM_F32, e);
        if (!st)
            be->ops->from_host(be, buf, sc->host, (size_t)n * sizeof(float));
    }
    if (st)
        return cv_err_prefix(e, "tp all-reduce of %lld floats", (long long)n);
    return CV_OK;
}

static cv_status batch_check(const model *m, const fwd_batch *b, const float *hidden_in,
                             float *hidden_out, float *logits_out, cv_err *e)
{
    const model_params *p = &m->params;
    if (b->n_tok <= 0 || b->n_tok > p->max_batch)
        return cv_err_set(e, CV_EINVAL, "batch of %lld tokens outside [1, max_batch %lld]",
                          (long long)b->n_tok, (long long)p->max_batch);
    if (!b->pos || !b->slot || (m->shard.has_embd && !b->tokens))
        return cv_err_set(e, CV_EINVAL, "batch without tokens/pos/slot arrays");
    for (int64_t t = 0; t < b->n_tok; t++) {
        if (b->slot[t] < 0 || b->slot[t] >= p->n_slots)
            return cv_err_set(e, CV_EINVAL, "batch token %lld: slot %d outside [0, %lld)",
                              (long long)t, b->slot[t], (long long)p->n_slots);
        if (b->pos[t] < 0 || b->pos[t] >= p->n_ctx)
            return cv_err_set(e, CV_ERANGE, "batch token %lld: position %d outside the context "
                              "[0, %lld)", (long long)t, b->pos[t], (long long)p->n_ctx);
        if (m->shard.has_embd && (b->tokens[t] < 0 || b->tokens[t] >= m->cfg.n_vocab))
            return cv_err_set(e, CV_EINVAL, "batch token %lld: id %d outside the vocabulary "
                              "[0, %lld)", (long long)t, b->tokens[t], (long long)m->cfg.n_vocab);
    }
    if (!m->shard.has_embd && !hidden_in)
        return cv_err_set(e, CV_EINVAL, "stage %d needs hidden_in", m->shard.pp_rank);
    if (m->shard.has_head) {
        if (b->n_out < 0 || b->n_out > b->n_tok || (b->n_out && (!b->out_idx || !logits_out)))
            return cv_err_set(e, CV_EINVAL, "batch n_out %lld (of %lld tokens) without out_idx or "
                              "logits", (long long)b->n_out, (long long)b->n_tok);
        for (int64_t i = 0; i < b->n_out; i++)
            if (b->out_idx[i] < 0 || b->out_idx[i] >= b->n_tok)
                return cv_err_set(e, CV_EINVAL, "batch out_idx[%lld] = %d outside [0, %lld)",
                                  (long long)i, b->out_idx[i], (long long)b->n_tok);
    } else if (!hidden_out) {
        return cv_err_set(e, CV_EINVAL, "stage %d needs hidden_out", m->shard.pp_rank);
    }
    return CV_OK;
}

cv_status forward_stage(model *m, comm *tp, const fwd_batch *b, const float *hidden_in,
                        float *hidden_out, float *logits_out, cv_err *e)
{
    cv_status st;
    if ((st = batch_check(m, b, hidden_in, hidden_out, logits_out, e)))
        return st;
    backend *be = m->be;
    const backend_ops *op = be->ops;
    const model_config *c = &m->cfg;
    const shard_spec *s = &m->shard;
    model_scratch *sc = m->scratch;
    int64_t n = b->n_tok;
    int64_t E = c->n_embd;
    int hd = c->head_dim;
    int nh = s->n_head, nkv = s->n_head_kv;
    int64_t nq = (int64_t)nh * hd, nk = (int64_t)nkv * hd;

    op->from_host(be, sc->pos, b->pos, (size_t)n * sizeof(int32_t));
    op->from_host(be, sc->slot, b->slot, (size_t)n * sizeof(int32_t));
    if (s->has_embd) {
        op->from_host(be, sc->tokens, b->tokens, (size_t)n * sizeof(int32_t));
        op->embed(be, sc->x, &m->tok_embd, sc->tokens, n);
        model_embd_release(m, b->tokens, n);
    } else {
        op->from_host(be, sc->x, hidden_in, (size_t)(n * E) * sizeof(float));
    }

    rope_params rp = {
        .mode = c->rope_mode,
        .n_rot = c->n_rot,
        .freq_base = c->rope_freq_base,
        .freq_scale = c->rope_freq_scale,
        .freq_factors = m->rope_freqs.data ? (const float *)m->rope_freqs.data : NULL,
    };
    float att_scale = 1.0f / sqrtf((float)hd);

    for (int il = 0; il < s->n_layers; il++) {
        model_layer *L = &m->layers[il];
        /* attention block */
        op->rmsnorm(be, sc->xn, sc->x, &L->attn_norm, n, E, c->rms_eps);
        be_matmul(be, sc->q, &L->wq, sc->xn, n);
        be_matmul(be, sc->k, &L->wk, sc->xn, n);
        be_matmul(be, sc->v, &L->wv, sc->xn, n);
        if (L->bq.data) {
            op->add_bias(be, sc->q, &L->bq, n, nq);
            op->add_bias(be, sc->k, &L->bk, n, nk);
            op->add_bias(be, sc->v, &L->bv, n, nk);
        }
        op->rope(be, sc->q, n, nh, hd, sc->pos, &rp);
        op->rope(be, sc->k, n, nkv, hd, sc->pos, &rp);
        op->attention(be, sc->att, sc->q, sc->k, sc->v, &L->kv, sc->slot, sc->pos, n, nh, nkv, hd,
                      att_scale);
        be_matmul(be, sc->proj, &L->wo, sc->att, n);
        if ((st = tp_allreduce(m, tp, sc->proj, n * E, e)))
            return cv_err_prefix(e, "layer %d attention", s->layer0 + il);
        op->add(be, sc->x, sc->x, sc->proj, n * E);

        /* feed-forward block */
        op->rmsnorm(be, sc->xn, sc->x, &L->ffn_norm, n, E, c->rms_eps);
        be_matmul(be, sc->gate, &L->w_gate, sc->xn, n);
        be_matmul(be, sc->up, &L->w_up, sc->xn, n);
        op->swiglu(be, sc->gate, sc->gate, sc->up, n * s->n_ff);
        be_matmul(be, sc->proj, &L->w_down, sc->gate, n);
        if ((st = tp_allreduce(m, tp, sc->proj, n * E, e)))
            return cv_err_prefix(e, "layer %d ffn", s->layer0 + il);
        op->add(be, sc->x, sc->x, sc->proj, n * E);
    }

    if (!s->has_head) {
        op->to_host(be, hidden_out, sc->x, (size_t)(n * E) * sizeof(float));
        return CV_OK;
    }
    /* head: only the rows that need logits, in chunks of out_chunk rows */
    if (b->n_out == 0) {
        op->sync(be);
        return CV_OK;
    }
    op->from_host(be, sc->out_idx, b->out_idx, (size_t)b->n_out * sizeof(int32_t));
    int64_t V = s->n_vocab;
    for (int64_t r0 = 0; r0 < b->n_out; r0 += sc->out_chunk) {
        int64_t nr = b->n_out - r0 < sc->out_chunk ? b->n_out - r0 : sc->out_chunk;
        op->get_rows(be, sc->proj, sc->x, sc->out_idx + r0, nr, E);
        op->rmsnorm(be, sc->xn, sc->proj, &m->output_norm, nr, E, c->rms_eps);
        be_matmul(be, sc->logits, &m->output, sc->xn, nr);
        op->to_host(be, logits_out + r0 * V, sc->logits, (size_t)(nr * V) * sizeof(float));
    }
    return CV_OK;
}
