/* gemv_r4k_avx2.c - Q4_K in the row-interleaved R4 layout (cpu_kernels.h,
 * cpu_repack): 4 rows re-laid at load as one group of 4 * row_bytes bytes,
 * the AVX2 one-token kernel and the few-token (2..8) kernel that read the
 * groups, and the AVX2 unpack to standard rows for the prefill GEMM.
 *
 * Why: the standard-layout kernel (dec4_k4, gemv_avx2.c) is compute bound
 * on one core, and part of its vector work only rearranges the bytes of
 * the 144-byte GGUF block: two 16-byte loads + vinserti128 per 32 bytes of
 * a row pair, 4 scalar loads + inserts for [d, dmin] of 4 rows, a 7-op
 * decode of the 6-bit scales per pair, two vpshufb + two vpmaddwd per 32
 * bytes of qs to apply the group scales. The same 576 bytes per
 * super-block of 4 rows, re-laid:
 *
 *   | X (32) | Y (16) | dd (16) | qs pair 0 (256) | qs pair 1 (256) |
 *
 * dd: f16 [d0 m0 d2 m2 | d1 m1 d3 m3] (d, dmin of rows 0..3), the lane
 * order of the accumulators (pair p = rows 2p, 2p + 1, row 2p + i in
 * 128-bit lane i): one load + vcvtph2ps.
 * X, Y: the 64 six-bit values (sc 0..7, mn 0..7 of the 4 rows) re-encoded
 * so that 6 vector ops decode them all: with SC and MN the byte vectors
 * [row 0 x8, row 2 x8 | row 1 x8, row 3 x8] of the scales and the mins,
 * X = SC | (MN >> 4) << 6 and Y holds MN's low nibbles (lane 0's in Y's low
 * nibbles, lane 1's in its high ones): SC = X & 63,
 * MN = nibble(Y for the lane) | ((X >> 6) << 4).
 * qs of pair p: 8 vectors (steps k = 2m + u) of [row 2p: 16 B | row 2p + 1:
 * 16 B], one 32-byte load each. The nibbles are placed (r4k_put_qs) so that
 * both nibbles of row byte q = 4i + 2t + e of the two steps of line m belong
 * to quarter i (elements 4i..4i+3, 16+4i..19+4i) of group 2m + t: the 4
 * vpmaddubsw products of a 64-byte line add up in 16 bits to the quarter
 * sums of 2 groups, and one vpmaddwd by [sc(2m), sc(2m + 1)] per line gives
 * exactly the 32-bit lanes of dec4_k4 (lane i = sum over the groups g of
 * sc_g * quarter i of g): the integer and float operations are dec4_k4's,
 * so the results are bit-identical to the standard layout (test_repack,
 * cli_repack). A layout with the group scales applied twice per super-block
 * and pair instead of 4 times (16-bit lanes = whole groups) was ~3% faster
 * from L2 and ~4% from DRAM but rounds differently, enough to move a
 * logprob by 0.08 in cli_repack's random model.
 *
 * The activations go through a per-call table (r4k_table) in the qs order,
 * 576 bytes per super-block as dec4_k4's.
 *
 * Measured on this Zen 3 VM (1 thread; rows 2048 wide; same data): from L2
 * ~4.1-4.3 ns per row and super-block vs ~4.9-5.1 for dec4_k4 (~1.2x); from
 * DRAM (75 MB, 4 group streams) ~26-27.5 GB/s vs ~25; bench_kernels matvec
 * 16384 x 8192: 19.9 -> 22.3 GB/s. */
#include <immintrin.h>
#include <string.h>

#include "../../core/dtype.h"
#include "../../core/dtype_blocks.h"
#include "avx2_common.h"
#include "cpu_kernels.h"

enum { R4K_SB = 4 * 144 }; /* bytes of one super-block of a group */

/* ---- pack (load time, plain C) / unpack (AVX2, per prefill block) -------- */

