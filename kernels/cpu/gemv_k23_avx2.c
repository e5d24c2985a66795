/* gemv_k23_avx2.c - AVX2 decode of Q2_K and Q3_K weights for 1..8 tokens,
 * read straight from the weights (no unpack pass), q8kb activations. Called
 * through cpu_avx2_gemv (gemv_avx2.c); matmul.c routes 2..K23_MAX tokens here
 * (cpu_avx2_gemv_multi_max returns cpu_avx2_gemv_k23_max).
 *
 * Both types hold 16 groups of 16 levels per 256-element super-block; the
 * 32-byte chunk c = 4 h + j (0..7) of levels, (qs[32 h ..] >> 2 j) & 3,
 * covers group 2c in its low 128-bit lane and group 2c+1 in its high lane,
 * so one vpshufb per chunk makes the 16-bit group scales [s_2c x8 | s_2c+1 x8]
 * for vpmaddwd after vpmaddubsw(levels, activations).
 *  - Q2_K: levels 0..3, 4-bit scales and mins; the mins enter as
 *    dmin * sum_g mn_g * bsums_g (the activation's sums per 16).
 *  - Q3_K: levels taken as low2 + 4 hbit in 0..7 (unsigned for vpmaddubsw;
 *    the real level is that - 4) with signed 6-bit scales s - 32, so the
 *    offset is the exact integer term -4 sum_g s_g bsums_g.
 * Levels are not always shifted down to bit 0: a chunk whose 2 bits sit at
 * bit 2 (or 4) is used as 4 (16) times the level and the other chunks' scales
 * are multiplied by 4 (16) instead, so every chunk contributes F times its
 * exact value (Q2_K one token: F = 4; Q3_K: F = 16, also aligning the hmask
 * bit with fewer shifts); 1/F is folded into the float scale (exact). The
 * one-token Q3_K kernel places the hmask bits of 4 chunks with two vpshufb
 * table lookups (q3k_levels2).
 *
 * One token: 4 rows at a time, row i of each quarter of the call's rows (4
 * long sequential streams the hardware prefetchers follow, no software
 * prefetch), one integer accumulator per row and super-block, the 4 rows'
 * sums reduced exactly into one vector (vpunpck network), one 4-wide float
 * multiply-add per super-block; software-pipelined by one super-block (the
 * reduction and float work of super-block s - 1 after the products of s).
 * 2..8 tokens: one row at a time, each chunk of levels decoded once and
 * multiplied with every token's activations (an integer accumulator per
 * token; Q2_K: levels pre-multiplied by their 4-bit scales in bytes, so two
 * chunks are summed in 16 bits before one vpmaddwd); the Q3_K offsets start
 * each token's accumulator (a per-call table of -4 bsums); the Q2_K mins of
 * more than 4 tokens come from a per-call table of the tokens' bsums (one
 * vpmaddwd per pair of groups for all 8 tokens). Per super-block the
 * integer sums are reduced exactly and one float per token is added in
 * order (the contract of gemv_multi_avx2.c: tensor-parallel column slices
 * on super-block boundaries sum to the same per-super-block floats as the
 * whole row). */
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

#define K23_B(v) _mm256_set1_epi8((char)(v))

/* the 16 group values of a super-block reordered: even groups, then odd */
AI __m128i k23_deint8(__m128i v)
{
    return _mm_shuffle_epi8(v, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
}

/* 16-bit scales [s_2c x8 | s_2c+1 x8] of chunk c from 16-bit scales held
 * deinterleaved [s0 s2 .. s14 | s1 s3 .. s15] */
AI __m256i k23_chunk_scale(__m256i sc, const int c)
{
    return _mm256_shuffle_epi8(sc, _mm256_set1_epi16((short)(0x0100 + 0x0202 * c)));
}

/* the same from 16 byte scales in natural order present in both lanes
 * (zero-extended by the shuffle) */
AI __m256i k23_chunk_scale_b(__m256i sc8, const int c)
{
    return _mm256_shuffle_epi8(sc8, _mm256_set_m128i(_mm_set1_epi16((short)(0x8000 | (2 * c + 1))),
                                                     _mm_set1_epi16((short)(0x8000 | (2 * c)))));
}

/* 16 bsums (int16, natural order) -> deinterleaved [b0 b2 .. b14 | b1 b3 .. b15] */
AI __m256i k23_bsums_deint(const int16_t *bs)
{
    __m256i v = _mm256_loadu_si256((const __m256i *)bs);
    const __m256i sh = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, sh), _MM_SHUFFLE(3, 1, 2, 0));
}

