/* test_engine_ops.c - the CPU backend's non-matmul ops: the scalar level
 * against naive double-precision references written here, and every wider
 * level the CPU has (AVX2 attention and SwiGLU) against the scalar level,
 * on seeded random data: attention over F32 and F16 KV caches with several
 * slots, head sizes 8..128 (odd multiples of 8 and a size that is not),
 * GQA ratios 1/4/8, prefill rows and single decode rows; and the wider
 * level's tiled prefill path (several tokens of a run per work item)
 * bit-identical to its per-token path. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "kernels/backend.h"
#include "kernels/cpu/matmul.h"
#include "testutil.h"

static double max_rel(const float *a, const float *b, int64_t n)
{
    double amax = 0, d = 0;
    for (int64_t i = 0; i < n; i++) {
        amax = fmax(amax, fabs(b[i]));
        d = fmax(d, fabs((double)a[i] - b[i]));
    }
    return amax > 0 ? d / amax : d;
}

/* naive attention of token t (after its K/V are in the cache) */
static void ref_attention(float *out, const float *q, const be_kv_layer *kv, int32_t slot,
                          int32_t pos, int n_head, int n_head_kv, int hd, float scale)
{
    double *s = malloc(sizeof(double) * (pos + 1));
    for (int h = 0; h < n_head; h++) {
        int hk = h / (n_head / n_head_kv);
        double mx = -1e300, z = 0;
        for (int j = 0; j <= pos; j++) {
            double d = 0;
            for (int i = 0; i < hd; i++) {
                int64_t idx = ((int64_t)slot * kv->n_ctx + j) * kv->kv_dim + hk * hd + i;
                float kval = kv->type == DT_F16 ? fp16_to_f32(((uint16_t *)kv->k)[idx])
                                                : ((float *)kv->k)[idx];
                d += (double)q[h * hd + i] * kval;
            }
            s[j] = d * scale;
            mx = fmax(mx, s[j]);
        }
        for (int j = 0; j <= pos; j++)
            z += s[j] = exp(s[j] - mx);
        for (int i = 0; i < hd; i++) {
            double a = 0;
            for (int j = 0; j <= pos; j++) {
                int64_t idx = ((int64_t)slot * kv->n_ctx + j) * kv->kv_dim + hk * hd + i;
                float vval = kv->type == DT_F16 ? fp16_to_f32(((uint16_t *)kv->v)[idx])
                                                : ((float *)kv->v)[idx];
                a += s[j] * vval;
            }
            out[h * hd + i] = (float)(a / z);
        }
    }
    free(s);
}

typedef struct att_case {
    int n_head, n_head_kv, hd, kv_type;
} att_case;

/* Two sequences: slot 1 prefills 37 positions then decodes to 300; slot 0
 * holds 150 positions; the last call mixes a decode row of each. */
