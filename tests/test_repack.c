/* test_repack.c - the row-interleaved (R4) weight layouts of the CPU backend
 * (cpu_kernels.h: cpu_repack; matmul.h: cpu_weight_repack), for every type
 * that has one at the AVX2 level:
 *  - pack then unpack gives back the standard rows byte for byte;
 *  - cpu_matmul_run on the re-laid weight (one token: the R4 kernel; 2..8
 *    tokens: the few-token kernels on the groups; more: the prefill GEMM,
 *    see below) equals the integer-path oracle cpu_matmul_ref within 2e-5 of
 *    sum|w||x| (as test_simd), and the standard-layout run within the same;
 *  - the prefill GEMM (n_tok above the few-token kernels: 9, 64, 300) on the
 *    re-laid weight gives bit for bit the y of the standard layout: Q4_0 and
 *    Q8_0 pack their panels straight from the groups, Q4_K from unpacked
 *    rows, the same panel bytes either way; odd block counts (an R4 group's
 *    one-block last record), several K chunks of GEMM_KC_SB super-blocks,
 *    a last super-block that is not whole, row chunks of 4..64 rows;
 *  - cpu_weight_repack refuses (and leaves alone) a row count that is not a
 *    multiple of 4, the scalar level, and a weight already re-laid.
 * Odd and even block counts, 1 and 3 threads. On a CPU without AVX2 there is
 * no R4 layout: the test checks only that nothing is re-laid, and says so. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/threadpool.h"
#include "testutil.h"

static const int types[] = {DT_Q8_0, DT_Q4_0, DT_Q4_1, DT_Q5_0, DT_Q5_1,
                            DT_Q2_K, DT_Q3_K, DT_Q4_K, DT_Q5_K, DT_Q6_K};
static const int toks[] = {1, 2, 3, 5, 8, 17, 64};

static void fill_rows(int type, uint8_t *w, int64_t n, int64_t rows, uint64_t *rng)
{
    size_t rb = dtype_row_size(type, n);
    float *tmp = malloc((size_t)n * 4);
    for (int64_t r = 0; r < rows; r++) {
        float scale = 0.1f + (float)(tu_rand_u64(rng) % 100) / 50.0f;
        for (int64_t i = 0; i < n; i++)
            tmp[i] = tu_rand_f(rng) * scale * (1.0f + (float)((i / 32) % 5));
        if (!quantize_row(type, tmp, w + r * rb, n)) {
            fprintf(stderr, "FAIL: quantize_row(%s) not available\n", dtype_name(type));
            exit(1);
        }
    }
    free(tmp);
}

static void check_roundtrip(const cpu_repack *rp, int64_t n, uint64_t *rng)
{
    size_t rb = dtype_row_size(rp->type, n);
    uint8_t *a = malloc(4 * rb), *g = malloc(4 * rb), *b = malloc(4 * rb);
    fill_rows(rp->type, a, n, 4, rng);
    memset(g, 0xa5, 4 * rb);
    rp->pack(a, rb, g, n);
    memset(b, 0x5a, 4 * rb);
    rp->unpack(g, b, rb, n);
    TU_CHECK(memcmp(a, b, 4 * rb) == 0, "%s n=%lld: pack + unpack does not give the rows back",
             dtype_name(rp->type), (long long)n);
    free(a), free(g), free(b);
}

/* One random weight in both layouts and its outputs for n_tok random tokens:
 * y on the standard rows w, y4 on the re-laid copy w4. */
typedef struct pair_run {
    size_t rb;
    uint8_t *w, *w4;
    float *x, *y, *y4;
} pair_run;