/* row r's slot in the lane order [row 0, row 2 | row 1, row 3]: lane, then byte offset */
static int r4_lane(int r) { return r & 1; }
static int r4_half(int r) { return 8 * (r >> 1); }

/* Row r's qs of a super-block in the R4 order: byte q = 4i + 2t + e of
 * step k = 2m + u holds elements 4i + 2u + e (low nibble) and 16 + 4i +
 * 2u + e (high) of group 2m + t, i.e. of quarter i of that group (the
 * standard qs byte 32 (g >> 1) + l holds element l of group g in nibble g & 1). */
static void r4k_put_qs(const uint8_t *qs, uint8_t *o, int r)
{
    /* output byte q = 4i + 2t + e of step k = 2m + u: nibble t of standard
     * bytes l = 32m + 4i + 2u + e (low) and l + 16 (high); one vpshufb per
     * source half picks the bytes, a blend on t the nibbles (load time:
     * ~10x the per-nibble loop) */
    const __m128i m4 = _mm_set1_epi8(15), hi4 = _mm_set1_epi8((char)0xf0);
    const __m128i tm = _mm_setr_epi8(0, 0, -1, -1, 0, 0, -1, -1, 0, 0, -1, -1, 0, 0, -1, -1);
    for (int k = 0; k < 8; k++) {
        const int m = k >> 1, u = k & 1;
        const char c = (char)(2 * u);
        const __m128i idx = _mm_setr_epi8(c, c + 1, c, c + 1, c + 4, c + 5, c + 4, c + 5, c + 8, c + 9,
                                          c + 8, c + 9, c + 12, c + 13, c + 12, c + 13);
        __m128i a = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(qs + 32 * m)), idx);
        __m128i b = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(qs + 32 * m + 16)), idx);
        __m128i lo = _mm_blendv_epi8(_mm_and_si128(a, m4), _mm_and_si128(_mm_srli_epi16(a, 4), m4), tm);
        __m128i hi = _mm_blendv_epi8(_mm_and_si128(_mm_slli_epi16(b, 4), hi4), _mm_and_si128(b, hi4), tm);
        _mm_storeu_si128((__m128i *)(o + 256 * (r >> 1) + 32 * k + 16 * (r & 1)), _mm_or_si128(lo, hi));
    }
}

void cpu_r4_q4_k_pack(const uint8_t *rows, size_t row_bytes, uint8_t *grp, int64_t n)
{
    const int64_t ns = n / 256;
    for (int64_t s = 0; s < ns; s++) {
        uint8_t *o = grp + s * R4K_SB;
        int sc[4][8], mn[4][8];
        for (int r = 0; r < 4; r++) {
            const dt_block_q4_k *b = (const dt_block_q4_k *)(rows + r * row_bytes) + s;
            for (int g = 0; g < 8; g++)
                k4_scale_min(b->scales, g, &sc[r][g], &mn[r][g]);
            const int i = 2 * r4_lane(r) + (r >> 1); /* dd: [d0 m0 d2 m2 d1 m1 d3 m3] */
            memcpy(o + 48 + 4 * i, &b->d, 2);
            memcpy(o + 48 + 4 * i + 2, &b->dmin, 2);
            r4k_put_qs(b->qs, o + 64, r);
        }
        memset(o + 32, 0, 16);
        for (int r = 0; r < 4; r++)
            for (int g = 0; g < 8; g++) {
                const int L = r4_lane(r), q = r4_half(r) + g;
                o[16 * L + q] = (uint8_t)(sc[r][g] | (mn[r][g] >> 4) << 6);
                o[32 + q] |= (uint8_t)((mn[r][g] & 15) << (4 * L));
            }
    }
}

/* qs of pair p (rows 2p, 2p + 1) back to the standard order: for line m
 * (steps A = 2m, B = 2m + 1) standard byte l < 16 of 32m.. takes the low
 * nibbles of P = byte 4i + e and Q = byte 4i + 2 + e of step 2m + u (l =
 * 4i + 2u + e), byte l + 16 their high nibbles (r4k_put_qs inverted). */
