/* gemv_avx2.c - AVX2 decode kernels: one (or a few) activation rows times
 * quantized weight rows read straight from the weights, without the unpack
 * pass that prefill uses (each weight byte is read once per token anyway).
 * Called by matmul_avx2.c through cpu_avx2_gemv.
 *
 * Decode streams every weight byte once per token, so these kernels must
 * cost fewer cycles per byte than memory delivers (about 3 cycles per
 * 18-byte Q4_0 block on a 3 GHz core at 16-18 GB/s). The Q8_0 kernel here
 * and the Q4_0/Q4_1/Q5_0/Q5_1 ones in gemv_a45_avx2.c take four rows at a
 * time and reduce them "transposed": the integer partial sums of the 4
 * rows x 2 blocks are folded into one vector
 * [block b: rows 0..3 | block b+1: rows 0..3] (in 16-bit lanes where the
 * bounds allow it), so the float scale work is one convert and two FMAs
 * per 8 block-rows instead of per block-row. The per-block f16 scales of
 * the 4 rows are assembled in general registers (the integer pipes are
 * idle) and converted 8 at a time. Q4_K (float work per 256-element
 * super-block) also takes 4 rows, as 2 pairs with one row per 128-bit lane
 * so that a pair shares each group-scale vector, vpmaddwd and convert
 * (dec4_k4, details there).
 *
 * Memory: the 4 rows of a group are row i of each quarter of the call's
 * rows (rows i, i + q, i + 2q, i + 3q), so the kernel reads 4 long
 * sequential streams that the hardware prefetchers follow, without
 * software prefetch. On this Zen 3 VM 4 concurrent streams read 1.3-1.5x
 * faster than one stream (and than 4 consecutive rows walked side by side
 * with a software prefetch of the next group, the layout before): the
 * Llama-1B-shaped Q4_0 chain went from ~82% to ~105% of a one-stream read
 * and reaches ~75-83% of a 4-stream read (tests/bench/bench_decode_shapes).
 * What is left is compute: one thread runs the Q4_K kernel at ~28 GB/s
 * from L2 (~22 before dec4_k4 took its rows in pairs), close to what 4
 * streams deliver from DRAM, so memory and arithmetic do not fully
 * overlap (~78% of the read in caravan bench's tg128, 1 thread); Q8_0
 * (~30 GB/s from L2) reaches ~90% of the 4-stream read.
 * Q4_0 was there too (~24 GB/s from L2) although llvm-mca gives ~13
 * cycles per step of 144 bytes: measured, it ran ~18.5, its reduce/scale
 * chain waiting in the vector scheduler behind the loads; software-
 * pipelined (gemv_a45_avx2.c) it runs ~28-29 GB/s from L2 and ~77% of
 * the read in caravan bench's tg128 with 1 thread. */
#include <immintrin.h>
#include <string.h>

#include "../../core/dtype.h"
#include "../../core/dtype_blocks.h"
#include "avx2_common.h"
#include "cpu_kernels.h"

/* ---- decode (one token): Q8_0 rows without the unpack pass ---------------- */

/* f16 field at byte offset `off` of 8 consecutive blocks of `bs` bytes -> 8 floats */
AI __m256 f16x8(const uint8_t *blk, size_t bs, size_t off)
{
    uint16_t h[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        memcpy(&h[j], blk + j * bs + off, 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

/* RR (1, 2) Q8_0 rows (straight from the weights) x one q8b activation row:
 * the rows left over after dec4_q8_0's groups of 4. Scales are converted 8
 * blocks at a time. */
AI void dec_q8_0(const uint8_t *w, size_t w_stride, const uint8_t *xq, int64_t n, float *y,
                 const int RR)
{
    const size_t bs = sizeof(dt_block_q8_0);
    int64_t nb = n / 32, nb8 = nb & ~(int64_t)7;
    const float *dx = (const float *)(xq + n);
    __m256 acc[2];
    float ds[2][8] __attribute__((aligned(32)));
#pragma GCC unroll 2
    for (int r = 0; r < RR; r++)
        acc[r] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        int m = b0 < nb8 ? 8 : (int)(nb - b0);
        if (m == 8) {
            __m256 dx8 = _mm256_loadu_ps(dx + b0);
#pragma GCC unroll 2
            for (int r = 0; r < RR; r++)
                _mm256_store_ps(ds[r], _mm256_mul_ps(f16x8(w + r * w_stride + b0 * bs, bs, 0), dx8));
        } else {
            for (int r = 0; r < RR; r++)
                for (int j = 0; j < m; j++)
                    ds[r][j] = h2f((uint16_t)ld_u16(w + r * w_stride + (b0 + j) * bs)) * dx[b0 + j];
        }
        for (int j = 0; j < m; j++) {
            int64_t b = b0 + j;
            __m256i x = _mm256_load_si256((const __m256i *)(xq + 32 * b));
#pragma GCC unroll 2
            for (int r = 0; r < RR; r++) {
                const dt_block_q8_0 *blk = (const dt_block_q8_0 *)(w + r * w_stride) + b;
                _mm_prefetch((const char *)blk + 1024, _MM_HINT_T0);
                __m256i q = _mm256_loadu_si256((const __m256i *)blk->qs);
                __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(x, q));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)),
                                         _mm256_broadcast_ss(&ds[r][j]), acc[r]);
            }
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < RR; r++)
        y[r] = hsum256(acc[r]);
}