static pair_run pair_run_start(cpu_matmul *mm, int type, int64_t n, int64_t rows, int64_t n_tok,
                               uint64_t *rng)
{
    pair_run p;
    p.rb = dtype_row_size(type, n);
    p.w = malloc(p.rb * (size_t)rows), p.w4 = malloc(p.rb * (size_t)rows);
    p.x = malloc((size_t)(n * n_tok) * 4);
    p.y = malloc((size_t)(rows * n_tok) * 4), p.y4 = malloc((size_t)(rows * n_tok) * 4);
    fill_rows(type, p.w, n, rows, rng);
    memcpy(p.w4, p.w, p.rb * (size_t)rows);
    for (int64_t i = 0; i < n * n_tok; i++)
        p.x[i] = tu_rand_f(rng) * (1.0f + (float)((i / 32) % 3));
    be_weight bw = {.type = type, .ne0 = n, .ne1 = rows, .row_bytes = p.rb, .data = p.w};
    be_weight b4 = bw;
    b4.data = p.w4;
    TU_CHECK(cpu_weight_repack(mm, &b4), "%s n=%lld rows=%lld: not re-laid",
             dtype_name(type), (long long)n, (long long)rows);
    TU_CHECK(cpu_weight_layout(&b4) != NULL && memcmp(p.w, p.w4, p.rb * (size_t)rows) != 0,
             "%s: cpu_weight_repack said yes but the bytes are the standard rows", dtype_name(type));
    TU_CHECK(!cpu_weight_repack(mm, &b4), "%s: re-laid twice", dtype_name(type));
    for (int64_t i = 0; i < rows * n_tok; i++)
        p.y[i] = 12345.0f, p.y4[i] = -12345.0f; /* every output must be written */
    cpu_matmul_run(mm, p.y, &bw, p.x, n_tok);
    cpu_matmul_run(mm, p.y4, &b4, p.x, n_tok);
    return p;
}

static void pair_run_free(pair_run *p)
{
    free(p->w), free(p->w4), free(p->x), free(p->y), free(p->y4);
}

/* y of the standard and the re-laid weight vs the oracle; returns the worst
 * |y_r4 - y_std| / sum|w||x| */
static double run_case(cpu_matmul *mm, int type, int64_t n, int64_t rows, int64_t n_tok,
                       uint64_t *rng)
{
    pair_run p = pair_run_start(mm, type, n, rows, n_tok, rng);
    float *deq = malloc((size_t)n * 4);
    double worst = 0;
    int shown = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        const float *xt = p.x + t * n;
        for (int64_t r = 0; r < rows; r++) {
            const void *wr = p.w + r * p.rb;
            dequantize_row(type, wr, deq, n);
            double mag = 1e-30;
            for (int64_t i = 0; i < n; i++)
                mag += fabs((double)deq[i] * xt[i]);
            float ref = (float)cpu_matmul_ref(mm, type, wr, xt, n, n_tok);
            float got = p.y4[t * rows + r], std = p.y[t * rows + r];
            double rel = fabs((double)got - ref) / mag, d = fabs((double)got - std) / mag;
            if (!(rel <= 2e-5) || !(d <= 2e-5)) {
                if (shown++ < 3)
                    TU_CHECK(0, "%s n=%lld rows=%lld n_tok=%lld: R4 y[%lld][%lld] = %.7g, oracle %.7g, "
                             "standard layout %.7g", dtype_name(type), (long long)n, (long long)rows,
                             (long long)n_tok, (long long)t, (long long)r, got, ref, std);
                else
                    tu_failures++;
            }
            if (d > worst || d != d)
                worst = d;
        }
    }
    pair_run_free(&p);
    free(deq);
    return worst;
}

/* y of the prefill GEMM on the re-laid weight == on the standard rows, bit
 * for bit (the integer sums and the float operations are the same) */
static void check_gemm_exact(cpu_matmul *mm, int type, int64_t n, int64_t rows, int64_t n_tok,
                             uint64_t *rng)
{
    pair_run p = pair_run_start(mm, type, n, rows, n_tok, rng);
    const float *y = p.y, *y4 = p.y4;
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < rows * n_tok; i++)
        if (memcmp(&y[i], &y4[i], 4) != 0 && bad++ == 0)
            first = i;
    TU_CHECK(bad == 0, "%s n=%lld rows=%lld n_tok=%lld: prefill GEMM on R4 differs from the standard "
             "layout in %lld outputs, first y[%lld][%lld] = %.9g vs %.9g", dtype_name(type), (long long)n,
             (long long)rows, (long long)n_tok, (long long)bad, (long long)(first / rows),
             (long long)(first % rows), first >= 0 ? y4[first] : 0.0, first >= 0 ? y[first] : 0.0);
    pair_run_free(&p);
}