static void r4k_unpack_qs(const uint8_t *o, uint8_t *qa, uint8_t *qb)
{
#define R4K_UP(c, u) (u) ? -1 : (c), (u) ? -1 : (c) + 1
#define R4K_UPL(c, u) R4K_UP(c, u), R4K_UP(c, !(u)), R4K_UP((c) + 4, u), R4K_UP((c) + 4, !(u)), \
                      R4K_UP((c) + 8, u), R4K_UP((c) + 8, !(u)), R4K_UP((c) + 12, u), R4K_UP((c) + 12, !(u))
    /* P from A: l with u = 0 takes A[4i + e]; from B: u = 1 takes B[4i + e] */
    const __m256i pa = _mm256_setr_epi8(R4K_UPL(0, 0), R4K_UPL(0, 0));
    const __m256i pb = _mm256_setr_epi8(R4K_UPL(0, 1), R4K_UPL(0, 1));
    const __m256i qa_ = _mm256_setr_epi8(R4K_UPL(2, 0), R4K_UPL(2, 0));
    const __m256i qb_ = _mm256_setr_epi8(R4K_UPL(2, 1), R4K_UPL(2, 1));
#undef R4K_UPL
#undef R4K_UP
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int m = 0; m < 4; m++) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(o + 64 * m));
        const __m256i b = _mm256_loadu_si256((const __m256i *)(o + 64 * m + 32));
        const __m256i P = _mm256_or_si256(_mm256_shuffle_epi8(a, pa), _mm256_shuffle_epi8(b, pb));
        const __m256i Q = _mm256_or_si256(_mm256_shuffle_epi8(a, qa_), _mm256_shuffle_epi8(b, qb_));
        const __m256i lo = _mm256_or_si256(_mm256_and_si256(P, m4), _mm256_slli_epi16(_mm256_and_si256(Q, m4), 4));
        const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(P, 4), m4),
                                           _mm256_andnot_si256(m4, Q));
        _mm256_storeu_si256((__m256i *)(qa + 32 * m), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i *)(qb + 32 * m), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
}

void cpu_r4_q4_k_unpack(const uint8_t *grp, uint8_t *rows, size_t row_bytes, int64_t n)
{
    const int64_t ns = n / 256;
    const uint64_t m6 = 0x3f3f3f3f3f3f3f3full, m4 = 0x0f0f0f0f0f0f0f0full, m2 = 0x0303030303030303ull;
    for (int64_t s = 0; s < ns; s++) {
        const uint8_t *o = grp + s * R4K_SB;
        dt_block_q4_k *b[4];
        for (int r = 0; r < 4; r++)
            b[r] = (dt_block_q4_k *)(rows + r * row_bytes) + s;
        for (int r = 0; r < 4; r++) {
            /* the 8 scales / mins of row r as bytes of 64-bit words, re-encoded to the
             * standard 12 bytes (k4_scale_min inverted, 8 values at a time) */
            const int L = r4_lane(r), i = 2 * L + (r >> 1);
            uint64_t x, y;
            memcpy(&x, o + 16 * L + r4_half(r), 8);
            memcpy(&y, o + 32 + r4_half(r), 8);
            const uint64_t sc = x & m6, mn = ((y >> (4 * L)) & m4) | ((x >> 6) & m2) << 4;
            const uint32_t sl = (uint32_t)sc, sh = (uint32_t)(sc >> 32), ml = (uint32_t)mn, mh = (uint32_t)(mn >> 32);
            const uint32_t q0 = sl | ((sh >> 4) & 0x03030303u) << 6, q1 = ml | ((mh >> 4) & 0x03030303u) << 6;
            const uint32_t q2 = (sh & 0x0f0f0f0fu) | (mh & 0x0f0f0f0fu) << 4;
            memcpy(&b[r]->d, o + 48 + 4 * i, 4); /* d, dmin */
            memcpy(b[r]->scales, &q0, 4);
            memcpy(b[r]->scales + 4, &q1, 4);
            memcpy(b[r]->scales + 8, &q2, 4);
        }
        r4k_unpack_qs(o + 64, b[0]->qs, b[1]->qs);
        r4k_unpack_qs(o + 64 + 256, b[2]->qs, b[3]->qs);
    }
}

