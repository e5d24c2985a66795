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
 * dd: f16 [d0 d2 m0 m2 | d1 d3 m1 m3] (d, dmin of rows 0..3), the lane
 * order of the one-token kernel's super-block totals [T T M M] (row 2p + i
 * of pair p in 128-bit lane i): one load + vcvtph2ps.
 * X, Y: the 64 six-bit values (sc 0..7, mn 0..7 of the 4 rows) re-encoded
 * so that 6 vector ops decode them all: with SC and MN the byte vectors
 * [row 0 x8, row 2 x8 | row 1 x8, row 3 x8] of the scales and the mins,
 * X = SC | (MN >> 4) << 6 and Y holds MN's low nibbles (lane 0's in Y's low
 * nibbles, lane 1's in its high ones): SC = X & 63,
 * MN = nibble(Y for the lane) | ((X >> 6) << 4).
 * qs of pair p: 8 vectors (steps k) of [row 2p: 16 B | row 2p + 1: 16 B],
 * one 32-byte load each: a row's 128 standard bytes as 64 16-bit words
 * transposed 8 x 8 (r4k_tr8), so row word j = 2c + i of step k is standard
 * word 8j + k, bytes 32c + 16i + 2k + e: the low nibbles of the 16-bit lane
 * j of every step are group 2c, the high nibbles group 2c + 1, and a pair's
 * 16 vpmaddubsw products add up in 16 bits to two vectors whose lanes hold
 * 16 levels of one group each (even groups, odd groups): 2 vpmaddwd per
 * pair and super-block apply the group scales (the standard layout needs
 * 8). The bytes are the standard ones moved, not re-nibbled, so pack and
 * unpack are the same transpose.
 *
 * Same results as the standard layout, bit for bit (test_repack,
 * cli_repack): both one-token kernels reduce each row's integer sums per
 * super-block to the exact totals T = sum_g sc_g * (group g's level
 * products) and M = sum_g mn_g * B_g (vphaddd trees; |T| <= 256 * 63 * 15 *
 * 127 < 2^31), which do not depend on how the work was split into lanes,
 * and then do the same float operations: acc += float([T, M]) * [d dx,
 * -dmin dx] (one convert and one FMA per super-block and 4 rows), y = acc_T
 * + acc_M. (Before, the R4 kernel had to mirror dec4_k4's lanes, 4 group
 * quarters per lane and a convert per pair; the whole-group lanes above,
 * which round differently under that scheme, were ~3% faster then.) The
 * few-token kernel reduces to the same totals and mirrors the standard
 * few-token path's float operations (mt_k).
 *
 * The activations go through a per-call table (r4k_table) in the qs order,
 * R4K_TAB = 608 bytes per super-block.
 *
 * Measured on this Zen 3 VM (1 thread, L2-resident rows, same data, best
 * of 5): 256 x 2048 ~3.7 ns per row and super-block vs ~5.3 for dec4_k4
 * (the R4 layout of the quarter-lane scheme: ~4.5-4.9), 256 x 8192 ~4.2 vs
 * ~5.4 (quarter lanes ~4.9-5.1); 16384 x 2048 (partly in L3) 30.5-34 GB/s
 * (quarter lanes 27.5-30); 65536 x 2048 (75 MB, on a day the 1-thread read
 * probe gave ~23 GB/s) ~22-24 (~22). caravan bench Q4_K tg128, 1 thread,
 * alternating: bw_pct 82.0/87.4/87.8/85.9/83.9 -> 87.2/88.6/89.0/89.3/88.6.
 * The few-token kernel: 2..8 tokens 7-10% faster than on quarter lanes. */
#include <immintrin.h>
#include <string.h>

#include "../../core/dtype.h"
#include "../../core/dtype_blocks.h"
#include "avx2_common.h"
#include "cpu_kernels.h"

enum { R4K_SB = 4 * 144 }; /* bytes of one super-block of a group */

/* ---- pack (load time) / unpack (per prefill block) ------------------------- */

/* row r's slot in the lane order [row 0, row 2 | row 1, row 3]: lane, then byte offset */
static int r4_lane(int r) { return r & 1; }
static int r4_half(int r) { return 8 * (r >> 1); }
/* f16 index in dd of row r's d (dmin: + 2): [d0 d2 m0 m2 | d1 d3 m1 m3] */
static int r4_dd(int r) { return 4 * r4_lane(r) + (r >> 1); }

/* 8 x 8 transpose of 16-bit words in each 128-bit lane: word k of v[j]
 * goes to word j of v[k]. The qs of a row are the standard 64 words
 * transposed (and back), the activation table's level vectors the levels'
 * words transposed. */
