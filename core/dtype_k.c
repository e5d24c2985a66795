/* dtype_k.c - scalar reference kernels for the weight types: dequantize_row,
 * dot_row, quantize_row, and the Q8_0/Q8_K activation quantization with its
 * integer dot-product oracle vec_dot_q8.
 *
 * Two independent decodings of every block layout live here on purpose:
 * dequantize_row walks the block in the order of its bytes (the way the format
 * is usually described), while dot_row and vec_dot_q8 decode element by
 * element from index formulas (block_unpack). The tests check that the two
 * agree, and known-answer blocks pin the layouts themselves.
 * This is the correctness oracle, not the fast path (see kernels/cpu). */
#include "core/dtype.h"
#include "core/dtype_blocks.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <string.h>

#define H2F(h) fp16_to_f32(h)

static inline float f16_round(float f)
{
    return fp16_to_f32(f32_to_fp16(f));
}

/* round to nearest (ties to even), clamped to [lo, hi]; NaN gives lo.
 * Branch-free so the candidate searches vectorize: the clamp compiles to
 * max/min, and adding 1.5 * 2^23 leaves the rounded integer in the low
 * mantissa bits (exact for |v| < 2^22, which the clamp guarantees). */
static inline int nint_clamp(float v, int lo, int hi)
{
    v = v > (float)lo ? v : (float)lo;
    v = v < (float)hi ? v : (float)hi;
    float r = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &r, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* ---- 6-bit scales of Q4_K / Q5_K and Q3_K ------------------------------- */

/* k4_scale_min: dtype_blocks.h */

static void k4_scale_min_pack(uint8_t s[12], const int sc[8], const int mn[8])
{
    for (int g = 0; g < 4; g++) {
        s[g] = (uint8_t)((sc[g] & 63) | ((sc[g + 4] >> 4) << 6));
        s[g + 4] = (uint8_t)((mn[g] & 63) | ((mn[g + 4] >> 4) << 6));
        s[g + 8] = (uint8_t)((sc[g + 4] & 15) | ((mn[g + 4] & 15) << 4));
    }
}

/* Q3_K: 16 scales of 6 bits, stored biased by 32; returns the signed scale */
static inline int q3k_scale(const uint8_t *s, int g)
{
    int lo = (s[g % 8] >> (4 * (g / 8))) & 15;
    int hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

static void q3k_scale_pack(uint8_t s[12], const int sc[16])
{
    memset(s, 0, 12);
    for (int g = 0; g < 16; g++) {
        int v = sc[g] + 32;
        s[g % 8] |= (uint8_t)((v & 15) << (4 * (g / 8)));
        s[8 + g % 4] |= (uint8_t)((v >> 4) << (2 * (g / 4)));
    }
}

static inline uint32_t le32(const uint8_t b[4])
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* ---- dequantize: byte-order walk of each block --------------------------- */

static void dequant_q4_0(const dt_block_q4_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += 32) {
        float d = H2F(b->d);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b->qs[j] & 15) - 8) * d;
            y[j + 16] = (float)((b->qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_1(const dt_block_q4_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += 32) {
        float d = H2F(b->d), m = H2F(b->m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b->qs[j] & 15) * d + m;
            y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
        }
    }
}

static void dequant_q5_0(const dt_block_q5_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += 32) {
        float d = H2F(b->d);
        uint32_t qh = le32(b->qh);
        for (int j = 0; j < 16; j++) {
            int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = (float)(((b->qs[j] & 15) | h0) - 16) * d;
            y[j + 16] = (float)(((b->qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

static void dequant_q5_1(const dt_block_q5_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += 32) {
        float d = H2F(b->d), m = H2F(b->m);
        uint32_t qh = le32(b->qh);
        for (int j = 0; j < 16; j++) {
            int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = (float)((b->qs[j] & 15) | h0) * d + m;
            y[j + 16] = (float)((b->qs[j] >> 4) | h1) * d + m;
        }
    }
}

static void dequant_q8_0(const dt_block_q8_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += 32) {
        float d = H2F(b->d);
        for (int j = 0; j < 32; j++)
            y[j] = (float)b->qs[j] * d;
    }
}

static void dequant_q2_k(const dt_block_q2_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++) {
        float d = H2F(b->d), dmin = H2F(b->dmin);
        const uint8_t *q = b->qs, *sc = b->scales;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int sub = 0; sub < 2; sub++) {
                    uint8_t s = *sc++;
                    float dl = d * (float)(s & 15), ml = dmin * (float)(s >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * (float)((q[16 * sub + l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

static void dequant_q3_k(const dt_block_q3_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++) {
        float d = H2F(b->d);
        const uint8_t *q = b->qs;
        int g = 0;
        uint8_t m = 1;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int sub = 0; sub < 2; sub++) {
                    float dl = d * (float)q3k_scale(b->scales, g++);
                    for (int l = 0; l < 16; l++) {
                        int lo = (q[16 * sub + l] >> shift) & 3;
                        int hb = (b->hmask[16 * sub + l] & m) ? 0 : 4;
                        *y++ = dl * (float)(lo - hb);
                    }
                }
            }
        }
    }
}

static void dequant_q4_k(const dt_block_q4_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++) {
        float d = H2F(b->d), dmin = H2F(b->dmin);
        const uint8_t *q = b->qs;
        for (int g = 0; g < 8; g += 2, q += 32) {
            int s1, m1, s2, m2;
            k4_scale_min(b->scales, g, &s1, &m1);
            k4_scale_min(b->scales, g + 1, &s2, &m2);
            float d1 = d * (float)s1, dm1 = dmin * (float)m1;
            float d2 = d * (float)s2, dm2 = dmin * (float)m2;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(q[l] & 15) - dm1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)(q[l] >> 4) - dm2;
        }
    }
}

static void dequant_q5_k(const dt_block_q5_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++) {
        float d = H2F(b->d), dmin = H2F(b->dmin);
        const uint8_t *q = b->qs;
        uint8_t u1 = 1, u2 = 2;
        for (int g = 0; g < 8; g += 2, q += 32, u1 <<= 2, u2 <<= 2) {
            int s1, m1, s2, m2;
            k4_scale_min(b->scales, g, &s1, &m1);
            k4_scale_min(b->scales, g + 1, &s2, &m2);
            float d1 = d * (float)s1, dm1 = dmin * (float)m1;
            float d2 = d * (float)s2, dm2 = dmin * (float)m2;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((q[l] & 15) + ((b->qh[l] & u1) ? 16 : 0)) - dm1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((q[l] >> 4) + ((b->qh[l] & u2) ? 16 : 0)) - dm2;
        }
    }
}

static void dequant_q6_k(const dt_block_q6_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++) {
        float d = H2F(b->d);
        const uint8_t *ql = b->ql, *qh = b->qh;
        const int8_t *sc = b->scales;
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, y += 128) {
            for (int l = 0; l < 32; l++) {
                int g = l / 16;
                int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[g] * (float)q1;
                y[l + 32] = d * (float)sc[g + 2] * (float)q2;
                y[l + 64] = d * (float)sc[g + 4] * (float)q3;
                y[l + 96] = d * (float)sc[g + 6] * (float)q4;
            }
        }
    }
}

