/* gemm_avx2.c - AVX2 prefill GEMM (n_tok >= 2) for Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K weights against 8-bit activations
 * ("P" layout, cpu_kernels.h), register-blocked GEMM_RR rows x up to GEMM_RT
 * tokens. Q2_K, Q3_K and Q6_K (16 scales per super-block) have their own
 * tile, micro6: see the comment above it.
 *
 * The K dimension is permuted inside each super-block of 256 elements
 * (8 blocks of 32) so that 4-byte lane j of every 32-byte vector belongs to
 * block j: vector v holds elements {2v, 2v+1, 16+2v, 17+2v} of each block.
 * Then the int16 lanes of vpmaddubsw(levels, x) stay within one block and
 * can be summed over the 8 vectors of a super-block without overflow for
 * 4-bit levels (8 * 2 * 15 * 127 < 32767; 5-bit levels: two halves), and
 * one vpmaddwd + cvt + 2 FMA per super-block turn the 8 block sums into
 * floats with the 8 per-block scales at once. Per 32 elements and tile entry
 * that is vpmaddubsw + vpaddw (+ 5/8 of a flush) instead of the usual
 * maddubs + madd + cvt + fma. Q4_0 and Q5_0 are packed as signed levels
 * w = q - 8 (q - 16) against activations stored as u = x + 128 (quant_p8_u),
 * and each int16 sum starts at -128 * (sum of its 16 levels), precomputed at
 * pack time, so it ends at sum x*w exactly: no offset term per block in the
 * flush (one FMA fewer per super-block and tile entry), and Q5_0 needs no
 * half flush (bounds above micro). Q8_0 levels are signed 8-bit: they are
 * widened to int16 (vpmovsxbw as the tile loads them) and multiplied with
 * vpmaddwd by 16-bit activations (layout P16: vector u, lane j = elements
 * u, u+16 of block j), 2 multiplies + 2 adds per 32 elements (vpsignb +
 * vpmaddubsw + vpmaddwd + vpaddd measured slower: sign, maddubs and madd
 * share the two multiply pipes here). The panels hold the 8-bit levels in
 * that order: int16 panels, twice the L2 -> L1 traffic, were 3% slower
 * (bench_kernels Q8_0 1 thread 129-131 vs 134; with every tile reading one
 * L1-resident panel, 136-137: the weights' L2 traffic was ~6%; with these
 * panels, token 0's activations as a memory operand too: 131 vs 134, K
 * chunks of 16 super-blocks: 123-128, the activations past L1, and a 2 x 5
 * Q8_0 tile (10 accumulators, 23 instructions a step for 10 products):
 * 114-130 vs 133-134). Since the
 * activations are 16-bit anyway, they get 16 bits
 * of precision and, for rows without outliers (cpu_avx2_quant_p16), one
 * scale per row instead of one per block: the flush of a tile of such rows
 * is cvt + FMA by the weight scales, the row scale applied once in
 * tile_store (Q8_0 1 thread 126-129 -> 128-131 GFLOP/s, pp512 2 threads
 * ~+2%; activation error vs the float dot 3.3e-3 -> 1.0e-5 of sum |w||x|
 * in test_simd).
 *
 * Weights are packed per (row chunk, K chunk of GEMM_KC_SB super-blocks)
 * into panels of GEMM_RR interleaved rows (cpu_gemm_scratch_bytes) that stay
 * in L2 while every group of GEMM_RT tokens (its activations in L1,
 * prefetched during the previous group) passes over them. The full 2 x 4
 * tile's inner steps are inline asm (GCC's version moved a register per
 * accumulate); partial tiles use the intrinsics loop. Rows of other types,
 * and n_tok < 2, stay in matmul_avx2.c / gemv_avx2.c. Q4_0 and Q8_0 weights
 * re-laid at load as R4 groups (cpu_kernels.h, a->r4) are packed straight
 * from the groups (sb_src): the same panel bytes as from standard rows,
 * without the unpacked copy matmul.c made before.
 *
 * Measured on the AMD Zen 3 this was tuned on (instruction-mix loops): the
 * integer multiplies (vpmaddubsw, vpmaddwd) and the float FMA/mul share two
 * pipes, vcvtdq2ps takes one of them half the time, adds/logic run on four
 * and shifts on the other two. A vpmaddubsw whose result feeds a vpaddw runs
 * at ~5 cycles per 8 pairs instead of 4, so the 2 x 4 tile's inner steps
 * take ~47 cycles per super-block (64 vpmaddubsw) and the flush ~12 more
 * (Q4_0; Q4_K ~20 with its mins FMA). Q8_0 needs 2 multiply-pipe
 * instructions per 32 products whatever the decomposition with 8-bit
 * activations (vpmaddubsw pairs of 8 x 8-bit products can saturate; 4+4-bit
 * halves need two vpmaddubsw; vpsignb + |x| needs a vpmaddwd to widen each
 * vector), i.e. at most 64 flop per cycle and core before the flush.
 * Where Q8_0 stands (measured, one 64-row x 2048 x 512-token work item):
 * the tile's inner steps take ~87 cycles per super-block for 128 vpmaddwd
 * (0.68 per multiply against the pipes' 0.5), the flush ~8, packing and L2
 * traffic ~10 more. A vpmaddwd whose result feeds a vpaddd runs at ~0.61
 * cycles per multiply even in registers (0.50 with independent adds) in
 * every order tried (adds a pair behind, 4 multiplies then 4 adds, pairwise
 * add trees, x as a memory operand: 0.60-0.63): with 2 multiplies + 2 adds
 * per 32 products the four vector pipes are exactly full, so the lost
 * quarter is issue scheduling. Also measured and dropped: a 2 x 6 tile
 * (12 accumulators, one temporary: ~1.0 cycle per multiply in a standalone
 * loop) and prefetching the next panel super-block (slower). Session 8
 * (register-only loops of 8 vpmaddwd + 8 other ops, 8 chains, ideal 4
 * cycles): with vpaddd / vpsubd / vpor / vpblendd / vpmaxsd 4.7-4.8, vpaddw
 * / vpandn / vpcmpeqd 5.1-5.2, vpaddsw / vpavgw / vaddps 6.0-6.1, but with
 * shifts, vpshufd or vpunpckldq 4.0: only the shift/shuffle pipes are safe
 * from the multiplies, and nothing there adds. 4 vpmaddwd + 12 vpaddd ran
 * at 4.14 for 4, so Winograd's inner product was tried for Q8_0 ((w[2i] +
 * x[2i+1]) (w[2i+1] + x[2i]) = the pair's two products + w[2i] w[2i+1] +
 * x[2i] x[2i+1], the last two summed per block at pack / quantization
 * time): 2 vpaddw + 1 vpmaddwd + 1 vpaddd per 32 products, the same op
 * count with a quarter on the multiply pipes. Its 2 x 4 tile ran at 64.7
 * cycles per super-block in registers (ideal 64; this tile's steps ~78),
 * but 80 with its 12 loads per step (this tile 84), 95 vs 98.5 with the
 * flush and weights in L1, level with the weights in L2, and the whole
 * GEMM (bench_kernels Q8_0 4096 x 4096 x 512, 1 thread) went 126 -> 116
 * GFLOP/s; with a software prefetch of the next super-block no better.
 * What did gain: tokens 1..3's activations as the multiply's memory operand
 * (TILE_STEP_XM: 19 instructions a step instead of 22, 9 loads instead of
 * 6; Q8_0 125.4 -> 128.2 GFLOP/s, pp512 2 threads +3-6%): the tile runs
 * at ~4.4 instructions a cycle, with the loads' limit (2 a cycle) close
 * behind, so all four tokens as memory operands (18 instructions, 10
 * loads: 125.3-126.4 vs 124.6-127.4) gain nothing. For the same reason one
 * asm block per super-block (w_sb_asm, u_sb_asm: no loop, address
 * arithmetic or accumulator zeroing between steps) gained Q4_K 3.5%, Q8_0
 * 0.5% (signed-byte displacements instead, pointers advanced every 4
 * steps, 6.1 -> ~4.8 bytes an instruction: within noise, so instruction
 * fetch is not the limit; not kept). The flush's float work is the rest:
 * timing runs with it cut (wrong results) gave Q8_0 +3% without the dw *
 * da multiply and +7% with an integer add instead of cvt, multiply and
 * FMA. Also no gain: a 3 x 4
 * tile with memory operands (0.725 vs 0.655 cycles per multiply in L1),
 * row chunks of 32 / 96 / 128 instead of 64 (pp512 2 threads 287 / 293 /
 * 293 vs 296-300), GEMM_KC_SB 4 / 16 (261 / 277-283 vs 282-289: 16 puts
 * the down projection's panels past L2), the tiles' final reductions
 * deferred and done 32 at a time (283-284 vs 282-286; perf had put 5% of
 * the GEMM's samples on tile_store) and no activation prefetch (287-289
 * either way). Packing
 * (rdtsc, 64 rows x 2048 of Q8_0 / Q4_0, this machine): the Q8_0 int16
 * panels (since int8) and P16 activations (since 16-bit levels) built by
 * scalar stores per block took ~130
 * cycles per row and super-block (P16 quantization ~330 per token and
 * super-block, P8 ~300); as in-lane transposes of 8 blocks in registers
 * (p16_store, p8_store) and with the 8 blocks' scales computed in one
 * vector (q8_blocks8): Q8_0 ~40, Q4_0 ~34 (was ~88), P16 ~140, P8 ~140.
 * (An earlier try with two 8 x 8 dword transposes after widening was no
 * faster than the scalar stores: cross-lane steps; these have none.) */
#include <immintrin.h>
#include <math.h>
#include <string.h>

/* The tiles' speed depends on where their loops fall against 64-byte
 * boundaries (Zen 3, pp512 Q4_K 2 threads: -3% when cpu_avx2_gemm_p, its
 * code unchanged, started 48 bytes further along a line): pinned here
 * instead of left to the size of whatever code comes first. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("align-functions=64", "align-loops=64")
#endif

#include "../../core/dtype.h"
#include "../../core/dtype_blocks.h"
#include "avx2_common.h"
#include "cpu_kernels.h"

#define RR GEMM_RR
#define PSB GEMM_X_SB_BYTES /* bytes of one activation super-block */
#define XSB(bits) ((bits) == 16 ? GEMM_X16_SB_BYTES : GEMM_X_SB_BYTES)
#define XQB(bits) ((bits) == 16 ? 512 : 256) /* activation level bytes per super-block */
/* | ds | one | of the P16 super-block at x (cpu_kernels.h) */
#define X16_TAIL(x) ((const float *)((x) + XQB(16) + 32))
#define QB(bits) 256 /* level bytes per super-block and row (Q8_0: int8, widened in the tile) */
#define VB(bits) ((bits) == 16 ? 16 : 32) /* bytes of one panel vector per row */

