/* gemv_a45_avx2.c - AVX2 one-token decode of Q4_0, Q4_1, Q5_0 and Q5_1 weights,
 * four rows at a time, read straight from the weights (no unpack pass).
 * Called by gemv_avx2.c's cpu_avx2_gemv for n_tok < 2 (these types' only
 * one-token kernel; without scratch for the pair tables every row goes
 * through the one-row kernel).
 *
 * Per step 4 rows x 2 blocks, the 32 nibble bytes of both blocks of a row
 * in one register (low nibbles against the first activation halves, high
 * nibbles against the second),
 * the integer sums of the 4 rows folded "transposed" into one vector
 * [block b: rows 0..3 | block b+1: rows 0..3], so the float work (scales
 * gathered in general registers, converted 8 at a time) is per 8
 * block-rows. The 4 rows of a group are row i of each quarter of the
 * call's rows: 4 long sequential streams that the hardware prefetchers
 * follow (no software prefetch; see gemv_avx2.c's head comment).
 * The loop is software-pipelined by one step (a45_dec4): the products of
 * a pair of blocks are reduced and scaled in the next iteration.
 *
 * Per type: Q4_0's -8 offset is the per-block term -8 d sx, folded into the
 * scale FMA through a pair table of -8 sx. Q4_1 adds the offset term m * sx (sx = dx * sum of the block's
 * activation levels, from the q8b row) with one more 8-wide FMA per step.
 * Q5_0/Q5_1 expand the 5th bits of both blocks from one 32-byte load that
 * starts at qh of block b (qh of block b+1 sits in its upper 128-bit lane,
 * bs - 16 bytes further): a per-lane byte shuffle spreads byte j/8 of qh to
 * byte j, and+cmpeq against the bit of each byte gives the mask, 0x10 where
 * set, or'ed into the nibbles. 5-bit levels overflow the 16-bit 4-row fold
 * of Q4_0, so their sums are widened to 32 bits after folding pairs of
 * rows. Q5_0's -16 offset is the per-block term -16 d sx, as Q4_0's -8.
 * An odd last block is done in scalar code; rows beyond the last multiple of
 * 4 by a one-row kernel.
 *
 * Also here: the one-token kernels of the Q4_0 and Q8_0 weights re-laid at
 * load as row-interleaved groups (R4, at the end of the file). */
#include <immintrin.h>
#include <string.h>

#include "../../core/dtype.h"
#include "../../core/dtype_blocks.h"
#include "avx2_common.h"
#include "cpu_kernels.h"

#define A45_TAB 128 /* bytes of a45_table per pair of blocks */

/* Block layout per type (bytes): size, offset of m (0: none), qh (0: none), qs. */
AI size_t a45_bs(int type)
{
    return type == DT_Q4_0 ? 18 : type == DT_Q4_1 ? 20 : type == DT_Q5_0 ? 22 : 24;
}
AI size_t a45_om(int type) { return type == DT_Q4_0 || type == DT_Q5_0 ? 0 : 2; }
AI size_t a45_oqh(int type) { return type == DT_Q5_0 ? 2 : type == DT_Q5_1 ? 4 : 0; }
AI size_t a45_oqs(int type)
{
    return type == DT_Q4_0 ? 2 : type == DT_Q4_1 ? 4 : type == DT_Q5_0 ? 6 : 8;
}
/* Types without m: the level offset, applied per block as k * d * sx. */
AI float a45_k(int type) { return type == DT_Q4_0 ? -8.0f : -16.0f; }

/* As reduce4_i16 (avx2_common.h), for |each| <= 16383 (5-bit levels): one
 * 16-bit add of two lanes of the same row, then widened to 32 bits. */
AI __m256i a45_reduce4_i16w(__m256i p0, __m256i p1, __m256i p2, __m256i p3)
{
    const __m256i ones = _mm256_set1_epi16(1);
    /* [r0 c, r0 c', r1 c, r1 c'] x2 per 128-bit lane, c + c+4 folded */
    __m256i t01 = _mm256_add_epi16(_mm256_unpacklo_epi32(p0, p1), _mm256_unpackhi_epi32(p0, p1));
    __m256i t23 = _mm256_add_epi16(_mm256_unpacklo_epi32(p2, p3), _mm256_unpackhi_epi32(p2, p3));
    __m256i m01 = _mm256_madd_epi16(t01, ones), m23 = _mm256_madd_epi16(t23, ones); /* [r0 r1 r0 r1] */
    return _mm256_add_epi32(_mm256_unpacklo_epi64(m01, m23), _mm256_unpackhi_epi64(m01, m23));
}

