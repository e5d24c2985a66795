/* gemv_k56_avx2.c - AVX2 decode of Q5_K and Q6_K weights for 1..8 tokens,
 * read straight from the weights (no unpack pass), q8kb activations.
 * Called through cpu_avx2_gemv (gemv_avx2.c) for any n_tok; matmul.c routes
 * 2..cpu_avx2_gemv_k56_max(type) tokens here instead of to the prefill GEMM.
 *
 * Per row and super-block the levels are decoded in registers (no unpack
 * to memory) and multiplied with the activations by vpmaddubsw, the group
 * scales applied by vpmaddwd into one integer accumulator per token.
 * Row kernels (k6_row, k5_row): one row, 1..8 tokens in registers, so each
 * 32-element chunk is decoded once for all tokens; per super-block the
 * integer sums of the tokens are reduced exactly and one float per token
 * is added in order; the next row is prefetched.
 * One token: 4 rows at a time (k5_rows4, k6_rows4), row i of each quarter
 * of the call's rows, so the kernel reads 4 long sequential streams that
 * the hardware prefetchers follow, without software prefetch (as gemv_avx2.c;
 * an earlier Q6_K 4-row kernel on 4 consecutive rows with a software
 * prefetch of the next group was 10-30% slower than the row kernel, the
 * quarter layout is ~18% faster than it); the integer sums of the 4 rows
 * reduced exactly to [r0 r1 r2 r3]; rows past the last multiple of 4 go
 * through the row kernel.
 *
 * Both paths do the same float work per (row, token, super-block):
 *   Q6_K: y = fma((float)isum, d * dx, y)
 *         isum = sum_g sc[g] * sum_i q[i] * x[i] - 32 * sum_g sc[g] * bsums[g]
 *   Q5_K: y = y + fms((float)isum, d * dx, (float)msum * (dmin * dx))
 *         isum = sum_g sc[g] * sum_i q[i] * x[i], msum = sum_g mn[g] * (bsums[2g] + bsums[2g+1])
 * so one token and several tokens give the same floats, and tensor-parallel
 * column slices on super-block boundaries sum to the floats of the whole row
 * (up to the order of the final additions), as test_engine_shard expects.
 *
 * Bounds: Q6_K levels 0..63, Q5_K 0..31, activations |x| <= 127, so a
 * vpmaddubsw pair stays below 2 * 63 * 128 < 2^15 (no saturation) and every
 * partial sum of a super-block below 256 * 128 * (63 + 32) * 127 < 2^31. */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "../../core/dtype.h"
#include "../../core/dtype_blocks.h"
#include "avx2_common.h"
#include "cpu_kernels.h"

#define K56_MAX 8 /* most tokens per call */

int cpu_avx2_gemv_k56_max(int type)
{
    return type == DT_Q5_K || type == DT_Q6_K ? K56_MAX : 0;
}

/* ---- shared pieces ---------------------------------------------------------- */

/* [sum v0, sum v1, sum v2, sum v3] of four vectors of 8 int32, exact */
AI __m128i k56_sum4(__m256i v0, __m256i v1, __m256i v2, __m256i v3)
{
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* [sum v0 .. sum v7] of eight vectors of 8 int32, exact */
AI __m256i k56_sum8(const __m256i *v)
{
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

AI uint32_t k56_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* The f16 at p, p + ws, p + 2 ws, p + 3 ws (one field of 4 rows) -> 4 floats
 * (gathered in general registers by f16_rows4, avx2_common.h). */
AI __m128 k56_f16_rows4(const uint8_t *p, size_t ws)
{
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)f16_rows4(p, ws)));
}

/* Keeps v in a register here: without it gcc reassociates the accumulator
 * chains of the multi-token kernels into trees of 64 products per
 * super-block and spills most of them (measured 12% slower). */
AI void k56_keep(__m256i *v)
{
    __asm__("" : "+x"(*v));
}

/* Per-call table of the activation scales: dxt[8 s + t] = dx of token t in
 * super-block s (zero for t >= nt). */
