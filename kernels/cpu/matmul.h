/* matmul.h - the CPU matrix products for every weight type: scalar
 * reference (dot_row from core/dtype.c) and SIMD paths chosen at run time
 * (kernels/cpu: files named *_avx2.c, *_avx512.c), parallel over the thread pool. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "../backend.h"
#include "threadpool.h"

typedef enum cpu_level {
    CPU_SCALAR = 0,
    CPU_AVX2 = 1,   /* AVX2 + FMA + F16C */
    CPU_AVX512 = 2, /* AVX-512 F/BW/VL (+VNNI, BF16 when present) */
} cpu_level;

/* CPU feature bits (CPUID, already masked by what the OS saves in XCR0). */
typedef struct cpu_features {
    int avx2;       /* AVX2 + FMA + F16C + BMI2 */
    int avx512f, avx512bw, avx512vl, avx512dq;
    int avx512vnni; /* VPDPBUSD on zmm */
    int avx512bf16; /* VDPBF16PS */
    int avx_vnni;   /* VEX-encoded VPDPBUSD on ymm (not used yet) */
} cpu_features;
const cpu_features *cpu_features_get(void);

/* Best level this CPU supports (CPUID + OS support of the registers). */
cpu_level cpu_level_detect(void);
/* Parse "scalar" | "avx2" | "avx512"; -1 if unknown. */
int cpu_level_parse(const char *s);
const char *cpu_level_name(cpu_level l);

typedef struct cpu_matmul cpu_matmul; /* per-backend state: scratch for quantized activations */
cpu_matmul *cpu_matmul_create(threadpool *tp, cpu_level level);
void cpu_matmul_free(cpu_matmul *mm);
/* Level actually used (the requested one capped at what the CPU has). */
cpu_level cpu_matmul_level(const cpu_matmul *mm);
/* y (n_tok, w->ne1) = x (n_tok, w->ne0) @ W^T, W in host memory. */
void cpu_matmul_run(cpu_matmul *mm, float *y, const be_weight *w, const float *x, int64_t n_tok);
/* Re-lay a weight in place, once, at load, for the one-token kernels of
 * mm's level (the row-interleaved R4 layouts of cpu_kernels.h) when its
 * type has one there and its rows come in whole groups of 4; the groups
 * are split over mm's threads. w->data must be
 * writable, and from then on the weight is read only by cpu_matmul_run
 * (which unpacks groups where a kernel wants standard rows), never as
 * standard rows (an embedding lookup). Marks the weight through w->priv.
 * Returns true when it re-laid the weight; false leaves it untouched (no
 * layout for the type or level, a row count not a multiple of 4, or no
 * memory for the threads' 4-row buffers). */
bool cpu_weight_repack(cpu_matmul *mm, be_weight *w);
/* The R4 layout of a weight re-laid by cpu_weight_repack, else NULL. */
const struct cpu_repack *cpu_weight_layout(const be_weight *w);

/* The activations of the AVX2 prefill GEMM for Q8_0 weights (gemm_avx2.c,
 * cpu_avx2_quant_p16) in scalar form, the tests' oracle: n (a multiple of
 * 32) floats -> 16-bit levels q[n] with x ~ ds * da[i / 32] * q[i]. One scale
 * for the row (ds = amax / 32767, every da 1; returns 1) when every block
 * of 32 that is not all zero has a maximum of at least amax / 256; else one
 * per block (da = block max / 32767, ds = 1; returns 0). */
int cpu_x16_quantize_ref(const float *x, int64_t n, int16_t *q, float *da, float *ds);
/* Q8_0 row w . those activations, exact integer sums per block */
double cpu_x16_dot_q8_0_ref(const void *w, const int16_t *q, const float *da, float ds, int64_t n);
/* Whether cpu_matmul_run(mm, ...) of a `type` weight with rows of n over
 * n_tok tokens quantizes the activations that way (else as
 * quantize_row_q8_0 / _q8_k for the SIMD levels, not at all for the scalar
 * one). */
bool cpu_matmul_x16(const cpu_matmul *mm, int type, int64_t n, int64_t n_tok);
/* The scalar oracle of one output of cpu_matmul_run(mm, ...): row w (of a
 * `type` weight, n elements) . token x in a product of n_tok tokens: dot_row
 * for the scalar level and float weights, else the integer path on the
 * activations as that path quantizes them (vec_dot_q8 of quantize_row_q8_0
 * / _q8_k, or the x16 functions above). NAN when out of memory. */
double cpu_matmul_ref(const cpu_matmul *mm, int type, const void *w, const float *x, int64_t n,
                      int64_t n_tok);
