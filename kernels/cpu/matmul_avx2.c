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
#include "avx2_common.h"


/* ---- activation quantizers -------------------------------------------------- */

void cpu_avx2_quant_q8b(const float *x, uint8_t *xq, int64_t n)
{
    int64_t nb = n / 32, nbp = cpu_pad8(nb);
    int8_t *qs = (int8_t *)xq;
    float *dx = (float *)(xq + n), *sx = dx + nbp;
    for (int64_t b = 0; b < nb; b++) {
        __m256i i0, i1, i2, i3;
        float d = q8_block32(x + 32 * b, &i0, &i1, &i2, &i3);
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
    for (int64_t s = 0; s < ns; s++) {
        const float *xs = x + 256 * s;
        __m256 vid;
        float d = q8k_scale(xs, &vid);
        for (int c = 0; c < 8; c++) {
            __m256i i[4];
            q8_round32(xs + 32 * c, vid, i);
            bs[16 * s + 2 * c] = (int16_t)hsum256i(_mm256_add_epi32(i[0], i[1]));
            bs[16 * s + 2 * c + 1] = (int16_t)hsum256i(_mm256_add_epi32(i[2], i[3]));
            _mm256_storeu_si256((__m256i *)(qs + 256 * s + 32 * c), q8_pack(i[0], i[1], i[2], i[3]));
        }
        dx[s] = d;
    }
}

/* ---- unpack: family A ------------------------------------------------------- */

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
    if (cpu_avx2_gemv(a)) /* decode: fused unpack (gemv_avx2.c) */
        return;
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
