/* test_cuda_ops.c - every op of the CUDA backend against the CPU scalar
 * backend (the oracle), on random non-zero inputs: matmul for every weight
 * type at n_tok 1, 2, 7, 8, 64, 300 (matrix-vector and GEMM paths, odd row
 * counts, a strided source, a misaligned activation pointer), embed for
 * every type, rmsnorm, rope (normal/neox, partial rotation, freq factors,
 * freq_scale), attention over F32 and F16 KV caches (mixed prefill/decode
 * batch over several slots, GQA), swiglu, add (aliased), add_bias,
 * get_rows, scale. Outputs are poisoned with NaN first, so an element the
 * kernel did not write fails. Prints one line per check (relative error
 * ||gpu - ref|| / ||ref|| and the largest element error) and exits non-zero
 * on any failure. Needs a GPU: run by tests/gpu/run.sh, not by ctest. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "kernels/backend.h"
#include "kernels/cuda/backend_cuda.h"
#include "testutil.h"

static backend *cpu, *gpu;
static uint64_t rng = 0x243F6A8885A308D3ull;
static int n_checks;
static bool quick; /* --quick: fewer shapes (for compute-sanitizer runs) */
static int mmv_var = 2; /* CARAVAN_CUDA_MMV: the matrix-vector variant under test (v2 default) */

/* ---- helpers ------------------------------------------------------------ */

static float *rnd(int64_t n, float scale)
{
    float *p = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        float v = tu_rand_f(&rng) * scale;
        p[i] = v == 0.0f ? scale * 0.5f : v;
    }
    return p;
}

/* device copy of host floats (or ints) */
static void *g_up(const void *h, size_t n_bytes)
{
    void *d = gpu->ops->alloc(gpu, n_bytes);
    if (!d) {
        fprintf(stderr, "FATAL: device alloc of %zu bytes failed\n", n_bytes);
        exit(2);
    }
    gpu->ops->from_host(gpu, d, h, n_bytes);
    return d;
}

/* device buffer of n floats filled with NaN */
static float *g_poison(int64_t n)
{
    float *h = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        h[i] = NAN;
    float *d = g_up(h, (size_t)n * sizeof(float));
    free(h);
    return d;
}

static float *g_down(const float *d, int64_t n)
{
    float *h = malloc((size_t)n * sizeof(float));
    gpu->ops->to_host(gpu, h, d, (size_t)n * sizeof(float));
    return h;
}

static void g_free(void *d) { gpu->ops->free(gpu, d); }

/* Compare and print; returns true when within tol. */
static bool check(const char *what, const float *got, const float *ref, int64_t n, double tol)
{
    double num = 0, den = 0, maxd = 0;
    int64_t bad = 0, first_bad = -1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i])) {
            if (bad++ == 0)
                first_bad = i;
            continue;
        }
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
        if (fabs(d) > maxd)
            maxd = fabs(d);
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    bool ok = bad == 0 && rel <= tol;
    n_checks++;
    printf("%s %-44s n=%-8lld rel=%.2e max_abs=%.2e tol=%.0e%s\n", ok ? "ok  " : "FAIL", what,
           (long long)n, rel, maxd, tol, bad ? "" : "");
    if (bad)
        printf("     %lld non-finite element(s), first at %lld: got %g ref %g\n", (long long)bad,
               (long long)first_bad, got[first_bad], ref[first_bad]);
    if (!ok)
        tu_failures++;
    fflush(stdout);
    return ok;
}

static void die_if(cv_status st, cv_err *e, const char *what)
{
    if (st) {
        fprintf(stderr, "FATAL: %s: %s\n", what, e->msg);
        exit(2);
    }
}

static void gpu_status(const char *what)
{
    cv_err e = {0};
    if (backend_cuda_status(gpu, &e)) {
        fprintf(stderr, "FATAL after %s: %s\n", what, e.msg);
        exit(2);
    }
}

/* a quantized random matrix: rows at stride rb + pad in one host block */
typedef struct qmat {
    int type;
    int64_t ne0, ne1;
    size_t rb, stride;
    uint8_t *data;
} qmat;

static qmat qmat_make(int type, int64_t ne0, int64_t ne1, size_t pad)
{
    qmat m = {type, ne0, ne1, dtype_row_size(type, ne0), 0, NULL};
    m.stride = m.rb + pad;
    m.data = calloc((size_t)ne1, m.stride);
    float *row = malloc((size_t)ne0 * sizeof(float));
    for (int64_t r = 0; r < ne1; r++) {
        for (int64_t i = 0; i < ne0; i++)
            row[i] = tu_rand_f(&rng) * (1.0f + (float)(r % 7)) * 0.5f;
        if (!quantize_row(type, row, m.data + (size_t)r * m.stride, ne0)) {
            fprintf(stderr, "FATAL: quantize_row(%s) failed\n", dtype_name(type));
            exit(2);
        }
    }
    free(row);
    return m;
}