static void run_attention(backend *be, const att_case *ac, float *outs[3], int which)
{
    int H = ac->n_head, HK = ac->n_head_kv, hd = ac->hd;
    int64_t n_ctx = 320, kvd = (int64_t)HK * hd;
    size_t elt = ac->kv_type == DT_F16 ? 2 : 4;
    be_kv_layer kv = {.type = ac->kv_type, .n_slots = 2, .n_ctx = n_ctx, .kv_dim = kvd};
    kv.k = calloc((size_t)(2 * n_ctx * kvd), elt);
    kv.v = calloc((size_t)(2 * n_ctx * kvd), elt);
    uint64_t rs = 1234 + hd;
    int max_tok = 300;
    float *q = malloc(sizeof(float) * max_tok * H * hd), *k = malloc(sizeof(float) * max_tok * kvd);
    float *v = malloc(sizeof(float) * max_tok * kvd), *o = malloc(sizeof(float) * max_tok * H * hd);
    int32_t *pos = malloc(4 * max_tok), *slot = malloc(4 * max_tok);
    /* fill: slot 0 positions 0..149, slot 1 positions 0..298, in one call */
    int n = 0;
    for (int s = 0; s < 2; s++)
        for (int p = 0; p < (s ? 149 : 150); p++, n++) {
            pos[n] = p;
            slot[n] = s;
        }
    for (int64_t i = 0; i < (int64_t)n * kvd; i++) {
        k[i] = 2 * tu_rand_f(&rs);
        v[i] = tu_rand_f(&rs);
    }
    for (int64_t i = 0; i < (int64_t)n * H * hd; i++)
        q[i] = tu_rand_f(&rs);
    be->ops->attention(be, o, q, k, v, &kv, slot, pos, n, H, HK, hd, 1.0f / sqrtf((float)hd));
    memcpy(outs[0], o, sizeof(float) * n * H * hd);
    /* a decode row in each slot */
    pos[0] = 150, slot[0] = 0, pos[1] = 149, slot[1] = 1;
    for (int64_t i = 0; i < 2 * kvd; i++) {
        k[i] = 2 * tu_rand_f(&rs);
        v[i] = tu_rand_f(&rs);
    }
    for (int64_t i = 0; i < 2 * H * hd; i++)
        q[i] = tu_rand_f(&rs);
    be->ops->attention(be, o, q, k, v, &kv, slot, pos, 2, H, HK, hd, 1.0f / sqrtf((float)hd));
    memcpy(outs[1], o, sizeof(float) * 2 * H * hd);
    if (which == 0) { /* scalar: against the naive reference for the decode rows */
        for (int t = 0; t < 2; t++)
            ref_attention(outs[2] + t * H * hd, q + t * H * hd, &kv, slot[t], pos[t], H, HK, hd,
                          1.0f / sqrtf((float)hd));
    }
    free(kv.k), free(kv.v), free(q), free(k), free(v), free(o), free(pos), free(slot);
}

/* A batch of runs of consecutive positions (three sequences interleaved;
 * slot 1's run continues a prompt from position 70; run lengths that are not
 * multiples of a tile; a lone token) goes through the tiled path, several
 * tokens per work item; the same batch reversed has no two neighbours at
 * consecutive positions, so each token is its own item (the per-token
 * path). The two must give the same bits; the tiled one is also checked
 * against the scalar level. */
