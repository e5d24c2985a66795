/* dtype_blocks.h - the ggml/GGUF quantized block structs, byte for byte
 * (see the layout table in dtype.h), for code that reads blocks directly:
 * the scalar kernels in core/dtype_k.c and the SIMD/CUDA kernels.
 *
 * Multi-byte fields are little-endian (as in GGUF files; we assume a
 * little-endian host). Block pointers must be 2-byte aligned (4 for Q8_K):
 * every block size is even, and GGUF tensor data is aligned to at least 32. */
#pragma once
#include <stdint.h>

#define DT_QK 32   /* elements per block of the 32-element types */
#define DT_QK_K 256 /* elements per K-quant super-block */

typedef struct dt_block_q4_0 {
    uint16_t d;      /* f16 scale */
    uint8_t qs[16];  /* el j: qs[j] & 15, el j+16: qs[j] >> 4; x = (q - 8) * d */
} dt_block_q4_0;

typedef struct dt_block_q4_1 {
    uint16_t d, m;   /* f16 scale, f16 offset; x = q * d + m */
    uint8_t qs[16];
} dt_block_q4_1;

typedef struct dt_block_q5_0 {
    uint16_t d;
    uint8_t qh[4];   /* bit j of the u32 = 5th bit of element j (0..31) */
    uint8_t qs[16];  /* low 4 bits as in Q4_0; x = (q - 16) * d */
} dt_block_q5_0;

typedef struct dt_block_q5_1 {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];  /* x = q * d + m */
} dt_block_q5_1;

typedef struct dt_block_q8_0 {
    uint16_t d;
    int8_t qs[32];   /* x = q * d */
} dt_block_q8_0;

/* Q2_K: 16 groups of 16. el i (half h = i/128, r = i%128):
 * q = (qs[32h + r%32] >> 2*(r/32)) & 3; x = d*(scales[i/16] & 15)*q - dmin*(scales[i/16] >> 4) */
typedef struct dt_block_q2_k {
    uint8_t scales[16];
    uint8_t qs[64];
    uint16_t d, dmin;
} dt_block_q2_k;

/* Q3_K: 16 groups of 16. low 2 bits as Q2_K; high bit (hmask[i%32] >> (i/32)) & 1;
 * q = low2 - (high ? 0 : 4) in -4..3. 6-bit scale s of group g: low 4 bits
 * scales[g%8] >> 4*(g/8), high 2 bits scales[8 + g%4] >> 2*(g/4); x = d*(s - 32)*q */
typedef struct dt_block_q3_k {
    uint8_t hmask[32];
    uint8_t qs[64];
    uint8_t scales[12];
    uint16_t d;
} dt_block_q3_k;

/* Q4_K: 8 groups of 32. el i, group g = i/32: q = qs[32*(g/2) + i%32] >> 4*(g%2) & 15.
 * 6-bit scale/min of group g: g < 4: sc = scales[g] & 63, mn = scales[g+4] & 63;
 * g >= 4: sc = (scales[g+4] & 15) | (scales[g-4] >> 6) << 4,
 *         mn = (scales[g+4] >> 4) | (scales[g] >> 6) << 4.  x = d*sc*q - dmin*mn */
typedef struct dt_block_q4_k {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
} dt_block_q4_k;

/* Q5_K: Q4_K plus a 5th bit: (qh[i%32] >> g) & 1, g = i/32. */
typedef struct dt_block_q5_k {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
} dt_block_q5_k;

/* Q6_K: 16 groups of 16. el i (h = i/128, k = (i%128)/32, l = i%32):
 * low 4 = ql[64h + 32*(k%2) + l] >> 4*(k/2) & 15, high 2 = qh[32h + l] >> 2k & 3;
 * x = d * scales[i/16] * ((low | high << 4) - 32) */
typedef struct dt_block_q6_k {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
} dt_block_q6_k;

/* Q8_K: activations for the K-quant dot products. */
typedef struct dt_block_q8_k {
    float d;            /* x = q * d */
    int8_t qs[256];
    int16_t bsums[16];  /* sum of qs over each group of 16 */
} dt_block_q8_k;

_Static_assert(sizeof(dt_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(dt_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(dt_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(dt_block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(dt_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(dt_block_q2_k) == 84, "q2_k layout");
_Static_assert(sizeof(dt_block_q3_k) == 110, "q3_k layout");
_Static_assert(sizeof(dt_block_q4_k) == 144, "q4_k layout");
_Static_assert(sizeof(dt_block_q5_k) == 176, "q5_k layout");
_Static_assert(sizeof(dt_block_q6_k) == 210, "q6_k layout");
_Static_assert(sizeof(dt_block_q8_k) == 292, "q8_k layout");

/* Q4_K / Q5_K: 6-bit scale and min of group g (0..7) from the 12 packed
 * scale bytes (the scalar oracle, and the CPU backend's R4 re-lay) */
static inline void k4_scale_min(const uint8_t *s, int g, int *sc, int *mn)
{
    if (g < 4) {
        *sc = s[g] & 63;
        *mn = s[g + 4] & 63;
    } else {
        *sc = (s[g + 4] & 15) | ((s[g - 4] >> 6) << 4);
        *mn = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
    }
}