void dequantize_row(int type, const void *w, float *out, int64_t n)
{
    const dtype_traits *t = dtype_get(type);
    assert(t->supported && n % t->block_size == 0);
    if (!t->supported) {
        memset(out, 0, (size_t)n * sizeof *out);
        return;
    }
    int64_t nb = n / t->block_size;
    switch (type) {
    case DT_F32:
        memcpy(out, w, (size_t)nb * sizeof(float));
        break;
    case DT_F16:
        for (int64_t i = 0; i < nb; i++)
            out[i] = fp16_to_f32(((const uint16_t *)w)[i]);
        break;
    case DT_BF16:
        for (int64_t i = 0; i < nb; i++)
            out[i] = bf16_to_f32(((const uint16_t *)w)[i]);
        break;
    case DT_Q4_0: dequant_q4_0(w, out, nb); break;
    case DT_Q4_1: dequant_q4_1(w, out, nb); break;
    case DT_Q5_0: dequant_q5_0(w, out, nb); break;
    case DT_Q5_1: dequant_q5_1(w, out, nb); break;
    case DT_Q8_0: dequant_q8_0(w, out, nb); break;
    case DT_Q2_K: dequant_q2_k(w, out, nb); break;
    case DT_Q3_K: dequant_q3_k(w, out, nb); break;
    case DT_Q4_K: dequant_q4_k(w, out, nb); break;
    case DT_Q5_K: dequant_q5_k(w, out, nb); break;
    case DT_Q6_K: dequant_q6_k(w, out, nb); break;
    default: memset(out, 0, (size_t)n * sizeof *out);
    }
}

