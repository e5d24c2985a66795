/* cuda_bw.c - bandwidth probes of cuda:N, the ceilings that tests/gpu/run.sh
 * compares `caravan bench` against:
 *   - device-to-device copy (bytes read + written per second, median of 20
 *     copies of 1 GiB): one line  device=cuda:N d2d_gb_s=X
 *   - the decode matrix-vector kernel alone (n_tok 1) on a 14336 x 4096
 *     matrix per weight type, four copies used in rotation so the 50 MB L2
 *     cannot hold them: weight bytes read per second; and the prefill path
 *     (n_tok 512) in TFLOP/s: lines  kernel=matvec type=T gb_s=X pct_d2d=Y
 * Random weights (random quant bytes with sane scales: timing only, no
 * checks here; test_cuda_ops checks the results). Needs a GPU.
 *   cuda_bw [DEVICE [D2D_GB_S [TYPES]]]: with D2D_GB_S (an earlier run's
 *   figure) the copy probe is skipped; TYPES (e.g. Q8_0,Q4_K) limits the
 *   types (for a profiler run). The matvec variant is CARAVAN_CUDA_MMV's
 *   (default v2; printed with "u4" appended under CARAVAN_CUDA_MMV_U=4). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "kernels/backend.h"
#include "kernels/cuda/backend_cuda.h"

#define NE0 4096
#define NE1 14336
#define N_COPIES 4

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

/* random rows; the f16 scale fields of each block set to a small finite value */
static void fill(int type, uint8_t *p, size_t rb, int64_t rows, uint64_t *s)
{
    size_t n = rb * (size_t)rows;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t v = xs(s);
        memcpy(p + i, &v, 8);
    }
    const dtype_traits *t = dtype_get(type);
    int off[2] = {-1, -1};
    switch (type) {
    case DT_F16: /* keep halves finite: clear the top exponent bit */
        for (size_t i = 1; i < n; i += 2)
            p[i] &= 0x3b;
        return;
    case DT_Q8_0: case DT_Q4_0: case DT_Q5_0: off[0] = 0; break;
    case DT_Q4_1: case DT_Q5_1: case DT_Q4_K: case DT_Q5_K: off[0] = 0, off[1] = 2; break;
    case DT_Q2_K: off[0] = 80, off[1] = 82; break;
    case DT_Q3_K: off[0] = 108; break;
    case DT_Q6_K: off[0] = 208; break;
    default: return;
    }
    uint16_t h = f32_to_fp16(0.01f);
    for (size_t b = 0; b < n / t->type_size; b++)
        for (int k = 0; k < 2; k++)
            if (off[k] >= 0)
                memcpy(p + b * t->type_size + off[k], &h, 2);
}

