/* cuda_mmv2.cuh - decode matrix-vector kernels "v2" (CARAVAN_CUDA_MMV=v2),
 * designed for HBM bandwidth; the default since the H200 run of 2026-11-26
 * showed it correct in every configuration and 2.3-4.8x faster per matvec
 * than v1 (cuda_mmv.cuh, still there: CARAVAN_CUDA_MMV=v1). Instantiated by mmv2_basic.cu and
 * mmv2_k.cu; the __host__ __device__ parts are also run on the CPU by
 * tests/gpu/test_cuda_emul.cu against the scalar oracle.
 *
 * What v1 got wrong (H200, docs/gpu-h200-2026-11-26.txt): every type took
 * ~70 us for 14336x4096 whatever its bytes. Each lane read its own 32-float
 * run of x, so one float4 load of a warp touched 32 cache lines, and x (4 B
 * per weight) was re-read by every row: activation traffic, not weights, set
 * the speed. v2:
 *
 *  - Integer types (Q4_0..Q8_0, Q2_K..Q6_K): x is quantized once per matmul
 *    (and reused by the matmuls that follow on the same x, e.g. Wq/Wk/Wv) to
 *    int8 blocks of 32 with a float scale and per-16 sums ("xq", layout
 *    below). A task (32 weights, as in cuda_quant.cuh) is decoded to 8 words
 *    of int8 lanes and multiplied with __dp4a: x traffic is 1 byte per weight
 *    plus scales, read as one 16-byte load per 16 columns, no float
 *    conversion of the weights at all. Per half-task (16 columns at c):
 *        sum_l w_l x_l ~= sc * dx * dp4a(q, xq) + mn * sx
 *    with w = sc * q + mn (qt_idec), dx the block's x scale and sx = dx *
 *    (sum of the 16 int8 x), so offsets and minimums cost one FMA.
 *  - Float types (F32/F16/BF16): lane l reads 16-byte chunk l, l+32, ... of
 *    each of MMV2_FROWS rows (fully coalesced 512-byte warp loads) and the
 *    matching 4 or 8 floats of x as float4 (a warp reads 1 KiB of x
 *    contiguously; shared by the rows).
 *  - Weights are read with streaming loads (ld.global.cs) so they do not push
 *    x out of L1; x is read through the read-only path.
 *  - The task loop is unrolled MMV2_U times with the loads first, so a warp
 *    has U x 512 B (or more) of weight loads in flight; 4 warps per block,
 *    grids of ne1 / 4 (or / 8) blocks: 14336 rows -> 3584 blocks, > 27 per SM.
 *
 * xq layout, per token row t (pitch mmv2_xq_pitch(ne0), 16-byte aligned):
 *   | qs: ne0 x int8 | d: ne0/32 x float | s: ne0/16 x float (d * sum of 16 qs) | */
#pragma once
#include <math.h>

#include "cuda_quant.cuh"

#define MMV2_WARPS 4 /* warps (rows or row pairs) per block */
#define MMV2_FROWS 2 /* rows per warp of the float kernel */
#define MMV2_MAXM 3  /* weight matrices sharing one x in one launch (Wq Wk Wv, Wgate Wup) */

/* Up to MMV2_MAXM matrices of one type and row length that multiply the same
 * x, in one launch: blocks blk0[i] .. blk0[i+1]-1 do matrix i (rows of W[i],
 * output y[i] with row stride ne1[i]). */
struct mmv2_mats {
    const uint8_t *W[MMV2_MAXM];
    float *y[MMV2_MAXM];
    int64_t ne1[MMV2_MAXM];
    unsigned blk0[MMV2_MAXM + 1];
    int n;
};

/* Which matrix block `block` works on and the first row of warp `warp`
 * (rows_per_warp rows each); false when that row is past the matrix's end. */
