/* gemv_multi_avx2.c - AVX2 fused decode for a few tokens at once (2..8, e.g.
 * several sequences decoding together, or the micro-batches of a pipeline
 * stage): each weight block is read from the weights once, decoded to its
 * levels in registers and multiplied with the q8 activation block of every
 * token, so a step of k tokens streams the weights once instead of k times
 * (and skips the packing of the prefill GEMM). Called through cpu_avx2_gemv
 * (gemv_avx2.c) for n_tok >= 2; matmul.c routes n_tok <=
 * cpu_avx2_gemv_multi_max(type) here instead of to gemm_avx2.c.
 *
 * These kernels are compute-bound (the weights of a step are read once), so
 * the work per (row, token, block) is what counts. Measured on this machine
 * (AMD Zen 3): vpmaddubsw and vpmaddwd share two pipes, the FMA and the
 * convert each take one of them too, unpacks and shuffles run on two others
 * and vphaddd costs two cycles; so the products keep the multiply pipes and
 * the reductions use unpacks and adds.
 *
 * Family A (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, act "q8b"): 4 rows at a time (rows
 * past the end repeat the last row and are not stored), the K axis cut into
 * chunks of MT_CH block pairs, the tokens in groups of up to 4 (8 tokens:
 * one group). Per chunk a table holds for every block pair and token the
 * activations in the lane order of the weights ([x_b 0..15 | x_b+1 0..15],
 * [x_b 16..31 | x_b+1 16..31]), dx as [b x4 | b+1 x4] and the offset term
 * k sx the same way. Per block pair the row scales [b: d rows 0..3 | b+1:
 * ...] are gathered in general registers and the levels of the 4 rows are
 * decoded once (Q4/Q5: one register of low and one of high nibbles of both
 * blocks; Q8_0: |levels| of elements 0..15 and 16..31 of both blocks, the
 * signs applied to the activations with vpsignb per row and token); per
 * token, 2 vpmaddubsw + 1 add per row (Q8_0: + 2 vpsignb, 2 vpmaddwd), then
 * a "transposed" reduction of the 4 rows (unpacks and adds in 16-bit lanes
 * where the bounds allow it, then one vpmaddwd) gives the integer sums [b:
 * rows 0..3 | b+1: rows 0..3], and one convert + 2 FMA (Q4_1/Q5_1: 3
 * products) apply the row scales and the token's table. The next row group
 * is prefetched into L1 while one computes.
 *
 * Family K (Q4_K, act "q8kb"): one row at a time with up to 4 tokens (8
 * tokens: all at once; a later token group finds the row in L1). Per chunk
 * of MT_KCH super-blocks a table holds each token's activations reordered so
 * that one vpmaddubsw covers 16 elements of each of two 32-element groups
 * ([x 0..15 of group 2j | x 0..15 of group 2j+1] and the same for 16..31):
 * per token and 64 elements 2 vpmaddubsw + 1 add + 1 vpmaddwd (group scales
 * [sc_2j x8 | sc_2j+1 x8]) + 1 add into an integer accumulator. Per
 * super-block the integer sums of the tokens (levels and mins) are reduced
 * exactly and one float per token, (sum * d dx - mins * dmin dx), is added
 * in order to the token's running sum (carried in y across chunks), so
 * tensor-parallel column slices on super-block boundaries sum to the same
 * floats as the whole row (test_engine_shard's Q4_K layout compares them to
 * 1e-4).
 *
 * Odd block counts (family A): the last block is done in scalar code. */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "../../core/dtype.h"
#include "../../core/dtype_blocks.h"
#include "avx2_common.h"
#include "cpu_kernels.h"

#define MT_MAX 8  /* most tokens per call (and per kernel pass) */
#define MT_CH 64  /* block pairs (128 blocks, 4096 elements) per K chunk, family A: rows
                   * are read in long runs (short ones cost the hardware prefetch) */
#define MT_TV 4   /* table vectors per (block pair, token) */
#define MT_KCH 16 /* super-blocks per K chunk, Q4_K (long runs of each row, as MT_CH) */

int cpu_avx2_gemv_multi_max(int type)
{
    switch (type) {
    case DT_Q4_0:
    case DT_Q4_1:
    case DT_Q5_0:
    case DT_Q5_1:
    case DT_Q8_0:
    case DT_Q4_K:
        return MT_MAX;
    case DT_Q5_K:
    case DT_Q6_K: /* gemv_k56_avx2.c: 1 means one token only */
        return cpu_avx2_gemv_k56_max(type) > 1 ? cpu_avx2_gemv_k56_max(type) : 0;
    case DT_Q2_K:
    case DT_Q3_K:
        return cpu_avx2_gemv_k23_max(type) > 1 ? cpu_avx2_gemv_k23_max(type) : 0;
    }
    return 0;
}