/* 5th-bit masks (0x10 where set) of the low (el 0..15) and high (el 16..31)
 * halves of blocks b and b+1, from the 32 bytes at qh of block b. */
AI void a45_qh_masks(const uint8_t *qh, size_t bs, __m256i *hl, __m256i *hh)
{
    const char o = (char)(bs - 16); /* qh of block b+1, in the upper lane */
    const __m256i ilo = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                         o, o, o, o, o, o, o, o, o + 1, o + 1, o + 1, o + 1,
                                         o + 1, o + 1, o + 1, o + 1);
    const __m256i ihi = _mm256_add_epi8(ilo, _mm256_set1_epi8(2));
    const __m256i sel = _mm256_set1_epi64x(0x8040201008040201LL), b4 = _mm256_set1_epi8(0x10);
    __m256i v = _mm256_loadu_si256((const __m256i *)qh);
    __m256i l = _mm256_shuffle_epi8(v, ilo), h = _mm256_shuffle_epi8(v, ihi);
    *hl = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(l, sel), sel), b4);
    *hh = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, sel), sel), b4);
}

/* Integer dot of one block's levels (4 or 5 bits, unsigned) with 32 s8 activations. */
AI int32_t a45_blk_dot_scalar(int type, const uint8_t *blk, const int8_t *x)
{
    const uint8_t *qs = blk + a45_oqs(type);
    uint32_t qh = 0;
    if (a45_oqh(type))
        memcpy(&qh, blk + a45_oqh(type), 4);
    int32_t s = 0;
    for (int i = 0; i < 16; i++) {
        int lo = (qs[i] & 15) | ((qh >> i) & 1) << 4, hi = (qs[i] >> 4) | ((qh >> (i + 16)) & 1) << 4;
        s += lo * x[i] + hi * x[i + 16];
    }
    return s;
}

/* Float value of one block-row: d dx si + offset (m sx, or k d sx for Q4_0/Q5_0). */
AI float a45_blk_value(int type, const uint8_t *blk, int32_t si, float dx, float sx)
{
    float d = h2f((uint16_t)ld_u16(blk));
    float off =
        a45_om(type) ? h2f((uint16_t)ld_u16(blk + a45_om(type))) * sx : a45_k(type) * d * sx;
    return d * dx * (float)si + off;
}

/* Step part 1 of a45_dec4: the 16-bit products of 4 rows x blocks b, b+1
 * (at blk) with the activation levels xl, xh. */
AI void a45_prod4(const int type, const uint8_t *blk, size_t ws, __m256i xl, __m256i xh,
                  __m256i p[4])
{
    const size_t bs = a45_bs(type), oqh = a45_oqh(type), oqs = a45_oqs(type);
    const __m256i m4 = _mm256_set1_epi8(15);
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
        const uint8_t *q = blk + r * ws + oqs;
        __m256i v = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)q)),
            _mm_loadu_si128((const __m128i *)(q + bs)), 1);
        __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        if (oqh) {
            __m256i hl, hh;
            a45_qh_masks(blk + r * ws + oqh, bs, &hl, &hh);
            lo = _mm256_or_si256(lo, hl), hi = _mm256_or_si256(hi, hh);
        }
        /* |each| <= 2 * (15 * 127) * 2 = 7620 (4 bits), 2 * (31 * 127) * 2 = 15748 (5 bits) */
        p[r] = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh));
    }
}

/* Step part 2: the products of a45_prod4 reduced transposed, scaled and
 * accumulated (tab: the step's table record). */
AI void a45_fold4(const int type, const __m256i p[4], const uint8_t *blk, size_t ws,
                  const uint8_t *tab, __m256 *acc, __m256 *macc)
{
    const size_t bs = a45_bs(type), om = a45_om(type);
    const float *tdx = (const float *)(tab + 64), *tsx = (const float *)(tab + 96);
    __m256i s = a45_oqh(type) ? a45_reduce4_i16w(p[0], p[1], p[2], p[3])
                              : reduce4_i16(p[0], p[1], p[2], p[3]);
    __m256 d = f16_rows4_blk2(blk, ws, bs);
    if (om) {
        *acc = _mm256_fmadd_ps(d, _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_load_ps(tdx)), *acc);
        *macc = _mm256_fmadd_ps(f16_rows4_blk2(blk + om, ws, bs), _mm256_load_ps(tsx), *macc);
    } else {
        __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_load_ps(tdx), _mm256_load_ps(tsx));
        *acc = _mm256_fmadd_ps(d, t, *acc);
    }
}