/* ---- block_unpack: element-index decoding for the dot products ----------- */

/* One block as integer levels: x[i] = d*sc[g]*q[i] - dmin*mn[g], g = i/gs. */
typedef struct unpacked {
    int8_t q[256];
    int32_t sc[16]; /* integer scale of each group */
    int32_t mn[16]; /* integer min of each group */
    float d, dmin;
    int gs, ng;     /* group size, groups per block */
} unpacked;

static void block_unpack(int type, const void *blk, unpacked *u)
{
    switch (type) {
    case DT_Q4_0:
    case DT_Q4_1: {
        const uint8_t *qs = type == DT_Q4_0 ? ((const dt_block_q4_0 *)blk)->qs
                                            : ((const dt_block_q4_1 *)blk)->qs;
        int off = type == DT_Q4_0 ? 8 : 0;
        for (int i = 0; i < 32; i++)
            u->q[i] = (int8_t)(((qs[i % 16] >> (4 * (i / 16))) & 15) - off);
        u->gs = 32, u->ng = 1, u->sc[0] = 1;
        if (type == DT_Q4_0) {
            u->d = H2F(((const dt_block_q4_0 *)blk)->d), u->dmin = 0, u->mn[0] = 0;
        } else {
            const dt_block_q4_1 *b = blk;
            u->d = H2F(b->d), u->dmin = -H2F(b->m), u->mn[0] = 1;
        }
        break;
    }
    case DT_Q5_0:
    case DT_Q5_1: {
        const uint8_t *qs, *qh;
        if (type == DT_Q5_0) {
            const dt_block_q5_0 *b = blk;
            qs = b->qs, qh = b->qh, u->d = H2F(b->d), u->dmin = 0, u->mn[0] = 0;
        } else {
            const dt_block_q5_1 *b = blk;
            qs = b->qs, qh = b->qh, u->d = H2F(b->d), u->dmin = -H2F(b->m), u->mn[0] = 1;
        }
        int off = type == DT_Q5_0 ? 16 : 0;
        for (int i = 0; i < 32; i++) {
            int hi = (qh[i / 8] >> (i % 8)) & 1;
            u->q[i] = (int8_t)((((qs[i % 16] >> (4 * (i / 16))) & 15) | hi << 4) - off);
        }
        u->gs = 32, u->ng = 1, u->sc[0] = 1;
        break;
    }
    case DT_Q8_0: {
        const dt_block_q8_0 *b = blk;
        memcpy(u->q, b->qs, 32);
        u->d = H2F(b->d), u->dmin = 0, u->gs = 32, u->ng = 1, u->sc[0] = 1, u->mn[0] = 0;
        break;
    }
    case DT_Q2_K: {
        const dt_block_q2_k *b = blk;
        for (int i = 0; i < 256; i++) {
            int h = i / 128, r = i % 128;
            u->q[i] = (int8_t)((b->qs[32 * h + r % 32] >> (2 * (r / 32))) & 3);
        }
        for (int g = 0; g < 16; g++)
            u->sc[g] = b->scales[g] & 15, u->mn[g] = b->scales[g] >> 4;
        u->d = H2F(b->d), u->dmin = H2F(b->dmin), u->gs = 16, u->ng = 16;
        break;
    }
    case DT_Q3_K: {
        const dt_block_q3_k *b = blk;
        for (int i = 0; i < 256; i++) {
            int h = i / 128, r = i % 128;
            int lo = (b->qs[32 * h + r % 32] >> (2 * (r / 32))) & 3;
            int hi = (b->hmask[i % 32] >> (i / 32)) & 1;
            u->q[i] = (int8_t)(lo - (hi ? 0 : 4));
        }
        for (int g = 0; g < 16; g++)
            u->sc[g] = q3k_scale(b->scales, g), u->mn[g] = 0;
        u->d = H2F(b->d), u->dmin = 0, u->gs = 16, u->ng = 16;
        break;
    }
    case DT_Q4_K:
    case DT_Q5_K: {
        const uint8_t *qs, *scales, *qh = NULL;
        if (type == DT_Q4_K) {
            const dt_block_q4_k *b = blk;
            qs = b->qs, scales = b->scales, u->d = H2F(b->d), u->dmin = H2F(b->dmin);
        } else {
            const dt_block_q5_k *b = blk;
            qs = b->qs, scales = b->scales, qh = b->qh;
            u->d = H2F(b->d), u->dmin = H2F(b->dmin);
        }
        for (int i = 0; i < 256; i++) {
            int g = i / 32;
            int v = (qs[32 * (g / 2) + i % 32] >> (4 * (g % 2))) & 15;
            if (qh)
                v |= ((qh[i % 32] >> g) & 1) << 4;
            u->q[i] = (int8_t)v;
        }
        for (int g = 0; g < 8; g++) {
            int sc, mn;
            k4_scale_min(scales, g, &sc, &mn);
            u->sc[g] = sc, u->mn[g] = mn;
        }
        u->gs = 32, u->ng = 8;
        break;
    }
    case DT_Q6_K: {
        const dt_block_q6_k *b = blk;
        for (int i = 0; i < 256; i++) {
            int h = i / 128, k = (i % 128) / 32, l = i % 32;
            int lo = (b->ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 15;
            int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
            u->q[i] = (int8_t)((lo | hi << 4) - 32);
        }
        for (int g = 0; g < 16; g++)
            u->sc[g] = b->scales[g], u->mn[g] = 0;
        u->d = H2F(b->d), u->dmin = 0, u->gs = 16, u->ng = 16;
        break;
    }
    default:
        assert(0 && "block_unpack: not a quantized weight type");
        memset(u, 0, sizeof *u);
    }
}

float dot_row(int type, const void *w, const float *x, int64_t n)
{
    const dtype_traits *t = dtype_get(type);
    assert(t->supported && n % t->block_size == 0);
    if (!t->supported)
        return 0.0f;
    double acc = 0.0;
    switch (type) {
    case DT_F32:
        for (int64_t i = 0; i < n; i++)
            acc += (double)(((const float *)w)[i] * x[i]);
        return (float)acc;
    case DT_F16:
        for (int64_t i = 0; i < n; i++)
            acc += (double)(fp16_to_f32(((const uint16_t *)w)[i]) * x[i]);
        return (float)acc;
    case DT_BF16:
        for (int64_t i = 0; i < n; i++)
            acc += (double)(bf16_to_f32(((const uint16_t *)w)[i]) * x[i]);
        return (float)acc;
    }
    int64_t nb = n / t->block_size;
    const uint8_t *bp = w;
    unpacked u;
    for (int64_t ib = 0; ib < nb; ib++, bp += t->type_size, x += t->block_size) {
        block_unpack(type, bp, &u);
        float sum = 0.0f;
        for (int g = 0; g < u.ng; g++) {
            float sqx = 0.0f, sx = 0.0f;
            for (int i = g * u.gs; i < (g + 1) * u.gs; i++) {
                sqx += (float)u.q[i] * x[i];
                sx += x[i];
            }
            sum += u.d * (float)u.sc[g] * sqx - u.dmin * (float)u.mn[g] * sx;
        }
        acc += (double)sum;
    }
    return (float)acc;
}

/* ---- activation quantization and the integer dot oracle ------------------ */

int dtype_vec_dot_type(int type)
{
    switch (type) {
    case DT_F32:
    case DT_F16:
    case DT_BF16:
        return DT_F32;
    case DT_Q4_0:
    case DT_Q4_1:
    case DT_Q5_0:
    case DT_Q5_1:
    case DT_Q8_0:
        return DT_Q8_0;
    case DT_Q2_K:
    case DT_Q3_K:
    case DT_Q4_K:
    case DT_Q5_K:
    case DT_Q6_K:
        return DT_Q8_K;
    default:
        return -1;
    }
}

/* d = amax/127 (rounded to f16), q = round(x/d) in [-127, 127] */
void quantize_row_q8_0(const float *x, void *out, int64_t n)
{
    assert(n % 32 == 0);
    dt_block_q8_0 *b = out;
    for (int64_t ib = 0; ib < n / 32; ib++, b++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        b->d = f32_to_fp16(amax / 127.0f);
        float d = H2F(b->d), id = d > 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < 32; j++)
            b->qs[j] = (int8_t)nint_clamp(x[j] * id, -127, 127);
    }
}

