/* planner.c - pipeline x tensor-parallel layout of a model over ranks, sized
 * by memory. Pure arithmetic on shapes and types: reads GGUF metadata and
 * tensor infos, never tensor data; no MPI. Rules in planner.h. */
#include "planner.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/dtype.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

uint64_t plan_slice_bytes(int type, int64_t rows, int64_t cols)
{
    if (rows <= 0 || cols <= 0)
        return 0;
    size_t rs = dtype_row_size(type, cols);
    if (rs == 0) /* not whole blocks: the loader keeps such a slice as F32 */
        rs = (size_t)cols * sizeof(float);
    return (uint64_t)rows * rs;
}

/* Bytes of columns [col0, col0 + cols) of `rows` rows of a matrix of `type`:
 * whole blocks are kept as they are, a slice off the blocks (start or size)
 * is dequantized to F32 by the loader. */
static uint64_t col_slice_bytes(int type, int64_t rows, int64_t col0, int64_t cols)
{
    int64_t bs = dtype_get(type)->block_size;
    if (bs > 1 && col0 % bs)
        return (uint64_t)rows * (uint64_t)cols * sizeof(float);
    return plan_slice_bytes(type, rows, cols);
}

static bool col_slice_is_f32(int type, int64_t col0, int64_t cols)
{
    int64_t bs = dtype_get(type)->block_size;
    return bs > 1 && cols > 0 && (col0 % bs || cols % bs);
}

/* Part i of n items split into `parts` as evenly as possible (first parts larger). */
static void split_even(int64_t n, int parts, int i, int64_t *start, int64_t *count)
{
    int64_t base = n / parts, rem = n % parts;
    *count = base + (i < rem ? 1 : 0);
    *start = i * base + (i < rem ? i : rem);
}

static int block_of(int type)
{
    int64_t b = dtype_get(type)->block_size;
    return b > 0 ? (int)b : 1;
}

/* ---- model descriptions -------------------------------------------------- */

static int tensor_type(const gguf_file *f, const char *name, int fallback)
{
    const gguf_tensor_info *t = gguf_tensor_find(f, name);
    return t ? t->type : fallback;
}

cv_status plan_model_from_gguf(const gguf_file *f, plan_model *pm, cv_err *e)
{
    memset(pm, 0, sizeof *pm);
    cv_status st = model_config_load(f, &pm->cfg, e);
    if (st)
        return st;
    pm->tok_embd_type = tensor_type(f, "token_embd.weight", DT_F32);
    pm->output_type = pm->cfg.tied_output ? pm->tok_embd_type
                                          : tensor_type(f, "output.weight", pm->tok_embd_type);
    pm->layers = calloc((size_t)pm->cfg.n_layer, sizeof *pm->layers);
    if (!pm->layers)
        return cv_err_set(e, CV_ENOMEM, "plan: out of memory for %d layers", pm->cfg.n_layer);
    static const char *names[7] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                   "ffn_gate", "ffn_up", "ffn_down"};
    for (int l = 0; l < pm->cfg.n_layer; l++) {
        int *ty = &pm->layers[l].wq; /* the struct is 7 ints in this order */
        for (int k = 0; k < 7; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, names[k]);
            const gguf_tensor_info *t = gguf_tensor_find(f, name);
            if (!t) {
                plan_model_free(pm);
                return cv_err_set(e, CV_EFORMAT, "plan: tensor %s is missing", name);
            }
            ty[k] = t->type;
        }
    }
    return CV_OK;
}

