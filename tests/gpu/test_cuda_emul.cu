/* test_cuda_emul.cu - the CUDA weight layout and decoders of
 * kernels/cuda/cuda_quant.cuh, run on the CPU (no GPU needed): every weight
 * type is packed into the device layout (qt_pack_row) and every 32-weight
 * task is decoded with the same __host__ __device__ code the kernels use,
 * then compared with the scalar oracle dequantize_row (core/dtype_k.c).
 * Also checks that the tasks cover each column exactly once and that the
 * row pitch keeps rows 16-byte aligned. Random blocks: random bytes with
 * sane f16 scales.
 * The v2 matrix-vector path (cuda_mmv2.cuh) too: its integer decoders
 * against the oracle, the activation quantizer, and the per-lane work of
 * the kernels emulated for 32 lanes (sums of the lanes' partials, as the
 * warp shuffle makes them) against double-precision dot products: for the
 * integer types with the quantized x (so the index math is checked exactly,
 * tolerance 1e-5) and with the float x (the quantization error, 5e-2), for
 * 1, 2, 4 and 8 tokens. Exits non-zero on any mismatch. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long qt_misaligned;
__attribute__((unused)) static void qt_align_check(const void *p, int n)
{
    if ((uintptr_t)p % (uintptr_t)n && qt_misaligned++ < 5)
        fprintf(stderr, "FAIL: %d-byte load from %p is misaligned\n", n, p);
}
#define QT_HOST_CHECK_ALIGN(p, n) qt_align_check((p), (n))
#include "../../kernels/cuda/cuda_quant.cuh"
#define MMV2_HOST_ONLY
#include "../../kernels/cuda/cuda_mmv2.cuh"
#include "testutil.h"

/* offsets of the f16 fields (scales) inside each ggml block, which must hold
 * finite values: random bytes there could be inf/nan */
static void fix_scales(int type, uint8_t *row, int64_t ne0, uint64_t *rng)
{
    const dtype_traits *tr = dtype_get(type);
    int64_t nb = ne0 / tr->block_size;
    int offs[2] = {-1, -1};
    switch (type) {
    case DT_Q4_0: case DT_Q5_0: case DT_Q8_0: offs[0] = 0; break;
    case DT_Q4_1: case DT_Q5_1: offs[0] = 0, offs[1] = 2; break;
    case DT_Q2_K: offs[0] = 80, offs[1] = 82; break;
    case DT_Q3_K: offs[0] = 108; break;
    case DT_Q4_K: case DT_Q5_K: offs[0] = 0, offs[1] = 2; break;
    case DT_Q6_K: offs[0] = 208; break;
    default: return;
    }
    for (int64_t b = 0; b < nb; b++)
        for (int k = 0; k < 2; k++)
            if (offs[k] >= 0) {
                uint16_t h = f32_to_fp16(tu_rand_f(rng) * 0.05f);
                memcpy(row + b * tr->type_size + offs[k], &h, 2);
            }
}

static void random_row(int type, uint8_t *row, int64_t ne0, uint64_t *rng)
{
    size_t rb = dtype_row_size(type, ne0);
    if (type == DT_F32) {
        for (int64_t i = 0; i < ne0; i++) {
            float f = tu_rand_f(rng) * 3.0f;
            memcpy(row + 4 * i, &f, 4);
        }
        return;
    }
    if (type == DT_F16 || type == DT_BF16) {
        for (int64_t i = 0; i < ne0; i++) {
            float f = tu_rand_f(rng) * 3.0f;
            uint16_t h = type == DT_F16 ? f32_to_fp16(f) : f32_to_bf16(f);
            memcpy(row + 2 * i, &h, 2);
        }
        return;
    }
    for (size_t i = 0; i < rb; i++)
        row[i] = (uint8_t)(tu_rand_u64(rng) >> 56);
    fix_scales(type, row, ne0, rng);
}