/* Q3_K: 12 scale bytes -> the 16 signed scales s - 32 as bytes, natural group
 * order, unpacked in general registers (the vector pipes are the busy ones) */
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

/* Q3_K chunk c: log4 of the factor F_c its levels carry (below) */
AI int q3k_lf(const int c)
{
    return c == 6 ? 2 : (c & 1);
}

/* Q3_K levels low2 + 4 hbit of chunk c times 4^q3k_lf(c): q, q4 = the qs
 * bytes of half c/4 and those >> 4, hm = the hmask bytes (bit c: chunk c).
 * Each chunk takes the 2-bit field and the hmask bit where they need the
 * fewest shifts. */
AI __m256i q3k_levels(__m256i q, __m256i q4, __m256i hm, const int c)
{
    __m256i lo, hb;
    switch (c) {
    case 0: lo = _mm256_and_si256(q, K23_B(3)), hb = _mm256_and_si256(_mm256_slli_epi16(hm, 2), K23_B(4)); break;
    case 1: lo = _mm256_and_si256(q, K23_B(12)), hb = _mm256_and_si256(_mm256_slli_epi16(hm, 3), K23_B(16)); break;
    case 2: lo = _mm256_and_si256(q4, K23_B(3)), hb = _mm256_and_si256(hm, K23_B(4)); break;
    case 3: lo = _mm256_and_si256(q4, K23_B(12)), hb = _mm256_and_si256(_mm256_add_epi8(hm, hm), K23_B(16)); break;
    case 4: lo = _mm256_and_si256(q, K23_B(3)), hb = _mm256_and_si256(_mm256_srli_epi16(hm, 2), K23_B(4)); break;
    case 5: lo = _mm256_and_si256(q, K23_B(12)), hb = _mm256_and_si256(_mm256_srli_epi16(hm, 1), K23_B(16)); break;
    case 6: lo = _mm256_and_si256(q, K23_B(0x30)), hb = _mm256_and_si256(hm, K23_B(0x40)); break;
    default: lo = _mm256_and_si256(q4, K23_B(12)), hb = _mm256_and_si256(_mm256_srli_epi16(hm, 3), K23_B(16)); break;
    }
    return _mm256_or_si256(lo, hb);
}