static void upload_both(const qmat *m, be_weight *wc, be_weight *wg)
{
    cv_err e = {0};
    die_if(cpu->ops->weight_upload(cpu, wc, m->type, m->ne0, m->ne1, m->data, m->stride, true, &e),
           &e, "cpu weight_upload");
    die_if(gpu->ops->weight_upload(gpu, wg, m->type, m->ne0, m->ne1, m->data, m->stride, false, &e),
           &e, "cuda weight_upload");
}

/* ---- matmul + embed --------------------------------------------------------- */

static double matmul_tol(int type, int64_t n_tok)
{
    bool fl = type == DT_F32 || type == DT_F16 || type == DT_BF16;
    if (n_tok <= 8) /* v2: int8 activations (blocks of 32, as the CPU SIMD paths) */
        return mmv_var == 2 && !fl ? 2e-2 : 2e-5; /* else f32 arithmetic, another order */
    if (type == DT_F32)
        return 2e-5;
    if (type == DT_BF16)
        return 1.5e-2; /* bf16 activations on the tensor cores */
    return 4e-3;       /* f16 activations (and f16-rounded weights) */
}

static void test_matmul_type(int type, int64_t ne0, int64_t ne1)
{
    static const int64_t toks[] = {1, 2, 7, 8, 64, 300}, toks_quick[] = {1, 7, 64};
    const int64_t *tk = quick ? toks_quick : toks;
    size_t n_tk = quick ? 3 : 6;
    qmat m = qmat_make(type, ne0, ne1, 48);
    be_weight wc, wg;
    upload_both(&m, &wc, &wg);
    for (size_t k = 0; k < n_tk; k++) {
        int64_t nt = tk[k];
        float *x = rnd(nt * ne0, 1.0f);
        float *yc = malloc((size_t)(nt * ne1) * sizeof(float));
        cpu->ops->matmul(cpu, yc, &wc, x, nt);
        float *xd = g_up(x, (size_t)(nt * ne0) * sizeof(float));
        float *yd = g_poison(nt * ne1);
        gpu->ops->matmul(gpu, yd, &wg, xd, nt);
        float *yg = g_down(yd, nt * ne1);
        char what[96];
        snprintf(what, sizeof what, "matmul %s %lldx%lld n_tok=%lld", dtype_name(type),
                 (long long)ne1, (long long)ne0, (long long)nt);
        gpu_status(what);
        check(what, yg, yc, nt * ne1, matmul_tol(type, nt));
        free(yg);
        g_free(yd);
        g_free(xd);
        free(yc);
        free(x);
    }
    /* activation pointer not 16-byte aligned: the scalar-load path */
    {
        float *x = rnd(ne0 + 1, 1.0f);
        float *yc = malloc((size_t)ne1 * sizeof(float));
        cpu->ops->matmul(cpu, yc, &wc, x + 1, 1);
        float *xd = g_up(x, (size_t)(ne0 + 1) * sizeof(float));
        float *yd = g_poison(ne1);
        gpu->ops->matmul(gpu, yd, &wg, xd + 1, 1);
        float *yg = g_down(yd, ne1);
        char what[96];
        snprintf(what, sizeof what, "matmul %s %lldx%lld misaligned x", dtype_name(type),
                 (long long)ne1, (long long)ne0);
        check(what, yg, yc, ne1, matmul_tol(type, 1));
        free(yg);
        g_free(yd);
        g_free(xd);
        free(yc);
        free(x);
    }
    /* embed: rows of the matrix, against dequantize_row */
    {
        int64_t nt = 9;
        int32_t tok[9];
        for (int i = 0; i < 9; i++)
            tok[i] = (int32_t)(tu_rand_u64(&rng) % (uint64_t)ne1);
        tok[0] = (int32_t)(ne1 - 1);
        float *ref = malloc((size_t)(nt * ne0) * sizeof(float));
        for (int64_t t = 0; t < nt; t++)
            dequantize_row(type, m.data + (size_t)tok[t] * m.stride, ref + t * ne0, ne0);
        int32_t *td = g_up(tok, sizeof tok);
        float *yd = g_poison(nt * ne0);
        gpu->ops->embed(gpu, yd, &wg, td, nt);
        float *yg = g_down(yd, nt * ne0);
        char what[96];
        snprintf(what, sizeof what, "embed %s %lldx%lld", dtype_name(type), (long long)ne1,
                 (long long)ne0);
        gpu_status(what);
        check(what, yg, ref, nt * ne0, 1e-6);
        free(yg);
        g_free(yd);
        g_free(td);
        free(ref);
    }
    cpu->ops->weight_free(cpu, &wc);
    gpu->ops->weight_free(gpu, &wg);
    free(m.data);
}

