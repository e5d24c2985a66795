/* dtype.h - weight types with the exact GGUF/ggml block layouts, and their
 * scalar reference kernels: dequantize, dot product, quantize.
 *
 * The scalar functions here are the oracle that SIMD (kernels/cpu) and CUDA
 * (kernels/cuda) kernels are tested against. Block layouts (bytes):
 *   Q4_0  32 el, 18 B: | d f16 | qs[16] nibbles: x = (q - 8) * d; low nibbles el 0..15, high 16..31 |
 *   Q4_1  32 el, 20 B: | d f16 | m f16 | qs[16] |            x = q * d + m
 *   Q5_0  32 el, 22 B: | d f16 | qh u32 (5th bits) | qs[16] | x = (q - 16) * d
 *   Q5_1  32 el, 24 B: | d f16 | m f16 | qh u32 | qs[16] |   x = q * d + m
 *   Q8_0  32 el, 34 B: | d f16 | qs[32] int8 |               x = q * d
 *   Q2_K 256 el, 84 B: | scales[16] (4b scale|4b min) | qs[64] | d f16 | dmin f16 |
 *   Q3_K 256 el,110 B: | hmask[32] | qs[64] | scales[12] (16 x 6-bit) | d f16 |
 *   Q4_K 256 el,144 B: | d f16 | dmin f16 | scales[12] (8 x 6-bit scale, 8 x 6-bit min) | qs[128] |
 *   Q5_K 256 el,176 B: | d f16 | dmin f16 | scales[12] | qh[32] | qs[128] |
 *   Q6_K 256 el,210 B: | ql[128] | qh[64] | scales[16] int8 | d f16 |
 *   Q8_K 256 el,292 B: | d f32 | qs[256] int8 | bsums[16] int16 |   (activations only)
 *   F32 4 B, F16 2 B (IEEE half), BF16 2 B (top half of an f32).
 * The same layouts as C structs (dt_block_q4_0 ...) for SIMD/CUDA code: core/dtype_blocks.h. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ggml type ids as stored in GGUF tensor infos. */
typedef enum dtype {
    DT_F32 = 0,
    DT_F16 = 1,
    DT_Q4_0 = 2,
    DT_Q4_1 = 3,
    DT_Q5_0 = 6,
    DT_Q5_1 = 7,
    DT_Q8_0 = 8,
    DT_Q8_1 = 9,
    DT_Q2_K = 10,
    DT_Q3_K = 11,
    DT_Q4_K = 12,
    DT_Q5_K = 13,
    DT_Q6_K = 14,
    DT_Q8_K = 15,
    DT_I8 = 24,
    DT_I16 = 25,
    DT_I32 = 26,
    DT_I64 = 27,
    DT_F64 = 28,
    DT_BF16 = 30,
    DT_COUNT = 40 /* upper bound of ids we know names for */
} dtype;

typedef struct dtype_traits {
    const char *name;   /* "Q4_K" */
    int64_t block_size; /* elements per block (1 for float types) */
    size_t type_size;   /* bytes per block */
    bool known;         /* id is a valid ggml type (size can be computed) */
    bool supported;     /* we can compute with it (dequantize + dot) */
    bool can_quantize;  /* quantize_row implemented */
} dtype_traits;

const dtype_traits *dtype_get(int type); /* never NULL; .known false for bad ids */
const char *dtype_name(int type);        /* "F32", or "type#N" for unknown ids */
int dtype_from_name(const char *name);   /* case-insensitive; -1 if unknown */
/* Bytes for a row of n elements; 0 if n is not a multiple of the block size. */
size_t dtype_row_size(int type, int64_t n);

/* half/bfloat16 conversions (exact round-to-nearest-even). */
float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

/* Scalar reference kernels. n must be a multiple of the type's block size.
 * dequantize_row: w (row of n elements in `type`) -> out[n] float.
 * dot_row:        sum_i dequant(w)[i] * x[i] (float accumulation per block);
 *                 equals dot(dequantize(w), x) within float rounding.
 * quantize_row:   x[n] -> w; returns false if the type has no quantizer. */
void dequantize_row(int type, const void *w, float *out, int64_t n);
float dot_row(int type, const void *w, const float *x, int64_t n);
bool quantize_row(int type, const float *x, void *w, int64_t n);

/* Activation quantization used by integer dot kernels (kernels/cpu):
 * Q8_0 blocks for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 weights, Q8_K for the K-quants.
 * vec_dot_q8 is the scalar oracle of the integer path: weights `type` times
 * activations already quantized to dtype_vec_dot_type(type). */
int dtype_vec_dot_type(int type); /* DT_Q8_0, DT_Q8_K, or DT_F32 for float weights; -1 if no dot */
void quantize_row_q8_0(const float *x, void *out, int64_t n);
void quantize_row_q8_k(const float *x, void *out, int64_t n);
float vec_dot_q8(int type, const void *w, const void *xq, int64_t n);
