/* model.c - load one rank's shard of a model from the mmapped GGUF: only
 * the tensors (and TP slices) this rank computes with, uploaded to its
 * backend; its KV cache; its activation scratch.
 *
 * Row slices (Q/K/V, gate/up, output-head vocab rows) are contiguous in the
 * file, so a host backend aliases the mapping (zero-copy). Column slices
 * (wo, w_down) are strided: only the slice's bytes of each row are copied,
 * so resident memory stays about this rank's share of the weights. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/dtype.h"

static const gguf_tensor_info *find_or_err(const gguf_file *f, const char *name, cv_err *e)
{
    const gguf_tensor_info *t = gguf_tensor_find(f, name);
    if (!t)
        cv_err_set(e, CV_EFORMAT, "tensor %s is missing", name);
    return t;
}

static void add_bytes(model *m, const be_weight *w)
{
    if (w->data)
        m->weight_bytes += w->row_bytes * (size_t)w->ne1;
}

/* Rows [row0, row0 + n_rows) of matrix `name` (zero-copy on host backends). */
static cv_status load_rows(model *m, const char *name, int64_t row0, int64_t n_rows, be_weight *w,
                           cv_err *e)
{
    const gguf_tensor_info *t = find_or_err(m->gguf, name, e);
    if (!t)
        return CV_EFORMAT;
    int64_t ne1 = t->n_dims >= 2 ? t->ne[1] : 1;
    if (row0 < 0 || n_rows <= 0 || row0 + n_rows > ne1)
        return cv_err_set(e, CV_EINVAL, "tensor %s: row slice [%lld, %lld) outside its %lld rows",
                          name, (long long)row0, (long long)(row0 + n_rows), (long long)ne1);
    size_t rb = dtype_row_size(t->type, t->ne[0]);
    const uint8_t *src = (const uint8_t *)t->data + (size_t)row0 * rb;
    cv_status st = m->be->ops->weight_upload(m->be, w, t->type, t->ne[0], n_rows, src, rb, true, e);
    if (st)
        return cv_err_prefix(e, "tensor %s", name);
    add_bytes(m, w);
    return CV_OK;
}

/* Columns [col0, col0 + n_cols) of every row of matrix `name`; the slice must
 * start and end on a block boundary of the weight type. */
static cv_status load_cols(model *m, const char *name, int64_t col0, int64_t n_cols, be_weight *w,
                           cv_err *e)
{
    const gguf_tensor_info *t = find_or_err(m->gguf, name, e);
    if (!t)
        return CV_EFORMAT;
    const dtype_traits *tr = dtype_get(t->type);
    int64_t ne0 = t->ne[0], ne1 = t->n_dims >= 2 ? t->ne[1] : 1;
    if (col0 < 0 || n_cols <= 0 || col0 + n_cols > ne0)
        return cv_err_set(e, CV_EINVAL, "tensor %s: column slice [%lld, %lld) outside its %lld "
                          "columns", name, (long long)col0, (long long)(col0 + n_cols),
                          (long long)ne0);
    if (col0 % tr->block_size || n_cols % tr->block_size)
        return cv_err_set(e, CV_EINVAL, "tensor %s: column slice [%lld, %lld) is not on %s block "
                          "boundaries (block of %lld)", name, (long long)col0,
                          (long long)(col0 + n_cols), tr->name, (long long)tr->block_size);
    size_t rb = dtype_row_size(t->type, ne0);
    size_t off = (size_t)(col0 / tr->block_size) * tr->type_size;
    cv_status st = m->be->ops->weight_upload(m->be, w, t->type, n_cols, ne1,
                                             (const uint8_t *)t->data + off, rb, true, e);
    if (st)
        return cv_err_prefix(e, "tensor %s", name);
    add_bytes(m, w);
    return CV_OK;
}

/* Elements [i0, i0 + n) of vector `name` as an F32 weight (norms, biases,
 * rope factors); other float types are converted on load. */