/* ---- decode: four rows at a time (Q8_0; Q4_0/Q4_1/Q5_0/Q5_1: gemv_a45_avx2.c) */

/* 4 Q8_0 rows (ws bytes apart; row r's result to y[r * ys]) x one q8b
 * activation row (tdx: pair table of dx). The 16-bit
 * products of two s8 reach 2 * 127 * 128, so rows are widened first and
 * reduced in 32-bit lanes. */
AI void dec4_q8_0(const uint8_t *w, size_t ws, const uint8_t *xq, int64_t n, const float *tdx,
                  float *y, size_t ys)
{
    const size_t bs = 34;
    const int64_t nb = n / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        const uint8_t *blk = w + b * bs;
        __m256i x0 = _mm256_load_si256((const __m256i *)(xq + 32 * b));
        __m256i x1 = _mm256_load_si256((const __m256i *)(xq + 32 * b + 32));
        __m256i c[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const uint8_t *q = blk + r * ws + 2;
            __m256i q0 = _mm256_loadu_si256((const __m256i *)q);
            __m256i q1 = _mm256_loadu_si256((const __m256i *)(q + bs));
            __m256i m0 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(q0), _mm256_sign_epi8(x0, q0)), ones);
            __m256i m1 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(q1), _mm256_sign_epi8(x1, q1)), ones);
            c[r] = _mm256_add_epi32(_mm256_permute2x128_si256(m0, m1, 0x20),
                                    _mm256_permute2x128_si256(m0, m1, 0x31));
        }
        __m256i s = reduce4_i32(c[0], c[1], c[2], c[3]);
        __m256 d = f16_rows4_blk2(blk, ws, bs);
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_load_ps(tdx + 4 * b)), _mm256_cvtepi32_ps(s), acc);
    }
    float tail[4] = {0, 0, 0, 0};
    if (b < nb) {
        const int8_t *x = (const int8_t *)xq + 32 * b;
        const float *dx = (const float *)(xq + n);
        for (int r = 0; r < 4; r++) {
            const dt_block_q8_0 *q = (const dt_block_q8_0 *)(w + r * ws) + b;
            int32_t si = 0;
            for (int i = 0; i < 32; i++)
                si += q->qs[i] * x[i];
            tail[r] = h2f(q->d) * dx[b] * (float)si;
        }
    }
    store_rows4s(acc, tail, y, ys);
}

static void gemv_q8_0(const cpu_gemm_args *a)
{
    int64_t nb = a->n / 32;
    int four = a->scratch && nb >= 2;
    float *tdx = (float *)a->scratch;
    for (int64_t t = 0; t < a->n_tok; t++) {
        const uint8_t *xq = a->x + t * a->x_stride;
        float *y = a->y + t * a->ldy;
        int64_t r = 0;
        if (four) {
            pair_table((const float *)(xq + a->n), nb / 2, 1.0f, tdx);
            const int64_t q = a->n_rows / 4; /* group i: row i of each quarter */
            for (int64_t i = 0; i < q; i++)
                dec4_q8_0(a->w + i * a->w_stride, (size_t)q * a->w_stride, xq, a->n, tdx, y + i,
                          (size_t)q);
            r = 4 * q;
        }
        for (; r + 2 <= a->n_rows; r += 2)
            dec_q8_0(a->w + r * a->w_stride, a->w_stride, xq, a->n, y + r, 2);
        for (; r < a->n_rows; r++)
            dec_q8_0(a->w + r * a->w_stride, a->w_stride, xq, a->n, y + r, 1);
    }
}