static int check_tiled(backend *wide, backend *sc, const att_case *ac)
{
    static const int seg[][3] = {{0, 0, 21}, {1, 70, 23}, {2, 0, 3}, {0, 21, 19}, {1, 93, 1}};
    int H = ac->n_head, HK = ac->n_head_kv, hd = ac->hd, n = 0;
    int64_t n_ctx = 128, kvd = (int64_t)HK * hd, qd = (int64_t)H * hd;
    size_t elt = ac->kv_type == DT_F16 ? 2 : 4;
    be_kv_layer kv = {.type = ac->kv_type, .n_slots = 3, .n_ctx = n_ctx, .kv_dim = kvd};
    kv.k = calloc((size_t)(3 * n_ctx * kvd), elt);
    kv.v = calloc((size_t)(3 * n_ctx * kvd), elt);
    int max_tok = 80;
    float *q = malloc(sizeof(float) * max_tok * qd), *k = malloc(sizeof(float) * max_tok * kvd);
    float *v = malloc(sizeof(float) * max_tok * kvd), *o = malloc(sizeof(float) * max_tok * qd);
    float *q2 = malloc(sizeof(float) * max_tok * qd), *k2 = malloc(sizeof(float) * max_tok * kvd);
    float *v2 = malloc(sizeof(float) * max_tok * kvd), *o2 = malloc(sizeof(float) * max_tok * qd);
    float *o3 = malloc(sizeof(float) * max_tok * qd);
    int32_t pos[80], slot[80], pos2[80], slot2[80];
    uint64_t rs = 99 + hd + H;
    /* slot 1's first 70 positions, from an earlier call */
    for (int p = 0; p < 70; p++)
        pos[p] = p, slot[p] = 1;
    for (int64_t i = 0; i < 70 * kvd; i++) {
        k[i] = 2 * tu_rand_f(&rs);
        v[i] = tu_rand_f(&rs);
    }
    for (int64_t i = 0; i < 70 * qd; i++)
        q[i] = tu_rand_f(&rs);
    wide->ops->attention(wide, o, q, k, v, &kv, slot, pos, 70, H, HK, hd, 1.0f / sqrtf((float)hd));
    for (size_t s = 0; s < sizeof seg / sizeof seg[0]; s++)
        for (int p = seg[s][1]; p < seg[s][1] + seg[s][2]; p++, n++)
            pos[n] = p, slot[n] = seg[s][0];
    for (int64_t i = 0; i < n * kvd; i++) {
        k[i] = 2 * tu_rand_f(&rs);
        v[i] = tu_rand_f(&rs);
    }
    for (int64_t i = 0; i < n * qd; i++)
        q[i] = tu_rand_f(&rs);
    for (int t = 0; t < n; t++) { /* the reversed batch */
        int r = n - 1 - t;
        pos2[r] = pos[t], slot2[r] = slot[t];
        memcpy(q2 + r * qd, q + t * qd, sizeof(float) * qd);
        memcpy(k2 + r * kvd, k + t * kvd, sizeof(float) * kvd);
        memcpy(v2 + r * kvd, v + t * kvd, sizeof(float) * kvd);
    }
    float scale = 1.0f / sqrtf((float)hd);
    wide->ops->attention(wide, o, q, k, v, &kv, slot, pos, n, H, HK, hd, scale);
    wide->ops->attention(wide, o2, q2, k2, v2, &kv, slot2, pos2, n, H, HK, hd, scale);
    sc->ops->attention(sc, o3, q, k, v, &kv, slot, pos, n, H, HK, hd, scale);
    int differ = 0;
    for (int t = 0; t < n; t++)
        differ += memcmp(o + t * qd, o2 + (n - 1 - t) * qd, sizeof(float) * qd) != 0;
    double r_sc = max_rel(o, o3, n * qd);
    fprintf(stderr, "tiled attention H %d HK %d hd %3d kv %s: %d of %d tokens differ from the "
            "per-token path; vs scalar %.2g\n", H, HK, hd, dtype_name(ac->kv_type), differ, n, r_sc);
    TU_CHECK(differ == 0, "tiled attention differs from the per-token path in %d tokens", differ);
    TU_CHECK(r_sc < 1e-5, "tiled attention vs scalar: %g", r_sc);
    free(kv.k), free(kv.v), free(q), free(k), free(v), free(o), free(q2), free(k2), free(v2);
    free(o2), free(o3);
    return differ;
}

