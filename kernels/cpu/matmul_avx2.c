/* matmul_avx2.c - AVX2 + FMA + F16C matmul kernels for every weight type
 * (compiled with -mavx2 -mfma -mf16c; called only after a CPUID check).
 *
 * Quantized weights: each row is unpacked once per block of tokens into
 * integer levels (layouts in cpu_kernels.h), then RR rows x RT tokens tiles
 * use vpmaddubsw/vpmaddwd integer dot products against 8-bit activations
 * (Q8_0-style blocks for the 32-element types, Q8_K for the K-quants).
 * Float weights (F32/F16/BF16) use FMA directly on float activations. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../../core/dtype.h"
#include "../../core/dtype_blocks.h"
#include "cpu_kernels.h"

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

/* ---- activation quantizers -------------------------------------------------- */

void cpu_avx2_quant_q8b(const float *x, uint8_t *xq, int64_t n)
{
    int64_t nb = n / 32, nbp = cpu_pad8(nb);
    int8_t *qs = (int8_t *)xq;
    float *dx = (float *)(xq + n), *sx = dx + nbp;
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + 32 * b;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, abs_mask), _mm256_and_ps(v1, abs_mask)),
                                 _mm256_max_ps(_mm256_and_ps(v2, abs_mask), _mm256_and_ps(v3, abs_mask)));
        float amax = hmax256(m);
        float d = h2f(_cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT));
        float id = d > 0.0f ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        __m256i i0 = q8_round(v0, vid), i1 = q8_round(v1, vid), i2 = q8_round(v2, vid),
                i3 = q8_round(v3, vid);
        int32_t s = hsum256i(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
        _mm256_storeu_si256((__m256i *)(qs + 32 * b), q8_pack(i0, i1, i2, i3));
        dx[b] = d;
        sx[b] = d * (float)s;
    }
    for (int64_t b = nb; b < nbp; b++)
        dx[b] = sx[b] = 0.0f;
}

void cpu_avx2_quant_q8kb(const float *x, uint8_t *xq, int64_t n)
{
    int64_t ns = n / 256;
    int8_t *qs = (int8_t *)xq;
    float *dx = (float *)(xq + n);
    int16_t *bs = (int16_t *)(dx + ns);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t s = 0; s < ns; s++) {
        const float *xs = x + 256 * s;
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < 256; j += 8)
            m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(xs + j), abs_mask));
        float amax = hmax256(m);
        float d = amax / 127.0f;
        float id = d > 0.0f ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        for (int c = 0; c < 8; c++) {
            const float *xc = xs + 32 * c;
            __m256i i0 = q8_round(_mm256_loadu_ps(xc), vid);
            __m256i i1 = q8_round(_mm256_loadu_ps(xc + 8), vid);
            __m256i i2 = q8_round(_mm256_loadu_ps(xc + 16), vid);
            __m256i i3 = q8_round(_mm256_loadu_ps(xc + 24), vid);
            bs[16 * s + 2 * c] = (int16_t)hsum256i(_mm256_add_epi32(i0, i1));
            bs[16 * s + 2 * c + 1] = (int16_t)hsum256i(_mm256_add_epi32(i2, i3));
            _mm256_storeu_si256((__m256i *)(qs + 256 * s + 32 * c), q8_pack(i0, i1, i2, i3));
        }
        dx[s] = d;
    }
}

/* ---- unpack: family A ------------------------------------------------------- */

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

