/* bench_kernels.c - one benchmark per CPU matmul kernel and weight type:
 * validates against the scalar oracle first (cpu_matmul_ref: dot_row, or
 * the integer path on the activations as the kernel quantizes them), then
 * times the median of repetitions and prints one line per type and path:
 *   op=matvec ... gb_s=   (one token: weight bytes streamed per second)
 *   op=gemm   ... gflop_s= (n_tok tokens: 2*rows*n*n_tok per second)
 * and the speed-up over the scalar path. Not a ctest (timings vary).
 * usage: bench_kernels [-t THREADS] [-r REPS] [-T TYPE] [--tok N] [--gemm-only] */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/dtype.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/threadpool.h"
#include "testutil.h"
#include "bench_common.h"

/* max |y - oracle| / sum|w||x| over the first rows x tokens of a product
 * of n_tok tokens */
static double validate(int type, cpu_matmul *mm, const be_weight *bw, const float *x, const float *y,
                       int64_t n_tok, int64_t tok_checked, int64_t rows_checked)
{
    int64_t n = bw->ne0;
    float *deq = malloc((size_t)n * 4);
    double worst = 0;
    for (int64_t t = 0; t < tok_checked; t++) {
        const float *xt = x + t * n;
        for (int64_t r = 0; r < rows_checked; r++) {
            const uint8_t *wr = (const uint8_t *)bw->data + r * bw->row_bytes;
            dequantize_row(type, wr, deq, n);
            double mag = 1e-30;
            for (int64_t i = 0; i < n; i++)
                mag += fabs((double)deq[i] * xt[i]);
            double ref = cpu_matmul_ref(mm, type, wr, xt, n, n_tok);
            double e = fabs((double)y[t * bw->ne1 + r] - ref) / mag;
            if (!(e <= worst))
                worst = e;
        }
    }
    free(deq);
    return worst;
}

static double g_best_s;     /* fastest repetition of the last time_run (least disturbed on a shared machine) */
static double g_best_cpu_s; /* least process CPU time of one repetition (all threads together) */

static double cpu_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* median seconds of one matmul */
static double time_run(cpu_matmul *mm, float *y, const be_weight *bw, const float *x, int64_t n_tok,
                       int reps)
{
    double t[64];
    if (reps > 64)
        reps = 64;
    cpu_matmul_run(mm, y, bw, x, n_tok); /* warm-up */
    g_best_cpu_s = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = now_s(), c0 = cpu_now_s();
        cpu_matmul_run(mm, y, bw, x, n_tok);
        t[i] = now_s() - t0;
        double c = cpu_now_s() - c0;
        if (c < g_best_cpu_s)
            g_best_cpu_s = c;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_d);
    g_best_s = t[0];
    return reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
}

