/* gemv_k23_avx2.c - AVX2 decode of Q2_K and Q3_K weights for 1..8 tokens,
 * read straight from the weights (no unpack pass), q8kb activations. Called
 * through cpu_avx2_gemv (gemv_avx2.c); matmul.c routes 2..K23_MAX tokens here
 * (cpu_avx2_gemv_multi_max returns cpu_avx2_gemv_k23_max).
 *
 * Both types hold 16 groups of 16 levels per 256-element super-block; a
 * 32-byte chunk c (0..7) of levels, (qs[32 h..] >> 2 j) & 3 with c = 4 h + j,
 * covers groups 2c (low 128-bit lane) and 2c+1 (high lane), so the 16-bit
 * group scales are held deinterleaved [s0 s2 .. s14 | s1 s3 .. s15] and one
 * vpshufb per chunk yields [s_2c x8 | s_2c+1 x8] for vpmaddwd after
 * vpmaddubsw(levels, activations).
 *  - Q2_K: levels 0..3, 4-bit scales and mins; the mins enter as
 *    dmin * sum_g mn_g * bsums_g (the activation's sums per 16).
 *  - Q3_K: levels stored as low2 + 4 hbit in 0..7 (unsigned for vpmaddubsw;
 *    the real level is that - 4) with signed 6-bit scales s - 32, so the
 *    offset is the exact integer term -4 sum_g s_g * bsums_g.
 *
 * One token: 4 rows at a time (the next group of 4 rows prefetched linearly),
 * one integer accumulator per row and super-block, the 4 rows' sums reduced
 * exactly into one vector, then one 4-wide float multiply-add per super-block.
 * 2..8 tokens: one row at a time, each 32-level chunk decoded once and
 * multiplied with every token's activations (integer accumulators per token);
 * per super-block the integer sums are reduced exactly and one float per
 * token is added in order (the contract of gemv_multi_avx2.c: tensor-parallel
 * column slices on super-block boundaries sum to the same floats as the
 * whole row, up to the rounding of the final additions). */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "../../core/dtype.h"
#include "../../core/dtype_blocks.h"
#include "avx2_common.h"
#include "cpu_kernels.h"

#define K23_MAX 8 /* most tokens of the fused kernel */

/* An empty asm on an accumulator: the add chains stay in program order (gcc
 * otherwise reassociates them into wide trees whose partial sums spill). */
#define K23_KEEP(v) __asm__("" : "+x"(v))

int cpu_avx2_gemv_k23_max(int type)
{
    return type == DT_Q2_K || type == DT_Q3_K ? K23_MAX : 0;
}

/* ---- shared pieces -------------------------------------------------------- */

/* byte order that deinterleaves 16 group values: even groups, then odd */
AI __m128i k23_deint8(__m128i v)
{
    return _mm_shuffle_epi8(v, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
}

/* the 16-bit scales [s_2c x8 | s_2c+1 x8] of chunk c from the deinterleaved ones */
AI __m256i k23_chunk_scale(__m256i sc, const int c)
{
    return _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)(0x0100 + 0x0202 * c)));
}

/* 16 bsums (int16, natural order) -> deinterleaved [b0 b2 .. b14 | b1 b3 .. b15] */
AI __m256i k23_bsums_deint(const int16_t *bs)
{
    __m256i v = _mm256_loadu_si256((const __m256i *)bs);
    const __m256i sh = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, sh), _MM_SHUFFLE(3, 1, 2, 0));
}

/* Q3_K: 12 scale bytes -> the 16 signed scales s - 32 as bytes, natural group order.
 * Unpacked in general registers (the vector pipes are the busy ones). */