void cpu_avx2_unpack_a(int type, const uint8_t *w, uint8_t *u, int64_t n)
{
    int64_t nb = n / 32, nbp = cpu_pad8(nb);
    float *dw = (float *)(u + n), *cw = dw + nbp;
    switch (type) {
    case DT_Q4_0: {
        const dt_block_q4_0 *b = (const void *)w;
        for (int64_t i = 0; i < nb; i++) {
            _mm256_store_si256((__m256i *)(u + 32 * i), nibbles16(b[i].qs));
            float d = h2f(b[i].d);
            dw[i] = d, cw[i] = -8.0f * d;
        }
        break;
    }
    case DT_Q4_1: {
        const dt_block_q4_1 *b = (const void *)w;
        for (int64_t i = 0; i < nb; i++) {
            _mm256_store_si256((__m256i *)(u + 32 * i), nibbles16(b[i].qs));
            dw[i] = h2f(b[i].d), cw[i] = h2f(b[i].m);
        }
        break;
    }
    case DT_Q5_0: {
        const dt_block_q5_0 *b = (const void *)w;
        for (int64_t i = 0; i < nb; i++) {
            uint32_t qh;
            memcpy(&qh, b[i].qh, 4);
            _mm256_store_si256((__m256i *)(u + 32 * i),
                               _mm256_or_si256(nibbles16(b[i].qs), bits_to_0x10(qh)));
            float d = h2f(b[i].d);
            dw[i] = d, cw[i] = -16.0f * d;
        }
        break;
    }
    case DT_Q5_1: {
        const dt_block_q5_1 *b = (const void *)w;
        for (int64_t i = 0; i < nb; i++) {
            uint32_t qh;
            memcpy(&qh, b[i].qh, 4);
            _mm256_store_si256((__m256i *)(u + 32 * i),
                               _mm256_or_si256(nibbles16(b[i].qs), bits_to_0x10(qh)));
            dw[i] = h2f(b[i].d), cw[i] = h2f(b[i].m);
        }
        break;
    }
    case DT_Q8_0: {
        const dt_block_q8_0 *b = (const void *)w;
        for (int64_t i = 0; i < nb; i++) {
            _mm256_store_si256((__m256i *)(u + 32 * i),
                               _mm256_loadu_si256((const __m256i *)b[i].qs));
            dw[i] = h2f(b[i].d), cw[i] = 0.0f;
        }
        break;
    }
    }
    for (int64_t i = nb; i < nbp; i++)
        dw[i] = cw[i] = 0.0f;
}

/* ---- unpack: family K ------------------------------------------------------- */

typedef struct kq_row {
    uint8_t *q;
    int16_t *sc; /* [nc][16] */
    float *d, *dm;
    int16_t *m;  /* [ns][16] */
} kq_row;

static kq_row kq_row_at(uint8_t *u, int64_t n)
{
    kq_row r;
    int64_t nc = n / 32, ns = n / 256;
    r.q = u;
    r.sc = (int16_t *)(u + n);
    r.d = (float *)(r.sc + 16 * nc);
    r.dm = r.d + ns;
    r.m = (int16_t *)(r.dm + ns);
    return r;
}

AI void store_sc_pair(int16_t *dst, int a, int b)
{
    _mm256_storeu_si256((__m256i *)dst,
                        _mm256_set_m128i(_mm_set1_epi16((short)b), _mm_set1_epi16((short)a)));
}

static void k4_decode(const uint8_t *s, int sc[8], int mn[8])
{
    for (int g = 0; g < 4; g++) {
        sc[g] = s[g] & 63;
        mn[g] = s[g + 4] & 63;
        sc[g + 4] = (s[g + 8] & 15) | ((s[g] >> 6) << 4);
        mn[g + 4] = (s[g + 8] >> 4) | ((s[g + 4] >> 6) << 4);
    }
}