QT_HD bool mmv2_mats_row(const mmv2_mats &M, unsigned block, int warp, int rows_per_warp, int *m,
                         int64_t *r0)
{
    static_assert(MMV2_MAXM == 3, "the selects below know 3 matrices");
    const int k = (M.n > 2 && block >= M.blk0[2]) ? 2 : (M.n > 1 && block >= M.blk0[1]) ? 1 : 0;
    const unsigned b0 = k == 0 ? M.blk0[0] : k == 1 ? M.blk0[1] : M.blk0[2];
    const int64_t ne1 = k == 0 ? M.ne1[0] : k == 1 ? M.ne1[1] : M.ne1[2];
    *m = k;
    *r0 = ((int64_t)(block - b0) * MMV2_WARPS + warp) * rows_per_warp;
    return *r0 < ne1;
}

static inline size_t mmv2_xq_pitch(int64_t ne0)
{
    return (size_t)qt_round_up(ne0 + (ne0 / 32) * 4 + (ne0 / 16) * 4, 16);
}

/* signed 8-bit dot product of 4 lanes, accumulated */
QT_HD int qt_dp4a(uint32_t a, uint32_t b, int c)
{
#ifdef __CUDA_ARCH__
    return __dp4a((int)a, (int)b, c);
#else
    for (int k = 0; k < 4; k++)
        c += (int)(int8_t)(a >> (8 * k)) * (int)(int8_t)(b >> (8 * k));
    return c;
#endif
}

/* weight loads: streaming (evict-first) on the device */
QT_HD uint4 qt_ldw16(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    return __ldcs((const uint4 *)p);
#else
    return qt_ld16(p);
#endif
}

/* activation loads: read-only path */
QT_HD uint4 qt_ldx16(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    return __ldg((const uint4 *)p);
#else
    return qt_ld16(p);
#endif
}

QT_HD float4 qt_ldxf4(const float *p)
{
#ifdef __CUDA_ARCH__
    return __ldg((const float4 *)p);
#else
    QT_ALIGN_CHECK(p, 16);
    float4 v;
    memcpy(&v, p, 16);
    return v;
#endif
}

QT_HD float qt_ldxf(const float *p)
{
#ifdef __CUDA_ARCH__
    return __ldg(p);
#else
    QT_ALIGN_CHECK(p, 4);
    return *p;
#endif
}

/* bits 0..3 of b -> bit 0 of bytes 0..3 (the four shifted copies cannot overlap) */
QT_HD uint32_t qt_bits_to_bytes(uint32_t b) { return (b * 0x00204081u) & 0x01010101u; }

/* ---- integer decoders ----------------------------------------------------------
 * Task i of a device row (same tasks and columns c[0], c[1] as qt_dec<T>):
 * q[0..3] hold elements 0..15 (columns c[0]..c[0]+15), q[4..7] elements
 * 16..31 (columns c[1]..), byte b of word k = element 4k + b, as int8;
 * weight = sc[h] * q + mn[h] for half h. */
template <int T> struct qt_idec;