/* 4 rows of `type` (ws bytes apart; row r's result to y[r * ys]) x one q8b
 * activation row. tdx: pair table of dx; tsx: of sx (Q4_1, Q5_1), -8 sx
 * (Q4_0) or -16 sx (Q5_0).
 * Software-pipelined by one step: an iteration computes the products of
 * pair k, then folds those of pair k-1 (held in registers). In step order
 * the fold (reduce, scales, convert, 2 FMAs: ~25 cycles of latency behind
 * the loads) sat in the vector scheduler waiting on loads of the same
 * iteration, and the loop ran at ~18.5 cycles per step (Zen 3, Q4_0, data
 * in L1) for ~45 vector operations on 4 pipes; one step late the fold's
 * inputs are ready and the same operations take ~15.6 (from DRAM, 1
 * thread: +12%). Measured and dropped: the fold placed before the products
 * (loads issue later: slower), loads one more step ahead or the scales
 * gathered a step early (spills / slower), two steps per iteration (the
 * register copies go but it is slower), 8 rows per group (8 streams: slower
 * from DRAM; 4 streams x 2 adjacent rows: much slower), software prefetch
 * (slower at every distance). The float operations and their order are
 * those of the unpipelined loop: results unchanged. */
AI void a45_dec4(const int type, const uint8_t *w, size_t ws, const uint8_t *xq, int64_t n,
                 const uint8_t *tab, float *y, size_t ys)
{
    const size_t bs = a45_bs(type);
    const int64_t nb = n / 32, np = nb / 2;
    __m256 acc = _mm256_setzero_ps(), macc = _mm256_setzero_ps();
    if (np > 0) {
        const uint8_t *blk = w;
        __m256i p[4];
        a45_prod4(type, blk, ws, _mm256_load_si256((const __m256i *)tab),
                  _mm256_load_si256((const __m256i *)(tab + 32)), p);
        for (int64_t i = 1; i < np; i++) {
            const uint8_t *nblk = blk + 2 * bs, *ntab = tab + A45_TAB;
            __m256i pn[4];
            a45_prod4(type, nblk, ws, _mm256_load_si256((const __m256i *)ntab),
                      _mm256_load_si256((const __m256i *)(ntab + 32)), pn);
            a45_fold4(type, p, blk, ws, tab, &acc, &macc);
            p[0] = pn[0], p[1] = pn[1], p[2] = pn[2], p[3] = pn[3];
            blk = nblk, tab = ntab;
        }
        a45_fold4(type, p, blk, ws, tab, &acc, &macc);
    }
    float tail[4] = {0, 0, 0, 0};
    const int64_t b = nb - 1;
    if (nb & 1) { /* odd block count: the last block, scalar */
        const int8_t *x = (const int8_t *)xq + 32 * b;
        const float *dx = (const float *)(xq + n), *sx = dx + cpu_pad8(nb);
        for (int r = 0; r < 4; r++) {
            const uint8_t *br = w + r * ws + b * bs;
            tail[r] = a45_blk_value(type, br, a45_blk_dot_scalar(type, br, x), dx[b], sx[b]);
        }
    }
    store_rows4s(_mm256_add_ps(acc, macc), tail, y, ys);
}

/* One row of `type` x one q8b activation row, block by block (the rows left
 * over after the groups of 4). */
AI float a45_dec1(const int type, const uint8_t *w, const uint8_t *xq, int64_t n)
{
    const size_t bs = a45_bs(type), oqh = a45_oqh(type), oqs = a45_oqs(type);
    const int64_t nb = n / 32;
    const float *dx = (const float *)(xq + n), *sx = dx + cpu_pad8(nb);
    __m256 acc = _mm256_setzero_ps();
    float off = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * bs;
        __m256i q = nibbles16(blk + oqs);
        if (oqh) {
            uint32_t qh;
            memcpy(&qh, blk + oqh, 4);
            q = _mm256_or_si256(q, bits_to_0x10(qh));
        }
        __m256i x = _mm256_load_si256((const __m256i *)(xq + 32 * b));
        __m256i si = _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1));
        off += a45_blk_value(type, blk, 0, dx[b], sx[b]);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si),
                              _mm256_set1_ps(h2f((uint16_t)ld_u16(blk)) * dx[b]), acc);
    }
    return hsum256(acc) + off;
}