/* the f16 at p + r ws for rows r < RR packed in 64 bits (general registers) */
AI uint64_t k23_f16_rows(const uint8_t *p, size_t ws, const int RR)
{
    uint64_t a = ld_u16(p), b = RR > 1 ? ld_u16(p + ws) : 0, c = RR > 2 ? ld_u16(p + 2 * ws) : 0,
             d = RR > 3 ? ld_u16(p + 3 * ws) : 0;
    __asm__("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d));
    return a | b << 16 | c << 32 | d << 48;
}

/* lane sums of two vectors of 8 int32, interleaved:
 * [a0+a2 b0+b2 a1+a3 b1+b3 | a4+a6 b4+b6 a5+a7 b5+b7] */
AI __m256i k23_fold2(__m256i a, __m256i b)
{
    return _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
}

/* from k23_fold2(v0, v1) and k23_fold2(v2, v3): [v0 v1 v2 v3 partial | partial] */
AI __m256i k23_fold4(__m256i t01, __m256i t23)
{
    return _mm256_add_epi32(_mm256_unpacklo_epi64(t01, t23), _mm256_unpackhi_epi64(t01, t23));
}

/* ---- one super-block of one row, one token: integer sums (8 int32 lanes) -- */

/* Q2_K: returns 4 x sum_g sc_g dot_g, sets *im to sum_g mn_g bsums_g
 * (bsn: the activation's 16 bsums, natural order) */
AI __m256i q2k_sb(const dt_block_q2_k *b, const uint8_t *xs, __m256i bsn, __m256i *im)
{
    __m128i raw = _mm_loadu_si128((const __m128i *)b->scales);
    __m256i sc = _mm256_and_si256(_mm256_broadcastsi128_si256(raw), K23_B(15));
    __m256i sc4 = _mm256_slli_epi16(sc, 2); /* bytes <= 60 */
    __m256i mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(15)));
    *im = _mm256_madd_epi16(mn, bsn);
    __m256i ia = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
        __m256i q4 = _mm256_srli_epi16(q, 4);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const int c = 4 * h + j;
            /* j even: the level at bit 0 against 4 sc; j odd: 4 x the level against sc */
            __m256i lv = _mm256_and_si256(j < 2 ? q : q4, K23_B(j & 1 ? 12 : 3));
            __m256i p = _mm256_maddubs_epi16(lv, _mm256_load_si256((const __m256i *)(xs + 32 * c)));
            ia = _mm256_add_epi32(ia, _mm256_madd_epi16(p, k23_chunk_scale_b(j & 1 ? sc : sc4, c)));
            K23_KEEP(ia);
        }
    }
    return ia;
}

/* Q3_K one token: the levels of the 4 chunks of half h, low2 + 4 hbit,
 * built two chunks per vector: e[0] holds chunk 4h at bits 0..2 and chunk
 * 4h+2 at bits 4..6, e[1] chunks 4h+1 and 4h+3 the same way (so each chunk
 * is one vpand away, at F = 1 or 16). The low 2 bits come from qs masked by
 * 0x33 (e[1]: qs >> 2), the hmask bits of the 4 chunks (a nibble of hm per
 * element) are placed by two vpshufb table lookups: 12 vector ops per half
 * against 16 when each chunk shifts its own hmask bit in. */
AI void q3k_levels2(__m256i q, __m256i hmn, __m256i e[2])
{
    /* nibble n = hbits of chunks 4h..4h+3 -> bits 2 (chunk 4h) and 6 (4h+2) */
    const __m256i t0 = _mm256_setr_epi8(0, 4, 0, 4, 64, 68, 64, 68, 0, 4, 0, 4, 64, 68, 64, 68,
                                        0, 4, 0, 4, 64, 68, 64, 68, 0, 4, 0, 4, 64, 68, 64, 68);
    /* -> bits 2 (chunk 4h+1) and 6 (4h+3) */
    const __m256i t1 = _mm256_setr_epi8(0, 0, 4, 4, 0, 0, 4, 4, 64, 64, 68, 68, 64, 64, 68, 68,
                                        0, 0, 4, 4, 0, 0, 4, 4, 64, 64, 68, 68, 64, 64, 68, 68);
    e[0] = _mm256_or_si256(_mm256_and_si256(q, K23_B(0x33)), _mm256_shuffle_epi8(t0, hmn));
    e[1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2), K23_B(0x33)),
                           _mm256_shuffle_epi8(t1, hmn));
}

/* Q3_K: returns 16 x sum_g s_g dot_g with the -4 offset included exactly;
 * nb4: -4 x the activation's bsums, deinterleaved. */