static void k56_dx_table(const cpu_gemm_args *a, float *dxt)
{
    const int64_t ns = a->n / 256;
    for (int64_t s = 0; s < ns; s++)
        for (int t = 0; t < 8; t++)
            dxt[8 * s + t] = t < a->n_tok ? ((const float *)(a->x + t * a->x_stride + a->n))[s] : 0.0f;
}

/* ---- Q6_K ------------------------------------------------------------------- */

/* levels 0..63 of elements 128 h + 32 k .. + 31 of block b:
 * low 4 bits from ql[64 h + 32 (k & 1)] (k < 2: low nibbles, else high),
 * high 2 bits from qh[32 h] bits 2k, 2k+1 */
AI __m256i k6_levels(const dt_block_q6_k *b, const int h, const int k)
{
    const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
    __m256i ql = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (k & 1)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
    __m256i lo = k < 2 ? _mm256_and_si256(ql, m4) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
    /* bits 2k, 2k+1 of each byte to bits 4, 5 (the 16-bit shifts only move
     * bits between bytes outside the 0x30 mask) */
    __m256i hb = k == 0 ? _mm256_slli_epi16(qh, 4) : k == 1 ? _mm256_slli_epi16(qh, 2)
               : k == 2 ? qh : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(lo, _mm256_and_si256(hb, m30));
}

/* scales of half h as [sc 8h..8h+7 | the same] (int16) from sc16 = [sc 0..7 | sc 8..15] */
AI __m256i k6_half_scales(__m256i sc16, const int h)
{
    return h ? _mm256_permute2x128_si256(sc16, sc16, 0x11) : _mm256_permute2x128_si256(sc16, sc16, 0x00);
}

/* the scales of chunk k of a half: [sc 2k x8 | sc 2k+1 x8] (the 16-bit lanes of
 * vpmaddubsw over 32 elements: lanes 0..7 = elements 0..15, one group of 16) */
AI __m256i k6_chunk_scales(__m256i sch, const int k)
{
    return _mm256_shuffle_epi8(sch, _mm256_set_m128i(_mm_set1_epi16((short)(0x0302 + 0x0404 * k)),
                                                     _mm_set1_epi16((short)(0x0100 + 0x0404 * k))));
}

/* one Q6_K row x NT (1..8) q8kb tokens (xs bytes apart) -> y[t * ldy];
 * dxt: table of k56_dx_table; pf: the next row to prefetch, or NULL */
AI void k6_row(const uint8_t *w, const uint8_t *pf, const uint8_t *x, size_t xs, int64_t n,
               const float *dxt, float *y, int64_t ldy, const int NT)
{
    const int64_t ns = n / 256;
    __m256 yv = _mm256_setzero_ps(); /* lane t: token t */
    for (int64_t s = 0; s < ns; s++) {
        const dt_block_q6_k *b = (const dt_block_q6_k *)w + s;
        if (pf)
            prefetch_lines(pf + sizeof(dt_block_q6_k) * s, 4);
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        __m256i scm = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 5));
        __m256i ia[8];
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++) {
            const int16_t *bs = (const int16_t *)(x + t * xs + n + 4 * ns) + 16 * s;
            ia[t] = t < NT ? _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bs), scm)
                           : _mm256_setzero_si256();
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i sch = k6_half_scales(sc16, h);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                __m256i lv = k6_levels(b, h, k), sv = k6_chunk_scales(sch, k);
#pragma GCC unroll 8
                for (int t = 0; t < NT; t++) {
                    const uint8_t *xt = x + t * xs + 256 * s + 128 * h + 32 * k;
                    __m256i p = _mm256_maddubs_epi16(lv, _mm256_load_si256((const __m256i *)xt));
                    ia[t] = _mm256_add_epi32(ia[t], _mm256_madd_epi16(p, sv));
                }
