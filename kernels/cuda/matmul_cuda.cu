/* matmul_cuda.cu - y = x W^T on the GPU: the matrix-vector kernels for a few
 * tokens, and for more a chunked dequantize-to-F16 + cuBLAS GemmEx product
 * on the tensor cores (F32 accumulate; F16/BF16/F32 weights in place), or a
 * plain tiled kernel when built without cuBLAS. Also the embedding lookup. */
#include "cuda_internal.cuh"
#include "cuda_mmv2.cuh"

__global__ void k_f32_to_f16(__half *__restrict__ y, const float *__restrict__ x, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = __float2half_rn(x[i]);
}

__global__ void k_f32_to_bf16(__nv_bfloat16 *__restrict__ y, const float *__restrict__ x, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = __float2bfloat16_rn(x[i]);
}

/* ---- fallback GEMM (no cuBLAS) -------------------------------------------------- */

template <typename WT> __device__ __forceinline__ float ld_w(const WT *p);
template <> __device__ __forceinline__ float ld_w<float>(const float *p) { return *p; }
template <> __device__ __forceinline__ float ld_w<__half>(const __half *p) { return __half2float(*p); }
template <> __device__ __forceinline__ float ld_w<__nv_bfloat16>(const __nv_bfloat16 *p)
{
    return __bfloat162float(*p);
}

/* y (M, ldy) [:, 0..N) = x (M, K; ldx) @ Wt^T where Wt is (N, K; ldw). 64x64 tiles, 4x4 per thread. */
template <typename WT>
__global__ void __launch_bounds__(256)
    k_gemm_tiled(float *__restrict__ y, int64_t ldy, const float *__restrict__ x, int64_t ldx,
                 const WT *__restrict__ Wt, int64_t ldw, int64_t M, int64_t N, int64_t K)
{
    __shared__ float xs[16][64 + 1];
    __shared__ float ws[16][64 + 1];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int64_t m0 = (int64_t)blockIdx.y * 64, n0 = (int64_t)blockIdx.x * 64;
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
        for (int e = threadIdx.x; e < 16 * 64; e += 256) {
            int kk = e % 16, mm = e / 16;
            int64_t m = m0 + mm, n = n0 + mm, k = k0 + kk;
            xs[kk][mm] = (m < M && k < K) ? x[m * ldx + k] : 0.0f;
            ws[kk][mm] = (n < N && k < K) ? ld_w<WT>(Wt + n * ldw + k) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 16; kk++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                a[i] = xs[kk][ty * 4 + i];
                b[i] = ws[kk][tx * 4 + i];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int64_t m = m0 + ty * 4 + i, n = n0 + tx * 4 + j;
            if (m < M && n < N)
                y[m * ldy + n] = acc[i][j];
        }
}

/* ---- matmul ------------------------------------------------------------------ */

static bool scratch_grow(cuda_backend *cb, void **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    CG_FLUSH(cb); /* neither the sync nor cudaMalloc can be captured */
    if (*p) {
        CB_CHECK(cb, cudaStreamSynchronize(cb->stream));
        cudaFree(*p);
        *p = NULL;
        *cap = 0;
    }
    if (CB_CHECK(cb, cudaMalloc(p, need)))
        return false;
    *cap = need;
    return true;
}

/* ---- variant v2 (cuda_mmv2.cuh) ------------------------------------------------
 * A v2 matmul is not launched at once: consecutive matmuls on the same x
 * (Wq Wk Wv, Wgate Wup in forward.c) wait in cb->mm and go out as one launch
 * over all their rows (fewer launches, no small-grid tails), when a matmul
 * on another x comes or any other op is called (cb_of flushes). The integer
 * types' x is quantized at the first call; later calls on the same x (and
 * the matmuls after a v2 rmsnorm/swiglu, which quantize their output as they
 * write it) reuse it while cb->xq_src says it is current. */

static bool mm_overlap(const float *a, int64_t na, const float *b, int64_t nb)
{
    return a < b + nb && b < a + na;
}