/* Per-call table of the activation row, one record of A45_TAB bytes per pair
 * of blocks b, b+1: the levels as the 4-row kernel multiplies them
 * ([x_b 0..15 | x_b+1 0..15], [x_b 16..31 | x_b+1 16..31]), then
 * [dx_b x4 | dx_b+1 x4] and [k sx_b x4 | k sx_b+1 x4] (k: a45_gemv's offset factor). */
static void a45_table(const uint8_t *xq, int64_t n, float k, uint8_t *tab)
{
    const int64_t nb = n / 32;
    const float *dx = (const float *)(xq + n), *sx = dx + cpu_pad8(nb);
    for (int64_t i = 0; i < nb / 2; i++, tab += A45_TAB) {
        __m256i x0 = _mm256_load_si256((const __m256i *)(xq + 64 * i));
        __m256i x1 = _mm256_load_si256((const __m256i *)(xq + 64 * i + 32));
        _mm256_store_si256((__m256i *)tab, _mm256_permute2x128_si256(x0, x1, 0x20));
        _mm256_store_si256((__m256i *)(tab + 32), _mm256_permute2x128_si256(x0, x1, 0x31));
        _mm256_store_ps((float *)(tab + 64), _mm256_set_m128(_mm_set1_ps(dx[2 * i + 1]),
                                                             _mm_set1_ps(dx[2 * i])));
        _mm256_store_ps((float *)(tab + 96), _mm256_set_m128(_mm_set1_ps(k * sx[2 * i + 1]),
                                                             _mm_set1_ps(k * sx[2 * i])));
    }
}

AI void a45_gemv(const int type, const cpu_gemm_args *a)
{
    uint8_t *tab = a->scratch;
    for (int64_t t = 0; t < a->n_tok; t++) {
        const uint8_t *xq = a->x + t * a->x_stride;
        float *y = a->y + t * a->ldy;
        int64_t r = 0;
        if (a->n_rows >= 4 && a->scratch) { /* the activation table lives in the scratch */
            a45_table(xq, a->n, a45_om(type) ? 1.0f : a45_k(type), tab);
            /* 4 row streams: group i takes row i of each quarter of the rows */
            const int64_t q = a->n_rows / 4;
            for (int64_t i = 0; i < q; i++)
                a45_dec4(type, a->w + i * a->w_stride, (size_t)q * a->w_stride, xq, a->n, tab, y + i,
                         (size_t)q);
            r = 4 * q;
        }
        for (; r < a->n_rows; r++)
            y[r] = a45_dec1(type, a->w + r * a->w_stride, xq, a->n);
    }
}

static void a45_gemv_q4_0(const cpu_gemm_args *a) { a45_gemv(DT_Q4_0, a); }
static void a45_gemv_q4_1(const cpu_gemm_args *a) { a45_gemv(DT_Q4_1, a); }
static void a45_gemv_q5_0(const cpu_gemm_args *a) { a45_gemv(DT_Q5_0, a); }
static void a45_gemv_q5_1(const cpu_gemm_args *a) { a45_gemv(DT_Q5_1, a); }

/* ---- Q4_0 and Q8_0 rows interleaved by 4 (the R4 layout of cpu_kernels.h) --
 *
 * A group of 4 rows holds, per pair of blocks b, b+1 (8 blocks' bytes: 144
 * for Q4_0, 272 for Q8_0): the 8 scales in the order the 4-row fold makes
 * its lanes, [d(b, r0..r3) | d(b+1, r0..r3)] (16 bytes: one load and one
 * vcvtph2ps instead of 8 gathered 16-bit loads), then for each row r its
 * level bytes of both blocks in 16-byte halves [b h0 | b+1 h0 (| b h1 | b+1
 * h1)]: Q4_0's 32 nibble bytes in one 32-byte load where the standard rows
 * need a load plus a vinserti128; Q8_0's 64 level bytes as two vectors
 * whose 128-bit lanes are the two blocks, so the products land in the
 * fold's [b | b+1] lane order without dec4_q8_0's two vperm2i128 per row
 * (the a45_table activations are in that order too). An odd last block:
 * [d(b, r0..r3)], then the 4 rows' level bytes. The kernels do the float
 * operations of a45_dec4 (Q4_0) and dec4_q8_0 (Q8_0) in their order: the
 * results are bit-identical to the standard layout (test_repack). */

AI size_t r4_bs(int type) { return type == DT_Q8_0 ? 34 : 18; } /* bytes of a block */