#pragma GCC unroll 8
                for (int t = 0; t < NT; t++)
                    k56_keep(&ia[t]);
            }
        }
        __m256 dd = _mm256_mul_ps(_mm256_set1_ps(h2f(b->d)), _mm256_load_ps(dxt + 8 * s));
        __m256 f;
        if (NT <= 4)
            f = _mm256_zextps128_ps256(_mm_cvtepi32_ps(k56_sum4(ia[0], ia[1], ia[2], ia[3])));
        else
            f = _mm256_cvtepi32_ps(k56_sum8(ia));
        yv = _mm256_fmadd_ps(f, dd, yv);
    }
    float out[8];
    _mm256_storeu_ps(out, yv);
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
        y[t * ldy] = out[t];
}

/* 4 Q6_K rows (ws bytes apart: row i of each quarter of the call's rows)
 * x one q8kb row -> y[r * ys]: the integer sums of each row as in k6_row,
 * the 4 rows reduced to [r0 r1 r2 r3] exactly, one 4-wide FMA per
 * super-block (the same floats as k6_row with one token). */
static void k6_rows4(const uint8_t *w, size_t ws, const uint8_t *xq, int64_t n, float *y, size_t ys)
{
    const int64_t ns = n / 256;
    const float *dx = (const float *)(xq + n);
    const int16_t *bsums = (const int16_t *)(dx + ns);
    __m128 yv = _mm_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t *x = xq + 256 * s;
        __m256i bsv = _mm256_loadu_si256((const __m256i *)(bsums + 16 * s));
        __m256i ia[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const dt_block_q6_k *b = (const dt_block_q6_k *)(w + r * ws) + s;
            __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
            __m256i scm = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 5));
            __m256i acc = _mm256_madd_epi16(bsv, scm);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i sch = k6_half_scales(sc16, h);
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    __m256i p = _mm256_maddubs_epi16(k6_levels(b, h, k),
                                                     _mm256_load_si256((const __m256i *)(x + 128 * h + 32 * k)));
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, k6_chunk_scales(sch, k)));
                    k56_keep(&acc);
                }
            }
            ia[r] = acc;
        }
        const uint8_t *b0 = w + s * sizeof(dt_block_q6_k) + offsetof(dt_block_q6_k, d);
        __m128 dd = _mm_mul_ps(k56_f16_rows4(b0, ws), _mm_set1_ps(dx[s]));
        yv = _mm_fmadd_ps(_mm_cvtepi32_ps(k56_sum4(ia[0], ia[1], ia[2], ia[3])), dd, yv);
    }
    float v[4];
    _mm_storeu_ps(v, yv);
    for (int r = 0; r < 4; r++)
        y[r * ys] = v[r];
}

/* ---- Q5_K ------------------------------------------------------------------- */

/* 12 scale bytes -> 8 six-bit scales (bytes 0..7) and 8 mins (bytes 8..15),
 * unpacked in general registers */
AI __m128i k5_scales(const uint8_t *s)
{
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    uint32_t a = k56_u32(s), b = k56_u32(s + 4), c = k56_u32(s + 8);
    __asm__("" : "+r"(a), "+r"(b), "+r"(c)); /* keep the unpack on the integer pipes */
    uint64_t sc = (uint64_t)((c & m4) | (((a >> 6) & m2) << 4)) << 32 | (a & m6);
    uint64_t mn = (uint64_t)(((c >> 4) & m4) | (((b >> 6) & m2) << 4)) << 32 | (b & m6);
    return _mm_set_epi64x((long long)mn, (long long)sc);
}

/* 5th bits of group g (bit g of qh[l]) as 0x10 bytes */
AI __m256i k5_hbits(__m256i qh, const int g)
{
    const __m256i m10 = _mm256_set1_epi8(0x10);
    __m256i v = g < 4 ? _mm256_slli_epi16(qh, 4 - g) : g == 4 ? qh : _mm256_srli_epi16(qh, g - 4);
    return _mm256_and_si256(v, m10);
}