/* ---- one token ------------------------------------------------------------ */

/* Per-call table of the q8kb activation row, one R4K_TAB-byte record per
 * super-block: [B_0..B_7 | B_0..B_7] int16 (B_g: sum of group g's 32
 * levels, for the mins, as dec4_k4's k4_table), dx x 8 floats, then 16
 * vectors xt[k][h] (k the step, h = 0: low nibbles, 1: high): the 16
 * levels that row byte q of step k multiplies, in both 128-bit lanes.
 * 2.25 bytes per element, built per token. */
#define R4K_TAB 576
static void r4k_table(const uint8_t *xq, int64_t n, int64_t sb0, int64_t nsc, uint8_t *tab, size_t stride)
{
    const int64_t ns = n / 256;
    const float *dx = (const float *)(xq + n);
    const int16_t *bsums = (const int16_t *)(dx + ns);
    for (int64_t s = sb0; s < sb0 + nsc; s++, tab += stride) {
        const uint8_t *x = xq + 256 * s;
        __m256i b = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(bsums + 16 * s)),
                                      _mm256_set1_epi16(1)); /* [B0..3 | B4..7] int32, |.| <= 4096 */
        _mm256_store_si256((__m256i *)tab, _mm256_permute4x64_epi64(_mm256_packs_epi32(b, b), 0x88));
        _mm256_store_ps((float *)(tab + 32), _mm256_set1_ps(dx[s]));
        for (int k = 0; k < 8; k++) {
            /* step k = 2m + u, 16-bit word 2i + t: bytes 4i + 2u of the 16
             * levels at 64m + 32t (low nibbles) or 64m + 32t + 16 (high) */
            const int c = 2 * (k & 1);
            const __m128i s0 = _mm_setr_epi8(c, c + 1, -1, -1, c + 4, c + 5, -1, -1, c + 8, c + 9, -1, -1, c + 12, c + 13, -1, -1);
            const __m128i s1 = _mm_setr_epi8(-1, -1, c, c + 1, -1, -1, c + 4, c + 5, -1, -1, c + 8, c + 9, -1, -1, c + 12, c + 13);
            for (int h = 0; h < 2; h++) {
                const uint8_t *e = x + 64 * (k >> 1) + 16 * h;
                __m128i v = _mm_or_si128(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)e), s0),
                                         _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(e + 32)), s1));
                _mm256_store_si256((__m256i *)(tab + 64 + 64 * k + 32 * h), _mm256_broadcastsi128_si256(v));
            }
        }
    }
}

/* SC and MN of the super-block at o (see the top of the file) */
AI void r4k_scales(const uint8_t *o, __m256i *sc, __m256i *mn)
{
    const __m256i x = _mm256_loadu_si256((const __m256i *)o);
    const __m256i y = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(o + 32)));
    const __m256i ynib = _mm256_and_si256(_mm256_srlv_epi32(y, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                                          _mm256_set1_epi8(15));
    *sc = _mm256_and_si256(x, _mm256_set1_epi8(63));
    *mn = _mm256_or_si256(ynib, _mm256_and_si256(_mm256_srli_epi16(x, 2), _mm256_set1_epi8(0x30)));
}

/* One 64-byte line m of pair p (rows 2p, 2p + 1) of a group's qs: steps
 * 2m, 2m + 1, both nibbles, summed in 16 bits: lane 2i + t (per row) is
 * quarter i of group 2m + t (8 levels, |.| <= 8 * 15 * 127). */