AI __m128i q3k_scales_nat(const uint8_t *s)
{
    const uint64_t m4 = 0x0f0f0f0f0f0f0f0fULL, m2 = 0x0303030303030303ULL;
    uint64_t a;
    uint32_t c;
    memcpy(&a, s, 8), memcpy(&c, s + 8, 4);
    __asm__("" : "+r"(a), "+r"(c)); /* no SLP vectorization */
    uint64_t cc = (uint64_t)c | (uint64_t)(c >> 2) << 32; /* high bits of groups 0..7 at bits 0-1 */
    uint64_t s0 = (a & m4) | (cc & m2) << 4;               /* groups 0..7 */
    uint64_t s1 = ((a >> 4) & m4) | ((cc >> 4) & m2) << 4; /* groups 8..15 */
    return _mm_sub_epi8(_mm_set_epi64x((long long)s1, (long long)s0), _mm_set1_epi8(32));
}

/* Q3_K: the high bit of chunk c moved to bit 2 of each byte (hm: the 32 hmask bytes) */
AI __m256i q3k_hbit(__m256i hm, const int c)
{
    __m256i v = c == 0 ? _mm256_slli_epi16(hm, 2) : c == 1 ? _mm256_add_epi8(hm, hm)
              : c == 2 ? hm : _mm256_srli_epi16(hm, c - 2);
    return _mm256_and_si256(v, _mm256_set1_epi8(4));
}

/* levels of chunk c (0..7) of a super-block: Q2_K 0..3, Q3_K low2 + 4 hbit;
 * q: the 32 qs bytes of half c / 4 */
AI __m256i k23_levels(const int q3, __m256i q, __m256i hm, const int c)
{
    const int j = c & 3;
    __m256i lv = _mm256_and_si256(j ? _mm256_srli_epi16(q, 2 * j) : q, _mm256_set1_epi8(3));
    return q3 ? _mm256_or_si256(lv, q3k_hbit(hm, c)) : lv;
}

AI uint64_t k23_u16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

/* the f16 at p, p + ws, p + 2 ws, p + 3 ws packed in 64 bits (general registers) */
AI uint64_t k23_f16_rows4(const uint8_t *p, size_t ws)
{
    uint64_t a = k23_u16(p), b = k23_u16(p + ws), c = k23_u16(p + 2 * ws), d = k23_u16(p + 3 * ws);
    __asm__("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d));
    return a | b << 16 | c << 32 | d << 48;
}

AI void k23_prefetch(const uint8_t *p, const int n_lines)
{
#pragma GCC unroll 8
    for (int k = 0; k < n_lines; k++)
        _mm_prefetch((const char *)p + 64 * k, _MM_HINT_T0);
}

/* ---- one super-block of one row: integer sums (8 int32 lanes) ------------- */

/* Q2_K: returns the level sums sum_g sc_g * dot_g, sets *im to the min sums
 * sum_g mn_g * bsums_g; bsd: the activation's bsums deinterleaved. */
AI __m256i q2k_sb(const dt_block_q2_k *b, const uint8_t *xs, __m256i bsd, __m256i *im)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    __m128i raw = k23_deint8(_mm_loadu_si128((const __m128i *)b->scales));
    __m256i sc = _mm256_cvtepu8_epi16(_mm_and_si128(raw, _mm256_castsi256_si128(m4)));
    __m256i mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm256_castsi256_si128(m4)));
    *im = _mm256_madd_epi16(mn, bsd);
    __m256i ia = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const int c = 4 * h + j;
            __m256i lv = k23_levels(0, q, q, c);
            /* |pair| <= 2 * 3 * 127 */
            __m256i p = _mm256_maddubs_epi16(lv, _mm256_load_si256((const __m256i *)(xs + 32 * c)));
            ia = _mm256_add_epi32(ia, _mm256_madd_epi16(p, k23_chunk_scale(sc, c)));
            K23_KEEP(ia);
        }
    }
    return ia;
}

/* Q3_K: returns sum_g s_g * dot_g with the -4 offset included exactly;
 * nb4: -4 * the activation's bsums, deinterleaved. */