cv_status plan_model_from_shape(const model_config *cfg, int type, plan_model *pm, cv_err *e)
{
    memset(pm, 0, sizeof *pm);
    if (!dtype_get(type)->known)
        return cv_err_set(e, CV_EINVAL, "plan: unknown weight type id %d", type);
    if (cfg->n_layer < 1 || cfg->n_embd < 1 || cfg->n_head < 1 || cfg->n_head_kv < 1 ||
        cfg->n_ff < 1 || cfg->n_vocab < 1 || cfg->head_dim < 1)
        return cv_err_set(e, CV_EINVAL,
                          "plan: every dimension must be >= 1 (n_layer %d, n_embd %lld, n_head %d, "
                          "n_head_kv %d, head_dim %d, n_ff %lld, n_vocab %lld)",
                          cfg->n_layer, (long long)cfg->n_embd, cfg->n_head, cfg->n_head_kv,
                          cfg->head_dim, (long long)cfg->n_ff, (long long)cfg->n_vocab);
    if (cfg->n_head % cfg->n_head_kv)
        return cv_err_set(e, CV_EINVAL, "plan: n_head %d is not a multiple of n_head_kv %d",
                          cfg->n_head, cfg->n_head_kv);
    int bs = block_of(type);
    if (cfg->n_embd % bs || cfg->n_ff % bs || ((int64_t)cfg->n_head * cfg->head_dim) % bs)
        return cv_err_set(e, CV_EINVAL,
                          "plan: %s needs rows in blocks of %d: n_embd %lld, n_ff %lld, "
                          "n_head*head_dim %lld",
                          dtype_name(type), bs, (long long)cfg->n_embd, (long long)cfg->n_ff,
                          (long long)cfg->n_head * cfg->head_dim);
    pm->cfg = *cfg;
    pm->tok_embd_type = type;
    pm->output_type = type;
    pm->layers = calloc((size_t)cfg->n_layer, sizeof *pm->layers);
    if (!pm->layers)
        return cv_err_set(e, CV_ENOMEM, "plan: out of memory for %d layers", cfg->n_layer);
    for (int l = 0; l < cfg->n_layer; l++)
        pm->layers[l] = (plan_layer_types){type, type, type, type, type, type, type};
    return CV_OK;
}

void plan_model_free(plan_model *pm)
{
    if (pm) {
        free(pm->layers);
        pm->layers = NULL;
    }
}

typedef struct preset {
    const char *name;
    int n_layer, n_head, n_head_kv, head_dim;
    int64_t n_embd, n_ff, n_vocab, n_ctx;
    bool tied;
} preset;

static const preset presets[] = {
    {"llama3-70b", 80, 64, 8, 128, 8192, 28672, 128256, 8192, false},
    {"llama3-8b", 32, 32, 8, 128, 4096, 14336, 128256, 8192, false},
    {"llama3.2-1b", 16, 32, 8, 64, 2048, 8192, 128256, 131072, true},
    {"llama3.2-3b", 28, 24, 8, 128, 3072, 8192, 128256, 131072, true},
    {"llama2-7b", 32, 32, 32, 128, 4096, 11008, 32000, 4096, false},
    {"llama2-13b", 40, 40, 40, 128, 5120, 13824, 32000, 4096, false},
    {"mistral-7b", 32, 32, 8, 128, 4096, 14336, 32000, 32768, false},
};

const char *plan_shape_names(void)
{
    return "llama3-70b, llama3-8b, llama3.2-1b, llama3.2-3b, llama2-7b, llama2-13b, mistral-7b";
}

cv_status plan_shape_preset(const char *name, model_config *cfg, cv_err *e)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        const preset *p = &presets[i];
        if (strcmp(p->name, name))
            continue;
        memset(cfg, 0, sizeof *cfg);
        cfg->arch = ARCH_LLAMA;
        snprintf(cfg->arch_name, sizeof cfg->arch_name, "llama");
        snprintf(cfg->name, sizeof cfg->name, "%s (shape)", p->name);
        cfg->n_layer = p->n_layer;
        cfg->n_embd = p->n_embd;
        cfg->n_head = p->n_head;
        cfg->n_head_kv = p->n_head_kv;
        cfg->head_dim = p->head_dim;
        cfg->n_ff = p->n_ff;
        cfg->n_vocab = p->n_vocab;
        cfg->n_ctx_train = p->n_ctx;
        cfg->rms_eps = 1e-5f;
        cfg->rope_freq_base = 10000.0f;
        cfg->rope_freq_scale = 1.0f;
        cfg->n_rot = p->head_dim;
        cfg->tied_output = p->tied;
        cfg->file_type = -1;
        return CV_OK;
    }
    return cv_err_set(e, CV_EINVAL, "unknown shape '%s' (known: %s)", name, plan_shape_names());
}