/* ---- decode (one token): Q4_K without the unpack pass ---------------------- */

/* 12 scale bytes -> 8 six-bit scales (bytes 0..7) and 8 mins (bytes 8..15) */
AI void q4k_scales(const uint8_t *s, uint32_t u[4])
{
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    uint32_t a, b, c;
    memcpy(&a, s, 4), memcpy(&b, s + 4, 4), memcpy(&c, s + 8, 4);
    __asm__("" : "+r"(a), "+r"(b), "+r"(c)); /* integer pipes: no SLP vectorization */
    u[0] = a & m6;                                     /* sc 0..3 */
    u[1] = (c & m4) | (((a >> 6) & m2) << 4);          /* sc 4..7 */
    u[2] = b & m6;                                     /* mn 0..3 */
    u[3] = ((c >> 4) & m4) | (((b >> 6) & m2) << 4);   /* mn 4..7 */
}

/* RR (1..4) Q4_K rows x one q8kb activation row; one integer accumulator per
 * row and super-block (the 6-bit group scales applied by vpmaddwd), one
 * convert + FMA per row and super-block. Rows are w_stride bytes apart, row
 * r's result goes to y[r * ys]. */
AI void dec_k4(const uint8_t *w, size_t w_stride, const uint8_t *xq, int64_t n, float *y,
              size_t ys, const int RR)
{
    int64_t ns = n / 256;
    const float *dx = (const float *)(xq + n);
    const int16_t *bsums = (const int16_t *)(dx + ns);
    __m256 acc[4];
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++)
        acc[r] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t *xs = xq + 256 * s;
        /* pair sums of the 16 bsums: 8 int16, one per group of 32 */
        __m256i bs = _mm256_loadu_si256((const __m256i *)(bsums + 16 * s));
        __m128i bp = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        __m128 dxs = _mm_set1_ps(dx[s]);
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++) {
            const dt_block_q4_k *b = (const dt_block_q4_k *)(w + r * w_stride) + s;
            /* scales and mins unpacked in general registers, moved over in one
             * 128-bit value (GPR -> vector transfers are the scarce resource here) */
            uint32_t u[4];
            q4k_scales(b->scales, u);
            __m128i scmn = _mm_set_epi64x((long long)((uint64_t)u[3] << 32 | u[2]),
                                          (long long)((uint64_t)u[1] << 32 | u[0]));
            __m128i sc8 = _mm_cvtepu8_epi16(scmn), mn8 = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(scmn, scmn));
            /* [d, dmin] * dx, loaded straight into a vector register */
            __m128 dd = _mm_mul_ps(_mm_cvtph_ps(_mm_castps_si128(_mm_load_ss((const float *)b))), dxs);
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
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_broadcastss_ps(dd), acc[r]);
            /* the mins in lanes 0..3 (upper lanes zero) */
            __m256 mv = _mm256_zextps128_ps256(_mm_cvtepi32_ps(_mm_madd_epi16(mn8, bp)));
            acc[r] = _mm256_fnmadd_ps(mv, _mm256_broadcastss_ps(_mm_movehdup_ps(dd)), acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++)
        y[r * ys] = hsum256(acc[r]);
}

/* The 12 scale bytes of the Q4_K blocks at p and p + ws (bytes 4..15 of each
 * block) decoded in vector registers, one block per 128-bit lane, as bytes
 * [sc 0..3 | mn 0..3 | sc 4..7 | mn 4..7] (6-bit values). With a, b, c the
 * scale bytes 0..3, 4..7, 8..11: sc 0..3 = a & 63, mn 0..3 = b & 63,
 * sc 4..7 = (c & 15) | (a >> 6) << 4, mn 4..7 = (c >> 4) | (b >> 6) << 4. */