/* v2 keeps the quantized activations for the next matmul on the same x:
 * two weights on one x back to back (the second reuses them), then x changed
 * by an op (scale in place) and by from_host, each followed by the pair again,
 * whose first matmul must see the new x. */
static void test_xq_reuse(int type, int64_t ne0, int64_t ne1, int64_t nt)
{
    qmat m1 = qmat_make(type, ne0, ne1, 48), m2 = qmat_make(type, ne0, ne1, 48);
    be_weight c1, g1, c2, g2;
    upload_both(&m1, &c1, &g1);
    upload_both(&m2, &c2, &g2);
    float *x = rnd(nt * ne0, 1.0f), *x2 = rnd(nt * ne0, 1.0f);
    float *yc = malloc((size_t)(nt * ne1) * sizeof(float));
    float *xd = g_up(x, (size_t)(nt * ne0) * sizeof(float));
    float *yd1 = g_poison(nt * ne1), *yd2 = g_poison(nt * ne1);
    const char *steps[] = {"", " after scale(x) in place", " after from_host(x)"};
    for (int k = 0; k < 3; k++) {
        if (k == 1) {
            gpu->ops->scale(gpu, xd, xd, -2.0f, nt * ne0);
            for (int64_t i = 0; i < nt * ne0; i++)
                x[i] *= -2.0f;
        }
        if (k == 2) {
            gpu->ops->from_host(gpu, xd, x2, (size_t)(nt * ne0) * sizeof(float));
            memcpy(x, x2, (size_t)(nt * ne0) * sizeof(float));
        }
        gpu->ops->matmul(gpu, yd1, &g1, xd, nt);
        gpu->ops->matmul(gpu, yd2, &g2, xd, nt);
        for (int j = 0; j < 2; j++) {
            cpu->ops->matmul(cpu, yc, j ? &c2 : &c1, x, nt);
            float *yg = g_down(j ? yd2 : yd1, nt * ne1);
            char what[128];
            snprintf(what, sizeof what, "matmul %s %lldx%lld n_tok=%lld %s%s", dtype_name(type),
                     (long long)ne1, (long long)ne0, (long long)nt, j ? "W2 (same x)" : "W1",
                     steps[k]);
            gpu_status(what);
            check(what, yg, yc, nt * ne1, matmul_tol(type, nt));
            free(yg);
        }
    }
    g_free(yd1), g_free(yd2), g_free(xd), free(yc), free(x), free(x2);
    cpu->ops->weight_free(cpu, &c1), cpu->ops->weight_free(cpu, &c2);
    gpu->ops->weight_free(gpu, &g1), gpu->ops->weight_free(gpu, &g2);
    free(m1.data), free(m2.data);
}

/* A decode step's pattern (one token unless n_tok says more): a residual
 * add and the rmsnorm of its result (v2 fuse: one kernel), three matmuls on
 * its output (one grouped launch on the quantized output the rmsnorm
 * wrote), rope of two of them with the same positions (one launch), swiglu
 * of those two, then a matmul on the swiglu output (quantized by swiglu for
 * one token). Nothing is downloaded until the end. */
