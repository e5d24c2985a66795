/* test_gemm_extremes.c - the prefill GEMM (gemm_avx2.c) against its scalar
 * oracle cpu_matmul_ref (vec_dot_q8; Q8_0: the 16-bit activations of
 * cpu_x16_quantize_ref) on weight rows and activations at the ends of their
 * ranges: rows whose level bytes are all 0x00 (e.g. Q5_0 q = 0, w = -16,
 * where the int16 start value -128 * sum w of gemm_avx2.c's signed scheme is
 * 32768 and wraps, and the partial sums pass the int16 range), all 0xff,
 * 0x80 / 0x7f (Q8_0 levels -128 / 127), 0x55 and random, with sane f16
 * scales, against activations quantized to +127 / -127 everywhere (Q8_0:
 * +32767 / -32767), a sign pattern and random ones (some with an outlier:
 * Q8_0's scale per block). Random weights (test_simd) never reach these
 * bounds. Exits non-zero on any mismatch (relative error > 2e-5 of
 * sum |w||x|); a saturating int16 add in place of the wrapping one fails it. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/dtype_blocks.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/threadpool.h"
#include "testutil.h"

/* Q3_K and Q6_K are in since micro6 removes the levels' offset term per
 * int32 lane (block): with it in lane 0 only (-128 * sum sc*w, up to ~3e7),
 * constant rows left the 8 lanes as floats that cancelled in the final sum
 * and lost ~1 unit of the largest (2.5e-5 of sum |w||x| on the 0x55 row
 * against a token with one large element). */
static const int types[] = {DT_Q4_0, DT_Q5_0, DT_Q4_1, DT_Q5_1, DT_Q8_0,
                            DT_Q2_K, DT_Q3_K, DT_Q4_K, DT_Q5_K, DT_Q6_K};

#define N_ROWS 6
#define N_TOK 20 /* > the fused few-token decode's maximum: the GEMM path */

/* f16 fields of one block of `type` at b: scale 0.05 (d), 0.02 (m/dmin) */
static void set_scales(int type, uint8_t *b)
{
    uint16_t d = f32_to_fp16(0.05f), m = f32_to_fp16(0.02f);
#define SET(T, F, V) do { uint16_t v_ = (V); memcpy(b + offsetof(T, F), &v_, 2); } while (0)
    switch (type) {
    case DT_Q4_0: SET(dt_block_q4_0, d, d); break;
    case DT_Q4_1: SET(dt_block_q4_1, d, d); SET(dt_block_q4_1, m, m); break;
    case DT_Q5_0: SET(dt_block_q5_0, d, d); break;
    case DT_Q5_1: SET(dt_block_q5_1, d, d); SET(dt_block_q5_1, m, m); break;
    case DT_Q8_0: SET(dt_block_q8_0, d, d); break;
    case DT_Q2_K: SET(dt_block_q2_k, d, d); SET(dt_block_q2_k, dmin, m); break;
    case DT_Q3_K: SET(dt_block_q3_k, d, d); break;
    case DT_Q4_K: SET(dt_block_q4_k, d, d); SET(dt_block_q4_k, dmin, m); break;
    case DT_Q5_K: SET(dt_block_q5_k, d, d); SET(dt_block_q5_k, dmin, m); break;
    case DT_Q6_K: SET(dt_block_q6_k, d, d); break;
    }
#undef SET
}

/* weight row pattern p: every byte 0x00, 0xff, 0x80, 0x7f, 0x55, or random; then sane scales */
static void weight_row(int type, int p, uint8_t *w, int64_t n, uint64_t *rng)
{
    static const int fill[] = {0x00, 0xff, 0x80, 0x7f, 0x55};
    size_t rb = dtype_row_size(type, n);
    for (size_t i = 0; i < rb; i++)
        w[i] = p < 5 ? (uint8_t)fill[p] : (uint8_t)tu_rand_u64(rng);
    const dtype_traits *di = dtype_get(type);
    size_t bb = dtype_row_size(type, di->block_size);
    for (int64_t b = 0; b < n / di->block_size; b++)
        set_scales(type, w + b * bb);
}

/* token pattern t: 0 all +1, 1 all -1, 2 +-1 by element pair, 3 sign of
 * weight pattern 2, else random (a few with one huge element) */
static void act_floats(int t, float *x, int64_t n, uint64_t *rng)
{
    for (int64_t i = 0; i < n; i++) {
        switch (t) {
        case 0: x[i] = 1.0f; break;
        case 1: x[i] = -1.0f; break;
        case 2: x[i] = (i / 2) & 1 ? -1.0f : 1.0f; break;
        case 3: x[i] = i % 32 == 0 ? 1.0f : -1.0f; break;
        default: x[i] = tu_rand_f(rng) * (i == 5 && t % 3 == 0 ? 1000.0f : 1.0f); break;
        }
    }
}

