/* gemv_multi_avx2.c - AVX2 fused decode for a few tokens at once (2..8, e.g.
 * several sequences decoding together): each weight block is read from the
 * weights once, decoded to its levels in registers and multiplied with the
 * q8 activation block of every token, so a step of k tokens streams the
 * weights once instead of k times (and skips the packing of the prefill GEMM).
 * Called through cpu_avx2_gemv (gemv_avx2.c) for n_tok >= 2; matmul.c routes
 * n_tok <= cpu_avx2_gemv_multi_max(type) here instead of to gemm_avx2.c.
 *
 * Family A (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, act "q8b"): the K axis is cut into
 * chunks of MT_CH block pairs. Per chunk, a table holds for every token and
 * block pair the activations in the lane order of the weights (Q4/Q5: two
 * blocks' low nibbles in one register against [x_b 0..15 | x_b+1 0..15]) and
 * the activation scales as vectors [b x4 | b+1 x4] (Q8_0: [b b b+1 b+1] per
 * 128-bit lane, the order of vphaddd). Then for each group of 1-2 rows and
 * each group of up to 4 tokens (a later group finds the rows in L1), per
 * block pair: levels decoded once per row, per (row, token) 2 maddubs + add
 * + madd + convert + 2 FMA into one float accumulator per (row, token); the
 * per-row scales enter as [d_b x4 | d_b+1 x4] (one FMA folds the offset
 * term of Q4_0/Q5_0). Partial sums go to y at the end of each chunk.
 *
 * Family K (Q4_K, act "q8kb"): one row at a time, up to 4 tokens in
 * registers; the 6-bit group scales and mins are unpacked once per row and
 * super-block, the nibble levels once per 64 elements, then per token
 * 2 maddubs + 2 madd (group scales) into an integer accumulator per
 * super-block; per super-block the integer sums of the tokens are reduced
 * exactly and one float per token is added in order (so tensor-parallel
 * column slices on super-block boundaries sum to the same floats as the
 * whole row: test_engine_shard's Q4_K layout compares them to 1e-4).
 *
 * Odd block counts (family A): the last block is done in scalar code. */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "../../core/dtype.h"
#include "../../core/dtype_blocks.h"
#include "avx2_common.h"
#include "cpu_kernels.h"

#define MT_MAX 8  /* most tokens per call */
#define MT_CH 32  /* block pairs (64 blocks, 2048 elements) per K chunk */
#define MT_TV 4   /* table vectors per (token, block pair) */

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

/* f16 at p (block b) and p + bs (block b+1) -> [b x4 | b+1 x4] */
AI __m256 mt_pair_h(const uint8_t *p, size_t bs)
{
    const uint64_t rep = 0x0001000100010001ULL;
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)(mt_u16(p + bs) * rep), (long long)(mt_u16(p) * rep)));
}

/* the same in the vphaddd order [b b b+1 b+1 | b b b+1 b+1] */
AI __m256 mt_pair_h2(const uint8_t *p, size_t bs)
{
    uint64_t h = mt_u16(p) * 0x00010001ULL | (mt_u16(p + bs) * 0x00010001ULL) << 32;
    return _mm256_cvtph_ps(_mm_set1_epi64x((long long)h));
}

AI size_t mt_bs(int type)
{
    return type == DT_Q4_0 ? sizeof(dt_block_q4_0) : type == DT_Q4_1 ? sizeof(dt_block_q4_1)
         : type == DT_Q5_0 ? sizeof(dt_block_q5_0) : type == DT_Q5_1 ? sizeof(dt_block_q5_1)
                           : sizeof(dt_block_q8_0);
}

/* Table of one token for block pairs [pb, pb + np): per pair | xl | xh | dx | k sx / 4 |
 * (Q8_0: | x_b | x_b+1 | dx in vphaddd order | unused |). */