int main(int argc, char **argv)
{
    int n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN), reps = 7;
    int64_t gemm_tok = 128;
    const char *only = NULL;
    int gemm_only = 0; /* --gemm-only: prefill GEMM of the SIMD levels only (profiling) */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc)
            n_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-T") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--tok") && i + 1 < argc)
            gemm_tok = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gemm-only"))
            gemm_only = 1;
        else {
            fprintf(stderr, "usage: bench_kernels [-t THREADS] [-r REPS] [-T TYPE] [--tok N] [--gemm-only]\n");
            return 2;
        }
    }
    if (n_threads < 1 || reps < 1 || gemm_tok < 1) {
        fprintf(stderr, "bench_kernels: bad -t/-r/--tok\n");
        return 2;
    }
    static const int types[] = {DT_F32,  DT_F16,  DT_BF16, DT_Q8_0, DT_Q4_0, DT_Q4_1, DT_Q5_0,
                                DT_Q5_1, DT_Q2_K, DT_Q3_K, DT_Q4_K, DT_Q5_K, DT_Q6_K};
    cpu_level best = cpu_level_detect();
    printf("bench_kernels: threads=%d best_level=%s reps=%d%s\n", n_threads, cpu_level_name(best),
           reps, best < CPU_AVX512 ? " (avx512 not available: not run)" : "");
    threadpool *tp = threadpool_create(n_threads);
    cpu_matmul *mm[3];
    for (int lv = 0; lv <= (int)best; lv++)
        mm[lv] = cpu_matmul_create(tp, (cpu_level)lv);
    uint64_t rng = 42;
    int failures = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        int type = types[ti];
        if (only && dtype_from_name(only) != type)
            continue;
        for (int op = gemm_only; op < 2; op++) {
            /* matvec: 8192 x 16384 weights (far past the 32 MiB L3 for every type);
             * gemm: 4096 x 4096 weights x gemm_tok tokens */
            int64_t n = op == 0 ? 8192 : 4096, rows = op == 0 ? 16384 : 4096;
            int64_t n_tok = op == 0 ? 1 : gemm_tok;
            uint8_t *w = make_weights(type, n, rows, &rng);
            be_weight bw = {.type = type, .ne0 = n, .ne1 = rows,
                            .row_bytes = dtype_row_size(type, n), .data = w};
            float *x = malloc((size_t)(n * n_tok) * 4), *y = malloc((size_t)(rows * n_tok) * 4);
            for (int64_t i = 0; i < n * n_tok; i++)
                x[i] = tu_rand_f(&rng);
            double bytes = (double)bw.row_bytes * rows, flops = 2.0 * n * rows * n_tok;
            double t_scalar = 0;
            for (int lv = gemm_only; lv <= (int)best; lv++) {
                /* the scalar gemm is slow: time it on fewer tokens (rate is per token) */
                int64_t nt = (lv == CPU_SCALAR && op == 1) ? 8 : n_tok;
                int r = lv == CPU_SCALAR ? 3 : reps;
                cpu_matmul_run(mm[lv], y, &bw, x, nt);
                double err = validate(type, mm[lv], &bw, x, y, nt, nt < 4 ? nt : 4, 64);
                int ok = err <= 2e-5;
                if (!ok)
                    failures++;
                double t = time_run(mm[lv], y, &bw, x, nt, r) * (double)n_tok / (double)nt;
                if (lv == CPU_SCALAR)
                    t_scalar = t;
                if (op == 0)
                    printf("op=matvec type=%s path=%s threads=%d rows=%lld n=%lld bytes=%.0f "
                           "ms=%.3f gb_s=%.2f speedup=%.1f max_rel_err=%.1e%s\n",
                           dtype_name(type), cpu_level_name(lv), n_threads, (long long)rows,
                           (long long)n, bytes, t * 1e3, bytes / t / 1e9, t_scalar / t, err,
                           ok ? "" : " VALIDATION-FAILED");
                else
                    printf("op=gemm type=%s path=%s threads=%d rows=%lld n=%lld n_tok=%lld ms=%.2f "
                           "gflop_s=%.1f gflop_s_best=%.1f gflop_per_cpu_s=%.1f speedup=%.1f max_rel_err=%.1e%s\n",
                           dtype_name(type), cpu_level_name(lv), n_threads, (long long)rows,
                           (long long)n, (long long)n_tok, t * 1e3, flops / t / 1e9,
                           flops / (g_best_s * (double)n_tok / (double)nt) / 1e9,
                           flops / (g_best_cpu_s * (double)n_tok / (double)nt) / 1e9, t_scalar / t,
                           err, ok ? "" : " VALIDATION-FAILED");
                fflush(stdout);
            }
            /* the row-interleaved layout the CPU backend re-lays this type into
             * at load (matmul.h: cpu_weight_repack), validated on the same rows */
            if (best >= CPU_AVX2 && cpu_repack_avx2(type)) {
                be_weight b4 = bw;
                b4.data = malloc(bw.row_bytes * (size_t)rows);
                memcpy(b4.data, w, bw.row_bytes * (size_t)rows);
                if (cpu_weight_repack(mm[CPU_AVX2], &b4)) {
                    cpu_matmul_run(mm[CPU_AVX2], y, &b4, x, n_tok);
                    double err = validate(type, mm[CPU_AVX2], &bw, x, y, n_tok, n_tok < 4 ? n_tok : 4, 64);
                    int ok = err <= 2e-5;
                    failures += !ok;
                    double t = time_run(mm[CPU_AVX2], y, &b4, x, n_tok, reps);
                    if (op == 0)
                        printf("op=matvec type=%s path=avx2-r4 threads=%d rows=%lld n=%lld bytes=%.0f "
                               "ms=%.3f gb_s=%.2f speedup=%.1f max_rel_err=%.1e%s\n",
                               dtype_name(type), n_threads, (long long)rows, (long long)n, bytes,
                               t * 1e3, bytes / t / 1e9, t_scalar / t, err, ok ? "" : " VALIDATION-FAILED");
                    else
                        printf("op=gemm type=%s path=avx2-r4 threads=%d rows=%lld n=%lld n_tok=%lld "
                               "ms=%.2f gflop_s=%.1f speedup=%.1f max_rel_err=%.1e%s\n",
                               dtype_name(type), n_threads, (long long)rows, (long long)n,
                               (long long)n_tok, t * 1e3, flops / t / 1e9, t_scalar / t, err,
                               ok ? "" : " VALIDATION-FAILED");
                    fflush(stdout);
                }
                free(b4.data);
            }
            free(w), free(x), free(y);
        }
    }
    for (int lv = 0; lv <= (int)best; lv++)
        cpu_matmul_free(mm[lv]);
    threadpool_free(tp);
    if (failures)
        fprintf(stderr, "bench_kernels: %d kernel(s) failed validation\n", failures);
    return failures ? 1 : 0;
}