/* d = amax/127 (f32), q = round(x/d) in [-127, 127], bsums per 16 */
void quantize_row_q8_k(const float *x, void *out, int64_t n)
{
    assert(n % 256 == 0);
    dt_block_q8_k *b = out;
    for (int64_t ib = 0; ib < n / 256; ib++, b++, x += 256) {
        float amax = 0.0f;
        for (int j = 0; j < 256; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        b->d = amax / 127.0f;
        float id = b->d > 0.0f ? 1.0f / b->d : 0.0f;
        for (int j = 0; j < 256; j++)
            b->qs[j] = (int8_t)nint_clamp(x[j] * id, -127, 127);
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++)
                s += b->qs[16 * g + j];
            b->bsums[g] = (int16_t)s;
        }
    }
}

float vec_dot_q8(int type, const void *w, const void *xq, int64_t n)
{
    int vt = dtype_vec_dot_type(type);
    assert(vt >= 0);
    if (vt == DT_F32)
        return dot_row(type, w, xq, n);
    if (vt < 0)
        return 0.0f;
    const dtype_traits *t = dtype_get(type);
    assert(n % t->block_size == 0);
    int64_t nb = n / t->block_size;
    const uint8_t *bp = w;
    unpacked u;
    double acc = 0.0;
    if (vt == DT_Q8_0) {
        const dt_block_q8_0 *xb = xq;
        for (int64_t ib = 0; ib < nb; ib++, bp += t->type_size, xb++) {
            block_unpack(type, bp, &u);
            int32_t isum = 0, xsum = 0;
            for (int i = 0; i < 32; i++) {
                isum += (int32_t)u.q[i] * xb->qs[i];
                xsum += xb->qs[i];
            }
            float dx = H2F(xb->d);
            acc += (double)(u.d * dx * (float)(u.sc[0] * isum) -
                            u.dmin * dx * (float)(u.mn[0] * xsum));
        }
        return (float)acc;
    }
    const dt_block_q8_k *xb = xq;
    for (int64_t ib = 0; ib < nb; ib++, bp += t->type_size, xb++) {
        block_unpack(type, bp, &u);
        int32_t isum = 0, msum = 0;
        int per = u.gs / 16; /* bsums entries per group */
        for (int g = 0; g < u.ng; g++) {
            int32_t s = 0, bs = 0;
            for (int i = g * u.gs; i < (g + 1) * u.gs; i++)
                s += (int32_t)u.q[i] * xb->qs[i];
            for (int k = 0; k < per; k++)
                bs += xb->bsums[g * per + k];
            isum += u.sc[g] * s;
            msum += u.mn[g] * bs;
        }
        acc += (double)(u.d * xb->d * (float)isum - u.dmin * xb->d * (float)msum);
    }
    return (float)acc;
}