/* ---- byte accounting ------------------------------------------------------ */

typedef struct tp_split {
    int64_t head0, n_head, kv0, n_kv, ff0, n_ff, vocab0, n_vocab;
} tp_split;

static uint64_t layer_bytes(const plan_model *pm, const plan_request *rq, int l,
                            const tp_split *sp, uint64_t *kv_out)
{
    const model_config *c = &pm->cfg;
    const plan_layer_types *ty = &pm->layers[l];
    int64_t q_rows = sp->n_head * c->head_dim, kv_rows = sp->n_kv * c->head_dim;
    uint64_t b = 0;
    b += plan_slice_bytes(ty->wq, q_rows, c->n_embd);
    b += plan_slice_bytes(ty->wk, kv_rows, c->n_embd);
    b += plan_slice_bytes(ty->wv, kv_rows, c->n_embd);
    b += col_slice_bytes(ty->wo, c->n_embd, sp->head0 * c->head_dim, q_rows);
    b += plan_slice_bytes(ty->w_gate, sp->n_ff, c->n_embd);
    b += plan_slice_bytes(ty->w_up, sp->n_ff, c->n_embd);
    b += col_slice_bytes(ty->w_down, c->n_embd, sp->ff0, sp->n_ff);
    b += 2 * (uint64_t)c->n_embd * 4; /* attn_norm, ffn_norm */
    if (c->has_qkv_bias)
        b += (uint64_t)(q_rows + 2 * kv_rows) * 4;
    size_t kv_el = rq->kv_type == DT_F32 ? 4 : 2;
    uint64_t kv = 2 * (uint64_t)rq->n_slots * (uint64_t)rq->n_ctx * (uint64_t)kv_rows * kv_el;
    *kv_out = kv;
    return b;
}

/* Bytes of layer l's column slices (attn_output, ffn_down) that are not whole
 * blocks of their type, which the loader dequantizes to F32 (part of
 * layer_bytes). */
static uint64_t layer_f32_bytes(const plan_model *pm, int l, const tp_split *sp)
{
    const model_config *c = &pm->cfg;
    const plan_layer_types *ty = &pm->layers[l];
    int64_t q0 = sp->head0 * c->head_dim, nq = sp->n_head * c->head_dim;
    uint64_t b = 0;
    if (col_slice_is_f32(ty->wo, q0, nq))
        b += col_slice_bytes(ty->wo, c->n_embd, q0, nq);
    if (col_slice_is_f32(ty->w_down, sp->ff0, sp->n_ff))
        b += col_slice_bytes(ty->w_down, c->n_embd, sp->ff0, sp->n_ff);
    return b;
}

/* Weights a stage holds besides its layers (embedding, head) for TP rank t. */
static uint64_t fixed_bytes(const plan_model *pm, int s, int pp, const tp_split *sp)
{
    const model_config *c = &pm->cfg;
    uint64_t b = 0;
    if (s == 0) /* every TP rank of stage 0 embeds (row lookup of the whole table) */
        b += plan_slice_bytes(pm->tok_embd_type, c->n_vocab, c->n_embd);
    if (s == pp - 1) {
        b += (uint64_t)c->n_embd * 4; /* output_norm */
        /* a tied head on stage 0 reuses the embedding already counted */
        if (!(c->tied_output && pp == 1))
            b += plan_slice_bytes(pm->output_type, sp->n_vocab, c->n_embd);
    }
    return b;
}