/* dwords of a block's 32 bytes in permuted order -> u32 slot v*vstride + j */
AI void perm_store(uint32_t *base, int64_t vstride, int j, __m256i q)
{
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m128i d0 = _mm_unpacklo_epi16(lo, hi), d1 = _mm_unpackhi_epi16(lo, hi);
    uint32_t *p = base + j;
    p[0] = (uint32_t)_mm_cvtsi128_si32(d0);
    p[vstride] = (uint32_t)_mm_extract_epi32(d0, 1);
    p[2 * vstride] = (uint32_t)_mm_extract_epi32(d0, 2);
    p[3 * vstride] = (uint32_t)_mm_extract_epi32(d0, 3);
    p[4 * vstride] = (uint32_t)_mm_cvtsi128_si32(d1);
    p[5 * vstride] = (uint32_t)_mm_extract_epi32(d1, 1);
    p[6 * vstride] = (uint32_t)_mm_extract_epi32(d1, 2);
    p[7 * vstride] = (uint32_t)_mm_extract_epi32(d1, 3);
}

/* ---- activation quantizers (P layout) -------------------------------------- */


/* per 32-element block, scale rounded to f16 as quantize_row_q8_0 */
void cpu_avx2_quant_p8(const float *x, uint8_t *xq, int64_t n)
{
    int64_t nb = n / 32, nsb = (nb + 7) / 8;
    for (int64_t s = 0; s < nsb; s++) {
        uint8_t *sb = xq + s * PSB;
        float *da = (float *)(sb + 256), *c = da + 8;
        for (int j = 0; j < 8; j++) {
            int64_t b = 8 * s + j;
            if (b >= nb) {
                perm_store((uint32_t *)sb, 8, j, _mm256_setzero_si256());
                da[j] = c[j] = 0.0f;
                continue;
            }
            __m256i i0, i1, i2, i3;
            float d = q8_block32(x + 32 * b, &i0, &i1, &i2, &i3);
            int32_t sum = hsum256i(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
            perm_store((uint32_t *)sb, 8, j, q8_pack(i0, i1, i2, i3));
            da[j] = d;
            c[j] = d * (float)sum;
        }
    }
}

/* The P8 levels of one super-block (8 blocks): vector v (of 8), at base +
 * v * vstride bytes, holds in 4-byte lane j elements 2v, 2v+1, 16+2v, 17+2v
 * of block j. In: a[k] = [elements 0..15 of block k | of block k + 4], b[k]
 * the same of elements 16..31 (k < 4). perm_store's dwords, two blocks a
 * vector, then 4 x 4 dword transposes in each 128-bit lane: 24 in-lane
 * shuffles and 8 vector stores for the 64 scalar stores of 8 perm_store. */
AI void p8_store(const __m256i a[4], const __m256i b[4], uint8_t *base, size_t vstride)
{
    __m256i lo[4], hi[4]; /* dwords v = 0..3 resp. 4..7 of blocks k | k + 4 */
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        lo[k] = _mm256_unpacklo_epi16(a[k], b[k]);
        hi[k] = _mm256_unpackhi_epi16(a[k], b[k]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i *d = h ? hi : lo;
        __m256i l01 = _mm256_unpacklo_epi32(d[0], d[1]), l23 = _mm256_unpacklo_epi32(d[2], d[3]);
        __m256i h01 = _mm256_unpackhi_epi32(d[0], d[1]), h23 = _mm256_unpackhi_epi32(d[2], d[3]);
        uint8_t *o = base + (size_t)(4 * h) * vstride;
        _mm256_storeu_si256((__m256i *)o, _mm256_unpacklo_epi64(l01, l23));
        _mm256_storeu_si256((__m256i *)(o + vstride), _mm256_unpackhi_epi64(l01, l23));
        _mm256_storeu_si256((__m256i *)(o + 2 * vstride), _mm256_unpacklo_epi64(h01, h23));
        _mm256_storeu_si256((__m256i *)(o + 3 * vstride), _mm256_unpackhi_epi64(h01, h23));
    }
}

/* |x| maxima of the 8 blocks of 32 of a super-block at x, nblk of them
 * real (the rest 0), in one vector (lane j: block j) */
AI __m256 blocks8_amax(const float *x, int nblk)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), zero = _mm256_setzero_ps();
    __m256 m[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        const float *xb = x + 32 * j;
        m[j] = zero;
        if (j < nblk) {
            __m256 a0 = _mm256_and_ps(_mm256_loadu_ps(xb), abs_mask);
            __m256 a1 = _mm256_and_ps(_mm256_loadu_ps(xb + 8), abs_mask);
            __m256 a2 = _mm256_and_ps(_mm256_loadu_ps(xb + 16), abs_mask);
            __m256 a3 = _mm256_and_ps(_mm256_loadu_ps(xb + 24), abs_mask);
            m[j] = _mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3));
        }
    }
    __m256 s[4]; /* per lane: maxima of elements (0, 1), (2, 3) of blocks 2i, 2i + 1 */
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        s[i] = _mm256_max_ps(_mm256_shuffle_ps(m[2 * i], m[2 * i + 1], 0x88),
                             _mm256_shuffle_ps(m[2 * i], m[2 * i + 1], 0xdd));
    __m256 s03 = _mm256_max_ps(_mm256_shuffle_ps(s[0], s[1], 0x88), _mm256_shuffle_ps(s[0], s[1], 0xdd));
    __m256 s47 = _mm256_max_ps(_mm256_shuffle_ps(s[2], s[3], 0x88), _mm256_shuffle_ps(s[2], s[3], 0xdd));
    return _mm256_max_ps(_mm256_permute2f128_ps(s03, s47, 0x20), _mm256_permute2f128_ps(s03, s47, 0x31));
}

/* q8_block32 for the 8 blocks of a super-block at x, nblk of them real
 * (the rest: levels and scale 0): levels q[j] (32 int8 in order), returns
 * the 8 scales. The 8 maxima are reduced into one vector, so the scales
 * and their inverses take one division each instead of 8; the same IEEE
 * operations per block, so the same bits. */
AI __m256 q8_blocks8(const float *x, int nblk, __m256i q[8])
{
    const __m256 zero = _mm256_setzero_ps();
    __m256 mx = blocks8_amax(x, nblk);
    __m256 d = _mm256_div_ps(mx, _mm256_set1_ps(127.0f));
    d = _mm256_cvtph_ps(_mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT)); /* rounded to f16 */
    __m256 id = _mm256_and_ps(_mm256_cmp_ps(d, zero, _CMP_GT_OQ), _mm256_div_ps(_mm256_set1_ps(1.0f), d));
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        const float *xb = x + 32 * j;
        q[j] = _mm256_setzero_si256();
        if (j < nblk) {
            __m256 vid = _mm256_permutevar8x32_ps(id, _mm256_set1_epi32(j));
            q[j] = q8_pack(q8_round(_mm256_loadu_ps(xb), vid), q8_round(_mm256_loadu_ps(xb + 8), vid),
                           q8_round(_mm256_loadu_ps(xb + 16), vid), q8_round(_mm256_loadu_ps(xb + 24), vid));
        }
    }
    return d;
}

/* a[k], b[k] of p8_store / p16_store from the levels q[j] of 8 blocks */
AI void blocks_to_halves(const __m256i q[8], __m256i a[4], __m256i b[4])
{
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        a[k] = _mm256_permute2x128_si256(q[k], q[k + 4], 0x20);
        b[k] = _mm256_permute2x128_si256(q[k], q[k + 4], 0x31);
    }
}

/* P8 with unsigned levels x + 128 (Q4_0/Q5_0 weights as signed levels, see
 * micro); c unused (the levels' offset term is removed at pack time) */
static void quant_p8_u(const float *x, uint8_t *xq, int64_t n)
{
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    int64_t nb = n / 32, nsb = (nb + 7) / 8;
    for (int64_t s = 0; s < nsb; s++) {
        uint8_t *sb = xq + s * PSB;
        float *da = (float *)(sb + 256), *c = da + 8;
        int nblk = nb - 8 * s < 8 ? (int)(nb - 8 * s) : 8;
        __m256i q[8], a[4], b[4];
        _mm256_storeu_ps(da, q8_blocks8(x + 256 * s, nblk, q));
        _mm256_storeu_ps(c, _mm256_setzero_ps());
        for (int j = 0; j < nblk; j++) /* padding: level 0 (the weights there are 0), da = 0 */
            q[j] = _mm256_xor_si256(q[j], bias);
        blocks_to_halves(q, a, b);
        p8_store(a, b, sb, 32);
    }
}

/* The Q8_0 panel levels of one super-block of a row (8 blocks): vector u
 * (of 16), 16 bytes at base + u * vstride, holds in byte pair j the levels
 * (u, u + 16) of block j, so that vpmovsxbw makes it the P16 layout's
 * vector u (int32 lane j = that int16 pair). In: a[k] = [levels 0..15 of
 * block k | of block k + 4], b[k] the same of levels 16..31 (k < 4). An 8 x
 * 16 transpose of byte pairs in registers: 8 byte interleaves give each
 * block's 16 pairs (block k in the low 128-bit lane, k + 4 in the high
 * one), two rounds of 16/32-bit interleaves gather blocks 0..3 (low lane)
 * and 4..7 (high lane) of two u in one vector, and one qword permute puts
 * each u's 16 bytes together: 40 shuffles, no scalar stores (the 128 of the
 * first version: see the head comment). */
AI void p16_store(const __m256i a[4], const __m256i b[4], uint8_t *base, size_t vstride)
{
    __m256i lo[4], hi[4]; /* pairs u = 0..7 resp. 8..15 of blocks k | k + 4 */
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        lo[k] = _mm256_unpacklo_epi8(a[k], b[k]);
        hi[k] = _mm256_unpackhi_epi8(a[k], b[k]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i *v = h ? hi : lo;
        /* blocks (0, 1 | 4, 5) and (2, 3 | 6, 7): pairs u = 0..3, then 4..7 */
        __m256i l01 = _mm256_unpacklo_epi16(v[0], v[1]), h01 = _mm256_unpackhi_epi16(v[0], v[1]);
        __m256i l23 = _mm256_unpacklo_epi16(v[2], v[3]), h23 = _mm256_unpackhi_epi16(v[2], v[3]);
        /* t[i]: blocks 0..3 | 4..7 of pairs u = 2i (bytes 0..7 of each lane), 2i + 1 (8..15) */
        __m256i t[4] = {_mm256_unpacklo_epi32(l01, l23), _mm256_unpackhi_epi32(l01, l23),
                        _mm256_unpacklo_epi32(h01, h23), _mm256_unpackhi_epi32(h01, h23)};
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            __m256i uv = _mm256_permute4x64_epi64(t[i], 0xd8); /* u = 8h + 2i | u + 1 */
            uint8_t *o = base + (size_t)(8 * h + 2 * i) * vstride;
            _mm_storeu_si128((__m128i *)o, _mm256_castsi256_si128(uv));
            _mm_storeu_si128((__m128i *)(o + vstride), _mm256_extracti128_si256(uv, 1));
        }
    }
}

