/* model.c - load one rank's shard of a model from the mmapped GGUF: only
 * the tensors (and TP slices) this rank computes with, uploaded to its
 * backend; its KV cache; its activation scratch.
 *
 * Row slices (Q/K/V, gate/up, output-head vocab rows) are contiguous in the
 * file, so a host backend aliases the mapping (zero-copy). Column slices
 * (wo, w_down) are strided: only the slice's bytes of each row are copied,
 * so resident memory stays about this rank's share of the weights. A column
 * slice that does not start and end on the weight type's blocks (e.g. 128
 * columns of a Q4_K attn_output under TP 4) is dequantized to F32 at load.
 *
 * Residency (file mappings; model_residency_settle): after
 * loading, the pages of the mapping that the rank does not compute from (other
 * ranks' tensors and slices, the sources of copied column slices, the token
 * embedding table, which is looked up by row) are dropped from this process
 * and marked MADV_RANDOM, and the rank's own aliased ranges are faulted in.
 * Marking splits the mapping into separate VMAs, and the kernel's fault-around
 * (which maps up to 64 KiB of already-cached neighbouring file pages on each
 * fault) never crosses a VMA, so later faults cannot pull in a neighbour's
 * slice: resident memory is the rank's share, not its share plus neighbours.
 * The embedding table's range is cut into small VMAs (embd_split), so that
 * a row lookup maps a few pages, not a 64 KiB fault-around block or 2 MiB,
 * and forward.c drops a lookup's pages again (model_embd_release).
 *
 * The rank's own ranges are then, by default, copied into anonymous memory
 * aligned to 2 MiB with transparent huge pages asked for (span_to_anon) and
 * its weights pointed there; the file pages are dropped. Decode streams every
 * weight once per token, and with 4 KiB page-cache pages it pays a TLB miss
 * per page and the hardware prefetchers stop at every page boundary: on the
 * 2-core test machine a Llama-1B-shaped Q4_0 chain of matvecs ran at 64-76%
 * of the read bandwidth from 4 KiB pages and 84-93% from huge pages.
 * weights_mmap (--mmap, CARAVAN_MMAP=1) keeps computing from the mapping.
 * Last, the backend may re-lay the rank's own (anonymous or backend-owned)
 * matmul weights for its kernels (model_optimize: the CPU backend's
 * row-interleaved layouts); the file mapping is never written. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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

/* Columns [col0, col0 + n_cols) of every row of `t` that do not fall on the
 * type's blocks, dequantized to an F32 weight owned by the rank. F32 rather
 * than F16: the dequantized values (block scale x quant, minus block min)
 * need more than F16's 11-bit mantissa, so F16 would round the weights and
 * this rank would no longer compute what one process computes from them;
 * F32 holds them exactly as the scalar dequantizer produces them. Scalar
 * dequantization is fine here: it runs once, at load. */
static cv_status load_cols_f32(model *m, const char *name, const gguf_tensor_info *t, int64_t col0,
                               int64_t n_cols, be_weight *w, cv_err *e)
{
    const dtype_traits *tr = dtype_get(t->type);
    int64_t ne0 = t->ne[0], ne1 = t->n_dims >= 2 ? t->ne[1] : 1, bs = tr->block_size;
    int64_t b0 = col0 / bs, b1 = (col0 + n_cols + bs - 1) / bs; /* blocks covering the slice */
    size_t rb = dtype_row_size(t->type, ne0);
    float *span = malloc((size_t)((b1 - b0) * bs) * sizeof(float));
    /* the staging copy is mapped and unmapped here rather than malloc'ed:
     * freeing a large malloc block raises glibc's mmap threshold, and the
     * backend's copies that follow would then share the heap with freed
     * staging blocks that stay resident */
    size_t dst_bytes = (size_t)n_cols * (size_t)ne1 * sizeof(float);
    float *dst = mmap(NULL, dst_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!span || dst == MAP_FAILED) {
        free(span);
        if (dst != MAP_FAILED)
            munmap(dst, dst_bytes);
        return cv_err_set(e, CV_ENOMEM, "tensor %s: %lld x %lld F32 elements for a column slice "
                          "off %s blocks", name, (long long)ne1, (long long)n_cols, tr->name);
    }
    for (int64_t r = 0; r < ne1; r++) {
        const uint8_t *src = (const uint8_t *)t->data + (size_t)r * rb + (size_t)b0 * tr->type_size;
        dequantize_row(t->type, src, span, (b1 - b0) * bs);
        memcpy(dst + (size_t)r * (size_t)n_cols, span + (col0 - b0 * bs),
               (size_t)n_cols * sizeof(float));
    }
    free(span);
    cv_status st = m->be->ops->weight_upload(m->be, w, DT_F32, n_cols, ne1, dst,
                                             (size_t)n_cols * sizeof(float), false, e);
    munmap(dst, dst_bytes);
    if (st)
        return cv_err_prefix(e, "tensor %s", name);
    add_bytes(m, w);
    return CV_OK;
}