static uint64_t scratch_bytes(const plan_model *pm, const plan_request *rq, int s, int pp,
                              const tp_split *sp)
{
    const model_config *c = &pm->cfg;
    int64_t q = sp->n_head * c->head_dim, kv = sp->n_kv * c->head_dim;
    int64_t per_tok = 4 * c->n_embd + 2 * q + 2 * kv + 3 * sp->n_ff;
    int64_t n_out = rq->max_batch < rq->n_slots ? rq->max_batch : rq->n_slots;
    uint64_t b = (uint64_t)rq->max_batch * (uint64_t)per_tok * 4;
    if (s == pp - 1) /* logits slice, and the gathered rows on TP rank 0 */
        b += (uint64_t)n_out * (uint64_t)(sp->n_vocab + (sp->vocab0 == 0 ? c->n_vocab : 0)) * 4;
    if (pp > 1) /* message buffers: two sends in flight + one receive */
        b += 3 * (uint64_t)rq->max_batch * (uint64_t)c->n_embd * 4;
    return b;
}

/* ---- layer assignment ----------------------------------------------------- */

typedef struct ctx {
    const plan_model *pm;
    const plan_request *rq;
    tp_split *sp;       /* tp entries */
    uint64_t *lay;      /* n_layer x tp: weights + kv of layer l on TP rank t */
    uint64_t *fix;      /* pp x tp: fixed + scratch */
    const double *mem;  /* pp x tp */
    uint64_t *cmp;      /* n_layer x tp: weight bytes read per token (compute proxy) */
    uint64_t *cfix;     /* pp x tp: the head slice on the last stage */
    double cmax;        /* compute budget per rank (INFINITY: none) */
} ctx;

/* Greedy contiguous packing within budget f * mem: each stage takes as many
 * layers as fit while leaving one for every later stage. counts[] filled
 * when feasible. */
static bool pack(const ctx *x, double f, int *counts)
{
    int L = x->pm->cfg.n_layer, P = x->rq->pp, T = x->rq->tp;
    int l = 0;
    for (int s = 0; s < P; s++) {
        double used[256], cused[256];
        for (int t = 0; t < T; t++) {
            used[t] = (double)x->fix[s * T + t];
            cused[t] = (double)x->cfix[s * T + t];
            if (used[t] > f * x->mem[s * T + t] || cused[t] > x->cmax)
                return false;
        }
        int n = 0;
        int max_take = L - l - (P - 1 - s);
        while (n < max_take) {
            bool fits = true;
            for (int t = 0; t < T && fits; t++)
                fits = used[t] + (double)x->lay[(l + n) * T + t] <= f * x->mem[s * T + t] &&
                       cused[t] + (double)x->cmp[(l + n) * T + t] <= x->cmax;
            if (!fits)
                break;
            for (int t = 0; t < T; t++) {
                used[t] += (double)x->lay[(l + n) * T + t];
                cused[t] += (double)x->cmp[(l + n) * T + t];
            }
            n++;
        }
        if (n == 0 || (s == P - 1 && n < max_take))
            return false;
        counts[s] = n;
        l += n;
    }
    return l == L;
}

/* Smallest compute budget at which the layers pack within memory (f = 1);
 * false when they do not fit memory at any budget. */
static bool pack_compute_min(ctx *x, int *counts)
{
    x->cmax = INFINITY;
    if (!pack(x, 1.0, counts))
        return false;
    double lo = 0, hi = 0;
    for (int i = 0; i < x->pm->cfg.n_layer * x->rq->tp; i++)
        hi += (double)x->cmp[i];
    for (int i = 0; i < x->rq->pp * x->rq->tp; i++)
        hi += (double)x->cfix[i];
    for (int it = 0; it < 64; it++) {
        x->cmax = 0.5 * (lo + hi);
        if (pack(x, 1.0, counts))
            hi = x->cmax;
        else
            lo = x->cmax;
    }
    x->cmax = hi;
    pack(x, 1.0, counts);
    return true;
}

/* Smallest f (used fraction of the fullest rank) at which the layers pack. */
static double pack_min(const ctx *x, int *counts)
{
    double lo = 0, hi = 1;
    while (!pack(x, hi, counts))
        hi *= 2;
    for (int it = 0; it < 64; it++) {
        double mid = 0.5 * (lo + hi);
        if (pack(x, mid, counts))
            hi = mid;
        else
            lo = mid;
    }
    pack(x, hi, counts);
    return hi;
}

