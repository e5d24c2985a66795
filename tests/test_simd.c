/* test_simd.c - every SIMD matmul kernel against its scalar oracle (acceptance 1
 * of the CPU kernel issue).
 *
 * For each weight type, each CPU level this machine has (scalar, avx2, avx512;
 * narrower levels forced), odd and even block counts, n_tok in
 * {1,2,3,4,5,7,8,17} and 1 or 3 threads:
 *  - quantized types: y must equal the integer-path oracle cpu_matmul_ref
 *    (vec_dot_q8(type, row, quantize_row_q8_*(x)), or for the AVX2 prefill
 *    GEMM of Q8_0 the 16-bit activations of cpu_x16_quantize_ref) within
 *    2e-5 of the magnitude sum|w||x|
 *    (plus n_tok 2..8 with odd row counts and long rows for the fused
 *    multi-token decode, SIMD levels);
 *  - float types and the scalar level: y must equal dot_row within 2e-5 of it.
 * Also prints, per type, the extra error of the 8-bit activations: max
 * |y_simd - dot_row(w, x)| / sum|w||x| (measured, reported, not asserted),
 * and apart from it that of the 16-bit ones (Q8_0's AVX2 prefill GEMM). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/threadpool.h"
#include "testutil.h"

static const int types[] = {DT_F32,  DT_F16,  DT_BF16, DT_Q8_0, DT_Q4_0, DT_Q4_1, DT_Q5_0,
                            DT_Q5_1, DT_Q2_K, DT_Q3_K, DT_Q4_K, DT_Q5_K, DT_Q6_K};
static const int toks[] = {1, 2, 3, 4, 5, 7, 8, 17};

/* worst case over all runs of one (type, level) */
typedef struct stats {
    double max_rel;   /* vs the oracle */
    double max_qerr;  /* vs dot_row (activation quantization), quantized types */
    double max_qerr16; /* the same for the 16-bit activations (cpu_matmul_x16) */
    int runs, runs16;
} stats;

static void fill_row(int type, void *w, int64_t n, uint64_t *rng, float *tmp)
{
    /* non-degenerate: mixed scales per block so the scales differ */
    float scale = 0.1f + (float)(tu_rand_u64(rng) % 100) / 50.0f;
    for (int64_t i = 0; i < n; i++)
        tmp[i] = tu_rand_f(rng) * scale * (1.0f + (float)((i / 32) % 5));
    if (type == DT_F32)
        memcpy(w, tmp, (size_t)n * 4);
    else if (type == DT_F16)
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)w)[i] = f32_to_fp16(tmp[i]);
    else if (type == DT_BF16)
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)w)[i] = f32_to_bf16(tmp[i]);
    else if (!quantize_row(type, tmp, w, n)) {
        fprintf(stderr, "FAIL: quantize_row(%s) not available\n", dtype_name(type));
        exit(1);
    }
}

static void run_case(cpu_matmul *mm, int type, int64_t n, int64_t rows, int64_t n_tok, uint64_t *rng,
                     stats *st)
{
    size_t rb = dtype_row_size(type, n);
    uint8_t *w = malloc(rb * (size_t)rows);
    float *tmp = malloc((size_t)n * 4), *deq = malloc((size_t)n * 4);
    float *x = malloc((size_t)(n * n_tok) * 4);
    float *y = malloc((size_t)(rows * n_tok) * 4);
    for (int64_t r = 0; r < rows; r++)
        fill_row(type, w + r * rb, n, rng, tmp);
    for (int64_t i = 0; i < n * n_tok; i++)
        x[i] = tu_rand_f(rng) * (1.0f + (float)((i / 32) % 3));
    if (n_tok > 2) /* one token with a zero block and a huge block */
        for (int64_t i = 0; i < n && i < 64; i++)
            x[n + i] = i < 32 ? 0.0f : x[n + i] * 1000.0f;
    be_weight bw = {.type = type, .ne0 = n, .ne1 = rows, .row_bytes = rb, .data = w};
    for (int64_t i = 0; i < rows * n_tok; i++)
        y[i] = 12345.0f; /* every output must be written */
    cpu_matmul_run(mm, y, &bw, x, n_tok);
    int shown = 0, x16 = cpu_matmul_x16(mm, type, n, n_tok);
    st->runs16 += x16;
    for (int64_t t = 0; t < n_tok; t++) {
        const float *xt = x + t * n;
        for (int64_t r = 0; r < rows; r++) {
            const void *wr = w + r * rb;
            dequantize_row(type, wr, deq, n);
            double mag = 1e-30;
            for (int64_t i = 0; i < n; i++)
                mag += fabs((double)deq[i] * xt[i]);
            float exact = dot_row(type, wr, xt, n);
            float ref = (float)cpu_matmul_ref(mm, type, wr, xt, n, n_tok);
            float got = y[t * rows + r];
            double rel = fabs((double)got - ref) / mag;
            if (!(rel <= 2e-5)) {
                if (shown++ < 3)
                    TU_CHECK(0, "%s %s n=%lld rows=%lld n_tok=%lld: y[%lld][%lld] = %.7g, oracle %.7g (rel %.3g)",
                             dtype_name(type), cpu_level_name(cpu_matmul_level(mm)), (long long)n,
                             (long long)rows, (long long)n_tok, (long long)t, (long long)r, got, ref, rel);
                else
                    tu_failures++;
            }
            if (rel > st->max_rel || rel != rel)
                st->max_rel = rel;
            double qe = fabs((double)got - exact) / mag;
            double *mq = x16 ? &st->max_qerr16 : &st->max_qerr;
            if (qe > *mq)
                *mq = qe;
        }
    }
    st->runs++;
    free(w), free(tmp), free(deq), free(x), free(y);
}