static void test_chain(int type, int64_t n, int64_t n_ff, int64_t nt)
{
    qmat mq = qmat_make(type, n, n_ff, 48), mk = qmat_make(type, n, n_ff, 48),
         mv = qmat_make(type, n, 67, 48), md = qmat_make(type, n_ff, n, 48);
    be_weight cq, gq, ck, gk, cv, gv, cd, gd, gc, gg;
    upload_both(&mq, &cq, &gq);
    upload_both(&mk, &ck, &gk);
    upload_both(&mv, &cv, &gv);
    upload_both(&md, &cd, &gd);
    float *x = rnd(nt * n, 2.0f), *g = rnd(n, 1.0f), *res = rnd(nt * n, 1.0f);
    int32_t pos[8] = {3, 17, 0, 250, 9, 1, 77, 5};
    rope_params rp = {ROPE_NORMAL, 64, 10000.0f, 1.0f, NULL};
    const int hd = 64, nh = (int)(n_ff / 64);
    cv_err e = {0};
    die_if(cpu->ops->weight_upload(cpu, &gc, DT_F32, n, 1, g, n * 4, true, &e), &e, "upload g");
    die_if(gpu->ops->weight_upload(gpu, &gg, DT_F32, n, 1, g, n * 4, false, &e), &e, "upload g");
    /* cpu chain */
    float *xn = malloc((size_t)(nt * n) * 4), *a = malloc((size_t)(nt * n_ff) * 4),
          *b = malloc((size_t)(nt * n_ff) * 4), *c = malloc((size_t)(nt * 67) * 4),
          *o = malloc((size_t)(nt * n) * 4);
    float *xd = g_up(x, (size_t)(nt * n) * 4), *resd = g_up(res, (size_t)(nt * n) * 4);
    int32_t *posd = g_up(pos, sizeof pos);
    cpu->ops->add(cpu, x, x, res, nt * n);
    cpu->ops->rmsnorm(cpu, xn, x, &gc, nt, n, 1e-5f);
    cpu->ops->matmul(cpu, a, &cq, xn, nt);
    cpu->ops->matmul(cpu, b, &ck, xn, nt);
    cpu->ops->matmul(cpu, c, &cv, xn, nt);
    float *cref = malloc((size_t)(nt * 67) * 4);
    memcpy(cref, c, (size_t)(nt * 67) * 4);
    cpu->ops->rope(cpu, a, nt, nh, hd, pos, &rp);
    cpu->ops->rope(cpu, b, nt, nh, hd, pos, &rp);
    float *bref = malloc((size_t)(nt * n_ff) * 4);
    memcpy(bref, b, (size_t)(nt * n_ff) * 4);
    cpu->ops->swiglu(cpu, a, a, b, nt * n_ff);
    cpu->ops->matmul(cpu, o, &cd, a, nt);
    /* gpu chain, no download in between */
    float *xnd = g_poison(nt * n), *ad = g_poison(nt * n_ff),
          *bd = g_poison(nt * n_ff), *cd_ = g_poison(nt * 67), *od = g_poison(nt * n);
    gpu->ops->add(gpu, xd, xd, resd, nt * n);
    gpu->ops->rmsnorm(gpu, xnd, xd, &gg, nt, n, 1e-5f);
    gpu->ops->matmul(gpu, ad, &gq, xnd, nt);
    gpu->ops->matmul(gpu, bd, &gk, xnd, nt);
    gpu->ops->matmul(gpu, cd_, &gv, xnd, nt);
    rope_params rpg = rp;
    gpu->ops->rope(gpu, ad, nt, nh, hd, posd, &rpg);
    gpu->ops->rope(gpu, bd, nt, nh, hd, posd, &rpg);
    gpu->ops->swiglu(gpu, ad, ad, bd, nt * n_ff);
    gpu->ops->matmul(gpu, od, &gd, ad, nt);
    float *cg = g_down(cd_, nt * 67), *og = g_down(od, nt * n), *xg = g_down(xd, nt * n),
          *bg = g_down(bd, nt * n_ff);
    char what[128];
    snprintf(what, sizeof what, "chain %s n=%lld n_tok=%lld: residual add", dtype_name(type),
             (long long)n, (long long)nt);
    check(what, xg, x, nt * n, 1e-7);
    snprintf(what, sizeof what, "chain %s n=%lld n_tok=%lld: second matmul, roped",
             dtype_name(type), (long long)n, (long long)nt);
    check(what, bg, bref, nt * n_ff, matmul_tol(type, nt));
    snprintf(what, sizeof what, "chain %s n=%lld n_ff=%lld n_tok=%lld: third matmul", dtype_name(type),
             (long long)n, (long long)n_ff, (long long)nt);
    gpu_status(what);
    check(what, cg, cref, nt * 67, matmul_tol(type, nt));
    snprintf(what, sizeof what, "chain %s n=%lld n_ff=%lld n_tok=%lld: matmul of swiglu",
             dtype_name(type), (long long)n, (long long)n_ff, (long long)nt);
    /* two quantized products in a row: twice the single-matmul tolerance */
    check(what, og, o, nt * n, 2 * matmul_tol(type, nt));
    free(cg), free(og), free(cref), free(xg), free(bg), free(bref), free(res);
    g_free(resd), g_free(posd);
    g_free(xd), g_free(xnd), g_free(ad), g_free(bd), g_free(cd_), g_free(od);
    free(x), free(g), free(xn), free(a), free(b), free(c), free(o);
    be_weight *ws[] = {&cq, &ck, &cv, &cd, &gc};
    be_weight *wgs[] = {&gq, &gk, &gv, &gd, &gg};
    for (int i = 0; i < 5; i++) {
        cpu->ops->weight_free(cpu, ws[i]);
        gpu->ops->weight_free(gpu, wgs[i]);
    }
    free(mq.data), free(mk.data), free(mv.data), free(md.data);
}