AI uint64_t mt_u16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

/* The f16 at offset `off` of block b (p_r + off) and b+1 (+ bs) of 4 rows ->
 * [b: rows 0..3 | b+1: rows 0..3]. Gathered in general registers (the empty
 * asm keeps gcc from building it with vector shuffles on the busy pipes). */
AI __m256 mt_rows4_h(const uint8_t *p0, const uint8_t *p1, const uint8_t *p2, const uint8_t *p3,
                     size_t bs)
{
    uint64_t a = mt_u16(p0), b = mt_u16(p1), c = mt_u16(p2), d = mt_u16(p3);
    uint64_t e = mt_u16(p0 + bs), f = mt_u16(p1 + bs), g = mt_u16(p2 + bs), h = mt_u16(p3 + bs);
    __asm__("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d));
    __asm__("" : "+r"(e), "+r"(f), "+r"(g), "+r"(h));
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)(e | f << 16 | g << 32 | h << 48),
                                          (long long)(a | b << 16 | c << 32 | d << 48)));
}

AI size_t mt_bs(int type)
{
    return type == DT_Q4_0 ? sizeof(dt_block_q4_0) : type == DT_Q4_1 ? sizeof(dt_block_q4_1)
         : type == DT_Q5_0 ? sizeof(dt_block_q5_0) : type == DT_Q5_1 ? sizeof(dt_block_q5_1)
                           : sizeof(dt_block_q8_0);
}

/* Table of the nt tokens for block pairs [pb, pb + np): at (p * nt + t) *
 * MT_TV | xl | xh | dx [b x4 | b+1 x4] | k sx [b x4 | b+1 x4] |; Q4/Q5: xl =
 * [x_b 0..15 | x_b+1 0..15], xh = [x_b 16..31 | x_b+1 16..31]; Q8_0: x_b,
 * x_b+1 (the weights' own order). k: -8 (Q4_0), -16 (Q5_0), 1 (Q4_1, Q5_1). */
static void mt_a_table(int type, const uint8_t *x, size_t xs, int nt, int64_t n, int64_t pb, int np,
                       __m256 *tab)
{
    const int64_t nbp = cpu_pad8(n / 32);
    const float k = type == DT_Q4_0 ? -8.0f : type == DT_Q5_0 ? -16.0f : 1.0f;
    for (int t = 0; t < nt; t++) {
        const uint8_t *xq = x + t * xs;
        const float *dx = (const float *)(xq + n), *sx = dx + nbp;
        for (int p = 0; p < np; p++) {
            int64_t b = 2 * (pb + p);
            __m256i x0 = _mm256_load_si256((const __m256i *)(xq + 32 * b));
            __m256i x1 = _mm256_load_si256((const __m256i *)(xq + 32 * b + 32));
            __m256 *T = tab + ((size_t)p * nt + t) * MT_TV;
            T[0] = _mm256_castsi256_ps(_mm256_permute2x128_si256(x0, x1, 0x20));
            T[1] = _mm256_castsi256_ps(_mm256_permute2x128_si256(x0, x1, 0x31));
            T[2] = _mm256_set_m128(_mm_set1_ps(dx[b + 1]), _mm_set1_ps(dx[b]));
            T[3] = _mm256_set_m128(_mm_set1_ps(k * sx[b + 1]), _mm_set1_ps(k * sx[b]));
        }
    }
}

/* 5th bits of elements 0..15 (lo) or 16..31 (hi) of blocks b and b+1 -> 0x10 bytes */
AI __m256i mt_q5_hbits(const uint8_t *qh0, const uint8_t *qh1, int hi)
{
    uint32_t a, b;
    memcpy(&a, qh0, 4), memcpy(&b, qh1, 4);
    uint32_t v = hi ? (a >> 16) | (b & 0xffff0000u) : (a & 0xffffu) | (b << 16);
    return bits_to_0x10(v);
}

/* Transposed reduction of 4 rows: p_r = 16 int16 partial sums of row r
 * (lanes 0..7: block b, 8..15: block b+1) -> int32 [b: rows 0..3 | b+1:
 * rows 0..3]. The unpack order leaves the two halves of each row sum next to
 * each other, so the last step is vpmaddwd alone. wide = 0: all in 16 bits
 * (|4 lanes| < 2^15, Q4); wide = 1: pairs in 16 bits, then widened (|2
 * lanes| < 2^15, Q5). */