AI __m256i r4k_line(const uint8_t *o, int p, int m, const uint8_t *tab)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i q[4];
#pragma GCC unroll 2
    for (int u = 0; u < 2; u++) {
        const int k = 2 * m + u;
        const __m256i v = _mm256_loadu_si256((const __m256i *)(o + 64 + 256 * p + 32 * k));
        const __m256i *xt = (const __m256i *)(tab + 64 + 64 * k);
        q[2 * u] = _mm256_maddubs_epi16(_mm256_and_si256(v, m4), _mm256_load_si256(xt));
        q[2 * u + 1] = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), _mm256_load_si256(xt + 1));
    }
    return _mm256_add_epi16(_mm256_add_epi16(q[0], q[1]), _mm256_add_epi16(q[2], q[3]));
}

/* vpshufb patterns of the scales of line m of pair p (row 16-bit lanes
 * 2i + t: byte 8p + 2m + t of SC, zero-extended), index 4p + m */
#define R4K_SPAT(b) b, -1, b + 1, -1, b, -1, b + 1, -1, b, -1, b + 1, -1, b, -1, b + 1, -1
static const int8_t r4k_spat[8][32] __attribute__((aligned(32))) = {
    {R4K_SPAT(0), R4K_SPAT(0)},   {R4K_SPAT(2), R4K_SPAT(2)},   {R4K_SPAT(4), R4K_SPAT(4)},
    {R4K_SPAT(6), R4K_SPAT(6)},   {R4K_SPAT(8), R4K_SPAT(8)},   {R4K_SPAT(10), R4K_SPAT(10)},
    {R4K_SPAT(12), R4K_SPAT(12)}, {R4K_SPAT(14), R4K_SPAT(14)}};

/* vpshufb patterns of the mins of pair p: bytes 8p..8p+7 of MN's lanes as 16-bit */
#define R4K_MPAT(b) b, -1, b + 1, -1, b + 2, -1, b + 3, -1, b + 4, -1, b + 5, -1, b + 6, -1, b + 7, -1
static const int8_t r4k_pmn[2][32] __attribute__((aligned(32))) = {{R4K_MPAT(0), R4K_MPAT(0)},
                                                                   {R4K_MPAT(8), R4K_MPAT(8)}};

/* NG groups (gs bytes apart; group j's 4 results to y + j * ys) x the
 * activation table. Per super-block, pair 0 of every group, then pair 1;
 * within a pair the groups take turns one 64-byte line of qs at a time, so
 * that the NG streams advance together in small steps: from DRAM on this
 * Zen 3, one stream (a group at a time) ran at ~17.5 GB/s, 4 streams taking
 * turns by super-block (576 bytes) ~22, by pair (256) ~25.5, by line ~27.5
 * (dec4_k4's 4 row streams ~25); software prefetch (T0 or T2, 1-4 KiB ahead)
 * only slowed it. Per group and pair: the mins (one vpmaddwd by the table's
 * group sums, convert, FMA with dmin) with the first line, the 32-bit sums
 * of the 4 lines converted and FMA'd with d after the last, both in the
 * order of dec4_k4. The header is decoded with pair 0 and kept for pair 1
 * (in memory: 4 groups' state does not fit the 16 registers). */