static void fmt_gib(char *buf, size_t n, double bytes)
{
    if (bytes >= GIB)
        snprintf(buf, n, "%.2f GiB", bytes / GIB);
    else
        snprintf(buf, n, "%.1f MiB", bytes / (1024.0 * 1024.0));
}

cv_status planner_plan(const plan_model *pm, const plan_request *rq, plan *out, cv_err *e)
{
    memset(out, 0, sizeof *out);
    const model_config *c = &pm->cfg;
    int P = rq->pp, T = rq->tp, L = c->n_layer;
    if (P < 1 || T < 1)
        return cv_err_set(e, CV_EINVAL, "plan: --pp %d and --tp %d must be >= 1", P, T);
    if (T > 256)
        return cv_err_set(e, CV_EINVAL, "plan: --tp %d is over the limit of 256", T);
    if (P > L)
        return cv_err_set(e, CV_EINVAL,
                          "plan: cannot split %d layers into %d pipeline stages (each stage needs "
                          "a layer): the largest --pp for this model is %d",
                          L, P, L);
    if (T > c->n_head_kv)
        return cv_err_set(e, CV_EINVAL,
                          "plan: --tp %d is more than the %d KV heads (each TP rank needs whole "
                          "KV heads): the largest --tp for this model is %d",
                          T, c->n_head_kv, c->n_head_kv);
    if (rq->n_slots < 1 || rq->n_ctx < 1 || rq->max_batch < 1)
        return cv_err_set(e, CV_EINVAL, "plan: slots %lld, ctx %lld, max batch %lld must be >= 1",
                          (long long)rq->n_slots, (long long)rq->n_ctx, (long long)rq->max_batch);
    int ff_block = 1;
    for (int l = 0; l < L; l++) {
        int b = block_of(pm->layers[l].w_down);
        if (b > ff_block)
            ff_block = b;
    }
    if (c->n_ff % ff_block)
        return cv_err_set(e, CV_EFORMAT, "plan: n_ff %lld is not a multiple of the %d-element "
                          "blocks of ffn_down", (long long)c->n_ff, ff_block);
    int64_t ff_blocks = c->n_ff / ff_block;
    if (T > ff_blocks)
        return cv_err_set(e, CV_EINVAL,
                          "plan: --tp %d is more than the %lld FFN blocks of %d rows (n_ff %lld): "
                          "the largest --tp for this model is %lld",
                          T, (long long)ff_blocks, ff_block, (long long)c->n_ff,
                          (long long)(ff_blocks < c->n_head_kv ? ff_blocks : c->n_head_kv));
    if (T > c->n_vocab)
        return cv_err_set(e, CV_EINVAL, "plan: --tp %d is more than the %lld vocabulary rows", T,
                          (long long)c->n_vocab);

    int N = P * T;
    int gqa = c->n_head / c->n_head_kv;
    ctx x = {.pm = pm, .rq = rq};
    x.sp = calloc((size_t)T, sizeof *x.sp);
    x.lay = calloc((size_t)L * T, sizeof *x.lay);
    x.fix = calloc((size_t)N, sizeof *x.fix);
    double *mem = calloc((size_t)N, sizeof *mem);
    x.cmp = calloc((size_t)L * T, sizeof *x.cmp);
    x.cfix = calloc((size_t)N, sizeof *x.cfix);
    x.cmax = INFINITY;
    uint64_t *kv_lay = calloc((size_t)L * T, sizeof *kv_lay);
    int *counts = calloc((size_t)P, sizeof *counts);
    out->ranks = calloc((size_t)N, sizeof *out->ranks);
    cv_status st = CV_OK;
    if (!x.sp || !x.lay || !x.fix || !mem || !kv_lay || !counts || !out->ranks || !x.cmp ||
        !x.cfix) {
        st = cv_err_set(e, CV_ENOMEM, "plan: out of memory");
        goto done;
    }
    x.mem = mem;
    for (int t = 0; t < T; t++) {
        tp_split *sp = &x.sp[t];
        split_even(c->n_head_kv, T, t, &sp->kv0, &sp->n_kv);
        sp->head0 = sp->kv0 * gqa;
        sp->n_head = sp->n_kv * gqa;
        int64_t b0, nb;
        split_even(ff_blocks, T, t, &b0, &nb);
        sp->ff0 = b0 * ff_block;
        sp->n_ff = nb * ff_block;
        split_even(c->n_vocab, T, t, &sp->vocab0, &sp->n_vocab);
    }
    for (int l = 0; l < L; l++)
        for (int t = 0; t < T; t++) {
            uint64_t kv;
            uint64_t w = layer_bytes(pm, rq, l, &x.sp[t], &kv);
            x.lay[l * T + t] = w + kv;
            kv_lay[l * T + t] = kv;
            x.cmp[l * T + t] = w;
        }
    bool known = rq->mem != NULL;
    for (int r = 0; r < N && known; r++)
        known = rq->mem[r] > 0;
    for (int r = 0; r < N; r++) {
        int s = r / T, t = r % T;
        x.fix[r] = fixed_bytes(pm, s, P, &x.sp[t]) + scratch_bytes(pm, rq, s, P, &x.sp[t]);
        mem[r] = known ? (double)rq->mem[r] : 1.0;
        if (s == P - 1)
            x.cfix[r] = plan_slice_bytes(pm->output_type, x.sp[t].n_vocab, c->n_embd);
    }

    bool by_memory = known && rq->balance == PLAN_BALANCE_MEMORY;
    bool fits = true;
    if (!by_memory) {
        /* memory as a cap only (unknown: no cap); balance the weights read per token */
        for (int r = 0; r < N; r++)
            mem[r] = rq->mem && rq->mem[r] ? (double)rq->mem[r] : INFINITY;
        fits = pack_compute_min(&x, counts);
        if (!fits) {
            x.cmax = INFINITY;
            for (int r = 0; r < N; r++)
                mem[r] = rq->mem && rq->mem[r] ? (double)rq->mem[r] : 1e30;
        }
    }
    if (by_memory || !fits) {
        double f = pack_min(&x, counts);
        if (f > 1.0) {
            /* Why: the fullest rank at the best packing. What would fit: the
             * same packing with equal memory on every rank. */
            int worst = 0;
            double worst_f = -1;
            int l0 = 0;
            for (int s = 0; s < P; s++) {
                for (int t = 0; t < T; t++) {
                    double b = (double)x.fix[s * T + t];
                    for (int l = l0; l < l0 + counts[s]; l++)
                        b += (double)x.lay[l * T + t];
                    if (b / mem[s * T + t] > worst_f) {
                        worst_f = b / mem[s * T + t];
                        worst = s * T + t;
                    }
                }
                l0 += counts[s];
            }
            double need_w = worst_f * mem[worst];
            for (int r = 0; r < N; r++)
                mem[r] = 1.0;
            x.cmax = INFINITY;
            double eq = pack_min(&x, counts);
            double total = 0, kv_total = 0;
            for (int r = 0; r < N; r++)
                total += (double)x.fix[r];
            for (int l = 0; l < L; l++)
                for (int t = 0; t < T; t++) {
                    total += (double)x.lay[l * T + t];
                    kv_total += (double)kv_lay[l * T + t];
                }
            char a[32], b[32], c1[32], d[32], k[32];
            fmt_gib(a, sizeof a, need_w);
            fmt_gib(b, sizeof b, (double)rq->mem[worst]);
            fmt_gib(c1, sizeof c1, total);
            fmt_gib(d, sizeof d, eq);
            fmt_gib(k, sizeof k, kv_total);
            st = cv_err_set(e, CV_ERANGE,
                            "plan: does not fit: rank %d (stage %d, tp %d) would need %s but has "
                            "%s. The model needs %s over %d ranks (KV cache %s for %lld slots x "
                            "%lld positions); with equal memory every rank needs at least %s. Use "
                            "more ranks, ranks with more memory, or fewer --slots / a shorter --ctx",
                            worst, worst / T, worst % T, a, b, c1, N, k, (long long)rq->n_slots,
                            (long long)rq->n_ctx, d);
            goto done;
        }
    }

    out->pp = P;
    out->tp = T;
    out->n_ranks = N;
    int l0 = 0;
    for (int s = 0; s < P; s++) {
        for (int t = 0; t < T; t++) {
            plan_rank *pr = &out->ranks[s * T + t];
            const tp_split *sp = &x.sp[t];
            shard_spec *sh = &pr->shard;
            sh->pp_rank = s;
            sh->pp_size = P;
            sh->tp_rank = t;
            sh->tp_size = T;
            sh->layer0 = l0;
            sh->n_layers = counts[s];
            sh->has_embd = s == 0;
            sh->has_head = s == P - 1;
            sh->head0 = (int)sp->head0;
            sh->n_head = (int)sp->n_head;
            sh->kv_head0 = (int)sp->kv0;
            sh->n_head_kv = (int)sp->n_kv;
            sh->ff0 = sp->ff0;
            sh->n_ff = sp->n_ff;
            sh->vocab0 = sh->has_head ? sp->vocab0 : 0;
            sh->n_vocab = sh->has_head ? sp->n_vocab : 0;
            pr->mem = rq->mem ? rq->mem[s * T + t] : 0;
            pr->scratch_bytes = scratch_bytes(pm, rq, s, P, sp);
            pr->weight_bytes = fixed_bytes(pm, s, P, sp);
            for (int l = l0; l < l0 + counts[s]; l++) {
                pr->kv_bytes += kv_lay[l * T + t];
                pr->weight_bytes += x.lay[l * T + t] - kv_lay[l * T + t];
                pr->f32_slice_bytes += layer_f32_bytes(pm, l, sp);
            }
            pr->total_bytes = pr->weight_bytes + pr->kv_bytes + pr->scratch_bytes;
            if (s == 0) {
                pr->mapped_bytes = plan_slice_bytes(pm->tok_embd_type, c->n_vocab, c->n_embd);
                if (c->tied_output && P == 1)
                    pr->mapped_bytes -= plan_slice_bytes(pm->tok_embd_type, sp->n_vocab, c->n_embd);
            }
            pr->resident_bytes = pr->total_bytes - pr->mapped_bytes;
            /* the scratch estimate is not part of the packing: check it too */
            if (pr->mem && pr->total_bytes > pr->mem) {
                char a[32], b[32];
                fmt_gib(a, sizeof a, (double)pr->total_bytes);
                fmt_gib(b, sizeof b, (double)pr->mem);
                st = cv_err_set(e, CV_ERANGE,
                                "plan: does not fit: rank %d (stage %d, tp %d) needs %s but has %s; "
                                "give every rank's memory to size stages by it",
                                s * T + t, s, t, a, b);
                goto done;
            }
        }
        l0 += counts[s];
    }
    /* the whole model for reference */
    {
        tp_split full = {0, c->n_head, 0, c->n_head_kv, 0, c->n_ff, 0, c->n_vocab};
        plan_request one = *rq;
        one.n_slots = 1;
        uint64_t b = fixed_bytes(pm, 0, 1, &full), kv;
        for (int l = 0; l < L; l++)
            b += layer_bytes(pm, &one, l, &full, &kv);
        out->model_weight_bytes = b;
    }
done:
    if (st)
        plan_free(out);
    free(x.sp);
    free(x.lay);
    free(x.fix);
    free(mem);
    free(kv_lay);
    free(counts);
    free(x.cmp);
    free(x.cfix);
    return st;
}