AI __m256i mt_reduce4_i16(__m256i p0, __m256i p1, __m256i p2, __m256i p3, const int wide)
{
    const __m256i ones = _mm256_set1_epi16(1);
    /* [r0 r0 r1 r1 r0 r0 r1 r1] per 128-bit lane */
    __m256i t01 = _mm256_add_epi16(_mm256_unpacklo_epi32(p0, p1), _mm256_unpackhi_epi32(p0, p1));
    __m256i t23 = _mm256_add_epi16(_mm256_unpacklo_epi32(p2, p3), _mm256_unpackhi_epi32(p2, p3));
    /* [r0 r0 r1 r1 r2 r2 r3 r3] per 128-bit lane */
    __m256i ul = _mm256_unpacklo_epi64(t01, t23), uh = _mm256_unpackhi_epi64(t01, t23);
    if (!wide)
        return _mm256_madd_epi16(_mm256_add_epi16(ul, uh), ones);
    return _mm256_add_epi32(_mm256_madd_epi16(ul, ones), _mm256_madd_epi16(uh, ones));
}

/* The same in 32-bit lanes: c_r = 8 int32 of row r -> [r0 r1 r2 r3] per
 * 128-bit lane (each the sum of that lane's 4 values of the row). */
AI __m256i mt_reduce4_i32(__m256i c0, __m256i c1, __m256i c2, __m256i c3)
{
    __m256i t01 = _mm256_add_epi32(_mm256_unpacklo_epi32(c0, c1), _mm256_unpackhi_epi32(c0, c1));
    __m256i t23 = _mm256_add_epi32(_mm256_unpacklo_epi32(c2, c3), _mm256_unpackhi_epi32(c2, c3));
    return _mm256_add_epi32(_mm256_unpacklo_epi64(t01, t23), _mm256_unpackhi_epi64(t01, t23));
}

/* 4 rows (w0..w3: their first blocks) x NT (1..4) tokens over the np block
 * pairs of one chunk starting at pair pb; T: table of the chunk's first pair
 * and of this group's first token, ntt tokens per pair. Writes (first chunk)
 * or adds the partial dots to y[t * ldy + r] for r < nr. pf: the next row
 * group's first row (walked linearly, one line per pair), or NULL. */
