/* cuda_quant.cuh - the device layout of every weight type and its decoding,
 * shared by the CUDA kernels (backend_cuda.cu) and the CPU emulation test
 * (tests/gpu/test_cuda_emul.cu), which checks it against the scalar oracle
 * dequantize_row() of core/dtype_k.c without a GPU.
 *
 * Device layout (made on the host by qt_pack_row at upload). Every row
 * starts 16-byte aligned; the row pitch is qt_pitch(type, ne0):
 *   F32/F16/BF16   the values, zero-padded to a multiple of 32 elements.
 *   Q8_0           | qs: nb x 32 int8 | d: nb x f16 |            (structure of arrays)
 *   Q4_0           | qs: nb x 16 | d: nb x f16 |
 *   Q4_1           | qs: nb x 16 | dm: nb x (f16 d, f16 m) |
 *   Q5_0           | qs: nb x 16 | qh: nb x u32 | d: nb x f16 |
 *   Q5_1           | qs: nb x 16 | qh: nb x u32 | dm: nb x (f16, f16) |
 *   K-quants       the ggml block unchanged, each padded to a multiple of 16
 *                  bytes (Q2_K 84->96, Q3_K 110->112, Q4_K 144, Q5_K 176, Q6_K 210->224).
 * Splitting the 32-element blocks into arrays lets a lane fetch its 16 or
 * 32 quant bytes with aligned 16-byte loads; padding the K blocks does the same.
 *
 * Decoding works in "tasks" of 32 weights: task i of a row yields q[32] (small
 * exact integers or the float values), two runs of 16 columns c[0], c[1],
 * and per run a scale sc[h] and offset mn[h]: w[16h + l] = sc[h] * q[16h + l] + mn[h].
 * A row has qt_tasks(type, ne0) tasks. This is not a header for C: it is
 * included by .cu files only. */
#pragma once
#include <stdint.h>
#include <string.h>

#include <cuda_fp16.h>

extern "C" {
#include "../../core/dtype.h"
}

#define QT_HD __host__ __device__ __forceinline__
/* unroll hint for the device pass only (the host compiler warns on the pragma) */
#ifdef __CUDA_ARCH__
#define QT_UNROLL _Pragma("unroll")
#else
#define QT_UNROLL
#endif

/* exact float of a small unsigned integer (< 2^23): OR into the mantissa of
 * 2^23 and subtract, which avoids the slow integer-to-float conversion. */
QT_HD float qt_u2f(uint32_t q)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(0x4B000000u | q) - 8388608.0f;
#else
    uint32_t b = 0x4B000000u | q;
    float f;
    memcpy(&f, &b, 4);
    return f - 8388608.0f;
#endif
}

QT_HD float qt_h2f(uint16_t h)
{
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half(h));
#else
    return fp16_to_f32(h);
#endif
}

QT_HD float qt_bf2f(uint32_t h)
{
    uint32_t b = h << 16;
#ifdef __CUDA_ARCH__
    return __uint_as_float(b);
#else
    float f;
    memcpy(&f, &b, 4);
    return f;
#endif
}

/* The CPU emulation test defines QT_HOST_CHECK_ALIGN(p, n) to catch a
 * misaligned load, which the CPU would forgive and the GPU would not. */
#if !defined(__CUDA_ARCH__) && defined(QT_HOST_CHECK_ALIGN)
#define QT_ALIGN_CHECK(p, n) QT_HOST_CHECK_ALIGN((p), (n))
#else
#define QT_ALIGN_CHECK(p, n) ((void)0)
#endif
QT_HD uint4 qt_ld16(const uint8_t *p)
{
    QT_ALIGN_CHECK(p, 16);
    return *(const uint4 *)p;
}
QT_HD uint32_t qt_ld4(const uint8_t *p)
{
    QT_ALIGN_CHECK(p, 4);
    return *(const uint32_t *)p;
}
QT_HD uint16_t qt_ld2(const uint8_t *p)
{
    QT_ALIGN_CHECK(p, 2);
    return *(const uint16_t *)p;
}