/* ---- quantizers ----------------------------------------------------------- */

/* Fit x ~ a*L + b with L in [0, nmax] by least squares over a few candidate
 * grids (step sizes around (max-min)/nmax); b <= 0 unless free_offset.
 * Returns a (scale >= 0) and *b. */
static float fit_asym(const float *x, int n, int nmax, bool free_offset, float *b_out)
{
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++)
        lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
    if (!free_offset && lo > 0.0f)
        lo = 0.0f;
    if (!(hi > lo)) {
        *b_out = lo;
        return 0.0f;
    }
    float sx = 0.0f, sx2 = 0.0f;
    for (int i = 0; i < n; i++)
        sx += x[i], sx2 += x[i] * x[i];
    double best_err = DBL_MAX;
    float best_a = (hi - lo) / (float)nmax, best_b = lo;
    for (int k = -10; k <= 10; k += 2) {
        float iscale = ((float)nmax + 0.1f * (float)k) / (hi - lo);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            float l = (float)nint_clamp((x[i] - lo) * iscale, 0, nmax);
            sl += l, sl2 += l * l, sxl += x[i] * l;
        }
        float D = (float)n * sl2 - sl * sl;
        if (!(D > 0.0f))
            continue;
        float a = ((float)n * sxl - sx * sl) / D;
        float b = (sl2 * sx - sl * sxl) / D;
        if (!free_offset && b > 0.0f)
            b = 0.0f, a = sxl / sl2;
        if (!(a > 0.0f))
            continue;
        /* sum (a L + b - x)^2 expanded over the sums above */
        double err = (double)sx2 + (double)a * a * sl2 + (double)n * b * b + 2.0 * a * b * sl -
                     2.0 * a * sxl - 2.0 * b * sx;
        if (err < best_err)
            best_err = err, best_a = a, best_b = b;
    }
    *b_out = best_b;
    return best_a;
}

/* Fit x ~ s*L with L in [-nmax, nmax-1]: least squares over candidate grids
 * mapping the largest |x| to -nmax or to nmax-1. Returns s (any sign). */
