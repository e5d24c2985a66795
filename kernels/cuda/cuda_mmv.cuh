/* cuda_mmv.cuh - the dequantizing matrix-vector kernel (decode), a template
 * over weight type and tokens per launch; instantiated by mmv_basic.cu and
 * mmv_k.cu. One warp per weight row; each lane decodes 32 weights per step
 * from aligned 16-byte loads (cuda_quant.cuh) and multiplies them with up to
 * NT activation rows; a warp shuffle sums the lanes. */
#pragma once
#include "cuda_internal.cuh"

/* ---- matrix-vector (decode) ------------------------------------------------ */

/* 16 products x[c..c+16) * q[..] and (for types with offsets) the sum of x */
template <bool HAS_MIN>
__device__ __forceinline__ void mmv_dot16(const float *__restrict__ xp, const float *q, bool vec,
                                          int64_t c, int64_t ne0, float &s, float &sx)
{
    if (vec) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float4 v = __ldg((const float4 *)xp + k);
            s = fmaf(q[4 * k + 0], v.x, s);
            s = fmaf(q[4 * k + 1], v.y, s);
            s = fmaf(q[4 * k + 2], v.z, s);
            s = fmaf(q[4 * k + 3], v.w, s);
            if (HAS_MIN)
                sx += (v.x + v.y) + (v.z + v.w);
        }
    } else {
#pragma unroll
        for (int l = 0; l < 16; l++) {
            float v = c + l < ne0 ? __ldg(xp + l) : 0.0f;
            s = fmaf(q[l], v, s);
            if (HAS_MIN)
                sx += v;
        }
    }
}

/* y[t][r] = sum_k W[r][k] x[t][k] for t < NT: one warp per row r. */
template <int T, int NT>
__global__ void __launch_bounds__(MMV_WARPS * 32)
    k_mmv(float *__restrict__ y, int64_t ldy, const uint8_t *__restrict__ W, size_t pitch,
          int64_t ne0, int64_t ne1, const float *__restrict__ x, int64_t ldx, bool vec)
{
    typedef qt_dec<T> D;
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * MMV_WARPS + (threadIdx.x >> 5);
    if (r >= ne1)
        return;
    const uint8_t *row = W + r * pitch;
    const int64_t nt = (ne0 + 31) / 32;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = 0.0f;
#pragma unroll 2
    for (int64_t i = lane; i < nt; i += 32) {
        float q[32], sc[2], mn[2];
        int64_t c[2];
        D::task(row, ne0, i, q, sc, mn, c);
#pragma unroll
        for (int h = 0; h < 2; h++) {
#pragma unroll
            for (int t = 0; t < NT; t++) {
                float s = 0.0f, sx = 0.0f;
                mmv_dot16<D::has_min>(x + t * ldx + c[h], q + 16 * h, vec, c[h], ne0, s, sx);
                if (D::scaled)
                    acc[t] = fmaf(sc[h], s, acc[t]);
                else
                    acc[t] += s;
                if (D::has_min)
                    acc[t] = fmaf(mn[h], sx, acc[t]);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v = acc[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        acc[t] = v;
    }
    if (lane == 0) {
#pragma unroll
        for (int t = 0; t < NT; t++)
            y[t * ldy + r] = acc[t];
    }
}


template <int T> static inline mmv_fn mmv_pick(int nt)
{
    switch (nt) {
    case 8: return k_mmv<T, 8>;
    case 4: return k_mmv<T, 4>;
    case 2: return k_mmv<T, 2>;
    default: return k_mmv<T, 1>;
    }
}