/* ---- element-wise ops, norms, rope ------------------------------------------- */

static void test_rmsnorm(int64_t n_tok, int64_t n)
{
    float *x = rnd(n_tok * n, 2.0f), *g = rnd(n, 1.0f);
    be_weight gc, gg;
    cv_err e = {0};
    die_if(cpu->ops->weight_upload(cpu, &gc, DT_F32, n, 1, g, n * 4, true, &e), &e, "upload g");
    die_if(gpu->ops->weight_upload(gpu, &gg, DT_F32, n, 1, g, n * 4, false, &e), &e, "upload g");
    float *yc = malloc((size_t)(n_tok * n) * sizeof(float));
    cpu->ops->rmsnorm(cpu, yc, x, &gc, n_tok, n, 1e-5f);
    float *xd = g_up(x, (size_t)(n_tok * n) * 4), *yd = g_poison(n_tok * n);
    gpu->ops->rmsnorm(gpu, yd, xd, &gg, n_tok, n, 1e-5f);
    float *yg = g_down(yd, n_tok * n);
    char what[64];
    snprintf(what, sizeof what, "rmsnorm %lldx%lld", (long long)n_tok, (long long)n);
    check(what, yg, yc, n_tok * n, 1e-5);
    free(yg), g_free(yd), g_free(xd), free(yc), free(x), free(g);
    cpu->ops->weight_free(cpu, &gc);
    gpu->ops->weight_free(gpu, &gg);
}

static void test_rope(int mode, int n_head, int head_dim, int n_rot, float fscale, bool factors)
{
    int64_t n_tok = 7, n = n_tok * n_head * head_dim;
    float *x = rnd(n, 1.0f);
    int32_t pos[7] = {0, 1, 5, 17, 300, 2047, 4000};
    float *ff = NULL, *ffd = NULL;
    if (factors) {
        ff = malloc((size_t)(n_rot / 2) * sizeof(float));
        for (int i = 0; i < n_rot / 2; i++)
            ff[i] = 1.0f + (float)i * 0.25f;
        ffd = g_up(ff, (size_t)(n_rot / 2) * sizeof(float));
    }
    rope_params rc = {mode, n_rot, 10000.0f, fscale, ff}, rg = {mode, n_rot, 10000.0f, fscale, ffd};
    float *yc = malloc((size_t)n * sizeof(float));
    memcpy(yc, x, (size_t)n * sizeof(float));
    cpu->ops->rope(cpu, yc, n_tok, n_head, head_dim, pos, &rc);
    float *xd = g_up(x, (size_t)n * 4);
    int32_t *pd = g_up(pos, sizeof pos);
    gpu->ops->rope(gpu, xd, n_tok, n_head, head_dim, pd, &rg);
    float *yg = g_down(xd, n);
    char what[96];
    snprintf(what, sizeof what, "rope %s heads=%d hd=%d rot=%d scale=%g%s",
             mode == ROPE_NEOX ? "neox" : "normal", n_head, head_dim, n_rot, fscale,
             factors ? " factors" : "");
    check(what, yg, yc, n, 1e-5);
    free(yg), g_free(xd), g_free(pd), free(yc), free(x), free(ff);
    if (ffd)
        g_free(ffd);
}