/* the 8 x 8 int32 r[0..7] transposed: column c (int32 c of every r[j],
 * lane j) stored at base + c * 32 */
AI void tr8x8_store(const __m256i r[8], uint8_t *base)
{
    __m256i t[8], u[8];
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) { /* rows 2k, 2k + 1: ints (0, 1 | 4, 5) and (2, 3 | 6, 7) */
        t[2 * k] = _mm256_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) { /* rows 4h .. 4h + 3 of columns (c | c + 4), c = 0..3 */
        u[4 * h] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
        u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        _mm256_storeu_si256((__m256i *)(base + 32 * c), _mm256_permute2x128_si256(u[c], u[4 + c], 0x20));
        _mm256_storeu_si256((__m256i *)(base + 32 * (c + 4)), _mm256_permute2x128_si256(u[c], u[4 + c], 0x31));
    }
}

/* Activations for Q8_0 weights (P16 layout, cpu_kernels.h): 16-bit levels,
 * one scale ds for the whole row (da = 1) when every block that is not all
 * zero has a maximum of at least 1/256 of the row's: then no element's
 * error, at most ds / 2 = amax / 65534, passes what quantize_row_q8_0's
 * 8-bit levels allow in its block (block max / 254), and most are ~100x
 * smaller. Rows with outliers past that (one element 1000x the rest) get a
 * 16-bit scale per block (da[j] = block max / 32767, ds = 1). The GEMM
 * flushes tiles of one-scale rows without the dw * da multiply (micro).
 * cpu_x16_quantize_ref (matmul.c) is the scalar form, the tests' oracle. */
void cpu_avx2_quant_p16(const float *x, uint8_t *xq, int64_t n)
{
    const int64_t nb = n / 32, nsb = (nb + 7) / 8;
    const __m256 zero = _mm256_setzero_ps(), inf = _mm256_set1_ps(INFINITY);
    __m256 vmax = zero, vmin = inf; /* max of all block maxima, min of the non-zero ones */
    for (int64_t s = 0; s < nsb; s++) { /* the block maxima wait in the da slots */
        __m256 m = blocks8_amax(x + 256 * s, nb - 8 * s < 8 ? (int)(nb - 8 * s) : 8);
        _mm256_storeu_ps((float *)(xq + s * GEMM_X16_SB_BYTES + 512), m);
        vmax = _mm256_max_ps(vmax, m);
        vmin = _mm256_min_ps(vmin, _mm256_blendv_ps(m, inf, _mm256_cmp_ps(m, zero, _CMP_EQ_OQ)));
    }
    __m128 l = _mm_min_ps(_mm256_castps256_ps128(vmin), _mm256_extractf128_ps(vmin, 1));
    l = _mm_min_ps(l, _mm_movehl_ps(l, l));
    float amax = hmax256(vmax), bmin = _mm_cvtss_f32(_mm_min_ss(l, _mm_movehdup_ps(l)));
    const int one = bmin * 256.0f >= amax; /* no non-zero block: bmin = inf */
    const float ds = one ? amax / 32767.0f : 1.0f;
    const __m256 vid1 = _mm256_set1_ps(ds > 0.0f ? 1.0f / ds : 0.0f);
    for (int64_t s = 0; s < nsb; s++) {
        const float *xs = x + 256 * s;
        uint8_t *sb = xq + s * GEMM_X16_SB_BYTES;
        float *da = (float *)(sb + 512), *c = da + 8;
        int nblk = nb - 8 * s < 8 ? (int)(nb - 8 * s) : 8;
        __m256 vda = _mm256_set1_ps(1.0f), vid = vid1;
        if (!one) {
            vda = _mm256_div_ps(_mm256_loadu_ps(da), _mm256_set1_ps(32767.0f));
            vid = _mm256_and_ps(_mm256_cmp_ps(vda, zero, _CMP_GT_OQ), _mm256_div_ps(_mm256_set1_ps(1.0f), vda));
        }
        /* block j: int32 u = its levels (u, u + 16) for u = 0..7 (lo[j]) and 8..15 (hi[j]) */
        __m256i lo[8], hi[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            lo[j] = hi[j] = _mm256_setzero_si256();
            if (j < nblk) {
                const float *xb = xs + 32 * j;
                __m256 v = _mm256_permutevar8x32_ps(vid, _mm256_set1_epi32(j));
                /* elements (0..3, 8..11 | 4..7, 12..15) and the same + 16 */
                __m256i p = _mm256_packs_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb), v)),
                                               _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 8), v)));
                __m256i q = _mm256_packs_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 16), v)),
                                               _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 24), v)));
                lo[j] = _mm256_unpacklo_epi16(p, q);
                hi[j] = _mm256_unpackhi_epi16(p, q);
            }
        }
        tr8x8_store(lo, sb);
        tr8x8_store(hi, sb + 256);
        _mm256_storeu_ps(da, vda);
        _mm256_storeu_ps(c, _mm256_setr_ps(ds, one ? 1.0f : 0.0f, 0, 0, 0, 0, 0, 0));
    }
}

/* one scale per 256 elements as quantize_row_q8_k (n % 256 == 0); flip:
 * levels stored as x + 128 (unsigned 1..255, the Q6_K GEMM's first
 * vpmaddubsw operand), the same bytes otherwise */
AI void quant_p8k_any(const float *x, uint8_t *xq, int64_t n, int flip)
{
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    int64_t nsb = n / 256;
    for (int64_t s = 0; s < nsb; s++) {
        const float *xs = x + 256 * s;
        uint8_t *sb = xq + s * PSB;
        float *da = (float *)(sb + 256), *c = da + 8;
        __m256 vid;
        float d = q8k_scale(xs, &vid);
        for (int j = 0; j < 8; j++) {
            __m256i i[4];
            q8_round32(xs + 32 * j, vid, i);
            int32_t sum = hsum256i(_mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3])));
            __m256i q = q8_pack(i[0], i[1], i[2], i[3]);
            perm_store((uint32_t *)sb, 8, j, flip == 1 ? _mm256_xor_si256(q, bias) : q);
            da[j] = d;
            if (flip == 2) { /* int16 sums of elements 0..15 and 16..31 of block j */
                int16_t *bs = (int16_t *)c;
                bs[2 * j] = (int16_t)hsum256i(_mm256_add_epi32(i[0], i[1]));
                bs[2 * j + 1] = (int16_t)hsum256i(_mm256_add_epi32(i[2], i[3]));
            } else {
                c[j] = d * (float)sum;
            }
        }
    }
}

void cpu_avx2_quant_p8k(const float *x, uint8_t *xq, int64_t n) { quant_p8k_any(x, xq, n, 0); }

/* P8K with unsigned levels x + 128 (Q6_K weights, see micro6) */
static void quant_p8k_u(const float *x, uint8_t *xq, int64_t n) { quant_p8k_any(x, xq, n, 1); }

/* P8K with the c area holding int16 sums of the 16 groups of 16 (group g
 * at int16 g; |.| <= 16*127 = 2032) instead of c[8] (Q2_K, see micro6) */
static void quant_p8k_b(const float *x, uint8_t *xq, int64_t n) { quant_p8k_any(x, xq, n, 2); }

/* ---- weight packing ------------------------------------------------------------ */

/* Panel of one row group: per super-block s, 8 vectors x RR rows x 32 bytes
 * (vector v of row r at (v*RR + r)*32), then per row dw[8], mw[8] floats:
 * row dot = sum_j dw[j]*da[j]*sum_k(q*xq) + mw[j]*c[j]. Q2_K, Q3_K and
 * Q6_K put other 64-byte row tails there (scales, d; see micro6). */
#define PANB(bits) (RR * (QB(bits) + 64)) /* panel bytes per super-block */

static void k4_decode(const uint8_t *s, int sc[8], int mn[8])
{
    for (int g = 0; g < 4; g++) {
        sc[g] = s[g] & 63;
        mn[g] = s[g + 4] & 63;
        sc[g + 4] = (s[g + 8] & 15) | ((s[g] >> 6) << 4);
        mn[g + 4] = (s[g + 8] >> 4) | ((s[g + 4] >> 6) << 4);
    }
}

/* Where blocks 8s..8s+7 of a Q4_0 / Q8_0 row lie: block j's first 16 level
 * bytes at q + (j / 2) * pair + (j % 2) * qodd, its f16 scale at d + (j / 2)
 * * pair + (j % 2) * dodd, its level bytes 16..31 (Q8_0) hstep after the
 * first 16. Standard rows and R4 groups alike are affine in j, so the
 * packers' pointers are a few adds in registers. */
typedef struct sb_map {
    const uint8_t *q, *d;
    size_t pair, qodd, dodd, hstep;
} sb_map;

AI const uint8_t *sb_q(const sb_map *m, int j)
{
    return m->q + (size_t)(j / 2) * m->pair + (size_t)(j % 2) * m->qodd;
}
AI uint16_t sb_d(const sb_map *m, int j)
{
    return (uint16_t)ld_u16(m->d + (size_t)(j / 2) * m->pair + (size_t)(j % 2) * m->dodd);
}

/* The map of super-block s (nb blocks a row) of w: the standard row (gr <
 * 0) or the R4 group holding it as row gr. A super-block that is not whole
 * (the last one, nb % 8 != 0) is copied as standard blocks into tmp (8 *
 * 34 bytes), zeros past nb (the padding; also an odd last block, the R4
 * record of one block, lands there). */
AI sb_map sb_src(int type, const uint8_t *w, int gr, int64_t s, int64_t nb, uint8_t *tmp)
{
    const size_t bs = type == DT_Q8_0 ? 34 : 18;
    sb_map m;
    if (8 * s + 8 > nb) {
        memset(tmp, 0, 8 * bs);
        for (int64_t b = 8 * s; b < nb; b++) {
            uint8_t *t = tmp + (size_t)(b - 8 * s) * bs;
            if (gr < 0)
                memcpy(t, w + (size_t)b * bs, bs);
            else
                cpu_r4_block_copy(w, gr, b, nb, bs, t);
        }
        w = tmp, gr = -1, s = 0;
    }
    if (gr < 0) {
        m.d = w + (size_t)(8 * s) * bs, m.q = m.d + 2;
        m.pair = 2 * bs, m.qodd = m.dodd = bs, m.hstep = 16;
    } else { /* 4 whole records of the group: | d(2i, rows 0..3) | d(2i + 1, ..) | rows' levels | */
        const uint8_t *rec = w + (size_t)(4 * s) * 8 * bs;
        m.d = rec + 2 * (size_t)gr, m.q = rec + 16 + 2 * (bs - 2) * (size_t)gr;
        m.pair = 8 * bs, m.qodd = 16, m.dodd = 8, m.hstep = 32;
    }
    return m;
}

