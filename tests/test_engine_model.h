/* test_engine_model.h - for the engine tests: write small random-weight
 * llama/qwen2 GGUFs of any shape and weight type (with deliberate defects
 * on request), and a naive reference forward pass that reads the weights
 * back through the GGUF reader and dequantize_row, written from the maths
 * independently of worker/forward.c and the backend. */
#pragma once
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/gguf.h"
#include "testutil.h"

typedef struct tm_spec {
    const char *arch; /* "llama" | "qwen2" | anything (to test refusals) */
    int n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab;
    int wtype;          /* type of the matrices and token_embd */
    bool tied;          /* no output.weight */
    bool rope_freqs;    /* write rope_freqs.weight (llama3-style factors) */
    float rope_linear;  /* > 0: rope.scaling.type linear with this factor */
    float freq_base;    /* > 0: write rope.freq_base */
    uint64_t seed;
    const char *omit;      /* tensor name to leave out */
    const char *bad_shape; /* tensor name written with one extra row */
} tm_spec;

static inline uint64_t tm_hash(const char *s, uint64_t seed)
{
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h | 1;
}

/* Deterministic values of a tensor: kind 0 matrix, 1 norm, 2 bias, 3 rope factors */
static inline void tm_values(const char *name, uint64_t seed, int kind, int64_t ne0, int64_t n, float *x)
{
    uint64_t s = tm_hash(name, seed);
    float sc = kind == 0 ? 1.5f / sqrtf((float)ne0) : 0.2f;
    for (int64_t i = 0; i < n; i++) {
        float r = tu_rand_f(&s);
        x[i] = kind == 1 ? 1.0f + 0.3f * r : kind == 3 ? 1.0f + 3.5f * (r + 1.0f) : sc * r;
    }
    if (!strcmp(name, "token_embd.weight"))
        for (int64_t i = 0; i < n; i++)
            x[i] *= sqrtf((float)ne0) * 0.5f;
}

typedef struct tm_tensor {
    char name[64];
    int type, kind;
    int64_t ne0, ne1;
} tm_tensor;

static inline int tm_write(const char *path, const tm_spec *sp)
{
    int hd = sp->n_embd / sp->n_head;
    int64_t q = (int64_t)sp->n_head * hd, kv = (int64_t)sp->n_head_kv * hd;
    tm_tensor ts[512];
    int nt = 0;
#define ADD(nm, ty, kd, a, b)                                                                      \
    do {                                                                                           \
        snprintf(ts[nt].name, sizeof ts[nt].name, "%s", nm);                                       \
        ts[nt].type = ty;                                                                          \
        ts[nt].kind = kd;                                                                          \
        ts[nt].ne0 = a;                                                                            \
        ts[nt].ne1 = b;                                                                            \
        nt++;                                                                                      \
    } while (0)
    ADD("token_embd.weight", sp->wtype, 0, sp->n_embd, sp->n_vocab);
    ADD("output_norm.weight", DT_F32, 1, sp->n_embd, 1);
    if (!sp->tied)
        ADD("output.weight", sp->wtype, 0, sp->n_embd, sp->n_vocab);
    if (sp->rope_freqs)
        ADD("rope_freqs.weight", DT_F32, 3, hd / 2, 1);
    bool bias = !strcmp(sp->arch, "qwen2");
    for (int l = 0; l < sp->n_layer; l++) {
        char nm[64];
#define L(sfx, ty, kd, a, b)                                                                       \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "blk.%d." sfx, l);                                                 \
        ADD(nm, ty, kd, a, b);                                                                     \
    } while (0)
        L("attn_norm.weight", DT_F32, 1, sp->n_embd, 1);
        L("attn_q.weight", sp->wtype, 0, sp->n_embd, q);
        L("attn_k.weight", sp->wtype, 0, sp->n_embd, kv);
        L("attn_v.weight", sp->wtype, 0, sp->n_embd, kv);
        if (bias) {
            L("attn_q.bias", DT_F32, 2, q, 1);
            L("attn_k.bias", DT_F32, 2, kv, 1);
            L("attn_v.bias", DT_F32, 2, kv, 1);
        }
        L("attn_output.weight", sp->wtype, 0, q, sp->n_embd);
        L("ffn_norm.weight", DT_F32, 1, sp->n_embd, 1);
        L("ffn_gate.weight", sp->wtype, 0, sp->n_embd, sp->n_ff);
        L("ffn_up.weight", sp->wtype, 0, sp->n_embd, sp->n_ff);
        L("ffn_down.weight", sp->wtype, 0, sp->n_ff, sp->n_embd);
#undef L
    }