AI void mt_a_kernel(const int type, const uint8_t *w0, const uint8_t *w1, const uint8_t *w2,
                    const uint8_t *w3, size_t pf, int64_t pb, int np, const __m256 *T, int ntt,
                    float *y, int64_t ldy, int nr, int first, const int NT, const int R4)
{
    const size_t bs = mt_bs(type);
    const size_t qo = type == DT_Q4_0 ? offsetof(dt_block_q4_0, qs) : type == DT_Q4_1 ? offsetof(dt_block_q4_1, qs)
                    : type == DT_Q5_0 ? offsetof(dt_block_q5_0, qs) : type == DT_Q5_1 ? offsetof(dt_block_q5_1, qs)
                                      : offsetof(dt_block_q8_0, qs);
    const size_t ho = type == DT_Q5_0 ? offsetof(dt_block_q5_0, qh) : offsetof(dt_block_q5_1, qh);
    const int q5 = type == DT_Q5_0 || type == DT_Q5_1, has_m = type == DT_Q4_1 || type == DT_Q5_1;
    const int q8 = type == DT_Q8_0, off = type == DT_Q4_0 || type == DT_Q5_0;
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    __m256 acc[MT_MAX];
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
        acc[t] = _mm256_setzero_ps();
    for (int p = 0; p < np; p++, T += (size_t)ntt * MT_TV) {
        const size_t o = 2 * (size_t)(pb + p) * bs;
        const uint8_t *b[4] = {w0 + o, w1 + o, w2 + o, w3 + o};
        /* R4 group (gemv_a45_avx2.c), per pair of blocks:
         * [8 scales | per row its 2 * (bs - 2) level bytes] at w0 + 4 o */
        const uint8_t *rec = w0 + 4 * o;
        const size_t rl = 2 * (bs - 2);
        if (R4) {
            if (pf)
#pragma GCC unroll 5
                for (size_t l = 0; l < 8 * bs; l += 64)
                    _mm_prefetch((const char *)rec + pf + l, _MM_HINT_T0);
        } else if (pf) {
            _mm_prefetch((const char *)b[0] + pf, _MM_HINT_T0);
            _mm_prefetch((const char *)b[1] + pf, _MM_HINT_T0);
            _mm_prefetch((const char *)b[2] + pf, _MM_HINT_T0);
            _mm_prefetch((const char *)b[3] + pf, _MM_HINT_T0);
        }
        __m256i lo[4], hi[4], sg[4][2];
        __m256 dp = R4 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)rec))
                       : mt_rows4_h(b[0], b[1], b[2], b[3], bs), mp = dp;
        if (has_m)
            mp = mt_rows4_h(b[0] + 2, b[1] + 2, b[2] + 2, b[3] + 2, bs);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            /* elements 0..15 of blocks b and b+1 in one register (Q8_0: and 16..31 in another) */
            __m256i v = R4 ? _mm256_loadu_si256((const __m256i *)(rec + 16 + rl * r))
                           : _mm256_inserti128_si256(
                                 _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(b[r] + qo))),
                                 _mm_loadu_si128((const __m128i *)(b[r] + bs + qo)), 1);
            if (q8) { /* |levels|; the signs are applied to the activations */
                sg[r][0] = v;
                sg[r][1] = R4 ? _mm256_loadu_si256((const __m256i *)(rec + 48 + rl * r)) : _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(b[r] + qo + 16))),
                    _mm_loadu_si128((const __m128i *)(b[r] + bs + qo + 16)), 1);
                lo[r] = _mm256_abs_epi8(sg[r][0]);
                hi[r] = _mm256_abs_epi8(sg[r][1]);
            } else {
                lo[r] = _mm256_and_si256(v, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (q5) {
                    lo[r] = _mm256_or_si256(lo[r], mt_q5_hbits(b[r] + ho, b[r] + bs + ho, 0));
                    hi[r] = _mm256_or_si256(hi[r], mt_q5_hbits(b[r] + ho, b[r] + bs + ho, 1));
                }
            }
        }
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const __m256 *Tt = T + t * MT_TV;
            __m256i xl = _mm256_castps_si256(Tt[0]), xh = _mm256_castps_si256(Tt[1]);
            __m256i s;
            if (q8) {
                __m256i c[4];
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) /* |16-bit lane| <= 2 * 127 * 127: widened at once */
                    c[r] = _mm256_add_epi32(
                        _mm256_madd_epi16(_mm256_maddubs_epi16(lo[r], _mm256_sign_epi8(xl, sg[r][0])), ones),
                        _mm256_madd_epi16(_mm256_maddubs_epi16(hi[r], _mm256_sign_epi8(xh, sg[r][1])), ones));
                s = mt_reduce4_i32(c[0], c[1], c[2], c[3]);
            } else {
                __m256i pr[4];
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) /* |lane| <= 2 * 2 * 15 * 127 (Q5: 31) */
                    pr[r] = _mm256_add_epi16(_mm256_maddubs_epi16(lo[r], xl), _mm256_maddubs_epi16(hi[r], xh));
                s = mt_reduce4_i16(pr[0], pr[1], pr[2], pr[3], q5);
            }
            __m256 sf = _mm256_cvtepi32_ps(s);
            if (q8)
                acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(sf, Tt[2]), dp, acc[t]);
            else if (off)
                acc[t] = _mm256_fmadd_ps(dp, _mm256_fmadd_ps(sf, Tt[2], Tt[3]), acc[t]);
            else
                acc[t] = _mm256_fmadd_ps(dp, _mm256_mul_ps(sf, Tt[2]), _mm256_fmadd_ps(mp, Tt[3], acc[t]));
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++) {
        __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc[t]), _mm256_extractf128_ps(acc[t], 1));
        float *yt = y + t * ldy;
        if (nr == 4) {
            _mm_storeu_ps(yt, first ? v : _mm_add_ps(_mm_loadu_ps(yt), v));
        } else {
            float o[4];
            _mm_storeu_ps(o, v);
            for (int r = 0; r < nr; r++)
                yt[r] = first ? o[r] : yt[r] + o[r];
        }
    }
}

/* scalar dot of one block of `type` with one q8 activation block (scale dx,
 * sum sx = dx * sum of its levels) */