static void test_elementwise(void)
{
    int64_t n = 100003;
    float *a = rnd(n, 4.0f), *b = rnd(n, 4.0f);
    float *ad = g_up(a, n * 4), *bd = g_up(b, n * 4);
    float *yc = malloc(n * 4);
    /* swiglu */
    cpu->ops->swiglu(cpu, yc, a, b, n);
    float *yd = g_poison(n);
    gpu->ops->swiglu(gpu, yd, ad, bd, n);
    float *yg = g_down(yd, n);
    check("swiglu", yg, yc, n, 1e-6);
    free(yg);
    /* scale */
    cpu->ops->scale(cpu, yc, a, 0.37f, n);
    g_free(yd);
    yd = g_poison(n);
    gpu->ops->scale(gpu, yd, ad, 0.37f, n);
    yg = g_down(yd, n);
    check("scale", yg, yc, n, 1e-7);
    free(yg);
    /* add, y aliasing a */
    float *ac = malloc(n * 4);
    memcpy(ac, a, n * 4);
    cpu->ops->add(cpu, ac, ac, b, n);
    gpu->ops->add(gpu, ad, ad, bd, n);
    yg = g_down(ad, n);
    check("add (y aliases a)", yg, ac, n, 1e-7);
    free(yg), free(ac);
    /* add_bias */
    int64_t nt = 7, nc = 301;
    float *y0 = rnd(nt * nc, 1.0f), *bias = rnd(nc, 1.0f);
    be_weight bc, bg;
    cv_err e = {0};
    die_if(cpu->ops->weight_upload(cpu, &bc, DT_F32, nc, 1, bias, nc * 4, true, &e), &e, "bias");
    die_if(gpu->ops->weight_upload(gpu, &bg, DT_F32, nc, 1, bias, nc * 4, false, &e), &e, "bias");
    float *y0d = g_up(y0, nt * nc * 4);
    cpu->ops->add_bias(cpu, y0, &bc, nt, nc);
    gpu->ops->add_bias(gpu, y0d, &bg, nt, nc);
    yg = g_down(y0d, nt * nc);
    check("add_bias 7x301", yg, y0, nt * nc, 1e-7);
    free(yg), g_free(y0d), free(y0), free(bias);
    cpu->ops->weight_free(cpu, &bc);
    gpu->ops->weight_free(gpu, &bg);
    /* get_rows */
    int32_t idx[5] = {6, 0, 3, 3, 1};
    float *src = rnd(7 * nc, 1.0f), *gc = malloc(5 * nc * 4);
    cpu->ops->get_rows(cpu, gc, src, idx, 5, nc);
    float *srcd = g_up(src, 7 * nc * 4);
    int32_t *idxd = g_up(idx, sizeof idx);
    float *gd = g_poison(5 * nc);
    gpu->ops->get_rows(gpu, gd, srcd, idxd, 5, nc);
    yg = g_down(gd, 5 * nc);
    check("get_rows 5 of 7x301", yg, gc, 5 * nc, 0);
    free(yg), g_free(gd), g_free(idxd), g_free(srcd), free(src), free(gc);
    g_free(yd), g_free(ad), g_free(bd), free(a), free(b), free(yc);
}

/* ---- attention ------------------------------------------------------------------ */

static void att_run(backend *be, bool dev, float *out, const float *q, const float *k,
                    const float *v, be_kv_layer *kv, const int32_t *slot, const int32_t *pos,
                    int64_t nt, int nh, int nkv, int hd, float scale)
{
    if (!dev) {
        be->ops->attention(be, out, q, k, v, kv, slot, pos, nt, nh, nkv, hd, scale);
        return;
    }
    int64_t qn = nt * nh * hd, kn = nt * nkv * hd;
    float *qd = g_up(q, qn * 4), *kd = g_up(k, kn * 4), *vd = g_up(v, kn * 4);
    int32_t *sd = g_up(slot, nt * 4), *pd = g_up(pos, nt * 4);
    float *od = g_poison(qn);
    be->ops->attention(be, od, qd, kd, vd, kv, sd, pd, nt, nh, nkv, hd, scale);
    be->ops->to_host(be, out, od, qn * 4);
    g_free(qd), g_free(kd), g_free(vd), g_free(sd), g_free(pd), g_free(od);
}