static float fit_sym(const float *x, int n, int nmax)
{
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax)
            amax = fabsf(x[i]), max = x[i];
    if (amax < 1e-30f)
        return 0.0f;
    float best = -1.0f, scale = -max / (float)nmax;
    for (int sign = -1; sign <= 1; sign += 2) {
        for (int k = -9; k <= 9; k += 2) {
            float iscale = sign < 0 ? -((float)nmax + 0.1f * (float)k) / max
                                    : ((float)(nmax - 1) + 0.1f * (float)k) / max;
            float sxl = 0.0f, sl2 = 0.0f;
            for (int i = 0; i < n; i++) {
                int l = nint_clamp(iscale * x[i], -nmax, nmax - 1);
                sxl += x[i] * (float)l, sl2 += (float)(l * l);
            }
            if (sl2 > 0.0f && sxl * sxl / sl2 > best)
                best = sxl * sxl / sl2, scale = sxl / sl2;
        }
    }
    return scale;
}

/* squared error of x quantized as s*L - m, L = round((x+m)/s) in [lo, hi];
 * L written to out when not NULL */
static float requant_err(const float *x, int n, float s, float m, int lo, int hi, int8_t *out)
{
    float err = 0.0f;
    float is = s != 0.0f ? 1.0f / s : 0.0f;
    for (int i = 0; i < n; i++) {
        int l = s != 0.0f ? nint_clamp((x[i] + m) * is, lo, hi) : (lo < 0 ? 0 : lo);
        float e = s * (float)l - m - x[i];
        err += e * e;
        if (out)
            out[i] = (int8_t)l;
    }
    return err;
}

/* Pick integer scale (and min) per group near the rounded values by trying
 * neighbours against the requantization error; fills L. Effective group
 * scale d*sc, min dmin*mn, exactly as dequantize computes them. */
static void pick_group(const float *x, int gs, float d, float dmin, int sc_lo, int sc_hi, int mn_hi,
                       int q_lo, int q_hi, float want_sc, float want_mn, int *sc_out, int *mn_out,
                       int8_t *L)
{
    int sc0 = d > 0.0f || d < 0.0f ? nint_clamp(want_sc / d, sc_lo, sc_hi) : 0;
    int mn0 = dmin > 0.0f ? nint_clamp(want_mn / dmin, 0, mn_hi) : 0;
    int rm = mn_hi > 0 && dmin > 0.0f ? 1 : 0;
    float best = FLT_MAX;
    int bsc = sc0, bmn = mn0;
    for (int ds = -1; ds <= 1; ds++) {
        int sc = sc0 + ds;
        if (sc < sc_lo || sc > sc_hi)
            continue;
        for (int dm = -rm; dm <= rm; dm++) {
            int mn = mn0 + dm;
            if (mn < 0 || mn > mn_hi)
                continue;
            float err = requant_err(x, gs, d * (float)sc, dmin * (float)mn, q_lo, q_hi, NULL);
            if (err < best)
                best = err, bsc = sc, bmn = mn;
        }
    }
    *sc_out = bsc, *mn_out = bmn;
    requant_err(x, gs, d * (float)bsc, dmin * (float)bmn, q_lo, q_hi, L);
}

static void quant_q8_0(const float *x, dt_block_q8_0 *b, int64_t nb)
{
    quantize_row_q8_0(x, b, nb * 32);
}

/* Q4_0 / Q5_0: symmetric fit, then levels from the f16-rounded scale */
static void quant_sym32(const float *x, void *out, int64_t nb, int bits)
{
    int nmax = 1 << (bits - 1);
    for (int64_t ib = 0; ib < nb; ib++, x += 32) {
        float d = f16_round(fit_sym(x, 32, nmax));
        int8_t L[32];
        requant_err(x, 32, d, 0.0f, -nmax, nmax - 1, L);
        uint8_t *qs;
        if (bits == 4) {
            dt_block_q4_0 *b = (dt_block_q4_0 *)out + ib;
            b->d = f32_to_fp16(d), qs = b->qs;
        } else {
            dt_block_q5_0 *b = (dt_block_q5_0 *)out + ib;
            b->d = f32_to_fp16(d), qs = b->qs;
            uint32_t qh = 0;
            for (int j = 0; j < 32; j++)
                qh |= (uint32_t)(((L[j] + nmax) >> 4) & 1) << j;
            for (int k = 0; k < 4; k++)
                b->qh[k] = (uint8_t)(qh >> (8 * k));
        }
        for (int j = 0; j < 16; j++)
            qs[j] = (uint8_t)(((L[j] + nmax) & 15) | (((L[j + 16] + nmax) & 15) << 4));
    }
}

