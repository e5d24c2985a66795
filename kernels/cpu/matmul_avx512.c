/* matmul_avx512.c - AVX-512 (F/BW/VL/DQ + VNNI) matmul kernels, compiled with
 * those flags and called only after CPUID + XCR0 say the CPU and OS have them.
 *
 * Same unpacked layouts and activation quantization as the AVX2 kernels
 * (cpu_kernels.h; the quantizers and unpackers are the AVX2 ones), with
 * 512-bit tiles of up to 4 rows x 4 tokens that take two 32-element blocks
 * per instruction:
 *   family A: vpdpbusd (u8 x s8 -> s32, no int16 saturation) per block pair,
 *             scales dw*dx from a per-tile table spread with vpermps;
 *   family K: vpmaddubsw, then vpdpwssd with the int16 scales (fuses the
 *             madd and the accumulate);
 *   float types: 16-wide FMA, masked tails.
 * One-token family-A and Q4_K products use the AVX2 fused decode kernels (bound by
 * memory bandwidth, not by vector width). */
#include <immintrin.h>
#include <string.h>

#include "../../core/dtype.h"
#include "cpu_kernels.h"

#define AI static inline __attribute__((always_inline))

AI float hsum256_512(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- family A ---------------------------------------------------------------- */

AI void tile_a512(const uint8_t *const *wu, const uint8_t *const *xq, int64_t n, float *y,
                  int64_t ldy, float *tbl, const int RR, const int RT, const int sgn)
{
    int64_t nb = n / 32, nbp = cpu_pad8(nb);
    const float *dw[4], *cw[4], *dx[4], *sx[4];
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++) {
        dw[r] = (const float *)(wu[r] + n), cw[r] = dw[r] + nbp;
#pragma GCC unroll 4
        for (int t = 0; t < RT; t++)
            acc[r][t] = _mm512_setzero_ps();
    }
#pragma GCC unroll 4
    for (int t = 0; t < RT; t++)
        dx[t] = (const float *)(xq[t] + n), sx[t] = dx[t] + nbp;
    /* products dw*dx; the padding past nb is 0, so an odd last block pairs
     * with a zero-scaled neighbour (its bytes are in-bounds: the row's scales) */
    for (int r = 0; r < RR; r++)
        for (int t = 0; t < RT; t++)
            for (int64_t b = 0; b < nbp; b += 8)
                _mm256_store_ps(tbl + (r * RT + t) * nbp + b,
                                _mm256_mul_ps(_mm256_load_ps(dw[r] + b), _mm256_load_ps(dx[t] + b)));
    const __m512i pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i zero = _mm512_setzero_si512();
    for (int64_t b = 0; b < nb; b += 2) {
        __m512i q[4], aq[4];
        __mmask64 neg[4];
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++) {
            q[r] = _mm512_loadu_si512((const void *)(wu[r] + 32 * b));
            if (sgn) {
                aq[r] = _mm512_abs_epi8(q[r]);
                neg[r] = _mm512_movepi8_mask(q[r]);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < RT; t++) {
            __m512i x = _mm512_loadu_si512((const void *)(xq[t] + 32 * b));
#pragma GCC unroll 4
            for (int r = 0; r < RR; r++) {
                __m512i i = sgn ? _mm512_dpbusd_epi32(zero, aq[r], _mm512_mask_sub_epi8(x, neg[r], zero, x))
                                : _mm512_dpbusd_epi32(zero, q[r], x);
                __m128d s2 = _mm_load_sd((const double *)(tbl + (r * RT + t) * nbp + b));
                __m512 s = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(_mm_castpd_ps(s2)));
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), s, acc[r][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < RT; t++)
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++) {
            float off = 0.0f;
            if (!sgn) {
                __m256 o = _mm256_setzero_ps();
                for (int64_t b = 0; b < nbp; b += 8)
                    o = _mm256_fmadd_ps(_mm256_load_ps(cw[r] + b), _mm256_load_ps(sx[t] + b), o);
                off = hsum256_512(o);
            }
            y[t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]) + off;
        }
}

/* ---- family K ---------------------------------------------------------------- */

AI void tile_k512(const uint8_t *const *wu, const uint8_t *const *xq, int64_t n, float *y,
                  int64_t ldy, const int RR, const int RT)
{
    int64_t ns = n / 256, nc = n / 32;
    float facc[4][4][16] __attribute__((aligned(64)));
    const uint8_t *wq[4];
    const int16_t *wsc[4], *wm[4];
    const float *wd[4], *wdm[4], *dx[4];
    const int16_t *bs[4];
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++) {
        wq[r] = wu[r];
        wsc[r] = (const int16_t *)(wu[r] + n);
        wd[r] = (const float *)(wsc[r] + 16 * nc);
        wdm[r] = wd[r] + ns;
        wm[r] = (const int16_t *)(wdm[r] + ns);
#pragma GCC unroll 4
        for (int t = 0; t < RT; t++)
            _mm512_store_ps(facc[r][t], _mm512_setzero_ps());
    }