AI void r4k_groups(const uint8_t *w, size_t gs, const uint8_t *tab, int64_t ns, float *y, size_t ys, const int NG)
{
    __m256 acc[4][2];
    __m256i ia[4];
    struct { __m256i sc, mn; __m256 dd; } hd[4];
#pragma GCC unroll 4
    for (int j = 0; j < NG; j++)
        acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    for (int64_t s = 0; s < ns; s++, tab += R4K_TAB) {
        const uint8_t *o = w + s * R4K_SB;
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++) {
#pragma GCC unroll 4
            for (int k = 0; k < 8; k += 2) {
#pragma GCC unroll 4
                for (int j = 0; j < NG; j++) {
                    const uint8_t *og = o + j * gs;
                    if (k == 0) {
                        if (p == 0) {
                            r4k_scales(og, &hd[j].sc, &hd[j].mn);
                            hd[j].dd = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(og + 48))),
                                                     _mm256_load_ps((const float *)(tab + 32)));
                        }
                        const __m256i pm = _mm256_load_si256((const __m256i *)r4k_pmn[p]);
                        __m256i m = _mm256_madd_epi16(_mm256_shuffle_epi8(hd[j].mn, pm),
                                                      _mm256_load_si256((const __m256i *)tab));
                        acc[j][p] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_permute_ps(hd[j].dd, p ? 0xff : 0x55),
                                                     acc[j][p]);
                    }
                    /* line k / 2 times the scales of its groups 2m, 2m + 1 (pair p: bytes 8p.. of SC) */
                    const __m256i sp = _mm256_load_si256((const __m256i *)r4k_spat[4 * p + (k >> 1)]);
                    __m256i mi = _mm256_madd_epi16(r4k_line(og, p, k >> 1, tab), _mm256_shuffle_epi8(hd[j].sc, sp));
                    ia[j] = k ? _mm256_add_epi32(ia[j], mi) : mi;
                    if (k == 6) {
                        acc[j][p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[j]), _mm256_permute_ps(hd[j].dd, p ? 0xaa : 0x00),
                                                    acc[j][p]);
                    }
                }
            }
        }
    }
    /* row r: (lanes 0 + 1) + (lanes 2 + 3) of its half, as dec4_k4 */
#pragma GCC unroll 4
    for (int j = 0; j < NG; j++) {
        __m256 t = _mm256_hadd_ps(acc[j][0], acc[j][1]); /* [r0 01 23, r2 01 23 | r1 .., r3 ..] */
        t = _mm256_hadd_ps(t, t);                        /* [r0, r2, r0, r2 | r1, r3, r1, r3] */
        _mm_storeu_ps(y + j * ys, _mm_unpacklo_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
    }
}

#define R4K_NG 4 /* group streams walked side by side */

int cpu_r4_q4_k_gemv(const cpu_gemm_args *a)
{
    if (a->n_tok != 1 || a->n_rows % 4 || a->n % 256 || !a->scratch)
        return 0;
    const int64_t ns = a->n / 256;
    r4k_table(a->x, a->n, 0, ns, a->scratch, R4K_TAB);
    const int64_t ng = a->n_rows / 4, q = ng / R4K_NG;
    const size_t gb = 4 * a->w_stride;
    for (int64_t i = 0; i < q; i++) /* step i: group i of each of R4K_NG runs of q groups */
        r4k_groups(a->w + i * gb, q * gb, a->scratch, ns, a->y + 4 * i, 4 * q, R4K_NG);
    for (int64_t g = R4K_NG * q; g < ng; g++)
        r4k_groups(a->w + g * gb, 0, a->scratch, ns, a->y + 4 * g, 0, 1);
    return 1;
}

/* ---- a few tokens (2..8) ---------------------------------------------------- */

/* The one-token kernel's structure with a table per token: r4k_table's
 * records for the tokens of a block interleaved per super-block (32-byte
 * vectors, so that the loads fold into vpmaddubsw: with 16-byte records
 * read by vbroadcasti128, GCC hoisted the broadcasts and spilled them),
 * for K chunks whose tables fit R4K_MTAB and the scratch
 * (cpu_scratch_bytes(CPU_ACT_Q8KB, n) >= 4 tokens x 576 B per super-block
 * at n = 256). One group stream at a time: a few tokens are compute bound
 * (16384 x 2048, 1 thread: ~11-17 GB/s), and groups are contiguous. */
#define R4K_MKCH 16    /* super-blocks per K chunk at most (long runs of each group, as mt_k) */
#define R4K_MTAB 24576 /* table bytes per K chunk at most: they stay in L1 (48 or 90 KiB: same speed) */