/* super-block s of weight row w (type; gr: as sb_src) -> row r of panel super-block p */
static void pack_sb(int type, const uint8_t *w, int gr, int64_t n, int64_t s, uint8_t *p, int r)
{
    uint32_t *q = (uint32_t *)(p + r * 32);
    const int64_t vs = RR * 8;
    if (type == DT_Q8_0) { /* vectors of 16 bytes, widened to int16 in the tile */
        float *dw = (float *)(p + RR * 256 + r * 64), *mw = dw + 8;
        uint8_t tmp[8 * 34];
        const sb_map m = sb_src(type, w, gr, s, n / 32, tmp);
        __m256i a[4], b[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) { /* blocks k and k + 4 in the two 128-bit lanes */
            const uint8_t *q0 = sb_q(&m, k), *q1 = sb_q(&m, k + 4);
            a[k] = _mm256_loadu2_m128i((const __m128i *)q1, (const __m128i *)q0);
            b[k] = _mm256_loadu2_m128i((const __m128i *)(q1 + m.hstep), (const __m128i *)(q0 + m.hstep));
        }
        p16_store(a, b, p + r * 16, RR * 16);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            dw[j] = h2f(sb_d(&m, j)), mw[j] = 0.0f;
        return;
    }
    if (type == DT_Q2_K) { /* levels 0..3; tail | sc int16[16] | mn int8[16] | d | dmin |, see micro6 */
        const dt_block_q2_k *b = (const dt_block_q2_k *)w + s;
        uint8_t *tail = p + RR * 256 + r * 64;
        const __m256i m3 = _mm256_set1_epi8(3);
        for (int j = 0; j < 8; j++) { /* block j: qs[32(j/4) + l] >> 2(j%4) */
            __m256i lv = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (j / 4)));
            perm_store(q, vs, j, _mm256_and_si256(_mm256_srli_epi16(lv, 2 * (j % 4)), m3));
        }
        __m128i sb = _mm_loadu_si128((const __m128i *)b->scales);
        __m128i sc = _mm_and_si128(sb, _mm_set1_epi8(15));
        __m128i mn = _mm_and_si128(_mm_srli_epi16(sb, 4), _mm_set1_epi8(15));
        _mm256_storeu_si256((__m256i *)tail, _mm256_cvtepu8_epi16(sc));
        _mm_storeu_si128((__m128i *)(tail + 32), mn);
        float d = h2f(b->d), dmin = h2f(b->dmin);
        memcpy(tail + 48, &d, 4);
        memcpy(tail + 52, &dmin, 4);
        memset(tail + 56, 0, 8);
        return;
    }
    if (type == DT_Q3_K) { /* signed levels -4..3; tail | start int16[16] | sc int8[16] | d |, see micro6 */
        const dt_block_q3_k *b = (const dt_block_q3_k *)w + s;
        uint8_t *tail = p + RR * 256 + r * 64;
        int16_t *start = (int16_t *)tail;
        int8_t sc[16];
        for (int g = 0; g < 16; g++)
            sc[g] = (int8_t)((((b->scales[g % 8] >> (4 * (g / 8))) & 15) |
                              (((b->scales[8 + g % 4] >> (2 * (g / 4))) & 3) << 4)) - 32);
        const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), off = _mm256_set1_epi8(4);
        const __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
        for (int j = 0; j < 8; j++) { /* block j: low 2 bits qs[32(j/4) + l] >> 2(j%4), high hmask[l] >> j */
            __m256i lo = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (j / 4)));
            lo = _mm256_and_si256(_mm256_srli_epi16(lo, 2 * (j % 4)), m3);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hm, j), one);
            __m256i lv = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2)); /* q + 4 in 0..7 */
            __m256i sad = _mm256_sad_epu8(lv, _mm256_setzero_si256());
            int64_t s4[4];
            _mm256_storeu_si256((__m256i *)s4, sad);
            /* -128 * (sum of the signed levels of sub-blocks 2j, 2j+1), mod 2^16 */
            start[2 * j] = (int16_t)(uint16_t)(-128 * (int32_t)(s4[0] + s4[1] - 16 * 4));
            start[2 * j + 1] = (int16_t)(uint16_t)(-128 * (int32_t)(s4[2] + s4[3] - 16 * 4));
            perm_store(q, vs, j, _mm256_sub_epi8(lv, off));
        }
        float d = h2f(b->d);
        memset(tail + 32, 0, 32);
        memcpy(tail + 32, sc, 16);
        memcpy(tail + 48, &d, 4);
        return;
    }
    if (type == DT_Q6_K) { /* signed levels q - 32; tail | corr int32[8] | sc int8[16] | d |, see micro6 */
        const dt_block_q6_k *b = (const dt_block_q6_k *)w + s;
        uint8_t *tail = p + RR * 256 + r * 64;
        int32_t *corr = (int32_t *)tail;
        const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
        for (int j = 0; j < 8; j++) { /* block j: h = j/4, k = j%4 (dtype_blocks.h) */
            int h = j / 4, k = j % 4;
            __m256i lo = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (k % 2)));
            __m256i hi = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            lo = _mm256_and_si256(_mm256_srli_epi16(lo, 4 * (k / 2)), m4);
            hi = _mm256_and_si256(_mm256_srli_epi16(hi, 2 * k), m3);
            __m256i lv = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)); /* 0..63 */
            /* sums of the unsigned levels of elements 0..15 (qwords 0, 1) and 16..31 */
            __m256i sad = _mm256_sad_epu8(lv, _mm256_setzero_si256());
            int64_t s4[4];
            _mm256_storeu_si256((__m256i *)s4, sad);
            corr[j] = -128 * (b->scales[2 * j] * (int32_t)(s4[0] + s4[1] - 16 * 32) +
                              b->scales[2 * j + 1] * (int32_t)(s4[2] + s4[3] - 16 * 32));
            perm_store(q, vs, j, _mm256_sub_epi8(lv, off));
        }
        float d = h2f(b->d);
        memset(tail + 32, 0, 32);
        memcpy(tail + 32, b->scales, 16);
        memcpy(tail + 48, &d, 4);
        return;
    }
    float *dw = (float *)(p + RR * 256 + r * 64), *mw = dw + 8;
    if (type == DT_Q4_K || type == DT_Q5_K) {
        const uint8_t *scales, *qs, *qh = NULL;
        uint16_t d16, dmin16;
        if (type == DT_Q4_K) {
            const dt_block_q4_k *b = (const dt_block_q4_k *)w + s;
            scales = b->scales, qs = b->qs, d16 = b->d, dmin16 = b->dmin;
        } else {
            const dt_block_q5_k *b = (const dt_block_q5_k *)w + s;
            scales = b->scales, qs = b->qs, qh = b->qh, d16 = b->d, dmin16 = b->dmin;
        }
        int sc[8], mn[8];
        k4_decode(scales, sc, mn);
        float d = h2f(d16), dmin = h2f(dmin16);
        const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
        __m256i hv = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
        for (int i = 0; i < 4; i++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * i));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if (qh) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hv, one), 4));
                hv = _mm256_srli_epi16(hv, 1);
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(hv, one), 4));
                hv = _mm256_srli_epi16(hv, 1);
            }
            perm_store(q, vs, 2 * i, lo);
            perm_store(q, vs, 2 * i + 1, hi);
        }
        for (int j = 0; j < 8; j++)
            dw[j] = d * (float)sc[j], mw[j] = -dmin * (float)mn[j];
        return;
    }
    int64_t nb = n / 32;
    if (type == DT_Q4_0 && 8 * s + 8 <= nb) { /* a whole super-block: transposed in registers */
        uint8_t tmp[8 * 18];
        const sb_map m = sb_src(type, w, gr, s, nb, tmp);
        const __m256i m4 = _mm256_set1_epi8(15), eight = _mm256_set1_epi8(8), zero = _mm256_setzero_si256();
        __m256i lv[4], hv[4], sums[4]; /* signed levels of elements 0..15, 16..31; their sums */
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) { /* blocks k | k + 4 in the two 128-bit lanes */
            __m256i a = _mm256_loadu2_m128i((const __m128i *)sb_q(&m, k + 4), (const __m128i *)sb_q(&m, k));
            __m256i lo = _mm256_and_si256(a, m4), hi = _mm256_and_si256(_mm256_srli_epi16(a, 4), m4);
            /* sums of the levels of elements 0..15 and 16..31: [lo, hi, lo, lo] per lane */
            __m256i sl = _mm256_sad_epu8(lo, zero), sh = _mm256_sad_epu8(hi, zero);
            sums[k] = _mm256_shuffle_epi32(
                _mm256_add_epi64(_mm256_unpacklo_epi64(sl, sh), _mm256_unpackhi_epi64(sl, sh)), 0x08);
            lv[k] = _mm256_sub_epi8(lo, eight), hv[k] = _mm256_sub_epi8(hi, eight);
        }
        /* init[2j], init[2j + 1] = -128 * (sum - 16 * 8) as in the loop below */
        __m256i s16 = _mm256_packs_epi32(_mm256_unpacklo_epi64(sums[0], sums[1]),
                                         _mm256_unpacklo_epi64(sums[2], sums[3]));
        s16 = _mm256_slli_epi16(_mm256_sub_epi16(_mm256_set1_epi16(128), s16), 7);
        _mm256_storeu_si256((__m256i *)mw, s16);
        p8_store(lv, hv, (uint8_t *)q, RR * 32);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            dw[j] = h2f(sb_d(&m, j));
        return;
    }
    if (type == DT_Q4_0 || type == DT_Q5_0) { /* signed levels, see micro (bits 8) */
        int16_t *init = (int16_t *)mw;
        uint8_t tmp[8 * 18];
        sb_map m = {0};
        if (type == DT_Q4_0)
            m = sb_src(type, w, gr, s, nb, tmp);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            int64_t b = 8 * s + j;
            __m256i lv = _mm256_setzero_si256();
            int off = 0;
            float d = 0.0f;
            if (b < nb && type == DT_Q4_0) {
                lv = nibbles16(sb_q(&m, j)), off = 8, d = h2f(sb_d(&m, j));
            } else if (b < nb) {
                const dt_block_q5_0 *bk = (const dt_block_q5_0 *)w + b;
                uint32_t qh;
                memcpy(&qh, bk->qh, 4);
                lv = _mm256_or_si256(nibbles16(bk->qs), bits_to_0x10(qh)), off = 16, d = h2f(bk->d);
            }
            /* -128 * (sum of the signed levels of elements 0..15, 16..31), mod 2^16 */
            int64_t s4[4];
            _mm256_storeu_si256((__m256i *)s4, _mm256_sad_epu8(lv, _mm256_setzero_si256()));
            init[2 * j] = (int16_t)(uint16_t)(-128 * (int32_t)(s4[0] + s4[1] - 16 * off));
            init[2 * j + 1] = (int16_t)(uint16_t)(-128 * (int32_t)(s4[2] + s4[3] - 16 * off));
            perm_store(q, vs, j, _mm256_sub_epi8(lv, _mm256_set1_epi8((char)off)));
            dw[j] = d;
        }
        return;
    }
    for (int j = 0; j < 8; j++) {
        int64_t b = 8 * s + j;
        __m256i lv = _mm256_setzero_si256();
        float d = 0.0f, m = 0.0f;
        if (b < nb) {
            switch (type) {
            case DT_Q4_1: {
                const dt_block_q4_1 *bk = (const dt_block_q4_1 *)w + b;
                lv = nibbles16(bk->qs);
                d = h2f(bk->d), m = h2f(bk->m);
                break;
            }
            case DT_Q5_1: {
                const dt_block_q5_1 *bk = (const dt_block_q5_1 *)w + b;
                uint32_t qh;
                memcpy(&qh, bk->qh, 4);
                lv = _mm256_or_si256(nibbles16(bk->qs), bits_to_0x10(qh));
                d = h2f(bk->d), m = h2f(bk->m);
                break;
            }
            }
        }
        perm_store(q, vs, j, lv);
        dw[j] = d, mw[j] = m;
    }
}