void cpu_avx2_unpack_k(int type, const uint8_t *w, uint8_t *u, int64_t n)
{
    int64_t ns = n / 256;
    kq_row r = kq_row_at(u, n);
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    for (int64_t s = 0; s < ns; s++) {
        uint8_t *q = r.q + 256 * s;
        int16_t *sc = r.sc + 128 * s, *m = r.m + 16 * s;
        switch (type) {
        case DT_Q4_K:
        case DT_Q5_K: {
            const uint8_t *scales, *qs, *qh = NULL;
            uint16_t d, dmin;
            if (type == DT_Q4_K) {
                const dt_block_q4_k *b = (const dt_block_q4_k *)w + s;
                scales = b->scales, qs = b->qs, d = b->d, dmin = b->dmin;
            } else {
                const dt_block_q5_k *b = (const dt_block_q5_k *)w + s;
                scales = b->scales, qs = b->qs, qh = b->qh, d = b->d, dmin = b->dmin;
            }
            int scv[8], mnv[8];
            k4_decode(scales, scv, mnv);
            __m256i hv = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
            for (int j = 0; j < 4; j++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
                __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (qh) {
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hv, one), 4));
                    hv = _mm256_srli_epi16(hv, 1);
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(hv, one), 4));
                    hv = _mm256_srli_epi16(hv, 1);
                }
                _mm256_store_si256((__m256i *)(q + 64 * j), lo);
                _mm256_store_si256((__m256i *)(q + 64 * j + 32), hi);
            }
            for (int g = 0; g < 8; g++) {
                store_sc_pair(sc + 16 * g, scv[g], scv[g]);
                m[2 * g] = m[2 * g + 1] = (int16_t)mnv[g];
            }
            r.d[s] = h2f(d);
            r.dm[s] = -h2f(dmin);
            break;
        }
        case DT_Q2_K: {
            const dt_block_q2_k *b = (const dt_block_q2_k *)w + s;
            for (int h = 0; h < 2; h++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
                for (int k = 0; k < 4; k++) {
                    _mm256_store_si256((__m256i *)(q + 128 * h + 32 * k), _mm256_and_si256(v, m3));
                    v = _mm256_srli_epi16(v, 2);
                }
            }
            for (int c = 0; c < 8; c++)
                store_sc_pair(sc + 16 * c, b->scales[2 * c] & 15, b->scales[2 * c + 1] & 15);
            for (int g = 0; g < 16; g++)
                m[g] = (int16_t)(b->scales[g] >> 4);
            r.d[s] = h2f(b->d);
            r.dm[s] = -h2f(b->dmin);
            break;
        }
        case DT_Q3_K: {
            const dt_block_q3_k *b = (const dt_block_q3_k *)w + s;
            __m256i hv = _mm256_loadu_si256((const __m256i *)b->hmask);
            for (int h = 0; h < 2; h++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
                for (int k = 0; k < 4; k++) {
                    __m256i lo = _mm256_and_si256(v, m3);
                    __m256i hb = _mm256_slli_epi16(_mm256_and_si256(hv, one), 2);
                    _mm256_store_si256((__m256i *)(q + 128 * h + 32 * k), _mm256_or_si256(lo, hb));
                    v = _mm256_srli_epi16(v, 2);
                    hv = _mm256_srli_epi16(hv, 1);
                }
            }
            int sv[16];
            for (int g = 0; g < 16; g++) {
                int lo4 = (b->scales[g % 8] >> (4 * (g / 8))) & 15;
                int hi2 = (b->scales[8 + g % 4] >> (2 * (g / 4))) & 3;
                sv[g] = (lo4 | (hi2 << 4)) - 32;
                m[g] = (int16_t)sv[g];
            }
            for (int c = 0; c < 8; c++)
                store_sc_pair(sc + 16 * c, sv[2 * c], sv[2 * c + 1]);
            float d = h2f(b->d);
            r.d[s] = d;
            r.dm[s] = -4.0f * d;
            break;
        }
        case DT_Q6_K: {
            const dt_block_q6_k *b = (const dt_block_q6_k *)w + s;
            for (int h = 0; h < 2; h++) {
                __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
                __m256i hv = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
                __m256i lows[4] = {_mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                                   _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4)};
                for (int k = 0; k < 4; k++) {
                    __m256i hb = _mm256_slli_epi16(_mm256_and_si256(hv, m3), 4);
                    _mm256_store_si256((__m256i *)(q + 128 * h + 32 * k), _mm256_or_si256(lows[k], hb));
                    hv = _mm256_srli_epi16(hv, 2);
                }
            }
            for (int c = 0; c < 8; c++)
                store_sc_pair(sc + 16 * c, b->scales[2 * c], b->scales[2 * c + 1]);
            for (int g = 0; g < 16; g++)
                m[g] = b->scales[g];
            float d = h2f(b->d);
            r.d[s] = d;
            r.dm[s] = -32.0f * d;
            break;
        }
        }
    }
}

/* ---- tiles ------------------------------------------------------------------- */

/* RR unpacked family-A rows x RT q8b activation rows. tbl: scratch for
 * RR*RT*nbp floats, the products dw[r][b]*dx[t][b] (8 per multiply, so the
 * inner loop needs 4 vector ops per block and tile entry: maddubs, madd,
 * cvt, fma). */
