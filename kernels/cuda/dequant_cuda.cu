/* dequant_cuda.cu - rows of a weight in the device layout to F32 (embedding
 * lookup) or F16 (chunks for the tensor-core products), one thread per
 * 32-weight task. */
#include "cuda_internal.cuh"

/* ---- dequantize rows (embedding, GEMM chunks) -------------------------------- */

template <typename OT> __device__ __forceinline__ OT cvt_out(float v);
template <> __device__ __forceinline__ float cvt_out<float>(float v) { return v; }
template <> __device__ __forceinline__ __half cvt_out<__half>(float v) { return __float2half_rn(v); }

/* out[i][c] = W[idx ? idx[r0+i] : r0+i][c] for i < n_rows, c < ne0; one thread per task. */
template <int T, typename OT>
__global__ void k_dequant_rows(OT *__restrict__ out, int64_t ldo, const uint8_t *__restrict__ W,
                               size_t pitch, int64_t ne0, int64_t ne1, const int32_t *idx,
                               int64_t r0, int64_t n_rows)
{
    const int64_t nt = (ne0 + 31) / 32;
    const int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= nt * n_rows)
        return;
    const int64_t i = g / nt, task = g % nt;
    int64_t r = idx ? (int64_t)idx[r0 + i] : r0 + i;
    OT *o = out + i * ldo;
    if (r < 0 || r >= ne1) { /* bad row id: NaN rather than reading out of bounds */
        for (int l = 0; l < 32; l++)
            if (task * 32 + l < ne0)
                o[task * 32 + l] = cvt_out<OT>(NAN);
        return;
    }
    float q[32], sc[2], mn[2];
    int64_t c[2];
    qt_dec<T>::task(W + r * pitch, ne0, task, q, sc, mn, c);
#pragma unroll
    for (int h = 0; h < 2; h++) {
        OT v[16];
#pragma unroll
        for (int l = 0; l < 16; l++)
            v[l] = cvt_out<OT>(fmaf(sc[h], q[16 * h + l], mn[h]));
        OT *dst = o + c[h];
        if (c[h] + 16 <= ne0 && (uintptr_t)dst % 16 == 0) {
            /* a run of 16 outputs as 16-byte stores (32 B of F16, 64 B of F32) */
#pragma unroll
            for (int k = 0; k < (int)(16 * sizeof(OT) / 16); k++) {
                uint4 u;
                memcpy(&u, (const char *)v + 16 * k, 16);
                ((uint4 *)dst)[k] = u;
            }
        } else {
            for (int l = 0; l < 16; l++)
                if (c[h] + l < ne0)
                    dst[l] = v[l];
        }
    }
}


deq_f32_fn deq_f32_get(int type)
{
    switch (type) {
#define QT_CASE(t)                                                                                 \
    case t: return k_dequant_rows<t, float>;
        QT_FOR_TYPES(QT_CASE)
#undef QT_CASE
    default: return NULL;
    }
}

deq_f16_fn deq_f16_get(int type)
{
    switch (type) {
#define QT_CASE(t)                                                                                 \
    case t: return k_dequant_rows<t, __half>;
        QT_FOR_TYPES(QT_CASE)
#undef QT_CASE
    default: return NULL;
    }
}