#undef ADD
    cv_err e = {0};
    gguf_writer *w;
    if (gguf_writer_open(path, &w, &e)) {
        fprintf(stderr, "tm_write %s: %s\n", path, e.msg);
        return -1;
    }
    char k[128];
    gguf_writer_set_str(w, "general.architecture", sp->arch, strlen(sp->arch));
    gguf_writer_set_str(w, "general.name", "engine-test", 11);
#define KEY(sfx) (snprintf(k, sizeof k, "%s." sfx, sp->arch), k)
    gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)sp->n_layer);
    gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)sp->n_embd);
    gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)sp->n_head);
    gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)sp->n_head_kv);
    gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)sp->n_ff);
    gguf_writer_set_u32(w, KEY("context_length"), 256);
    gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-6f);
    if (sp->freq_base > 0)
        gguf_writer_set_f32(w, KEY("rope.freq_base"), sp->freq_base);
    if (sp->rope_linear > 0) {
        gguf_writer_set_str(w, KEY("rope.scaling.type"), "linear", 6);
        gguf_writer_set_f32(w, KEY("rope.scaling.factor"), sp->rope_linear);
    }
#undef KEY
    for (int i = 0; i < nt; i++) {
        if (sp->omit && !strcmp(sp->omit, ts[i].name))
            continue;
        int64_t ne[2] = {ts[i].ne0, ts[i].ne1};
        if (sp->bad_shape && !strcmp(sp->bad_shape, ts[i].name))
            ne[1]++;
        gguf_writer_add_tensor(w, ts[i].name, ts[i].type, ne[1] == 1 ? 1 : 2, ne);
    }
    int rc = 0;
    if (gguf_writer_begin(w, &e)) {
        fprintf(stderr, "tm_write begin: %s\n", e.msg);
        rc = -1;
    }
    for (int i = 0; i < nt && !rc; i++) {
        if (sp->omit && !strcmp(sp->omit, ts[i].name))
            continue;
        int64_t ne1 = ts[i].ne1 + (sp->bad_shape && !strcmp(sp->bad_shape, ts[i].name));
        size_t rb = dtype_row_size(ts[i].type, ts[i].ne0);
        float *x = malloc((size_t)(ts[i].ne0 * ne1) * sizeof(float));
        uint8_t *d = malloc(rb * (size_t)ne1);
        tm_values(ts[i].name, sp->seed, ts[i].kind, ts[i].ne0, ts[i].ne0 * ne1, x);
        for (int64_t r = 0; r < ne1; r++)
            if (!quantize_row(ts[i].type, x + r * ts[i].ne0, d + r * rb, ts[i].ne0)) {
                fprintf(stderr, "tm_write: no quantizer for %s\n", dtype_name(ts[i].type));
                rc = -1;
                break;
            }
        if (!rc && gguf_writer_write_tensor(w, d, rb * (size_t)ne1, &e)) {
            fprintf(stderr, "tm_write %s: %s\n", ts[i].name, e.msg);
            rc = -1;
        }
        free(x);
        free(d);
    }
    if (gguf_writer_close(w, &e)) {
        fprintf(stderr, "tm_write close: %s\n", e.msg);
        rc = -1;
    }
    return rc;
}

/* ---- naive reference forward (one sequence, positions 0..n-1) ----------- */