AI void tile_a(const uint8_t *const *wu, const uint8_t *const *xq, int64_t n, float *y, int64_t ldy,
               float *tbl, const int RR, const int RT, const int sgn)
{
    int64_t nb = n / 32, nbp = cpu_pad8(nb);
    __m256 acc[4][4];
    const float *dw[4], *cw[4], *dx[4], *sx[4];
    #pragma GCC unroll 4
    for (int r = 0; r < RR; r++) {
        dw[r] = (const float *)(wu[r] + n), cw[r] = dw[r] + nbp;
        #pragma GCC unroll 4
        for (int t = 0; t < RT; t++)
            acc[r][t] = _mm256_setzero_ps();
    }
    #pragma GCC unroll 4
    for (int t = 0; t < RT; t++)
        dx[t] = (const float *)(xq[t] + n), sx[t] = dx[t] + nbp;
    #pragma GCC unroll 4
    for (int r = 0; r < RR; r++)
        #pragma GCC unroll 4
        for (int t = 0; t < RT; t++)
            for (int64_t b = 0; b < nbp; b += 8)
                _mm256_store_ps(tbl + (r * RT + t) * nbp + b,
                                _mm256_mul_ps(_mm256_load_ps(dw[r] + b), _mm256_load_ps(dx[t] + b)));
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; b++) {
        __m256i q[4], aq[4];
        #pragma GCC unroll 4
        for (int r = 0; r < RR; r++) {
            q[r] = _mm256_load_si256((const __m256i *)(wu[r] + 32 * b));
            if (sgn)
                aq[r] = _mm256_abs_epi8(q[r]);
        }
        #pragma GCC unroll 4
        for (int t = 0; t < RT; t++) {
            __m256i x = _mm256_load_si256((const __m256i *)(xq[t] + 32 * b));
            #pragma GCC unroll 4
            for (int r = 0; r < RR; r++) {
                __m256i p = sgn ? _mm256_maddubs_epi16(aq[r], _mm256_sign_epi8(x, q[r]))
                                : _mm256_maddubs_epi16(q[r], x);
                __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                acc[r][t] = _mm256_fmadd_ps(f, _mm256_broadcast_ss(tbl + (r * RT + t) * nbp + b),
                                            acc[r][t]);
            }
        }
    }
    if (!sgn) {
        for (int64_t b = 0; b < nbp; b += 8)
            #pragma GCC unroll 4
            for (int r = 0; r < RR; r++) {
                __m256 c = _mm256_load_ps(cw[r] + b);
                #pragma GCC unroll 4
                for (int t = 0; t < RT; t++)
                    acc[r][t] = _mm256_fmadd_ps(c, _mm256_load_ps(sx[t] + b), acc[r][t]);
            }
    }
    #pragma GCC unroll 4
    for (int t = 0; t < RT; t++)
        #pragma GCC unroll 4
        for (int r = 0; r < RR; r++)
            y[t * ldy + r] = hsum256(acc[r][t]);
}

/* RR unpacked family-K rows x RT q8kb activation rows. The float
 * accumulators live in memory (touched once per super-block) so that the
 * RR*RT integer accumulators, weights, scales and x fit the 16 registers. */
AI void tile_k(const uint8_t *const *wu, const uint8_t *const *xq, int64_t n, float *y, int64_t ldy,
               const int RR, const int RT)
{
    int64_t ns = n / 256;
    float facc[4][4][8] __attribute__((aligned(32)));
    kq_row w[4];
    const float *dx[4];
    const int16_t *bs[4];
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++) {
        w[r] = kq_row_at((uint8_t *)wu[r], n);
#pragma GCC unroll 4
        for (int t = 0; t < RT; t++)
            _mm256_store_ps(facc[r][t], _mm256_setzero_ps());
    }