/* levels 0..31 of group pair j (elements 64 j .. 64 j + 63): lo = group 2j, hi = 2j+1 */
AI void k5_levels(const dt_block_q5_k *b, __m256i qh, const int j, __m256i *lo, __m256i *hi)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * j));
    *lo = _mm256_or_si256(_mm256_and_si256(v, m4), k5_hbits(qh, 2 * j));
    *hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), k5_hbits(qh, 2 * j + 1));
}

/* scales [sc 0..7 | sc 0..7] (int16) and mins [mn0 mn0 mn1 mn1 .. mn7 mn7] (int16,
 * one per 16 bsums) of a block */
AI void k5_scale_vectors(const dt_block_q5_k *b, __m256i *scv, __m256i *mnv)
{
    __m128i scmn = k5_scales(b->scales);
    *scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scmn));
    *mnv = _mm256_cvtepu8_epi16(
        _mm_shuffle_epi8(scmn, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
}

/* the scale of group g in all 16 lanes */
AI __m256i k5_group_scale(__m256i scv, const int g)
{
    return _mm256_shuffle_epi8(scv, _mm256_set1_epi16((short)(0x0100 + 0x0202 * g)));
}

/* integer level sum of one Q5_K block with 256 q8 levels x (8 lanes to be added) */
AI __m256i k5_block_sum(const dt_block_q5_k *b, __m256i scv, const uint8_t *x)
{
    __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
    __m256i ia = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m256i lo, hi;
        k5_levels(b, qh, j, &lo, &hi);
        __m256i plo = _mm256_maddubs_epi16(lo, _mm256_load_si256((const __m256i *)(x + 64 * j)));
        __m256i phi = _mm256_maddubs_epi16(hi, _mm256_load_si256((const __m256i *)(x + 64 * j + 32)));
        ia = _mm256_add_epi32(ia, _mm256_add_epi32(_mm256_madd_epi16(plo, k5_group_scale(scv, 2 * j)),
                                                   _mm256_madd_epi16(phi, k5_group_scale(scv, 2 * j + 1))));
    }
    return ia;
}

/* Step part 1 of k5_rows4: per row of 4 Q5_K rows (ws bytes apart) in
 * super-block s, [level sums, lanes folded to 4 | min sums folded to 4]. */
AI void k5_prod4(const uint8_t *w, size_t ws, const uint8_t *xq, int64_t n, int64_t s, __m256i v[4])
{
    const int16_t *bsums = (const int16_t *)(xq + n + 4 * (n / 256));
    const uint8_t *x = xq + 256 * s;
    __m256i bsv = _mm256_loadu_si256((const __m256i *)(bsums + 16 * s));
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
        const dt_block_q5_k *b = (const dt_block_q5_k *)(w + r * ws) + s;
        __m256i scv, mnv;
        k5_scale_vectors(b, &scv, &mnv);
        __m256i ia = k5_block_sum(b, scv, x), im = _mm256_madd_epi16(bsv, mnv);
        v[r] = _mm256_add_epi32(_mm256_blend_epi32(ia, im, 0xf0), _mm256_permute2x128_si256(ia, im, 0x21));
    }
}

/* Step part 2: the rows' vectors reduced exactly to [level sums r0..r3 |
 * min sums r0..r3], scaled and added to yv */
AI __m128 k5_fold4(const __m256i v[4], const uint8_t *w, size_t ws, int64_t s, float dx, __m128 yv)
{
    __m256i t01 = _mm256_add_epi32(_mm256_unpacklo_epi32(v[0], v[1]), _mm256_unpackhi_epi32(v[0], v[1]));
    __m256i t23 = _mm256_add_epi32(_mm256_unpacklo_epi32(v[2], v[3]), _mm256_unpackhi_epi32(v[2], v[3]));
    __m256i sv = _mm256_add_epi32(_mm256_unpacklo_epi64(t01, t23), _mm256_unpackhi_epi64(t01, t23));
    const uint8_t *b0 = w + s * sizeof(dt_block_q5_k);
    __m128 fi = _mm_cvtepi32_ps(_mm256_castsi256_si128(sv));
    __m128 fm = _mm_cvtepi32_ps(_mm256_extracti128_si256(sv, 1));
    __m128 dxs = _mm_set1_ps(dx);
    __m128 a1 = _mm_mul_ps(k56_f16_rows4(b0, ws), dxs), a2 = _mm_mul_ps(k56_f16_rows4(b0 + 2, ws), dxs);
    return _mm_add_ps(yv, _mm_fmsub_ps(fi, a1, _mm_mul_ps(fm, a2)));
}