int main(void)
{
    cpu_level best = cpu_level_detect();
    const cpu_features *f = cpu_features_get();
    printf("cpu: best level %s (avx2 %d, avx512f %d bw %d vl %d dq %d vnni %d bf16 %d)\n",
           cpu_level_name(best), f->avx2, f->avx512f, f->avx512bw, f->avx512vl, f->avx512dq,
           f->avx512vnni, f->avx512bf16);
    if (best < CPU_AVX512)
        printf("avx512: NOT RUN (this CPU/OS lacks AVX-512 F/BW/VL/DQ/VNNI)\n");
    if (best < CPU_AVX2)
        printf("avx2: NOT RUN (this CPU/OS lacks AVX2/FMA/F16C/BMI2)\n");
    uint64_t rng = 0x5eed1234abcdULL;
    for (int lv = CPU_SCALAR; lv <= (int)best; lv++) {
        for (int nt_i = 0; nt_i < 2; nt_i++) {
            int n_threads = nt_i == 0 ? 1 : 3;
            threadpool *tp = threadpool_create(n_threads);
            cpu_matmul *mm = cpu_matmul_create(tp, (cpu_level)lv);
            TU_CHECK(cpu_matmul_level(mm) == (cpu_level)lv, "level %s not used", cpu_level_name(lv));
            for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
                int type = types[ti];
                int64_t bs = dtype_get(type)->block_size;
                /* odd and even block counts (float types: odd element counts too) */
                int64_t ns_q[] = {1, 2, 7, 66};
                int64_t ns_k[] = {1, 2, 3, 8};
                int64_t ns_f[] = {1, 9, 33, 264};
                stats st = {0};
                for (int k = 0; k < 4; k++) {
                    int64_t n = bs == 1 ? ns_f[k] : bs * (bs == 32 ? ns_q[k] : ns_k[k]);
                    for (size_t q = 0; q < sizeof toks / sizeof toks[0]; q++) {
                        int64_t rows = (q % 3 == 0) ? 37 : (q % 3 == 1 ? 6 : 1);
                        if (lv == CPU_SCALAR && n * rows * toks[q] > 200000)
                            continue;
                        run_case(mm, type, n, rows, toks[q], &rng, &st);
                    }
                }
                /* prefill GEMM (gemm_avx2.c): more super-blocks than one K chunk
                 * (GEMM_KC_SB = 8), odd rows, full and partial token tiles */
                if (bs > 1) {
                    run_case(mm, type, bs == 32 ? 32 * 75 : 256 * 9, 7, 9, &rng, &st);
                    run_case(mm, type, bs == 32 ? 32 * 17 : 256 * 17, 3, 4, &rng, &st);
                }
                /* fused multi-token decode (gemv_multi_avx2.c): n_tok 2..8, odd row
                 * counts (a row pair and a lone row), several K chunks (of 64 or 128
                 * blocks; K types: 16 super-blocks, so 33 is three chunks), odd and
                 * even block counts */
                if (bs > 1 && lv != CPU_SCALAR)
                    for (int64_t nt = 2; nt <= 8; nt++)
                        run_case(mm, type, bs == 32 ? 32 * (nt % 2 ? 135 : 130) : 256 * (nt % 2 ? 33 : 3),
                                 nt % 3 ? 5 : 19, nt, &rng, &st);
                /* one larger case: many row chunks and token blocks across threads */
                run_case(mm, type, bs == 1 ? 520 : (bs == 32 ? 1024 : 1024), 300, 70, &rng, &st);
                printf("%-6s %-6s threads=%d runs=%d max_rel_err_vs_oracle=%.2e act_quant_err=%.2e",
                       dtype_name(type), cpu_level_name(lv), n_threads, st.runs, st.max_rel,
                       st.max_qerr);
                if (st.runs16)
                    printf(" (16-bit activations of the prefill GEMM, %d runs: %.2e)", st.runs16,
                           st.max_qerr16);
                printf("\n");
            }
            cpu_matmul_free(mm);
            threadpool_free(tp);
        }
    }
    return tu_finish("test_simd");
}