AI void r4k_tr8(__m256i v[8])
{
    __m256i t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi16(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi16(v[2 * i], v[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_unpacklo_epi32(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm256_unpackhi_epi32(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm256_unpacklo_epi32(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm256_unpackhi_epi32(t[4 * i + 1], t[4 * i + 3]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        v[2 * i] = _mm256_unpacklo_epi64(u[i], u[i + 4]);
        v[2 * i + 1] = _mm256_unpackhi_epi64(u[i], u[i + 4]);
    }
}

void cpu_r4_q4_k_pack(const uint8_t *rows, size_t row_bytes, uint8_t *grp, int64_t n)
{
    const int64_t ns = n / 256;
    for (int64_t s = 0; s < ns; s++) {
        uint8_t *o = grp + s * R4K_SB;
        const dt_block_q4_k *b[4];
        int sc[4][8], mn[4][8];
        for (int r = 0; r < 4; r++) {
            b[r] = (const dt_block_q4_k *)(rows + r * row_bytes) + s;
            for (int g = 0; g < 8; g++)
                k4_scale_min(b[r]->scales, g, &sc[r][g], &mn[r][g]);
            memcpy(o + 48 + 2 * r4_dd(r), &b[r]->d, 2);
            memcpy(o + 48 + 2 * r4_dd(r) + 4, &b[r]->dmin, 2);
        }
        memset(o + 32, 0, 16);
        for (int r = 0; r < 4; r++)
            for (int g = 0; g < 8; g++) {
                const int L = r4_lane(r), q = r4_half(r) + g;
                o[16 * L + q] = (uint8_t)(sc[r][g] | (mn[r][g] >> 4) << 6);
                o[32 + q] |= (uint8_t)((mn[r][g] & 15) << (4 * L));
            }
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++) { /* step k of pair p = word k of each 16 bytes of the rows' qs */
            __m256i v[8];
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                v[j] = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(b[2 * p]->qs + 16 * j))),
                    _mm_loadu_si128((const __m128i *)(b[2 * p + 1]->qs + 16 * j)), 1);
            r4k_tr8(v);
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
                _mm256_storeu_si256((__m256i *)(o + 64 + 256 * p + 32 * k), v[k]);
        }
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
            const int L = r4_lane(r);
            uint64_t x, y;
            memcpy(&x, o + 16 * L + r4_half(r), 8);
            memcpy(&y, o + 32 + r4_half(r), 8);
            const uint64_t sc = x & m6, mn = ((y >> (4 * L)) & m4) | ((x >> 6) & m2) << 4;
            const uint32_t sl = (uint32_t)sc, sh = (uint32_t)(sc >> 32), ml = (uint32_t)mn, mh = (uint32_t)(mn >> 32);
            const uint32_t q0 = sl | ((sh >> 4) & 0x03030303u) << 6, q1 = ml | ((mh >> 4) & 0x03030303u) << 6;
            const uint32_t q2 = (sh & 0x0f0f0f0fu) | (mh & 0x0f0f0f0fu) << 4;
            memcpy(&b[r]->d, o + 48 + 2 * r4_dd(r), 2);
            memcpy(&b[r]->dmin, o + 48 + 2 * r4_dd(r) + 4, 2);
            memcpy(b[r]->scales, &q0, 4);
            memcpy(b[r]->scales + 4, &q1, 4);
            memcpy(b[r]->scales + 8, &q2, 4);
        }
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++) {
            __m256i v[8];
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
                v[k] = _mm256_loadu_si256((const __m256i *)(o + 64 + 256 * p + 32 * k));
            r4k_tr8(v); /* v[j]: [row 2p: 16 bytes j | row 2p + 1: 16 bytes j] */
#pragma GCC unroll 4
            for (int j = 0; j < 8; j += 2) {
                _mm256_storeu_si256((__m256i *)(b[2 * p]->qs + 16 * j), _mm256_permute2x128_si256(v[j], v[j + 1], 0x20));
                _mm256_storeu_si256((__m256i *)(b[2 * p + 1]->qs + 16 * j), _mm256_permute2x128_si256(v[j], v[j + 1], 0x31));
            }
        }
    }
}

/* ---- one token ------------------------------------------------------------ */

