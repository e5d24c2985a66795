/* cpu_kernels.h - private interface between the matmul driver (matmul.c) and
 * the per-ISA kernel files (matmul_avx2.c, matmul_avx512.c; prefill GEMM on
 * packed panels for the Q4/Q5/Q8_0 and Q4_K/Q5_K types in gemm_avx2.c, its
 * layouts below under "Prefill GEMM").
 *
 * Every quantized weight row is first unpacked (into a small per-thread
 * scratch that stays in L1/L2) to one of two integer-friendly layouts, then
 * tile kernels multiply RR unpacked rows by RT quantized activation rows.
 * The unpack cost is paid once per row per block of tokens, so prefill reuses
 * each weight block across many tokens.
 *
 * Unpacked weight row, family A (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), nb = n/32:
 *   | q[n] u8 levels (Q8_0: s8) | dw[nbp] f32 | cw[nbp] f32 |
 *   row dot = sum_b dw[b]*dx[b]*sum(q*xq) + cw[b]*sx[b]   (nbp = nb rounded up to 8, zero pad)
 * Unpacked weight row, family K (Q2_K..Q6_K), nc = n/32 chunks, ns = n/256:
 *   | q[n] u8 levels 0..63 | sc[nc][16] s16 (scale of each level pair) |
 *   | d[ns] f32 | dm[ns] f32 | m[ns][16] s16 (per group of 16) |
 *   row dot = sum_s dx[s]*(d[s]*sum_c madd(maddubs(q,xq), sc) + dm[s]*sum(m*bsums))
 * Activation row "q8b" (family A): | qs[n] s8 | dx[nbp] f32 | sx[nbp] f32 (= dx*sum qs) |
 *   qs and dx exactly as quantize_row_q8_0 (d rounded to f16).
 * Activation row "q8kb" (family K): | qs[n] s8 | dx[ns] f32 | bsums[ns][16] s16 |
 *   exactly as quantize_row_q8_k. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { CPU_ACT_F32 = 0, CPU_ACT_Q8B = 1, CPU_ACT_Q8KB = 2, CPU_ACT_P8 = 3, CPU_ACT_P8K = 4, CPU_ACT_P16 = 5 };

/* Prefill GEMM (gemm_avx2.c), activation row "P" (CPU_ACT_P8: one scale per
 * 32 elements as quantize_row_q8_0; CPU_ACT_P8K: one per 256 as
 * quantize_row_q8_k): per super-block of 256 elements (the last one zero
 * padded), GEMM_X_SB_BYTES = | qs[256] s8, K-permuted (vector v, lane j =
 * elements 2v, 2v+1, 16+2v, 17+2v of block j) | da[8] f32 | c[8] f32 (= da *
 * sum of the block's qs) |. CPU_ACT_P16 (Q8_0 weights): 16-bit levels,
 * vector u (of 16), lane j = elements u, u+16 of block j, x = ds * da[j] *
 * level: GEMM_X16_SB_BYTES = | qs[256] s16 | da[8] f32 | ds f32 | one f32 |
 * 0[6] |, where ds (the row's scale) and one (1: every da is 1) are the
 * same in every super-block of the row (cpu_avx2_quant_p16). Weights are
 * packed per thread into panels of GEMM_RR rows x GEMM_KC_SB super-blocks;
 * tiles are GEMM_RR x GEMM_RT. */
#define GEMM_X_SB_BYTES 320
#define GEMM_X16_SB_BYTES 576
#define GEMM_RR 2
#define GEMM_RT 4
#define GEMM_KC_SB 8

static inline int64_t cpu_pad8(int64_t v) { return (v + 7) & ~(int64_t)7; }
static inline size_t cpu_align64(size_t v) { return (v + 63) & ~(size_t)63; }

