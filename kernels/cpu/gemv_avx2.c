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
 * idle) and converted 8 at a time. Q4_K keeps one accumulator per row (its
 * float work is per 256-element super-block) but also takes 4 rows; within
 * a row its 8 group sums are folded transposed in 16-bit lanes so one
 * vpmaddwd applies the 8 group scales, which are decoded for 2 rows per
 * vector (dec4_k4).
 *
 * Memory: the 4 rows of a group are row i of each quarter of the call's
 * rows (rows i, i + q, i + 2q, i + 3q), so the kernel reads 4 long
 * sequential streams that the hardware prefetchers follow, without
 * software prefetch. On this Zen 3 VM 4 concurrent streams read 1.3-1.5x
 * faster than one stream (and than 4 consecutive rows walked side by side
 * with a software prefetch of the next group, the layout before): the
 * Llama-1B-shaped Q4_0 chain went from ~82% to ~105% of a one-stream read
 * and reaches ~75-83% of a 4-stream read (tests/bench/bench_decode_shapes).
 * What is left is compute: one thread runs the Q4_0 and Q4_K kernels at
 * ~20-22 GB/s from L2 (llvm-mca znver3: dispatch-bound at ~76 instructions
 * per 144 bytes for Q4_0, ~68 for Q4_K), about what 4 streams deliver from
 * DRAM, so memory and arithmetic do not fully overlap; Q8_0 (~30 GB/s
 * from L2) reaches ~90% of the 4-stream read. */
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

/* The same in 32-bit lanes: c_r = [b: 4 partial sums | b+1: 4] of row r. */
AI __m256i reduce4_i32(__m256i c0, __m256i c1, __m256i c2, __m256i c3)
{
    __m256i t01 = _mm256_add_epi32(_mm256_unpacklo_epi32(c0, c1), _mm256_unpackhi_epi32(c0, c1));
    __m256i t23 = _mm256_add_epi32(_mm256_unpacklo_epi32(c2, c3), _mm256_unpackhi_epi32(c2, c3));
    return _mm256_add_epi32(_mm256_unpacklo_epi64(t01, t23), _mm256_unpackhi_epi64(t01, t23));
}

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

/* One level of the transposed group reduction: the W-bit units (16, 32, 64)
 * of a and b interleaved by unpacklo and unpackhi, the two added in 16-bit
 * lanes, so unit k of each half-lane of a is added to unit k + half of it
 * (the same group) and a's and b's groups alternate in the result. */
#define Q4K_FOLD16(a, b) _mm256_add_epi16(_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b))
#define Q4K_FOLD32(a, b) _mm256_add_epi16(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
#define Q4K_FOLD64(a, b) _mm256_add_epi16(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b))

/* 4 Q4_K rows (ws bytes apart; row r's result to y[r * ys]) x one q8kb
 * activation row. Per row and super-block the 8 vpmaddubsw results (16
 * int16 pair sums of one group of 32 each, |.| <= 2 * 15 * 127 = 3810) are
 * folded "transposed" in 16-bit lanes into one vector holding every group's
 * sum (8 lanes summed: |.| <= 30480), so one vpmaddwd applies the 8 group
 * scales (instead of a scale broadcast + vpmaddwd per vector). Scales and
 * mins of 2 rows are decoded per vector (q4k_scales2); [d, dmin] * dx of the
 * 4 rows converted in one go. */
AI void dec4_k4(const uint8_t *w, size_t ws, const uint8_t *xq, int64_t n, float *y, size_t ys)
{
    const int64_t ns = n / 256;
    const float *dx = (const float *)(xq + n);
    const int16_t *bsums = (const int16_t *)(dx + ns);
    __m256 acc[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
        acc[r] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15);
    /* q4k_scales2's bytes as int16 [sc 0..7], [mn 0..7] */
    const __m256i isc = _mm256_setr_epi8(0, -128, 1, -128, 2, -128, 3, -128, 8, -128, 9, -128, 10, -128, 11, -128,
                                         0, -128, 1, -128, 2, -128, 3, -128, 8, -128, 9, -128, 10, -128, 11, -128);
    const __m128i imn = _mm_setr_epi8(4, -128, 5, -128, 6, -128, 7, -128, 12, -128, 13, -128, 14, -128, 15, -128);
    float dd[8] __attribute__((aligned(32)));
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t *xs = xq + 256 * s, *b0 = w + s * sizeof(dt_block_q4_k);
        /* pair sums of the 16 bsums: 8 int16, one per group of 32 */
        __m256i bs = _mm256_loadu_si256((const __m256i *)(bsums + 16 * s));
        __m128i bp = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        /* [d, dmin] of rows 0..3 (the first 4 bytes of each block) times dx */
        __m128i h = _mm_cvtsi32_si128(ld_i32(b0));
        h = _mm_insert_epi32(h, ld_i32(b0 + ws), 1);
        h = _mm_insert_epi32(h, ld_i32(b0 + 2 * ws), 2);
        h = _mm_insert_epi32(h, ld_i32(b0 + 3 * ws), 3);
        _mm256_store_ps(dd, _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(dx[s])));
        __m256i sm[2] = {q4k_scales2(b0, ws), q4k_scales2(b0 + 2 * ws, ws)};
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const uint8_t *qs = b0 + r * ws + 16;
            /* this row's scale bytes in both lanes */
            __m256i sv = r & 1 ? _mm256_permute4x64_epi64(sm[r / 2], 0xee)
                               : _mm256_permute4x64_epi64(sm[r / 2], 0x44);
            __m256i p[8];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
                __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                p[2 * j] = _mm256_maddubs_epi16(lo, _mm256_load_si256((const __m256i *)(xs + 64 * j)));
                p[2 * j + 1] = _mm256_maddubs_epi16(hi, _mm256_load_si256((const __m256i *)(xs + 64 * j + 32)));
            }
            /* groups (0,1) (2,3) (4,5) (6,7) -> (0..3) (4..7) -> [g0..g7] per lane */
            __m256i f0 = Q4K_FOLD16(p[0], p[1]), f1 = Q4K_FOLD16(p[2], p[3]);
            __m256i f2 = Q4K_FOLD16(p[4], p[5]), f3 = Q4K_FOLD16(p[6], p[7]);
            __m256i g = Q4K_FOLD64(Q4K_FOLD32(f0, f1), Q4K_FOLD32(f2, f3));
            __m256i ia = _mm256_madd_epi16(g, _mm256_shuffle_epi8(sv, isc));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_broadcast_ss(&dd[2 * r]), acc[r]);
            /* the mins in lanes 0..3 (upper lanes zero) */
            __m128i mn = _mm_shuffle_epi8(_mm256_castsi256_si128(sv), imn);
            __m256 mv = _mm256_zextps128_ps256(_mm_cvtepi32_ps(_mm_madd_epi16(mn, bp)));
            acc[r] = _mm256_fnmadd_ps(mv, _mm256_broadcast_ss(&dd[2 * r + 1]), acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
        y[r * ys] = hsum256(acc[r]);
}

static void gemv_k4(const cpu_gemm_args *a)
{
    for (int64_t t = 0; t < a->n_tok; t++) {
        const uint8_t *xq = a->x + t * a->x_stride;
        float *y = a->y + t * a->ldy;
        const int64_t q = a->n_rows / 4; /* group i: row i of each quarter */
        for (int64_t i = 0; i < q; i++)
            dec4_k4(a->w + i * a->w_stride, (size_t)q * a->w_stride, xq, a->n, y + i, (size_t)q);
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