void cuda_mm_flush(cuda_backend *cb)
{
    const int n = cb->mm.n;
    if (!n)
        return;
    cb->mm.n = 0;
    const int type = cb->mm.type;
    const int64_t ne0 = cb->mm.ne0, n_tok = cb->mm.n_tok;
    const bool q = cb->mm.q;
    const size_t pitch = qt_pitch(type, ne0), xp = mmv2_xq_pitch(ne0);
    const int64_t rpb = (int64_t)MMV2_WARPS * (q ? 1 : MMV2_FROWS); /* rows per block */
    mmv2_mats M;
    memset(&M, 0, sizeof M);
    M.n = n;
    for (int i = 0; i < n; i++) {
        M.W[i] = cb->mm.W[i];
        M.ne1[i] = cb->mm.ne1[i];
        M.blk0[i + 1] = M.blk0[i] + (unsigned)((cb->mm.ne1[i] + rpb - 1) / rpb);
    }
    for (int64_t t0 = 0; t0 < n_tok;) {
        int64_t left = n_tok - t0;
        int nt = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        for (int i = 0; i < n; i++)
            M.y[i] = cb->mm.y[i] + t0 * cb->mm.ne1[i];
        if (q)
            mmv2_get_q(type, nt, cb->mmv_u)<<<M.blk0[n], MMV2_WARPS * 32, 0, cb->stream>>>(
                M, pitch, ne0, cb->xq + (size_t)t0 * xp, xp);
        else
            mmv2_get_f(type, nt, cb->mmv_u)<<<M.blk0[n], MMV2_WARPS * 32, 0, cb->stream>>>(
                M, pitch, ne0, cb->mm.x + t0 * ne0, ne0);
        if (CB_LAUNCHED(cb, q ? "matmul (v2 matrix-vector kernel)"
                              : "matmul (v2 float matrix-vector kernel)"))
            return;
        t0 += nt;
    }
}

/* Size the quantized-activation buffer once, for up to MMV_MAX_TOK rows of
 * 32768 columns (or more when needed), so a captured step never reallocates. */
bool mmv2_xq_reserve(cuda_backend *cb, int64_t ne0, int64_t n_tok)
{
    size_t need = mmv2_xq_pitch(ne0) * (size_t)n_tok, want = mmv2_xq_pitch(32768) * MMV_MAX_TOK;
    return scratch_grow(cb, (void **)&cb->xq, &cb->xq_cap, need > want ? need : want);
}

/* v2 takes the call (true) or leaves it to v1 (false, nothing pending then). */
static bool matmul_mmv2(cuda_backend *cb, float *y, const be_weight *w, const float *x,
                        int64_t n_tok)
{
    const int64_t ne0 = w->ne0, ne1 = w->ne1;
    const bool q = mmv2_get_q(w->type, 1) && ne0 % 32 == 0;
    if (!q) {
        const int epc = w->type == DT_F32 ? 4 : 8;
        if (!mmv2_get_f(w->type, 1) || ne0 % epc || (uintptr_t)x % 16) {
            cuda_mm_flush(cb);
            return false;
        }
    }
    bool join = cb->fuse && cb->mm.n > 0 && cb->mm.n < MMV2_MAXM && cb->mm.x == x && cb->mm.n_tok == n_tok &&
                cb->mm.type == w->type && cb->mm.ne0 == ne0;
    for (int i = 0; join && i < cb->mm.n; i++) /* two outputs in one place: keep the order */
        if (mm_overlap(y, n_tok * ne1, cb->mm.y[i], n_tok * cb->mm.ne1[i]))
            join = false;
    if (!join)
        cuda_mm_flush(cb);
    if (q && !(cb->xq_src == x && cb->xq_ne0 == ne0 && cb->xq_ntok == n_tok)) {
        if (!mmv2_xq_reserve(cb, ne0, n_tok))
            return true;
        if (!mmv2_quantize(cb, cb->xq, mmv2_xq_pitch(ne0), x, ne0, ne0, n_tok))
            return true;
        cb->xq_src = x, cb->xq_ne0 = ne0, cb->xq_ntok = n_tok;
    }
    int k = cb->mm.n++;
    cb->mm.q = q, cb->mm.type = w->type, cb->mm.ne0 = ne0, cb->mm.n_tok = n_tok, cb->mm.x = x;
    cb->mm.W[k] = (const uint8_t *)w->data;
    cb->mm.y[k] = y;
    cb->mm.ne1[k] = ne1;
    if (!cb->fuse || mm_overlap(y, n_tok * ne1, x, n_tok * ne0))
        cuda_mm_flush(cb); /* not grouping, or the output overwrites x */
    return true;
}

