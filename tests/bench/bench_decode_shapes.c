/* bench_decode_shapes.c - one-token decode of a Llama-3.2-1B-shaped chain of
 * matvecs (16 layers of attn q/k/v/o, ffn gate/up/down, then the output
 * head), weights in one 2 MiB-page buffer as worker/model.c keeps them, timed
 * per call and summed per tensor shape, against a streaming-read probe over
 * the same buffer in the same sitting (one stream, as caravan bench's probe,
 * and 4 streams side by side, as the 4-row kernels read). Shows which shapes fall short of the
 * read bandwidth. Validates a few rows of every shape against the scalar
 * oracle (vec_dot_q8) first. Not a ctest (timings vary).
 * --hot ROWS also times ROWS x 2048 rows that stay in the caches: the kernel's
 * compute limit, without memory stalls.
 * usage: bench_decode_shapes [-T TYPE] [-t THREADS] [-r REPS] [--layers N] [--hot ROWS] */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <immintrin.h>

#include "core/dtype.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/threadpool.h"
#include "testutil.h"
#include "bench_common.h"

enum { S_Q, S_K, S_V, S_O, S_GATE, S_UP, S_DOWN, S_OUT, N_SHAPES };
static const char *shape_name[N_SHAPES] = {"attn_q", "attn_k", "attn_v", "attn_o",
                                           "ffn_gate", "ffn_up", "ffn_down", "output"};
static const int64_t shape_rows[N_SHAPES] = {2048, 512, 512, 2048, 8192, 8192, 2048, 128256};
static const int64_t shape_cols[N_SHAPES] = {2048, 2048, 2048, 2048, 2048, 2048, 8192, 2048};

__attribute__((target("avx2"))) static uint64_t probe_read(const uint8_t *p, size_t n, int pf)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t o = 0; o + 128 <= n; o += 128) {
        if (pf) {
            _mm_prefetch((const char *)p + o + 4096, _MM_HINT_T0);
            _mm_prefetch((const char *)p + o + 4096 + 64, _MM_HINT_T0);
        }
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + o)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + o + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + o + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + o + 96)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    return (uint64_t)_mm256_extract_epi64(a0, 0) + (uint64_t)_mm256_extract_epi64(a0, 2);
}

/* The same over 4 streams (the quarters of the buffer) read side by side:
 * the access pattern of the 4-row decode kernels. */
__attribute__((target("avx2"))) static uint64_t probe_read4(const uint8_t *p, size_t n)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t q = n / 4 & ~(size_t)63;
    for (size_t o = 0; o + 64 <= q; o += 64) {
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + k * q + o)));
            a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + k * q + o + 32)));
        }
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    return (uint64_t)_mm256_extract_epi64(a0, 0) + (uint64_t)_mm256_extract_epi64(a0, 2);
}