#pragma GCC unroll 4
    for (int t = 0; t < RT; t++) {
        dx[t] = (const float *)(xq[t] + n);
        bs[t] = (const int16_t *)(dx[t] + ns);
    }
    for (int64_t s = 0; s < ns; s++) {
        __m256i ia[4][4];
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++)
                ia[r][t] = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int c = 0; c < 8; c++) {
            __m256i q[4], sc[4];
#pragma GCC unroll 4
            for (int r = 0; r < RR; r++) {
                q[r] = _mm256_load_si256((const __m256i *)(w[r].q + 256 * s + 32 * c));
                sc[r] = _mm256_load_si256((const __m256i *)(w[r].sc + 16 * (8 * s + c)));
            }
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++) {
                __m256i x = _mm256_load_si256((const __m256i *)(xq[t] + 256 * s + 32 * c));
#pragma GCC unroll 4
                for (int r = 0; r < RR; r++)
                    ia[r][t] = _mm256_add_epi32(
                        ia[r][t], _mm256_madd_epi16(_mm256_maddubs_epi16(q[r], x), sc[r]));
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++) {
            __m256i mv = _mm256_loadu_si256((const __m256i *)(w[r].m + 16 * s));
            __m256 d = _mm256_broadcast_ss(w[r].d + s), dm = _mm256_broadcast_ss(w[r].dm + s);
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++) {
                __m256 dxb = _mm256_broadcast_ss(dx[t] + s);
                __m256i mi = _mm256_madd_epi16(mv, _mm256_loadu_si256((const __m256i *)(bs[t] + 16 * s)));
                __m256 f = _mm256_load_ps(facc[r][t]);
                f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[r][t]), _mm256_mul_ps(d, dxb), f);
                f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mi), _mm256_mul_ps(dm, dxb), f);
                _mm256_store_ps(facc[r][t], f);
                __asm__ volatile("" ::: "memory"); /* keep facc in memory */
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < RT; t++)
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++)
            y[t * ldy + r] = hsum256(_mm256_load_ps(facc[r][t]));
}