static float mt_a_block_scalar(int type, const uint8_t *blk, const int8_t *x, float dx, float sx)
{
    int lv[32];
    float d, m = 0.0f;
    switch (type) {
    case DT_Q8_0: {
        const dt_block_q8_0 *b = (const void *)blk;
        d = h2f(b->d);
        for (int i = 0; i < 32; i++)
            lv[i] = b->qs[i];
        break;
    }
    case DT_Q4_0:
    case DT_Q4_1: {
        const uint8_t *qs = type == DT_Q4_0 ? ((const dt_block_q4_0 *)blk)->qs : ((const dt_block_q4_1 *)blk)->qs;
        for (int i = 0; i < 16; i++)
            lv[i] = qs[i] & 15, lv[i + 16] = qs[i] >> 4;
        if (type == DT_Q4_0) {
            d = h2f(((const dt_block_q4_0 *)blk)->d), m = -8.0f * d;
        } else {
            d = h2f(((const dt_block_q4_1 *)blk)->d), m = h2f(((const dt_block_q4_1 *)blk)->m);
        }
        break;
    }
    default: {
        const uint8_t *qs, *qhp;
        if (type == DT_Q5_0) {
            const dt_block_q5_0 *b = (const void *)blk;
            qs = b->qs, qhp = b->qh, d = h2f(b->d), m = -16.0f * d;
        } else {
            const dt_block_q5_1 *b = (const void *)blk;
            qs = b->qs, qhp = b->qh, d = h2f(b->d), m = h2f(b->m);
        }
        uint32_t qh;
        memcpy(&qh, qhp, 4);
        for (int i = 0; i < 16; i++) {
            lv[i] = (qs[i] & 15) | (int)((qh >> i) & 1) << 4;
            lv[i + 16] = (qs[i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4;
        }
        break;
    }
    }
    int32_t si = 0;
    for (int i = 0; i < 32; i++)
        si += lv[i] * x[i];
    return d * dx * (float)si + m * sx;
}

typedef void (*mt_a_fn)(const uint8_t *, const uint8_t *, const uint8_t *, const uint8_t *, size_t,
                        int64_t, int, const __m256 *, int, float *, int64_t, int, int, int);

/* Token groups of up to 4 (each pipeline stage's micro-batch is one) are
 * compiled with gcc's pre-register-allocation scheduler: in interleaved A/B
 * runs 4-7% faster at 4 tokens and 5-12% at 2 for Q4_0 (Q8_0: 2% and 4-5%);
 * the 8-token group keeps gcc's default (4-7% slower with it). */
#define MT_A_DISPATCH(T, S, R)                                                                         \
    __attribute__((optimize("schedule-insns", "sched-pressure"))) static void mt_a##S##_##T(        \
        const uint8_t *w0, const uint8_t *w1, const uint8_t *w2, const uint8_t *w3, size_t pf,     \
        int64_t pb, int np, const __m256 *tab, int ntt, float *y, int64_t ldy, int nr, int first,  \
        int nt)                                                                                    \
    {                                                                                              \
        switch (nt) {                                                                              \
        case 1: mt_a_kernel(DT_##T, w0, w1, w2, w3, pf, pb, np, tab, ntt, y, ldy, nr, first, 1, R); break; \
        case 2: mt_a_kernel(DT_##T, w0, w1, w2, w3, pf, pb, np, tab, ntt, y, ldy, nr, first, 2, R); break; \
        case 3: mt_a_kernel(DT_##T, w0, w1, w2, w3, pf, pb, np, tab, ntt, y, ldy, nr, first, 3, R); break; \
        default: mt_a_kernel(DT_##T, w0, w1, w2, w3, pf, pb, np, tab, ntt, y, ldy, nr, first, 4, R); break; \
        }                                                                                          \
    }                                                                                              \
    static void mt_a8##S##_##T(const uint8_t *w0, const uint8_t *w1, const uint8_t *w2, const uint8_t *w3, \
                          size_t pf, int64_t pb, int np, const __m256 *tab, int ntt, float *y,      \
                          int64_t ldy, int nr, int first, int nt)                                   \
    {                                                                                              \
        mt_a_kernel(DT_##T, w0, w1, w2, w3, pf, pb, np, tab, ntt, y, ldy, nr, first, 8, R);        \
    }
MT_A_DISPATCH(Q4_0, , 0)
MT_A_DISPATCH(Q4_1, , 0)
MT_A_DISPATCH(Q5_0, , 0)
MT_A_DISPATCH(Q5_1, , 0)
MT_A_DISPATCH(Q8_0, , 0)
MT_A_DISPATCH(Q4_0, r4, 1) /* R4 groups */
MT_A_DISPATCH(Q8_0, r4, 1)
#undef MT_A_DISPATCH

static void mt_a(const cpu_gemm_args *a)
{
    __m256 tab[MT_MAX * MT_CH * MT_TV]; /* 64 KiB of stack */
    const int type = a->type;
    const size_t bs = mt_bs(type), ws = a->w_stride;
    const int64_t n = a->n, nb = n / 32, npairs = nb / 2, nrows = a->n_rows;
    /* token groups of <= 4 (8 tokens: one group, the levels decoded once) */
    const int nt = (int)a->n_tok, ng = nt == 8 ? 1 : (nt + 3) / 4;
    mt_a_fn kern = type == DT_Q4_0 ? mt_a_Q4_0 : type == DT_Q4_1 ? mt_a_Q4_1
                 : type == DT_Q5_0 ? mt_a_Q5_0 : type == DT_Q5_1 ? mt_a_Q5_1 : mt_a_Q8_0;
    if (ng == 1 && nt == 8)
        kern = type == DT_Q4_0 ? mt_a8_Q4_0 : type == DT_Q4_1 ? mt_a8_Q4_1
             : type == DT_Q5_0 ? mt_a8_Q5_0 : type == DT_Q5_1 ? mt_a8_Q5_1 : mt_a8_Q8_0;
    const int r4 = a->r4 && (type == DT_Q4_0 || type == DT_Q8_0) && nrows % 4 == 0;
    if (r4 && type == DT_Q4_0)
        kern = nt == 8 ? mt_a8r4_Q4_0 : mt_ar4_Q4_0;
    else if (r4)
        kern = nt == 8 ? mt_a8r4_Q8_0 : mt_ar4_Q8_0;
    for (int64_t c0 = 0; c0 < npairs; c0 += MT_CH) {
        int np = (int)(npairs - c0 < MT_CH ? npairs - c0 : MT_CH);
        mt_a_table(type, a->x, a->x_stride, nt, n, c0, np, tab);
        for (int64_t r0 = 0; r0 < nrows; r0 += 4) {
            int nr = (int)(nrows - r0 < 4 ? nrows - r0 : 4);
            const uint8_t *w[4];
            for (int r = 0; r < 4; r++) /* rows past the end: the last row again, not stored */
                w[r] = a->w + (r0 + (r < nr ? r : nr - 1)) * ws;
            /* the next group of rows, prefetched while this one computes */
            size_t pf = r0 + 8 <= nrows ? 4 * ws : 0;
            for (int g = 0; g < ng; g++) {
                int t0 = nt * g / ng, t1 = nt * (g + 1) / ng;
                kern(w[0], w[1], w[2], w[3], g == 0 ? pf : 0, c0, np, tab + (size_t)t0 * MT_TV, nt,
                     a->y + t0 * a->ldy + r0, a->ldy, nr, c0 == 0, t1 - t0);
            }
        }
    }
    if (nb & 1) { /* the last block of an odd count */
        int64_t b = nb - 1, nbp = cpu_pad8(nb);
        for (int64_t t = 0; t < nt; t++) {
            const uint8_t *xq = a->x + t * a->x_stride;
            const float *dx = (const float *)(xq + n), *sx = dx + nbp;
            for (int64_t r = 0; r < nrows; r++) {
                const uint8_t *blk = a->w + r * ws + b * bs;
                uint8_t sb[34];
                if (r4) { /* the group's last record, after its pairs */
                    cpu_r4_tail_block(a->w + (r & ~(int64_t)3) * ws + npairs * 8 * bs, (int)(r & 3), bs, sb);
                    blk = sb;
                }
                float v = mt_a_block_scalar(type, blk, (const int8_t *)xq + 32 * b, dx[b], sx[b]);
                float *yy = a->y + t * a->ldy + r;
                *yy = npairs ? *yy + v : v;
            }
        }
    }
}

/* ---- Q4_K ------------------------------------------------------------------ */

/* 12 scale bytes -> 8 six-bit scales (bytes 0..7) and 8 mins (bytes 8..15) */
AI __m128i mt_q4k_scales(const uint8_t *s)
{
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    uint32_t a, b, c;
    memcpy(&a, s, 4), memcpy(&b, s + 4, 4), memcpy(&c, s + 8, 4);
    __asm__("" : "+r"(a), "+r"(b), "+r"(c)); /* keep the unpack on the integer pipes */
    uint64_t sc = (uint64_t)((c & m4) | (((a >> 6) & m2) << 4)) << 32 | (a & m6);
    uint64_t mn = (uint64_t)(((c >> 4) & m4) | (((b >> 6) & m2) << 4)) << 32 | (b & m6);
    return _mm_set_epi64x((long long)mn, (long long)sc);
}

/* Q4_K token table of one chunk: per (super-block, token) MT_KX bytes: the
 * 256 activations reordered, per 64 elements (groups 2j, 2j+1) | x 0..15 of
 * 2j | x 0..15 of 2j+1 | x 16..31 of 2j | x 16..31 of 2j+1 |. Per (super-
 * block, token) of the whole call, in mt_k_side: the 8 pair sums of its
 * bsums (int16, one per group of 32) and dx, MT_MAX + 4 tokens per
 * super-block (the padding zero) so that 4 tokens are read at once. */
#define MT_KX 256
typedef struct {
    int16_t bp[MT_MAX + 4][8];
    float dx[MT_MAX + 4];
} mt_k_side;

static void mt_k_table(const uint8_t *x, size_t xs, int nt, int64_t n, int64_t s0, int nsc, uint8_t *tab)
{
    for (int s = 0; s < nsc; s++)
        for (int t = 0; t < nt; t++) {
            const uint8_t *xq = x + t * xs + 256 * (s0 + s);
            uint8_t *o = tab + ((size_t)s * nt + t) * MT_KX;
            for (int j = 0; j < 4; j++) {
                __m256i a = _mm256_load_si256((const __m256i *)(xq + 64 * j));
                __m256i b = _mm256_load_si256((const __m256i *)(xq + 64 * j + 32));
                _mm256_store_si256((__m256i *)(o + 64 * j), _mm256_permute2x128_si256(a, b, 0x20));
                _mm256_store_si256((__m256i *)(o + 64 * j + 32), _mm256_permute2x128_si256(a, b, 0x31));
            }
        }
}

static void mt_k_sides(const uint8_t *x, size_t xs, int nt, int64_t n, int64_t s0, int nsc, mt_k_side *side)
{
    const int64_t ns = n / 256;
    for (int s = 0; s < nsc; s++) {
        memset(&side[s], 0, sizeof(side[s]));
        for (int t = 0; t < nt; t++) {
            const float *dx = (const float *)(x + t * xs + n);
            const int16_t *bsums = (const int16_t *)(dx + ns) + 16 * (s0 + s);
            __m256i bsv = _mm256_loadu_si256((const __m256i *)bsums);
            _mm_storeu_si128((__m128i *)side[s].bp[t],
                             _mm_hadd_epi16(_mm256_castsi256_si128(bsv), _mm256_extracti128_si256(bsv, 1)));
            side[s].dx[t] = dx[s0 + s];
        }
    }
}

/* one Q4_K row (w: its first super-block) x NT (1..4) tokens over the nsc
 * super-blocks of a chunk starting at s0; T: table of the chunk's first
 * super-block and of this group's first token (ntt tokens per super-block);
 * side: the chunk's side data, tokens from t0. The
 * integer sums of a super-block are reduced exactly (one int32 per token for
 * the levels and one for the mins) and its float value is added to the
 * token's running sum y[t * ldy] (0 in the first chunk) in order. */
AI void mt_k_row(const uint8_t *w, const uint8_t *pf, int64_t s0, int nsc, const uint8_t *T, int ntt,
                 const mt_k_side *side, int t0, float *y, int64_t ldy, int first, const int NT)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    const int NQ = (NT + 3) / 4; /* quads of tokens */
    float io[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (!first)
        for (int t = 0; t < NT; t++)
            io[t] = y[t * ldy];
    __m128 yv[2] = {_mm_loadu_ps(io), _mm_loadu_ps(io + 4)}; /* lane t: token 4 q + t */
    for (int s = 0; s < nsc; s++, T += (size_t)ntt * MT_KX) {
        const dt_block_q4_k *b = (const dt_block_q4_k *)w + s0 + s;
        if (pf)
            for (int l = 0; l < 3; l++)
                _mm_prefetch((const char *)pf + (s0 + s) * sizeof(dt_block_q4_k) + 64 * l, _MM_HINT_T0);
        __m128i scmn = mt_q4k_scales(b->scales);
        __m128i sc8 = _mm_cvtepu8_epi16(scmn); /* scales as int16 */
        __m256i scv = _mm256_broadcastsi128_si256(sc8);
        __m256i ia[8];
#pragma GCC unroll 8
        for (int t = 0; t < 4 * NQ; t++)
            ia[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            /* | low nibbles of bytes 0..15 (group 2j, elements 0..15) | high
             * nibbles (group 2j+1) |, the same for bytes 16..31 */
            __m256i qa = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b->qs + 32 * j)));
            __m256i qb = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b->qs + 32 * j + 16)));
            __m256i la = _mm256_and_si256(_mm256_srlv_epi32(qa, shift), m4);
            __m256i lb = _mm256_and_si256(_mm256_srlv_epi32(qb, shift), m4);
            /* [sc_2j x8 | sc_2j+1 x8] */
            __m256i scj = _mm256_shuffle_epi8(scv, _mm256_setr_epi8(
                4 * j, 4 * j + 1, 4 * j, 4 * j + 1, 4 * j, 4 * j + 1, 4 * j, 4 * j + 1,
                4 * j, 4 * j + 1, 4 * j, 4 * j + 1, 4 * j, 4 * j + 1, 4 * j, 4 * j + 1,
                4 * j + 2, 4 * j + 3, 4 * j + 2, 4 * j + 3, 4 * j + 2, 4 * j + 3, 4 * j + 2, 4 * j + 3,
                4 * j + 2, 4 * j + 3, 4 * j + 2, 4 * j + 3, 4 * j + 2, 4 * j + 3, 4 * j + 2, 4 * j + 3));
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                const uint8_t *xt = T + (size_t)t * MT_KX + 64 * j;
                /* |lane| <= 2 * 2 * 15 * 127 */
                __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(la, _mm256_load_si256((const __m256i *)xt)),
                                             _mm256_maddubs_epi16(lb, _mm256_load_si256((const __m256i *)(xt + 32))));
                ia[t] = _mm256_add_epi32(ia[t], _mm256_madd_epi16(p, scj));
            }
        }
        /* mins: [mn x8 | mn x8] against [bp_t0 | bp_t1] and [bp_t2 | bp_t3] */
        const mt_k_side *sd = side + s;
        __m256i mn = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_unpackhi_epi64(scmn, scmn)));
        __m128 dd = _mm_set1_ps(h2f(b->d)), dm = _mm_set1_ps(h2f(b->dmin));