#define R4_PF_AHEAD 4

/* rows [0, rows) of w, super-blocks [s0, s0 + nsc) -> panels at p (row
 * groups of RR, the last one padded with zero rows). r4: w holds Q4_0 /
 * Q8_0 R4 groups (rows a multiple of 4: no padding), read in place. */
__attribute__((noinline)) static void pack_panels(int type, const uint8_t *w, size_t w_stride, int64_t rows, int64_t n,
                        int64_t s0, int64_t nsc, uint8_t *p, int r4)
{
    const int64_t psb = PANB(4), qb = 256, vb = type == DT_Q8_0 ? VB(16) : VB(4);
    if (r4) {
        /* step i: super-block s0 + i % nsc of group i / nsc, its 4 rows (the
         * group's records in memory order). The weights come from DRAM
         * here (no earlier pass over them), so each step prefetches the
         * bytes of the step R4_PF_AHEAD later (~4 rows x 40 cycles a step). */
        const int64_t n_steps = rows / 4 * nsc, sbb = type == DT_Q8_0 ? 32 * 34 : 32 * 18;
        for (int64_t i = -R4_PF_AHEAD; i < n_steps; i++) {
            int64_t ip = i + R4_PF_AHEAD;
            if (ip < n_steps) {
                const uint8_t *src = w + ip / nsc * 4 * w_stride + (s0 + ip % nsc) * sbb;
                for (int64_t l = 0; l < sbb; l += 64)
                    _mm_prefetch((const char *)(src + l), _MM_HINT_T0);
            }
            if (i < 0)
                continue;
            int64_t g = i / nsc * 4, s = i % nsc;
            for (int r = 0; r < 4; r++) {
                uint8_t *ps = p + ((g + r) / RR * nsc + s) * psb;
                pack_sb(type, w + g * w_stride, r, n, s0 + s, ps, (int)((g + r) % RR));
            }
        }
        return;
    }
    for (int64_t g = 0; g < rows; g += RR) {
        uint8_t *pg = p + (g / RR) * nsc * psb;
        for (int r = 0; r < RR; r++) {
            if (g + r < rows) {
                const uint8_t *wr = w + (g + r) * w_stride;
                for (int64_t s = 0; s < nsc; s++)
                    pack_sb(type, wr, -1, n, s0 + s, pg + s * psb, r);
            } else {
                for (int64_t s = 0; s < nsc; s++) {
                    uint8_t *ps = pg + s * psb;
                    for (int v = 0; v < qb / vb; v++)
                        memset(ps + (v * RR + r) * vb, 0, vb);
                    memset(ps + RR * qb + r * 64, 0, 64);
                }
            }
        }
    }
}

/* y[t*ldy + r] = (acc_y ? y : 0) + ds[t] * (sum of the 8 lanes of
 * facc[r][t]), r < nr (ds NULL: no factor). The full 2 x 4 tile reduces its
 * 8 vectors together with the same adds in the same order as hsum256
 * (halves, then lanes 0+2 / 1+3, then the two), so the results are
 * bit-identical to the one-vector-at-a-time path. */
AI void tile_store(float facc[RR][GEMM_RT][8], float *y, int64_t ldy, int nr, int acc_y, const int RT,
                   const float *ds)
{
#if GEMM_RR == 2 && GEMM_RT == 4
    if (RT == 4 && nr == 2) {
        __m256 s[4];
#pragma GCC unroll 4
        for (int t = 0; t < 4; t++) { /* lo half: row 0's lo+hi, hi half: row 1's */
            __m256 a = _mm256_load_ps(facc[0][t]), b = _mm256_load_ps(facc[1][t]);
            s[t] = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
        }
        /* per half: lanes (0+2, 1+3) of token t, then of token t+1 */
        __m256 t01 = _mm256_add_ps(_mm256_shuffle_ps(s[0], s[1], 0x44), _mm256_shuffle_ps(s[0], s[1], 0xee));
        __m256 t23 = _mm256_add_ps(_mm256_shuffle_ps(s[2], s[3], 0x44), _mm256_shuffle_ps(s[2], s[3], 0xee));
        /* lo half: row 0, tokens 0..3; hi half: row 1 */
        __m256 r = _mm256_add_ps(_mm256_shuffle_ps(t01, t23, 0x88), _mm256_shuffle_ps(t01, t23, 0xdd));
        __m128 r0 = _mm256_castps256_ps128(r), r1 = _mm256_extractf128_ps(r, 1);
        __m128 p01 = _mm_unpacklo_ps(r0, r1), p23 = _mm_unpackhi_ps(r0, r1); /* (r0,r1) of t0, t1 | t2, t3 */
        float *y0 = y, *y1 = y + ldy, *y2 = y + 2 * ldy, *y3 = y + 3 * ldy;
        if (ds) {
            p01 = _mm_mul_ps(p01, _mm_setr_ps(ds[0], ds[0], ds[1], ds[1]));
            p23 = _mm_mul_ps(p23, _mm_setr_ps(ds[2], ds[2], ds[3], ds[3]));
        }
        if (acc_y) {
            p01 = _mm_add_ps(p01, _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)y0), (const __m64 *)y1));
            p23 = _mm_add_ps(p23, _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)y2), (const __m64 *)y3));
        }
        _mm_storel_pi((__m64 *)y0, p01);
        _mm_storeh_pi((__m64 *)y1, p01);
        _mm_storel_pi((__m64 *)y2, p23);
        _mm_storeh_pi((__m64 *)y3, p23);
        return;
    }
#endif
#pragma GCC unroll 4
    for (int t = 0; t < RT; t++)
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++)
            if (r < nr) {
                float v = hsum256(_mm256_load_ps(facc[r][t]));
                if (ds)
                    v *= ds[t];
                y[t * ldy + r] = acc_y ? y[t * ldy + r] + v : v;
            }
}

/* ---- micro-kernels ---------------------------------------------------------- */

/* ---- hand-scheduled inner steps for the full GEMM_RR x GEMM_RT = 2 x 4 tile ----
 * (GCC keeps the 8 accumulators but adds a register move per add in loops) */
#if GEMM_RR == 2 && GEMM_RT == 4
/* One inner step of the 2 x 4 tile: the two rows' vectors at byte offsets
 * WO0/WO1 of the panel, token k's vector at XO of x_k; each product (MUL
 * with operands P0 for row 0 and P1 for row 1, AT&T order) is added into
 * that row and token's accumulator (ADD). */
#define TILE_STEP(MUL, ADD, P0, P1, WO0, WO1, XO)                                                  \
    "vmovdqa " WO0 "(%[w]), %[w0]\n\t"                                                             \
    "vmovdqa " WO1 "(%[w]), %[w1]\n\t"                                                             \
    "vmovdqa " XO "(%[x0]), %[xv]\n\t"                                                             \
    MUL " " P0 ", %[t0]\n\t"                                                                       \
    MUL " " P1 ", %[t1]\n\t"                                                                       \
    "vmovdqa " XO "(%[x1]), %[xv]\n\t"                                                             \
    ADD " %[t0], %[a00], %[a00]\n\t"                                                               \
    ADD " %[t1], %[a10], %[a10]\n\t"                                                               \
    MUL " " P0 ", %[t0]\n\t"                                                                       \
    MUL " " P1 ", %[t1]\n\t"                                                                       \
    "vmovdqa " XO "(%[x2]), %[xv]\n\t"                                                             \
    ADD " %[t0], %[a01], %[a01]\n\t"                                                               \
    ADD " %[t1], %[a11], %[a11]\n\t"                                                               \
    MUL " " P0 ", %[t0]\n\t"                                                                       \
    MUL " " P1 ", %[t1]\n\t"                                                                       \
    "vmovdqa " XO "(%[x3]), %[xv]\n\t"                                                             \
    ADD " %[t0], %[a02], %[a02]\n\t"                                                               \
    ADD " %[t1], %[a12], %[a12]\n\t"                                                               \
    MUL " " P0 ", %[t0]\n\t"                                                                       \
    MUL " " P1 ", %[t1]\n\t"                                                                       \
    ADD " %[t0], %[a03], %[a03]\n\t"                                                               \
    ADD " %[t1], %[a13], %[a13]\n\t"

/* TILE_STEP with tokens 1..3's vectors as MUL's memory operand (x must be
 * the operand that may come from memory: vpmaddwd, or vpmaddubsw with
 * signed x), token 0's loaded once for both rows: 19 instructions instead
 * of 22 for 9 loads instead of 6 (both fused and loaded forms measured
 * slower: ~4.4 instructions or 2 loads a cycle are the limits here) */
#define TILE_XM_TOKEN(MUL, ADD, XO, XK, A0, A1)                                                    \
    MUL " " XO "(%[" XK "]), %[w0], %[t0]\n\t"                                                     \
    MUL " " XO "(%[" XK "]), %[w1], %[t1]\n\t"                                                     \
    ADD " %[t0], %[" A0 "], %[" A0 "]\n\t"                                                          \
    ADD " %[t1], %[" A1 "], %[" A1 "]\n\t"
#define TILE_STEP_XM_L(LD, MUL, ADD, WO0, WO1, XO)                                                \
    LD " " WO0 "(%[w]), %[w0]\n\t"                                                                 \
    LD " " WO1 "(%[w]), %[w1]\n\t"                                                                 \
    "vmovdqa " XO "(%[x0]), %[xv]\n\t"                                                             \
    MUL " %[xv], %[w0], %[t0]\n\t"                                                                 \
    MUL " %[xv], %[w1], %[t1]\n\t"                                                                 \
    ADD " %[t0], %[a00], %[a00]\n\t"                                                               \
    ADD " %[t1], %[a10], %[a10]\n\t"                                                               \
    TILE_XM_TOKEN(MUL, ADD, XO, "x1", "a01", "a11") TILE_XM_TOKEN(MUL, ADD, XO, "x2", "a02", "a12")  \
    TILE_XM_TOKEN(MUL, ADD, XO, "x3", "a03", "a13")
#define TILE_STEP_XM(MUL, ADD, WO0, WO1, XO) TILE_STEP_XM_L("vmovdqa", MUL, ADD, WO0, WO1, XO)

/* TILE_STEP_XM for the first vector of a super-block: the products go
 * straight into the accumulators (no zeroed start, 8 adds fewer) */