AI __m256i q3k_sb(const dt_block_q3_k *b, const uint8_t *xs, __m256i nb4)
{
    __m256i sc = _mm256_cvtepi8_epi16(k23_deint8(q3k_scales_nat(b->scales)));
    __m256i sc16 = _mm256_slli_epi16(sc, 4);
    __m256i ia = _mm256_madd_epi16(sc16, nb4);
    __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
        __m256i hmn = _mm256_and_si256(h ? _mm256_srli_epi16(hm, 4) : hm, K23_B(15));
        __m256i e[2];
        q3k_levels2(q, hmn, e);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const int c = 4 * h + j, hi = j >= 2; /* hi: the chunk at bits 4..6 (F = 16) */
            __m256i lv = _mm256_and_si256(e[j & 1], K23_B(hi ? 0x70 : 0x07));
            /* |pair| <= 2 * 112 * 127; |madd| <= 2 * 1778 * 512 */
            __m256i p = _mm256_maddubs_epi16(lv, _mm256_load_si256((const __m256i *)(xs + 32 * c)));
            ia = _mm256_add_epi32(ia, _mm256_madd_epi16(p, k23_chunk_scale(hi ? sc : sc16, c)));
            K23_KEEP(ia);
        }
    }
    return ia;
}

/* ---- one token: RR (1..4) rows --------------------------------------------- */

/* One row's vector for the 4-row reduction: Q3_K its level sums; Q2_K
 * [level sums, lanes folded to 4 | min sums folded to 4]. */
AI __m256i k23_row(const int q3, const uint8_t *blk, const uint8_t *xs, __m256i bsv)
{
    if (q3)
        return q3k_sb((const dt_block_q3_k *)blk, xs, bsv);
    __m256i im, ia = q2k_sb((const dt_block_q2_k *)blk, xs, bsv, &im);
    return _mm256_add_epi32(_mm256_blend_epi32(ia, im, 0xf0), _mm256_permute2x128_si256(ia, im, 0x21));
}

/* Step part 1 of k23_dec: the RR rows' vectors of super-block s (b0: its
 * block in row 0) for the 4-row reduction. */
AI void k23_prod(const int q3, const uint8_t *b0, size_t ws, const uint8_t *xq, int64_t n,
                 int64_t s, __m256i v[4], const int RR)
{
    const int16_t *bsums = (const int16_t *)(xq + n + 4 * (n / 256));
    const uint8_t *xs = xq + 256 * s;
    const __m256i z = _mm256_setzero_si256();
    __m256i bsv = q3 ? _mm256_slli_epi16(_mm256_sub_epi16(z, k23_bsums_deint(bsums + 16 * s)), 2)
                     : _mm256_loadu_si256((const __m256i *)(bsums + 16 * s));
    v[0] = k23_row(q3, b0, xs, bsv);
    v[1] = RR > 1 ? k23_row(q3, b0 + ws, xs, bsv) : z;
    v[2] = RR > 2 ? k23_row(q3, b0 + 2 * ws, xs, bsv) : z;
    v[3] = RR > 3 ? k23_row(q3, b0 + 3 * ws, xs, bsv) : z;
}

/* Step part 2: the rows' vectors reduced exactly to one per row, scaled by
 * d (and dmin) x dx (dxs) and added to acc (lane r: row r). */
AI __m128 k23_fold(const int q3, const __m256i v[4], const uint8_t *b0, size_t ws, __m128 dxs,
                   __m128 acc, const int RR)
{
    /* 1/F of the level sums; Q2_K: lanes 4..7 (mins) 1 */
    const __m128 kf = _mm_set1_ps(q3 ? 1.0f / 16 : 1.0f / 4);
    __m256i sv = k23_fold4(k23_fold2(v[0], v[1]), k23_fold2(v[2], v[3]));
    if (q3) {
        __m128i si = _mm_add_epi32(_mm256_castsi256_si128(sv), _mm256_extracti128_si256(sv, 1));
        __m128 d = _mm_cvtph_ps(_mm_cvtsi64_si128((long long)k23_f16_rows(b0 + offsetof(dt_block_q3_k, d), ws, RR)));
        return _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(si), _mm_mul_ps(d, _mm_mul_ps(dxs, kf))));
    }
    /* sv = [4 x level sums | min sums] of rows 0..3 */
    uint64_t hd = k23_f16_rows(b0 + offsetof(dt_block_q2_k, d), ws, RR);
    uint64_t hn = k23_f16_rows(b0 + offsetof(dt_block_q2_k, dmin), ws, RR);
    __m256 dd = _mm256_cvtph_ps(_mm_set_epi64x((long long)hn, (long long)hd));
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(sv), dd);
    __m128 a1 = _mm_mul_ps(dxs, kf);
    return _mm_add_ps(acc, _mm_fmsub_ps(_mm256_castps256_ps128(f), a1,
                                        _mm_mul_ps(_mm256_extractf128_ps(f, 1), dxs)));
}