AI __m256i q4k_scales2(const uint8_t *p, size_t ws)
{
    __m256i t = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(p + 4))),
        _mm_loadu_si128((const __m128i *)(p + ws + 4)), 1);
    /* bytes 0..7: the top 2 bits of a, b at bits 4..5 */
    __m256i top = _mm256_and_si256(_mm256_srli_epi16(t, 2), _mm256_set1_epi8(0x30));
    /* bytes 12..15 (the 4th dword of a lane): c >> 4 per byte, low nibbles */
    __m256i u = _mm256_blend_epi32(t, _mm256_slli_epi64(t, 28), 0x88);
    const __m256i keep = _mm256_setr_epi8(63, 63, 63, 63, 63, 63, 63, 63, 15, 15, 15, 15, 15, 15, 15, 15,
                                          63, 63, 63, 63, 63, 63, 63, 63, 15, 15, 15, 15, 15, 15, 15, 15);
    return _mm256_or_si256(_mm256_and_si256(u, keep), _mm256_bslli_epi128(top, 8));
}

AI int ld_i32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Per-call table of the q8kb activation row for dec4_k4, one K4_TAB-byte
 * record per super-block: [B_0..B_7 | B_0..B_7] int16 (B_g: sum of group
 * g's 32 levels, for the mins), [dx, -dx] x 4 floats (the lanes [T, M] of
 * dec4_k4's super-block totals), then the 256 levels as 16
 * vectors xd[j][h][l] = the 16 levels 64j + 32l + 16h.. in both 128-bit
 * lanes (lane = row of a pair; j: 32 bytes of qs, l: low/high nibbles,
 * h: which half of the 32). Built per token in the thread's scratch:
 * 2.25 bytes per element, a few microseconds. */
#define K4_TAB 576
static void k4_table(const uint8_t *xq, int64_t n, uint8_t *tab)
{
    const int64_t ns = n / 256;
    const float *dx = (const float *)(xq + n);
    const int16_t *bsums = (const int16_t *)(dx + ns);
    for (int64_t s = 0; s < ns; s++, tab += K4_TAB) {
        __m256i b = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(bsums + 16 * s)),
                                      _mm256_set1_epi16(1)); /* [B0..3 | B4..7] int32, |.| <= 4096 */
        _mm256_store_si256((__m256i *)tab, _mm256_permute4x64_epi64(_mm256_packs_epi32(b, b), 0x88));
        _mm256_store_ps((float *)(tab + 32), _mm256_setr_ps(dx[s], -dx[s], dx[s], -dx[s], dx[s], -dx[s], dx[s], -dx[s]));
        for (int k = 0; k < 16; k++) { /* k = 4j + 2h + l */
            const uint8_t *x = xq + 256 * s + 64 * (k >> 2) + 32 * (k & 1) + 16 * ((k >> 1) & 1);
            _mm256_store_si256((__m256i *)(tab + 64 + 32 * k),
                               _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x)));
        }
    }
}

/* [d, dmin] of the 4 rows' super-blocks at b0 (rows ws apart) times [dx,
 * -dx], as [d0 -m0 d2 -m2 | d1 -m1 d3 -m3] (the lanes of dec4_k4's
 * super-block totals [T0 M0 T2 M2 | T1 M1 T3 M3]). */
AI __m256 k4_dd(const uint8_t *b0, size_t ws, const uint8_t *tab)
{
    __m128i h = _mm_cvtsi32_si128(ld_i32(b0));
    h = _mm_insert_epi32(h, ld_i32(b0 + 2 * ws), 1);
    h = _mm_insert_epi32(h, ld_i32(b0 + ws), 2);
    h = _mm_insert_epi32(h, ld_i32(b0 + 3 * ws), 3);
    return _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_load_ps((const float *)(tab + 32)));
}

/* One step of dec4_k4: 32 bytes of qs (j) of the pair of rows at ra, rb as
 * two vectors [row a 16 bytes | row b 16 bytes] (halves h = 0, 1), their
 * low and high nibbles times the activations; the two halves of a group are
 * added in 16 bits (|.| <= 2 * 2 * 15 * 127 = 7620). pl: group 2j, ph:
 * group 2j + 1, 8 partial sums per row. */
