/* test_cuda_emul.cu - the CUDA weight layout and decoders of
 * kernels/cuda/cuda_quant.cuh, run on the CPU (no GPU needed): every weight
 * type is packed into the device layout (qt_pack_row) and every 32-weight
 * task is decoded with the same __host__ __device__ code the kernels use,
 * then compared with the scalar oracle dequantize_row (core/dtype_k.c).
 * Also checks that the tasks cover each column exactly once and that the
 * row pitch keeps rows 16-byte aligned. Random blocks: random bytes with
 * sane f16 scales. Exits non-zero on any mismatch. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long qt_misaligned;
__attribute__((unused)) static void qt_align_check(const void *p, int n)
{
    if ((uintptr_t)p % (uintptr_t)n && qt_misaligned++ < 5)
        fprintf(stderr, "FAIL: %d-byte load from %p is misaligned\n", n, p);
}
#define QT_HOST_CHECK_ALIGN(p, n) qt_align_check((p), (n))
#include "../../kernels/cuda/cuda_quant.cuh"
#include "testutil.h"

/* offsets of the f16 fields (scales) inside each ggml block, which must hold
 * finite values: random bytes there could be inf/nan */
static void fix_scales(int type, uint8_t *row, int64_t ne0, uint64_t *rng)
{
    const dtype_traits *tr = dtype_get(type);
    int64_t nb = ne0 / tr->block_size;
    int offs[2] = {-1, -1};
    switch (type) {
    case DT_Q4_0: case DT_Q5_0: case DT_Q8_0: offs[0] = 0; break;
    case DT_Q4_1: case DT_Q5_1: offs[0] = 0, offs[1] = 2; break;
    case DT_Q2_K: offs[0] = 80, offs[1] = 82; break;
    case DT_Q3_K: offs[0] = 108; break;
    case DT_Q4_K: case DT_Q5_K: offs[0] = 0, offs[1] = 2; break;
    case DT_Q6_K: offs[0] = 208; break;
    default: return;
    }
    for (int64_t b = 0; b < nb; b++)
        for (int k = 0; k < 2; k++)
            if (offs[k] >= 0) {
                uint16_t h = f32_to_fp16(tu_rand_f(rng) * 0.05f);
                memcpy(row + b * tr->type_size + offs[k], &h, 2);
            }
}

static void random_row(int type, uint8_t *row, int64_t ne0, uint64_t *rng)
{
    size_t rb = dtype_row_size(type, ne0);
    if (type == DT_F32) {
        for (int64_t i = 0; i < ne0; i++) {
            float f = tu_rand_f(rng) * 3.0f;
            memcpy(row + 4 * i, &f, 4);
        }
        return;
    }
    if (type == DT_F16 || type == DT_BF16) {
        for (int64_t i = 0; i < ne0; i++) {
            float f = tu_rand_f(rng) * 3.0f;
            uint16_t h = type == DT_F16 ? f32_to_fp16(f) : f32_to_bf16(f);
            memcpy(row + 2 * i, &h, 2);
        }
        return;
    }
    for (size_t i = 0; i < rb; i++)
        row[i] = (uint8_t)(tu_rand_u64(rng) >> 56);
    fix_scales(type, row, ne0, rng);
}