/* RR rows (ws bytes apart) of Q2_K (q3 = 0) or Q3_K (q3 = 1) x one q8kb
 * activation row -> y[r * ys], r < RR. RR < 4 (consecutive leftover rows)
 * prefetches each row 4 super-blocks ahead. Software-pipelined by one
 * super-block (as a45_dec4, gemv_a45_avx2.c): an iteration computes the
 * rows' integer vectors of super-block s, then reduces and scales those of
 * s - 1, whose inputs are ready by then; the float additions keep their
 * order, so the results are those of the unpipelined loop. */
AI void k23_dec(const int q3, const uint8_t *w, size_t ws, const uint8_t *xq, int64_t n, float *y,
                size_t ys, const int RR)
{
    const size_t bsz = q3 ? sizeof(dt_block_q3_k) : sizeof(dt_block_q2_k);
    const int64_t ns = n / 256;
    const float *dx = (const float *)(xq + n);
    __m128 acc = _mm_setzero_ps(); /* lane r: row r */
    __m256i v[4], pv[4];
    k23_prod(q3, w, ws, xq, n, 0, pv, RR);
    for (int64_t s = 1; s < ns; s++) {
        const uint8_t *b0 = w + bsz * s;
        if (RR < 4)
            for (int r = 0; r < RR; r++)
                _mm_prefetch((const char *)b0 + r * ws + 4 * bsz, _MM_HINT_T0);
        k23_prod(q3, b0, ws, xq, n, s, v, RR);
        acc = k23_fold(q3, pv, b0 - bsz, ws, _mm_set1_ps(dx[s - 1]), acc, RR);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            pv[r] = v[r];
    }
    acc = k23_fold(q3, pv, w + bsz * (ns - 1), ws, _mm_set1_ps(dx[ns - 1]), acc, RR);
    float out[4];
    _mm_storeu_ps(out, acc);
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++)
        y[r * ys] = out[r];
}

/* One token: group i is row i of each quarter of the rows (4 long
 * sequential streams the hardware prefetchers follow, no software prefetch;
 * see gemv_avx2.c's head comment); the rows after the last multiple of 4
 * go through the 1..3-row kernel. */
#define K23_GEMV1(NAME, Q3)                                                                        \
    static void NAME(const cpu_gemm_args *a)                                                       \
    {                                                                                              \
        const int64_t q = a->n_rows / 4;                                                           \
        for (int64_t i = 0; i < q; i++)                                                            \
            k23_dec(Q3, a->w + i * a->w_stride, (size_t)q * a->w_stride, a->x, a->n, a->y + i,     \
                    (size_t)q, 4);                                                                 \
        const int64_t r = 4 * q;                                                                   \
        const uint8_t *w = a->w + r * a->w_stride;                                                 \
        switch (a->n_rows - r) {                                                                   \
        case 1: k23_dec(Q3, w, a->w_stride, a->x, a->n, a->y + r, 1, 1); break;                    \
        case 2: k23_dec(Q3, w, a->w_stride, a->x, a->n, a->y + r, 1, 2); break;                    \
        case 3: k23_dec(Q3, w, a->w_stride, a->x, a->n, a->y + r, 1, 3); break;                    \
        }                                                                                          \
    }
K23_GEMV1(k23_gemv1_q2, 0)
K23_GEMV1(k23_gemv1_q3, 1)
#undef K23_GEMV1

/* ---- 2..8 tokens: one row at a time ---------------------------------------- */