AI __m256i q3k_sb(const dt_block_q3_k *b, const uint8_t *xs, __m256i nb4)
{
    __m256i sc = _mm256_cvtepi8_epi16(k23_deint8(q3k_scales_nat(b->scales)));
    __m256i ia = _mm256_madd_epi16(sc, nb4);
    __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const int c = 4 * h + j;
            __m256i lv = k23_levels(1, q, hm, c);
            /* |pair| <= 2 * 7 * 127; |madd| <= 2 * 1778 * 32 */
            __m256i p = _mm256_maddubs_epi16(lv, _mm256_load_si256((const __m256i *)(xs + 32 * c)));
            ia = _mm256_add_epi32(ia, _mm256_madd_epi16(p, k23_chunk_scale(sc, c)));
            K23_KEEP(ia);
        }
    }
    return ia;
}

/* ---- one token: RR (1..4) rows --------------------------------------------- */

/* RR rows (ws bytes apart) of Q2_K (q3 = 0) or Q3_K (q3 = 1) x one q8kb
 * activation row -> y[0..RR). With RR = 4, pf is the next group of 4 rows
 * (prefetched linearly, 4 super-blocks per step). */
AI void k23_dec(const int q3, const uint8_t *w, size_t ws, const uint8_t *pf, const uint8_t *xq,
                int64_t n, float *y, const int RR)
{
    const size_t bsz = q3 ? sizeof(dt_block_q3_k) : sizeof(dt_block_q2_k);
    const int64_t ns = n / 256;
    const float *dx = (const float *)(xq + n);
    const int16_t *bsums = (const int16_t *)(dx + ns);
    __m128 acc = _mm_setzero_ps(); /* lane r: row r */
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t *xs = xq + 256 * s;
        if (RR == 4)
            k23_prefetch(pf + 4 * bsz * s, q3 ? 7 : 6);
        __m256i bsd = k23_bsums_deint(bsums + 16 * s);
        if (q3)
            bsd = _mm256_slli_epi16(_mm256_sub_epi16(_mm256_setzero_si256(), bsd), 2); /* -4 bsums */
        /* rows folded pairwise as they complete (few live vectors) */
        const __m256i z = _mm256_setzero_si256();
        __m256i ih[2] = {z, z}, mh[2] = {z, z};
#pragma GCC unroll 2
        for (int p = 0; p < (RR + 1) / 2; p++) {
            __m256i i0, i1 = z, m0 = z, m1 = z;
            const uint8_t *blk = w + 2 * p * ws + bsz * s;
            if (RR != 4)
                _mm_prefetch((const char *)blk + 4 * bsz, _MM_HINT_T0);
            if (q3)
                i0 = q3k_sb((const dt_block_q3_k *)blk, xs, bsd);
            else
                i0 = q2k_sb((const dt_block_q2_k *)blk, xs, bsd, &m0);
            if (2 * p + 1 < RR) {
                if (RR != 4)
                    _mm_prefetch((const char *)blk + ws + 4 * bsz, _MM_HINT_T0);
                if (q3)
                    i1 = q3k_sb((const dt_block_q3_k *)(blk + ws), xs, bsd);
                else
                    i1 = q2k_sb((const dt_block_q2_k *)(blk + ws), xs, bsd, &m1);
            }
            ih[p] = _mm256_hadd_epi32(i0, i1);
            if (!q3)
                mh[p] = _mm256_hadd_epi32(m0, m1);
        }
        __m256i hs = _mm256_hadd_epi32(ih[0], ih[1]);
        __m128i si = _mm_add_epi32(_mm256_castsi256_si128(hs), _mm256_extracti128_si256(hs, 1));
        __m128 dxs = _mm_set1_ps(dx[s]);
        const uint8_t *b0 = w + bsz * s;
        if (q3) {
            __m128 d = _mm_cvtph_ps(_mm_cvtsi64_si128((long long)(
                RR == 4 ? k23_f16_rows4(b0 + offsetof(dt_block_q3_k, d), ws)
                        : k23_u16(b0 + offsetof(dt_block_q3_k, d)) |
                              (RR > 1 ? k23_u16(b0 + ws + offsetof(dt_block_q3_k, d)) << 16 : 0) |
                              (RR > 2 ? k23_u16(b0 + 2 * ws + offsetof(dt_block_q3_k, d)) << 32 : 0))));
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(si), _mm_mul_ps(d, dxs)));
        } else {
            __m256i hm = _mm256_hadd_epi32(mh[0], mh[1]);
            __m128i mi = _mm_add_epi32(_mm256_castsi256_si128(hm), _mm256_extracti128_si256(hm, 1));
            uint64_t hd, hn;
            if (RR == 4) {
                hd = k23_f16_rows4(b0 + offsetof(dt_block_q2_k, d), ws);
                hn = k23_f16_rows4(b0 + offsetof(dt_block_q2_k, dmin), ws);
            } else {
                hd = hn = 0;
                for (int r = 0; r < RR; r++) {
                    hd |= k23_u16(b0 + r * ws + offsetof(dt_block_q2_k, d)) << 16 * r;
                    hn |= k23_u16(b0 + r * ws + offsetof(dt_block_q2_k, dmin)) << 16 * r;
                }
            }
            __m256 dd = _mm256_cvtph_ps(_mm_set_epi64x((long long)hn, (long long)hd));
            __m128 a1 = _mm_mul_ps(_mm256_castps256_ps128(dd), dxs);
            __m128 a2 = _mm_mul_ps(_mm256_extractf128_ps(dd, 1), dxs);
            acc = _mm_add_ps(acc, _mm_fmsub_ps(_mm_cvtepi32_ps(si), a1,
                                               _mm_mul_ps(_mm_cvtepi32_ps(mi), a2)));
        }
    }
    float v[4];
    _mm_storeu_ps(v, acc);
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++)
        y[r] = v[r];
}