int main(int argc, char **argv)
{
    const char *tname = "Q4_0";
    int n_threads = 1, reps = 5, n_layers = 16;
    int64_t hot_rows = 0; /* --hot ROWS: also time a ROWS x 2048 matrix that stays in cache */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-T") && i + 1 < argc)
            tname = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc)
            n_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            n_layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--hot") && i + 1 < argc)
            hot_rows = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_decode_shapes [-T TYPE] [-t THREADS] [-r REPS] [--layers N] [--hot ROWS]\n");
            return 2;
        }
    }
    int type = dtype_from_name(tname);
    if (type < 0 || n_threads < 1 || reps < 1 || n_layers < 1) {
        fprintf(stderr, "bench_decode_shapes: bad type or counts\n");
        return 2;
    }
    /* the chain's tensors, laid out back to back as one rank's weights */
    int n_mats = 7 * n_layers + 1;
    be_weight *mats = calloc((size_t)n_mats, sizeof *mats);
    int *shape_of = calloc((size_t)n_mats, sizeof *shape_of);
    size_t total = 0;
    for (int m = 0; m < n_mats; m++) {
        int s = m == n_mats - 1 ? S_OUT : m % 7;
        shape_of[m] = s;
        mats[m].type = type;
        mats[m].ne0 = shape_cols[s];
        mats[m].ne1 = shape_rows[s];
        mats[m].row_bytes = dtype_row_size(type, shape_cols[s]);
        total += (mats[m].row_bytes * (size_t)shape_rows[s] + 4095) & ~(size_t)4095;
    }
    size_t buf_len = (total + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
    uint8_t *buf = mmap(NULL, buf_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        fprintf(stderr, "bench_decode_shapes: mmap of %zu bytes failed\n", buf_len);
        return 1;
    }
    madvise(buf, buf_len, MADV_HUGEPAGE);
    /* 64 distinct quantized rows per width, repeated (speed does not depend on the values) */
    uint64_t rng = 0x5eed;
    uint8_t *proto[2];
    for (int k = 0; k < 2; k++) {
        int64_t n = k ? 8192 : 2048;
        size_t rb = dtype_row_size(type, n);
        proto[k] = malloc(rb * 64);
        float *tmp = malloc((size_t)n * 4);
        for (int r = 0; r < 64; r++) {
            for (int64_t i = 0; i < n; i++)
                tmp[i] = tu_rand_f(&rng) * (1.0f + (float)((i / 32) % 4));
            quantize_row(type, tmp, proto[k] + r * rb, n);
        }
        free(tmp);
    }
    size_t off = 0;
    for (int m = 0; m < n_mats; m++) {
        mats[m].data = buf + off;
        const uint8_t *pr = proto[mats[m].ne0 == 8192];
        for (int64_t r = 0; r < mats[m].ne1; r++)
            memcpy(buf + off + r * mats[m].row_bytes, pr + (r % 64) * mats[m].row_bytes,
                   mats[m].row_bytes);
        off += (mats[m].row_bytes * (size_t)mats[m].ne1 + 4095) & ~(size_t)4095;
    }
    float *x = malloc(8192 * 4), *y = malloc(128256 * 4);
    for (int i = 0; i < 8192; i++)
        x[i] = tu_rand_f(&rng);
    threadpool *tp = threadpool_create(n_threads);
    cpu_matmul *mm = cpu_matmul_create(tp, cpu_level_detect());

    /* validate the first 8 rows of every shape against vec_dot_q8 */
    double worst = 0;
    uint8_t *xq = malloc(8192 * 2 + 4096);
    float *deq = malloc(8192 * 4);
    for (int s = 0; s < N_SHAPES; s++) {
        int m = s == S_OUT ? n_mats - 1 : s;
        cpu_matmul_run(mm, y, &mats[m], x, 1);
        int64_t n = mats[m].ne0;
        if (dtype_vec_dot_type(type) == DT_Q8_K)
            quantize_row_q8_k(x, xq, n);
        else
            quantize_row_q8_0(x, xq, n);
        for (int64_t r = 0; r < 8; r++) {
            const uint8_t *wr = (const uint8_t *)mats[m].data + r * mats[m].row_bytes;
            dequantize_row(type, wr, deq, n);
            double mag = 1e-30;
            for (int64_t i = 0; i < n; i++)
                mag += fabs((double)deq[i] * x[i]);
            double e = fabs((double)y[r] - vec_dot_q8(type, wr, xq, n)) / mag;
            if (!(e <= worst))
                worst = e;
        }
    }
    printf("validate: type=%s max_rel_err=%.2e %s\n", tname, worst, worst <= 2e-5 ? "ok" : "FAIL");
    if (!(worst <= 2e-5))
        return 1;

    /* warm-up pass, then reps of (probe over the same buffer, chain) */
    double *t_shape = calloc((size_t)reps * N_SHAPES, sizeof(double));
    double *t_chain = calloc((size_t)reps, sizeof(double)), *bw = calloc((size_t)reps, sizeof(double));
    double *bw_kind = calloc((size_t)reps * 3, sizeof(double)); /* plain, prefetched, 4 streams */
    size_t shape_bytes[N_SHAPES] = {0};
    for (int m = 0; m < n_mats; m++)
        shape_bytes[shape_of[m]] += mats[m].row_bytes * (size_t)mats[m].ne1;
    size_t chain_bytes = 0;
    for (int s = 0; s < N_SHAPES; s++)
        chain_bytes += shape_bytes[s];
    uint64_t sink = 0;
    for (int m = 0; m < n_mats; m++)
        cpu_matmul_run(mm, y, &mats[m], x, 1);
    for (int rep = 0; rep < reps; rep++) {
        double tb[2];
        for (int pf = 0; pf < 2; pf++) { /* 1 thread probe: the better of plain and prefetched */
            double t0 = now_s();
            sink += probe_read(buf, off, pf);
            tb[pf] = now_s() - t0;
        }
        bw[rep] = (double)off / (tb[0] < tb[1] ? tb[0] : tb[1]) / 1e9;
        bw_kind[3 * rep] = (double)off / tb[0] / 1e9, bw_kind[3 * rep + 1] = (double)off / tb[1] / 1e9;
        double t4 = now_s();
        sink += probe_read4(buf, off);
        bw_kind[3 * rep + 2] = (double)(off / 4 & ~(size_t)63) * 4 / (now_s() - t4) / 1e9;
        double c0 = now_s();
        for (int m = 0; m < n_mats; m++) {
            double t0 = now_s();
            cpu_matmul_run(mm, y, &mats[m], x, 1);
            t_shape[rep * N_SHAPES + shape_of[m]] += now_s() - t0;
        }
        t_chain[rep] = now_s() - c0;
    }
    if (sink == 42)
        fprintf(stderr, " ");
    /* per shape: the median over reps of its summed time */
    double med_bw, tmp[64];
    int nr = reps > 64 ? 64 : reps;
    memcpy(tmp, bw, sizeof(double) * (size_t)nr);
    qsort(tmp, (size_t)nr, sizeof(double), cmp_d);
    med_bw = tmp[nr / 2];
    double med_kind[3];
    for (int k = 0; k < 3; k++) {
        for (int r = 0; r < nr; r++)
            tmp[r] = bw_kind[3 * r + k];
        qsort(tmp, (size_t)nr, sizeof(double), cmp_d);
        med_kind[k] = tmp[nr / 2];
    }
    printf("probe: type=%s threads=%d buf_mb=%.0f read_bw_gb_s=%.2f (1 thread, one stream: best of "
           "plain %.2f and prefetched %.2f, median of %d) read4_gb_s=%.2f (4 streams)\n",
           tname, n_threads, off / 1e6, med_bw, med_kind[0], med_kind[1], nr, med_kind[2]);
    for (int s = 0; s < N_SHAPES; s++) {
        for (int r = 0; r < nr; r++)
            tmp[r] = t_shape[r * N_SHAPES + s];
        qsort(tmp, (size_t)nr, sizeof(double), cmp_d);
        int cnt = s == S_OUT ? 1 : n_layers;
        double gbs = shape_bytes[s] / tmp[nr / 2] / 1e9;
        printf("shape=%-8s rows=%-6lld cols=%-5lld calls=%-3d mb=%7.1f us_per_call=%8.1f gb_s=%6.2f "
               "pct_probe=%5.1f\n",
               shape_name[s], (long long)shape_rows[s], (long long)shape_cols[s], cnt,
               shape_bytes[s] / 1e6, tmp[nr / 2] / cnt * 1e6, gbs, 100.0 * gbs / med_bw);
    }
    for (int r = 0; r < nr; r++)
        tmp[r] = t_chain[r];
    qsort(tmp, (size_t)nr, sizeof(double), cmp_d);
    double gbs = chain_bytes / tmp[nr / 2] / 1e9;
    /* pct per rep against its own probe, median */
    for (int r = 0; r < nr; r++)
        tmp[r] = 100.0 * chain_bytes / t_chain[r] / 1e9 / bw[r];
    qsort(tmp, (size_t)nr, sizeof(double), cmp_d);
    double pct1 = tmp[nr / 2];
    for (int r = 0; r < nr; r++)
        tmp[r] = 100.0 * chain_bytes / t_chain[r] / 1e9 / bw_kind[3 * r + 2];
    qsort(tmp, (size_t)nr, sizeof(double), cmp_d);
    printf("chain: type=%s threads=%d mb=%.1f gb_s=%.2f pct_probe=%.1f pct_read4=%.1f (medians of "
           "per-rep ratios)\n",
           tname, n_threads, chain_bytes / 1e6, gbs, pct1, tmp[nr / 2]);
    if (hot_rows > 0) {
        be_weight h = mats[0];
        h.ne1 = hot_rows < h.ne1 ? hot_rows : h.ne1;
        int calls = (int)(2e8 / (double)(h.row_bytes * (size_t)h.ne1)) + 1;
        for (int r = 0; r < nr; r++) {
            cpu_matmul_run(mm, y, &h, x, 1);
            double t0 = now_s();
            for (int c = 0; c < calls; c++)
                cpu_matmul_run(mm, y, &h, x, 1);
            tmp[r] = now_s() - t0;
        }
        qsort(tmp, (size_t)nr, sizeof(double), cmp_d);
        size_t hb = h.row_bytes * (size_t)h.ne1;
        printf("hot: type=%s threads=%d rows=%lld kb=%.0f us_per_call=%.2f gb_s=%.2f\n", tname,
               n_threads, (long long)h.ne1, hb / 1e3, tmp[nr / 2] / calls * 1e6,
               (double)hb * calls / tmp[nr / 2] / 1e9);
    }
    cpu_matmul_free(mm);
    threadpool_free(tp);
    munmap(buf, buf_len);
    return 0;
}