/* 16 bytes of a uint4 as 4 words */
#define QT_W(v, k) ((k) == 0 ? (v).x : (k) == 1 ? (v).y : (k) == 2 ? (v).z : (v).w)
/* byte j (0..15) of a uint4 */
QT_HD uint32_t qt_byte(const uint4 &v, int j)
{
    uint32_t w = QT_W(v, j >> 2);
    return (w >> (8 * (j & 3))) & 0xFFu;
}

static inline int64_t qt_round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

/* bytes of one K-quant block on the device (padded to 16) */
QT_HD int qt_kstride(int type)
{
    switch (type) {
    case DT_Q2_K: return 96;
    case DT_Q3_K: return 112;
    case DT_Q4_K: return 144;
    case DT_Q5_K: return 176;
    case DT_Q6_K: return 224;
    default: return 0;
    }
}

/* elements per block on the device (float types: groups of 32) */
QT_HD int64_t qt_block(int type)
{
    switch (type) {
    case DT_Q2_K: case DT_Q3_K: case DT_Q4_K: case DT_Q5_K: case DT_Q6_K: return 256;
    default: return 32;
    }
}

/* Device bytes per row; 0 for a type this layout does not know. */
static inline size_t qt_pitch(int type, int64_t ne0)
{
    int64_t nb = (ne0 + 31) / 32; /* float types: padded to 32 */
    size_t b;
    switch (type) {
    case DT_F32: b = (size_t)nb * 32 * 4; break;
    case DT_F16: case DT_BF16: b = (size_t)nb * 32 * 2; break;
    case DT_Q8_0: b = (size_t)nb * 34; break;
    case DT_Q4_0: b = (size_t)nb * 18; break;
    case DT_Q4_1: b = (size_t)nb * 20; break;
    case DT_Q5_0: b = (size_t)nb * 22; break;
    case DT_Q5_1: b = (size_t)nb * 24; break;
    case DT_Q2_K: case DT_Q3_K: case DT_Q4_K: case DT_Q5_K: case DT_Q6_K:
        b = (size_t)(ne0 / 256) * qt_kstride(type);
        break;
    default: return 0;
    }
    return (size_t)qt_round_up((int64_t)b, 16);
}

static inline int64_t qt_tasks(int type, int64_t ne0) { return (ne0 + 31) / 32; }

/* Host: one ggml row (ne0 elements of `type`) -> device row layout (dst has
 * qt_pitch bytes, fully written including padding). */
static inline void qt_pack_row(int type, uint8_t *dst, const uint8_t *src, int64_t ne0)
{
    size_t pitch = qt_pitch(type, ne0);
    memset(dst, 0, pitch);
    int64_t nb = ne0 / 32;
    switch (type) {
    case DT_F32: memcpy(dst, src, (size_t)ne0 * 4); break;
    case DT_F16: case DT_BF16: memcpy(dst, src, (size_t)ne0 * 2); break;
    case DT_Q8_0:
        for (int64_t b = 0; b < nb; b++) {
            memcpy(dst + b * 32, src + b * 34 + 2, 32);
            memcpy(dst + nb * 32 + b * 2, src + b * 34, 2);
        }
        break;
    case DT_Q4_0:
        for (int64_t b = 0; b < nb; b++) {
            memcpy(dst + b * 16, src + b * 18 + 2, 16);
            memcpy(dst + nb * 16 + b * 2, src + b * 18, 2);
        }
        break;
    case DT_Q4_1:
        for (int64_t b = 0; b < nb; b++) {
            memcpy(dst + b * 16, src + b * 20 + 4, 16);
            memcpy(dst + nb * 16 + b * 4, src + b * 20, 4);
        }
        break;
    case DT_Q5_0:
        for (int64_t b = 0; b < nb; b++) {
            memcpy(dst + b * 16, src + b * 22 + 6, 16);
            memcpy(dst + nb * 16 + b * 4, src + b * 22 + 2, 4);
            memcpy(dst + nb * 20 + b * 2, src + b * 22, 2);
        }
        break;
    case DT_Q5_1:
        for (int64_t b = 0; b < nb; b++) {
            memcpy(dst + b * 16, src + b * 24 + 8, 16);
            memcpy(dst + nb * 16 + b * 4, src + b * 24 + 4, 4);
            memcpy(dst + nb * 20 + b * 4, src + b * 24, 4);
        }
        break;
    default: { /* K-quants: copy each block into its padded slot */
        int ks = qt_kstride(type);
        size_t ts = dtype_get(type)->type_size;
        for (int64_t b = 0; b < ne0 / 256; b++)
            memcpy(dst + b * ks, src + b * ts, ts);
    }
    }
}