static void run(cpu_matmul *mm, int type, int64_t n, uint64_t *rng)
{
    size_t rb = dtype_row_size(type, n);
    uint8_t *w = malloc(rb * N_ROWS);
    float *deq = malloc((size_t)n * 4);
    float *x = malloc((size_t)(n * N_TOK) * 4), *y = malloc((size_t)(N_ROWS * N_TOK) * 4);
    for (int r = 0; r < N_ROWS; r++)
        weight_row(type, r, w + r * rb, n, rng);
    for (int t = 0; t < N_TOK; t++)
        act_floats(t, x + t * n, n, rng);
    for (int64_t i = 0; i < N_ROWS * N_TOK; i++)
        y[i] = 12345.0f;
    be_weight bw = {.type = type, .ne0 = n, .ne1 = N_ROWS, .row_bytes = rb, .data = w};
    cpu_matmul_run(mm, y, &bw, x, N_TOK);
    int shown = 0;
    double worst = 0.0;
    for (int t = 0; t < N_TOK; t++) {
        const float *xt = x + t * n;
        for (int r = 0; r < N_ROWS; r++) {
            const void *wr = w + r * rb;
            dequantize_row(type, wr, deq, n);
            double mag = 1e-30;
            for (int64_t i = 0; i < n; i++)
                mag += fabs((double)deq[i] * xt[i]);
            float ref = (float)cpu_matmul_ref(mm, type, wr, xt, n, N_TOK), got = y[t * N_ROWS + r];
            double rel = fabs((double)got - ref) / mag;
            if (!(rel <= 2e-5)) {
                if (shown++ < 3)
                    TU_CHECK(0, "%s n=%lld: y[tok %d][row %d] = %.7g, oracle %.7g (rel %.3g)", dtype_name(type),
                             (long long)n, t, r, got, ref, rel);
                else
                    tu_failures++;
            }
            if (rel > worst || rel != rel)
                worst = rel;
        }
    }
    printf("%-5s n=%-5lld rows=%d n_tok=%d max_rel_err_vs_oracle=%.2e\n", dtype_name(type), (long long)n, N_ROWS,
           N_TOK, worst);
    free(w), free(deq), free(x), free(y);
}

/* Q8_0's 16-bit activations (cpu_avx2_quant_p16) give a token the same bits
 * whatever the other tokens of its tile: tokens 0..11 with one scale per row
 * (tiles flushed without the dw * da multiply), then token 1 replaced by one
 * with an outlier 1000x the rest (a scale per block: its tile takes the
 * multiply), over several K chunks. */
static void x16_tiles(cpu_matmul *mm, uint64_t *rng)
{
    const int64_t n = 2304, rows = 6, nt = 12;
    size_t rb = dtype_row_size(DT_Q8_0, n);
    uint8_t *w = malloc(rb * rows);
    float *x = malloc((size_t)(n * nt) * 4), *y0 = malloc((size_t)(rows * nt) * 4);
    float *y1 = malloc((size_t)(rows * nt) * 4);
    int16_t *q = malloc((size_t)n * 2);
    float da[2304 / 32], ds;
    for (int r = 0; r < rows; r++)
        weight_row(DT_Q8_0, 5, w + r * rb, n, rng);
    for (int64_t i = 0; i < n * nt; i++)
        x[i] = tu_rand_f(rng);
    be_weight bw = {.type = DT_Q8_0, .ne0 = n, .ne1 = rows, .row_bytes = rb, .data = w};
    TU_CHECK(cpu_matmul_x16(mm, DT_Q8_0, n, nt), "Q8_0 x %lld tokens is not the 16-bit GEMM path", (long long)nt);
    TU_CHECK(cpu_x16_quantize_ref(x, n, q, da, &ds) == 1, "a random token has no single row scale");
    cpu_matmul_run(mm, y0, &bw, x, nt);
    x[n + 100] *= 1000.0f;
    TU_CHECK(cpu_x16_quantize_ref(x + n, n, q, da, &ds) == 0, "the outlier token has a single row scale");
    cpu_matmul_run(mm, y1, &bw, x, nt);
    int same = 1;
    for (int64_t t = 0; t < nt; t++)
        if (t != 1)
            same &= memcmp(y0 + t * rows, y1 + t * rows, rows * sizeof(float)) == 0;
    TU_CHECK(same, "Q8_0: a token's outputs changed with the scale mode of another token in its tile");
    printf("Q8_0  16-bit activations: token outputs independent of the tile's other tokens: %s\n",
           same ? "yes" : "NO");
    free(w), free(x), free(y0), free(y1), free(q);
}

int main(void)
{
    if (cpu_level_detect() < CPU_AVX2) {
        printf("test_gemm_extremes: NOT RUN (no AVX2 on this CPU/OS)\n");
        return 0;
    }
    uint64_t rng = 0xe87e3e5ULL;
    threadpool *tp = threadpool_create(1);
    cpu_matmul *mm = cpu_matmul_create(tp, CPU_AVX2);
    /* one and several K chunks (GEMM_KC_SB super-blocks), a padded last super-block for the 32-element types */
    const int64_t ns[] = {256, 2304, 288};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        for (int k = 0; k < 3; k++) {
            const dtype_traits *di = dtype_get(types[i]);
            if (ns[k] % di->block_size == 0)
                run(mm, types[i], ns[k], &rng);
        }
    x16_tiles(mm, &rng);
    cpu_matmul_free(mm);
    threadpool_free(tp);
    return tu_finish("test_gemm_extremes");
}