#define TILE_STEP0_XM(LD, MUL, WO0, WO1, XO)                                                       \
    LD " " WO0 "(%[w]), %[w0]\n\t"                                                                 \
    LD " " WO1 "(%[w]), %[w1]\n\t"                                                                 \
    "vmovdqa " XO "(%[x0]), %[xv]\n\t"                                                             \
    MUL " %[xv], %[w0], %[a00]\n\t"                                                                \
    MUL " %[xv], %[w1], %[a10]\n\t"                                                                \
    MUL " " XO "(%[x1]), %[w0], %[a01]\n\t"                                                        \
    MUL " " XO "(%[x1]), %[w1], %[a11]\n\t"                                                        \
    MUL " " XO "(%[x2]), %[w0], %[a02]\n\t"                                                        \
    MUL " " XO "(%[x2]), %[w1], %[a12]\n\t"                                                        \
    MUL " " XO "(%[x3]), %[w0], %[a03]\n\t"                                                        \
    MUL " " XO "(%[x3]), %[w1], %[a13]\n\t"

/* the operands every tile asm block names, the accumulators with
 * constraint ACC: "+x" (read and written), or "=&x" for blocks whose first
 * step writes them (TILE_STEP0_XM; no start value, and GCC no zeroing) */
#define TILE_ASM_OPERANDS_C(ACC)                                                                   \
    : [a00] ACC(ai[0][0]), [a01] ACC(ai[0][1]), [a02] ACC(ai[0][2]), [a03] ACC(ai[0][3]),         \
      [a10] ACC(ai[1][0]), [a11] ACC(ai[1][1]), [a12] ACC(ai[1][2]), [a13] ACC(ai[1][3]),         \
      [w0] "=&x"(w0), [w1] "=&x"(w1), [xv] "=&x"(xv), [t0] "=&x"(t0), [t1] "=&x"(t1)              \
    : [w] "r"(w), [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3)                          \
    : "memory"
#define TILE_ASM_OPERANDS TILE_ASM_OPERANDS_C("+x")
#define TILE_ASM_OPERANDS_W TILE_ASM_OPERANDS_C("=&x")

/* unsigned 4/5-bit levels x signed activations, int16 sums */
#define U_STEP(WO0, WO1, XO) TILE_STEP_XM("vpmaddubsw", "vpaddw", WO0, WO1, XO)
/* Q8_0: 8-bit levels widened to int16 as they are loaded (half the panel
 * bytes), vpmaddwd pairs straight to int32 */
#define W_STEP(WO0, WO1, XO) TILE_STEP_XM_L("vpmovsxbw", "vpmaddwd", "vpaddd", WO0, WO1, XO)
/* Q3_K, Q4_0, Q5_0: the vpmaddubsw operands swapped (x unsigned, w signed);
 * int16 sums over all 8 vectors of a super-block */
#define S_STEP(WO0, WO1, XO)                                                                       \
    TILE_STEP("vpmaddubsw", "vpaddw", "%[w0], %[xv]", "%[w1], %[xv]", WO0, WO1, XO)

/* 4 vectors (w: panel at vector v0, xk: token k at vector v0), int16 sums
 * (bits 5: two of these around the half flush) */
AI void u_steps4(const uint8_t *w, const uint8_t *x0, const uint8_t *x1, const uint8_t *x2,
                 const uint8_t *x3, __m256i ai[RR][GEMM_RT])
{
    __m256i w0, w1, xv, t0, t1;
    __asm__(U_STEP("0", "32", "0") U_STEP("64", "96", "32") U_STEP("128", "160", "64")
                U_STEP("192", "224", "96") TILE_ASM_OPERANDS);
}

/* Q8_0: the 16 vectors of a super-block in one block (constant offsets: no
 * loop or address arithmetic between the steps) */
AI void w_sb_asm(const uint8_t *w, const uint8_t *x0, const uint8_t *x1, const uint8_t *x2,
                 const uint8_t *x3, __m256i ai[RR][GEMM_RT])
{
    __m256i w0, w1, xv, t0, t1;
    __asm__(TILE_STEP0_XM("vpmovsxbw", "vpmaddwd", "0", "16", "0") W_STEP("32", "48", "32") W_STEP("64", "80", "64")
                W_STEP("96", "112", "96") W_STEP("128", "144", "128") W_STEP("160", "176", "160")
                    W_STEP("192", "208", "192") W_STEP("224", "240", "224") W_STEP("256", "272", "256")
                        W_STEP("288", "304", "288") W_STEP("320", "336", "320") W_STEP("352", "368", "352")
                            W_STEP("384", "400", "384") W_STEP("416", "432", "416")
                                W_STEP("448", "464", "448") W_STEP("480", "496", "480") TILE_ASM_OPERANDS_W);
}

/* unsigned 4-bit levels (bits 4; Q2_K's 2-bit ones): the 8 vectors of a
 * super-block, int16 sums from zero */
AI void u_sb_asm(const uint8_t *w, const uint8_t *x0, const uint8_t *x1, const uint8_t *x2,
                 const uint8_t *x3, __m256i ai[RR][GEMM_RT])
{
    __m256i w0, w1, xv, t0, t1;
    __asm__(TILE_STEP0_XM("vmovdqa", "vpmaddubsw", "0", "32", "0") U_STEP("64", "96", "32") U_STEP("128", "160", "64")
                U_STEP("192", "224", "96") U_STEP("256", "288", "128") U_STEP("320", "352", "160")
                    U_STEP("384", "416", "192") U_STEP("448", "480", "224") TILE_ASM_OPERANDS_W);
}

AI void q3_sb_asm(const uint8_t *w, const uint8_t *x0, const uint8_t *x1, const uint8_t *x2,
                  const uint8_t *x3, __m256i ai[RR][GEMM_RT])
{
    __m256i w0, w1, xv, t0, t1;
    __asm__(S_STEP("0", "32", "0") S_STEP("64", "96", "32") S_STEP("128", "160", "64")
                S_STEP("192", "224", "96") S_STEP("256", "288", "128") S_STEP("320", "352", "160")
                    S_STEP("384", "416", "192") S_STEP("448", "480", "224") TILE_ASM_OPERANDS);
}

#define HAVE_ASM_TILE 1
#else
#define HAVE_ASM_TILE 0
#endif

/* RR panel rows x RT tokens over nsc super-blocks; bits: 4 or 5 (unsigned
 * levels, int16 sums over 8 resp. 4 vectors), 8 (Q4_0/Q5_0 signed levels
 * vs x + 128) or 16 (Q8_0 as int16).
 * bits 8: a vpmaddubsw pair is u1*w1 + u2*w2 with u <= 255, |w| <= 16:
 * |.| <= 8160, no saturation; vpaddw wraps mod 2^16 and the int16 lane
 * (16 elements of one block) ends at sum x*w, |.| <= 16*127*16 = 32512 for
 * Q5_0 (16*127*8 for Q4_0), so the wrapped sum is exact whatever the
 * partial sums (the start value -128 * sum w is stored mod 2^16).
 * Panel tail per row for bits 8: | dw[8] f32 | start int16[16] |.
 * y[t*ldy + r] = (acc ? y : 0) + dot, for r < nr. */
AI void micro(const uint8_t *pg, const uint8_t *x, size_t x_stride, int64_t nsc, float *y, int64_t ldy,
              int nr, int acc_y, const int RT, const int bits, const int one)
{
    float facc[RR][GEMM_RT][8] __attribute__((aligned(32)));
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < RT; t++)
            _mm256_store_ps(facc[r][t], _mm256_setzero_ps());
    /* bits 16: the tokens' row scales, applied in tile_store */
    float ds[GEMM_RT] = {1.0f, 1.0f, 1.0f, 1.0f};
    if (bits == 16)
#pragma GCC unroll 4
        for (int t = 0; t < RT; t++)
            ds[t] = X16_TAIL(x + t * x_stride)[0];
    for (int64_t s = 0; s < nsc; s++) {
        const uint8_t *ps = pg + s * PANB(bits);
        const uint8_t *xs = x + s * XSB(bits);
        __m256i ai[RR][GEMM_RT];
        __m256i half[RR][GEMM_RT];
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++)
                ai[r][t] = _mm256_setzero_si256();
        if (bits == 8) { /* int16 sums start at the levels' offset term */
#pragma GCC unroll 4
            for (int r = 0; r < RR; r++) {
                __m256i init = _mm256_load_si256((const __m256i *)(ps + RR * 256 + r * 64 + 32));
#pragma GCC unroll 4
                for (int t = 0; t < RT; t++)
                    ai[r][t] = init;
            }
        }
#if HAVE_ASM_TILE
        if (RT == GEMM_RT) {
            const uint8_t *x1 = xs + x_stride, *x2 = xs + 2 * x_stride, *x3 = xs + 3 * x_stride;
            if (bits == 8) {
                q3_sb_asm(ps, xs, x1, x2, x3, ai);
            } else if (bits == 16) {
                w_sb_asm(ps, xs, x1, x2, x3, ai);
            } else if (bits == 4) {
                u_sb_asm(ps, xs, x1, x2, x3, ai);
            } else {
                u_steps4(ps, xs, x1, x2, x3, ai);
                if (bits == 5) {
#pragma GCC unroll 4
                    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
                        for (int t = 0; t < RT; t++) {
                            half[r][t] = _mm256_madd_epi16(ai[r][t], ones);
                            ai[r][t] = _mm256_setzero_si256();
                        }
                }
                u_steps4(ps + 4 * RR * 32, xs + 128, x1 + 128, x2 + 128, x3 + 128, ai);
            }
        } else