/* What the 4-row group at row r prefetches: the next group of this call's
 * rows; the last group prefetches itself (the rows after the call's chunk
 * may be another thread's). */
static inline const uint8_t *k23_pf(const cpu_gemm_args *a, int64_t r)
{
    return a->w + (r + 8 <= a->n_rows ? r + 4 : r) * a->w_stride;
}

static void k23_gemv1(const cpu_gemm_args *a)
{
    const int q3 = a->type == DT_Q3_K;
    const uint8_t *xq = a->x;
    float *y = a->y;
    int64_t r = 0;
    if (q3) {
        for (; r + 4 <= a->n_rows; r += 4)
            k23_dec(1, a->w + r * a->w_stride, a->w_stride, k23_pf(a, r), xq, a->n, y + r, 4);
        switch (a->n_rows - r) {
        case 1: k23_dec(1, a->w + r * a->w_stride, a->w_stride, NULL, xq, a->n, y + r, 1); break;
        case 2: k23_dec(1, a->w + r * a->w_stride, a->w_stride, NULL, xq, a->n, y + r, 2); break;
        case 3: k23_dec(1, a->w + r * a->w_stride, a->w_stride, NULL, xq, a->n, y + r, 3); break;
        }
    } else {
        for (; r + 4 <= a->n_rows; r += 4)
            k23_dec(0, a->w + r * a->w_stride, a->w_stride, k23_pf(a, r), xq, a->n, y + r, 4);
        switch (a->n_rows - r) {
        case 1: k23_dec(0, a->w + r * a->w_stride, a->w_stride, NULL, xq, a->n, y + r, 1); break;
        case 2: k23_dec(0, a->w + r * a->w_stride, a->w_stride, NULL, xq, a->n, y + r, 2); break;
        case 3: k23_dec(0, a->w + r * a->w_stride, a->w_stride, NULL, xq, a->n, y + r, 3); break;
        }
    }
}

/* ---- 2..8 tokens: one row at a time ---------------------------------------- */

/* exact per-lane sums of NT (1..8) vectors of 8 int32 -> [t0 .. t7] */
AI __m256i k23_hsum8(const __m256i *v, const int NT)
{
    const __m256i z = _mm256_setzero_si256();
    __m256i h01 = _mm256_hadd_epi32(v[0], NT > 1 ? v[1] : z);
    __m256i h23 = NT > 2 ? _mm256_hadd_epi32(v[2], NT > 3 ? v[3] : z) : z;
    __m256i lo = _mm256_hadd_epi32(h01, h23);
    if (NT <= 4)
        return _mm256_zextsi128_si256(
            _mm_add_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1)));
    __m256i h45 = _mm256_hadd_epi32(v[4], NT > 5 ? v[5] : z);
    __m256i h67 = NT > 6 ? _mm256_hadd_epi32(v[6], NT > 7 ? v[7] : z) : z;
    __m256i hi = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31));
}