/* One group (4 rows) x NT tokens (1..4) over the nsc super-blocks of a
 * chunk from s0; T: the chunk's tables (ntt records per super-block). Each
 * 64-byte line of qs is decoded once and multiplied by every token's table
 * (r4k_line's products per token). Per super-block and token the level
 * and min sums of the 4 rows are reduced exactly to int32 and the float
 * value added to y with mt_k's operations in mt_k's order (sum * (d dx) -
 * mins * (dmin dx), then the running sum, 0 in the first chunk), so the
 * results equal the standard layout's few-token path (test_repack: 0). */
AI void r4k_mgroup(const uint8_t *w, int64_t s0, int nsc, const uint8_t *T, int ntt, float *y, int64_t ldy,
                   int first, const int NT)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    __m128 yv[4];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
        yv[t] = first ? _mm_setzero_ps() : _mm_loadu_ps(y + t * ldy);
    for (int s = 0; s < nsc; s++, T += (size_t)ntt * R4K_TAB) {
        const uint8_t *o = w + (s0 + s) * R4K_SB;
        __m256i sc, mn, h0[4];
        r4k_scales(o, &sc, &mn);
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++) {
            __m256i ia[4];
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
                const __m256i v0 = _mm256_loadu_si256((const __m256i *)(o + 64 + 256 * p + 64 * m));
                const __m256i v1 = _mm256_loadu_si256((const __m256i *)(o + 64 + 256 * p + 64 * m + 32));
                const __m256i n00 = _mm256_and_si256(v0, m4), n01 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m4);
                const __m256i n10 = _mm256_and_si256(v1, m4), n11 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m4);
                const __m256i scm = _mm256_shuffle_epi8(sc, _mm256_load_si256((const __m256i *)r4k_spat[4 * p + m]));
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    const __m256i *xt = (const __m256i *)(T + (size_t)t * R4K_TAB + 64 + 128 * m);
                    __m256i q = _mm256_add_epi16(
                        _mm256_add_epi16(_mm256_maddubs_epi16(n00, _mm256_load_si256(xt)),
                                         _mm256_maddubs_epi16(n01, _mm256_load_si256(xt + 1))),
                        _mm256_add_epi16(_mm256_maddubs_epi16(n10, _mm256_load_si256(xt + 2)),
                                         _mm256_maddubs_epi16(n11, _mm256_load_si256(xt + 3))));
                    __m256i mi = _mm256_madd_epi16(q, scm);
                    ia[t] = m ? _mm256_add_epi32(ia[t], mi) : mi;
                }
            }
            const __m256i mnp = _mm256_shuffle_epi8(mn, _mm256_load_si256((const __m256i *)r4k_pmn[p]));
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                /* [L01 L23 M01 M23] of row 2p + lane */
                __m256i h = _mm256_hadd_epi32(ia[t], _mm256_madd_epi16(mnp, _mm256_load_si256((const __m256i *)(T + (size_t)t * R4K_TAB))));
                h0[t] = p ? _mm256_hadd_epi32(h0[t], h) : h; /* [r0 L, r0 M, r2 L, r2 M | r1 .., r3 ..] */
            }
        }
        /* dd [d0 m0 d2 m2 | d1 m1 d3 m3] -> [d0 d1 d2 d3], [m0 m1 m2 m3] */
        const __m256 dd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(o + 48)));
        const __m128 dl = _mm256_castps256_ps128(dd), dh = _mm256_extractf128_ps(dd, 1);
        const __m128 u0 = _mm_unpacklo_ps(dl, dh), u1 = _mm_unpackhi_ps(dl, dh); /* [d0 d1 m0 m1], [d2 d3 m2 m3] */
        const __m128 dv = _mm_movelh_ps(u0, u1), mv = _mm_movehl_ps(u1, u0);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const __m128i hl = _mm256_castsi256_si128(h0[t]), hh = _mm256_extracti128_si256(h0[t], 1);
            const __m128i v0 = _mm_unpacklo_epi32(hl, hh), v1 = _mm_unpackhi_epi32(hl, hh); /* [L0 L1 M0 M1], [L2 L3 M2 M3] */
            const __m128i si = _mm_unpacklo_epi64(v0, v1), mi = _mm_unpackhi_epi64(v0, v1);
            const __m128 dxv = _mm_broadcast_ss((const float *)(T + (size_t)t * R4K_TAB + 32));
            __m128 a1 = _mm_mul_ps(dv, dxv), a2 = _mm_mul_ps(mv, dxv);
            yv[t] = _mm_add_ps(yv[t], _mm_sub_ps(_mm_mul_ps(_mm_cvtepi32_ps(si), a1),
                                                 _mm_mul_ps(_mm_cvtepi32_ps(mi), a2)));
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
        _mm_storeu_ps(y + t * ldy, yv[t]);
}