/* RR float-type weight rows x RT f32 activation rows */
AI __m256 load_w8(int type, const uint8_t *w, int64_t i)
{
    if (type == DT_F32)
        return _mm256_loadu_ps((const float *)w + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (type == DT_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AI float load_w1(int type, const uint8_t *w, int64_t i)
{
    if (type == DT_F32)
        return ((const float *)w)[i];
    uint16_t h;
    memcpy(&h, w + 2 * i, 2);
    if (type == DT_F16)
        return h2f(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

AI void tile_f(int type, const uint8_t *const *wr, const float *const *x, int64_t n, float *y,
               int64_t ldy, const int RR, const int RT)
{
    __m256 acc[4][4];
    #pragma GCC unroll 4
    for (int r = 0; r < RR; r++)
        #pragma GCC unroll 4
        for (int t = 0; t < RT; t++)
            acc[r][t] = _mm256_setzero_ps();
    int64_t n8 = n & ~(int64_t)7;
    for (int64_t i = 0; i < n8; i += 8) {
        __m256 w[4];
        #pragma GCC unroll 4
        for (int r = 0; r < RR; r++)
            w[r] = load_w8(type, wr[r], i);
        #pragma GCC unroll 4
        for (int t = 0; t < RT; t++) {
            __m256 xv = _mm256_loadu_ps(x[t] + i);
            #pragma GCC unroll 4
            for (int r = 0; r < RR; r++)
                acc[r][t] = _mm256_fmadd_ps(w[r], xv, acc[r][t]);
        }
    }
    #pragma GCC unroll 4
    for (int t = 0; t < RT; t++)
        #pragma GCC unroll 4
        for (int r = 0; r < RR; r++) {
            float s = hsum256(acc[r][t]);
            for (int64_t i = n8; i < n; i++)
                s += load_w1(type, wr[r], i) * x[t][i];
            y[t * ldy + r] = s;
        }
}

/* ---- decode (one token): family A without the unpack pass ------------------ */

/* one block of `type` -> 32 levels (u8; s8 for Q8_0), its scale d and offset coefficient cw */
AI __m256i blk_a_levels(int type, const uint8_t *blk, float *d, float *cw)
{
    switch (type) {
    case DT_Q4_0: {
        const dt_block_q4_0 *b = (const void *)blk;
        *d = h2f(b->d), *cw = -8.0f * *d;
        return nibbles16(b->qs);
    }
    case DT_Q4_1: {
        const dt_block_q4_1 *b = (const void *)blk;
        *d = h2f(b->d), *cw = h2f(b->m);
        return nibbles16(b->qs);
    }
    case DT_Q5_0: {
        const dt_block_q5_0 *b = (const void *)blk;
        uint32_t qh;
        memcpy(&qh, b->qh, 4);
        *d = h2f(b->d), *cw = -16.0f * *d;
        return _mm256_or_si256(nibbles16(b->qs), bits_to_0x10(qh));
    }
    case DT_Q5_1: {
        const dt_block_q5_1 *b = (const void *)blk;
        uint32_t qh;
        memcpy(&qh, b->qh, 4);
        *d = h2f(b->d), *cw = h2f(b->m);
        return _mm256_or_si256(nibbles16(b->qs), bits_to_0x10(qh));
    }
    default: {
        const dt_block_q8_0 *b = (const void *)blk;
        *d = h2f(b->d), *cw = 0.0f;
        return _mm256_loadu_si256((const __m256i *)b->qs);
    }
    }
}

/* f16 field at byte offset `off` of 8 consecutive blocks of `bs` bytes -> 8 floats */
AI __m256 f16x8(const uint8_t *blk, size_t bs, size_t off)
{
    uint16_t h[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        memcpy(&h[j], blk + j * bs + off, 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

/* RR rows of `type` (straight from the weights) x one q8b activation row.
 * Scales are converted 8 blocks at a time; the offset term (cw * sx) is one
 * 8-wide FMA per 8 blocks. */
AI void dec_a(int type, const uint8_t *w, size_t w_stride, const uint8_t *xq, int64_t n, float *y,
              const int RR)
{
    const size_t bs = type == DT_Q4_0 ? 18 : type == DT_Q4_1 ? 20 : type == DT_Q5_0 ? 22
                    : type == DT_Q5_1 ? 24 : 34;
    const int sgn = type == DT_Q8_0, has_m = type == DT_Q4_1 || type == DT_Q5_1;
    const float cwk = type == DT_Q4_0 ? -8.0f : type == DT_Q5_0 ? -16.0f : 0.0f;
    int64_t nb = n / 32, nbp = cpu_pad8(nb), nb8 = nb & ~(int64_t)7;
    const float *dx = (const float *)(xq + n), *sx = dx + nbp;
    __m256 acc[2], oacc[2];
    float ds[2][8] __attribute__((aligned(32)));
#pragma GCC unroll 2
    for (int r = 0; r < RR; r++)
        acc[r] = _mm256_setzero_ps(), oacc[r] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        int m = b0 < nb8 ? 8 : (int)(nb - b0);
        if (m == 8) {
            __m256 dx8 = _mm256_loadu_ps(dx + b0), sx8 = _mm256_loadu_ps(sx + b0);
#pragma GCC unroll 2
            for (int r = 0; r < RR; r++) {
                const uint8_t *blk = w + r * w_stride + b0 * bs;
                __m256 d8 = f16x8(blk, bs, 0);
                _mm256_store_ps(ds[r], _mm256_mul_ps(d8, dx8));
                if (has_m)
                    oacc[r] = _mm256_fmadd_ps(f16x8(blk, bs, 2), sx8, oacc[r]);
                else if (cwk != 0.0f)
                    oacc[r] = _mm256_fmadd_ps(d8, sx8, oacc[r]);
            }
        } else {
            for (int r = 0; r < RR; r++)
                for (int j = 0; j < m; j++) {
                    const uint8_t *blk = w + r * w_stride + (b0 + j) * bs;
                    float d, cw;
                    blk_a_levels(type, blk, &d, &cw);
                    ds[r][j] = d * dx[b0 + j];
                    oacc[r] = _mm256_add_ps(oacc[r], _mm256_setr_ps(has_m ? cw * sx[b0 + j] : (cwk != 0.0f ? d * sx[b0 + j] : 0.0f), 0, 0, 0, 0, 0, 0, 0));
                }
        }
        for (int j = 0; j < m; j++) {
            int64_t b = b0 + j;
            __m256i x = _mm256_load_si256((const __m256i *)(xq + 32 * b));
#pragma GCC unroll 2
            for (int r = 0; r < RR; r++) {
                const uint8_t *blk = w + r * w_stride + b * bs;
                _mm_prefetch((const char *)blk + 1024, _MM_HINT_T0);
                float d, cw;
                __m256i q = blk_a_levels(type, blk, &d, &cw);
                __m256i p = sgn ? _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(x, q))
                                : _mm256_maddubs_epi16(q, x);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)),
                                         _mm256_broadcast_ss(&ds[r][j]), acc[r]);
            }
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < RR; r++)
        y[r] = hsum256(acc[r]) + (has_m ? 1.0f : cwk) * hsum256(oacc[r]);
}

static void gemv_a(const cpu_gemm_args *a)
{
    for (int64_t t = 0; t < a->n_tok; t++) {
        const uint8_t *xq = a->x + t * a->x_stride;
        float *y = a->y + t * a->ldy;
        int64_t r = 0;
        switch (a->type) {
#define DEC_CASE(T)                                                                                \
    case T:                                                                                        \
        for (; r + 2 <= a->n_rows; r += 2)                                                         \
            dec_a(T, a->w + r * a->w_stride, a->w_stride, xq, a->n, y + r, 2);                     \
        for (; r < a->n_rows; r++)                                                                 \
            dec_a(T, a->w + r * a->w_stride, a->w_stride, xq, a->n, y + r, 1);                     \
        break;
            DEC_CASE(DT_Q4_0)
            DEC_CASE(DT_Q4_1)
            DEC_CASE(DT_Q5_0)
            DEC_CASE(DT_Q5_1)
            DEC_CASE(DT_Q8_0)
#undef DEC_CASE
        }
    }
}

/* ---- decode (one token): Q4_K without the unpack pass ---------------------- */

/* 12 scale bytes -> 8 six-bit scales (bytes 0..7) and 8 mins (bytes 8..15) */
AI void q4k_scales(const uint8_t *s, uint32_t u[4])
{
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    uint32_t a, b, c;
    memcpy(&a, s, 4), memcpy(&b, s + 4, 4), memcpy(&c, s + 8, 4);
    u[0] = a & m6;                                     /* sc 0..3 */
    u[1] = (c & m4) | (((a >> 6) & m2) << 4);          /* sc 4..7 */
    u[2] = b & m6;                                     /* mn 0..3 */
    u[3] = ((c >> 4) & m4) | (((b >> 6) & m2) << 4);   /* mn 4..7 */
}

AI void dec_k4(const uint8_t *w, size_t w_stride, const uint8_t *xq, int64_t n, float *y, const int RR)
{
    int64_t ns = n / 256;
    const float *dx = (const float *)(xq + n);
    const int16_t *bsums = (const int16_t *)(dx + ns);
    __m256 acc[2];
    __m128 macc[2];
#pragma GCC unroll 2
    for (int r = 0; r < RR; r++)
        acc[r] = _mm256_setzero_ps(), macc[r] = _mm_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t *xs = xq + 256 * s;
        /* pair sums of the 16 bsums: 8 int16, one per group of 32 */
        __m256i bs = _mm256_loadu_si256((const __m256i *)(bsums + 16 * s));
        __m128i bp = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        float dxs = dx[s];
#pragma GCC unroll 2
        for (int r = 0; r < RR; r++) {
            const dt_block_q4_k *b = (const dt_block_q4_k *)(w + r * w_stride) + s;
            _mm_prefetch((const char *)b + 1152, _MM_HINT_T0);
            uint32_t u[4];
            q4k_scales(b->scales, u);
            __m128i sc8 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)u[1], (int)u[0]));
            __m128i mn8 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)u[3], (int)u[2]));
            __m256i scv = _mm256_broadcastsi128_si256(sc8);
            __m256i ia = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * j));
                __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                __m256i slo = _mm256_shuffle_epi8(scv, _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * j))));
                __m256i shi = _mm256_shuffle_epi8(scv, _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * j + 1))));
                __m256i plo = _mm256_maddubs_epi16(lo, _mm256_load_si256((const __m256i *)(xs + 64 * j)));
                __m256i phi = _mm256_maddubs_epi16(hi, _mm256_load_si256((const __m256i *)(xs + 64 * j + 32)));
                ia = _mm256_add_epi32(ia, _mm256_add_epi32(_mm256_madd_epi16(plo, slo),
                                                           _mm256_madd_epi16(phi, shi)));
            }
            float d = h2f(b->d) * dxs, dm = h2f(b->dmin) * dxs;
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_set1_ps(d), acc[r]);
            macc[r] = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_madd_epi16(mn8, bp)), _mm_set1_ps(dm), macc[r]);
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < RR; r++) {
        __m128 m = _mm_add_ps(macc[r], _mm_movehl_ps(macc[r], macc[r]));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        y[r] = hsum256(acc[r]) - _mm_cvtss_f32(m);
    }
}