/* One row of Q2_K / Q3_K x NT tokens (x: first token's q8kb row, xs bytes
 * apart) -> y[t * ldy]. dxt: per super-block the 8 tokens' activation scales.
 * pf: the next row (prefetched, 2 lines per super-block) or NULL. */
AI void k23_mt_row(const int q3, const uint8_t *w, const uint8_t *pf, const uint8_t *x, size_t xs,
                   int64_t n, const float *dxt, float *y, int64_t ldy, const int NT)
{
    const size_t bsz = q3 ? sizeof(dt_block_q3_k) : sizeof(dt_block_q2_k);
    const int64_t ns = n / 256;
    const size_t bso = (size_t)n + 4 * (size_t)ns; /* bsums offset in a q8kb row */
    __m256 yv = _mm256_setzero_ps();                 /* lane t: token t */
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t *blk = w + bsz * s;
        if (pf)
            k23_prefetch(pf + bsz * s, 2);
        const uint8_t *xb = x + 256 * s;
        const size_t bss = bso + 32 * (size_t)s;
        __m256i ia[8];
        __m256i sc, mn = _mm256_setzero_si256(), hm = _mm256_setzero_si256();
        if (q3) {
            const dt_block_q3_k *b = (const dt_block_q3_k *)blk;
            __m128i nat = q3k_scales_nat(b->scales);
            sc = _mm256_cvtepi8_epi16(k23_deint8(nat));
            /* -4 s_g in natural order against the natural bsums */
            __m256i sn4 = _mm256_slli_epi16(_mm256_sub_epi16(_mm256_setzero_si256(), _mm256_cvtepi8_epi16(nat)), 2);
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++)
                ia[t] = _mm256_madd_epi16(sn4, _mm256_loadu_si256((const __m256i *)(x + t * xs + bss)));
            hm = _mm256_loadu_si256((const __m256i *)b->hmask);
        } else {
            const dt_block_q2_k *b = (const dt_block_q2_k *)blk;
            const __m128i m4 = _mm_set1_epi8(15);
            __m128i nat = _mm_loadu_si128((const __m128i *)b->scales);
            sc = _mm256_cvtepu8_epi16(_mm_and_si128(k23_deint8(nat), m4));
            mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(nat, 4), m4));
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++)
                ia[t] = _mm256_setzero_si256();
        }
        const uint8_t *qs = q3 ? ((const dt_block_q3_k *)blk)->qs : ((const dt_block_q2_k *)blk)->qs;
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                const int c = 4 * h + j;
                __m256i lv = k23_levels(q3, q, hm, c);
                __m256i scc = k23_chunk_scale(sc, c);
#pragma GCC unroll 8
                for (int t = 0; t < NT; t++) {
                    __m256i p = _mm256_maddubs_epi16(lv, _mm256_load_si256((const __m256i *)(xb + t * xs + 32 * c)));
                    ia[t] = _mm256_add_epi32(ia[t], _mm256_madd_epi16(p, scc));
                }
            }
        }
        __m256 dx = _mm256_load_ps(dxt + 8 * s);
        __m256 si = _mm256_cvtepi32_ps(k23_hsum8(ia, NT));
        if (q3) {
            float d = h2f(((const dt_block_q3_k *)blk)->d);
            yv = _mm256_add_ps(yv, _mm256_mul_ps(si, _mm256_mul_ps(_mm256_set1_ps(d), dx)));
        } else {
            const dt_block_q2_k *b = (const dt_block_q2_k *)blk;
            __m256i im[8];
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++)
                im[t] = _mm256_madd_epi16(mn, _mm256_loadu_si256((const __m256i *)(x + t * xs + bss)));
            __m256 mi = _mm256_cvtepi32_ps(k23_hsum8(im, NT));
            __m256 a1 = _mm256_mul_ps(_mm256_set1_ps(h2f(b->d)), dx);
            __m256 a2 = _mm256_mul_ps(_mm256_set1_ps(h2f(b->dmin)), dx);
            yv = _mm256_add_ps(yv, _mm256_fmsub_ps(si, a1, _mm256_mul_ps(mi, a2)));
        }
    }
    float out[8];
    _mm256_storeu_ps(out, yv);
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
        y[t * ldy] = out[t];
}