int main(void)
{
    cv_err e = {0};
    backend *sc;
    if (backend_cpu_create(2, "scalar", &sc, &e)) {
        fprintf(stderr, "FAIL %s\n", e.msg);
        return 1;
    }
    cpu_level best = cpu_level_detect();
    backend *wide = NULL;
    if (best > CPU_SCALAR && backend_cpu_create(2, cpu_level_name(best), &wide, &e)) {
        fprintf(stderr, "FAIL %s\n", e.msg);
        return 1;
    }
    fprintf(stderr, "levels: scalar%s%s\n", wide ? " and " : " only (no wider level on this CPU)",
            wide ? wide->ops->name : "");

    att_case cases[] = {
        {8, 8, 8, DT_F32},  {8, 2, 8, DT_F16},  {4, 1, 40, DT_F32}, {8, 1, 64, DT_F16},
        {8, 2, 64, DT_F32}, {4, 4, 72, DT_F32}, {4, 1, 128, DT_F16}, {2, 2, 12, DT_F32},
        {2, 2, 128, DT_F32},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        att_case *ac = &cases[c];
        size_t rows = 300 * (size_t)ac->n_head * ac->hd;
        float *a[3], *b[3];
        for (int i = 0; i < 3; i++) {
            a[i] = calloc(rows, sizeof(float));
            b[i] = calloc(rows, sizeof(float));
        }
        run_attention(sc, ac, a, 0);
        double r_ref = max_rel(a[1], a[2], 2 * ac->n_head * ac->hd);
        double r_pre = 0, r_dec = 0;
        if (wide) {
            run_attention(wide, ac, b, 1);
            r_pre = max_rel(b[0], a[0], 299 * ac->n_head * ac->hd);
            r_dec = max_rel(b[1], a[1], 2 * ac->n_head * ac->hd);
        }
        fprintf(stderr, "attention H %d HK %d hd %3d kv %s: scalar vs naive %.2g; %s vs scalar: "
                "prefill %.2g, decode %.2g\n", ac->n_head, ac->n_head_kv, ac->hd,
                dtype_name(ac->kv_type), r_ref, wide ? wide->ops->name : "-", r_pre, r_dec);
        TU_CHECK(r_ref < 1e-5, "scalar attention vs naive: %g", r_ref);
        TU_CHECK(r_pre < 1e-5 && r_dec < 1e-5, "wide attention vs scalar: %g %g", r_pre, r_dec);
        for (int i = 0; i < 3; i++)
            free(a[i]), free(b[i]);
    }

    if (wide) {
        att_case tiled[] = {
            {4, 4, 64, DT_F16},  {8, 2, 64, DT_F16}, {8, 2, 64, DT_F32}, {4, 4, 128, DT_F32},
            {8, 2, 128, DT_F16}, {8, 2, 72, DT_F16}, {4, 1, 8, DT_F32},  {2, 2, 128, DT_F16},
            {4, 2, 264, DT_F16}, {2, 2, 320, DT_F32}, /* rows too wide to copy: read in place */
        };
        for (size_t c = 0; c < sizeof tiled / sizeof tiled[0]; c++)
            check_tiled(wide, sc, &tiled[c]);
    }

    /* swiglu over an odd length with large magnitudes (exp range) */
    {
        int64_t n = 100003;
        float *g = malloc(n * 4), *u = malloc(n * 4), *y0 = malloc(n * 4), *y1 = malloc(n * 4);
        uint64_t rs = 5;
        for (int64_t i = 0; i < n; i++) {
            g[i] = 40 * tu_rand_f(&rs) * tu_rand_f(&rs) * tu_rand_f(&rs);
            u[i] = 3 * tu_rand_f(&rs);
        }
        g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f, g[3] = -88.5f;
        sc->ops->swiglu(sc, y0, g, u, n);
        double worst = 0, worst_ref = 0;
        for (int64_t i = 0; i < n; i++) {
            double ref = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
            worst_ref = fmax(worst_ref, fabs(y0[i] - ref) / fmax(fabs(ref), 1e-3));
        }
        if (wide) {
            wide->ops->swiglu(wide, y1, g, u, n);
            for (int64_t i = 0; i < n; i++)
                worst = fmax(worst, fabs((double)y1[i] - y0[i]) / fmax(fabs(y0[i]), 1e-3));
        }
        fprintf(stderr, "swiglu: scalar vs double %.2g, wide vs scalar %.2g (relative, floor 1e-3)\n",
                worst_ref, worst);
        TU_CHECK(worst_ref < 1e-5 && worst < 1e-5, "swiglu differs");
        free(g), free(u), free(y0), free(y1);
    }

    /* rmsnorm and rope of every level against double references; rope
     * three times per case: new params (the CPU backend rebuilds its
     * table), the same again (its table reused), then positions moved in
     * the same array (rebuilt: a stale table fails here) */
    for (int lv = 0; lv < 2; lv++) {
        backend *be = lv ? wide : sc;
        if (!be)
            continue;
        double worst = 0;
        for (int64_t n = 95; n <= 96; n++) { /* the 16-wide AVX2 loop and its tail */
            int64_t n_tok = 5;
            float *x = malloc(n_tok * n * 4), *y = malloc(n_tok * n * 4), *gw = malloc(n * 4);
            uint64_t rs = 9;
            for (int64_t i = 0; i < n_tok * n; i++)
                x[i] = 3 * tu_rand_f(&rs);
            for (int64_t i = 0; i < n; i++)
                gw[i] = 1 + 0.5f * tu_rand_f(&rs);
            be_weight g = {.type = DT_F32, .ne0 = n, .ne1 = 1, .row_bytes = n * 4, .data = gw};
            be->ops->rmsnorm(be, y, x, &g, n_tok, n, 1e-5f);
            for (int64_t t = 0; t < n_tok; t++) {
                double ss = 0;
                for (int64_t i = 0; i < n; i++)
                    ss += (double)x[t * n + i] * x[t * n + i];
                double r = 1 / sqrt(ss / n + 1e-5);
                for (int64_t i = 0; i < n; i++)
                    worst = fmax(worst, fabs(y[t * n + i] - x[t * n + i] * r * gw[i]));
            }
            free(x), free(y), free(gw);
        }
        TU_CHECK(worst < 1e-5, "%s rmsnorm differs by %g", be->ops->name, worst);

        /* rope: 2 heads of 16, n_rot 12 (the last 4 dims untouched), both modes */
        int n_tok = 5, hd = 16, nh = 2, n_rot = 12, n_calls = 0;
        int32_t pos[5] = {0, 1, 7, 100, 3000};
        float ff[6] = {1, 1.5f, 2, 4, 8, 16};
        uint64_t rs = 11;
        double wr = 0;
        for (int mode = 0; mode <= 2; mode += 2)
            for (int use_ff = 0; use_ff < 2; use_ff++)
                for (int rep = 0; rep < 3; rep++) {
                    if (rep == 2)
                        pos[2] += 5, pos[4] -= 1000; /* same array, new positions */
                    float *r = malloc(n_tok * nh * hd * 4), *r0 = malloc(n_tok * nh * hd * 4);
                    for (int64_t i = 0; i < n_tok * nh * hd; i++)
                        r0[i] = r[i] = tu_rand_f(&rs);
                    rope_params rp = {.mode = mode, .n_rot = n_rot, .freq_base = 10000.0f,
                                      .freq_scale = 0.5f, .freq_factors = use_ff ? ff : NULL};
                    be->ops->rope(be, r, n_tok, nh, hd, pos, &rp);
                    double w = 0;
                    for (int t = 0; t < n_tok; t++)
                        for (int h = 0; h < nh; h++) {
                            float *a = r + (t * nh + h) * hd, *b = r0 + (t * nh + h) * hd;
                            for (int i = 0; i < n_rot / 2; i++) {
                                double th = pos[t] * 0.5 * pow(10000.0, -2.0 * i / n_rot) /
                                            (use_ff ? ff[i] : 1.0);
                                int i0 = mode == 2 ? i : 2 * i, i1 = mode == 2 ? i + n_rot / 2 : 2 * i + 1;
                                double e0 = b[i0] * cos(th) - b[i1] * sin(th);
                                double e1 = b[i0] * sin(th) + b[i1] * cos(th);
                                w = fmax(w, fmax(fabs(a[i0] - e0), fabs(a[i1] - e1)));
                            }
                            for (int i = n_rot; i < hd; i++)
                                w = fmax(w, fabs(a[i] - b[i]));
                        }
                    TU_CHECK(w < 1e-5, "%s rope mode %d factors %d call %d differs by %g", be->ops->name, mode,
                             use_ff, rep, w);
                    wr = fmax(wr, w), n_calls++;
                    free(r), free(r0);
                }
        fprintf(stderr, "%s: rmsnorm max diff %.2g (n 95, 96); rope max diff %.2g over %d calls (both "
                "modes, with and without factors, repeated and moved positions)\n",
                be->ops->name, worst, wr, n_calls);
    }
    backend_destroy(sc);
    backend_destroy(wide);
    return tu_finish("test_engine_ops");
}