static void matmul_mmv(cuda_backend *cb, float *y, const be_weight *w, const float *x,
                       int64_t n_tok)
{

    size_t pitch = qt_pitch(w->type, w->ne0);
    /* 16-byte activation loads need aligned rows and no partial task (float types) */
    bool vec = ((uintptr_t)x % 16 == 0) && (w->ne0 % 32 == 0);
    for (int64_t t0 = 0; t0 < n_tok;) {
        int64_t left = n_tok - t0;
        int nt = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        mmv_fn f = mmv_get_basic(w->type, nt);
        if (!f)
            f = mmv_get_k(w->type, nt);
        f<<<grid1(w->ne1, MMV_WARPS), MMV_WARPS * 32, 0, cb->stream>>>(
            y + t0 * w->ne1, w->ne1, (const uint8_t *)w->data, pitch, w->ne0, w->ne1,
            x + t0 * w->ne0, w->ne0, vec);
        if (CB_LAUNCHED(cb, "matmul (matrix-vector kernel)"))
            return;
        t0 += nt;
    }
}

static void matmul_gemm(cuda_backend *cb, float *y, const be_weight *w, const float *x,
                        int64_t n_tok)
{
    const int64_t K = w->ne0, N = w->ne1;
    size_t pitch = qt_pitch(w->type, K);
    const uint8_t *W = (const uint8_t *)w->data;
    int64_t chunk = cb->gemm_chunk_el / K;
    chunk = chunk < 16 ? 16 : chunk;
    if (chunk > N)
        chunk = N;
    bool in_place = w->type == DT_F16 || w->type == DT_BF16 || w->type == DT_F32;
#ifdef CARAVAN_HAVE_CUBLAS
    const float one = 1.0f, zero = 0.0f;
    if (w->type == DT_F32) {
        cublasStatus_t st =
            cublasSgemm(cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)n_tok, (int)K, &one,
                        (const float *)W, (int)(pitch / 4), x, (int)K, &zero, y, (int)N);
        if (st != CUBLAS_STATUS_SUCCESS)
            cb_fail(cb, cudaErrorUnknown, "cublasSgemm", __FILE__, __LINE__);
        return;
    }
    /* activations to the weights' 16-bit type */
    bool bf = w->type == DT_BF16;
    if (!scratch_grow(cb, &cb->xh, &cb->xh_cap, (size_t)(n_tok * K) * 2))
        return;
    if (bf)
        k_f32_to_bf16<<<grid1(n_tok * K, 256), 256, 0, cb->stream>>>((__nv_bfloat16 *)cb->xh, x,
                                                                      n_tok * K);
    else
        k_f32_to_f16<<<grid1(n_tok * K, 256), 256, 0, cb->stream>>>((__half *)cb->xh, x, n_tok * K);
    if (CB_LAUNCHED(cb, "matmul (activation conversion)"))
        return;
    cudaDataType_t dt = bf ? CUDA_R_16BF : CUDA_R_16F;
    if (!in_place && !scratch_grow(cb, &cb->wh, &cb->wh_cap, (size_t)(chunk * K) * 2))
        return;
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
        int64_t nr = N - r0 < chunk ? N - r0 : chunk;
        const void *A;
        int64_t lda;
        if (in_place) {
            A = W + (size_t)r0 * pitch;
            lda = (int64_t)(pitch / 2);
        } else {
            int64_t nth = nr * ((K + 31) / 32);
            deq_f16_get(w->type)<<<grid1(nth, 256), 256, 0, cb->stream>>>(
                (__half *)cb->wh, K, W, pitch, K, N, NULL, r0, nr);
            if (CB_LAUNCHED(cb, "matmul (dequantize chunk)"))
                return;
            A = cb->wh;
            lda = K;
        }
        cublasStatus_t st = cublasGemmEx(cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, (int)n_tok,
                                         (int)K, &one, A, dt, (int)lda, cb->xh, dt, (int)K, &zero,
                                         y + r0, CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F,
                                         CUBLAS_GEMM_DEFAULT);
        if (st != CUBLAS_STATUS_SUCCESS) {
            char what[96];
            snprintf(what, sizeof what, "cublasGemmEx (status %d)", (int)st);
            cb_fail(cb, cudaErrorUnknown, what, __FILE__, __LINE__);
            return;
        }
    }