#pragma GCC unroll 4
    for (int t = 0; t < RT; t++) {
        dx[t] = (const float *)(xq[t] + n);
        bs[t] = (const int16_t *)(dx[t] + ns);
    }
    for (int64_t s = 0; s < ns; s++) {
        __m512i ia[4][4];
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++)
                ia[r][t] = _mm512_setzero_si512();
#pragma GCC unroll 1
        for (int c = 0; c < 8; c += 2) {
            __m512i q[4], sc[4];
#pragma GCC unroll 4
            for (int r = 0; r < RR; r++) {
                q[r] = _mm512_loadu_si512((const void *)(wq[r] + 256 * s + 32 * c));
                sc[r] = _mm512_loadu_si512((const void *)(wsc[r] + 16 * (8 * s + c)));
            }
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++) {
                __m512i x = _mm512_loadu_si512((const void *)(xq[t] + 256 * s + 32 * c));
#pragma GCC unroll 4
                for (int r = 0; r < RR; r++)
                    ia[r][t] = _mm512_dpwssd_epi32(ia[r][t], _mm512_maddubs_epi16(q[r], x), sc[r]);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++) {
            __m256i mv = _mm256_loadu_si256((const __m256i *)(wm[r] + 16 * s));
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++) {
                float dxs = dx[t][s];
                __m256i mi = _mm256_madd_epi16(mv, _mm256_loadu_si256((const __m256i *)(bs[t] + 16 * s)));
                __m512 f = _mm512_load_ps(facc[r][t]);
                f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[r][t]), _mm512_set1_ps(wd[r][s] * dxs), f);
                f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_zextsi256_si512(mi)),
                                    _mm512_set1_ps(wdm[r][s] * dxs), f);
                _mm512_store_ps(facc[r][t], f);
                __asm__ volatile("" ::: "memory");
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < RT; t++)
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++)
            y[t * ldy + r] = _mm512_reduce_add_ps(_mm512_load_ps(facc[r][t]));
}

/* ---- float weights ------------------------------------------------------------- */