/* Per-call table of the q8kb activation row, one R4K_TAB-byte record per
 * super-block: [B_0..B_7 | B_0..B_7] and [B_4..B_7 B_0..B_3 | same] int16
 * (B_g: sum of group g's 32 levels, for the mins), [dx dx -dx -dx] x 2
 * floats (the lanes [T T M M] of r4k_groups' totals; lane 0 is dx), then 16
 * vectors xt[k][h] (k the step, h = 0: low nibbles, 1: high): the 16 levels
 * that row byte q = 2j + e of step k multiplies, levels 64c + 32h + 16i +
 * 2k + e for word j = 2c + i (the 16-byte pieces 4c + 2h + i of the 256
 * levels as 8 x 8 words, transposed), in both 128-bit lanes. 2.4 bytes per
 * element, built per token. */
#define R4K_TAB 608
#define R4K_XT 96 /* offset of the level vectors in a record */
static void r4k_table(const uint8_t *xq, int64_t n, int64_t sb0, int64_t nsc, uint8_t *tab, size_t stride)
{
    const int64_t ns = n / 256;
    const float *dx = (const float *)(xq + n);
    const int16_t *bsums = (const int16_t *)(dx + ns);
    for (int64_t s = sb0; s < sb0 + nsc; s++, tab += stride) {
        const uint8_t *x = xq + 256 * s;
        __m256i b = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(bsums + 16 * s)),
                                      _mm256_set1_epi16(1)); /* [B0..3 | B4..7] int32, |.| <= 4096 */
        b = _mm256_packs_epi32(b, b);                        /* [B0..3 B0..3 | B4..7 B4..7] */
        _mm256_store_si256((__m256i *)tab, _mm256_permute4x64_epi64(b, 0x88));
        _mm256_store_si256((__m256i *)(tab + 32), _mm256_permute4x64_epi64(b, 0x22));
        const float d = dx[s];
        _mm256_store_ps((float *)(tab + 64), _mm256_setr_ps(d, d, -d, -d, d, d, -d, -d));
        __m256i v[8]; /* v[2c + i]: 16-byte pieces 4c + i (low lane, h = 0) and 4c + 2 + i (high) */
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            v[j] = _mm256_loadu2_m128i((const __m128i *)(x + 64 * (j >> 1) + 32 + 16 * (j & 1)),
                                       (const __m128i *)(x + 64 * (j >> 1) + 16 * (j & 1)));
        r4k_tr8(v);
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            _mm256_store_si256((__m256i *)(tab + R4K_XT + 64 * k), _mm256_permute2x128_si256(v[k], v[k], 0x00));
            _mm256_store_si256((__m256i *)(tab + R4K_XT + 64 * k + 32), _mm256_permute2x128_si256(v[k], v[k], 0x11));
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

/* One 64-byte line m (steps 2m, 2m + 1) of pair p (rows 2p, 2p + 1) x the
 * table: the 16-bit products of the low nibbles (even groups) to *l, of the
 * high nibbles (odd groups) to *h, 4 levels per lane each. */
AI void r4k_line(const uint8_t *o, int p, int m, const uint8_t *tab, __m256i *l, __m256i *h)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i v0 = _mm256_loadu_si256((const __m256i *)(o + 64 + 256 * p + 64 * m));
    __m256i v1 = _mm256_loadu_si256((const __m256i *)(o + 64 + 256 * p + 64 * m + 32));
    __asm__("" : "+x"(v0), "+x"(v1)); /* one load each (gcc folds a second one into the vpand) */
    const __m256i *xt = (const __m256i *)(tab + R4K_XT + 128 * m);
    *l = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(v0, m4), _mm256_load_si256(xt)),
                          _mm256_maddubs_epi16(_mm256_and_si256(v1, m4), _mm256_load_si256(xt + 2)));
    *h = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v0, 4), m4), _mm256_load_si256(xt + 1)),
                          _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v1, 4), m4), _mm256_load_si256(xt + 3)));
}

/* vpshufb patterns of the scales of pair p (rows' lanes), index 2p + t: the
 * 16-bit lanes j = 2c + i of the low (t = 0) or high (t = 1) nibbles' sums
 * hold group 2c + t: byte 8p + 2c + t of SC, zero-extended */
#define R4K_SPAT(b) b, -1, b, -1, b + 2, -1, b + 2, -1, b + 4, -1, b + 4, -1, b + 6, -1, b + 6, -1
static const int8_t r4k_spat[4][32] __attribute__((aligned(32))) = {
    {R4K_SPAT(0), R4K_SPAT(0)}, {R4K_SPAT(1), R4K_SPAT(1)}, {R4K_SPAT(8), R4K_SPAT(8)}, {R4K_SPAT(9), R4K_SPAT(9)}};