#else
    if (!in_place && !scratch_grow(cb, &cb->wh, &cb->wh_cap, (size_t)(chunk * K) * 2))
        return;
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
        int64_t nr = N - r0 < chunk ? N - r0 : chunk;
        dim3 grid((unsigned)((nr + 63) / 64), (unsigned)((n_tok + 63) / 64));
        const uint8_t *A = W + (size_t)r0 * pitch;
        if (w->type == DT_F32) {
            k_gemm_tiled<float><<<grid, 256, 0, cb->stream>>>(y + r0, N, x, K, (const float *)A,
                                                               (int64_t)(pitch / 4), n_tok, nr, K);
        } else if (w->type == DT_BF16) {
            k_gemm_tiled<__nv_bfloat16><<<grid, 256, 0, cb->stream>>>(
                y + r0, N, x, K, (const __nv_bfloat16 *)A, (int64_t)(pitch / 2), n_tok, nr, K);
        } else if (w->type == DT_F16) {
            k_gemm_tiled<__half><<<grid, 256, 0, cb->stream>>>(y + r0, N, x, K, (const __half *)A,
                                                                (int64_t)(pitch / 2), n_tok, nr, K);
        } else {
            int64_t nth = nr * ((K + 31) / 32);
            deq_f16_get(w->type)<<<grid1(nth, 256), 256, 0, cb->stream>>>(
                (__half *)cb->wh, K, W, pitch, K, N, NULL, r0, nr);
            if (CB_LAUNCHED(cb, "matmul (dequantize chunk)"))
                return;
            k_gemm_tiled<__half><<<grid, 256, 0, cb->stream>>>(y + r0, N, x, K,
                                                                (const __half *)cb->wh, K, n_tok,
                                                                nr, K);
        }
        if (CB_LAUNCHED(cb, "matmul (tiled kernel)"))
            return;
    }
#endif
}

void cuda_matmul(backend *be, float *y, const be_weight *w, const float *x, int64_t n_tok)
{
    /* not cb_of: pending matmuls and the quantized x stay for this call */
    cuda_backend *cb = cb_dev(be);
    if (cb->padd.on || cb->prope.on)
        cuda_pend_flush(cb); /* x may be their output */
    if (n_tok <= 0)
        return;
    if (n_tok <= MMV_MAX_TOK) {
        CG_OP(cb);
        if (!(cb->mmv_var == 2 && matmul_mmv2(cb, y, w, x, n_tok)))
            matmul_mmv(cb, y, w, x, n_tok);
    } else {
        cuda_mm_flush(cb);
        CG_FLUSH(cb); /* cuBLAS: not captured */
        matmul_gemm(cb, y, w, x, n_tok);
    }
    if (cb->xq_src && mm_overlap(y, n_tok * w->ne1, cb->xq_src, cb->xq_ntok * cb->xq_ne0))
        cb->xq_src = NULL; /* the output overwrote the quantized x's source */
}

void cuda_embed(backend *be, float *y, const be_weight *emb, const int32_t *tokens,
                       int64_t n_tok)
{
    cuda_backend *cb = cb_of(be);
    CG_OP(cb);
    if (n_tok <= 0)
        return;
    int64_t nth = n_tok * ((emb->ne0 + 31) / 32);
    deq_f32_get(emb->type)<<<grid1(nth, 128), 128, 0, cb->stream>>>(
        y, emb->ne0, (const uint8_t *)emb->data, qt_pitch(emb->type, emb->ne0), emb->ne0,
        emb->ne1, tokens, 0, n_tok);
    CB_LAUNCHED(cb, "embed");
}