static cv_status load_vec(model *m, const char *name, int64_t i0, int64_t n, be_weight *w,
                          cv_err *e)
{
    const gguf_tensor_info *t = find_or_err(m->gguf, name, e);
    if (!t)
        return CV_EFORMAT;
    if (i0 < 0 || n <= 0 || i0 + n > t->n_elements)
        return cv_err_set(e, CV_EINVAL, "tensor %s: slice [%lld, %lld) outside its %lld elements",
                          name, (long long)i0, (long long)(i0 + n), (long long)t->n_elements);
    cv_status st;
    if (t->type == DT_F32) {
        const float *src = (const float *)t->data + i0;
        st = m->be->ops->weight_upload(m->be, w, DT_F32, n, 1, src, (size_t)n * sizeof(float),
                                       true, e);
    } else {
        float *tmp = malloc((size_t)t->n_elements * sizeof(float));
        if (!tmp)
            return cv_err_set(e, CV_ENOMEM, "tensor %s: converting %lld elements to F32", name,
                              (long long)t->n_elements);
        dequantize_row(t->type, t->data, tmp, t->n_elements);
        st = m->be->ops->weight_upload(m->be, w, DT_F32, n, 1, tmp + i0, (size_t)n * sizeof(float),
                                       false, e);
        free(tmp);
    }
    if (st)
        return cv_err_prefix(e, "tensor %s", name);
    add_bytes(m, w);
    return CV_OK;
}

static cv_status shard_check(const model_config *c, const shard_spec *s, cv_err *e)
{
    if (s->n_layers < 0 || s->layer0 < 0 || s->layer0 + s->n_layers > c->n_layer)
        return cv_err_set(e, CV_EINVAL, "shard layers [%d, %d) outside the model's %d layers",
                          s->layer0, s->layer0 + s->n_layers, c->n_layer);
    if (s->n_layers > 0) {
        if (s->n_head <= 0 || s->n_head_kv <= 0 || s->head0 < 0 ||
            s->head0 + s->n_head > c->n_head || s->kv_head0 < 0 ||
            s->kv_head0 + s->n_head_kv > c->n_head_kv)
            return cv_err_set(e, CV_EINVAL, "shard heads [%d, %d) / kv heads [%d, %d) outside the "
                              "model's %d / %d", s->head0, s->head0 + s->n_head, s->kv_head0,
                              s->kv_head0 + s->n_head_kv, c->n_head, c->n_head_kv);
        int group = c->n_head / c->n_head_kv;
        if (s->n_head != s->n_head_kv * group || s->head0 != s->kv_head0 * group)
            return cv_err_set(e, CV_EINVAL, "shard heads [%d, %d) are not the whole query groups "
                              "of kv heads [%d, %d) (%d query heads per kv head)", s->head0,
                              s->head0 + s->n_head, s->kv_head0, s->kv_head0 + s->n_head_kv,
                              group);
        if (s->n_ff <= 0 || s->ff0 < 0 || s->ff0 + s->n_ff > c->n_ff)
            return cv_err_set(e, CV_EINVAL, "shard ffn rows [%lld, %lld) outside the model's %lld",
                              (long long)s->ff0, (long long)(s->ff0 + s->n_ff), (long long)c->n_ff);
    }
    if (s->has_head && (s->n_vocab <= 0 || s->vocab0 < 0 || s->vocab0 + s->n_vocab > c->n_vocab))
        return cv_err_set(e, CV_EINVAL, "shard vocab rows [%lld, %lld) outside the model's %lld",
                          (long long)s->vocab0, (long long)(s->vocab0 + s->n_vocab),
                          (long long)c->n_vocab);
    return CV_OK;
}

static cv_status load_layer(model *m, int il, model_layer *L, cv_err *e)
{
    const model_config *c = &m->cfg;
    const shard_spec *s = &m->shard;
    int hd = c->head_dim;
    int64_t q0 = (int64_t)s->head0 * hd, nq = (int64_t)s->n_head * hd;
    int64_t k0 = (int64_t)s->kv_head0 * hd, nk = (int64_t)s->n_head_kv * hd;
    char name[96];
    cv_status st;
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, il), name)
    if ((st = load_vec(m, NAME("attn_norm.weight"), 0, c->n_embd, &L->attn_norm, e)) ||
        (st = load_rows(m, NAME("attn_q.weight"), q0, nq, &L->wq, e)) ||
        (st = load_rows(m, NAME("attn_k.weight"), k0, nk, &L->wk, e)) ||
        (st = load_rows(m, NAME("attn_v.weight"), k0, nk, &L->wv, e)) ||
        (st = load_cols(m, NAME("attn_output.weight"), q0, nq, &L->wo, e)) ||
        (st = load_vec(m, NAME("ffn_norm.weight"), 0, c->n_embd, &L->ffn_norm, e)) ||
        (st = load_rows(m, NAME("ffn_gate.weight"), s->ff0, s->n_ff, &L->w_gate, e)) ||
        (st = load_rows(m, NAME("ffn_up.weight"), s->ff0, s->n_ff, &L->w_up, e)) ||
        (st = load_cols(m, NAME("ffn_down.weight"), s->ff0, s->n_ff, &L->w_down, e)))
        return st;
    if (c->has_qkv_bias) {
        if ((st = load_vec(m, NAME("attn_q.bias"), q0, nq, &L->bq, e)) ||
            (st = load_vec(m, NAME("attn_k.bias"), k0, nk, &L->bk, e)) ||
            (st = load_vec(m, NAME("attn_v.bias"), k0, nk, &L->bv, e)))
            return st;
    }