static inline float *tm_load(const gguf_file *f, const char *name)
{
    const gguf_tensor_info *t = gguf_tensor_find(f, name);
    if (!t)
        return NULL;
    int64_t ne0 = t->ne[0], ne1 = t->n_elements / ne0;
    size_t rb = dtype_row_size(t->type, ne0);
    float *x = malloc((size_t)t->n_elements * sizeof(float));
    for (int64_t r = 0; r < ne1; r++)
        dequantize_row(t->type, (const uint8_t *)t->data + r * rb, x + r * ne0, ne0);
    return x;
}

/* y[rows] = W (rows x cols) x[cols], double accumulation */
static inline void tm_mv(float *y, const float *W, const float *x, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t c = 0; c < cols; c++)
            s += (double)W[r * cols + c] * x[c];
        y[r] = (float)s;
    }
}

static inline void tm_rmsnorm(float *y, const float *x, const float *g, int64_t n, float eps)
{
    double ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)(x[i] * r * g[i]);
}

/* rotate one head vector; neox pairs (i, i + d/2), else (2i, 2i+1) */
static inline void tm_rope(float *v, int hd, int pos, bool neox, double base, double fscale,
                    const float *ff)
{
    for (int i = 0; i < hd / 2; i++) {
        double inv_freq = 1.0 / pow(base, (2.0 * i) / hd);
        double ang = pos * fscale * inv_freq / (ff ? ff[i] : 1.0);
        int a = neox ? i : 2 * i, b = neox ? i + hd / 2 : 2 * i + 1;
        double x0 = v[a], x1 = v[b];
        v[a] = (float)(x0 * cos(ang) - x1 * sin(ang));
        v[b] = (float)(x0 * sin(ang) + x1 * cos(ang));
    }
}