template <int T> static int check_type(int64_t ne0, uint64_t *rng)
{
    const int type = T;
    size_t rb = dtype_row_size(type, ne0), pitch = qt_pitch(type, ne0);
    if (!rb || !pitch) {
        fprintf(stderr, "FAIL %s ne0=%lld: no row size (rb %zu, pitch %zu)\n", dtype_name(type),
                (long long)ne0, rb, pitch);
        return 1;
    }
    if (pitch % 16) {
        fprintf(stderr, "FAIL %s: pitch %zu not a multiple of 16\n", dtype_name(type), pitch);
        return 1;
    }
    uint8_t *src = (uint8_t *)malloc(rb);
    uint8_t *dev = (uint8_t *)aligned_alloc(16, pitch);
    float *ref = (float *)malloc(ne0 * sizeof(float));
    float *got = (float *)malloc((ne0 + 32) * sizeof(float));
    int *seen = (int *)calloc(ne0 + 32, sizeof(int));
    int fails = 0;
    for (int rep = 0; rep < 4 && !fails; rep++) {
        random_row(type, src, ne0, rng);
        dequantize_row(type, src, ref, ne0);
        memset(dev, 0xAB, pitch);
        qt_pack_row(type, dev, src, ne0);
        for (int64_t i = 0; i < ne0 + 32; i++)
            got[i] = NAN, seen[i] = 0;
        int64_t nt = qt_tasks(type, ne0);
        for (int64_t i = 0; i < nt; i++) {
            float q[32], sc[2], mn[2];
            int64_t c[2];
            qt_dec<T>::task(dev, ne0, i, q, sc, mn, c);
            for (int h = 0; h < 2; h++)
                for (int l = 0; l < 16; l++) {
                    int64_t col = c[h] + l;
                    if (col < 0 || col >= ((ne0 + 31) / 32) * 32) {
                        fprintf(stderr, "FAIL %s ne0=%lld task %lld: column %lld out of range\n",
                                dtype_name(type), (long long)ne0, (long long)i, (long long)col);
                        fails++;
                        continue;
                    }
                    seen[col]++;
                    got[col] = fmaf(sc[h], q[16 * h + l], mn[h]);
                }
        }
        float amax = 0;
        for (int64_t i = 0; i < ne0; i++)
            amax = fmaxf(amax, fabsf(ref[i]));
        int shown = 0;
        for (int64_t i = 0; i < ne0; i++) {
            float tol = 1e-6f * amax + 1e-30f;
            if (seen[i] != 1 || !(fabsf(got[i] - ref[i]) <= tol)) {
                if (shown++ < 5)
                    fprintf(stderr, "FAIL %s ne0=%lld el %lld: got %.9g want %.9g (seen %d)\n",
                            dtype_name(type), (long long)ne0, (long long)i, got[i], ref[i],
                            seen[i]);
                fails++;
            }
        }
        for (int64_t i = ne0; i < nt * 32; i++) /* padding of float rows decodes to 0 */
            if (seen[i] && got[i] != 0.0f) {
                fprintf(stderr, "FAIL %s ne0=%lld: padding column %lld decodes to %g\n",
                        dtype_name(type), (long long)ne0, (long long)i, got[i]);
                fails++;
                break;
            }
    }
    if (!fails)
        printf("ok   %-5s ne0=%-5lld pitch=%zu (ggml row %zu)\n", dtype_name(type), (long long)ne0,
               pitch, rb);
    free(src);
    free(dev);
    free(ref);
    free(got);
    free(seen);
    return fails ? 1 : 0;
}

/* ---- v2 -------------------------------------------------------------------- */