/* exact lane sums of NT (1..8) vectors of 8 int32 -> [t0 .. t7] */
AI __m256i k23_hsum8(const __m256i *v, const int NT)
{
    const __m256i z = _mm256_setzero_si256();
    __m256i t01 = k23_fold2(v[0], NT > 1 ? v[1] : z);
    __m256i t23 = NT > 2 ? k23_fold2(v[2], NT > 3 ? v[3] : z) : z;
    __m256i lo = k23_fold4(t01, t23);
    if (NT <= 4)
        return _mm256_zextsi128_si256(
            _mm_add_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1)));
    __m256i t45 = k23_fold2(v[4], NT > 5 ? v[5] : z);
    __m256i t67 = NT > 6 ? k23_fold2(v[6], NT > 7 ? v[7] : z) : z;
    __m256i hi = k23_fold4(t45, t67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31));
}

/* sum over the 8 group pairs k of vpmaddwd(pair k of the row's 16-bit group
 * values in pr, table vector k): one int32 per token */
AI __m256i k23_pair_dot(const uint32_t pr[8], const __m256i *bt)
{
    __m256i m = _mm256_madd_epi16(_mm256_set1_epi32((int)pr[0]), _mm256_load_si256(bt));
#pragma GCC unroll 7
    for (int k = 1; k < 8; k++) {
        m = _mm256_add_epi32(m, _mm256_madd_epi16(_mm256_set1_epi32((int)pr[k]), _mm256_load_si256(bt + k)));
        K23_KEEP(m);
    }
    return m;
}

/* One row of Q2_K / Q3_K x NT tokens (x: first token's q8kb row, xs bytes
 * apart) -> y[t * ldy]. bt, dxt: the tables of k23_gemv_multi. pf: the next
 * row (prefetched, 2 lines per super-block) or NULL. */
AI void k23_mt_row(const int q3, const uint8_t *w, const uint8_t *pf, const uint8_t *x, size_t xs,
                   int64_t n, const __m256i *bt, const float *dxt, float *y, int64_t ldy, const int NT)
{
    const size_t bsz = q3 ? sizeof(dt_block_q3_k) : sizeof(dt_block_q2_k);
    const int64_t ns = n / 256;
    const __m256i ones = _mm256_set1_epi16(1);
    const size_t bso = (size_t)n + 4 * (size_t)ns; /* bsums offset in a q8kb row */
    __m256 yv = _mm256_setzero_ps(); /* lane t: token t */
    uint32_t pr[8] __attribute__((aligned(32)));
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t *blk = w + bsz * s;
        if (pf)
            prefetch_lines(pf + bsz * s, 2);
        const uint8_t *xb = x + 256 * s;
        __m256i ia[8];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++)
            ia[t] = _mm256_setzero_si256();
        if (q3) {
            const dt_block_q3_k *b = (const dt_block_q3_k *)blk;
            __m128i nat = q3k_scales_nat(b->scales);
            __m256i sc = _mm256_cvtepi8_epi16(k23_deint8(nat));
            __m256i sc4 = _mm256_slli_epi16(sc, 2), sc16 = _mm256_slli_epi16(sc, 4);
            /* the offsets: 16 s_g (natural order) against the token's -4 bsums */
            __m256i sn16 = _mm256_slli_epi16(_mm256_cvtepi8_epi16(nat), 4);
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++)
                ia[t] = _mm256_madd_epi16(sn16, _mm256_load_si256(bt + 8 * s + t));
            __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
                __m256i q4 = _mm256_srli_epi16(q, 4);
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) {
                    const int c = 4 * h + j, lf = q3k_lf(c);
                    __m256i lv = q3k_levels(q, q4, hm, c);
                    __m256i scc = k23_chunk_scale(lf == 0 ? sc16 : lf == 1 ? sc4 : sc, c);
#pragma GCC unroll 8
                    for (int t = 0; t < NT; t++) {
                        __m256i p = _mm256_maddubs_epi16(lv, _mm256_load_si256((const __m256i *)(xb + t * xs + 32 * c)));
                        ia[t] = _mm256_add_epi32(ia[t], _mm256_madd_epi16(p, scc));
                    }
                }
            }
            /* 16 x (level sums - 4 x sum_g s_g bsums_g), exact */
            __m256i si = k23_hsum8(ia, NT);
            __m256 a1 = _mm256_mul_ps(_mm256_set1_ps(h2f(b->d) * (1.0f / 16)), _mm256_load_ps(dxt + 8 * s));
            yv = _mm256_add_ps(yv, _mm256_mul_ps(_mm256_cvtepi32_ps(si), a1));
        } else {
            const dt_block_q2_k *b = (const dt_block_q2_k *)blk;
            __m128i raw = _mm_loadu_si128((const __m128i *)b->scales);
            __m256i sc = _mm256_and_si256(_mm256_broadcastsi128_si256(raw), K23_B(15));
            __m256i mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(15)));
            if (NT > 4)
                _mm256_store_si256((__m256i *)pr, mn);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