int main(int argc, char **argv)
{
    int dev = argc > 1 ? atoi(argv[1]) : 0;
    double bps = 0;
    cv_err e = {0};
    if (argc > 2 && atof(argv[2]) > 0) { /* the copy figure of an earlier run */
        bps = atof(argv[2]) * 1e9;
    } else {
        if (backend_cuda_copy_bandwidth(dev, (size_t)1 << 30, 20, &bps, &e)) {
            fprintf(stderr, "cuda_bw: %s\n", e.msg);
            return 1;
        }
        printf("device=cuda:%d d2d_gb_s=%.1f\n", dev, bps / 1e9);
    }
    const char *vv = getenv("CARAVAN_CUDA_MMV"), *vu = getenv("CARAVAN_CUDA_MMV_U");
    char var[16];
    snprintf(var, sizeof var, "%s%s", vv && *vv ? vv : "v2", vu && !strcmp(vu, "4") ? "u4" : "");
    fflush(stdout);

    backend *be;
    if (backend_cuda_create(dev, &be, &e)) {
        fprintf(stderr, "cuda_bw: %s\n", e.msg);
        return 1;
    }
    const int types[] = {DT_F16, DT_BF16, DT_Q8_0, DT_Q4_0, DT_Q4_K, DT_Q5_K, DT_Q6_K, DT_Q2_K, DT_Q3_K};
    const int64_t n_pp = 512;
    float *x = be->ops->alloc(be, (size_t)n_pp * NE0 * sizeof(float));
    float *y = be->ops->alloc(be, (size_t)n_pp * NE1 * sizeof(float));
    float *hx = malloc((size_t)n_pp * NE0 * sizeof(float));
    uint64_t s = 88172645463325252ull;
    for (int64_t i = 0; i < n_pp * NE0; i++)
        hx[i] = (float)((xs(&s) >> 40) * (1.0 / 16777216.0) - 0.5);
    be->ops->from_host(be, x, hx, (size_t)n_pp * NE0 * sizeof(float));
    int rc = 0;
    const char *only = argc > 3 ? argv[3] : NULL;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        int type = types[k];
        if (only) { /* whole names in a comma list */
            const char *nm = dtype_name(type), *p = strstr(only, nm);
            size_t l = strlen(nm);
            while (p && !((p == only || p[-1] == ',') && (p[l] == ',' || p[l] == '\0')))
                p = strstr(p + 1, nm);
            if (!p)
                continue;
        }
        size_t rb = dtype_row_size(type, NE0);
        uint8_t *h = malloc(rb * NE1);
        fill(type, h, rb, NE1, &s);
        be_weight w[N_COPIES];
        int nw = 0;
        for (; nw < N_COPIES; nw++)
            if (be->ops->weight_upload(be, &w[nw], type, NE0, NE1, h, rb, false, &e)) {
                fprintf(stderr, "cuda_bw: upload %s: %s\n", dtype_name(type), e.msg);
                rc = 1;
                break;
            }
        free(h);
        if (nw < N_COPIES) {
            for (int i = 0; i < nw; i++)
                be->ops->weight_free(be, &w[i]);
            continue;
        }
        /* matvec: warm-up, then 5 rounds of 40 calls; median round */
        double t[5];
        for (int i = 0; i < 8; i++)
            be->ops->matmul(be, y, &w[i % N_COPIES], x, 1);
        be->ops->sync(be);
        for (int r = 0; r < 5; r++) {
            double t0 = now_s();
            for (int i = 0; i < 40; i++)
                be->ops->matmul(be, y, &w[i % N_COPIES], x, 1);
            be->ops->sync(be);
            t[r] = (now_s() - t0) / 40;
        }
        for (int i = 1; i < 5; i++)
            for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
                double tmp = t[j];
                t[j] = t[j - 1], t[j - 1] = tmp;
            }
        double gbs = (double)rb * NE1 / t[2] / 1e9;
        /* prefill: 512 tokens, 3 calls, median */
        double tp[3];
        be->ops->matmul(be, y, &w[0], x, n_pp);
        be->ops->sync(be);
        for (int r = 0; r < 3; r++) {
            double t0 = now_s();
            be->ops->matmul(be, y, &w[(r + 1) % N_COPIES], x, n_pp);
            be->ops->sync(be);
            tp[r] = now_s() - t0;
        }
        double tmed = tp[0] < tp[1] ? (tp[1] < tp[2] ? tp[1] : (tp[0] < tp[2] ? tp[2] : tp[0]))
                                    : (tp[0] < tp[2] ? tp[0] : (tp[1] < tp[2] ? tp[2] : tp[1]));
        double tflops = 2.0 * NE0 * NE1 * n_pp / tmed / 1e12;
        cv_err e2 = {0};
        cv_status st = backend_cuda_status(be, &e2);
        printf("kernel=matvec var=%s type=%-4s rows=%d cols=%d bytes=%zu us=%.1f gb_s=%.1f "
               "pct_d2d=%.1f | prefill n_tok=%lld ms=%.2f tflop_s=%.1f%s%s\n",
               var, dtype_name(type), NE1, NE0, rb * NE1, t[2] * 1e6, gbs, 100.0 * gbs * 1e9 / bps,
               (long long)n_pp, tmed * 1e3, tflops, st ? " ERROR: " : "", st ? e2.msg : "");
        fflush(stdout);
        if (st)
            rc = 1;
        for (int i = 0; i < N_COPIES; i++)
            be->ops->weight_free(be, &w[i]);
    }
    be->ops->free(be, x);
    be->ops->free(be, y);
    free(hx);
    backend_destroy(be);
    return rc;
}