/* Bytes of one activation row of n elements in layout `act`. */
static inline size_t cpu_act_row_bytes(int act, int64_t n)
{
    if (act == CPU_ACT_Q8B)
        return cpu_align64((size_t)n + 8 * (size_t)cpu_pad8(n / 32));
    if (act == CPU_ACT_Q8KB)
        return cpu_align64((size_t)n + 4 * (size_t)(n / 256) + 32 * (size_t)(n / 256));
    if (act == CPU_ACT_P8 || act == CPU_ACT_P8K)
        return GEMM_X_SB_BYTES * (size_t)((n + 255) / 256);
    if (act == CPU_ACT_P16)
        return GEMM_X16_SB_BYTES * (size_t)((n + 255) / 256);
    return (size_t)n * 4;
}
/* Bytes of one unpacked weight row (family A or K by act). */
static inline size_t cpu_unpacked_row_bytes(int act, int64_t n)
{
    if (act == CPU_ACT_Q8B)
        return cpu_align64((size_t)n + 8 * (size_t)cpu_pad8(n / 32));
    if (act == CPU_ACT_Q8KB)
        return cpu_align64((size_t)n + 32 * (size_t)(n / 32) + 8 * (size_t)(n / 256) +
                           32 * (size_t)(n / 256));
    return 0;
}

/* Per-thread scratch: CPU_TILE_ROWS unpacked rows + a table of 16 x nbp floats. */
#define CPU_TILE_ROWS 4
static inline size_t cpu_scratch_bytes(int act, int64_t n)
{
    if (act == CPU_ACT_F32)
        return 0;
    return CPU_TILE_ROWS * cpu_unpacked_row_bytes(act, n) + cpu_align64(64 * (size_t)cpu_pad8(n / 32));
}

/* Per-thread scratch of the prefill GEMM for row chunks of `rows` rows:
 * panels of 256 level bytes (every type's, Q8_0's int8 too) + 64 of
 * scales per row and super-block. */
static inline size_t cpu_gemm_scratch_bytes(int64_t rows, int64_t n)
{
    const size_t qb = 256;
    int64_t nsb = (n + 255) / 256;
    if (nsb > GEMM_KC_SB)
        nsb = GEMM_KC_SB;
    int64_t groups = (rows + GEMM_RR - 1) / GEMM_RR;
    return cpu_align64((size_t)groups * (size_t)nsb * GEMM_RR * (qb + 64));
}

/* One matmul block: y[t*ldy + r] = row r of w . activation row t, for
 * r < n_rows, t < n_tok. `scratch` holds cpu_scratch_bytes(act, n). */
typedef struct cpu_gemm_args {
    int type;
    int64_t n;          /* elements per row */
    const uint8_t *w;   /* first weight row */
    size_t w_stride;    /* bytes between weight rows */
    int64_t n_rows;
    const uint8_t *x;   /* first activation row (layout per type) */
    size_t x_stride;    /* bytes between activation rows */
    int64_t n_tok;
    float *y;
    int64_t ldy;        /* floats between output rows (tokens) */
    uint8_t *scratch;   /* per-thread, 64-byte aligned */
    int r4;             /* w holds R4 groups (cpu_repack): set only for a kernel that reads them */
} cpu_gemm_args;


typedef struct cpu_kernel {
    int act; /* CPU_ACT_*: activation layout the gemm expects */
    void (*quantize)(const float *x, uint8_t *xq, int64_t n); /* NULL for CPU_ACT_F32 */
    void (*gemm)(const cpu_gemm_args *a);
} cpu_kernel;

/* Kernel of a weight type for a level; .gemm NULL when that level has none. */
cpu_kernel cpu_kernel_avx2(int type);
cpu_kernel cpu_kernel_avx512(int type);

/* AVX2 building blocks the AVX-512 file reuses (an AVX-512 CPU has AVX2):
 * activation quantizers, row unpackers (layouts above). */