/* integer decoders: w = sc * (int8) q + mn against the oracle */
template <int T> static int check_idec(int64_t ne0, uint64_t *rng)
{
    const int type = T;
    size_t rb = dtype_row_size(type, ne0), pitch = qt_pitch(type, ne0);
    uint8_t *src = (uint8_t *)malloc(rb);
    uint8_t *dev = (uint8_t *)aligned_alloc(16, pitch);
    float *ref = (float *)malloc(ne0 * sizeof(float));
    float *got = (float *)malloc(ne0 * sizeof(float));
    int *seen = (int *)calloc(ne0, sizeof(int));
    int fails = 0;
    for (int rep = 0; rep < 4 && !fails; rep++) {
        random_row(type, src, ne0, rng);
        dequantize_row(type, src, ref, ne0);
        qt_pack_row(type, dev, src, ne0);
        memset(seen, 0, ne0 * sizeof(int));
        for (int64_t i = 0; i < qt_tasks(type, ne0); i++) {
            uint32_t q[8];
            float sc[2], mn[2];
            int64_t c[2];
            qt_idec<T>::task(dev, ne0, i, q, sc, mn, c);
            for (int h = 0; h < 2; h++) {
                if (c[h] % 16 || c[h] < 0 || c[h] + 16 > ne0) {
                    fprintf(stderr, "FAIL v2 %s task %lld: run at %lld\n", dtype_name(type),
                            (long long)i, (long long)c[h]);
                    fails++;
                    continue;
                }
                for (int l = 0; l < 16; l++) {
                    int8_t v = (int8_t)(q[4 * h + l / 4] >> (8 * (l % 4)));
                    got[c[h] + l] = fmaf(sc[h], (float)v, mn[h]);
                    seen[c[h] + l]++;
                }
            }
        }
        float amax = 0;
        for (int64_t i = 0; i < ne0; i++)
            amax = fmaxf(amax, fabsf(ref[i]));
        int shown = 0;
        for (int64_t i = 0; i < ne0; i++)
            if (seen[i] != 1 || !(fabsf(got[i] - ref[i]) <= 2e-6f * amax + 1e-30f)) {
                if (shown++ < 5)
                    fprintf(stderr, "FAIL v2 %s ne0=%lld el %lld: got %.9g want %.9g (seen %d)\n",
                            dtype_name(type), (long long)ne0, (long long)i, got[i], ref[i],
                            seen[i]);
                fails++;
            }
    }
    if (!fails)
        printf("ok   v2 idec %-5s ne0=%lld\n", dtype_name(type), (long long)ne0);
    free(src), free(dev), free(ref), free(got), free(seen);
    return fails ? 1 : 0;
}

