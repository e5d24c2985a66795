/* cuda_mmv.cuh - the dequantizing matrix-vector kernel (decode), a template
 * over weight type and tokens per launch; instantiated by mmv_basic.cu and
 * mmv_k.cu. One warp per weight row; each lane decodes 32 weights per step
 * from aligned 16-byte loads (cuda_quant.cuh) and multiplies them with up to
 * NT activation rows staged in shared memory; a warp shuffle sums the lanes. */
#pragma once
#include "cuda_internal.cuh"

/* ---- matrix-vector (decode) ------------------------------------------------ */

/* Activations are staged in shared memory, once per block, and read from
 * there: read straight from global memory, every lane's 16-float runs hit a
 * different cache line (and the lines were evicted by the weight stream), so
 * x traffic, not the weights, set the speed (H200, 2026-11-26: every type
 * ~70 us for 14336x4096 whatever its size). In shared memory each float4 j
 * sits at slot j ^ ((j >> 3) & 7): the eight lanes of a quarter-warp, whose
 * runs start 32 floats apart, then read eight different bank groups. */
__device__ __forceinline__ int mmv_swz(int j) { return j ^ ((j >> 3) & 7); }

/* 16 products of q[] with x[c..c+16) of a staged row xs, and (for types with
 * offsets) the sum of those x */
template <bool HAS_MIN>
__device__ __forceinline__ void mmv_dot16(const float *xs, int c, const float *q, float &s,
                                          float &sx)
{
    const float4 *x4 = (const float4 *)xs;
    const int j0 = c >> 2;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float4 v = x4[mmv_swz(j0 + k)];
        s = fmaf(q[4 * k + 0], v.x, s);
        s = fmaf(q[4 * k + 1], v.y, s);
        s = fmaf(q[4 * k + 2], v.z, s);
        s = fmaf(q[4 * k + 3], v.w, s);
        if (HAS_MIN)
            sx += (v.x + v.y) + (v.z + v.w);
    }
}

/* y[t][r] = sum_k W[r][k] x[t][k] for t < NT. One warp per row, `rpw` rows
 * per warp one after the other (they share the staged x), MMV_WARPS warps per
 * block. x is staged in column chunks of `ch` floats (a multiple of 256) per
 * token: NT * ch floats of dynamic shared memory; with several chunks rpw is 1. */
template <int T, int NT>
__global__ void __launch_bounds__(MMV_WARPS * 32)
    k_mmv(float *__restrict__ y, int64_t ldy, const uint8_t *__restrict__ W, size_t pitch,
          int64_t ne0, int64_t ne1, const float *__restrict__ x, int64_t ldx, int rpw, int ch)
{
    typedef qt_dec<T> D;
    extern __shared__ float4 mmv_xs4[];
    float *xs = (float *)mmv_xs4;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t nt_all = (ne0 + 31) / 32;
    const int n_ch = (int)((ne0 + ch - 1) / ch);
    const int64_t rbase = ((int64_t)blockIdx.x * MMV_WARPS + warp) * rpw;
    for (int rr = 0; rr < rpw; rr++) {
        const int64_t r = rbase + rr;
        float acc[NT];
#pragma unroll
        for (int t = 0; t < NT; t++)
            acc[t] = 0.0f;
        for (int cj = 0; cj < n_ch; cj++) {
            const int64_t c0 = (int64_t)cj * ch;
            if (n_ch > 1 || rr == 0) { /* uniform over the block */
                __syncthreads();       /* the previous chunk's readers are done */
                for (int idx = threadIdx.x; idx < NT * ch; idx += MMV_WARPS * 32) {
                    const int t = idx / ch, col = idx - t * ch;
                    const int64_t g = c0 + col;
                    xs[t * ch + (mmv_swz(col >> 2) << 2) + (col & 3)] =
                        g < ne0 ? __ldg(x + t * ldx + g) : 0.0f;
                }
                __syncthreads();
            }
            if (r < ne1) {
                const uint8_t *row = W + r * pitch;
                const int64_t i0 = c0 / 32;
                const int64_t i1 = (c0 + ch) / 32 < nt_all ? (c0 + ch) / 32 : nt_all;
#pragma unroll 2
                for (int64_t i = i0 + lane; i < i1; i += 32) {
                    float q[32], sc[2], mn[2];
                    int64_t c[2];
                    D::task(row, ne0, i, q, sc, mn, c);
#pragma unroll
                    for (int h = 0; h < 2; h++) {
#pragma unroll
                        for (int t = 0; t < NT; t++) {
                            float s = 0.0f, sx = 0.0f;
                            mmv_dot16<D::has_min>(xs + t * ch, (int)(c[h] - c0), q + 16 * h, s,
                                                  sx);
                            if (D::scaled)
                                acc[t] = fmaf(sc[h], s, acc[t]);
                            else
                                acc[t] += s;
                            if (D::has_min)
                                acc[t] = fmaf(mn[h], sx, acc[t]);
                        }
                    }
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
        if (lane == 0 && r < ne1) {
#pragma unroll
            for (int t = 0; t < NT; t++)
                y[t * ldy + r] = acc[t];
        }
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