static void check_refusals(cpu_matmul *mm, cpu_matmul *scalar, int type, uint64_t *rng)
{
    int64_t n = dtype_get(type)->block_size == 256 ? 512 : 64;
    size_t rb = dtype_row_size(type, n);
    uint8_t *w = malloc(rb * 8), *c = malloc(rb * 8);
    fill_rows(type, w, n, 8, rng);
    memcpy(c, w, rb * 8);
    be_weight bw = {.type = type, .ne0 = n, .ne1 = 6, .row_bytes = rb, .data = w};
    TU_CHECK(!cpu_weight_repack(mm, &bw) && !bw.priv,
             "%s: 6 rows (not whole groups of 4) re-laid", dtype_name(type));
    bw.ne1 = 8;
    TU_CHECK(!cpu_weight_repack(scalar, &bw) && !bw.priv, "%s: re-laid for the scalar level",
             dtype_name(type));
    TU_CHECK(memcmp(w, c, rb * 8) == 0, "%s: a refused weight was changed", dtype_name(type));
    free(w), free(c);
}

int main(void)
{
    uint64_t rng = 0x4e9ac4ULL;
    int n_types = 0;
    if (cpu_level_detect() < CPU_AVX2) {
        printf("no AVX2: no R4 layout; checking that nothing is re-laid\n");
        threadpool *tp = threadpool_create(1);
        cpu_matmul *mm = cpu_matmul_create(tp, CPU_SCALAR);
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
            check_refusals(mm, mm, types[ti], &rng);
        cpu_matmul_free(mm);
        threadpool_free(tp);
        return tu_finish("test_repack");
    }
    for (int nt_i = 0; nt_i < 2; nt_i++) {
        int n_threads = nt_i == 0 ? 1 : 3;
        threadpool *tp = threadpool_create(n_threads);
        cpu_matmul *mm = cpu_matmul_create(tp, CPU_AVX2), *scalar = cpu_matmul_create(tp, CPU_SCALAR);
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            const cpu_repack *rp = cpu_repack_avx2(types[ti]);
            check_refusals(mm, scalar, types[ti], &rng);
            if (!rp)
                continue;
            n_types += nt_i == 0;
            int64_t bs = dtype_get(rp->type)->block_size;
            /* odd and even block counts; rows: one group, a few, many */
            int64_t nbs[] = {bs == 256 ? 1 : 3, bs == 256 ? 2 : 8, bs == 256 ? 3 : 65, bs == 256 ? 8 : 64};
            int64_t rowss[] = {4, 12, 68, 260};
            double worst = 0;
            for (int k = 0; k < 4; k++) {
                int64_t n = bs * nbs[k];
                if (nt_i == 0)
                    check_roundtrip(rp, n, &rng);
                for (int ri = 0; ri < 4; ri++)
                    for (size_t q = 0; q < sizeof toks / sizeof toks[0]; q++) {
                        if (rowss[ri] * n * toks[q] > (int64_t)1 << 22)
                            continue;
                        double d = run_case(mm, rp->type, n, rowss[ri], toks[q], &rng);
                        worst = d > worst ? d : worst;
                    }
            }
            /* the prefill GEMM (n_tok > cpu_avx2_gemv_multi_max): blocks 7 (less
             * than a super-block), 24 (whole ones), 65 and 129 (odd: n % 64 ==
             * 32, 2 and 3 K chunks, the last super-block not whole); K types
             * 9 and 17 super-blocks */
            int64_t gnbs[] = {bs == 256 ? 1 : 7, bs == 256 ? 3 : 24, bs == 256 ? 9 : 65,
                              bs == 256 ? 17 : 129};
            int64_t gtoks[] = {9, 64, 300};
            int n_exact = 0;
            for (int k = 0; k < 4; k++)
                for (int ri = 0; ri < 4; ri++)
                    for (int q = 0; q < 3; q++) {
                        int64_t n = bs * gnbs[k];
                        if (gtoks[q] <= cpu_avx2_gemv_multi_max(rp->type) ||
                            rowss[ri] * n * gtoks[q] > (int64_t)1 << 26)
                            continue;
                        check_gemm_exact(mm, rp->type, n, rowss[ri], gtoks[q], &rng);
                        n_exact++;
                    }
            /* and one such case against the oracle */
            double d = run_case(mm, rp->type, bs * gnbs[2], 12, 300, &rng);
            worst = d > worst ? d : worst;
            printf("%s R4, %d thread(s): worst |R4 - standard layout| / sum|w||x| = %.3g; "
                   "prefill GEMM bit-identical in %d cases\n",
                   dtype_name(rp->type), n_threads, worst, n_exact);
        }
        cpu_matmul_free(mm);
        cpu_matmul_free(scalar);
        threadpool_free(tp);
    }
    TU_CHECK(n_types > 0, "no type has an R4 layout on this AVX2 CPU");
    printf("%d type(s) with an R4 layout\n", n_types);
    return tu_finish("test_repack");
}