/* vpshufb patterns of the mins: of pair p (the few-token kernel): bytes
 * 8p..8p+7 of MN's lanes as 16-bit; of the 4 rows (index 2, 3): [row 0 mn
 * 0..3, row 2 mn 4..7 | row 1 .., row 3 ..] and [mn 4..7, mn 0..3], against
 * the table's two group-sum vectors */
#define R4K_MPAT(b, c) b, -1, b + 1, -1, b + 2, -1, b + 3, -1, c, -1, c + 1, -1, c + 2, -1, c + 3, -1
static const int8_t r4k_pmn[4][32] __attribute__((aligned(32))) = {
    {R4K_MPAT(0, 4), R4K_MPAT(0, 4)}, {R4K_MPAT(8, 12), R4K_MPAT(8, 12)},
    {R4K_MPAT(0, 12), R4K_MPAT(0, 12)}, {R4K_MPAT(4, 8), R4K_MPAT(4, 8)}};

/* NG groups (gs bytes apart; group j's 4 results to y + j * ys) x the
 * activation table. Per super-block, pair 0 of every group, then pair 1;
 * within a pair the groups take turns one 64-byte line of qs at a time, so
 * that the NG streams advance together in small steps: from DRAM on this
 * Zen 3, one stream (a group at a time) ran at ~17.5 GB/s, 4 streams taking
 * turns by super-block (576 bytes) ~22, by pair (256) ~25.5, by line ~27.5
 * (dec4_k4's 4 row streams ~25); software prefetch (T0 or T2, 1-4 KiB ahead)
 * only slowed it (and so did loading a line's 4 level vectors once for the
 * 4 groups: ~10%, spills). Per group and pair the 16-bit sums of the 4 lines (even
 * and odd groups) get their scales by 2 vpmaddwd; per group and super-block
 * the header (scales, mins term, [d, -dmin] dx) is done with the first line
 * and kept in memory (4 groups' state does not fit the 16 registers), and
 * the totals [T0 T2 M0 M2 | T1 T3 M1 M3] after the last line, with
 * dec4_k4's float operations. */
AI void r4k_groups(const uint8_t *w, size_t gs, const uint8_t *tab, int64_t ns, float *y, size_t ys, const int NG)
{
    __m256 acc[4];
    __m256i il[4], ih[4];
    struct { __m256i sc, mi, t0; __m256 dd; } hd[4];
#pragma GCC unroll 4
    for (int j = 0; j < NG; j++)
        acc[j] = _mm256_setzero_ps();
    for (int64_t s = 0; s < ns; s++, tab += R4K_TAB) {
        const uint8_t *o = w + s * R4K_SB;
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++) {
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
#pragma GCC unroll 4
                for (int j = 0; j < NG; j++) {
                    const uint8_t *og = o + j * gs;
                    if (p == 0 && m == 0) {
                        __m256i mn;
                        r4k_scales(og, &hd[j].sc, &mn);
                        hd[j].dd = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(og + 48))),
                                                 _mm256_load_ps((const float *)(tab + 64)));
                        /* sum of mn_g * B_g: [row 0 x2, row 2 x2 | row 1 .., row 3 ..] */
                        hd[j].mi = _mm256_add_epi32(
                            _mm256_madd_epi16(_mm256_shuffle_epi8(mn, _mm256_load_si256((const __m256i *)r4k_pmn[2])),
                                              _mm256_load_si256((const __m256i *)tab)),
                            _mm256_madd_epi16(_mm256_shuffle_epi8(mn, _mm256_load_si256((const __m256i *)r4k_pmn[3])),
                                              _mm256_load_si256((const __m256i *)(tab + 32))));
                    }
                    __m256i l, h;
                    r4k_line(og, p, m, tab, &l, &h);
                    il[j] = m ? _mm256_add_epi16(il[j], l) : l; /* 16 levels per lane */
                    ih[j] = m ? _mm256_add_epi16(ih[j], h) : h;
                    __asm__("" : "+x"(il[j]), "+x"(ih[j])); /* line order (else gcc hoists the products and spills) */
                    if (m == 3) {
                        const __m256i sl = _mm256_shuffle_epi8(hd[j].sc, _mm256_load_si256((const __m256i *)r4k_spat[2 * p]));
                        const __m256i sh = _mm256_shuffle_epi8(hd[j].sc, _mm256_load_si256((const __m256i *)r4k_spat[2 * p + 1]));
                        const __m256i t = _mm256_add_epi32(_mm256_madd_epi16(il[j], sl), _mm256_madd_epi16(ih[j], sh));
                        if (p == 0) {
                            hd[j].t0 = t; /* [row 0 x4 | row 1 x4] */
                        } else {
                            const __m256i v = _mm256_hadd_epi32(_mm256_hadd_epi32(hd[j].t0, t), hd[j].mi);
                            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), hd[j].dd, acc[j]);
                        }
                    }
                }
            }
        }
    }
    /* row r: T + M, as dec4_k4 */