#pragma GCC unroll 2
        for (int q = 0; q < NQ; q++) {
            const int tq = t0 + 4 * q;
            __m256i m01 = _mm256_madd_epi16(mn, _mm256_loadu_si256((const __m256i *)sd->bp[tq]));
            __m256i m23 = NT - 4 * q > 2 ? _mm256_madd_epi16(mn, _mm256_loadu_si256((const __m256i *)sd->bp[tq + 2]))
                                         : _mm256_setzero_si256();
            /* exact per-token sums: levels [t0 t1 t2 t3], mins [t0 t1 t2 t3] */
            __m256i l = mt_reduce4_i32(ia[4 * q], ia[4 * q + 1], ia[4 * q + 2], ia[4 * q + 3]);
            __m128i si = _mm_add_epi32(_mm256_castsi256_si128(l), _mm256_extracti128_si256(l, 1));
            __m256i u = _mm256_add_epi32(_mm256_unpacklo_epi32(m01, m23), _mm256_unpackhi_epi32(m01, m23));
            u = _mm256_add_epi32(u, _mm256_shuffle_epi32(u, 0x4e)); /* [t0 t2 t0 t2 | t1 t3 t1 t3] */
            __m128i mi = _mm_unpacklo_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
            __m128 dxv = _mm_loadu_ps(sd->dx + tq);
            __m128 a1 = _mm_mul_ps(dd, dxv), a2 = _mm_mul_ps(dm, dxv);
            yv[q] = _mm_add_ps(yv[q], _mm_sub_ps(_mm_mul_ps(_mm_cvtepi32_ps(si), a1),
                                                 _mm_mul_ps(_mm_cvtepi32_ps(mi), a2)));
        }
    }
    _mm_storeu_ps(io, yv[0]);
    _mm_storeu_ps(io + 4, yv[1]);
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
        y[t * ldy] = io[t];
}