#endif
        {
        for (int v = 0; v < QB(bits) / VB(bits); v++) {
            __m256i w[RR];
#pragma GCC unroll 4
            for (int r = 0; r < RR; r++)
                w[r] = bits == 16 ? _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(ps + (v * RR + r) * 16)))
                                  : _mm256_load_si256((const __m256i *)(ps + (v * RR + r) * 32));
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++) {
                __m256i xv = _mm256_load_si256((const __m256i *)(xs + t * x_stride + v * 32));
#pragma GCC unroll 4
                for (int r = 0; r < RR; r++) {
                    if (bits == 16) {
                        ai[r][t] = _mm256_add_epi32(ai[r][t], _mm256_madd_epi16(w[r], xv));
                    } else if (bits == 8) {
                        ai[r][t] = _mm256_add_epi16(ai[r][t], _mm256_maddubs_epi16(xv, w[r]));
                    } else {
                        ai[r][t] = _mm256_add_epi16(ai[r][t], _mm256_maddubs_epi16(w[r], xv));
                    }
                }
            }
            if (bits == 5 && v == 3) {
#pragma GCC unroll 4
                for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
                    for (int t = 0; t < RT; t++) {
                        half[r][t] = _mm256_madd_epi16(ai[r][t], ones);
                        ai[r][t] = _mm256_setzero_si256();
                    }
            }
        }
        }
        const float *dwp = (const float *)(ps + RR * QB(bits));
        if (bits == 16 && one) { /* every da is 1 */
#pragma GCC unroll 4
            for (int r = 0; r < RR; r++) {
                __m256 dw = _mm256_load_ps(dwp + 16 * r);
#pragma GCC unroll 4
                for (int t = 0; t < RT; t++)
                    _mm256_store_ps(facc[r][t], _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai[r][t]), dw,
                                                                _mm256_load_ps(facc[r][t])));
            }
        } else
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++) {
            __m256 dw = _mm256_load_ps(dwp + 16 * r), mw = _mm256_load_ps(dwp + 16 * r + 8);
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++) {
                const float *da = (const float *)(xs + t * x_stride + XQB(bits));
                __m256i is = ai[r][t];
                if (bits != 16)
                    is = _mm256_madd_epi16(is, ones);
                if (bits == 5)
                    is = _mm256_add_epi32(is, half[r][t]);
                __m256 a = _mm256_load_ps(facc[r][t]);
                a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(dw, _mm256_load_ps(da)), a);
                if (bits != 16 && bits != 8)
                    a = _mm256_fmadd_ps(mw, _mm256_load_ps(da + 8), a);
                _mm256_store_ps(facc[r][t], a);
            }
        }
        __asm__ volatile("" ::: "memory"); /* keep facc in memory, registers for the loop */
    }
    tile_store(facc, y, ldy, nr, acc_y, RT, bits == 16 ? ds : NULL);
}

/* ---- Q6_K (micro6) ----------------------------------------------------------
 * Weights are packed as signed levels w = q - 32 in [-32, 31] (panel layout
 * as above), and the activations as unsigned u = x + 128 in [1, 255]
 * (quant_p8k_u; x in [-127, 127]), so vpmaddubsw(u, w) takes the weights as
 * its signed operand and sum u*w = sum x*w + 128 * sum w: the second term
 * depends on the weights only: computed at pack time, removed at flush
 * time. int16 lane 2j of a vpmaddubsw product holds elements 2v, 2v+1 of
 * block j (sub-block 2j, the elements 0..15 of the block) and lane 2j+1
 * elements 16+2v, 17+2v (sub-block 2j+1), so lane i belongs to sub-block i
 * and vpmaddwd with sc[0..15] applies the 16 scales in place; int32 lane j
 * then belongs to block j. Per row and super-block the 64-byte tail holds
 * | corr int32[8] | sc int8[16] | d f32 | 0[12] | with corr[j] = -128 *
 * (sc[2j] * S[2j] + sc[2j+1] * S[2j+1]), S[g] = sum of the levels of
 * sub-block g: each lane loses its own offset term and ends at its block's
 * sum of sc*x*w. (The whole term in lane 0 left lanes at +-1e7..1e8 that
 * cancelled in the final float sum: ~1 unit of the largest lost on
 * constant rows, 2.5e-5 of sum |w||x|.) The asm's vpmaddwd takes the
 * scales as int16 memory operands: they are widened onto the stack once per
 * super-block (sc int16 + corr int32[8] + d would need 68 bytes).
 * Bounds: one vpmaddubsw int16 lane = 2 products, |.| <= 2*255*32 = 16320
 * (no saturation); the sum of two vectors (one pair) |.| <= 32640 < 32767,
 * so the int16 sums are flushed every 2 vectors (a third would overflow);
 * vpmaddwd of a pair with the scales |.| <= 2*32640*128 = 8.4e6 per int32
 * lane, 4 pairs per super-block 3.3e7, |corr[j]| <= 128*2*128*512 = 1.7e7:
 * far below 2^31. The corrected lane |.| <= 2*128*16*127*32 = 1.66e7 < 2^24
 * converts to float exactly; per super-block one cvt + FMA with d * da. */
#if GEMM_RR == 2 && GEMM_RT == 4
/* token XR of one pair: xa, xb its two vectors at XA, XB (offsets) */
#define Q6_TOK(XR, XA, XB, A0, A1)                                                                 \
    "vmovdqa " XA "(%[" XR "]), %[xa]\n\t"                                                         \
    "vmovdqa " XB "(%[" XR "]), %[xb]\n\t"                                                         \
    "vpmaddubsw %[w0a], %[xa], %[t0]\n\t"                                                          \
    "vpmaddubsw %[w0b], %[xb], %[t1]\n\t"                                                          \
    "vpaddw %[t1], %[t0], %[t0]\n\t"                                                               \
    "vpmaddubsw %[w1a], %[xa], %[t1]\n\t"                                                          \
    "vpmaddwd (%[sc]), %[t0], %[t0]\n\t"                                                           \
    "vpmaddubsw %[w1b], %[xb], %[xa]\n\t"                                                          \
    "vpaddd %[t0], %[" A0 "], %[" A0 "]\n\t"                                                       \
    "vpaddw %[xa], %[t1], %[t1]\n\t"                                                               \
    "vpmaddwd 32(%[sc]), %[t1], %[t1]\n\t"                                                         \
    "vpaddd %[t1], %[" A1 "], %[" A1 "]\n\t"
/* pair p: panel vectors 2p, 2p+1 of rows 0, 1 at W (= 128p), tokens at X (= 64p) */
#define Q6_PAIR(W0A, W1A, W0B, W1B, XA, XB)                                                        \
    "vmovdqa " W0A "(%[w]), %[w0a]\n\t"                                                            \
    "vmovdqa " W1A "(%[w]), %[w1a]\n\t"                                                            \
    "vmovdqa " W0B "(%[w]), %[w0b]\n\t"                                                            \
    "vmovdqa " W1B "(%[w]), %[w1b]\n\t"                                                            \
    Q6_TOK("x0", XA, XB, "a00", "a10") Q6_TOK("x1", XA, XB, "a01", "a11")                          \
    Q6_TOK("x2", XA, XB, "a02", "a12") Q6_TOK("x3", XA, XB, "a03", "a13")

/* one super-block of the full tile: int32 sums (scaled by sc: int16 rows 0,
 * 1 at sc, sc + 32 bytes) into ai */
AI void q6_sb_asm(const uint8_t *w, const int16_t *sc, const uint8_t *x0, const uint8_t *x1,
                  const uint8_t *x2, const uint8_t *x3, __m256i ai[RR][GEMM_RT])
{
    __m256i w0a, w1a, w0b, w1b, xa, xb, t0, t1;
    __asm__(Q6_PAIR("0", "32", "64", "96", "0", "32") Q6_PAIR("128", "160", "192", "224", "64", "96")
                Q6_PAIR("256", "288", "320", "352", "128", "160")
                    Q6_PAIR("384", "416", "448", "480", "192", "224")
            : [a00] "+x"(ai[0][0]), [a01] "+x"(ai[0][1]), [a02] "+x"(ai[0][2]), [a03] "+x"(ai[0][3]),
              [a10] "+x"(ai[1][0]), [a11] "+x"(ai[1][1]), [a12] "+x"(ai[1][2]), [a13] "+x"(ai[1][3]),
              [w0a] "=&x"(w0a), [w1a] "=&x"(w1a), [w0b] "=&x"(w0b), [w1b] "=&x"(w1b),
              [xa] "=&x"(xa), [xb] "=&x"(xb), [t0] "=&x"(t0), [t1] "=&x"(t1)
            : [w] "r"(w), [sc] "r"(sc), [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2),
              [x3] "r"(x3)
            : "memory");
}
#endif

/* micro for Q6_K (bits 6) and Q3_K (bits 3) panels and quant_p8k_u
 * activations, Q2_K (bits 2) and quant_p8k_b; same contract as micro.
 * Q3_K levels |w| <= 4: the int16 lane sums over all 8 vectors start at
 * -128 * S[g] (tail | start int16[16] | sc int8[16] | d f32 | 0[12] |,
 * stored mod 2^16 as micro's bits 8) and end at sum x*w exactly, |.| <=
 * 16*127*4 = 8128 (the wrapping vpaddw makes the partial sums, |u*w| sums
 * up to 8*2*255*4 = 16320, irrelevant); one vpmaddwd with the scales
 * (|sc| <= 32) per super-block: |.| <= 2*8128*32 = 5.2e5 per int32 lane.
 * Q2_K keeps the usual orientation (levels 0..3 unsigned, x signed, the
 * U_STEP tile): int16 lane sums over 8 vectors |.| <= 8*2*3*127 = 6096,
 * vpmaddwd with the scales 0..15: |.| <= 2*6096*15 = 1.8e5; the mins
 * term dmin * sum_g mn[g] * (sum of x over group g) takes the activation
 * group sums (|.| <= 2032) from quant_p8k_b: vpmaddwd |.| <= 2*2032*15 =
 * 6.1e4, one more cvt + FMA per super-block and tile entry. */
/* the 16 scales of a micro6 row tail as int16 (Q2_K stores them so) */
AI __m256i m6_scales(const uint8_t *tail, const int bits)
{
    if (bits == 2)
        return _mm256_load_si256((const __m256i *)tail);
    return _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(tail + 32)));
}

AI void micro6(const uint8_t *pg, const uint8_t *x, size_t x_stride, int64_t nsc, float *y, int64_t ldy,
               int nr, int acc_y, const int RT, const int bits)
{
    float facc[RR][GEMM_RT][8] __attribute__((aligned(32)));
    int16_t sc16[RR][16] __attribute__((aligned(32))); /* Q6_K asm: the rows' scales as int16 */
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < RT; t++)
            _mm256_store_ps(facc[r][t], _mm256_setzero_ps());
    for (int64_t s = 0; s < nsc; s++) {
        const uint8_t *ps = pg + s * PANB(4);
        const uint8_t *xs = x + s * PSB;
        __m256i ai[RR][GEMM_RT];
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++) {
            /* Q3_K: int16 sums start at the levels' offset term (see above) */
            __m256i init = bits == 3 ? _mm256_load_si256((const __m256i *)(ps + RR * 256 + r * 64))
                                     : _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++)
                ai[r][t] = init;
        }
#if GEMM_RR == 2 && GEMM_RT == 4
        if (RT == GEMM_RT && bits == 6) {
#pragma GCC unroll 4
            for (int r = 0; r < RR; r++)
                _mm256_store_si256((__m256i *)sc16[r], m6_scales(ps + RR * 256 + r * 64, 6));
            q6_sb_asm(ps, sc16[0], xs, xs + x_stride, xs + 2 * x_stride, xs + 3 * x_stride, ai);
        } else if (RT == GEMM_RT && bits != 6) {
            const uint8_t *x1 = xs + x_stride, *x2 = xs + 2 * x_stride, *x3 = xs + 3 * x_stride;
            if (bits == 3) {
                q3_sb_asm(ps, xs, x1, x2, x3, ai);
            } else {
                u_sb_asm(ps, xs, x1, x2, x3, ai); /* Q2_K: sums from zero */
            }
#pragma GCC unroll 4
            for (int r = 0; r < RR; r++) {
                __m256i sc = m6_scales(ps + RR * 256 + r * 64, bits);
#pragma GCC unroll 4
                for (int t = 0; t < RT; t++)
                    ai[r][t] = _mm256_madd_epi16(ai[r][t], sc);
            }
        } else