template <> struct qt_idec<DT_Q8_0> {
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, uint32_t q[8], float sc[2],
                           float mn[2], int64_t c[2])
    {
        int64_t nb = ne0 / 32;
        uint4 a = qt_ldw16(row + i * 32), b = qt_ldw16(row + i * 32 + 16);
        float d = qt_h2f(qt_ld2(row + nb * 32 + i * 2));
        q[0] = a.x, q[1] = a.y, q[2] = a.z, q[3] = a.w;
        q[4] = b.x, q[5] = b.y, q[6] = b.z, q[7] = b.w;
        sc[0] = sc[1] = d;
        mn[0] = mn[1] = 0.0f;
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

/* low nibbles -> q[0..3], high -> q[4..7]; qh (if any): bit l -> element l's bit 4 */
QT_HD void qt_inib(const uint4 &v, uint32_t q[8])
{
    uint32_t w4[4] = {v.x, v.y, v.z, v.w};
QT_UNROLL
    for (int k = 0; k < 4; k++) {
        q[k] = w4[k] & 0x0F0F0F0Fu;
        q[4 + k] = (w4[k] >> 4) & 0x0F0F0F0Fu;
    }
}

QT_HD void qt_inib5(const uint4 &v, uint32_t qh, uint32_t q[8])
{
    qt_inib(v, q);
QT_UNROLL
    for (int k = 0; k < 4; k++) {
        q[k] |= qt_bits_to_bytes((qh >> (4 * k)) & 0xF) << 4;
        q[4 + k] |= qt_bits_to_bytes((qh >> (16 + 4 * k)) & 0xF) << 4;
    }
}

template <> struct qt_idec<DT_Q4_0> {
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, uint32_t q[8], float sc[2],
                           float mn[2], int64_t c[2])
    {
        int64_t nb = ne0 / 32;
        uint4 v = qt_ldw16(row + i * 16);
        float d = qt_h2f(qt_ld2(row + nb * 16 + i * 2));
        qt_inib(v, q);
        sc[0] = sc[1] = d;
        mn[0] = mn[1] = -8.0f * d;
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

template <> struct qt_idec<DT_Q4_1> {
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, uint32_t q[8], float sc[2],
                           float mn[2], int64_t c[2])
    {
        int64_t nb = ne0 / 32;
        uint4 v = qt_ldw16(row + i * 16);
        uint32_t dm = qt_ld4(row + nb * 16 + i * 4);
        qt_inib(v, q);
        sc[0] = sc[1] = qt_h2f((uint16_t)(dm & 0xFFFF));
        mn[0] = mn[1] = qt_h2f((uint16_t)(dm >> 16));
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

template <> struct qt_idec<DT_Q5_0> {
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, uint32_t q[8], float sc[2],
                           float mn[2], int64_t c[2])
    {
        int64_t nb = ne0 / 32;
        uint4 v = qt_ldw16(row + i * 16);
        uint32_t qh = qt_ld4(row + nb * 16 + i * 4);
        float d = qt_h2f(qt_ld2(row + nb * 20 + i * 2));
        qt_inib5(v, qh, q);
        sc[0] = sc[1] = d;
        mn[0] = mn[1] = -16.0f * d;
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

template <> struct qt_idec<DT_Q5_1> {
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, uint32_t q[8], float sc[2],
                           float mn[2], int64_t c[2])
    {
        int64_t nb = ne0 / 32;
        uint4 v = qt_ldw16(row + i * 16);
        uint32_t qh = qt_ld4(row + nb * 16 + i * 4);
        uint32_t dm = qt_ld4(row + nb * 20 + i * 4);
        qt_inib5(v, qh, q);
        sc[0] = sc[1] = qt_h2f((uint16_t)(dm & 0xFFFF));
        mn[0] = mn[1] = qt_h2f((uint16_t)(dm >> 16));
        c[0] = 32 * i;
        c[1] = 32 * i + 16;
    }
};

/* Q2_K task (n, j) as qt_dec<DT_Q2_K>: q = (qs >> 2j) & 3 */
template <> struct qt_idec<DT_Q2_K> {
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, uint32_t q[8], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *B = row + (i >> 3) * 96;
        int sub = (int)(i & 7), n = sub >> 2, j = sub & 3;
        uint4 s = qt_ldw16(B);
        uint4 qa = qt_ldw16(B + 16 + 32 * n), qb = qt_ldw16(B + 16 + 32 * n + 16);
        uint32_t ddm = qt_ld4(B + 80);
        float d = qt_h2f((uint16_t)(ddm & 0xFFFF)), dmin = qt_h2f((uint16_t)(ddm >> 16));
        uint32_t a4[4] = {qa.x, qa.y, qa.z, qa.w}, b4[4] = {qb.x, qb.y, qb.z, qb.w};
QT_UNROLL
        for (int k = 0; k < 4; k++) {
            q[k] = (a4[k] >> (2 * j)) & 0x03030303u;
            q[4 + k] = (b4[k] >> (2 * j)) & 0x03030303u;
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

/* Q3_K task (n, j): q = ((qs >> 2j) & 3) | (hmask bit (4n + j)) << 2, weight sc * (q - 4) */
template <> struct qt_idec<DT_Q3_K> {
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, uint32_t q[8], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *B = row + (i >> 3) * 112;
        int sub = (int)(i & 7), n = sub >> 2, j = sub & 3;
        uint4 ha = qt_ldw16(B), hb = qt_ldw16(B + 16);
        uint4 qa = qt_ldw16(B + 32 + 32 * n), qb = qt_ldw16(B + 32 + 32 * n + 16);
        uint4 st = qt_ldw16(B + 96); /* scales[12] | d | pad */
        float d = qt_h2f((uint16_t)(st.w & 0xFFFF));
        int hs = 4 * n + j;
        uint32_t a4[4] = {qa.x, qa.y, qa.z, qa.w}, b4[4] = {qb.x, qb.y, qb.z, qb.w};
        uint32_t ha4[4] = {ha.x, ha.y, ha.z, ha.w}, hb4[4] = {hb.x, hb.y, hb.z, hb.w};
QT_UNROLL
        for (int k = 0; k < 4; k++) {
            q[k] = ((a4[k] >> (2 * j)) & 0x03030303u) | (((ha4[k] >> hs) & 0x01010101u) << 2);
            q[4 + k] = ((b4[k] >> (2 * j)) & 0x03030303u) | (((hb4[k] >> hs) & 0x01010101u) << 2);
        }
QT_UNROLL
        for (int h = 0; h < 2; h++) {
            int g = 8 * n + 2 * j + h;
            uint32_t lo = (qt_byte(st, g & 7) >> (4 * (g >> 3))) & 0xF;
            uint32_t hi = (qt_byte(st, 8 + (g & 3)) >> (2 * (g >> 2))) & 3;
            sc[h] = d * (qt_u2f(lo | (hi << 4)) - 32.0f);
            mn[h] = -4.0f * sc[h];
        }
        int64_t base = (i >> 3) * 256 + 128 * n + 32 * j;
        c[0] = base;
        c[1] = base + 16;
    }
};

/* Q4_K task (g, h): low nibbles of qs bytes 32g + 16h.. at columns 64g + 16h,
 * high nibbles at 64g + 32 + 16h */
template <> struct qt_idec<DT_Q4_K> {
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, uint32_t q[8], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *B = row + (i >> 3) * 144;
        int sub = (int)(i & 7), g = sub >> 1, h = sub & 1;
        uint4 hd = qt_ldw16(B); /* d | dmin | scales[12] */
        uint4 v = qt_ldw16(B + 16 + 32 * g + 16 * h);
        float d = qt_h2f((uint16_t)(hd.x & 0xFFFF)), dmin = qt_h2f((uint16_t)(hd.x >> 16));
        qt_inib(v, q);
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

template <> struct qt_idec<DT_Q5_K> {
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, uint32_t q[8], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *B = row + (i >> 3) * 176;
        int sub = (int)(i & 7), g = sub >> 1, h = sub & 1;
        uint4 hd = qt_ldw16(B);
        uint4 qh = qt_ldw16(B + 16 + 16 * h);
        uint4 v = qt_ldw16(B + 48 + 32 * g + 16 * h);
        float d = qt_h2f((uint16_t)(hd.x & 0xFFFF)), dmin = qt_h2f((uint16_t)(hd.x >> 16));
        uint32_t v4[4] = {v.x, v.y, v.z, v.w}, h4[4] = {qh.x, qh.y, qh.z, qh.w};
QT_UNROLL
        for (int k = 0; k < 4; k++) {
            q[k] = (v4[k] & 0x0F0F0F0Fu) | (((h4[k] >> (2 * g)) & 0x01010101u) << 4);
            q[4 + k] = ((v4[k] >> 4) & 0x0F0F0F0Fu) | (((h4[k] >> (2 * g + 1)) & 0x01010101u) << 4);
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

/* Q6_K task (n, k): q = ((ql >> 4(k>>1)) & 15) | ((qh >> 2k) & 3) << 4, weight sc * (q - 32) */
template <> struct qt_idec<DT_Q6_K> {
    QT_HD static void task(const uint8_t *row, int64_t ne0, int64_t i, uint32_t q[8], float sc[2],
                           float mn[2], int64_t c[2])
    {
        const uint8_t *B = row + (i >> 3) * 224;
        int sub = (int)(i & 7), n = sub >> 2, k = sub & 3;
        uint4 la = qt_ldw16(B + 64 * n + 32 * (k & 1)), lb = qt_ldw16(B + 64 * n + 32 * (k & 1) + 16);
        uint4 ha = qt_ldw16(B + 128 + 32 * n), hb = qt_ldw16(B + 128 + 32 * n + 16);
        uint4 sv = qt_ldw16(B + 192);
        float d = qt_h2f(qt_ld2(B + 208));
        int ls = 4 * (k >> 1), hs = 2 * k;
        uint32_t la4[4] = {la.x, la.y, la.z, la.w}, lb4[4] = {lb.x, lb.y, lb.z, lb.w};
        uint32_t ha4[4] = {ha.x, ha.y, ha.z, ha.w}, hb4[4] = {hb.x, hb.y, hb.z, hb.w};
QT_UNROLL
        for (int w = 0; w < 4; w++) {
            q[w] = ((la4[w] >> ls) & 0x0F0F0F0Fu) | (((ha4[w] >> hs) & 0x03030303u) << 4);
            q[4 + w] = ((lb4[w] >> ls) & 0x0F0F0F0Fu) | (((hb4[w] >> hs) & 0x03030303u) << 4);
        }
QT_UNROLL
        for (int h = 0; h < 2; h++) {
            int8_t s8 = (int8_t)qt_byte(sv, 8 * n + 2 * k + h);
            sc[h] = d * (float)s8;
            mn[h] = -32.0f * sc[h];
        }
        int64_t base = (i >> 3) * 256 + 128 * n + 32 * k;
        c[0] = base;
        c[1] = base + 16;
    }
};

/* ---- activation quantization -------------------------------------------------- */

/* One block of 32 activations -> 32 int8 (round to nearest), scale d =
 * max|x| / 127 and the two half sums d * sum(q). */
QT_HD void mmv2_quant_block(const float *x, int8_t *qs, float *d, float *s)
{
    float amax = 0.0f;
    for (int l = 0; l < 32; l++)
        amax = fmaxf(amax, fabsf(x[l]));
    float dd = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
    int sum[2] = {0, 0};
    for (int l = 0; l < 32; l++) {
        int v = (int)rintf(x[l] * id);
        v = v > 127 ? 127 : v < -127 ? -127 : v;
        qs[l] = (int8_t)v;
        sum[l >> 4] += v;
    }
    *d = dd;
    s[0] = dd * (float)sum[0];
    s[1] = dd * (float)sum[1];
}

/* Quantize 32 activations v (columns 32k..32k+31) into their place in one
 * row of xq (ne0 columns). */
QT_HD void mmv2_quant_store(uint8_t *row, int64_t ne0, int64_t k, const float v[32])
{
    const int64_t nb = ne0 / 32;
    union {
        int8_t b[32];
        uint4 v[2];
    } q;
    float d, s[2];
    mmv2_quant_block(v, q.b, &d, s);
    QT_ALIGN_CHECK(row + 32 * k, 16);
    *(uint4 *)(row + 32 * k) = q.v[0];
    *(uint4 *)(row + 32 * k + 16) = q.v[1];
    float *f = (float *)(row + ne0);
    f[k] = d;
    f[nb + 2 * k] = s[0];
    f[nb + 2 * k + 1] = s[1];
}

/* Block b (of (ne0 / 32) * n_tok) of the activations x (rows ldx floats
 * apart, any alignment) into its place in xq. */
QT_HD void mmv2_quant_task(uint8_t *xq, size_t xq_pitch, const float *x, int64_t ldx, int64_t ne0,
                           int64_t b)
{
    const int64_t nb = ne0 / 32;
    const int64_t t = b / nb, k = b - t * nb;
    float v[32];
    const float *xp = x + t * ldx + 32 * k;
QT_UNROLL
    for (int l = 0; l < 32; l++)
        v[l] = qt_ldxf(xp + l);
    mmv2_quant_store(xq + (size_t)t * xq_pitch, ne0, k, v);
}

/* row t of the quantized activations */
struct mmv2_xq {
    const uint8_t *qs;
    const float *d, *s;
};

QT_HD mmv2_xq mmv2_xq_row(const uint8_t *xq, size_t pitch, int64_t ne0, int t)
{
    mmv2_xq r;
    r.qs = xq + (size_t)t * pitch;
    r.d = (const float *)(r.qs + ne0);
    r.s = r.d + ne0 / 32;
    return r;
}

/* ---- per-lane work (shared by the kernels and the CPU emulation) ------------------ */

/* Integer types: lane `lane` of the warp that owns row `row` adds its tasks
 * lane, lane + 32, ... to acc[0..NT). */
template <int T, int NT, int U>
QT_HD void mmv2_lane_q(const uint8_t *row, int64_t ne0, int lane, const uint8_t *xq,
                       size_t xq_pitch, float acc[NT])
{
    const int64_t nt = (ne0 + 31) / 32; /* qt_tasks */
    for (int64_t i0 = lane; i0 < nt; i0 += 32 * U) {
        uint32_t q[U][8];
        float sc[U][2], mn[U][2];
        int64_t c[U][2];
QT_UNROLL
        for (int u = 0; u < U; u++)
            if (i0 + 32 * u < nt)
                qt_idec<T>::task(row, ne0, i0 + 32 * u, q[u], sc[u], mn[u], c[u]);
QT_UNROLL
        for (int u = 0; u < U; u++) {
            if (i0 + 32 * u >= nt)
                break;
QT_UNROLL
            for (int t = 0; t < NT; t++) {
                mmv2_xq xr = mmv2_xq_row(xq, xq_pitch, ne0, t);
QT_UNROLL
                for (int h = 0; h < 2; h++) {
                    uint4 xv = qt_ldx16(xr.qs + c[u][h]);
                    int dp = qt_dp4a(q[u][4 * h + 0], xv.x, 0);
                    dp = qt_dp4a(q[u][4 * h + 1], xv.y, dp);
                    dp = qt_dp4a(q[u][4 * h + 2], xv.z, dp);
                    dp = qt_dp4a(q[u][4 * h + 3], xv.w, dp);
                    float dx = qt_ldxf(xr.d + (c[u][h] >> 5));
                    float sx = qt_ldxf(xr.s + (c[u][h] >> 4));
                    acc[t] = fmaf(sc[u][h] * dx, (float)dp, fmaf(mn[u][h], sx, acc[t]));
                }
            }
        }
    }
}

/* Float types: 16-byte chunk j of a row holds columns EPC*j .. EPC*j + EPC-1. */
template <int T> struct qt_fchunk;
template <> struct qt_fchunk<DT_F32> {
    static constexpr int EPC = 4;
    QT_HD static void get(const uint4 &v, float w[8])
    {
        uint32_t a[4] = {v.x, v.y, v.z, v.w};
QT_UNROLL
        for (int k = 0; k < 4; k++)
            memcpy(&w[k], &a[k], 4);
    }
};
template <> struct qt_fchunk<DT_F16> {
    static constexpr int EPC = 8;
    QT_HD static void get(const uint4 &v, float w[8])
    {
        uint32_t a[4] = {v.x, v.y, v.z, v.w};
QT_UNROLL
        for (int k = 0; k < 4; k++) {
            w[2 * k] = qt_h2f((uint16_t)(a[k] & 0xFFFF));
            w[2 * k + 1] = qt_h2f((uint16_t)(a[k] >> 16));
        }
    }
};
template <> struct qt_fchunk<DT_BF16> {
    static constexpr int EPC = 8;
    QT_HD static void get(const uint4 &v, float w[8])
    {
        uint32_t a[4] = {v.x, v.y, v.z, v.w};
QT_UNROLL
        for (int k = 0; k < 4; k++) {
            w[2 * k] = qt_bf2f(a[k] & 0xFFFF);
            w[2 * k + 1] = qt_bf2f(a[k] >> 16);
        }
    }
};

/* Float types: lane `lane` adds chunks lane, lane + 32, ... of rows
 * rows[0..R) (rows[r] == NULL: no such row) to acc[r][t]. Needs ne0 % EPC ==
 * 0 and x rows (ldx floats apart) 16-byte aligned. */
template <int T, int NT, int R, int U>
QT_HD void mmv2_lane_f(const uint8_t *const rows[R], int64_t ne0, int lane, const float *x,
                       int64_t ldx, float acc[R][NT])
{
    typedef qt_fchunk<T> F;
    const int64_t nch = ne0 / F::EPC;
    for (int64_t j0 = lane; j0 < nch; j0 += 32 * U) {
        uint4 v[U][R];
QT_UNROLL
        for (int u = 0; u < U; u++)
QT_UNROLL
            for (int r = 0; r < R; r++)
                if (j0 + 32 * u < nch && rows[r])
                    v[u][r] = qt_ldw16(rows[r] + (j0 + 32 * u) * 16);
QT_UNROLL
        for (int u = 0; u < U; u++) {
            const int64_t j = j0 + 32 * u;
            if (j >= nch)
                break;
QT_UNROLL
            for (int t = 0; t < NT; t++) {
                float xv[8];
                const float *xp = x + t * ldx + j * F::EPC;
QT_UNROLL
                for (int k = 0; k < F::EPC / 4; k++) {
                    float4 f = qt_ldxf4(xp + 4 * k);
                    xv[4 * k] = f.x, xv[4 * k + 1] = f.y, xv[4 * k + 2] = f.z, xv[4 * k + 3] = f.w;
                }
QT_UNROLL
                for (int r = 0; r < R; r++) {
                    if (!rows[r])
                        continue;
                    float w[8];
                    F::get(v[u][r], w);
                    float s = acc[r][t];
QT_UNROLL
                    for (int k = 0; k < F::EPC; k++)
                        s = fmaf(w[k], xv[k], s);
                    acc[r][t] = s;
                }
            }
        }
    }
}

/* unroll (tasks or chunks in flight per lane) by tokens per launch (one
 * token: 2, or 4 with CARAVAN_CUDA_MMV_U=4) */
template <int NT> struct mmv2_u {
    static constexpr int U = NT == 1 ? 4 : NT == 2 ? 2 : 1;
};

#ifndef MMV2_HOST_ONLY /* the CPU emulation test includes only the parts above */
#include "cuda_internal.cuh"
/* ---- kernels --------------------------------------------------------------------- */

__device__ __forceinline__ float mmv2_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* y[t][r] = W[r] . x[t] for the integer types: one warp per row */
#ifndef MMV2_QMINB
#define MMV2_QMINB 1 /* min blocks per SM asked of ptxas for the integer kernels */
#endif
template <int T, int NT, int U>
__global__ void __launch_bounds__(MMV2_WARPS * 32, MMV2_QMINB)
    k_mmv2_q(const mmv2_mats M, size_t pitch, int64_t ne0, const uint8_t *__restrict__ xq,
             size_t xq_pitch)
{
    const int lane = threadIdx.x & 31;
    int m;
    int64_t r;
    if (!mmv2_mats_row(M, blockIdx.x, threadIdx.x >> 5, 1, &m, &r))
        return;
    /* selects, not M.W[m]: a run-time index into the parameters would copy them to local memory */
    const uint8_t *__restrict__ W = m == 0 ? M.W[0] : m == 1 ? M.W[1] : M.W[2];
    float *__restrict__ y = m == 0 ? M.y[0] : m == 1 ? M.y[1] : M.y[2];
    const int64_t ldy = m == 0 ? M.ne1[0] : m == 1 ? M.ne1[1] : M.ne1[2];
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = 0.0f;
    mmv2_lane_q<T, NT, U>(W + r * pitch, ne0, lane, xq, xq_pitch, acc);
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = mmv2_warp_sum(acc[t]);
    if (lane == 0) {
#pragma unroll
        for (int t = 0; t < NT; t++)
            y[t * ldy + r] = acc[t];
    }
}

/* the float types: one warp per MMV2_FROWS rows */
template <int T, int NT, int U>
__global__ void __launch_bounds__(MMV2_WARPS * 32)
    k_mmv2_f(const mmv2_mats M, size_t pitch, int64_t ne0, const float *__restrict__ x, int64_t ldx)
{
    const int lane = threadIdx.x & 31;
    int m;
    int64_t r0;
    if (!mmv2_mats_row(M, blockIdx.x, threadIdx.x >> 5, MMV2_FROWS, &m, &r0))
        return;
    const uint8_t *__restrict__ W = m == 0 ? M.W[0] : m == 1 ? M.W[1] : M.W[2];
    float *__restrict__ y = m == 0 ? M.y[0] : m == 1 ? M.y[1] : M.y[2];
    const int64_t ldy = m == 0 ? M.ne1[0] : m == 1 ? M.ne1[1] : M.ne1[2], ne1 = ldy;
    const uint8_t *rows[MMV2_FROWS];
    float acc[MMV2_FROWS][NT];
#pragma unroll
    for (int r = 0; r < MMV2_FROWS; r++) {
        rows[r] = r0 + r < ne1 ? W + (r0 + r) * pitch : NULL;
#pragma unroll
        for (int t = 0; t < NT; t++)
            acc[r][t] = 0.0f;
    }
    mmv2_lane_f<T, NT, MMV2_FROWS, U>(rows, ne0, lane, x, ldx, acc);
#pragma unroll
    for (int r = 0; r < MMV2_FROWS; r++)
#pragma unroll
        for (int t = 0; t < NT; t++)
            acc[r][t] = mmv2_warp_sum(acc[r][t]);
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < MMV2_FROWS; r++)
            if (r0 + r < ne1) {
#pragma unroll
                for (int t = 0; t < NT; t++)
                    y[t * ldy + r0 + r] = acc[r][t];
            }
    }
}

/* activations (n_tok rows, ldx apart; any alignment) -> xq: one thread per block of 32 */
static __global__ void k_mmv2_quant(uint8_t *__restrict__ xq, size_t xq_pitch,
                             const float *__restrict__ x, int64_t ldx, int64_t ne0, int64_t n_tok)
{
    const int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b < (ne0 / 32) * n_tok)
        mmv2_quant_task(xq, xq_pitch, x, ldx, ne0, b);
}

/* u: tasks (chunks) in flight per lane at one token, 2 (default) or 4 (CARAVAN_CUDA_MMV_U=4) */
template <int T> static inline mmv2_q_fn mmv2_pick_q(int nt, int u)
{
    switch (nt) {
    case 8: return k_mmv2_q<T, 8, mmv2_u<8>::U>;
    case 4: return k_mmv2_q<T, 4, mmv2_u<4>::U>;
    case 2: return k_mmv2_q<T, 2, mmv2_u<2>::U>;
    default: return u == 2 ? k_mmv2_q<T, 1, 2> : k_mmv2_q<T, 1, 4>;
    }
}

template <int T> static inline mmv2_f_fn mmv2_pick_f(int nt, int u)
{
    switch (nt) {
    case 8: return k_mmv2_f<T, 8, mmv2_u<8>::U>;
    case 4: return k_mmv2_f<T, 4, mmv2_u<4>::U>;
    case 2: return k_mmv2_f<T, 2, mmv2_u<2>::U>;
    default: return u == 2 ? k_mmv2_f<T, 1, 2> : k_mmv2_f<T, 1, 4>;
    }
}
#endif