static void test_attention(int kv_type, int nh, int nkv, int hd)
{
    int64_t n_slots = 3, n_ctx = 64, kv_dim = (int64_t)nkv * hd;
    size_t es = kv_type == DT_F16 ? 2 : 4, kvb = (size_t)(n_slots * n_ctx * kv_dim) * es;
    be_kv_layer kc = {kv_type, n_slots, n_ctx, kv_dim, cpu->ops->alloc(cpu, kvb),
                      cpu->ops->alloc(cpu, kvb)};
    be_kv_layer kg = {kv_type, n_slots, n_ctx, kv_dim, gpu->ops->alloc(gpu, kvb),
                      gpu->ops->alloc(gpu, kvb)};
    cpu->ops->memset0(cpu, kc.k, kvb), cpu->ops->memset0(cpu, kc.v, kvb);
    gpu->ops->memset0(gpu, kg.k, kvb), gpu->ops->memset0(gpu, kg.v, kvb);
    float scale = 1.0f / sqrtf((float)hd);
    /* step 1: prefill 20 tokens of slot 0 and 5 of slot 2 in one batch */
    int32_t slot1[25], pos1[25];
    for (int i = 0; i < 25; i++) {
        slot1[i] = i < 20 ? 0 : 2;
        pos1[i] = i < 20 ? i : i - 20;
    }
    /* step 2: decode slot 0 at 20, slot 2 at 5, a new sequence in slot 1, and
     * two more tokens of slot 2 (a chunk after its decode token) */
    int32_t slot2[5] = {0, 2, 1, 2, 2}, pos2[5] = {20, 5, 0, 6, 7};
    struct {
        int64_t nt;
        const int32_t *slot, *pos;
    } steps[2] = {{25, slot1, pos1}, {5, slot2, pos2}};
    for (int s = 0; s < 2; s++) {
        int64_t nt = steps[s].nt;
        float *q = rnd(nt * nh * hd, 1.5f), *k = rnd(nt * kv_dim, 1.5f), *v = rnd(nt * kv_dim, 1.0f);
        float *oc = malloc((size_t)(nt * nh * hd) * 4), *og = malloc((size_t)(nt * nh * hd) * 4);
        att_run(cpu, false, oc, q, k, v, &kc, steps[s].slot, steps[s].pos, nt, nh, nkv, hd, scale);
        att_run(gpu, true, og, q, k, v, &kg, steps[s].slot, steps[s].pos, nt, nh, nkv, hd, scale);
        char what[96];
        snprintf(what, sizeof what, "attention %s kv heads=%d/%d hd=%d step %d (%lld tok)",
                 kv_type == DT_F16 ? "F16" : "F32", nh, nkv, hd, s + 1, (long long)nt);
        gpu_status(what);
        check(what, og, oc, nt * nh * hd, kv_type == DT_F16 ? 1e-5 : 1e-5);
        free(q), free(k), free(v), free(oc), free(og);
    }
    cpu->ops->free(cpu, kc.k), cpu->ops->free(cpu, kc.v);
    gpu->ops->free(gpu, kg.k), gpu->ops->free(gpu, kg.v);
}

/* Single-token decode steps (v2 fuse: the cache store happens inside the
 * attention kernel, which must read the current position from k/v and
 * leave it in the cache for the next steps), alternating two slots, each
 * followed by a Q8_0 matmul on the attention output (v2 fuse: quantized by
 * the attention kernel) without a download in between. */
static void test_attention_decode(int kv_type, int nh, int nkv, int hd)
{
    int64_t n_slots = 2, n_ctx = 16, kv_dim = (int64_t)nkv * hd, nq = (int64_t)nh * hd;
    size_t es = kv_type == DT_F16 ? 2 : 4, kvb = (size_t)(n_slots * n_ctx * kv_dim) * es;
    be_kv_layer kc = {kv_type, n_slots, n_ctx, kv_dim, cpu->ops->alloc(cpu, kvb),
                      cpu->ops->alloc(cpu, kvb)};
    be_kv_layer kg = {kv_type, n_slots, n_ctx, kv_dim, gpu->ops->alloc(gpu, kvb),
                      gpu->ops->alloc(gpu, kvb)};
    cpu->ops->memset0(cpu, kc.k, kvb), cpu->ops->memset0(cpu, kc.v, kvb);
    gpu->ops->memset0(gpu, kg.k, kvb), gpu->ops->memset0(gpu, kg.v, kvb);
    qmat mw = qmat_make(DT_Q8_0, nq, 48, 48);
    be_weight wc, wg;
    upload_both(&mw, &wc, &wg);
    float scale = 1.0f / sqrtf((float)hd);
    for (int i = 0; i < 10; i++) {
        int32_t slot = i % 2, pos = i / 2 + (i % 2) * 3; /* slot 1 starts at 3: zeros before */
        float *q = rnd(nq, 1.5f), *k = rnd(kv_dim, 1.5f), *v = rnd(kv_dim, 1.0f);
        float *oc = malloc((size_t)nq * 4), *yc = malloc(48 * 4);
        cpu->ops->attention(cpu, oc, q, k, v, &kc, &slot, &pos, 1, nh, nkv, hd, scale);
        cpu->ops->matmul(cpu, yc, &wc, oc, 1);
        float *qd = g_up(q, (size_t)nq * 4), *kd = g_up(k, (size_t)kv_dim * 4),
              *vd = g_up(v, (size_t)kv_dim * 4), *od = g_poison(nq), *yd = g_poison(48);
        int32_t *sd = g_up(&slot, 4), *pd = g_up(&pos, 4);
        gpu->ops->attention(gpu, od, qd, kd, vd, &kg, sd, pd, 1, nh, nkv, hd, scale);
        gpu->ops->matmul(gpu, yd, &wg, od, 1);
        float *og = g_down(od, nq), *yg = g_down(yd, 48);
        char what[112];
        snprintf(what, sizeof what, "attention %s decode heads=%d/%d hd=%d step %d",
                 kv_type == DT_F16 ? "F16" : "F32", nh, nkv, hd, i);
        gpu_status(what);
        check(what, og, oc, nq, 1e-5);
        snprintf(what, sizeof what, "attention %s decode heads=%d/%d hd=%d step %d + Wo Q8_0",
                 kv_type == DT_F16 ? "F16" : "F32", nh, nkv, hd, i);
        check(what, yg, yc, 48, matmul_tol(DT_Q8_0, 1));
        free(q), free(k), free(v), free(oc), free(yc), free(og), free(yg);
        g_free(qd), g_free(kd), g_free(vd), g_free(od), g_free(yd), g_free(sd), g_free(pd);
    }
    cpu->ops->weight_free(cpu, &wc);
    gpu->ops->weight_free(gpu, &wg);
    free(mw.data);
    cpu->ops->free(cpu, kc.k), cpu->ops->free(cpu, kc.v);
    gpu->ops->free(gpu, kg.k), gpu->ops->free(gpu, kg.v);
}