/* byte b (0..11, run-time) of three words, by selects rather than a local array */
QT_HD uint32_t qt_byte12(uint32_t w0, uint32_t w1, uint32_t w2, int b)
{
    uint32_t w = b < 4 ? w0 : b < 8 ? w1 : w2;
    return (w >> (8 * (b & 3))) & 0xFFu;
}

/* 6-bit scale and min of group j (0..7) of a Q4_K/Q5_K block; w0..w2 = the 12 scale bytes. */
QT_HD void qt_scale_min_k4(int j, uint32_t w0, uint32_t w1, uint32_t w2, uint32_t *sc, uint32_t *m)
{
    if (j < 4) {
        *sc = qt_byte12(w0, w1, w2, j) & 63;
        *m = qt_byte12(w0, w1, w2, j + 4) & 63;
    } else {
        uint32_t a = qt_byte12(w0, w1, w2, j + 4);
        *sc = (a & 0xF) | ((qt_byte12(w0, w1, w2, j - 4) >> 6) << 4);
        *m = (a >> 4) | ((qt_byte12(w0, w1, w2, j) >> 6) << 4);
    }
}

/* The decoder of task i (32 weights) of one device row. ne0 is the row length
 * (float types: reads past ne0 inside the padded row give 0). */
template <int T> struct qt_dec;