template <int T> static int check_type(int64_t ne0, uint64_t *rng)
{
    const int type = T;
    size_t rb = dtype_row_size(type, ne0), pitch = qt_pitch(type, ne0);
    if (!rb || !pitch) {
        fprintf(stderr, "FAIL %s ne0=%lld: no row size (rb %zu, pitch %zu)\n", dtype_name(type),
                (long long)ne0, rb, pitch);
        return 1;
    }
    if (pitch % 16) {
        fprintf(stderr, "FAIL %s: pitch %zu not a multiple of 16\n", dtype_name(type), pitch);
        return 1;
    }
    uint8_t *src = (uint8_t *)malloc(rb);
    uint8_t *dev = (uint8_t *)aligned_alloc(16, pitch);
    float *ref = (float *)malloc(ne0 * sizeof(float));
    float *got = (float *)malloc((ne0 + 32) * sizeof(float));
    int *seen = (int *)calloc(ne0 + 32, sizeof(int));
    int fails = 0;
    for (int rep = 0; rep < 4 && !fails; rep++) {
        random_row(type, src, ne0, rng);
        dequantize_row(type, src, ref, ne0);
        memset(dev, 0xAB, pitch);
        qt_pack_row(type, dev, src, ne0);
        for (int64_t i = 0; i < ne0 + 32; i++)
            got[i] = NAN, seen[i] = 0;
        int64_t nt = qt_tasks(type, ne0);
        for (int64_t i = 0; i < nt; i++) {
            float q[32], sc[2], mn[2];
            int64_t c[2];
            qt_dec<T>::task(dev, ne0, i, q, sc, mn, c);
            for (int h = 0; h < 2; h++)
                for (int l = 0; l < 16; l++) {
                    int64_t col = c[h] + l;
                    if (col < 0 || col >= ((ne0 + 31) / 32) * 32) {
                        fprintf(stderr, "FAIL %s ne0=%lld task %lld: column %lld out of range\n",
                                dtype_name(type), (long long)ne0, (long long)i, (long long)col);
                        fails++;
                        continue;
                    }
                    seen[col]++;
                    got[col] = fmaf(sc[h], q[16 * h + l], mn[h]);
                }
        }
        float amax = 0;
        for (int64_t i = 0; i < ne0; i++)
            amax = fmaxf(amax, fabsf(ref[i]));
        int shown = 0;
        for (int64_t i = 0; i < ne0; i++) {
            float tol = 1e-6f * amax + 1e-30f;
            if (seen[i] != 1 || !(fabsf(got[i] - ref[i]) <= tol)) {
                if (shown++ < 5)
                    fprintf(stderr, "FAIL %s ne0=%lld el %lld: got %.9g want %.9g (seen %d)\n",
                            dtype_name(type), (long long)ne0, (long long)i, got[i], ref[i],
                            seen[i]);
                fails++;
            }
        }
        for (int64_t i = ne0; i < nt * 32; i++) /* padding of float rows decodes to 0 */
            if (seen[i] && got[i] != 0.0f) {
                fprintf(stderr, "FAIL %s ne0=%lld: padding column %lld decodes to %g\n",
                        dtype_name(type), (long long)ne0, (long long)i, got[i]);
                fails++;
                break;
            }
    }
    if (!fails)
        printf("ok   %-5s ne0=%-5lld pitch=%zu (ggml row %zu)\n", dtype_name(type), (long long)ne0,
               pitch, rb);
    free(src);
    free(dev);
    free(ref);
    free(got);
    free(seen);
    return fails ? 1 : 0;
}

int main(void)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int fails = 0;
    const int64_t n32[] = {32, 64, 96, 160, 4096};
    const int64_t nK[] = {256, 512, 1280};
    const int64_t nF[] = {1, 31, 64, 70, 172, 256};
    for (int64_t n : nF) {
        fails += check_type<DT_F32>(n, &rng);
        fails += check_type<DT_F16>(n, &rng);
        fails += check_type<DT_BF16>(n, &rng);
    }
    for (int64_t n : n32) {
        fails += check_type<DT_Q8_0>(n, &rng);
        fails += check_type<DT_Q4_0>(n, &rng);
        fails += check_type<DT_Q4_1>(n, &rng);
        fails += check_type<DT_Q5_0>(n, &rng);
        fails += check_type<DT_Q5_1>(n, &rng);
    }
    for (int64_t n : nK) {
        fails += check_type<DT_Q2_K>(n, &rng);
        fails += check_type<DT_Q3_K>(n, &rng);
        fails += check_type<DT_Q4_K>(n, &rng);
        fails += check_type<DT_Q5_K>(n, &rng);
        fails += check_type<DT_Q6_K>(n, &rng);
    }
    if (qt_misaligned) {
        fprintf(stderr, "test_cuda_emul: %ld misaligned device loads\n", qt_misaligned);
        fails++;
    }
    if (fails) {
        fprintf(stderr, "test_cuda_emul: %d type/size combination(s) failed\n", fails);
        return 1;
    }
    fprintf(stderr, "test_cuda_emul: all checks passed\n");
    return 0;
}