static void gemv_k4(const cpu_gemm_args *a)
{
    for (int64_t t = 0; t < a->n_tok; t++) {
        const uint8_t *xq = a->x + t * a->x_stride;
        float *y = a->y + t * a->ldy;
        int64_t r = 0;
        for (; r + 2 <= a->n_rows; r += 2)
            dec_k4(a->w + r * a->w_stride, a->w_stride, xq, a->n, y + r, 2);
        for (; r < a->n_rows; r++)
            dec_k4(a->w + r * a->w_stride, a->w_stride, xq, a->n, y + r, 1);
    }
}

/* ---- drivers: rows in groups of RR (4 for one token, 2 otherwise), tokens in groups of 4 */

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

static void gemm_quant(const cpu_gemm_args *a, int family_k, int sgn)
{
    if (a->n_tok < 2 && (!family_k || a->type == DT_Q4_K)) {
        /* decode: fused unpack (the weights are read once anyway) */
        if (family_k)
            gemv_k4(a);
        else
            gemv_a(a);
        return;
    }
    int act = family_k ? CPU_ACT_Q8KB : CPU_ACT_Q8B;
    size_t ub = cpu_unpacked_row_bytes(act, a->n);
    float *tbl = (float *)(a->scratch + CPU_TILE_ROWS * ub);
    int rr_max = a->n_tok == 1 ? 4 : 2;
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
#define CALL_K(RR, RT) tile_k(wu, xq, a->n, y, a->ldy, RR, RT)
                DISPATCH(CALL_K)
            } else if (sgn) {
#define CALL_AS(RR, RT) tile_a(wu, xq, a->n, y, a->ldy, tbl, RR, RT, 1)
                DISPATCH(CALL_AS)
            } else {
#define CALL_AU(RR, RT) tile_a(wu, xq, a->n, y, a->ldy, tbl, RR, RT, 0)
                DISPATCH(CALL_AU)
            }
        }
    }
}