#pragma GCC unroll 2
                for (int jp = 0; jp < 4; jp += 2) {
                    const int c = 4 * h + jp;
                    /* levels times their scales, in bytes (<= 45): the 16-bit
                     * product of the level pair with the scale */
                    __m256i l0 = _mm256_and_si256(jp ? _mm256_srli_epi16(q, 2 * jp) : q, K23_B(3));
                    __m256i l1 = _mm256_and_si256(_mm256_srli_epi16(q, 2 * jp + 2), K23_B(3));
                    l0 = _mm256_mullo_epi16(l0, k23_chunk_scale_b(sc, c));
                    l1 = _mm256_mullo_epi16(l1, k23_chunk_scale_b(sc, c + 1));
#pragma GCC unroll 8
                    for (int t = 0; t < NT; t++) {
                        const uint8_t *xt = xb + t * xs + 32 * c;
                        /* two chunks summed in 16 bits: |.| <= 2 * 2 * 45 * 127 */
                        __m256i p = _mm256_add_epi16(
                            _mm256_maddubs_epi16(l0, _mm256_load_si256((const __m256i *)xt)),
                            _mm256_maddubs_epi16(l1, _mm256_load_si256((const __m256i *)(xt + 32))));
                        ia[t] = _mm256_add_epi32(ia[t], _mm256_madd_epi16(p, ones));
                    }
                }
            }
            __m256 si, mi;
            if (NT > 4) { /* the mins of all tokens from the table: 8 vpmaddwd */
                si = _mm256_cvtepi32_ps(k23_hsum8(ia, NT));
                mi = _mm256_cvtepi32_ps(k23_pair_dot(pr, bt + 8 * s));
            } else { /* per token [level sums | min sums] folded to 4 lanes each, then reduced */
                __m256i v[4];
#pragma GCC unroll 4
                for (int t = 0; t < 4; t++) {
                    __m256i im = t < NT ? _mm256_madd_epi16(mn, _mm256_loadu_si256((const __m256i *)(x + t * xs + bso + 32 * s)))
                                        : _mm256_setzero_si256();
                    __m256i it = t < NT ? ia[t] : _mm256_setzero_si256();
                    v[t] = _mm256_add_epi32(_mm256_blend_epi32(it, im, 0xf0), _mm256_permute2x128_si256(it, im, 0x21));
                }
                __m256i sv = k23_fold4(k23_fold2(v[0], v[1]), k23_fold2(v[2], v[3]));
                si = _mm256_cvtepi32_ps(_mm256_zextsi128_si256(_mm256_castsi256_si128(sv)));
                mi = _mm256_cvtepi32_ps(_mm256_zextsi128_si256(_mm256_extracti128_si256(sv, 1)));
            }
            __m256 dx = _mm256_load_ps(dxt + 8 * s);
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
                     const __m256i *bt, const float *dxt, float *y, int64_t ldy, int nt)           \
    {                                                                                              \
        switch (nt) {                                                                              \
        case 1: k23_mt_row(Q3, w, pf, x, xs, n, bt, dxt, y, ldy, 1); break;                        \
        case 2: k23_mt_row(Q3, w, pf, x, xs, n, bt, dxt, y, ldy, 2); break;                        \
        case 3: k23_mt_row(Q3, w, pf, x, xs, n, bt, dxt, y, ldy, 3); break;                        \
        case 4: k23_mt_row(Q3, w, pf, x, xs, n, bt, dxt, y, ldy, 4); break;                        \
        case 5: k23_mt_row(Q3, w, pf, x, xs, n, bt, dxt, y, ldy, 5); break;                        \
        case 6: k23_mt_row(Q3, w, pf, x, xs, n, bt, dxt, y, ldy, 6); break;                        \
        case 7: k23_mt_row(Q3, w, pf, x, xs, n, bt, dxt, y, ldy, 7); break;                        \
        default: k23_mt_row(Q3, w, pf, x, xs, n, bt, dxt, y, ldy, 8); break;                       \
        }                                                                                          \
    }