/* 4 standard rows <-> one group (dir 1: pack, 0: unpack) */
static void r4_copy(int type, uint8_t *rows, size_t row_bytes, uint8_t *grp, int64_t n, int pack)
{
    const size_t bs = r4_bs(type), nh = (bs - 2) / 16; /* 16-byte halves of a block's levels */
    const int64_t nb = n / 32;
    for (int64_t b = 0; b < nb; b += 2, grp += 4 * bs * 2) {
        const int nbk = b + 1 < nb ? 2 : 1; /* blocks in this step */
        for (int r = 0; r < 4; r++)
            for (int k = 0; k < nbk; k++) {
                uint8_t *blk = rows + r * row_bytes + (b + k) * bs;
                uint8_t *d = grp + 2 * (4 * k + r);
                memcpy(pack ? d : blk, pack ? blk : d, 2);
                for (size_t h = 0; h < nh; h++) {
                    uint8_t *q = grp + 8 * nbk + (bs - 2) * nbk * r + 16 * (nbk * h + k);
                    memcpy(pack ? q : blk + 2 + 16 * h, pack ? blk + 2 + 16 * h : q, 16);
                }
            }
    }
}

void cpu_r4_q4_0_pack(const uint8_t *rows, size_t row_bytes, uint8_t *grp, int64_t n)
{
    r4_copy(DT_Q4_0, (uint8_t *)rows, row_bytes, grp, n, 1);
}
void cpu_r4_q4_0_unpack(const uint8_t *grp, uint8_t *rows, size_t row_bytes, int64_t n)
{
    r4_copy(DT_Q4_0, rows, row_bytes, (uint8_t *)grp, n, 0);
}
void cpu_r4_q8_0_pack(const uint8_t *rows, size_t row_bytes, uint8_t *grp, int64_t n)
{
    r4_copy(DT_Q8_0, (uint8_t *)rows, row_bytes, grp, n, 1);
}
void cpu_r4_q8_0_unpack(const uint8_t *grp, uint8_t *rows, size_t row_bytes, int64_t n)
{
    r4_copy(DT_Q8_0, rows, row_bytes, (uint8_t *)grp, n, 0);
}

/* Step part 1 on a group's pair record g: the products of its 4 rows with
 * the activations xl, xh (Q4_0: 16-bit; Q8_0: widened, [b: 4 | b+1: 4]). */
AI void r4_prod4(const int type, const uint8_t *g, __m256i xl, __m256i xh, __m256i p[4])
{
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
        if (type == DT_Q8_0) { /* s8 x s8: |levels| against sign-applied activations */
            __m256i q0 = _mm256_loadu_si256((const __m256i *)(g + 16 + 64 * r));
            __m256i q1 = _mm256_loadu_si256((const __m256i *)(g + 48 + 64 * r));
            __m256i m0 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(q0), _mm256_sign_epi8(xl, q0)), ones);
            __m256i m1 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(q1), _mm256_sign_epi8(xh, q1)), ones);
            p[r] = _mm256_add_epi32(m0, m1);
        } else {
            __m256i v = _mm256_loadu_si256((const __m256i *)(g + 16 + 32 * r));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            p[r] = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh));
        }
    }
}

/* Step part 2: reduced transposed, scaled (the 8 scales in one load), accumulated */
AI void r4_fold4(const int type, const __m256i p[4], const uint8_t *g, const uint8_t *tab, __m256 *acc)
{
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)g));
    const __m256 tdx = _mm256_load_ps((const float *)(tab + 64));
    if (type == DT_Q8_0) {
        __m256i s = reduce4_i32(p[0], p[1], p[2], p[3]);
        *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, tdx), _mm256_cvtepi32_ps(s), *acc);
    } else {
        __m256i s = reduce4_i16(p[0], p[1], p[2], p[3]);
        __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), tdx, _mm256_load_ps((const float *)(tab + 96)));
        *acc = _mm256_fmadd_ps(d, t, *acc);
    }
}

/* The odd last block of a group at g (its record after the pairs), scalar,
 * as the standard-layout kernels do it. */