/* tokens t0.. (nt of them, <= 4) of a call, over K chunks whose table fits the budget */
static void r4k_multi_block(const cpu_gemm_args *a, int t0, int nt, size_t budget)
{
    const int64_t ns = a->n / 256;
    int64_t kch = (int64_t)(budget / ((size_t)nt * R4K_TAB)); /* >= 1: nt * R4K_TAB <= budget */
    if (kch > R4K_MKCH)
        kch = R4K_MKCH;
    const size_t gb = 4 * a->w_stride;
    const uint8_t *x = a->x + t0 * a->x_stride;
    for (int64_t c0 = 0; c0 < ns; c0 += kch) {
        const int nsc = (int)(ns - c0 < kch ? ns - c0 : kch);
        for (int t = 0; t < nt; t++)
            r4k_table(x + t * a->x_stride, a->n, c0, nsc, a->scratch + (size_t)t * R4K_TAB, (size_t)nt * R4K_TAB);
        for (int64_t g = 0; g < a->n_rows / 4; g++) {
            const uint8_t *w = a->w + g * gb;
            float *y = a->y + t0 * a->ldy + 4 * g;
            switch (nt) {
            case 1: r4k_mgroup(w, c0, nsc, a->scratch, nt, y, a->ldy, c0 == 0, 1); break;
            case 2: r4k_mgroup(w, c0, nsc, a->scratch, nt, y, a->ldy, c0 == 0, 2); break;
            case 3: r4k_mgroup(w, c0, nsc, a->scratch, nt, y, a->ldy, c0 == 0, 3); break;
            default: r4k_mgroup(w, c0, nsc, a->scratch, nt, y, a->ldy, c0 == 0, 4); break;
            }
        }
    }
}

/* Tokens in blocks of <= 4 (5..8 tokens: 2 blocks, each streaming the
 * weights): 16384 x 2048, 8 tokens, 1 thread, alternating, 2 blocks of 4
 * ~3.3-3.5 ms vs one pass of 8 (accumulators spilled, 4-super-block chunks
 * for the 8 tables) ~4.4-4.8, mt_k on standard rows ~3.8. */
int cpu_r4_q4_k_multi(const cpu_gemm_args *a)
{
    const int nt = (int)a->n_tok;
    if (nt < 2 || nt > 8 || !a->r4 || a->n_rows % 4 || a->n % 256 || !a->scratch)
        return 0;
    /* table budget: the scratch (>= 4 tokens' super-block records: 2816 B
     * at n = 256), at most R4K_MTAB (kept in L1) */
    size_t budget = cpu_scratch_bytes(CPU_ACT_Q8KB, a->n);
    if (budget > R4K_MTAB)
        budget = R4K_MTAB;
    if (4 * R4K_TAB > budget)
        return 0;
    const int nb = (nt + 3) / 4;
    for (int b = 0; b < nb; b++)
        r4k_multi_block(a, nt * b / nb, nt * (b + 1) / nb - nt * b / nb, budget);
    return 1;
}