AI __m512 load_w16(int type, const uint8_t *w, int64_t i, __mmask16 m)
{
    if (type == DT_F32)
        return _mm512_maskz_loadu_ps(m, (const float *)w + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
    if (type == DT_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AI void tile_f512(int type, const uint8_t *const *wr, const float *const *x, int64_t n, float *y,
                  int64_t ldy, const int RR, const int RT)
{
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < RT; t++)
            acc[r][t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 w[4];
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++)
            w[r] = load_w16(type, wr[r], i, m);
#pragma GCC unroll 4
        for (int t = 0; t < RT; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x[t] + i);
#pragma GCC unroll 4
            for (int r = 0; r < RR; r++)
                acc[r][t] = _mm512_fmadd_ps(w[r], xv, acc[r][t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < RT; t++)
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++)
            y[t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]);
}

/* ---- drivers ----------------------------------------------------------------- */

#define DISPATCH_RT(CALL, RR)                                                                      \
    switch (rt) {                                                                                  \
    case 1: CALL(RR, 1); break;                                                                    \
    case 2: CALL(RR, 2); break;                                                                    \
    case 3: CALL(RR, 3); break;                                                                    \
    default: CALL(RR, 4); break;                                                                   \
    }
#define DISPATCH(CALL)                                                                             \
    switch (rr) {                                                                                  \
    case 1: DISPATCH_RT(CALL, 1) break;                                                            \
    case 2: DISPATCH_RT(CALL, 2) break;                                                            \
    case 3: DISPATCH_RT(CALL, 3) break;                                                            \
    default: DISPATCH_RT(CALL, 4) break;                                                           \
    }

static void gemm512_quant(const cpu_gemm_args *a, int family_k, int sgn)
{
    if (a->n_tok < 2 && (!family_k || a->type == DT_Q4_K)) {
        cpu_kernel_avx2(a->type).gemm(a);
        return;
    }
    int act = family_k ? CPU_ACT_Q8KB : CPU_ACT_Q8B;
    size_t ub = cpu_unpacked_row_bytes(act, a->n);
    float *tbl = (float *)(a->scratch + CPU_TILE_ROWS * ub);
    const int rr_max = 4;
    for (int64_t r0 = 0; r0 < a->n_rows; r0 += rr_max) {
        int rr = (int)(a->n_rows - r0 < rr_max ? a->n_rows - r0 : rr_max);
        const uint8_t *wu[4];
        for (int k = 0; k < rr; k++) {
            uint8_t *dst = a->scratch + k * ub;
            const uint8_t *src = a->w + (r0 + k) * a->w_stride;
            if (family_k)
                cpu_avx2_unpack_k(a->type, src, dst, a->n);
            else
                cpu_avx2_unpack_a(a->type, src, dst, a->n);
            wu[k] = dst;
        }
        for (int64_t t0 = 0; t0 < a->n_tok; t0 += 4) {
            int rt = (int)(a->n_tok - t0 < 4 ? a->n_tok - t0 : 4);
            const uint8_t *xq[4];
            for (int k = 0; k < rt; k++)
                xq[k] = a->x + (t0 + k) * a->x_stride;
            float *y = a->y + t0 * a->ldy + r0;
            if (family_k) {
#define CALL_K(RR, RT) tile_k512(wu, xq, a->n, y, a->ldy, RR, RT)
                DISPATCH(CALL_K)
            } else if (sgn) {
#define CALL_AS(RR, RT) tile_a512(wu, xq, a->n, y, a->ldy, tbl, RR, RT, 1)
                DISPATCH(CALL_AS)
            } else {
#define CALL_AU(RR, RT) tile_a512(wu, xq, a->n, y, a->ldy, tbl, RR, RT, 0)
                DISPATCH(CALL_AU)
            }
        }
    }
}

static void gemm512_a_unsigned(const cpu_gemm_args *a) { gemm512_quant(a, 0, 0); }
static void gemm512_a_signed(const cpu_gemm_args *a) { gemm512_quant(a, 0, 1); }
static void gemm512_k(const cpu_gemm_args *a) { gemm512_quant(a, 1, 0); }

static void gemm512_float(const cpu_gemm_args *a)
{
    const int rr_max = 4;
    for (int64_t r0 = 0; r0 < a->n_rows; r0 += rr_max) {
        int rr = (int)(a->n_rows - r0 < rr_max ? a->n_rows - r0 : rr_max);
        const uint8_t *wr[4];
        for (int k = 0; k < rr; k++)
            wr[k] = a->w + (r0 + k) * a->w_stride;
        for (int64_t t0 = 0; t0 < a->n_tok; t0 += 4) {
            int rt = (int)(a->n_tok - t0 < 4 ? a->n_tok - t0 : 4);
            const float *xr[4];
            for (int k = 0; k < rt; k++)
                xr[k] = (const float *)(a->x + (t0 + k) * a->x_stride);
            float *y = a->y + t0 * a->ldy + r0;
            switch (a->type) {
            case DT_F32: {
#define CALL_F32(RR, RT) tile_f512(DT_F32, wr, xr, a->n, y, a->ldy, RR, RT)
                DISPATCH(CALL_F32)
                break;
            }
            case DT_F16: {
#define CALL_F16(RR, RT) tile_f512(DT_F16, wr, xr, a->n, y, a->ldy, RR, RT)
                DISPATCH(CALL_F16)
                break;
            }
            default: {
#define CALL_BF16(RR, RT) tile_f512(DT_BF16, wr, xr, a->n, y, a->ldy, RR, RT)
                DISPATCH(CALL_BF16)
                break;
            }
            }
        }
    }
}

cpu_kernel cpu_kernel_avx512(int type)
{
    cpu_kernel k = {CPU_ACT_F32, NULL, NULL};
    switch (type) {
    case DT_F32:
    case DT_F16:
    case DT_BF16:
        k.gemm = gemm512_float;
        break;
    case DT_Q4_0:
    case DT_Q4_1:
    case DT_Q5_0:
    case DT_Q5_1:
        k.act = CPU_ACT_Q8B, k.quantize = cpu_avx2_quant_q8b, k.gemm = gemm512_a_unsigned;
        break;
    case DT_Q8_0:
        k.act = CPU_ACT_Q8B, k.quantize = cpu_avx2_quant_q8b, k.gemm = gemm512_a_signed;
        break;
    case DT_Q2_K:
    case DT_Q3_K:
    case DT_Q4_K:
    case DT_Q5_K:
    case DT_Q6_K:
        k.act = CPU_ACT_Q8KB, k.quantize = cpu_avx2_quant_q8kb, k.gemm = gemm512_k;
        break;
    }
    return k;
}