template <> struct qt_dec<DT_F32> {
    static constexpr bool has_min = false, scaled = false;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *p = row + i * 128;
QT_UNROLL
        for (int k = 0; k < 8; k++) {
            uint4 v = qt_ld16(p + 16 * k);
            uint32_t w4[4] = {v.x, v.y, v.z, v.w};
QT_UNROLL
            for (int j = 0; j < 4; j++) {
                float f;
                memcpy(&f, &w4[j], 4);
                q[4 * k + j] = f;
            }
        }
        sc[0] = sc[1] = 1.0f;
        mn[0] = mn[1] = 0.0f;
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

template <> struct qt_dec<DT_F16> {
    static constexpr bool has_min = false, scaled = false;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *p = row + i * 64;
QT_UNROLL
        for (int k = 0; k < 4; k++) {
            uint4 v = qt_ld16(p + 16 * k);
            uint32_t w4[4] = {v.x, v.y, v.z, v.w};
QT_UNROLL
            for (int j = 0; j < 4; j++) {
                q[8 * k + 2 * j] = qt_h2f((uint16_t)(w4[j] & 0xFFFF));
                q[8 * k + 2 * j + 1] = qt_h2f((uint16_t)(w4[j] >> 16));
            }
        }
        sc[0] = sc[1] = 1.0f;
        mn[0] = mn[1] = 0.0f;
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

template <> struct qt_dec<DT_BF16> {
    static constexpr bool has_min = false, scaled = false;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *p = row + i * 64;
QT_UNROLL
        for (int k = 0; k < 4; k++) {
            uint4 v = qt_ld16(p + 16 * k);
            uint32_t w4[4] = {v.x, v.y, v.z, v.w};
QT_UNROLL
            for (int j = 0; j < 4; j++) {
                q[8 * k + 2 * j] = qt_bf2f(w4[j] & 0xFFFF);
                q[8 * k + 2 * j + 1] = qt_bf2f(w4[j] >> 16);
            }
        }
        sc[0] = sc[1] = 1.0f;
        mn[0] = mn[1] = 0.0f;
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

template <> struct qt_dec<DT_Q8_0> {
    static constexpr bool has_min = false, scaled = true;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        int64_t nb = ne0 / 32;
        uint4 a = qt_ld16(row + i * 32), b = qt_ld16(row + i * 32 + 16);
        float d = qt_h2f(qt_ld2(row + nb * 32 + i * 2));
        uint32_t w8[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
QT_UNROLL
        for (int k = 0; k < 8; k++) {
            uint32_t w = w8[k] ^ 0x80808080u; /* int8 -> uint8 + 128 */
QT_UNROLL
            for (int j = 0; j < 4; j++)
                q[4 * k + j] = qt_u2f((w >> (8 * j)) & 0xFF) - 128.0f;
        }
        sc[0] = sc[1] = d;
        mn[0] = mn[1] = 0.0f;
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

/* nibbles of 16 bytes: low -> q[0..15], high -> q[16..31], each minus `off` */
QT_HD void qt_nibbles(const uint4 &v, float q[32], float off)
{
    uint32_t w4[4] = {v.x, v.y, v.z, v.w};
QT_UNROLL
    for (int k = 0; k < 4; k++)
QT_UNROLL
        for (int j = 0; j < 4; j++) {
            uint32_t b = (w4[k] >> (8 * j)) & 0xFF;
            q[4 * k + j] = qt_u2f(b & 0xF) - off;
            q[16 + 4 * k + j] = qt_u2f(b >> 4) - off;
        }
}

/* nibbles plus a 5th bit from qh: bit l -> element l, bit l+16 -> element 16+l */
QT_HD void qt_nibbles5(const uint4 &v, uint32_t qh, float q[32], float off)
{
    uint32_t w4[4] = {v.x, v.y, v.z, v.w};
QT_UNROLL
    for (int k = 0; k < 4; k++)
QT_UNROLL
        for (int j = 0; j < 4; j++) {
            int l = 4 * k + j;
            uint32_t b = (w4[k] >> (8 * j)) & 0xFF;
            q[l] = qt_u2f((b & 0xF) | (((qh >> l) & 1) << 4)) - off;
            q[16 + l] = qt_u2f((b >> 4) | (((qh >> (l + 16)) & 1) << 4)) - off;
        }
}

template <> struct qt_dec<DT_Q4_0> {
    static constexpr bool has_min = false, scaled = true;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        int64_t nb = ne0 / 32;
        uint4 v = qt_ld16(row + i * 16);
        float d = qt_h2f(qt_ld2(row + nb * 16 + i * 2));
        qt_nibbles(v, q, 8.0f);
        sc[0] = sc[1] = d;
        mn[0] = mn[1] = 0.0f;
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

template <> struct qt_dec<DT_Q4_1> {
    static constexpr bool has_min = true, scaled = true;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        int64_t nb = ne0 / 32;
        uint4 v = qt_ld16(row + i * 16);
        uint32_t dm = qt_ld4(row + nb * 16 + i * 4);
        qt_nibbles(v, q, 0.0f);
        sc[0] = sc[1] = qt_h2f((uint16_t)(dm & 0xFFFF));
        mn[0] = mn[1] = qt_h2f((uint16_t)(dm >> 16));
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

template <> struct qt_dec<DT_Q5_0> {
    static constexpr bool has_min = false, scaled = true;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        int64_t nb = ne0 / 32;
        uint4 v = qt_ld16(row + i * 16);
        uint32_t qh = qt_ld4(row + nb * 16 + i * 4);
        float d = qt_h2f(qt_ld2(row + nb * 20 + i * 2));
        qt_nibbles5(v, qh, q, 16.0f);
        sc[0] = sc[1] = d;
        mn[0] = mn[1] = 0.0f;
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

template <> struct qt_dec<DT_Q5_1> {
    static constexpr bool has_min = true, scaled = true;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        int64_t nb = ne0 / 32;
        uint4 v = qt_ld16(row + i * 16);
        uint32_t qh = qt_ld4(row + nb * 16 + i * 4);
        uint32_t dm = qt_ld4(row + nb * 20 + i * 4);
        qt_nibbles5(v, qh, q, 0.0f);
        sc[0] = sc[1] = qt_h2f((uint16_t)(dm & 0xFFFF));
        mn[0] = mn[1] = qt_h2f((uint16_t)(dm >> 16));
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

/* Q2_K task (n = half 0..1, j = shift 0..3): elements 128n + 32j + l;
 * l < 16 from qs[32n + l], l >= 16 from qs[32n + l]; scale index 8n + 2j + l/16. */
template <> struct qt_dec<DT_Q2_K> {
    static constexpr bool has_min = true, scaled = true;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *B = row + (i >> 3) * 96;
        int sub = (int)(i & 7), n = sub >> 2, j = sub & 3;
        uint4 s = qt_ld16(B);
        uint4 qa = qt_ld16(B + 16 + 32 * n), qb = qt_ld16(B + 16 + 32 * n + 16);
        uint32_t ddm = qt_ld4(B + 80);
        float d = qt_h2f((uint16_t)(ddm & 0xFFFF)), dmin = qt_h2f((uint16_t)(ddm >> 16));
QT_UNROLL
        for (int l = 0; l < 16; l++) {
            q[l] = qt_u2f((qt_byte(qa, l) >> (2 * j)) & 3);
            q[16 + l] = qt_u2f((qt_byte(qb, l) >> (2 * j)) & 3);
        }
QT_UNROLL
        for (int h = 0; h < 2; h++) {
            uint32_t sb = qt_byte(s, 8 * n + 2 * j + h);
            sc[h] = d * qt_u2f(sb & 0xF);
            mn[h] = -dmin * qt_u2f(sb >> 4);
        }
        int64_t base = (i >> 3) * 256 + 128 * n + 32 * j;
        c[0] = base;
        c[1] = base + 16;
    }
};

/* Q3_K task (n, j) as Q2_K; high bit (hmask[l] >> (4n + j)) & 1. */
template <> struct qt_dec<DT_Q3_K> {
    static constexpr bool has_min = false, scaled = true;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *B = row + (i >> 3) * 112;
        int sub = (int)(i & 7), n = sub >> 2, j = sub & 3;
        uint4 ha = qt_ld16(B), hb = qt_ld16(B + 16);
        uint4 qa = qt_ld16(B + 32 + 32 * n), qb = qt_ld16(B + 32 + 32 * n + 16);
        uint4 st = qt_ld16(B + 96); /* scales[12] | d | pad */
        float d = qt_h2f((uint16_t)(st.w & 0xFFFF));
        int hs = 4 * n + j;
QT_UNROLL
        for (int l = 0; l < 16; l++) {
            q[l] = qt_u2f(((qt_byte(qa, l) >> (2 * j)) & 3) | (((qt_byte(ha, l) >> hs) & 1) << 2)) -
                   4.0f;
            q[16 + l] =
                qt_u2f(((qt_byte(qb, l) >> (2 * j)) & 3) | (((qt_byte(hb, l) >> hs) & 1) << 2)) -
                4.0f;
        }
QT_UNROLL
        for (int h = 0; h < 2; h++) {
            int g = 8 * n + 2 * j + h;
            uint32_t lo = (qt_byte(st, g & 7) >> (4 * (g >> 3))) & 0xF;
            uint32_t hi = (qt_byte(st, 8 + (g & 3)) >> (2 * (g >> 2))) & 3;
            sc[h] = d * (qt_u2f(lo | (hi << 4)) - 32.0f);
            mn[h] = 0.0f;
        }
        int64_t base = (i >> 3) * 256 + 128 * n + 32 * j;
        c[0] = base;
        c[1] = base + 16;
    }
};

/* Q4_K task (g = 64-group 0..3, h = half 0..1): qs bytes 32g + 16h .. +15;
 * low nibbles -> elements 64g + 16h + l (scale 2g), high -> 64g + 32 + 16h + l (2g+1). */
template <> struct qt_dec<DT_Q4_K> {
    static constexpr bool has_min = true, scaled = true;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *B = row + (i >> 3) * 144;
        int sub = (int)(i & 7), g = sub >> 1, h = sub & 1;
        uint4 hd = qt_ld16(B); /* d | dmin | scales[12] */
        uint4 v = qt_ld16(B + 16 + 32 * g + 16 * h);
        float d = qt_h2f((uint16_t)(hd.x & 0xFFFF)), dmin = qt_h2f((uint16_t)(hd.x >> 16));
        qt_nibbles(v, q, 0.0f);
QT_UNROLL
        for (int k = 0; k < 2; k++) {
            uint32_t scv, mv;
            qt_scale_min_k4(2 * g + k, hd.y, hd.z, hd.w, &scv, &mv);
            sc[k] = d * qt_u2f(scv);
            mn[k] = -dmin * qt_u2f(mv);
        }
        int64_t base = (i >> 3) * 256 + 64 * g + 16 * h;
        c[0] = base;
        c[1] = base + 32;
    }
};

template <> struct qt_dec<DT_Q5_K> {
    static constexpr bool has_min = true, scaled = true;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *B = row + (i >> 3) * 176;
        int sub = (int)(i & 7), g = sub >> 1, h = sub & 1;
        uint4 hd = qt_ld16(B);
        uint4 qh = qt_ld16(B + 16 + 16 * h);
        uint4 v = qt_ld16(B + 48 + 32 * g + 16 * h);
        float d = qt_h2f((uint16_t)(hd.x & 0xFFFF)), dmin = qt_h2f((uint16_t)(hd.x >> 16));
QT_UNROLL
        for (int l = 0; l < 16; l++) {
            uint32_t b = qt_byte(v, l), hb = qt_byte(qh, l);
            q[l] = qt_u2f((b & 0xF) | (((hb >> (2 * g)) & 1) << 4));
            q[16 + l] = qt_u2f((b >> 4) | (((hb >> (2 * g + 1)) & 1) << 4));
        }
QT_UNROLL
        for (int k = 0; k < 2; k++) {
            uint32_t scv, mv;
            qt_scale_min_k4(2 * g + k, hd.y, hd.z, hd.w, &scv, &mv);
            sc[k] = d * qt_u2f(scv);
            mn[k] = -dmin * qt_u2f(mv);
        }
        int64_t base = (i >> 3) * 256 + 64 * g + 16 * h;
        c[0] = base;
        c[1] = base + 32;
    }
};

/* Q6_K task (n = 128-half, k = quarter 0..3): elements 128n + 32k + l, l < 32:
 * low 4 = ql[64n + 32(k&1) + l] >> 4(k>>1), high 2 = qh[32n + l] >> 2k; scale 8n + 2k + l/16. */
template <> struct qt_dec<DT_Q6_K> {
    static constexpr bool has_min = false, scaled = true;
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, float q[32], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *B = row + (i >> 3) * 224;
        int sub = (int)(i & 7), n = sub >> 2, k = sub & 3;
        uint4 la = qt_ld16(B + 64 * n + 32 * (k & 1)), lb = qt_ld16(B + 64 * n + 32 * (k & 1) + 16);
        uint4 ha = qt_ld16(B + 128 + 32 * n), hb = qt_ld16(B + 128 + 32 * n + 16);
        uint4 sv = qt_ld16(B + 192);
        float d = qt_h2f(qt_ld2(B + 208));
        int ls = 4 * (k >> 1), hs = 2 * k;
QT_UNROLL
        for (int l = 0; l < 16; l++) {
            q[l] = qt_u2f(((qt_byte(la, l) >> ls) & 0xF) | (((qt_byte(ha, l) >> hs) & 3) << 4)) -
                   32.0f;
            q[16 + l] =
                qt_u2f(((qt_byte(lb, l) >> ls) & 0xF) | (((qt_byte(hb, l) >> hs) & 3) << 4)) -
                32.0f;
        }
QT_UNROLL
        for (int h = 0; h < 2; h++) {
            int8_t s8 = (int8_t)qt_byte(sv, 8 * n + 2 * k + h);
            sc[h] = d * (float)s8;
            mn[h] = 0.0f;
        }
        int64_t base = (i >> 3) * 256 + 128 * n + 32 * k;
        c[0] = base;
        c[1] = base + 16;
    }
};

/* Call F<T>::run(args...) for a runtime type id; returns false if the type has no decoder. */
#define QT_FOR_TYPES(X)                                                                            \
    X(DT_F32) X(DT_F16) X(DT_BF16) X(DT_Q8_0) X(DT_Q4_0) X(DT_Q4_1) X(DT_Q5_0) X(DT_Q5_1)        \
        X(DT_Q2_K) X(DT_Q3_K) X(DT_Q4_K) X(DT_Q5_K) X(DT_Q6_K)

static inline bool qt_type_supported(int type)
{
    switch (type) {
#define QT_CASE(t) case t:
        QT_FOR_TYPES(QT_CASE)
#undef QT_CASE
        return true;
    default: return false;
    }
}
