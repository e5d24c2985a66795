/* bench_common.h - helpers the kernel benchmarks share: a monotonic clock,
 * a double comparator for medians, and random weight matrices (64 distinct
 * rows repeated: quantizing 100M elements would take minutes, and the
 * contents do not change the speed). Header-only; each bench includes it
 * once. */
#ifndef CARAVAN_BENCH_COMMON_H
#define CARAVAN_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "testutil.h"

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* rows x n weights of `type` (any type, float ones included), 64-aligned */
static inline uint8_t *make_weights(int type, int64_t n, int64_t rows, uint64_t *rng)
{
    size_t rb = dtype_row_size(type, n);
    uint8_t *w = aligned_alloc(64, (rb * (size_t)rows + 63) & ~(size_t)63);
    float *tmp = malloc((size_t)n * 4);
    if (!w || !tmp) {
        fprintf(stderr, "bench: out of memory for %lld x %lld weights\n", (long long)rows, (long long)n);
        exit(1);
    }
    int64_t nd = rows < 64 ? rows : 64;
    for (int64_t r = 0; r < nd; r++) {
        for (int64_t i = 0; i < n; i++)
            tmp[i] = tu_rand_f(rng) * (1.0f + (float)((i / 32) % 4));
        uint8_t *dst = w + r * rb;
        if (type == DT_F32)
            memcpy(dst, tmp, (size_t)n * 4);
        else if (type == DT_F16)
            for (int64_t i = 0; i < n; i++)
                ((uint16_t *)dst)[i] = f32_to_fp16(tmp[i]);
        else if (type == DT_BF16)
            for (int64_t i = 0; i < n; i++)
                ((uint16_t *)dst)[i] = f32_to_bf16(tmp[i]);
        else
            quantize_row(type, tmp, dst, n);
    }
    for (int64_t r = nd; r < rows; r++)
        memcpy(w + r * rb, w + (r % nd) * rb, rb);
    free(tmp);
    return w;
}

#endif