static void r4_tail(const int type, const uint8_t *g, const uint8_t *xq, int64_t n, float tail[4])
{
    const int64_t nb = n / 32, b = nb - 1;
    const int8_t *x = (const int8_t *)xq + 32 * b;
    const float *dx = (const float *)(xq + n), *sx = dx + cpu_pad8(nb);
    for (int r = 0; r < 4; r++) {
        uint8_t blk[34];
        cpu_r4_tail_block(g, r, r4_bs(type), blk);
        if (type == DT_Q8_0) {
            const int8_t *lv = (const int8_t *)(blk + 2);
            int32_t si = 0;
            for (int i = 0; i < 32; i++)
                si += lv[i] * x[i];
            tail[r] = h2f((uint16_t)ld_u16(blk)) * dx[b] * (float)si;
        } else {
            tail[r] = a45_blk_value(DT_Q4_0, blk, a45_blk_dot_scalar(DT_Q4_0, blk, x), dx[b], sx[b]);
        }
    }
}

/* G groups gs bytes apart at once (G sequential streams: from DRAM one
 * stream per group ran at ~18 GB/s where 4 streams reach ~25), each step
 * one pair of blocks of every group against the same activations; the fold
 * of group q sits after the products of group q + 1. Group q's row r to
 * y[q * ys + r]. (Each group's fold right after its own products, which
 * spills less: Q4_0 4-6% faster with the rows in the caches, level in
 * tg128 from DRAM; not kept.) */
AI void r4_decg(const int type, const int G, const uint8_t *g, size_t gs, const uint8_t *xq,
                int64_t n, const uint8_t *tab, float *y, size_t ys)
{
    const size_t rec = 8 * r4_bs(type); /* bytes of a pair record */
    const int64_t nb = n / 32, np = nb / 2;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    for (int64_t i = 0; i < np; i++, g += rec, tab += A45_TAB) {
        const __m256i xl = _mm256_load_si256((const __m256i *)tab);
        const __m256i xh = _mm256_load_si256((const __m256i *)(tab + 32));
        __m256i p[4], pn[4];
        r4_prod4(type, g, xl, xh, p);
#pragma GCC unroll 4
        for (int q = 1; q < G; q++) {
            r4_prod4(type, g + q * gs, xl, xh, pn);
            r4_fold4(type, p, g + (q - 1) * gs, tab, &acc[q - 1]);
            p[0] = pn[0], p[1] = pn[1], p[2] = pn[2], p[3] = pn[3];
        }
        r4_fold4(type, p, g + (G - 1) * gs, tab, &acc[G - 1]);
    }
#pragma GCC unroll 4
    for (int q = 0; q < G; q++) {
        float tail[4] = {0, 0, 0, 0};
        if (nb & 1)
            r4_tail(type, g + q * gs, xq, n, tail);
        store_rows4s(acc[q], tail, y + q * ys, 1);
    }
}

/* One token on R4 groups: 4 streams, step i takes group i of each quarter
 * of the call's groups; the groups left over one at a time. */
AI int r4_gemv(const int type, const cpu_gemm_args *a)
{
    if (a->n_tok != 1 || a->n_rows % 4 != 0 || !a->scratch)
        return 0;
    a45_table(a->x, a->n, type == DT_Q4_0 ? a45_k(DT_Q4_0) : 0.0f, a->scratch);
    const size_t gb = 4 * a->w_stride; /* bytes of a group */
    const int64_t ng = a->n_rows / 4, q = ng / 4;
    for (int64_t i = 0; i < q; i++)
        r4_decg(type, 4, a->w + i * gb, q * gb, a->x, a->n, a->scratch, a->y + 4 * i, (size_t)(4 * q));
    for (int64_t i = 4 * q; i < ng; i++)
        r4_decg(type, 1, a->w + i * gb, 0, a->x, a->n, a->scratch, a->y + 4 * i, 0);
    return 1;
}

int cpu_r4_q4_0_gemv(const cpu_gemm_args *a) { return r4_gemv(DT_Q4_0, a); }
int cpu_r4_q8_0_gemv(const cpu_gemm_args *a) { return r4_gemv(DT_Q8_0, a); }

/* The activation table (A45_TAB = 128 bytes per 2 blocks: 2n bytes) lives in
 * the per-thread scratch (cpu_scratch_bytes: more than 4n bytes). */
int cpu_avx2_gemv_a45(const cpu_gemm_args *a)
{
    if (a->n_tok >= 2)
        return 0;
    switch (a->type) {
    case DT_Q4_0:
        a45_gemv_q4_0(a);
        return 1;
    case DT_Q4_1:
        a45_gemv_q4_1(a);
        return 1;
    case DT_Q5_0:
        a45_gemv_q5_0(a);
        return 1;
    case DT_Q5_1:
        a45_gemv_q5_1(a);
        return 1;
    }
    return 0;
}