AI void k4_prod(const uint8_t *ra, const uint8_t *rb, const __m256i *xd, __m256i *pl, __m256i *ph)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i v0 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)ra)),
                                         _mm_loadu_si128((const __m128i *)rb), 1);
    __m256i v1 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(ra + 16))),
                                         _mm_loadu_si128((const __m128i *)(rb + 16)), 1);
    *pl = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v0, m4), _mm256_load_si256(xd)),
                           _mm256_maddubs_epi16(_mm256_and_si256(v1, m4), _mm256_load_si256(xd + 2)));
    *ph = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v0, 4), m4), _mm256_load_si256(xd + 1)),
                           _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v1, 4), m4), _mm256_load_si256(xd + 3)));
}

/* 4 Q4_K rows (ws bytes apart; row r's result to y[r * ys]) x one q8kb
 * activation row through its k4_table (tab). The rows are taken as 2 pairs
 * (0, 1), (2, 3), one row per 128-bit lane: a pair's 16-bit products of a
 * group are summed across the two halves of the group, then one vpshufb of
 * the pair's decoded scales (q4k_scales2, rows in lanes as well) gives the
 * group's scale for both rows and one vpmaddwd applies it (int32, |.| <=
 * 8 * 2 * 7620 * 63 per lane), so a pair shares the scale vectors and the
 * vpmaddwd. The mins term is one vpmaddwd of the pair's mins by the
 * table's group sums.
 * Per super-block and row the integer sums are reduced to two exact int32
 * totals, T = sum_g sc_g * (group g's level products) and M = sum_g mn_g *
 * B_g (|T| <= 256 * 63 * 15 * 127), by 3 vphaddd into [T0 M0 T2 M2 | T1 M1
 * T3 M3], and then added in float by one convert and one FMA by [d dx,
 * -dmin dx] (k4_dd); y = (sum of the T lane) + (sum of the M lane). So the
 * result does not depend on how the integer work is partitioned into
 * lanes: the R4 kernel (gemv_r4k_avx2.c) does the same float operations on
 * the same totals and is bit-identical to this one with another partition.
 * (The vphaddd tree costs about what it replaced, a convert, a vpermilps
 * and an FMA per pair for each of T and M: same speed within ~1%.)
 * Zen 3 (one thread, L2-resident rows) ran the earlier kernel (8 group sums
 * of a row folded transposed in 16 bits, 4 rows separately) at ~20.6
 * cycles per row and super-block, this one at ~16.5: the vector pipes are
 * the limit, so what counts is vector operations per super-block (~196
 * here) and not leaving them waiting in the scheduler: the scales of the
 * next super-block are decoded at the end of this one (their load + decode
 * chain would hold up every vpmaddwd), and the scaling of step u sits after
 * the products of step u + 1. Measured and dropped: the 4 rows separately
 * with broadcast scale bytes (~17.7), scales and [d, dmin] decoded in
 * general registers and stored (~21), 2 super-blocks per iteration,
 * 32-byte loads + vperm2i128 or blends instead of vinserti128. */