/* Q4_1 / Q5_1: free affine fit x = q*d + m */
static void quant_asym32(const float *x, void *out, int64_t nb, int bits)
{
    int nmax = (1 << bits) - 1;
    for (int64_t ib = 0; ib < nb; ib++, x += 32) {
        float m;
        float d = f16_round(fit_asym(x, 32, nmax, true, &m));
        m = f16_round(m);
        int8_t L[32];
        requant_err(x, 32, d, -m, 0, nmax, L);
        uint8_t *qs;
        if (bits == 4) {
            dt_block_q4_1 *b = (dt_block_q4_1 *)out + ib;
            b->d = f32_to_fp16(d), b->m = f32_to_fp16(m), qs = b->qs;
        } else {
            dt_block_q5_1 *b = (dt_block_q5_1 *)out + ib;
            b->d = f32_to_fp16(d), b->m = f32_to_fp16(m), qs = b->qs;
            uint32_t qh = 0;
            for (int j = 0; j < 32; j++)
                qh |= (uint32_t)((L[j] >> 4) & 1) << j;
            for (int k = 0; k < 4; k++)
                b->qh[k] = (uint8_t)(qh >> (8 * k));
        }
        for (int j = 0; j < 16; j++)
            qs[j] = (uint8_t)((L[j] & 15) | ((L[j + 16] & 15) << 4));
    }
}

/* Scale+min K-quants (Q2_K, Q4_K, Q5_K): per-group asymmetric fit, then the
 * group scales and mins quantized against the super-block d/dmin (f16). */
static void quant_kmin(const float *x, int gs, int qmax, int smax, float *d_out, float *dmin_out,
                       int *sc, int *mn, int8_t *L)
{
    int ng = 256 / gs;
    float fs[16], fm[16], max_s = 0.0f, max_m = 0.0f;
    for (int g = 0; g < ng; g++) {
        float b;
        fs[g] = fit_asym(x + g * gs, gs, qmax, false, &b);
        fm[g] = -b;
        max_s = fmaxf(max_s, fs[g]);
        max_m = fmaxf(max_m, fm[g]);
    }
    float d = f16_round(max_s / (float)smax), dmin = f16_round(max_m / (float)smax);
    for (int g = 0; g < ng; g++)
        pick_group(x + g * gs, gs, d, dmin, 0, smax, smax, 0, qmax, fs[g], fm[g], &sc[g], &mn[g],
                   L + g * gs);
    *d_out = d, *dmin_out = dmin;
}

/* Signed-scale K-quants (Q3_K, Q6_K): groups of 16, L in [-qn, qn-1],
 * integer scales in [-sn, sn-1] against d (f16). */
static float quant_ksym(const float *x, int qn, int sn, int *sc, int8_t *L)
{
    float fs[16], amax = 0.0f, max = 0.0f;
    for (int g = 0; g < 16; g++) {
        fs[g] = fit_sym(x + 16 * g, 16, qn);
        if (fabsf(fs[g]) > amax)
            amax = fabsf(fs[g]), max = fs[g];
    }
    float d = f16_round(-max / (float)sn);
    for (int g = 0; g < 16; g++) {
        int unused;
        pick_group(x + 16 * g, 16, d, 0.0f, -sn, sn - 1, 0, -qn, qn - 1, fs[g], 0.0f, &sc[g],
                   &unused, L + 16 * g);
    }
    return d;
}

static void quant_q2_k(const float *x, dt_block_q2_k *b, int64_t nb)
{
    for (int64_t ib = 0; ib < nb; ib++, b++, x += 256) {
        int sc[16], mn[16];
        int8_t L[256];
        float d, dmin;
        quant_kmin(x, 16, 3, 15, &d, &dmin, sc, mn, L);
        b->d = f32_to_fp16(d), b->dmin = f32_to_fp16(dmin);
        for (int g = 0; g < 16; g++)
            b->scales[g] = (uint8_t)(sc[g] | mn[g] << 4);
        memset(b->qs, 0, sizeof b->qs);
        for (int i = 0; i < 256; i++) {
            int h = i / 128, r = i % 128;
            b->qs[32 * h + r % 32] |= (uint8_t)(L[i] << (2 * (r / 32)));
        }
    }
}