int main(int argc, char **argv)
{
    cv_err e = {0};
    quick = argc > 1 && !strcmp(argv[1], "--quick");
    const char *mv = getenv("CARAVAN_CUDA_MMV");
    mmv_var = mv && (!strcmp(mv, "v1") || !strcmp(mv, "1")) ? 1 : 2;
    const char *gr = getenv("CARAVAN_CUDA_GRAPHS");
    printf("matvec variant v%d, graphs %s\n", mmv_var, gr && !strcmp(gr, "0") ? "off" : "on");
    /* small GEMM chunks so the chunk loop runs several times on test shapes */
    setenv("CARAVAN_CUDA_GEMM_CHUNK", "20000", 0);
    die_if(backend_cpu_create(0, "scalar", &cpu, &e), &e, "cpu backend (scalar)");
    die_if(backend_cuda_create(0, &gpu, &e), &e, "cuda backend");
    printf("oracle: %s, under test: %s\n", cpu->ops->name, gpu->ops->name);

    static const int types[] = {DT_F32,  DT_F16,  DT_BF16, DT_Q8_0, DT_Q4_0, DT_Q4_1, DT_Q5_0,
                                DT_Q5_1, DT_Q2_K, DT_Q3_K, DT_Q4_K, DT_Q5_K, DT_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        int t = types[i];
        bool fl = t == DT_F32 || t == DT_F16 || t == DT_BF16;
        if (!quick)
            test_matmul_type(t, 512, 67);
        test_matmul_type(t, 256, 131);
        if (fl)
            test_matmul_type(t, 172, 37); /* stories260K's ffn_down: not a multiple of 32 */
    }
    if (!quick) {
        test_matmul_type(DT_Q4_K, 4096, 259);
        test_matmul_type(DT_Q8_0, 4096, 259);
        test_matmul_type(DT_F16, 4096, 259);
        test_matmul_type(DT_Q6_K, 4096, 259);
    }
    test_xq_reuse(DT_Q8_0, 4096, 67, 1);
    test_xq_reuse(DT_Q4_K, 1024, 33, 3);
    test_chain(DT_Q8_0, 512, 1024, 1);
    test_chain(DT_Q4_K, 1024, 768, 1);
    test_chain(DT_Q6_K, 512, 256, 3);
    test_chain(DT_F16, 512, 1024, 1);

    test_rmsnorm(7, 4096);
    test_rmsnorm(3, 64);
    test_rmsnorm(300, 172);
    test_rope(ROPE_NORMAL, 8, 128, 128, 1.0f, false);
    test_rope(ROPE_NEOX, 8, 128, 128, 1.0f, false);
    test_rope(ROPE_NORMAL, 4, 128, 64, 0.5f, true);
    test_rope(ROPE_NEOX, 4, 64, 32, 0.25f, true);
    test_rope(ROPE_NORMAL, 8, 8, 8, 1.0f, false);
    test_elementwise();
    test_attention(DT_F32, 8, 2, 64);
    test_attention(DT_F16, 8, 2, 64);
    test_attention(DT_F32, 8, 4, 8);
    test_attention(DT_F16, 32, 8, 128);
    test_attention(DT_F32, 4, 4, 256);
    test_attention_decode(DT_F16, 8, 2, 64);
    test_attention_decode(DT_F32, 32, 8, 128);

    gpu_status("all");
    printf("%d checks\n", n_checks);
    backend_destroy(gpu);
    backend_destroy(cpu);
    return tu_finish("test_cuda_ops");
}