static void mt_k(const cpu_gemm_args *a)
{
    uint8_t tab[MT_MAX * MT_KCH * MT_KX] __attribute__((aligned(32))); /* 32 KiB of stack */
    mt_k_side side[MT_KCH];
    const int64_t ns = a->n / 256;
    /* token groups of <= 4 (8 tokens: one group, the levels decoded once) */
    const int nt = (int)a->n_tok, ng = nt == 8 ? 1 : (nt + 3) / 4;
    for (int64_t c0 = 0; c0 < ns; c0 += MT_KCH) {
        int nsc = (int)(ns - c0 < MT_KCH ? ns - c0 : MT_KCH);
        mt_k_table(a->x, a->x_stride, nt, a->n, c0, nsc, tab);
        mt_k_sides(a->x, a->x_stride, nt, a->n, c0, nsc, side);
        for (int64_t r = 0; r < a->n_rows; r++) {
            const uint8_t *w = a->w + r * a->w_stride;
            const uint8_t *pf = r + 1 < a->n_rows ? w + a->w_stride : NULL;
            for (int g = 0; g < ng; g++) {
                int t0 = nt * g / ng, t1 = nt * (g + 1) / ng;
                const uint8_t *T = tab + (size_t)t0 * MT_KX;
                float *y = a->y + t0 * a->ldy + r;
                const uint8_t *p = g == 0 ? pf : NULL;
                switch (t1 - t0) {
                case 1: mt_k_row(w, p, c0, nsc, T, nt, side, t0, y, a->ldy, c0 == 0, 1); break;
                case 2: mt_k_row(w, p, c0, nsc, T, nt, side, t0, y, a->ldy, c0 == 0, 2); break;
                case 3: mt_k_row(w, p, c0, nsc, T, nt, side, t0, y, a->ldy, c0 == 0, 3); break;
                case 4: mt_k_row(w, p, c0, nsc, T, nt, side, t0, y, a->ldy, c0 == 0, 4); break;
                default: mt_k_row(w, p, c0, nsc, T, nt, side, t0, y, a->ldy, c0 == 0, 8); break;
                }
            }
        }
    }
}

/* Fused decode for 2 <= a->n_tok <= cpu_avx2_gemv_multi_max(a->type);
 * returns 1 when it computed a->y, 0 otherwise. */
int cpu_avx2_gemv_multi(const cpu_gemm_args *a)
{
    if (a->n_tok < 2 || a->n_tok > cpu_avx2_gemv_multi_max(a->type))
        return 0;
    if (a->type == DT_Q4_K) {
        if (a->n % 256)
            return 0;
        if (a->r4) /* R4 groups (gemv_r4k_avx2.c) */
            return cpu_r4_q4_k_multi(a);
        mt_k(a);
        return 1;
    }
    if (a->n % 32)
        return 0;
    mt_a(a);
    return 1;
}
