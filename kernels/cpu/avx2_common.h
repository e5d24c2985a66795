/* avx2_common.h - small AVX2 helpers shared by the AVX2 kernel files
 * (matmul_avx2.c: quantizers, unpack, prefill tiles; gemv_avx2.c: decode).
 * Include only from files compiled with -mavx2 -mfma -mf16c. */
#pragma once
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

AI float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI int32_t hsum256i(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

AI float h2f(uint16_t h) { return _cvtsh_ss(h); }

AI float hmax256(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* round(x*id) clamped to [-127, 127] as in quantize_row_q8_0/_k (lrintf: ties to even) */
AI __m256i q8_round(__m256 x, __m256 id)
{
    __m256i i = _mm256_cvtps_epi32(_mm256_mul_ps(x, id));
    i = _mm256_min_epi32(i, _mm256_set1_epi32(127));
    return _mm256_max_epi32(i, _mm256_set1_epi32(-127));
}

/* four vectors of 8 int32 in [-127,127] -> 32 int8 in order */
AI __m256i q8_pack(__m256i i0, __m256i i1, __m256i i2, __m256i i3)
{
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* 32 bits -> 32 bytes of 0x10 where the bit is set (5th bit of Q5 levels) */
AI __m256i bits_to_0x10(uint32_t bits)
{
    __m256i v = _mm256_set1_epi32((int)bits);
    v = _mm256_shuffle_epi8(v, _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2,
                                                2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i sel = _mm256_set1_epi64x(0x8040201008040201LL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

AI __m256i nibbles16(const uint8_t *qs)
{
    __m128i v = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
}

/* Q8_K super-block scale of 256 floats as quantize_row_q8_k: returns d =
 * amax/127 and sets *vid to its inverse (0 for an all-zero block). */
AI float q8k_scale(const float *xs, __m256 *vid)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < 256; j += 8)
        m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(xs + j), abs_mask));
    float d = hmax256(m) / 127.0f;
    *vid = _mm256_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
    return d;
}

/* 32 floats at xc -> their levels round(x*id) in four vectors of 8 int32 */
AI void q8_round32(const float *xc, __m256 vid, __m256i i[4])
{
    for (int k = 0; k < 4; k++)
        i[k] = q8_round(_mm256_loadu_ps(xc + 8 * k), vid);
}

/* One block of 32 floats as quantize_row_q8_0: levels in four vectors of 8
 * int32 (in order), scale rounded to f16 returned. */
AI float q8_block32(const float *xb, __m256i *i0, __m256i *i1, __m256i *i2, __m256i *i3)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
    __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, abs_mask), _mm256_and_ps(v1, abs_mask)),
                             _mm256_max_ps(_mm256_and_ps(v2, abs_mask), _mm256_and_ps(v3, abs_mask)));
    float d = h2f(_cvtss_sh(hmax256(m) / 127.0f, _MM_FROUND_TO_NEAREST_INT));
    __m256 vid = _mm256_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
    *i0 = q8_round(v0, vid), *i1 = q8_round(v1, vid), *i2 = q8_round(v2, vid), *i3 = q8_round(v3, vid);
    return d;
}

/* ---- decode helpers shared by the gemv*_avx2.c kernels ------------------- */

AI uint64_t ld_u16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

/* The f16 at p, p + ws, p + 2 ws, p + 3 ws (one field of 4 rows) packed in 64
 * bits. The empty asm keeps the gather in general registers: gcc otherwise
 * builds it with a chain of vector shuffles on the busy vector pipes. */
AI uint64_t f16_rows4(const uint8_t *p, size_t ws)
{
    uint64_t a = ld_u16(p), b = ld_u16(p + ws), c = ld_u16(p + 2 * ws), d = ld_u16(p + 3 * ws);
    __asm__("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d));
    return a | b << 16 | c << 32 | d << 48;
}

/* f16 field of blocks b (at p) and b+1 (p + bs) of 4 rows -> [b: rows 0..3 | b+1: rows 0..3] */
AI __m256 f16_rows4_blk2(const uint8_t *p, size_t ws, size_t bs)
{
    return _mm256_cvtph_ps(
        _mm_set_epi64x((long long)f16_rows4(p + bs, ws), (long long)f16_rows4(p, ws)));
}

/* Per-call table of an activation vector: for each pair of blocks i,
 * out[8i..8i+7] = k * [v[2i] x4 | v[2i+1] x4] (the lane order of the 4-row sums). */
static inline void pair_table(const float *v, int64_t n_pairs, float k, float *out)
{
    for (int64_t i = 0; i < n_pairs; i++)
        _mm256_store_ps(out + 8 * i, _mm256_set_m128(_mm_set1_ps(k * v[2 * i + 1]),
                                                     _mm_set1_ps(k * v[2 * i])));
}

/* prefetch n_lines 64-byte lines from p into L1 (n_lines a small constant) */
AI void prefetch_lines(const uint8_t *p, const int n_lines)
{
#pragma GCC unroll 9
    for (int k = 0; k < n_lines; k++)
        _mm_prefetch((const char *)p + 64 * k, _MM_HINT_T0);
}

/* Transposed reduction of 4 rows in 16-bit lanes: p_r holds 16 partial sums
 * of row r (lanes 0..7: block b, 8..15: block b+1), each |.| <= 8191 (4 of
 * them are added in 16 bits, then pairs in 32). Returns the i32 row sums
 * [b: rows 0..3 | b+1: rows 0..3]. Folding dwords, then qwords, leaves each
 * row-block's two 16-bit partial sums adjacent ([r0 r0 r1 r1 r2 r2 r3 r3]
 * per 128-bit lane), so one vpmaddwd by ones adds them: 10 operations, no
 * byte shuffle (the unpack-16 version before it took 11). */
AI __m256i reduce4_i16(__m256i p0, __m256i p1, __m256i p2, __m256i p3)
{
    __m256i t01 = _mm256_add_epi16(_mm256_unpacklo_epi32(p0, p1), _mm256_unpackhi_epi32(p0, p1));
    __m256i t23 = _mm256_add_epi16(_mm256_unpacklo_epi32(p2, p3), _mm256_unpackhi_epi32(p2, p3));
    __m256i u = _mm256_add_epi16(_mm256_unpacklo_epi64(t01, t23), _mm256_unpackhi_epi64(t01, t23));
    return _mm256_madd_epi16(u, _mm256_set1_epi16(1));
}

/* The same in 32-bit lanes: c_r = [b: 4 partial sums | b+1: 4] of row r. */
AI __m256i reduce4_i32(__m256i c0, __m256i c1, __m256i c2, __m256i c3)
{
    __m256i t01 = _mm256_add_epi32(_mm256_unpacklo_epi32(c0, c1), _mm256_unpackhi_epi32(c0, c1));
    __m256i t23 = _mm256_add_epi32(_mm256_unpacklo_epi32(c2, c3), _mm256_unpackhi_epi32(c2, c3));
    return _mm256_add_epi32(_mm256_unpacklo_epi64(t01, t23), _mm256_unpackhi_epi64(t01, t23));
}

/* lanes 0..3 + lanes 4..7 of acc (rows 0..3) plus the scalar tail sums,
 * row r stored at y[r * ys] (rows a quarter of a chunk apart) */
AI void store_rows4s(__m256 acc, const float tail[4], float *y, size_t ys)
{
    float v[4];
    _mm_storeu_ps(v, _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1)));
    for (int r = 0; r < 4; r++)
        y[r * ys] = v[r] + tail[r];
}