/* Columns [col0, col0 + n_cols) of every row of matrix `name`: whole blocks
 * of its type are copied as they are; a slice off the blocks is dequantized
 * (load_cols_f32). */
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
        return load_cols_f32(m, name, t, col0, n_cols, w, e);
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

static void anon_free(model *m);

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
    anon_free(m); /* after the handles that pointed into it */
    scratch_free(m);
}

/* ---- residency of the mapping ----------------------------------------------- */

typedef struct map_span {
    uintptr_t a, b; /* page-aligned [a, b) */
} map_span;

static int span_cmp(const void *x, const void *y)
{
    uintptr_t a = ((const map_span *)x)->a, b = ((const map_span *)y)->a;
    return a < b ? -1 : a > b;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

/* Fault in [a, b) of the mapping: MADV_POPULATE_READ where the kernel has it,
 * else one read per page. */
static void span_populate(uintptr_t a, uintptr_t b, size_t ps)
{
    if (madvise((void *)a, b - a, MADV_POPULATE_READ) == 0)
        return;
    volatile uint8_t sink = 0;
    for (uintptr_t p = a; p < b; p += ps)
        sink ^= *(const volatile uint8_t *)p;
    (void)sink;
}

/* The token embedding table is looked up by row and not held, but a fault
 * maps more than the row: the kernel's fault-around maps the aligned 64 KiB
 * block around it (all of it is in the page cache when the ranks share the
 * file), and in a VMA that holds an aligned 2 MiB (PMD) range of a file
 * whose page cache has PMD-sized folios, a whole 2 MiB (seen on Linux 6.18
 * with ext4, MADV_NOHUGEPAGE or not). Both stop at the VMA's ends, so the
 * table's range is cut into small VMAs: pieces of at least 4 pages, at most
 * EMBD_MAX_PIECES of them (16 KiB for a 66 MiB table, 36 KiB for a 272 MiB
 * one), neighbours differing in MADV_RANDOM and all carrying MADV_DONTDUMP
 * so that none merges with the rest of the mapping. A lookup then maps at
 * most its piece: about 4x to 2x less than 64 KiB, 50x less than 2 MiB. */
#define EMBD_MAX_PIECES 8192
static void embd_split(model *m, uintptr_t base, uintptr_t end, uintptr_t ps)
{
    uintptr_t a = (uintptr_t)m->tok_embd.data;
    uintptr_t b = a + m->tok_embd.row_bytes * (size_t)m->tok_embd.ne1;
    if (a < base || b > end)
        return;
    a = (a + ps - 1) & ~(ps - 1);
    b &= ~(ps - 1);
    if (b <= a)
        return;
    uintptr_t piece = (b - a) / EMBD_MAX_PIECES;
    piece = (piece + ps - 1) & ~(ps - 1);
    if (piece < 4 * ps)
        piece = 4 * ps;
    int idx = 0;
    for (uintptr_t p = a; p < b; p += piece, idx++) {
        uintptr_t n = b - p < piece ? b - p : piece;
        madvise((void *)p, n, MADV_DONTDUMP);
        madvise((void *)p, n, idx % 2 ? MADV_NORMAL : MADV_RANDOM);
    }
}

struct model_anon {
    void *p;
    size_t len;
};

/* Every weight handle of the model (for pointer fix-ups). */
static int model_weights(model *m, be_weight **out, int cap)
{
    int n = 0;
    be_weight *top[4] = {&m->output_norm, &m->output, &m->rope_freqs, &m->tok_embd};
    for (int i = 0; i < 4 && n < cap; i++)
        out[n++] = top[i];
    for (int l = 0; l < m->shard.n_layers && m->layers; l++) {
        model_layer *L = &m->layers[l];
        be_weight *lw[12] = {&L->attn_norm, &L->wq, &L->wk,       &L->wv,   &L->bq,   &L->bk,
                             &L->bv,        &L->wo, &L->ffn_norm, &L->w_gate, &L->w_up, &L->w_down};
        for (int j = 0; j < 12 && n < cap; j++)
            out[n++] = lw[j];
    }
    return n;
}

#define HUGE_2M ((uintptr_t)2 << 20)

/* Copy the mapping's span [a, b) (page-aligned) into anonymous memory that
 * starts on a 2 MiB boundary, with transparent huge pages asked for its whole
 * 2 MiB units (the tail stays in small pages, so nothing past the span is
 * ever resident), then drop the span's file pages and point every weight
 * that lay in the span at the copy. Returns 0, or -1 (nothing changed) when
 * the memory cannot be had: the caller then keeps the file mapping. The copy
 * goes in 64 MiB chunks, each source chunk dropped after it is copied, so
 * the peak resident set is the span plus one chunk. */
static int span_to_anon(model *m, uintptr_t a, uintptr_t b, be_weight **ws, int n_ws)
{
    size_t len = b - a;
    uint8_t *raw = mmap(NULL, len + HUGE_2M, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return -1;
    uint8_t *p = (uint8_t *)(((uintptr_t)raw + HUGE_2M - 1) & ~(HUGE_2M - 1));
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    if (raw + len + HUGE_2M > p + len)
        munmap(p + len, (size_t)(raw + len + HUGE_2M - (p + len)));
    struct model_anon *na = realloc(m->anon, sizeof *na * (size_t)(m->n_anon + 1));
    if (!na) {
        munmap(p, len);
        return -1;
    }
    m->anon = na;
#ifdef MADV_HUGEPAGE
    size_t huge_len = len & ~(size_t)(HUGE_2M - 1);
    if (huge_len)
        madvise(p, huge_len, MADV_HUGEPAGE); /* advisory: small pages where THP is off */
#endif
    const size_t chunk = (size_t)64 << 20;
    for (size_t o = 0; o < len; o += chunk) {
        size_t c = len - o < chunk ? len - o : chunk;
        memcpy(p + o, (const void *)(a + o), c);
        madvise((void *)(a + o), c, MADV_DONTNEED);
    }
    mprotect(p, len, PROT_READ); /* weights are read-only, as in the mapping */
    m->anon[m->n_anon++] = (struct model_anon){p, len};
    for (int i = 0; i < n_ws; i++) {
        uintptr_t d = (uintptr_t)ws[i]->data;
        if (ws[i]->data && d >= a && d < b)
            ws[i]->data = p + (d - a);
    }
    return 0;
}

static void anon_free(model *m)
{
    for (int i = 0; i < m->n_anon; i++)
        munmap(m->anon[i].p, m->anon[i].len);
    free(m->anon);
    m->anon = NULL;
    m->n_anon = 0;
}

/* See the head comment: drop and mark (MADV_RANDOM) every page of the
 * mapping's data section that no aliased weight of this rank lies in, then
 * fault in the rank's own ranges. Best effort: madvise errors change only
 * what is resident, never what is computed (a read-only private file
 * mapping refaults dropped pages from the file). */
static void model_residency_settle(model *m)
{
    /* (a device backend aliases nothing: its whole mapping is dropped) */
    if (!gguf_is_file_mapping(m->gguf))
        return;
    long psl = sysconf(_SC_PAGESIZE);
    if (psl <= 0)
        return;
    uintptr_t ps = (uintptr_t)psl;
    uintptr_t base = (uintptr_t)gguf_base(m->gguf);
    uintptr_t end = base + gguf_file_size(m->gguf);
    uintptr_t lo = (base + gguf_data_offset(m->gguf)) & ~(ps - 1);
    uintptr_t hi = (end + ps - 1) & ~(ps - 1);
    int n_w = 3 + 12 * m->shard.n_layers, n = 0;
    map_span *sp = calloc((size_t)n_w, sizeof *sp);
    if (!sp)
        return;
    /* the token embedding is a row lookup: not held (the planner counts it as
     * mapped); a tied head over the whole table shares its handle (output) */
    const be_weight *top[3] = {&m->output_norm, &m->output, &m->rope_freqs};
    for (int i = 0; i < n_w; i++) {
        const be_weight *w;
        if (i < 3) {
            w = top[i];
        } else {
            model_layer *L = &m->layers[(i - 3) / 12];
            const be_weight *lw[12] = {&L->attn_norm, &L->wq, &L->wk,       &L->wv,
                                       &L->bq,        &L->bk, &L->bv,       &L->wo,
                                       &L->ffn_norm,  &L->w_gate, &L->w_up, &L->w_down};
            w = lw[(i - 3) % 12];
        }
        uintptr_t a = (uintptr_t)w->data, b = a + w->row_bytes * (size_t)w->ne1;
        if (!w->data || a < base || b > end || b <= a)
            continue; /* absent, or the backend's own memory */
        sp[n].a = a & ~(ps - 1);
        sp[n].b = (b + ps - 1) & ~(ps - 1);
        n++;
    }
    qsort(sp, (size_t)n, sizeof *sp, span_cmp);
    int k = 0; /* merge overlapping and touching spans */
    for (int i = 0; i < n; i++) {
        if (k > 0 && sp[i].a <= sp[k - 1].b) {
            if (sp[i].b > sp[k - 1].b)
                sp[k - 1].b = sp[i].b;
        } else {
            sp[k++] = sp[i];
        }
    }
    size_t held = 0;
    uintptr_t cur = lo;
    for (int i = 0; i <= k; i++) {
        uintptr_t g1 = i < k ? sp[i].a : hi;
        if (g1 > cur) {
            madvise((void *)cur, g1 - cur, MADV_RANDOM);
            madvise((void *)cur, g1 - cur, MADV_DONTNEED);
        }
        if (i < k) {
            if (sp[i].b > cur)
                cur = sp[i].b;
            held += sp[i].b - sp[i].a;
        }
    }
    /* (a tied head over the whole table holds it all: nothing to split) */
    if (m->tok_embd.data &&
        !(m->output.data == m->tok_embd.data && m->output.ne1 == m->tok_embd.ne1))
        embd_split(m, base, end, ps);
    /* the rank's own spans: copied to huge-page memory, or faulted in */
    const char *mm = getenv("CARAVAN_MMAP");
    bool keep_map = m->params.weights_mmap || (mm && *mm && strcmp(mm, "0") != 0);
    int n_ws = 4 + 12 * m->shard.n_layers;
    be_weight **ws = keep_map ? NULL : calloc((size_t)n_ws, sizeof *ws);
    if (ws)
        n_ws = model_weights(m, ws, n_ws);
    for (int i = 0; i < k; i++)
        if (!ws || span_to_anon(m, sp[i].a, sp[i].b, ws, n_ws) != 0)
            span_populate(sp[i].a, sp[i].b, ps);
    free(ws);
    m->mapped_resident_bytes = held;
    free(sp);
}

/* Let the backend re-lay the rank's matmul weights for its kernels
 * (backend.h: weight_optimize; the CPU backend's row-interleaved layouts)
 * where they are the rank's own memory: span_to_anon's copies (opened for
 * writing meanwhile) or the backend's own copies. Never the file mapping
 * (--mmap computes from the GGUF bytes as they are), nor the token
 * embedding table, which embed reads as rows, or a head that shares its
 * bytes (tied). */
static void model_optimize(model *m)
{
    if (!m->be->ops->weight_optimize || !m->be->ops->host_memory)
        return;
    for (int i = 0; i < m->n_anon; i++)
        mprotect(m->anon[i].p, m->anon[i].len, PROT_READ | PROT_WRITE);
    const uint8_t *ta = m->tok_embd.data;
    const uint8_t *tb = ta ? ta + m->tok_embd.row_bytes * (size_t)m->tok_embd.ne1 : NULL;
    int n_w = 1 + 7 * m->shard.n_layers;
    for (int i = 0; i < n_w; i++) {
        be_weight *w;
        if (i == 0) {
            w = &m->output;
        } else {
            model_layer *L = &m->layers[(i - 1) / 7];
            be_weight *lw[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
            w = lw[(i - 1) % 7];
        }
        if (!w->data)
            continue;
        const uint8_t *a = w->data, *b = a + w->row_bytes * (size_t)w->ne1;
        if (ta && a < tb && b > ta)
            continue;
        bool own = w->owned;
        for (int k = 0; k < m->n_anon && !own; k++)
            own = a >= (const uint8_t *)m->anon[k].p &&
                  b <= (const uint8_t *)m->anon[k].p + m->anon[k].len;
        if (own)
            m->be->ops->weight_optimize(m->be, w);
    }
    for (int i = 0; i < m->n_anon; i++)
        mprotect(m->anon[i].p, m->anon[i].len, PROT_READ);
}

void model_embd_release(const model *m, const int32_t *tokens, int64_t n)
{
    const be_weight *t = &m->tok_embd;
    if (!t->data || !gguf_is_file_mapping(m->gguf) ||
        (m->output.data == t->data && m->output.ne1 == t->ne1))
        return;
    uintptr_t base = (uintptr_t)gguf_base(m->gguf), end = base + gguf_file_size(m->gguf);
    uintptr_t ta = (uintptr_t)t->data, tb = ta + t->row_bytes * (size_t)t->ne1;
    long psl = sysconf(_SC_PAGESIZE);
    if (ta < base || tb > end || psl <= 0)
        return; /* the backend's own copy */
    uintptr_t ps = (uintptr_t)psl;
    /* the window a fault may have mapped: the aligned 64 KiB fault-around
     * block (embd_split's pieces are smaller), whole pages inside the table */
    const uintptr_t win = (uintptr_t)64 << 10;
    uintptr_t lo = (ta + ps - 1) & ~(ps - 1), hi = tb & ~(ps - 1), last = 0;
    /* a head tied to the table and sliced by vocab holds some of its rows */
    uintptr_t oa = (uintptr_t)m->output.data, ob = oa + m->output.row_bytes * (size_t)m->output.ne1;
    if (!m->output.data || oa >= tb || ob <= ta)
        oa = ob = 0;
    oa &= ~(ps - 1);
    for (int64_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= t->ne1)
            continue;
        uintptr_t r = ta + t->row_bytes * (size_t)tokens[i];
        uintptr_t a = r & ~(win - 1), b = ((r + t->row_bytes) + win - 1) & ~(win - 1);
        a = a < lo ? lo : a;
        b = b > hi ? hi : b;
        if (b <= a || a == last || (a < ob && b > oa))
            continue;
        madvise((void *)a, b - a, MADV_DONTNEED);
        last = a;
    }
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
        size_t before = m->weight_bytes;
        if (c->tied_output && s->has_embd && s->vocab0 == 0 && s->n_vocab == c->n_vocab)
            m->output = m->tok_embd; /* shared handle; freed once */
        else if ((st = load_rows(m, c->tied_output ? "token_embd.weight" : "output.weight",
                                 s->vocab0, s->n_vocab, &m->output, e)))
            goto err;
        /* a tied head slice that aliases rows of the table this rank already
         * holds costs no bytes of its own (as the planner counts it) */
        const uint8_t *te = m->tok_embd.data, *ho = m->output.data;
        if (te && ho && ho >= te && ho < te + m->tok_embd.row_bytes * (size_t)m->tok_embd.ne1)
            m->weight_bytes = before;
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
    model_residency_settle(m);
    model_optimize(m);
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