static void quant_q3_k(const float *x, dt_block_q3_k *b, int64_t nb)
{
    for (int64_t ib = 0; ib < nb; ib++, b++, x += 256) {
        int sc[16];
        int8_t L[256];
        float d = quant_ksym(x, 4, 32, sc, L);
        b->d = f32_to_fp16(d);
        q3k_scale_pack(b->scales, sc);
        memset(b->qs, 0, sizeof b->qs);
        memset(b->hmask, 0, sizeof b->hmask);
        for (int i = 0; i < 256; i++) {
            int v = L[i] + 4; /* 0..7: high bit set means q = low2 */
            int h = i / 128, r = i % 128;
            b->qs[32 * h + r % 32] |= (uint8_t)((v & 3) << (2 * (r / 32)));
            b->hmask[i % 32] |= (uint8_t)(((v >> 2) & 1) << (i / 32));
        }
    }
}

static void quant_q45_k(const float *x, void *out, int64_t nb, int bits)
{
    for (int64_t ib = 0; ib < nb; ib++, x += 256) {
        int sc[8], mn[8];
        int8_t L[256];
        float d, dmin;
        quant_kmin(x, 32, (1 << bits) - 1, 63, &d, &dmin, sc, mn, L);
        uint8_t *qs, *scales;
        if (bits == 4) {
            dt_block_q4_k *b = (dt_block_q4_k *)out + ib;
            b->d = f32_to_fp16(d), b->dmin = f32_to_fp16(dmin), qs = b->qs, scales = b->scales;
        } else {
            dt_block_q5_k *b = (dt_block_q5_k *)out + ib;
            b->d = f32_to_fp16(d), b->dmin = f32_to_fp16(dmin), qs = b->qs, scales = b->scales;
            memset(b->qh, 0, sizeof b->qh);
            for (int i = 0; i < 256; i++)
                b->qh[i % 32] |= (uint8_t)(((L[i] >> 4) & 1) << (i / 32));
        }
        k4_scale_min_pack(scales, sc, mn);
        memset(qs, 0, 128);
        for (int i = 0; i < 256; i++) {
            int g = i / 32;
            qs[32 * (g / 2) + i % 32] |= (uint8_t)((L[i] & 15) << (4 * (g % 2)));
        }
    }
}

static void quant_q6_k(const float *x, dt_block_q6_k *b, int64_t nb)
{
    for (int64_t ib = 0; ib < nb; ib++, b++, x += 256) {
        int sc[16];
        int8_t L[256];
        float d = quant_ksym(x, 32, 128, sc, L);
        b->d = f32_to_fp16(d);
        for (int g = 0; g < 16; g++)
            b->scales[g] = (int8_t)sc[g];
        memset(b->ql, 0, sizeof b->ql);
        memset(b->qh, 0, sizeof b->qh);
        for (int i = 0; i < 256; i++) {
            int v = L[i] + 32; /* 0..63 */
            int h = i / 128, k = (i % 128) / 32, l = i % 32;
            b->ql[64 * h + 32 * (k % 2) + l] |= (uint8_t)((v & 15) << (4 * (k / 2)));
            b->qh[32 * h + l] |= (uint8_t)((v >> 4) << (2 * k));
        }
    }
}

bool quantize_row(int type, const float *x, void *w, int64_t n)
{
    const dtype_traits *t = dtype_get(type);
    if (!t->can_quantize || n % t->block_size)
        return false;
    int64_t nb = n / t->block_size;
    switch (type) {
    case DT_F32:
        memcpy(w, x, (size_t)n * sizeof(float));
        return true;
    case DT_F16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)w)[i] = f32_to_fp16(x[i]);
        return true;
    case DT_BF16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)w)[i] = f32_to_bf16(x[i]);
        return true;
    case DT_Q4_0: quant_sym32(x, w, nb, 4); return true;
    case DT_Q4_1: quant_asym32(x, w, nb, 4); return true;
    case DT_Q5_0: quant_sym32(x, w, nb, 5); return true;
    case DT_Q5_1: quant_asym32(x, w, nb, 5); return true;
    case DT_Q8_0: quant_q8_0(x, w, nb); return true;
    case DT_Q2_K: quant_q2_k(x, w, nb); return true;
    case DT_Q3_K: quant_q3_k(x, w, nb); return true;
    case DT_Q4_K: quant_q45_k(x, w, nb, 4); return true;
    case DT_Q5_K: quant_q45_k(x, w, nb, 5); return true;
    case DT_Q6_K: quant_q6_k(x, w, nb); return true;
    default: return false;
    }
}