K23_MT_DISPATCH(k23_mt_q2, 0)
K23_MT_DISPATCH(k23_mt_q3, 1)
#undef K23_MT_DISPATCH

/* Scratch bytes of the multi-token tables for rows of n elements. */
static size_t k23_tab_bytes(int64_t n)
{
    return (size_t)(n / 256) * (8 * 32 + 32);
}

/* 2..8 tokens; tab: k23_tab_bytes(a->n), 32-byte aligned: per super-block
 * 8 vectors of the tokens' bsums (Q3_K: vector t = token t's bsums times -4;
 * Q2_K: vector k = per token the bsums of groups 2k and 2k+1), then the dx
 * table: per super-block the tokens' activation scales (8 floats). */
static void k23_gemv_multi(const cpu_gemm_args *a, uint8_t *tab)
{
    const int q3 = a->type == DT_Q3_K;
    const int64_t ns = a->n / 256, nt = a->n_tok;
    __m256i *bt = (__m256i *)tab;
    float *dxt = (float *)(tab + (size_t)ns * 8 * 32);
    for (int64_t s = 0; s < ns; s++) {
        int16_t v[8][16] __attribute__((aligned(32)));
        memset(v, 0, sizeof v);
        for (int t = 0; t < 8; t++)
            dxt[8 * s + t] = 0.0f;
        for (int64_t t = 0; t < nt; t++) {
            const float *dx = (const float *)(a->x + t * a->x_stride + a->n);
            const int16_t *bs = (const int16_t *)(dx + ns) + 16 * s;
            dxt[8 * s + t] = dx[s];
            for (int g = 0; g < 16; g++) {
                if (q3) /* vector t: the token's -4 bsums */
                    v[t][g] = (int16_t)(-4 * bs[g]);
                else /* vector k: per token the bsums of groups 2k, 2k+1 */
                    v[g / 2][2 * t + g % 2] = bs[g];
            }
        }
        memcpy(bt + 8 * s, v, sizeof v);
    }
    void (*kern)(const uint8_t *, const uint8_t *, const uint8_t *, size_t, int64_t, const __m256i *,
                 const float *, float *, int64_t, int) = q3 ? k23_mt_q3 : k23_mt_q2;
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + r * a->w_stride;
        kern(w, r + 1 < a->n_rows ? w + a->w_stride : NULL, a->x, a->x_stride, a->n, bt, dxt,
             a->y + r, a->ldy, (int)nt);
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
        if (a->type == DT_Q3_K)
            k23_gemv1_q3(a);
        else
            k23_gemv1_q2(a);
        return 1;
    }
    /* the tables go to the caller's scratch: cpu_scratch_bytes(CPU_ACT_Q8KB, n)
     * holds 4 unpacked rows (> 8 n bytes) against 9/8 n needed */
    if (!a->scratch || k23_tab_bytes(a->n) > cpu_scratch_bytes(CPU_ACT_Q8KB, a->n))
        return 0;
    k23_gemv_multi(a, a->scratch);
    return 1;
}