#endif
        {
            __m256i sc[RR];
#pragma GCC unroll 4
            for (int r = 0; r < RR; r++)
                sc[r] = m6_scales(ps + RR * 256 + r * 64, bits);
            for (int v = 0; v < 8 && bits != 6; v++) {
#pragma GCC unroll 4
                for (int t = 0; t < RT; t++) {
                    __m256i xv = _mm256_load_si256((const __m256i *)(xs + t * x_stride + v * 32));
#pragma GCC unroll 4
                    for (int r = 0; r < RR; r++) {
                        __m256i wv = _mm256_load_si256((const __m256i *)(ps + (v * RR + r) * 32));
                        ai[r][t] = _mm256_add_epi16(ai[r][t], bits == 3 ? _mm256_maddubs_epi16(xv, wv)
                                                                        : _mm256_maddubs_epi16(wv, xv));
                    }
                }
            }
            if (bits != 6) {
#pragma GCC unroll 4
                for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
                    for (int t = 0; t < RT; t++)
                        ai[r][t] = _mm256_madd_epi16(ai[r][t], sc[r]);
            }
            for (int v = 0; v < 8 && bits == 6; v += 2) {
                __m256i wa[RR], wb[RR];
#pragma GCC unroll 4
                for (int r = 0; r < RR; r++) {
                    wa[r] = _mm256_load_si256((const __m256i *)(ps + (v * RR + r) * 32));
                    wb[r] = _mm256_load_si256((const __m256i *)(ps + ((v + 1) * RR + r) * 32));
                }
#pragma GCC unroll 4
                for (int t = 0; t < RT; t++) {
                    __m256i xa = _mm256_load_si256((const __m256i *)(xs + t * x_stride + v * 32));
                    __m256i xb = _mm256_load_si256((const __m256i *)(xs + t * x_stride + v * 32 + 32));
#pragma GCC unroll 4
                    for (int r = 0; r < RR; r++) {
                        __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(xa, wa[r]),
                                                     _mm256_maddubs_epi16(xb, wb[r]));
                        ai[r][t] = _mm256_add_epi32(ai[r][t], _mm256_madd_epi16(p, sc[r]));
                    }
                }
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < RR && bits == 2; r++) {
            const uint8_t *tail = ps + RR * 256 + r * 64;
            __m256i mn = _mm256_cvtepu8_epi16(_mm_load_si128((const __m128i *)(tail + 32)));
            __m256 dv = _mm256_broadcast_ss((const float *)(tail + 48));
            __m256 mv = _mm256_broadcast_ss((const float *)(tail + 52));
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++) {
                const uint8_t *xa = xs + t * x_stride + 256;
                __m256 da = _mm256_broadcast_ss((const float *)xa);
                __m256i bm = _mm256_madd_epi16(_mm256_load_si256((const __m256i *)(xa + 32)), mn);
                __m256 a = _mm256_load_ps(facc[r][t]);
                a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai[r][t]), _mm256_mul_ps(dv, da), a);
                a = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(bm), _mm256_mul_ps(mv, da), a);
                _mm256_store_ps(facc[r][t], a);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < RR && bits != 2; r++) {
            const uint8_t *tail = ps + RR * 256 + r * 64;
            /* Q6_K: each block's offset term off its own lane (Q3_K's left with the start values) */
            __m256i corr = bits == 6 ? _mm256_load_si256((const __m256i *)tail) : _mm256_setzero_si256();
            __m256 dv = _mm256_broadcast_ss((const float *)(tail + 48));
#pragma GCC unroll 4
            for (int t = 0; t < RT; t++) {
                __m256 da = _mm256_broadcast_ss((const float *)(xs + t * x_stride + 256));
                __m256i is = bits == 6 ? _mm256_add_epi32(ai[r][t], corr) : ai[r][t];
                __m256 a = _mm256_load_ps(facc[r][t]);
                a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(dv, da), a);
                _mm256_store_ps(facc[r][t], a);
            }
        }
        __asm__ volatile("" ::: "memory"); /* keep facc in memory, registers for the loop */
    }
    tile_store(facc, y, ldy, nr, acc_y, RT, NULL);
}

#define MICRO6(BITS)                                                                               \
    switch (rt) {                                                                                  \
    case 1: micro6(pg, xt, a->x_stride, nsc, yt, a->ldy, nr, acc_y, 1, BITS); break;               \
    case 2: micro6(pg, xt, a->x_stride, nsc, yt, a->ldy, nr, acc_y, 2, BITS); break;               \
    case 3: micro6(pg, xt, a->x_stride, nsc, yt, a->ldy, nr, acc_y, 3, BITS); break;               \
    default: micro6(pg, xt, a->x_stride, nsc, yt, a->ldy, nr, acc_y, GEMM_RT, BITS); break;        \
    }

#define MICRO_BITS(BITS, ONE)                                                                      \
    switch (rt) {                                                                                  \
    case 1: micro(pg, xt, a->x_stride, nsc, yt, a->ldy, nr, acc_y, 1, BITS, ONE); break;           \
    case 2: micro(pg, xt, a->x_stride, nsc, yt, a->ldy, nr, acc_y, 2, BITS, ONE); break;           \
    case 3: micro(pg, xt, a->x_stride, nsc, yt, a->ldy, nr, acc_y, 3, BITS, ONE); break;           \
    default: micro(pg, xt, a->x_stride, nsc, yt, a->ldy, nr, acc_y, GEMM_RT, BITS, ONE); break;    \
    }

/* P16 rows t < rt at x, x_stride apart: whether every one has one scale for
 * the row (da = 1: dw * da == dw, so micro's flush without the multiply
 * gives the same bits as the one with it, whatever the tile's other rows) */
static int x16_one(const uint8_t *x, size_t x_stride, int rt)
{
    for (int t = 0; t < rt; t++)
        if (X16_TAIL(x + t * x_stride)[1] == 0.0f)
            return 0;
    return 1;
}

static int type_bits(int type)
{
    switch (type) {
    case DT_Q4_1: case DT_Q4_K: return 4;
    case DT_Q5_1: case DT_Q5_K: return 5;
    case DT_Q4_0: case DT_Q5_0: return 8; /* signed levels */
    case DT_Q6_K: return 6;
    case DT_Q3_K: return 3;
    case DT_Q2_K: return 2;
    case DT_Q8_0: return 16;
    }
    return 0;
}

/* a->x: P layout rows; a->scratch: cpu_gemm_scratch_bytes(a->n_rows, n) */
void cpu_avx2_gemm_p(const cpu_gemm_args *a)
{
    int64_t nsb = (a->n + 255) / 256;
    int bits = type_bits(a->type);
    for (int64_t s0 = 0; s0 < nsb; s0 += GEMM_KC_SB) {
        int64_t nsc = nsb - s0 < GEMM_KC_SB ? nsb - s0 : GEMM_KC_SB;
        pack_panels(a->type, a->w, a->w_stride, a->n_rows, a->n, s0, nsc, a->scratch, a->r4);
        int acc_y = s0 > 0;
        for (int64_t t0 = 0; t0 < a->n_tok; t0 += GEMM_RT) {
            int rt = (int)(a->n_tok - t0 < GEMM_RT ? a->n_tok - t0 : GEMM_RT);
            const uint8_t *xt = a->x + t0 * a->x_stride + s0 * XSB(bits);
            /* the next token group's activations (GEMM_RT rows x nsc super-blocks)
             * come from L3: prefetch them a few lines per row group */
            int64_t t1 = t0 + GEMM_RT, nt1 = a->n_tok - t1 < GEMM_RT ? a->n_tok - t1 : GEMM_RT;
            const uint8_t *xn = a->x + t1 * a->x_stride + s0 * XSB(bits);
            int64_t row_lines = (nsc * XSB(bits) + 63) / 64, n_lines = nt1 > 0 ? nt1 * row_lines : 0;
            int64_t n_groups = (a->n_rows + RR - 1) / RR, per_group = (n_lines + n_groups - 1) / n_groups;
            int64_t line = 0, pf_col = 0;
            const uint8_t *pf_row = xn;
            const int one16 = bits == 16 && x16_one(xt, a->x_stride, rt); /* the token group's, all row groups */
            for (int64_t g = 0; g < a->n_rows; g += RR) {
                for (int64_t k = 0; k < per_group && line < n_lines; k++, line++) {
                    _mm_prefetch((const char *)(pf_row + pf_col * 64), _MM_HINT_T0);
                    if (++pf_col == row_lines)
                        pf_col = 0, pf_row += a->x_stride;
                }
                const uint8_t *pg = a->scratch + (g / RR) * nsc * PANB(bits);
                float *yt = a->y + t0 * a->ldy + g;
                int nr = (int)(a->n_rows - g < RR ? a->n_rows - g : RR);
                if (bits == 6) {
                    MICRO6(6)
                } else if (bits == 3) {
                    MICRO6(3)
                } else if (bits == 2) {
                    MICRO6(2)
                } else if (bits == 4) {
                    MICRO_BITS(4, 0)
                } else if (bits == 5) {
                    MICRO_BITS(5, 0)
                } else if (bits == 8) {
                    MICRO_BITS(8, 0)
                } else if (one16) {
                    MICRO_BITS(16, 1)
                } else {
                    MICRO_BITS(16, 0)
                }
            }
        }
    }
}

cpu_kernel cpu_kernel_avx2_gemm(int type)
{
    cpu_kernel k = {CPU_ACT_F32, NULL, NULL};
    switch (type) {
    case DT_Q4_1: case DT_Q5_1:
        k.act = CPU_ACT_P8, k.quantize = cpu_avx2_quant_p8, k.gemm = cpu_avx2_gemm_p;
        break;
    case DT_Q4_0: case DT_Q5_0: /* P8-sized rows, levels stored as x + 128 */
        k.act = CPU_ACT_P8, k.quantize = quant_p8_u, k.gemm = cpu_avx2_gemm_p;
        break;
    case DT_Q8_0:
        k.act = CPU_ACT_P16, k.quantize = cpu_avx2_quant_p16, k.gemm = cpu_avx2_gemm_p;
        break;
    case DT_Q4_K: case DT_Q5_K:
        k.act = CPU_ACT_P8K, k.quantize = cpu_avx2_quant_p8k, k.gemm = cpu_avx2_gemm_p;
        break;
    case DT_Q3_K: case DT_Q6_K: /* P8K-sized rows, levels stored as x + 128 */
        k.act = CPU_ACT_P8K, k.quantize = quant_p8k_u, k.gemm = cpu_avx2_gemm_p;
        break;
    case DT_Q2_K: /* P8K-sized rows, group sums in the c area */
        k.act = CPU_ACT_P8K, k.quantize = quant_p8k_b, k.gemm = cpu_avx2_gemm_p;
        break;
    }
    return k;
}