#define K23_MT_DISPATCH(NAME, Q3)                                                                  \
    static void NAME(const uint8_t *w, const uint8_t *pf, const uint8_t *x, size_t xs, int64_t n,  \
                     const float *dxt, float *y, int64_t ldy, int nt)                              \
    {                                                                                              \
        switch (nt) {                                                                              \
        case 1: k23_mt_row(Q3, w, pf, x, xs, n, dxt, y, ldy, 1); break;                            \
        case 2: k23_mt_row(Q3, w, pf, x, xs, n, dxt, y, ldy, 2); break;                            \
        case 3: k23_mt_row(Q3, w, pf, x, xs, n, dxt, y, ldy, 3); break;                            \
        case 4: k23_mt_row(Q3, w, pf, x, xs, n, dxt, y, ldy, 4); break;                            \
        case 5: k23_mt_row(Q3, w, pf, x, xs, n, dxt, y, ldy, 5); break;                            \
        case 6: k23_mt_row(Q3, w, pf, x, xs, n, dxt, y, ldy, 6); break;                            \
        case 7: k23_mt_row(Q3, w, pf, x, xs, n, dxt, y, ldy, 7); break;                            \
        default: k23_mt_row(Q3, w, pf, x, xs, n, dxt, y, ldy, 8); break;                           \
        }                                                                                          \
    }
K23_MT_DISPATCH(k23_mt_q2, 0)
K23_MT_DISPATCH(k23_mt_q3, 1)
#undef K23_MT_DISPATCH

/* dxt: per super-block the activation scales of the (up to 8) tokens, unused lanes 0 */
static void k23_gemv_multi(const cpu_gemm_args *a, float *dxt)
{
    const int64_t ns = a->n / 256, nt = a->n_tok;
    for (int64_t s = 0; s < ns; s++)
        for (int t = 0; t < 8; t++)
            dxt[8 * s + t] = t < nt ? ((const float *)(a->x + t * a->x_stride + a->n))[s] : 0.0f;
    void (*kern)(const uint8_t *, const uint8_t *, const uint8_t *, size_t, int64_t, const float *,
                 float *, int64_t, int) = a->type == DT_Q3_K ? k23_mt_q3 : k23_mt_q2;
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + r * a->w_stride;
        kern(w, r + 1 < a->n_rows ? w + a->w_stride : NULL, a->x, a->x_stride, a->n, dxt, a->y + r,
             a->ldy, (int)nt);
    }
}

/* Decode of 1..K23_MAX tokens of Q2_K / Q3_K; returns 1 when it computed
 * a->y, 0 to fall back to unpack + tiles. */
int cpu_avx2_gemv_k23(const cpu_gemm_args *a)
{
    if ((a->type != DT_Q2_K && a->type != DT_Q3_K) || a->n % 256 || a->n_tok < 1 ||
        a->n_tok > K23_MAX)
        return 0;
    if (a->n_tok == 1) {
        k23_gemv1(a);
        return 1;
    }
    /* the dx table: in the caller's scratch (>= 4 unpacked rows, far more than
     * 32 bytes per super-block), else on the stack for rows up to 64 Ki */
    float stack_tab[8 * 256] __attribute__((aligned(32)));
    float *dxt = stack_tab;
    if (a->scratch)
        dxt = (float *)a->scratch;
    else if (a->n / 256 > 256)
        return 0;
    k23_gemv_multi(a, dxt);
    return 1;
}