void cpu_avx2_quant_q8b(const float *x, uint8_t *xq, int64_t n);
void cpu_avx2_quant_q8kb(const float *x, uint8_t *xq, int64_t n);
void cpu_avx2_unpack_a(int type, const uint8_t *w, uint8_t *u, int64_t n);
void cpu_avx2_unpack_k(int type, const uint8_t *w, uint8_t *u, int64_t n);
/* AVX2 decode (gemv_avx2.c): a->n_tok < 2, weights read without unpacking.
 * Returns 1 when it computed a->y, 0 when the type has no decode kernel. */
int cpu_avx2_gemv(const cpu_gemm_args *a);
/* AVX2 fused decode of a few tokens (gemv_multi_avx2.c): 2 <= a->n_tok <=
 * cpu_avx2_gemv_multi_max(a->type) (0 for types it lacks), q8b/q8kb
 * activations, each weight block read once for all tokens. Returns 1 when
 * it computed a->y, 0 otherwise. */
int cpu_avx2_gemv_multi(const cpu_gemm_args *a);
int cpu_avx2_gemv_multi_max(int type);
/* AVX2 decode of 1..cpu_avx2_gemv_k*_max(type) tokens straight from the
 * weights for the K types other than Q4_K: Q5_K and Q6_K (gemv_k56_avx2.c),
 * Q2_K and Q3_K (gemv_k23_avx2.c); q8kb activations. Return 1 when they
 * computed a->y, 0 to fall back to unpack + tiles; *_max is 0 for a type
 * without a multi-token kernel (1 = one token only). */
int cpu_avx2_gemv_k56(const cpu_gemm_args *a);
int cpu_avx2_gemv_k56_max(int type);
int cpu_avx2_gemv_k23(const cpu_gemm_args *a);
int cpu_avx2_gemv_k23_max(int type);
/* AVX2 one-token decode of Q4_0, Q4_1, Q5_0 and Q5_1 rows, four rows at a
 * time (gemv_a45_avx2.c); q8b activations. Returns 1 when it computed a->y,
 * 0 for another type or n_tok >= 2. */
int cpu_avx2_gemv_a45(const cpu_gemm_args *a);
/* AVX2 prefill GEMM (gemm_avx2.c): Q4_0, Q4_1, Q5_0, Q5_1 (act P8), Q8_0 (P16),
 * Q2_K..Q6_K (act P8K; Q3_K/Q6_K: levels x + 128, Q2_K: int16 group sums in c); .gemm NULL for other types. */
cpu_kernel cpu_kernel_avx2_gemm(int type);
void cpu_avx2_quant_p8(const float *x, uint8_t *xq, int64_t n);
void cpu_avx2_quant_p8k(const float *x, uint8_t *xq, int64_t n);
void cpu_avx2_quant_p16(const float *x, uint8_t *xq, int64_t n);
void cpu_avx2_gemm_p(const cpu_gemm_args *a);

/* Row-interleaved weight layouts ("R4"), made once at load, in place, by
 * cpu_weight_repack (matmul.h) for the types whose one-token kernel gains
 * from them: rows 4g..4g+3 become one group of 4 * row_bytes bytes at the
 * offset of row 4g, so row chunks that start and end on multiples of 4 rows
 * still address their bytes as r * row_bytes, and a token reads the same
 * bytes as before. The group layout is the type's own (see its .c file).
 * One token goes to .gemv; a few tokens (.multi) and the AVX2 prefill GEMM
 * (.gemm) read the groups themselves where the type says so; every other
 * path (the Q4_K GEMM, the scalar oracle) unpacks the chunk's groups to
 * standard rows in the thread's scratch first (matmul.c). */