void plan_free(plan *p)
{
    if (p) {
        free(p->ranks);
        p->ranks = NULL;
        p->n_ranks = 0;
    }
}

void plan_print(const plan *p, const plan_model *pm, const plan_request *rq, FILE *f)
{
    const model_config *c = &pm->cfg;
    char wb[32];
    fmt_gib(wb, sizeof wb, (double)p->model_weight_bytes);
    fprintf(f,
            "model: %s  %d layers  n_embd %lld  heads %d/%d kv  head_dim %d  n_ff %lld  vocab %lld"
            "  weights %s (%s)\n",
            c->name[0] ? c->name : c->arch_name, c->n_layer, (long long)c->n_embd, c->n_head,
            c->n_head_kv, c->head_dim, (long long)c->n_ff, (long long)c->n_vocab, wb,
            dtype_name(pm->layers[0].w_gate));
    fprintf(f, "layout: %d stage(s) x %d TP rank(s) = %d ranks;  KV cache %lld slot(s) x %lld "
               "positions (%s)\n",
            p->pp, p->tp, p->n_ranks, (long long)rq->n_slots, (long long)rq->n_ctx,
            rq->kv_type == DT_F32 ? "F32" : "F16");
    bool any_f32 = false;
    for (int r = 0; r < p->n_ranks; r++)
        any_f32 = any_f32 || p->ranks[r].f32_slice_bytes > 0;
    fprintf(f, "%-5s %-5s %-3s %-13s %-11s %-9s %-17s %-19s %10s %10s %10s %10s %10s %10s %10s\n",
            "rank", "stage", "tp", "layers", "heads", "kv heads", "ff rows", "vocab rows",
            "weights", "f32 slices", "kv cache", "scratch", "total", "resident", "memory");
    for (int r = 0; r < p->n_ranks; r++) {
        const plan_rank *pr = &p->ranks[r];
        const shard_spec *s = &pr->shard;
        char lay[32], hd[32], kv[32], ff[32], vo[32], a[32], b[32], d[32], t[32], m[32], rs[32],
            f3[32];
        snprintf(lay, sizeof lay, "%d-%d (%d)%s", s->layer0, s->layer0 + s->n_layers - 1,
                 s->n_layers, s->has_embd ? "+E" : "");
        snprintf(hd, sizeof hd, "%d-%d (%d)", s->head0, s->head0 + s->n_head - 1, s->n_head);
        snprintf(kv, sizeof kv, "%d-%d (%d)", s->kv_head0, s->kv_head0 + s->n_head_kv - 1,
                 s->n_head_kv);
        snprintf(ff, sizeof ff, "%lld-%lld", (long long)s->ff0, (long long)(s->ff0 + s->n_ff));
        if (s->has_head)
            snprintf(vo, sizeof vo, "%lld-%lld", (long long)s->vocab0,
                     (long long)(s->vocab0 + s->n_vocab));
        else
            snprintf(vo, sizeof vo, "-");
        fmt_gib(a, sizeof a, (double)pr->weight_bytes);
        if (pr->f32_slice_bytes)
            fmt_gib(f3, sizeof f3, (double)pr->f32_slice_bytes);
        else
            snprintf(f3, sizeof f3, "-");
        fmt_gib(b, sizeof b, (double)pr->kv_bytes);
        fmt_gib(d, sizeof d, (double)pr->scratch_bytes);
        fmt_gib(t, sizeof t, (double)pr->total_bytes);
        fmt_gib(rs, sizeof rs, (double)pr->resident_bytes);
        if (pr->mem)
            fmt_gib(m, sizeof m, (double)pr->mem);
        else
            snprintf(m, sizeof m, "?");
        fprintf(f, "%-5d %-5d %-3d %-13s %-11s %-9s %-17s %-19s %10s %10s %10s %10s %10s %10s %10s\n",
                r, s->pp_rank, s->tp_rank, lay, hd, kv, ff, vo, a, f3, b, d, t, rs, m);
    }
    fprintf(f, "(+E: holds the token embedding; the last stage holds the output norm and its "
               "vocab rows of the head; ff rows and vocab rows are [start-end); total must fit "
               "the rank's memory; resident: expected RSS of a CPU rank, which maps the "
               "embedding table and pages in only the rows it looks up)\n");
    if (any_f32)
        fprintf(f, "(f32 slices: part of weights; column slices of attn_output / ffn_down that do "
                   "not fall on their type's blocks, held dequantized as F32 at 4 bytes per "
                   "element)\n");
}