/* logits (n x n_vocab) for tokens[0..n) at positions 0..n-1. */
static inline int tm_reference(const char *path, const tm_spec *sp, const int32_t *tokens, int n,
                        float *logits)
{
    cv_err e = {0};
    gguf_file *f;
    if (gguf_open(path, &f, &e)) {
        fprintf(stderr, "tm_reference: %s\n", e.msg);
        return -1;
    }
    bool qwen = !strcmp(sp->arch, "qwen2");
    int E = sp->n_embd, H = sp->n_head, HK = sp->n_head_kv, hd = E / H, F = sp->n_ff;
    int V = sp->n_vocab;
    double base = sp->freq_base > 0 ? sp->freq_base : qwen ? 1e6 : 1e4;
    double fscale = sp->rope_linear > 0 ? 1.0 / sp->rope_linear : 1.0;
    float *emb = tm_load(f, "token_embd.weight");
    float *out_w = sp->tied ? emb : tm_load(f, "output.weight");
    float *out_norm = tm_load(f, "output_norm.weight");
    float *ff = sp->rope_freqs ? tm_load(f, "rope_freqs.weight") : NULL;
    float *X = malloc(sizeof(float) * n * E);
    for (int t = 0; t < n; t++)
        memcpy(X + t * E, emb + (int64_t)tokens[t] * E, E * sizeof(float));
    float *Kc = malloc(sizeof(float) * n * HK * hd), *Vc = malloc(sizeof(float) * n * HK * hd);
    float *xn = malloc(sizeof(float) * E), *qv = malloc(sizeof(float) * H * hd);
    float *att = malloc(sizeof(float) * H * hd), *tmp = malloc(sizeof(float) * (E > F ? E : F));
    float *g = malloc(sizeof(float) * F), *u = malloc(sizeof(float) * F);
    double *sc = malloc(sizeof(double) * n);
    for (int l = 0; l < sp->n_layer; l++) {
        char nm[64];
#define W(sfx) (snprintf(nm, sizeof nm, "blk.%d." sfx, l), tm_load(f, nm))
        float *an = W("attn_norm.weight"), *wq = W("attn_q.weight"), *wk = W("attn_k.weight");
        float *wv = W("attn_v.weight"), *wo = W("attn_output.weight");
        float *fn = W("ffn_norm.weight"), *wg = W("ffn_gate.weight"), *wu = W("ffn_up.weight");
        float *wd = W("ffn_down.weight");
        float *bq = qwen ? W("attn_q.bias") : NULL, *bk = qwen ? W("attn_k.bias") : NULL;
        float *bv = qwen ? W("attn_v.bias") : NULL;
#undef W
        /* K, V for every position first (causal attention reads 0..t) */
        for (int t = 0; t < n; t++) {
            tm_rmsnorm(xn, X + t * E, an, E, 1e-6f);
            tm_mv(Kc + t * HK * hd, wk, xn, HK * hd, E);
            tm_mv(Vc + t * HK * hd, wv, xn, HK * hd, E);
            for (int i = 0; bk && i < HK * hd; i++) {
                Kc[t * HK * hd + i] += bk[i];
                Vc[t * HK * hd + i] += bv[i];
            }
            for (int h = 0; h < HK; h++)
                tm_rope(Kc + (t * HK + h) * hd, hd, t, qwen, base, fscale, ff);
        }
        for (int t = 0; t < n; t++) {
            tm_rmsnorm(xn, X + t * E, an, E, 1e-6f);
            tm_mv(qv, wq, xn, H * hd, E);
            for (int i = 0; bq && i < H * hd; i++)
                qv[i] += bq[i];
            for (int h = 0; h < H; h++) {
                float *qh = qv + h * hd;
                tm_rope(qh, hd, t, qwen, base, fscale, ff);
                int hk = h / (H / HK);
                double mx = -1e300, z = 0;
                for (int j = 0; j <= t; j++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++)
                        d += (double)qh[i] * Kc[(j * HK + hk) * hd + i];
                    sc[j] = d / sqrt((double)hd);
                    if (sc[j] > mx)
                        mx = sc[j];
                }
                for (int j = 0; j <= t; j++)
                    z += sc[j] = exp(sc[j] - mx);
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int j = 0; j <= t; j++)
                        a += sc[j] * Vc[(j * HK + hk) * hd + i];
                    att[h * hd + i] = (float)(a / z);
                }
            }
            tm_mv(tmp, wo, att, E, H * hd);
            for (int i = 0; i < E; i++)
                X[t * E + i] += tmp[i];
        }
        for (int t = 0; t < n; t++) {
            tm_rmsnorm(xn, X + t * E, fn, E, 1e-6f);
            tm_mv(g, wg, xn, F, E);
            tm_mv(u, wu, xn, F, E);
            for (int i = 0; i < F; i++)
                g[i] = (float)(g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
            tm_mv(tmp, wd, g, E, F);
            for (int i = 0; i < E; i++)
                X[t * E + i] += tmp[i];
        }
        free(an), free(wq), free(wk), free(wv), free(wo), free(fn), free(wg), free(wu), free(wd);
        free(bq), free(bk), free(bv);
    }
    for (int t = 0; t < n; t++) {
        tm_rmsnorm(xn, X + t * E, out_norm, E, 1e-6f);
        tm_mv(logits + (int64_t)t * V, out_w, xn, V, E);
    }
    if (out_w != emb)
        free(out_w);
    free(emb), free(out_norm), free(ff), free(X), free(Kc), free(Vc), free(xn), free(qv);
    free(att), free(tmp), free(g), free(u), free(sc);
    gguf_close(f);
    return 0;
}

/* max |a - b| / max |b| over one row */
static inline double tm_rel_diff(const float *a, const float *b, int64_t n)
{
    double amax = 0, dmax = 0;
    for (int64_t i = 0; i < n; i++) {
        amax = fmax(amax, fabs(b[i]));
        dmax = fmax(dmax, fabs((double)a[i] - b[i]));
    }
    return amax > 0 ? dmax / amax : dmax;
}