static void mt_a_table(int type, const uint8_t *xq, int64_t n, int64_t pb, int np, __m256 *tab)
{
    int64_t nbp = cpu_pad8(n / 32);
    const float *dx = (const float *)(xq + n), *sx = dx + nbp;
    /* the offset term is added in each of a block's 4 lanes: a quarter in each */
    const float k = 0.25f * (type == DT_Q4_0 ? -8.0f : type == DT_Q5_0 ? -16.0f : 1.0f);
    for (int p = 0; p < np; p++) {
        int64_t b = 2 * (pb + p);
        __m256i x0 = _mm256_load_si256((const __m256i *)(xq + 32 * b));
        __m256i x1 = _mm256_load_si256((const __m256i *)(xq + 32 * b + 32));
        __m256 *t = tab + MT_TV * p;
        if (type == DT_Q8_0) {
            t[0] = _mm256_castsi256_ps(x0);
            t[1] = _mm256_castsi256_ps(x1);
            t[2] = _mm256_setr_ps(dx[b], dx[b], dx[b + 1], dx[b + 1], dx[b], dx[b], dx[b + 1], dx[b + 1]);
            t[3] = _mm256_setzero_ps();
        } else {
            t[0] = _mm256_castsi256_ps(_mm256_permute2x128_si256(x0, x1, 0x20));
            t[1] = _mm256_castsi256_ps(_mm256_permute2x128_si256(x0, x1, 0x31));
            t[2] = _mm256_set_m128(_mm_set1_ps(dx[b + 1]), _mm_set1_ps(dx[b]));
            t[3] = _mm256_set_m128(_mm_set1_ps(k * sx[b + 1]), _mm_set1_ps(k * sx[b]));
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

/* RR (1..2) rows x NT (1..4) tokens over the np block pairs of one chunk
 * starting at pair pb; tab: table of the first token (tokens ts vectors
 * apart). Writes (first chunk) or adds the partial dots to y[t * ldy + r]. */
AI void mt_a_kernel(const int type, const uint8_t *w, size_t ws, int64_t pb, int np, const __m256 *tab,
                    size_t ts, float *y, int64_t ldy, int first, int pf, const int RR, const int NT)
{
    const size_t bs = mt_bs(type);
    const size_t qo = type == DT_Q4_0 ? offsetof(dt_block_q4_0, qs) : type == DT_Q4_1 ? offsetof(dt_block_q4_1, qs)
                    : type == DT_Q5_0 ? offsetof(dt_block_q5_0, qs) : type == DT_Q5_1 ? offsetof(dt_block_q5_1, qs)
                                      : offsetof(dt_block_q8_0, qs);
    const size_t ho = type == DT_Q5_0 ? offsetof(dt_block_q5_0, qh) : offsetof(dt_block_q5_1, qh);
    const int q5 = type == DT_Q5_0 || type == DT_Q5_1, has_m = type == DT_Q4_1 || type == DT_Q5_1;
    const int q8 = type == DT_Q8_0, off = type == DT_Q4_0 || type == DT_Q5_0;
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    __m256 acc[2][4];
#pragma GCC unroll 2
    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++)
            acc[r][t] = _mm256_setzero_ps();
    for (int p = 0; p < np; p++) {
        const uint8_t *blk = w + 2 * (pb + p) * bs;
        __m256i lo[2], hi[2];
        __m256 dp[2], mp[2];
#pragma GCC unroll 2
        for (int r = 0; r < RR; r++) {
            const uint8_t *b = blk + r * ws;
            if (pf) /* the next row group, when this work item has one */
                _mm_prefetch((const char *)b + RR * ws, _MM_HINT_T0);
            if (q8) {
                lo[r] = _mm256_loadu_si256((const __m256i *)(b + qo));
                hi[r] = _mm256_loadu_si256((const __m256i *)(b + bs + qo));
                dp[r] = mt_pair_h2(b, bs);
            } else {
                __m256i v = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(b + qo))),
                    _mm_loadu_si128((const __m128i *)(b + bs + qo)), 1);
                lo[r] = _mm256_and_si256(v, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (q5) {
                    lo[r] = _mm256_or_si256(lo[r], mt_q5_hbits(b + ho, b + bs + ho, 0));
                    hi[r] = _mm256_or_si256(hi[r], mt_q5_hbits(b + ho, b + bs + ho, 1));
                }
                dp[r] = mt_pair_h(b, bs);
                if (has_m)
                    mp[r] = mt_pair_h(b + 2, bs);
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const __m256 *T = tab + t * ts + MT_TV * p;
            __m256i xl = _mm256_castps_si256(T[0]), xh = _mm256_castps_si256(T[1]);
#pragma GCC unroll 2
            for (int r = 0; r < RR; r++) {
                if (q8) {
                    __m256i m0 = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(_mm256_abs_epi8(lo[r]), _mm256_sign_epi8(xl, lo[r])), ones);
                    __m256i m1 = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(_mm256_abs_epi8(hi[r]), _mm256_sign_epi8(xh, hi[r])), ones);
                    __m256 s = _mm256_cvtepi32_ps(_mm256_hadd_epi32(m0, m1));
                    acc[r][t] = _mm256_fmadd_ps(dp[r], _mm256_mul_ps(s, T[2]), acc[r][t]);
                } else {
                    /* |lane| <= 2 * (2 * 31 * 127) */
                    __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo[r], xl), _mm256_maddubs_epi16(hi[r], xh));
                    __m256 s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                    if (off)
                        acc[r][t] = _mm256_fmadd_ps(dp[r], _mm256_fmadd_ps(s, T[2], T[3]), acc[r][t]);
                    else
                        acc[r][t] = _mm256_fmadd_ps(dp[r], _mm256_mul_ps(s, T[2]),
                                                    _mm256_fmadd_ps(mp[r], T[3], acc[r][t]));
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 2
        for (int r = 0; r < RR; r++) {
            float v = hsum256(acc[r][t]);
            if (first)
                y[t * ldy + r] = v;
            else
                y[t * ldy + r] += v;
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

#define MT_A_DISPATCH(T)                                                                           \
    static void mt_a_##T(const uint8_t *w, size_t ws, int64_t pb, int np, const __m256 *tab,       \
                         size_t ts, float *y, int64_t ldy, int first, int pf, int rr, int nt)      \
    {                                                                                              \
        switch (rr * 8 + nt) {                                                                     \
        case 9: mt_a_kernel(DT_##T, w, ws, pb, np, tab, ts, y, ldy, first, pf, 1, 1); break;           \
        case 10: mt_a_kernel(DT_##T, w, ws, pb, np, tab, ts, y, ldy, first, pf, 1, 2); break;          \
        case 11: mt_a_kernel(DT_##T, w, ws, pb, np, tab, ts, y, ldy, first, pf, 1, 3); break;          \
        case 12: mt_a_kernel(DT_##T, w, ws, pb, np, tab, ts, y, ldy, first, pf, 1, 4); break;          \
        case 17: mt_a_kernel(DT_##T, w, ws, pb, np, tab, ts, y, ldy, first, pf, 2, 1); break;          \
        case 18: mt_a_kernel(DT_##T, w, ws, pb, np, tab, ts, y, ldy, first, pf, 2, 2); break;          \
        case 19: mt_a_kernel(DT_##T, w, ws, pb, np, tab, ts, y, ldy, first, pf, 2, 3); break;          \
        default: mt_a_kernel(DT_##T, w, ws, pb, np, tab, ts, y, ldy, first, pf, 2, 4); break;          \
        }                                                                                          \
    }
MT_A_DISPATCH(Q4_0)
MT_A_DISPATCH(Q4_1)
MT_A_DISPATCH(Q5_0)
MT_A_DISPATCH(Q5_1)
MT_A_DISPATCH(Q8_0)
#undef MT_A_DISPATCH

static void mt_a(const cpu_gemm_args *a)
{
    __m256 tab[MT_MAX * MT_CH * MT_TV]; /* 32 KiB of stack */
    const int type = a->type;
    const size_t bs = mt_bs(type), ts = MT_CH * MT_TV;
    const int64_t n = a->n, nb = n / 32, npairs = nb / 2, nt = a->n_tok;
    const int rr_max = type == DT_Q8_0 ? 1 : 2; /* Q8_0: 4 level registers per row */
    const int ng = (int)((nt + 3) / 4);       /* token groups of <= 4 */
    void (*kern)(const uint8_t *, size_t, int64_t, int, const __m256 *, size_t, float *, int64_t, int, int,
                 int, int) = type == DT_Q4_0 ? mt_a_Q4_0 : type == DT_Q4_1 ? mt_a_Q4_1
                      : type == DT_Q5_0 ? mt_a_Q5_0 : type == DT_Q5_1 ? mt_a_Q5_1 : mt_a_Q8_0;
    for (int64_t c0 = 0; c0 < npairs; c0 += MT_CH) {
        int np = (int)(npairs - c0 < MT_CH ? npairs - c0 : MT_CH);
        for (int64_t t = 0; t < nt; t++)
            mt_a_table(type, a->x + t * a->x_stride, n, c0, np, tab + (size_t)t * ts);
        for (int64_t r0 = 0; r0 < a->n_rows; r0 += rr_max) {
            int rr = (int)(a->n_rows - r0 < rr_max ? a->n_rows - r0 : rr_max);
            for (int g = 0; g < ng; g++) {
                int t0 = (int)(nt * g / ng), t1 = (int)(nt * (g + 1) / ng);
                kern(a->w + r0 * a->w_stride, a->w_stride, c0, np, tab + (size_t)t0 * ts, ts,
                     a->y + t0 * a->ldy + r0, a->ldy, c0 == 0, g == 0 && r0 + 2 * rr <= a->n_rows, rr,
                     t1 - t0);
            }
        }
    }
    if (nb & 1) { /* the last block of an odd count */
        int64_t b = nb - 1, nbp = cpu_pad8(nb);
        for (int64_t t = 0; t < nt; t++) {
            const uint8_t *xq = a->x + t * a->x_stride;
            const float *dx = (const float *)(xq + n), *sx = dx + nbp;
            for (int64_t r = 0; r < a->n_rows; r++) {
                float v = mt_a_block_scalar(type, a->w + r * a->w_stride + b * bs,
                                            (const int8_t *)xq + 32 * b, dx[b], sx[b]);
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

/* one Q4_K row x NT (1..4) q8kb tokens (xs bytes apart) -> y[t * ldy]. The
 * integer sums of a super-block are reduced exactly (to one int32 per token
 * for the levels and one for the mins) and each super-block's float value is
 * added to the token's sum in order, so splitting K on super-block
 * boundaries (tensor-parallel column slices) and adding the parts gives the
 * same floats as the whole row. */
AI void mt_k_row(const uint8_t *w, const uint8_t *pf, const uint8_t *x, size_t xs, int64_t n, float *y,
                 int64_t ldy, const int NT)
{
    const int64_t ns = n / 256;
    const __m256i m4 = _mm256_set1_epi8(15);
    __m128 yv = _mm_setzero_ps(); /* lane t: token t */
    for (int64_t s = 0; s < ns; s++) {
        const dt_block_q4_k *b = (const dt_block_q4_k *)w + s;
        if (pf)
            for (int l = 0; l < 3; l++)
                _mm_prefetch((const char *)pf + s * sizeof(dt_block_q4_k) + 64 * l, _MM_HINT_T0);
        __m128i scmn = mt_q4k_scales(b->scales);
        __m128i sc8 = _mm_cvtepu8_epi16(scmn), mn8 = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(scmn, scmn));
        __m256i scv = _mm256_broadcastsi128_si256(sc8);
        __m256i ia[4];
        __m128i im[4];
        float dxs[4] = {0, 0, 0, 0};
#pragma GCC unroll 4
        for (int t = 0; t < 4; t++)
            ia[t] = _mm256_setzero_si256(), im[t] = _mm_setzero_si128();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * j));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            __m256i slo = _mm256_shuffle_epi8(scv, _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * j))));
            __m256i shi = _mm256_shuffle_epi8(scv, _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * j + 1))));
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const uint8_t *xt = x + t * xs + 256 * s + 64 * j;
                __m256i plo = _mm256_maddubs_epi16(lo, _mm256_load_si256((const __m256i *)xt));
                __m256i phi = _mm256_maddubs_epi16(hi, _mm256_load_si256((const __m256i *)(xt + 32)));
                ia[t] = _mm256_add_epi32(ia[t], _mm256_add_epi32(_mm256_madd_epi16(plo, slo),
                                                                 _mm256_madd_epi16(phi, shi)));
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const float *dx = (const float *)(x + t * xs + n);
            const int16_t *bsums = (const int16_t *)(dx + ns) + 16 * s;
            __m256i bsv = _mm256_loadu_si256((const __m256i *)bsums);
            __m128i bp = _mm_hadd_epi16(_mm256_castsi256_si128(bsv), _mm256_extracti128_si256(bsv, 1));
            im[t] = _mm_madd_epi16(mn8, bp);
            dxs[t] = dx[s];
        }
        /* exact per-token sums [t0 t1 t2 t3] */
        __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(ia[0], ia[1]), _mm256_hadd_epi32(ia[2], ia[3]));
        __m128i si = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        __m128i mi = _mm_hadd_epi32(_mm_hadd_epi32(im[0], im[1]), _mm_hadd_epi32(im[2], im[3]));
        __m128 dxv = _mm_loadu_ps(dxs);
        __m128 a1 = _mm_mul_ps(_mm_set1_ps(h2f(b->d)), dxv), a2 = _mm_mul_ps(_mm_set1_ps(h2f(b->dmin)), dxv);
        yv = _mm_add_ps(yv, _mm_sub_ps(_mm_mul_ps(_mm_cvtepi32_ps(si), a1), _mm_mul_ps(_mm_cvtepi32_ps(mi), a2)));
    }
    float out[4];
    _mm_storeu_ps(out, yv);
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
        y[t * ldy] = out[t];
}

static void mt_k(const cpu_gemm_args *a)
{
    const int64_t nt = a->n_tok;
    const int ng = (int)((nt + 3) / 4);
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + r * a->w_stride;
        const uint8_t *pf = r + 1 < a->n_rows ? w + a->w_stride : NULL;
        for (int g = 0; g < ng; g++) {
            int t0 = (int)(nt * g / ng), t1 = (int)(nt * (g + 1) / ng);
            const uint8_t *x = a->x + t0 * a->x_stride;
            float *y = a->y + t0 * a->ldy + r;
            const uint8_t *p = g == 0 ? pf : NULL;
            switch (t1 - t0) {
            case 1: mt_k_row(w, p, x, a->x_stride, a->n, y, a->ldy, 1); break;
            case 2: mt_k_row(w, p, x, a->x_stride, a->n, y, a->ldy, 2); break;
            case 3: mt_k_row(w, p, x, a->x_stride, a->n, y, a->ldy, 3); break;
            default: mt_k_row(w, p, x, a->x_stride, a->n, y, a->ldy, 4); break;
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
        mt_k(a);
        return 1;
    }
    if (a->n % 32)
        return 0;
    mt_a(a);
    return 1;
}