#undef NAME
    /* KV cache of this layer's local heads */
    size_t elt = m->params.kv_type == DT_F16 ? 2 : 4;
    L->kv.type = m->params.kv_type;
    L->kv.n_slots = m->params.n_slots;
    L->kv.n_ctx = m->params.n_ctx;
    L->kv.kv_dim = nk;
    size_t bytes = (size_t)m->params.n_slots * (size_t)m->params.n_ctx * (size_t)nk * elt;
    L->kv.k = m->be->ops->alloc(m->be, bytes);
    L->kv.v = L->kv.k ? m->be->ops->alloc(m->be, bytes) : NULL;
    if (!L->kv.v)
        return cv_err_set(e, CV_ENOMEM, "layer %d: allocating 2 x %zu bytes of KV cache (%lld "
                          "slots x %lld positions x %lld)", il, bytes,
                          (long long)m->params.n_slots, (long long)m->params.n_ctx, (long long)nk);
    m->kv_bytes += 2 * bytes;
    return CV_OK;
}

static cv_status scratch_alloc(model *m, cv_err *e)
{
    const model_config *c = &m->cfg;
    const shard_spec *s = &m->shard;
    backend *be = m->be;
    model_scratch *sc = calloc(1, sizeof *sc);
    if (!sc)
        return cv_err_set(e, CV_ENOMEM, "allocating the scratch table");
    m->scratch = sc;
    int64_t B = m->params.max_batch;
    int64_t nq = (int64_t)s->n_head * c->head_dim, nk = (int64_t)s->n_head_kv * c->head_dim;
    int64_t nff = s->n_ff > 0 ? s->n_ff : 1;
    sc->out_chunk = m->params.n_slots > 16 ? m->params.n_slots : 16;
    if (sc->out_chunk > B)
        sc->out_chunk = B;
    struct {
        void **p;
        size_t n;
    } bufs[] = {
        {(void **)&sc->x, (size_t)(B * c->n_embd) * 4},
        {(void **)&sc->xn, (size_t)(B * c->n_embd) * 4},
        {(void **)&sc->q, (size_t)(B * (nq ? nq : 1)) * 4},
        {(void **)&sc->k, (size_t)(B * (nk ? nk : 1)) * 4},
        {(void **)&sc->v, (size_t)(B * (nk ? nk : 1)) * 4},
        {(void **)&sc->att, (size_t)(B * (nq ? nq : 1)) * 4},
        {(void **)&sc->proj, (size_t)(B * c->n_embd) * 4},
        {(void **)&sc->gate, (size_t)(B * nff) * 4},
        {(void **)&sc->up, (size_t)(B * nff) * 4},
        {(void **)&sc->tokens, (size_t)B * 4},
        {(void **)&sc->pos, (size_t)B * 4},
        {(void **)&sc->slot, (size_t)B * 4},
        {(void **)&sc->out_idx, (size_t)B * 4},
        {(void **)&sc->logits, s->has_head ? (size_t)(sc->out_chunk * s->n_vocab) * 4 : 4},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        *bufs[i].p = be->ops->alloc(be, bufs[i].n);
        if (!*bufs[i].p)
            return cv_err_set(e, CV_ENOMEM, "allocating %zu bytes of activation scratch "
                              "(max_batch %lld)", bufs[i].n, (long long)B);
    }
    if (!be->ops->host_memory) {
        sc->host = malloc((size_t)(B * c->n_embd) * sizeof(float));
        if (!sc->host)
            return cv_err_set(e, CV_ENOMEM, "allocating the host staging buffer");
    }
    return CV_OK;
}

static void scratch_free(model *m)
{
    model_scratch *sc = m->scratch;
    if (!sc)
        return;
    void *bufs[] = {sc->x,    sc->xn,     sc->q,   sc->k,    sc->v,       sc->att,    sc->proj,
                    sc->gate, sc->up,     sc->logits, sc->tokens, sc->pos, sc->slot, sc->out_idx};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i])
            m->be->ops->free(m->be, bufs[i]);
    free(sc->host);
    free(sc);
    m->scratch = NULL;
}

static void weight_release(model *m, be_weight *w)
{
    if (w->data)
        m->be->ops->weight_free(m->be, w);
}