/* 4 Q5_K rows (ws bytes apart: row i of each quarter of the call's rows)
 * x one q8kb row -> y[r * ys]. The integer sums of the 4 rows are reduced
 * to [r0 r1 r2 r3] exactly, then one float per row is added per
 * super-block. Software-pipelined by one super-block (as k23_dec,
 * gemv_k23_avx2.c): the reduction and float work of super-block s - 1
 * follow the products of s (+3% on one thread; the same for Q6_K
 * measured no gain). */
static void k5_rows4(const uint8_t *w, size_t ws, const uint8_t *xq, int64_t n, float *y, size_t ys)
{
    const int64_t ns = n / 256;
    const float *dx = (const float *)(xq + n);
    __m128 yv = _mm_setzero_ps();
    __m256i v[4], pv[4];
    k5_prod4(w, ws, xq, n, 0, pv);
    for (int64_t s = 1; s < ns; s++) {
        k5_prod4(w, ws, xq, n, s, v);
        yv = k5_fold4(pv, w, ws, s - 1, dx[s - 1], yv);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            pv[r] = v[r];
    }
    yv = k5_fold4(pv, w, ws, ns - 1, dx[ns - 1], yv);
    float out[4];
    _mm_storeu_ps(out, yv);
    for (int r = 0; r < 4; r++)
        y[r * ys] = out[r];
}

/* one Q5_K row x NT (1..8) q8kb tokens -> y[t * ldy] (as k6_row) */
AI void k5_row(const uint8_t *w, const uint8_t *pf, const uint8_t *x, size_t xs, int64_t n,
               const float *dxt, float *y, int64_t ldy, const int NT)
{
    const int64_t ns = n / 256;
    __m256 yv = _mm256_setzero_ps();
    for (int64_t s = 0; s < ns; s++) {
        const dt_block_q5_k *b = (const dt_block_q5_k *)w + s;
        if (pf)
            prefetch_lines(pf + sizeof(dt_block_q5_k) * s, 3);
        __m256i scv, mnv;
        k5_scale_vectors(b, &scv, &mnv);
        __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
        __m256i ia[8], im[8];
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++)
            ia[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m256i lo, hi;
            k5_levels(b, qh, j, &lo, &hi);
            __m256i slo = k5_group_scale(scv, 2 * j), shi = k5_group_scale(scv, 2 * j + 1);
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                const uint8_t *xt = x + t * xs + 256 * s + 64 * j;
                __m256i plo = _mm256_maddubs_epi16(lo, _mm256_load_si256((const __m256i *)xt));
                __m256i phi = _mm256_maddubs_epi16(hi, _mm256_load_si256((const __m256i *)(xt + 32)));
                ia[t] = _mm256_add_epi32(ia[t], _mm256_add_epi32(_mm256_madd_epi16(plo, slo),
                                                                 _mm256_madd_epi16(phi, shi)));
            }
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++)
                k56_keep(&ia[t]);
        }
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++) {
            const int16_t *bs = (const int16_t *)(x + t * xs + n + 4 * ns) + 16 * s;
            im[t] = t < NT ? _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bs), mnv)
                           : _mm256_setzero_si256();
        }
        __m256 dxv = _mm256_load_ps(dxt + 8 * s);
        __m256 a1 = _mm256_mul_ps(_mm256_set1_ps(h2f(b->d)), dxv);
        __m256 a2 = _mm256_mul_ps(_mm256_set1_ps(h2f(b->dmin)), dxv);
        __m256 fi, fm;
        if (NT <= 4) {
            fi = _mm256_zextps128_ps256(_mm_cvtepi32_ps(k56_sum4(ia[0], ia[1], ia[2], ia[3])));
            fm = _mm256_zextps128_ps256(_mm_cvtepi32_ps(k56_sum4(im[0], im[1], im[2], im[3])));
        } else {
            fi = _mm256_cvtepi32_ps(k56_sum8(ia));
            fm = _mm256_cvtepi32_ps(k56_sum8(im));
        }
        yv = _mm256_add_ps(yv, _mm256_fmsub_ps(fi, a1, _mm256_mul_ps(fm, a2)));
    }
    float out[8];
    _mm256_storeu_ps(out, yv);
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
        y[t * ldy] = out[t];
}

