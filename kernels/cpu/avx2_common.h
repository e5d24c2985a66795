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