static void gemm_a_unsigned(const cpu_gemm_args *a) { gemm_quant(a, 0, 0); }
static void gemm_a_signed(const cpu_gemm_args *a) { gemm_quant(a, 0, 1); }
static void gemm_k(const cpu_gemm_args *a) { gemm_quant(a, 1, 0); }

static void gemm_float(const cpu_gemm_args *a)
{
    int rr_max = a->n_tok == 1 ? 4 : 2;
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
#define CALL_F32(RR, RT) tile_f(DT_F32, wr, xr, a->n, y, a->ldy, RR, RT)
                DISPATCH(CALL_F32)
                break;
            }
            case DT_F16: {
#define CALL_F16(RR, RT) tile_f(DT_F16, wr, xr, a->n, y, a->ldy, RR, RT)
                DISPATCH(CALL_F16)
                break;
            }
            default: {
#define CALL_BF16(RR, RT) tile_f(DT_BF16, wr, xr, a->n, y, a->ldy, RR, RT)
                DISPATCH(CALL_BF16)
                break;
            }
            }
        }
    }
}

cpu_kernel cpu_kernel_avx2(int type)
{
    cpu_kernel k = {CPU_ACT_F32, NULL, NULL};
    switch (type) {
    case DT_F32:
    case DT_F16:
    case DT_BF16:
        k.gemm = gemm_float;
        break;
    case DT_Q4_0:
    case DT_Q4_1:
    case DT_Q5_0:
    case DT_Q5_1:
        k.act = CPU_ACT_Q8B, k.quantize = cpu_avx2_quant_q8b, k.gemm = gemm_a_unsigned;
        break;
    case DT_Q8_0:
        k.act = CPU_ACT_Q8B, k.quantize = cpu_avx2_quant_q8b, k.gemm = gemm_a_signed;
        break;
    case DT_Q2_K:
    case DT_Q3_K:
    case DT_Q4_K:
    case DT_Q5_K:
    case DT_Q6_K:
        k.act = CPU_ACT_Q8KB, k.quantize = cpu_avx2_quant_q8kb, k.gemm = gemm_k;
        break;
    }
    return k;
}