static void model_release(model *m)
{
    if (m->layers) {
        for (int i = 0; i < m->shard.n_layers; i++) {
            model_layer *L = &m->layers[i];
            be_weight *ws[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv,   &L->bq,    &L->bk,
                               &L->bv,        &L->wo, &L->ffn_norm, &L->w_gate, &L->w_up,
                               &L->w_down};
            for (size_t j = 0; j < sizeof ws / sizeof ws[0]; j++)
                weight_release(m, ws[j]);
            if (L->kv.k)
                m->be->ops->free(m->be, L->kv.k);
            if (L->kv.v)
                m->be->ops->free(m->be, L->kv.v);
        }
        free(m->layers);
    }
    /* the head may share the embedding's handle (tied, whole vocabulary) */
    if (m->output.data == m->tok_embd.data)
        memset(&m->output, 0, sizeof m->output);
    weight_release(m, &m->output);
    weight_release(m, &m->tok_embd);
    weight_release(m, &m->output_norm);
    weight_release(m, &m->rope_freqs);
    scratch_free(m);
}

cv_status model_load(gguf_file *f, const shard_spec *shard, const model_params *p, backend *be,
                     model **out, cv_err *e)
{
    *out = NULL;
    cv_status st;
    model *m = calloc(1, sizeof *m);
    if (!m)
        return cv_err_set(e, CV_ENOMEM, "allocating the model");
    m->be = be;
    m->gguf = f;
    if ((st = model_config_load(f, &m->cfg, e)))
        goto err;
    if (shard)
        m->shard = *shard;
    else
        shard_full(&m->cfg, &m->shard);
    if ((st = shard_check(&m->cfg, &m->shard, e)))
        goto err;

    m->params = p ? *p : (model_params){0};
    if (m->params.n_slots <= 0)
        m->params.n_slots = 8;
    if (m->params.n_ctx <= 0)
        m->params.n_ctx = m->cfg.n_ctx_train < 4096 ? m->cfg.n_ctx_train : 4096;
    if (m->params.max_batch <= 0)
        m->params.max_batch = 512;
    if (m->params.kv_type != DT_F32 && m->params.kv_type != DT_F16) {
        st = cv_err_set(e, CV_EINVAL, "KV cache type %s is not supported (F32 or F16)",
                        dtype_name(m->params.kv_type));
        goto err;
    }
    if (m->params.n_ctx > ((int64_t)1 << 31) - 1 || m->params.n_slots > (1 << 20)) {
        st = cv_err_set(e, CV_EINVAL, "n_ctx %lld / n_slots %lld too large",
                        (long long)m->params.n_ctx, (long long)m->params.n_slots);
        goto err;
    }

    const model_config *c = &m->cfg;
    const shard_spec *s = &m->shard;
    if (s->has_embd && (st = load_rows(m, "token_embd.weight", 0, c->n_vocab, &m->tok_embd, e)))
        goto err;
    if (s->has_head) {
        if ((st = load_vec(m, "output_norm.weight", 0, c->n_embd, &m->output_norm, e)))
            goto err;
        if (c->tied_output && s->has_embd && s->vocab0 == 0 && s->n_vocab == c->n_vocab)
            m->output = m->tok_embd; /* shared handle; freed once */
        else if ((st = load_rows(m, c->tied_output ? "token_embd.weight" : "output.weight",
                                 s->vocab0, s->n_vocab, &m->output, e)))
            goto err;
    }
    if (c->has_rope_freqs && s->n_layers > 0 &&
        (st = load_vec(m, "rope_freqs.weight", 0, c->n_rot / 2, &m->rope_freqs, e)))
        goto err;
    if (s->n_layers > 0) {
        m->layers = calloc((size_t)s->n_layers, sizeof *m->layers);
        if (!m->layers) {
            st = cv_err_set(e, CV_ENOMEM, "allocating %d layers", s->n_layers);
            goto err;
        }
        for (int i = 0; i < s->n_layers; i++)
            if ((st = load_layer(m, s->layer0 + i, &m->layers[i], e)))
                goto err;
    }
    if ((st = scratch_alloc(m, e)))
        goto err;
    *out = m;
    return CV_OK;
err:
    model_release(m);
    free(m); /* f stays with the caller on failure */
    return st;
}

void model_free(model *m)
{
    if (!m)
        return;
    model_release(m);
    gguf_close(m->gguf);
    free(m);
}

/* Positions of a slot are always written before they are read (attention is
 * causal and a sequence fills its slot from pos 0), so clearing a slot needs
 * no memory traffic: the next sequence simply overwrites it. */
void model_slot_clear(model *m, int32_t slot) { (void)m; (void)slot; }