#pragma GCC unroll 4
    for (int j = 0; j < NG; j++) {
        const __m256 t = _mm256_add_ps(acc[j], _mm256_permute_ps(acc[j], 0x4e)); /* [r0 r2 .. | r1 r3 ..] */
        _mm_storeu_ps(y + j * ys, _mm_unpacklo_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
    }
}

/* group streams walked side by side (8: the groups' state spills, tg 1
 * thread Q4_K 26.5 -> 21.9 GB/s; the 1-thread probe reads 4 and 8 streams
 * alike) */
#define R4K_NG 4

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
 * (cpu_scratch_bytes(CPU_ACT_Q8KB, n) >= 4 tokens x R4K_TAB B per
 * super-block at n = 256). One group stream at a time: a few tokens are compute bound
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
            __m256i il[4], ih[4];
#pragma GCC unroll 4
            for (int m = 0; m < 4; m++) {
                const __m256i v0 = _mm256_loadu_si256((const __m256i *)(o + 64 + 256 * p + 64 * m));
                const __m256i v1 = _mm256_loadu_si256((const __m256i *)(o + 64 + 256 * p + 64 * m + 32));
                const __m256i n00 = _mm256_and_si256(v0, m4), n01 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m4);
                const __m256i n10 = _mm256_and_si256(v1, m4), n11 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m4);
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    const __m256i *xt = (const __m256i *)(T + (size_t)t * R4K_TAB + R4K_XT + 128 * m);
                    const __m256i l = _mm256_add_epi16(_mm256_maddubs_epi16(n00, _mm256_load_si256(xt)),
                                                       _mm256_maddubs_epi16(n10, _mm256_load_si256(xt + 2)));
                    const __m256i h = _mm256_add_epi16(_mm256_maddubs_epi16(n01, _mm256_load_si256(xt + 1)),
                                                       _mm256_maddubs_epi16(n11, _mm256_load_si256(xt + 3)));
                    il[t] = m ? _mm256_add_epi16(il[t], l) : l; /* even groups, 16 levels per lane */
                    ih[t] = m ? _mm256_add_epi16(ih[t], h) : h; /* odd groups */
                    __asm__("" : "+x"(il[t]), "+x"(ih[t])); /* line order, as r4k_groups */
                }
            }
            const __m256i sl = _mm256_shuffle_epi8(sc, _mm256_load_si256((const __m256i *)r4k_spat[2 * p]));
            const __m256i sh = _mm256_shuffle_epi8(sc, _mm256_load_si256((const __m256i *)r4k_spat[2 * p + 1]));
            const __m256i mnp = _mm256_shuffle_epi8(mn, _mm256_load_si256((const __m256i *)r4k_pmn[p]));
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const __m256i ia = _mm256_add_epi32(_mm256_madd_epi16(il[t], sl), _mm256_madd_epi16(ih[t], sh));
                /* [L01 L23 M01 M23] of row 2p + lane */
                __m256i h = _mm256_hadd_epi32(ia, _mm256_madd_epi16(mnp, _mm256_load_si256((const __m256i *)(T + (size_t)t * R4K_TAB))));
                h0[t] = p ? _mm256_hadd_epi32(h0[t], h) : h; /* [r0 L, r0 M, r2 L, r2 M | r1 .., r3 ..] */
            }
        }
        /* dd [d0 d2 m0 m2 | d1 d3 m1 m3] -> [d0 d1 d2 d3], [m0 m1 m2 m3] */
        const __m256 dd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(o + 48)));
        const __m128 dl = _mm256_castps256_ps128(dd), dh = _mm256_extractf128_ps(dd, 1);
        const __m128 dv = _mm_unpacklo_ps(dl, dh), mv = _mm_unpackhi_ps(dl, dh);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const __m128i hl = _mm256_castsi256_si128(h0[t]), hh = _mm256_extracti128_si256(h0[t], 1);
            const __m128i v0 = _mm_unpacklo_epi32(hl, hh), v1 = _mm_unpackhi_epi32(hl, hh); /* [L0 L1 M0 M1], [L2 L3 M2 M3] */
            const __m128i si = _mm_unpacklo_epi64(v0, v1), mi = _mm_unpackhi_epi64(v0, v1);
            const __m128 dxv = _mm_broadcast_ss((const float *)(T + (size_t)t * R4K_TAB + 64));
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