/* relative error ||got - ref|| / ||ref|| */
static double rel_err(const double *got, const double *ref, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The whole integer path on the CPU: quantize NT rows of x the way
 * k_mmv2_quant does, run the 32 lanes of k_mmv2_q for every row, sum. */
template <int T, int NT, int U = mmv2_u<NT>::U>
static int check_mmv2_q(int64_t ne0, int64_t ne1, uint64_t *rng)
{
    const int type = T;
    size_t rb = dtype_row_size(type, ne0), pitch = qt_pitch(type, ne0);
    uint8_t *src = (uint8_t *)malloc(rb * ne1);
    uint8_t *W = (uint8_t *)aligned_alloc(16, pitch * ne1);
    float *wf = (float *)malloc(ne0 * ne1 * sizeof(float));
    for (int64_t r = 0; r < ne1; r++) {
        random_row(type, src + r * rb, ne0, rng);
        dequantize_row(type, src + r * rb, wf + r * ne0, ne0);
        qt_pack_row(type, W + r * pitch, src + r * rb, ne0);
    }
    /* x with an odd leading dimension and misaligned start, as the kernel allows */
    int64_t ldx = ne0 + 3;
    float *xbuf = (float *)malloc((NT * ldx + 1) * sizeof(float));
    float *x = xbuf + 1;
    for (int64_t i = 0; i < NT * ldx; i++)
        x[i] = tu_rand_f(rng) * ((i % 97) == 5 ? 8.0f : 1.0f);
    size_t xp = mmv2_xq_pitch(ne0);
    uint8_t *xq = (uint8_t *)aligned_alloc(16, xp * NT);
    memset(xq, 0xCD, xp * NT);
    for (int64_t b = 0; b < (ne0 / 32) * NT; b++)
        mmv2_quant_task(xq, xp, x, ldx, ne0, b);
    /* quantized x, dequantized: the exact input of the integer path */
    double *xd = (double *)malloc(NT * ne0 * sizeof(double));
    int fails = 0;
    for (int t = 0; t < NT; t++) {
        mmv2_xq xr = mmv2_xq_row(xq, xp, ne0, t);
        for (int64_t b = 0; b < ne0 / 32; b++) {
            int isum[2] = {0, 0};
            for (int l = 0; l < 32; l++) {
                int8_t v = (int8_t)xr.qs[32 * b + l];
                xd[t * ne0 + 32 * b + l] = (double)xr.d[b] * v;
                isum[l / 16] += v;
                if (fabs(xd[t * ne0 + 32 * b + l] - x[t * ldx + 32 * b + l]) > 0.5001 * xr.d[b]) {
                    if (fails++ < 3)
                        fprintf(stderr, "FAIL v2 quant t=%d col %lld: %g -> %g (d %g)\n", t,
                                (long long)(32 * b + l), x[t * ldx + 32 * b + l],
                                xd[t * ne0 + 32 * b + l], xr.d[b]);
                }
            }
            for (int h = 0; h < 2; h++)
                if (fabsf(xr.s[2 * b + h] - xr.d[b] * (float)isum[h]) > 1e-6f * fabsf(xr.s[2 * b + h]) + 1e-30f) {
                    if (fails++ < 3)
                        fprintf(stderr, "FAIL v2 quant t=%d block %lld: half sum %g want %g\n", t,
                                (long long)b, xr.s[2 * b + h], xr.d[b] * (float)isum[h]);
                }
        }
    }
    double *got = (double *)malloc(NT * ne1 * sizeof(double));
    double *ref_q = (double *)malloc(NT * ne1 * sizeof(double));
    double *ref_f = (double *)malloc(NT * ne1 * sizeof(double));
    for (int64_t r = 0; r < ne1; r++) {
        double tot[NT] = {};
        for (int lane = 0; lane < 32; lane++) {
            float acc[NT] = {};
            mmv2_lane_q<T, NT, U>(W + r * pitch, ne0, lane, xq, xp, acc);
            for (int t = 0; t < NT; t++)
                tot[t] += acc[t];
        }
        for (int t = 0; t < NT; t++) {
            double a = 0, b = 0;
            for (int64_t c = 0; c < ne0; c++) {
                a += (double)wf[r * ne0 + c] * xd[t * ne0 + c];
                b += (double)wf[r * ne0 + c] * x[t * ldx + c];
            }
            got[t * ne1 + r] = tot[t], ref_q[t * ne1 + r] = a, ref_f[t * ne1 + r] = b;
        }
    }
    double eq = rel_err(got, ref_q, NT * ne1), ef = rel_err(got, ref_f, NT * ne1);
    bool ok = eq <= 1e-5 && ef <= 5e-2 && !fails; /* x has outliers: coarse blocks */
    printf("%s v2 mmv %-5s %lldx%lld n_tok=%d U=%d rel(vs quantized x)=%.2e rel(vs f32 x)=%.2e\n",
           ok ? "ok  " : "FAIL", dtype_name(type), (long long)ne1, (long long)ne0, NT, U, eq, ef);
    free(src), free(W), free(wf), free(xbuf), free(xq), free(xd), free(got), free(ref_q), free(ref_f);
    return ok ? 0 : 1;
}

/* the float path: MMV2_FROWS rows per warp, an odd row count */
template <int T, int NT, int U = mmv2_u<NT>::U>
static int check_mmv2_f(int64_t ne0, int64_t ne1, uint64_t *rng)
{
    const int type = T;
    size_t rb = dtype_row_size(type, ne0), pitch = qt_pitch(type, ne0);
    uint8_t *src = (uint8_t *)malloc(rb * ne1);
    uint8_t *W = (uint8_t *)aligned_alloc(16, pitch * ne1);
    float *wf = (float *)malloc(ne0 * ne1 * sizeof(float));
    for (int64_t r = 0; r < ne1; r++) {
        random_row(type, src + r * rb, ne0, rng);
        dequantize_row(type, src + r * rb, wf + r * ne0, ne0);
        qt_pack_row(type, W + r * pitch, src + r * rb, ne0);
    }
    float *x = (float *)aligned_alloc(16, NT * ne0 * sizeof(float));
    for (int64_t i = 0; i < NT * ne0; i++)
        x[i] = tu_rand_f(rng);
    double *got = (double *)calloc(NT * ne1, sizeof(double));
    double *ref = (double *)malloc(NT * ne1 * sizeof(double));
    int64_t n_warps = (ne1 + MMV2_FROWS - 1) / MMV2_FROWS;
    for (int64_t wi = 0; wi < n_warps; wi++) {
        int64_t r0 = wi * MMV2_FROWS;
        const uint8_t *rows[MMV2_FROWS];
        for (int r = 0; r < MMV2_FROWS; r++)
            rows[r] = r0 + r < ne1 ? W + (r0 + r) * pitch : NULL;
        for (int lane = 0; lane < 32; lane++) {
            float acc[MMV2_FROWS][NT] = {};
            mmv2_lane_f<T, NT, MMV2_FROWS, U>(rows, ne0, lane, x, ne0, acc);
            for (int r = 0; r < MMV2_FROWS; r++)
                for (int t = 0; t < NT; t++)
                    if (r0 + r < ne1)
                        got[t * ne1 + r0 + r] += acc[r][t];
        }
    }
    for (int64_t r = 0; r < ne1; r++)
        for (int t = 0; t < NT; t++) {
            double a = 0;
            for (int64_t c = 0; c < ne0; c++)
                a += (double)wf[r * ne0 + c] * x[t * ne0 + c];
            ref[t * ne1 + r] = a;
        }
    double e = rel_err(got, ref, NT * ne1);
    bool ok = e <= 1e-5;
    printf("%s v2 mmv %-5s %lldx%lld n_tok=%d U=%d rel=%.2e\n", ok ? "ok  " : "FAIL",
           dtype_name(type), (long long)ne1, (long long)ne0, NT, U, e);
    free(src), free(W), free(wf), free(x), free(got), free(ref);
    return ok ? 0 : 1;
}

template <int T> static int check_mmv2_q_all(int64_t ne0, int64_t ne1, uint64_t *rng)
{
    return check_mmv2_q<T, 1>(ne0, ne1, rng) + check_mmv2_q<T, 1, 2>(ne0, ne1, rng) +
           check_mmv2_q<T, 2>(ne0, ne1, rng) +
           check_mmv2_q<T, 4>(ne0, ne1, rng) + check_mmv2_q<T, 8>(ne0, ne1, rng);
}

template <int T> static int check_mmv2_f_all(int64_t ne0, int64_t ne1, uint64_t *rng)
{
    return check_mmv2_f<T, 1>(ne0, ne1, rng) + check_mmv2_f<T, 1, 2>(ne0, ne1, rng) +
           check_mmv2_f<T, 2>(ne0, ne1, rng) +
           check_mmv2_f<T, 4>(ne0, ne1, rng) + check_mmv2_f<T, 8>(ne0, ne1, rng);
}

/* the block -> (matrix, row) map of a grouped launch covers every row of
 * every matrix exactly once (as matmul_cuda.cu fills mmv2_mats) */
static int check_mats(const int64_t *ne1, int n, int rows_per_warp)
{
    mmv2_mats M;
    memset(&M, 0, sizeof M);
    M.n = n;
    const int64_t rpb = (int64_t)MMV2_WARPS * rows_per_warp;
    for (int i = 0; i < n; i++) {
        M.ne1[i] = ne1[i];
        M.blk0[i + 1] = M.blk0[i] + (unsigned)((ne1[i] + rpb - 1) / rpb);
    }
    int fails = 0;
    int *seen[MMV2_MAXM];
    for (int i = 0; i < n; i++)
        seen[i] = (int *)calloc(ne1[i], sizeof(int));
    for (unsigned b = 0; b < M.blk0[n]; b++)
        for (int w = 0; w < MMV2_WARPS; w++) {
            int m;
            int64_t r0;
            if (!mmv2_mats_row(M, b, w, rows_per_warp, &m, &r0))
                continue;
            for (int r = 0; r < rows_per_warp; r++)
                if (r0 + r < ne1[m])
                    seen[m][r0 + r]++;
        }
    for (int i = 0; i < n; i++) {
        for (int64_t r = 0; r < ne1[i]; r++)
            if (seen[i][r] != 1 && fails++ < 3)
                fprintf(stderr, "FAIL v2 grouped launch: matrix %d row %lld done %d times\n", i,
                        (long long)r, seen[i][r]);
        free(seen[i]);
    }
    if (!fails)
        printf("ok   v2 grouped launch of %d matrices (first %lld rows), %d rows per warp\n", n,
               (long long)ne1[0], rows_per_warp);
    return fails ? 1 : 0;
}

static int check_v2(uint64_t *rng)
{
    int fails = 0;
    const int64_t qkv[] = {4096, 1024, 1024}, odd[] = {37, 1, 131}, gu[] = {14336, 14336};
    fails += check_mats(qkv, 3, 1) + check_mats(qkv, 3, MMV2_FROWS);
    fails += check_mats(odd, 3, 1) + check_mats(odd, 3, MMV2_FROWS);
    fails += check_mats(gu, 2, 1) + check_mats(odd, 1, MMV2_FROWS);
    const int64_t n32[] = {32, 160, 4096}, nK[] = {256, 1280};
    for (int64_t n : n32) {
        fails += check_idec<DT_Q8_0>(n, rng);
        fails += check_idec<DT_Q4_0>(n, rng);
        fails += check_idec<DT_Q4_1>(n, rng);
        fails += check_idec<DT_Q5_0>(n, rng);
        fails += check_idec<DT_Q5_1>(n, rng);
    }
    for (int64_t n : nK) {
        fails += check_idec<DT_Q2_K>(n, rng);
        fails += check_idec<DT_Q3_K>(n, rng);
        fails += check_idec<DT_Q4_K>(n, rng);
        fails += check_idec<DT_Q5_K>(n, rng);
        fails += check_idec<DT_Q6_K>(n, rng);
    }
    /* 1280 columns: 40 tasks (32-element types) or 5 blocks, so lanes past the
     * end and partial unrolled groups occur; 4608 = 18 K blocks: > 32 * U tasks */
    fails += check_mmv2_q_all<DT_Q8_0>(1280, 7, rng);
    fails += check_mmv2_q_all<DT_Q4_0>(1280, 5, rng);
    fails += check_mmv2_q_all<DT_Q4_1>(160, 5, rng);
    fails += check_mmv2_q_all<DT_Q5_0>(1280, 5, rng);
    fails += check_mmv2_q_all<DT_Q5_1>(160, 5, rng);
    fails += check_mmv2_q_all<DT_Q2_K>(1280, 3, rng);
    fails += check_mmv2_q_all<DT_Q3_K>(1280, 3, rng);
    fails += check_mmv2_q_all<DT_Q4_K>(4608, 3, rng);
    fails += check_mmv2_q_all<DT_Q5_K>(1280, 3, rng);
    fails += check_mmv2_q_all<DT_Q6_K>(4608, 3, rng);
    fails += check_mmv2_f_all<DT_F32>(1284, 5, rng);
    fails += check_mmv2_f_all<DT_F16>(1288, 5, rng);
    fails += check_mmv2_f_all<DT_BF16>(4104, 3, rng);
    return fails;
}

int main(void)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int fails = 0;
    const int64_t n32[] = {32, 64, 96, 160, 4096};
    const int64_t nK[] = {256, 512, 1280};
    const int64_t nF[] = {1, 31, 64, 70, 172, 256};
    for (int64_t n : nF) {
        fails += check_type<DT_F32>(n, &rng);
        fails += check_type<DT_F16>(n, &rng);
        fails += check_type<DT_BF16>(n, &rng);
    }
    for (int64_t n : n32) {
        fails += check_type<DT_Q8_0>(n, &rng);
        fails += check_type<DT_Q4_0>(n, &rng);
        fails += check_type<DT_Q4_1>(n, &rng);
        fails += check_type<DT_Q5_0>(n, &rng);
        fails += check_type<DT_Q5_1>(n, &rng);
    }
    for (int64_t n : nK) {
        fails += check_type<DT_Q2_K>(n, &rng);
        fails += check_type<DT_Q3_K>(n, &rng);
        fails += check_type<DT_Q4_K>(n, &rng);
        fails += check_type<DT_Q5_K>(n, &rng);
        fails += check_type<DT_Q6_K>(n, &rng);
    }
    fails += check_v2(&rng);
    if (qt_misaligned) {
        fprintf(stderr, "test_cuda_emul: %ld misaligned device loads\n", qt_misaligned);
        fails++;
    }
    if (fails) {
        fprintf(stderr, "test_cuda_emul: %d type/size combination(s) failed\n", fails);
        return 1;
    }
    fprintf(stderr, "test_cuda_emul: all checks passed\n");
    return 0;
}