typedef struct cpu_repack {
    int type;
    /* 4 standard rows (row_bytes apart) -> one group of 4 * row_bytes at grp */
    void (*pack)(const uint8_t *rows, size_t row_bytes, uint8_t *grp, int64_t n);
    /* one group -> 4 standard rows (row_bytes apart) */
    void (*unpack)(const uint8_t *grp, uint8_t *rows, size_t row_bytes, int64_t n);
    /* one token: a->n_tok == 1, a->w the first group, a->w_stride == row_bytes,
     * a->n_rows a multiple of 4, activations and scratch as the type's
     * standard one-token kernel (act .act). Returns 1 when it computed a->y. */
    int (*gemv)(const cpu_gemm_args *a);
    int act; /* CPU_ACT_Q8B or CPU_ACT_Q8KB */
    /* the few-token decode (cpu_avx2_gemv_multi) reads the groups itself
     * when given a->r4 = 1 (rows in whole groups) */
    int multi;
    /* the prefill GEMM (cpu_avx2_gemm_p) packs its panels from the groups
     * when given a->r4 = 1 (rows in whole groups) */
    int gemm;
} cpu_repack;
/* Block b (of the row's nb) of row r in a Q4_0 / Q8_0 R4 group at grp (bs
 * bytes a block): returns its first 16 level bytes; its f16 scale is at *d
 * and its level bytes 16..31 (Q8_0) *hstep bytes after the first 16. */
static inline const uint8_t *cpu_r4_block(const uint8_t *grp, int r, int64_t b, int64_t nb, size_t bs,
                                          const uint8_t **d, size_t *hstep)
{
    const uint8_t *rec = grp + (size_t)(b / 2) * 8 * bs; /* the record of blocks b & ~1, (b | 1) */
    const size_t nbk = (b | 1) < nb ? 2 : 1, k = (size_t)(b % 2);
    *d = rec + 2 * (4 * k + (size_t)r);
    *hstep = 16 * nbk;
    return rec + 8 * nbk + (bs - 2) * nbk * (size_t)r + 16 * k;
}
/* That block as a standard block (bs bytes: f16 scale, then bs - 2 level
 * bytes) at blk. */
static inline void cpu_r4_block_copy(const uint8_t *grp, int r, int64_t b, int64_t nb, size_t bs,
                                     uint8_t *blk)
{
    const uint8_t *d;
    size_t hstep;
    const uint8_t *q = cpu_r4_block(grp, r, b, nb, bs, &d, &hstep);
    memcpy(blk, d, 2);
    for (size_t h = 0; h < (bs - 2) / 16; h++)
        memcpy(blk + 2 + 16 * h, q + h * hstep, 16);
}
/* Row r's standard block from the odd last record of a group, rec (the
 * 4 rows' scales, then their level bytes): that record alone is a group of
 * one block. */
static inline void cpu_r4_tail_block(const uint8_t *rec, int r, size_t bs, uint8_t *blk)
{
    cpu_r4_block_copy(rec, r, 0, 1, bs, blk);
}
/* The AVX2 R4 layout of a type, NULL when it has none. */
const cpu_repack *cpu_repack_avx2(int type);
/* Q4_0 (gemv_a45_avx2.c), Q8_0 (gemv_avx2.c) and Q4_K (gemv_r4k_avx2.c) R4 functions. */
void cpu_r4_q8_0_pack(const uint8_t *rows, size_t row_bytes, uint8_t *grp, int64_t n);
void cpu_r4_q8_0_unpack(const uint8_t *grp, uint8_t *rows, size_t row_bytes, int64_t n);
int cpu_r4_q8_0_gemv(const cpu_gemm_args *a);
void cpu_r4_q4_0_pack(const uint8_t *rows, size_t row_bytes, uint8_t *grp, int64_t n);
void cpu_r4_q4_0_unpack(const uint8_t *grp, uint8_t *rows, size_t row_bytes, int64_t n);
int cpu_r4_q4_0_gemv(const cpu_gemm_args *a);
void cpu_r4_q4_k_pack(const uint8_t *rows, size_t row_bytes, uint8_t *grp, int64_t n);
void cpu_r4_q4_k_unpack(const uint8_t *grp, uint8_t *rows, size_t row_bytes, int64_t n);
int cpu_r4_q4_k_gemv(const cpu_gemm_args *a);
int cpu_r4_q4_k_multi(const cpu_gemm_args *a); /* 2..8 tokens on the groups (a->r4) */
