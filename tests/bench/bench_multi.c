/* bench_multi.c - cost of the fused few-token decode (gemv_multi_avx2.c)
 * against the one-token decode, on the matrices of a Llama-3.2-1B-shaped
 * FFN (per layer: 2 x 8192x2048 and 1 x 2048x8192, several layers so that
 * the weights are far past L3 as in a real step). For each token count it
 * prints the median time of one layer (Tn), Tn / T1, and a least-squares fit
 * Tn = d + n p over the counts >= 2: d is what a step pays once for the
 * weights (read and decode), p what it pays per token. The token counts are
 * timed in rotating order, round after round, so drift hits all of them.
 * Validates first: every count's outputs against the one-token path's
 * (max |diff| / sum |w x|; the same q8 activations, so only float order).
 * Not a ctest (timings vary).
 * -D DIV divides the row counts (-L 1 -D 16: 1.8 MB of Q4_0, from cache:
 * the compute alone).
 * usage: bench_multi [-T TYPE] [-t THREADS] [-r ROUNDS] [-L LAYERS] [-D DIV] [--tok 1,2,4,8] */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/threadpool.h"
#include "testutil.h"
#include "bench_common.h"

#define BM_MAX_TOK 16
#define BM_MAX_COUNTS 8

int main(int argc, char **argv)
{
    const char *tname = "Q4_0", *toks = "1,2,4,8";
    int n_threads = 1, rounds = 15, layers = 6, div = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-T") && i + 1 < argc)
            tname = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc)
            n_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-L") && i + 1 < argc)
            layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-D") && i + 1 < argc)
            div = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tok") && i + 1 < argc)
            toks = argv[++i];
        else {
            fprintf(stderr, "usage: bench_multi [-T TYPE] [-t THREADS] [-r ROUNDS] [-L LAYERS] [-D DIV] [--tok 1,2,4,8]\n");
            return 2;
        }
    }
    int type = dtype_from_name(tname), counts[BM_MAX_COUNTS], nc = 0;
    for (const char *p = toks; *p && nc < BM_MAX_COUNTS;) {
        counts[nc++] = atoi(p);
        p = strchr(p, ',');
        if (!p)
            break;
        p++;
    }
    if (type < 0 || n_threads < 1 || rounds < 1 || rounds > 64 || layers < 1 || nc < 1 ||
        div < 1 || div > 64) {
        fprintf(stderr, "bench_multi: bad -T/-t/-r/-L/-D\n");
        return 2;
    }
    for (int c = 0; c < nc; c++)
        if (counts[c] < 1 || counts[c] > BM_MAX_TOK) {
            fprintf(stderr, "bench_multi: token counts must be 1..%d\n", BM_MAX_TOK);
            return 2;
        }
    threadpool *tp = threadpool_create(n_threads);
    cpu_matmul *mm = cpu_matmul_create(tp, cpu_level_detect());
    uint64_t rng = 7;
    /* per layer: gate and up (8192 rows of 2048), down (2048 rows of 8192) */
    const int nm = 3 * layers;
    be_weight *bw = calloc((size_t)nm, sizeof *bw);
    double bytes = 0;
    for (int m = 0; m < nm; m++) {
        int64_t n = m % 3 == 2 ? 8192 : 2048, rows = (m % 3 == 2 ? 2048 : 8192) / div;
        bw[m] = (be_weight){.type = type, .ne0 = n, .ne1 = rows, .row_bytes = dtype_row_size(type, n),
                            .data = make_weights(type, n, rows, &rng)};
        bytes += (double)bw[m].row_bytes * rows;
    }
    float *x = malloc((size_t)8192 * BM_MAX_TOK * 4), *y = malloc((size_t)8192 * BM_MAX_TOK * 4);
    float *y1 = malloc((size_t)8192 * BM_MAX_TOK * 4), *deq = malloc((size_t)8192 * 4);
    for (int64_t i = 0; i < 8192 * BM_MAX_TOK; i++)
        x[i] = tu_rand_f(&rng);
    /* validation: each count against the one-token path, one matrix of each shape */
    int bad = 0;
    for (int m = 1; m <= 2; m++) {
        const be_weight *w = &bw[m];
        for (int t = 0; t < BM_MAX_TOK; t++)
            cpu_matmul_run(mm, y1 + t * w->ne1, w, x + t * w->ne0, 1);
        for (int c = 0; c < nc; c++) {
            int nt = counts[c];
            cpu_matmul_run(mm, y, w, x, nt);
            double worst = 0;
            for (int t = 0; t < nt; t++)
                for (int64_t r = 0; r < 64 && r < w->ne1; r++) {
                    dequantize_row(type, (const uint8_t *)w->data + r * w->row_bytes, deq, w->ne0);
                    double mag = 1e-30;
                    for (int64_t i = 0; i < w->ne0; i++)
                        mag += fabs((double)deq[i] * x[t * w->ne0 + i]);
                    double e = fabs((double)y[t * w->ne1 + r] - y1[t * w->ne1 + r]) / mag;
                    if (!(e <= worst))
                        worst = e;
                }
            if (worst > 1e-5) {
                fprintf(stderr, "bench_multi: %s n_tok=%d rows=%lld: max rel diff %.2e vs one token\n",
                        tname, nt, (long long)w->ne1, worst);
                bad = 1;
            }
        }
    }
    double t[BM_MAX_COUNTS][64];
    for (int r = -1; r < rounds; r++) /* round -1: warm-up */
        for (int k = 0; k < nc; k++) {
            int c = (k + (r < 0 ? 0 : r)) % nc, nt = counts[c];
            double t0 = now_s();
            for (int m = 0; m < nm; m++)
                cpu_matmul_run(mm, y, &bw[m], x, nt);
            if (r >= 0)
                t[c][r] = (now_s() - t0) / layers;
        }
    double med[BM_MAX_COUNTS], t1 = 0;
    for (int c = 0; c < nc; c++) {
        qsort(t[c], (size_t)rounds, sizeof t[c][0], cmp_d);
        med[c] = rounds % 2 ? t[c][rounds / 2] : 0.5 * (t[c][rounds / 2 - 1] + t[c][rounds / 2]);
        if (counts[c] == 1)
            t1 = med[c];
    }
    /* Tn = d + n p over the counts >= 2 */
    double sn = 0, st = 0, snn = 0, snt = 0;
    int nf = 0;
    for (int c = 0; c < nc; c++)
        if (counts[c] >= 2)
            sn += counts[c], st += med[c], snn += (double)counts[c] * counts[c],
                snt += counts[c] * med[c], nf++;
    double p = nf >= 2 ? (nf * snt - sn * st) / (nf * snn - sn * sn) : 0, d = nf >= 2 ? (st - p * sn) / nf : 0;
    for (int c = 0; c < nc; c++)
        printf("bench_multi type=%s threads=%d n_tok=%d layer_mb=%.1f ms_per_layer=%.3f "
               "per_tok_ms=%.3f vs_t1=%.2f\n", tname, n_threads, counts[c], bytes / layers / 1e6,
               med[c] * 1e3, med[c] * 1e3 / counts[c], t1 > 0 ? med[c] / t1 : 0);
    if (nf >= 2)
        printf("bench_multi type=%s fit d_ms=%.3f p_ms=%.3f d_over_p=%.2f%s\n", tname, d * 1e3,
               p * 1e3, p > 0 ? d / p : 0, t1 > 0 ? "" : "");
    int n4 = -1, n8 = -1;
    for (int c = 0; c < nc; c++)
        n4 = counts[c] == 4 ? c : n4, n8 = counts[c] == 8 ? c : n8;
    if (n4 >= 0 && n8 >= 0)
        printf("bench_multi type=%s t8_over_2t4=%.3f\n", tname, med[n8] / (2 * med[n4]));
    for (int m = 0; m < nm; m++)
        free((void *)bw[m].data);
    free(bw), free(x), free(y), free(y1), free(deq);
    cpu_matmul_free(mm);
    threadpool_free(tp);
    if (bad)
        fprintf(stderr, "bench_multi: VALIDATION-FAILED\n");
    return bad;
}