/* ---- drivers ---------------------------------------------------------------- */

#define K56_ROW_DISPATCH(FN)                                                                       \
    static void FN##_n(const uint8_t *w, const uint8_t *pf, const uint8_t *x, size_t xs, int64_t n, \
                       const float *dxt, float *y, int64_t ldy, int nt)                            \
    {                                                                                              \
        switch (nt) {                                                                              \
        case 1: FN(w, pf, x, xs, n, dxt, y, ldy, 1); break;                                        \
        case 2: FN(w, pf, x, xs, n, dxt, y, ldy, 2); break;                                        \
        case 3: FN(w, pf, x, xs, n, dxt, y, ldy, 3); break;                                        \
        case 4: FN(w, pf, x, xs, n, dxt, y, ldy, 4); break;                                        \
        case 5: FN(w, pf, x, xs, n, dxt, y, ldy, 5); break;                                        \
        case 6: FN(w, pf, x, xs, n, dxt, y, ldy, 6); break;                                        \
        case 7: FN(w, pf, x, xs, n, dxt, y, ldy, 7); break;                                        \
        default: FN(w, pf, x, xs, n, dxt, y, ldy, 8); break;                                       \
        }                                                                                          \
    }
K56_ROW_DISPATCH(k6_row)
K56_ROW_DISPATCH(k5_row)
#undef K56_ROW_DISPATCH

/* Decode of 1..K56_MAX tokens of Q5_K / Q6_K; returns 1 when it computed
 * a->y, 0 (fallback to unpack + tiles) for other types, rows that are not
 * whole super-blocks, too many tokens or no scratch for the dx table. */
int cpu_avx2_gemv_k56(const cpu_gemm_args *a)
{
    const int type = a->type;
    if ((type != DT_Q5_K && type != DT_Q6_K) || a->n <= 0 || a->n % 256 || a->n_tok < 1 ||
        a->n_tok > K56_MAX || !a->scratch)
        return 0;
    const int q6 = type == DT_Q6_K;
    const size_t ws = a->w_stride;
    int64_t r = 0;
    if (a->n_tok == 1) {
        /* group i: row i of each quarter (4 sequential streams, gemv_avx2.c) */
        const int64_t q = a->n_rows / 4;
        for (int64_t i = 0; i < q; i++) {
            if (q6)
                k6_rows4(a->w + i * ws, (size_t)q * ws, a->x, a->n, a->y + i, (size_t)q);
            else
                k5_rows4(a->w + i * ws, (size_t)q * ws, a->x, a->n, a->y + i, (size_t)q);
        }
        r = 4 * q;
        if (r == a->n_rows)
            return 1;
    }
    float *dxt = (float *)a->scratch;
    k56_dx_table(a, dxt);
    for (; r < a->n_rows; r++) {
        const uint8_t *w = a->w + r * ws;
        const uint8_t *pf = r + 1 < a->n_rows ? w + ws : NULL;
        if (q6)
            k6_row_n(w, pf, a->x, a->x_stride, a->n, dxt, a->y + r, a->ldy, (int)a->n_tok);
        else
            k5_row_n(w, pf, a->x, a->x_stride, a->n, dxt, a->y + r, a->ldy, (int)a->n_tok);
    }
    return 1;
}