AI void dec4_k4(const uint8_t *w, size_t ws, const uint8_t *tab, int64_t n, float *y, size_t ys)
{
    const int64_t ns = n / 256;
    const size_t bsz = sizeof(dt_block_q4_k);
    const __m256i pmn = _mm256_setr_epi8(4, -1, 5, -1, 6, -1, 7, -1, 12, -1, 13, -1, 14, -1, 15, -1,
                                         4, -1, 5, -1, 6, -1, 7, -1, 12, -1, 13, -1, 14, -1, 15, -1);
    __m256 acc = _mm256_setzero_ps();
    __m256i tn[2] = {q4k_scales2(w, ws), q4k_scales2(w + 2 * ws, ws)};
    __m256 ddn = k4_dd(w, ws, tab);
    for (int64_t s = 0; s < ns; s++, tab += K4_TAB) {
        const uint8_t *b0 = w + s * bsz;
        const __m256i t[2] = {tn[0], tn[1]};
        const __m256 dd = ddn;
        __m256i mi[2];
#pragma GCC unroll 2
        for (int k = 0; k < 2; k++) /* mins: sum of mn_g * B_g in 4 lanes per row */
            mi[k] = _mm256_madd_epi16(_mm256_shuffle_epi8(t[k], pmn), _mm256_load_si256((const __m256i *)tab));
        /* steps u = (j, pair k): products of step u, then the scaling of step u - 1 */
        __m256i ia[2], pl = _mm256_setzero_si256(), ph = pl;
#pragma GCC unroll 9
        for (int u = 0; u <= 8; u++) {
            __m256i nl = pl, nh = ph;
            if (u < 8) {
                const uint8_t *ra = b0 + 2 * (u & 1) * ws + 16 + 32 * (u >> 1);
                k4_prod(ra, ra + ws, (const __m256i *)(tab + 64 + 128 * (u >> 1)), &nl, &nh);
            }
            if (u > 0) {
                const int j = (u - 1) >> 1, k = (u - 1) & 1;
                const int g = j < 2 ? 2 * j : 4 + 2 * j; /* byte of sc 2j in q4k_scales2's lane */
                __m256i sa = _mm256_shuffle_epi8(t[k], _mm256_set1_epi16((short)(0xff00 | g)));
                __m256i sb = _mm256_shuffle_epi8(t[k], _mm256_set1_epi16((short)(0xff00 | (g + 1))));
                __m256i m = _mm256_add_epi32(_mm256_madd_epi16(pl, sa), _mm256_madd_epi16(ph, sb));
                ia[k] = j ? _mm256_add_epi32(ia[k], m) : m;
                __asm__("" : "+x"(ia[k])); /* keep the sum in step order (else gcc spills the terms) */
            }
            pl = nl, ph = nh;
        }
        if (s + 1 < ns) { /* next super-block's scales and [d, dmin] */
            tn[0] = q4k_scales2(b0 + bsz, ws);
            tn[1] = q4k_scales2(b0 + bsz + 2 * ws, ws);
            ddn = k4_dd(b0 + bsz, ws, tab + K4_TAB);
        }
        /* [Ta Ta Ma Ma | Tb ..] per pair, then [T0 M0 T2 M2 | T1 M1 T3 M3] */
        const __m256i v = _mm256_hadd_epi32(_mm256_hadd_epi32(ia[0], mi[0]), _mm256_hadd_epi32(ia[1], mi[1]));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), dd, acc);
    }
    /* row r: T + M, the operation of r4k_groups */
    const __m256 t = _mm256_hadd_ps(acc, acc); /* [r0, r2, r0, r2 | r1, r3, r1, r3] */
    float v[8];
    _mm256_storeu_ps(v, t);
    y[0] = v[0], y[ys] = v[4], y[2 * ys] = v[1], y[3 * ys] = v[5];
}

static void gemv_k4(const cpu_gemm_args *a)
{
    /* dec4_k4 needs the scratch for its table (always given by matmul.c) */
    const int64_t q = a->scratch ? a->n_rows / 4 : 0; /* group i: row i of each quarter */
    for (int64_t t = 0; t < a->n_tok; t++) {
        const uint8_t *xq = a->x + t * a->x_stride;
        float *y = a->y + t * a->ldy;
        if (q)
            k4_table(xq, a->n, a->scratch);
        for (int64_t i = 0; i < q; i++)
            dec4_k4(a->w + i * a->w_stride, (size_t)q * a->w_stride, a->scratch, a->n, y + i, (size_t)q);
        for (int64_t r = 4 * q; r < a->n_rows; r++)
            dec_k4(a->w + r * a->w_stride, a->w_stride, xq, a->n, y + r, 1, 1);
    }
}
/* Decode path for a->n_tok < 2: returns 1 when this file has a kernel for
 * the type (the result is then in a->y), 0 to fall back to unpack + tiles. */
int cpu_avx2_gemv(const cpu_gemm_args *a)
{
    switch (a->type) { /* the other K types, 1..k*_max tokens: files of their own */
    case DT_Q5_K:
    case DT_Q6_K:
        return cpu_avx2_gemv_k56(a);
    case DT_Q2_K:
    case DT_Q3_K:
        return cpu_avx2_gemv_k23(a);
    }
    if (a->n_tok >= 2) /* a few tokens: fused multi-token decode (gemv_multi_avx2.c) */
        return cpu_avx2_gemv_multi(a);
    switch (a->type) {
    case DT_Q4_0:
    case DT_Q4_1:
    case DT_Q5_0:
    case DT_Q5_1:
        return cpu_avx2_gemv_a45(a); /* gemv_a45_avx2.c */
    case DT_Q8_0:
        gemv_q8_0(a);
        return 1;
    case DT_Q4_K:
        gemv_k4(a);
        return 1;
    }
    return 0;
}
