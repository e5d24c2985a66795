/* backend_cuda.cu - the CUDA backend: device buffers, upload of a rank's
 * weights into the device layout of cuda_quant.cuh, and every op of
 * kernels/backend.h as CUDA kernels on one stream.
 *
 * Matrix products: for a few tokens (n_tok <= MMV_MAX_TOK) a dequantizing
 * matrix-vector kernel, one warp per weight row, each lane decoding 32
 * weights per step from aligned 16-byte loads (memory-bandwidth bound); for
 * more tokens the weights are dequantized in row chunks to F16 and
 * multiplied on the tensor cores by cuBLAS (cublasGemmEx, F32 accumulate;
 * F16/BF16/F32 weights are used in place). Without cuBLAS a plain tiled
 * kernel does the products (correct, slower).
 *
 * Ops return nothing (backend.h): a CUDA error is logged with file:line the
 * first time, kept as the backend's sticky status (backend_cuda_status), and
 * later to_host calls fill their output with NaN so that the caller cannot
 * mistake a failed step for a result. Not thread-safe: one caller thread. */
#include "cuda_internal.cuh"
#include "cuda_mmv2.cuh"

__thread int cv_cuda_tl_device = -1;

bool cb_fail(cuda_backend *cb, cudaError_t rc, const char *what, const char *file, int line)
{
    if (rc == cudaSuccess)
        return false;
    if (cb->err == CV_OK) {
        cb->err = CV_EDEVICE;
        snprintf(cb->err_msg, sizeof cb->err_msg, "%s:%d: %s: %s (%s) on %s", file, line, what,
                 cudaGetErrorString(rc), cudaGetErrorName(rc), cb->name);
        cv_log(LOG_ERROR, file, line, "%s", cb->err_msg);
    }
    return true;
}

/* ---- buffers --------------------------------------------------------------- */

static void *cuda_alloc(backend *be, size_t n)
{
    cuda_backend *cb = cb_of(be);
    CG_FLUSH(cb);
    void *p = NULL;
    cudaError_t rc = cudaMalloc(&p, n ? n : 1);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError(); /* an OOM is reported by the NULL, not sticky */
        log_warn("%s: cudaMalloc(%zu) failed: %s", cb->name, n, cudaGetErrorString(rc));
        return NULL;
    }
    return p;
}

static void cuda_free(backend *be, void *p)
{
    if (p) {
        cuda_backend *cb = cb_of(be);
        CG_FLUSH(cb);
        CB_CHECK(cb, cudaStreamSynchronize(cb->stream));
        CB_CHECK(cb, cudaFree(p));
    }
}

static void cuda_from_host(backend *be, void *dst, const void *src, size_t n)
{
    cuda_backend *cb = cb_of(be);
    if (!n)
        return;
    if (cb->graphs) {
        if (cg_from_host(cb, dst, src, n))
            return;
        cg_flush(cb); /* a pageable copy cannot be captured */
    }
    CB_CHECK(cb, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, cb->stream));
}

static void cuda_to_host(backend *be, void *dst, const void *src, size_t n)
{
    cuda_backend *cb = cb_of(be);
    CG_FLUSH(cb);
    if (n) {
        CB_CHECK(cb, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, cb->stream));
        CB_CHECK(cb, cudaStreamSynchronize(cb->stream));
        cg_synced(cb);
    }
    if (cb->err != CV_OK) { /* never hand out a result computed after an error */
        float *f = (float *)dst;
        for (size_t i = 0; i < n / sizeof(float); i++)
            f[i] = NAN;
    }
}

static void cuda_copy(backend *be, void *dst, const void *src, size_t n)
{
    cuda_backend *cb = cb_of(be);
    CG_OP(cb);
    if (n)
        CB_CHECK(cb, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, cb->stream));
}

static void cuda_memset0(backend *be, void *dst, size_t n)
{
    cuda_backend *cb = cb_of(be);
    CG_OP(cb);
    if (n)
        CB_CHECK(cb, cudaMemsetAsync(dst, 0, n, cb->stream));
}

static void cuda_sync(backend *be)
{
    cuda_backend *cb = cb_of(be);
    CG_FLUSH(cb);
    CB_CHECK(cb, cudaStreamSynchronize(cb->stream));
    cg_synced(cb);
}

static size_t cuda_mem_free(backend *be)
{
    cuda_backend *cb = cb_of(be);
    CG_FLUSH(cb);
    size_t fr = 0, tot = 0;
    if (CB_CHECK(cb, cudaMemGetInfo(&fr, &tot)))
        return 0;
    /* keep room for the GEMM chunk, cuBLAS workspace and the context's own needs */
    size_t reserve = (size_t)GEMM_CHUNK_EL * 2 + (512u << 20);
    return fr > reserve ? fr - reserve : 0;
}

/* ---- weights --------------------------------------------------------------- */

/* Rows are packed into the device layout on the host (two pinned staging
 * buffers, so packing one chunk overlaps the copy of the previous one). */
static cv_status cuda_weight_upload(backend *be, be_weight *w, int type, int64_t ne0, int64_t ne1,
                                    const void *src, size_t src_stride, bool src_is_mapped,
                                    cv_err *e)
{
    cuda_backend *cb = cb_of(be);
    CG_FLUSH(cb);
    memset(w, 0, sizeof *w);
    if (!qt_type_supported(type))
        return cv_err_set(e, CV_EUNSUPPORTED, "%s: weight type %s has no CUDA kernel", cb->name,
                          dtype_name(type));
    if (ne0 <= 0 || ne1 <= 0 || (ne0 % qt_block(type) && type != DT_F32 && type != DT_F16 &&
                                    type != DT_BF16))
        return cv_err_set(e, CV_EINVAL, "%s: weight %s shape (%lld, %lld): ne0 must be a positive multiple of %lld",
                          cb->name, dtype_name(type), (long long)ne0, (long long)ne1,
                          (long long)qt_block(type));
    size_t rb = dtype_row_size(type, ne0), pitch = qt_pitch(type, ne0);
    if (rb == 0 || pitch == 0)
        return cv_err_set(e, CV_EINVAL, "%s: bad row size for %s x %lld", cb->name,
                          dtype_name(type), (long long)ne0);
    if (src_stride < rb)
        return cv_err_set(e, CV_EINVAL, "%s: src_stride %zu < row bytes %zu", cb->name, src_stride,
                          rb);
    if (pitch > STAGE_BYTES)
        return cv_err_set(e, CV_EUNSUPPORTED, "%s: a row of %zu bytes exceeds the upload stage",
                          cb->name, pitch);
    if (cb->err != CV_OK)
        return cv_err_set(e, cb->err, "%s", cb->err_msg);

    uint8_t *dev = NULL;
    cudaError_t rc = cudaMalloc((void **)&dev, pitch * (size_t)ne1);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError();
        return cv_err_set(e, CV_ENOMEM, "%s: cudaMalloc of %zu bytes for a %s (%lld x %lld) weight: %s",
                          cb->name, pitch * (size_t)ne1, dtype_name(type), (long long)ne1,
                          (long long)ne0, cudaGetErrorString(rc));
    }
    int64_t rows_per = (int64_t)(STAGE_BYTES / pitch);
    int k = 0;
    for (int64_t r0 = 0; r0 < ne1; r0 += rows_per, k ^= 1) {
        int64_t nr = ne1 - r0 < rows_per ? ne1 - r0 : rows_per;
        /* wait until the copy that last used this staging buffer is done */
        rc = cudaEventSynchronize(cb->stage_ev[k]);
        uint8_t *st = (uint8_t *)cb->stage[k];
        for (int64_t r = 0; r < nr && rc == cudaSuccess; r++)
            qt_pack_row(type, st + r * pitch, (const uint8_t *)src + (size_t)(r0 + r) * src_stride,
                        ne0);
        if (rc == cudaSuccess)
            rc = cudaMemcpyAsync(dev + (size_t)r0 * pitch, st, (size_t)nr * pitch,
                                 cudaMemcpyHostToDevice, cb->stream);
        if (rc == cudaSuccess)
            rc = cudaEventRecord(cb->stage_ev[k], cb->stream);
        if (rc != cudaSuccess)
            break;
    }
    if (rc == cudaSuccess)
        rc = cudaStreamSynchronize(cb->stream);
    if (rc != cudaSuccess) {
        cudaFree(dev);
        return cv_err_set(e, CV_EDEVICE, "%s: uploading a %s (%lld x %lld) weight: %s", cb->name,
                          dtype_name(type), (long long)ne1, (long long)ne0, cudaGetErrorString(rc));
    }
    if (ne1 > 1 && type != DT_F32 && type != DT_F16 && type != DT_BF16)
        cb->int_weights = true;
    w->type = type;
    w->ne0 = ne0;
    w->ne1 = ne1;
    w->row_bytes = rb;
    w->data = dev;
    w->owned = true;
    w->priv = NULL;
    return CV_OK;
}

static void cuda_weight_free(backend *be, be_weight *w)
{
    if (w->data && w->owned) {
        cuda_backend *cb = cb_of(be);
        CG_FLUSH(cb);
        CB_CHECK(cb, cudaStreamSynchronize(cb->stream));
        CB_CHECK(cb, cudaFree(w->data));
    }
    w->data = NULL;
}

/* ---- norms, rope, element-wise ------------------------------------------------- */

__device__ __forceinline__ float block_sum(float v, float *sh)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    return v;
}

__global__ void k_rmsnorm(float *__restrict__ y, const float *__restrict__ x,
                          const float *__restrict__ g, int64_t n, float eps)
{
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * n;
    float *yr = y + blockIdx.x * n;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        ss = fmaf(xr[i], xr[i], ss);
    ss = block_sum(ss, sh);
    const float sc = 1.0f / sqrtf(ss / (float)n + eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        yr[i] = xr[i] * sc * g[i];
}

/* fuse: s = a + b (s may alias a), then y = rmsnorm(s) * g, one block per
 * row; with xq also the quantized y. Same arithmetic as k_add + k_rmsnorm. */
template <bool Q>
__global__ void k_add_rmsnorm(float *y, float *s, const float *a, const float *b,
                              const float *__restrict__ g, int64_t n, float eps,
                              uint8_t *__restrict__ xq, size_t xq_pitch)
{
    __shared__ float sh[32];
    const int64_t o = (int64_t)blockIdx.x * n;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float v = a[o + i] + b[o + i];
        s[o + i] = v;
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, sh); /* its __syncthreads also publishes s to the block */
    const float sc = 1.0f / sqrtf(ss / (float)n + eps);
    if constexpr (!Q) {
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
            y[o + i] = s[o + i] * sc * g[i];
    } else {
        for (int64_t k = threadIdx.x; k < n / 32; k += blockDim.x) {
            float v[32];
#pragma unroll
            for (int l = 0; l < 32; l++) {
                v[l] = s[o + 32 * k + l] * sc * g[32 * k + l];
                y[o + 32 * k + l] = v[l];
            }
            mmv2_quant_store(xq + blockIdx.x * xq_pitch, n, k, v);
        }
    }
}

/* v2 with integer weights: rmsnorm that also quantizes its output for the
 * matmuls that follow (cuda_mmv2.cuh layout); one thread per 32 columns */
__global__ void k_rmsnorm_q(float *__restrict__ y, const float *__restrict__ x,
                            const float *__restrict__ g, int64_t n, float eps,
                            uint8_t *__restrict__ xq, size_t xq_pitch)
{
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * n;
    float *yr = y + blockIdx.x * n;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        ss = fmaf(xr[i], xr[i], ss);
    ss = block_sum(ss, sh);
    const float sc = 1.0f / sqrtf(ss / (float)n + eps);
    for (int64_t k = threadIdx.x; k < n / 32; k += blockDim.x) {
        float v[32];
#pragma unroll
        for (int l = 0; l < 32; l++) {
            v[l] = xr[32 * k + l] * sc * g[32 * k + l];
            yr[32 * k + l] = v[l];
        }
        mmv2_quant_store(xq + blockIdx.x * xq_pitch, n, k, v);
    }
}

/* v2: outputs of ops that feed matmuls are quantized as they are written when
 * the model has integer weights (one launch less per matmul group) */
static bool v2_quant_out(cuda_backend *cb, int64_t n, int64_t n_tok)
{
    return cb->fuse && cb->int_weights && n % 32 == 0 && n <= 65536 &&
           n_tok <= MMV_MAX_TOK && mmv2_xq_reserve(cb, n, n_tok);
}

static void cuda_rmsnorm(backend *be, float *y, const float *x, const be_weight *g, int64_t n_tok,
                         int64_t n, float eps)
{
    cuda_backend *cb = cb_dev(be);
    if (cb->padd.on && !cb->mm.n && !cb->prope.on && n_tok > 0 && cb->padd.y == x &&
        cb->padd.n == n_tok * n) {
        /* the pending add writes x: one kernel for both (rows are blocks; a
         * block reads a and b before it writes y, so y may alias any of them) */
        cb->padd.on = false;
        cb->xq_src = NULL;
        const float *a = cb->padd.a, *b = cb->padd.b;
        if (v2_quant_out(cb, n, n_tok)) {
            k_add_rmsnorm<true><<<(unsigned)n_tok, 256, 0, cb->stream>>>(
                y, (float *)x, a, b, (const float *)g->data, n, eps, cb->xq, mmv2_xq_pitch(n));
            if (!CB_LAUNCHED(cb, "add + rmsnorm (v2, quantized output)"))
                cb->xq_src = y, cb->xq_ne0 = n, cb->xq_ntok = n_tok;
        } else {
            k_add_rmsnorm<false><<<(unsigned)n_tok, 256, 0, cb->stream>>>(
                y, (float *)x, a, b, (const float *)g->data, n, eps, NULL, 0);
            CB_LAUNCHED(cb, "add + rmsnorm");
        }
        return;
    }
    cb = cb_of(be);
    CG_OP(cb);
    if (n_tok <= 0)
        return;
    if (v2_quant_out(cb, n, n_tok)) {
        k_rmsnorm_q<<<(unsigned)n_tok, 256, 0, cb->stream>>>(y, x, (const float *)g->data, n, eps,
                                                              cb->xq, mmv2_xq_pitch(n));
        if (!CB_LAUNCHED(cb, "rmsnorm (v2, quantized output)"))
            cb->xq_src = y, cb->xq_ne0 = n, cb->xq_ntok = n_tok;
        return;
    }
    k_rmsnorm<<<(unsigned)n_tok, 256, 0, cb->stream>>>(y, x, (const float *)g->data, n, eps);
    CB_LAUNCHED(cb, "rmsnorm");
}

/* pair g of x (token, head, pair i < n_rot/2); theta in double like the oracle */
__device__ __forceinline__ void rope_pair(float *__restrict__ x, int64_t g, int n_head,
                                          int head_dim, const int32_t *__restrict__ pos, int mode,
                                          int n_rot, float freq_base, float freq_scale,
                                          const float *__restrict__ ff)
{
    const int half = n_rot / 2;
    const int i = (int)(g % half);
    const int64_t th = g / half; /* token * n_head + head */
    const int64_t t = th / n_head;
    double theta = (double)pos[t] * (double)freq_scale *
                   pow((double)freq_base, -2.0 * i / (double)n_rot);
    if (ff)
        theta /= ff[i];
    const float cs = (float)cos(theta), sn = (float)sin(theta);
    float *v = x + th * head_dim;
    const int a = mode == ROPE_NEOX ? i : 2 * i, b = mode == ROPE_NEOX ? i + half : 2 * i + 1;
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * cs - x1 * sn;
    v[b] = x0 * sn + x1 * cs;
}

/* one thread per (token, head, pair) */
__global__ void k_rope(float *__restrict__ x, int64_t n_tok, int n_head, int head_dim,
                       const int32_t *__restrict__ pos, int mode, int n_rot, float freq_base,
                       float freq_scale, const float *__restrict__ ff)
{
    int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g < n_tok * n_head * (n_rot / 2))
        rope_pair(x, g, n_head, head_dim, pos, mode, n_rot, freq_base, freq_scale, ff);
}

/* fuse: two tensors with the same positions and parameters (q and k) in one launch */
__global__ void k_rope2(float *__restrict__ x1, int n_head1, float *__restrict__ x2, int n_head2,
                        int64_t n_tok, int head_dim, const int32_t *__restrict__ pos, int mode,
                        int n_rot, float freq_base, float freq_scale, const float *__restrict__ ff)
{
    int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t n1 = n_tok * n_head1 * (n_rot / 2), n2 = n_tok * n_head2 * (n_rot / 2);
    if (g < n1)
        rope_pair(x1, g, n_head1, head_dim, pos, mode, n_rot, freq_base, freq_scale, ff);
    else if (g < n1 + n2)
        rope_pair(x2, g - n1, n_head2, head_dim, pos, mode, n_rot, freq_base, freq_scale, ff);
}

static void rope_launch(cuda_backend *cb, float *x, int64_t n_tok, int n_head, int head_dim,
                        const int32_t *pos, const rope_params *rp)
{
    int64_t n = n_tok * n_head * (rp->n_rot / 2);
    if (n <= 0)
        return;
    k_rope<<<grid1(n, 256), 256, 0, cb->stream>>>(x, n_tok, n_head, head_dim, pos, rp->mode,
                                                   rp->n_rot, rp->freq_base, rp->freq_scale,
                                                   rp->freq_factors);
    CB_LAUNCHED(cb, "rope");
}

/* fuse: the first rope waits; a second one with the same positions and
 * parameters on another tensor joins it in one launch (rope(q), rope(k)) */
static void cuda_rope(backend *be, float *x, int64_t n_tok, int n_head, int head_dim,
                      const int32_t *pos, const rope_params *rp)
{
    cuda_backend *cb = cb_dev(be);
    if (cb->prope.on && !cb->mm.n && !cb->padd.on) {
        const rope_params *p = &cb->prope.rp;
        int64_t n1 = cb->prope.n_tok * cb->prope.n_head * head_dim, n2 = n_tok * n_head * head_dim;
        if (cb->prope.n_tok == n_tok && cb->prope.head_dim == head_dim && cb->prope.pos == pos &&
            p->mode == rp->mode && p->n_rot == rp->n_rot && p->freq_base == rp->freq_base &&
            p->freq_scale == rp->freq_scale && p->freq_factors == rp->freq_factors &&
            (cb->prope.x + n1 <= x || x + n2 <= cb->prope.x)) {
            cb->prope.on = false;
            cb->xq_src = NULL;
            int64_t n = (int64_t)(rp->n_rot / 2) * n_tok * (cb->prope.n_head + n_head);
            if (n > 0) {
                k_rope2<<<grid1(n, 256), 256, 0, cb->stream>>>(
                    cb->prope.x, cb->prope.n_head, x, n_head, n_tok, head_dim, pos, rp->mode,
                    rp->n_rot, rp->freq_base, rp->freq_scale, rp->freq_factors);
                CB_LAUNCHED(cb, "rope (two tensors)");
            }
            return;
        }
    }
    cb = cb_of(be);
    CG_OP(cb);
    if (cb->fuse) {
        cb->prope.on = true;
        cb->prope.x = x, cb->prope.n_tok = n_tok, cb->prope.n_head = n_head;
        cb->prope.head_dim = head_dim, cb->prope.pos = pos, cb->prope.rp = *rp;
        return;
    }
    rope_launch(cb, x, n_tok, n_head, head_dim, pos, rp);
}

/* ---- attention ------------------------------------------------------------------ */

template <typename KT> __device__ __forceinline__ float kv_ld(const KT *p);
template <> __device__ __forceinline__ float kv_ld<float>(const float *p) { return *p; }
template <> __device__ __forceinline__ float kv_ld<__half>(const __half *p) { return __half2float(*p); }
template <typename KT> __device__ __forceinline__ KT kv_cv(float v);
template <> __device__ __forceinline__ float kv_cv<float>(float v) { return v; }
template <> __device__ __forceinline__ __half kv_cv<__half>(float v) { return __float2half_rn(v); }

/* K/V rows of the batch into the cache at (slot, pos); grid = n_tok */
template <typename KT>
__global__ void k_kv_store(KT *__restrict__ kc, KT *__restrict__ vc, const float *__restrict__ k,
                           const float *__restrict__ v, const int32_t *__restrict__ slot,
                           const int32_t *__restrict__ pos, int64_t n_slots, int64_t n_ctx,
                           int64_t kv_dim)
{
    const int64_t t = blockIdx.x;
    const int64_t s = slot[t], p = pos[t];
    if (s < 0 || s >= n_slots || p < 0 || p >= n_ctx)
        return; /* attention reports it (NaN output) */
    const int64_t off = (s * n_ctx + p) * kv_dim;
    for (int64_t i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        kc[off + i] = kv_cv<KT>(k[t * kv_dim + i]);
        vc[off + i] = kv_cv<KT>(v[t * kv_dim + i]);
    }
}

/* out[t][h] = softmax(q[t][h] . K[0..pos]) V for one (head, token) per block.
 * Each warp walks positions w, w + ATT_WARPS, ... with an online softmax;
 * lane owns dims lane + 32e; the warps are merged at the end.
 * FUSED (v2 fuse, one token): no k_kv_store launch before: the block takes
 * the current position's k and v from kin/vin (rounded as the cache rounds
 * them) and the first block of each KV head stores them in the cache, which
 * no block reads at that position; with xq, the output is also quantized
 * for the matmul that follows (cuda_mmv2.cuh layout, head_dim % 32 == 0). */
template <typename KT, bool FUSED>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    k_attention(float *__restrict__ out, const float *__restrict__ q, KT *__restrict__ kc,
                KT *__restrict__ vc, const int32_t *__restrict__ slot,
                const int32_t *__restrict__ pos, int64_t n_slots, int64_t n_ctx, int64_t kv_dim,
                int n_head, int n_head_kv, int head_dim, float scale,
                const float *__restrict__ kin, const float *__restrict__ vin,
                uint8_t *__restrict__ xq, size_t xq_pitch)
{
    constexpr int E = ATT_MAX_HD / 32;
    __shared__ float sm_m[ATT_WARPS], sm_l[ATT_WARPS];
    __shared__ float sm_acc[ATT_WARPS][ATT_MAX_HD];
    __shared__ float sm_kc[FUSED ? ATT_MAX_HD : 1], sm_vc[FUSED ? ATT_MAX_HD : 1];
    const int h = blockIdx.x;
    const int64_t t = blockIdx.y;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int hk = h / (n_head / n_head_kv);
    const int64_t s = slot[t], p_last = pos[t];
    float *o = out + (t * n_head + h) * head_dim;
    if (s < 0 || s >= n_slots || p_last < 0 || p_last >= n_ctx) {
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x)
            o[d] = NAN;
        if (FUSED && xq) /* NaN scales: the next matmul's output is NaN too */
            for (int j = threadIdx.x; j < head_dim / 32; j += blockDim.x)
                ((float *)(xq + t * xq_pitch + (int64_t)n_head * head_dim))[h * head_dim / 32 + j] = NAN;
        return;
    }
    if constexpr (FUSED) {
        const int64_t c0 = (int64_t)hk * head_dim;
        const bool leader = h % (n_head / n_head_kv) == 0;
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
            const KT kq = kv_cv<KT>(kin[t * kv_dim + c0 + d]), vq = kv_cv<KT>(vin[t * kv_dim + c0 + d]);
            sm_kc[d] = kv_ld<KT>(&kq);
            sm_vc[d] = kv_ld<KT>(&vq);
            if (leader) {
                kc[(s * n_ctx + p_last) * kv_dim + c0 + d] = kq;
                vc[(s * n_ctx + p_last) * kv_dim + c0 + d] = vq;
            }
        }
        __syncthreads();
    }
    const float *qp = q + (t * n_head + h) * head_dim;
    float qv[E], acc[E];
#pragma unroll
    for (int e = 0; e < E; e++) {
        int d = lane + 32 * e;
        qv[e] = d < head_dim ? qp[d] * scale : 0.0f;
        acc[e] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const KT *kb = kc + s * n_ctx * kv_dim + (int64_t)hk * head_dim;
    const KT *vb = vc + s * n_ctx * kv_dim + (int64_t)hk * head_dim;
    /* unrolled so that the K and V loads of several positions are in flight
     * together (each position's loads do not depend on the softmax state) */
#pragma unroll 4
    for (int64_t p = w; p <= p_last; p += ATT_WARPS) {
        const KT *kr = kb + p * kv_dim, *vr = vb + p * kv_dim;
        float part = 0.0f;
#pragma unroll
        for (int e = 0; e < E; e++) {
            int d = lane + 32 * e;
            if (d < head_dim)
                part = fmaf(qv[e], FUSED && p == p_last ? sm_kc[d] : kv_ld<KT>(kr + d), part);
        }
#pragma unroll
        for (int o2 = 16; o2 > 0; o2 >>= 1)
            part += __shfl_xor_sync(0xffffffffu, part, o2);
        const float mn = fmaxf(m, part);
        const float corr = expf(m - mn), pe = expf(part - mn);
        l = l * corr + pe;
#pragma unroll
        for (int e = 0; e < E; e++) {
            int d = lane + 32 * e;
            float vv = d >= head_dim              ? 0.0f
                       : FUSED && p == p_last ? sm_vc[d]
                                              : kv_ld<KT>(vr + d);
            acc[e] = fmaf(pe, vv, acc[e] * corr);
        }
        m = mn;
    }
    if (lane == 0) {
        sm_m[w] = m;
        sm_l[w] = l;
    }
#pragma unroll
    for (int e = 0; e < E; e++) {
        int d = lane + 32 * e;
        if (d < head_dim)
            sm_acc[w][d] = acc[e];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int k = 0; k < ATT_WARPS; k++)
        M = fmaxf(M, sm_m[k]);
    float L = 0.0f;
    for (int k = 0; k < ATT_WARPS; k++)
        L += sm_l[k] * expf(sm_m[k] - M); /* a warp with no positions: l = 0, m = -inf */
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float a = 0.0f;
        for (int k = 0; k < ATT_WARPS; k++)
            if (sm_l[k] > 0.0f)
                a += sm_acc[k][d] * expf(sm_m[k] - M);
        o[d] = a / L;
    }
    if (FUSED && xq) {
        __syncthreads(); /* the block's o[] writes are visible to the block */
        for (int j = threadIdx.x; j < head_dim / 32; j += blockDim.x) {
            float v[32];
#pragma unroll
            for (int l = 0; l < 32; l++)
                v[l] = o[32 * j + l];
            mmv2_quant_store(xq + t * xq_pitch, (int64_t)n_head * head_dim, h * head_dim / 32 + j, v);
        }
    }
}

static void cuda_attention(backend *be, float *out, const float *q, const float *k, const float *v,
                           be_kv_layer *kv, const int32_t *slot, const int32_t *pos, int64_t n_tok,
                           int n_head, int n_head_kv, int head_dim, float scale)
{
    cuda_backend *cb = cb_of(be);
    CG_OP(cb);
    if (n_tok <= 0)
        return;
    if (head_dim > ATT_MAX_HD || n_head_kv <= 0 || n_head % n_head_kv) {
        char what[128];
        snprintf(what, sizeof what, "attention: head_dim %d (max %d), n_head %d, n_head_kv %d",
                 head_dim, ATT_MAX_HD, n_head, n_head_kv);
        cb_fail(cb, cudaErrorInvalidValue, what, __FILE__, __LINE__);
        return;
    }
    dim3 grid((unsigned)n_head, (unsigned)n_tok);
    /* v2 fuse, one token: the cache store inside the attention kernel, and
     * its output quantized for the Wo matmul when the model is integer */
    const bool fused = cb->fuse && n_tok == 1;
    const int64_t nq = (int64_t)n_head * head_dim;
    uint8_t *xq = NULL;
    size_t xp = 0;
    if (fused && head_dim % 32 == 0 && v2_quant_out(cb, nq, 1))
        xq = cb->xq, xp = mmv2_xq_pitch(nq);
    if (kv->type == DT_F16) {
        if (fused) {
            k_attention<__half, true><<<grid, ATT_WARPS * 32, 0, cb->stream>>>(
                out, q, (__half *)kv->k, (__half *)kv->v, slot, pos, kv->n_slots, kv->n_ctx,
                kv->kv_dim, n_head, n_head_kv, head_dim, scale, k, v, xq, xp);
        } else {
            k_kv_store<__half><<<(unsigned)n_tok, 128, 0, cb->stream>>>(
                (__half *)kv->k, (__half *)kv->v, k, v, slot, pos, kv->n_slots, kv->n_ctx,
                kv->kv_dim);
            k_attention<__half, false><<<grid, ATT_WARPS * 32, 0, cb->stream>>>(
                out, q, (__half *)kv->k, (__half *)kv->v, slot, pos, kv->n_slots, kv->n_ctx,
                kv->kv_dim, n_head, n_head_kv, head_dim, scale, NULL, NULL, NULL, 0);
        }
    } else {
        if (fused) {
            k_attention<float, true><<<grid, ATT_WARPS * 32, 0, cb->stream>>>(
                out, q, (float *)kv->k, (float *)kv->v, slot, pos, kv->n_slots, kv->n_ctx,
                kv->kv_dim, n_head, n_head_kv, head_dim, scale, k, v, xq, xp);
        } else {
            k_kv_store<float><<<(unsigned)n_tok, 128, 0, cb->stream>>>(
                (float *)kv->k, (float *)kv->v, k, v, slot, pos, kv->n_slots, kv->n_ctx,
                kv->kv_dim);
            k_attention<float, false><<<grid, ATT_WARPS * 32, 0, cb->stream>>>(
                out, q, (float *)kv->k, (float *)kv->v, slot, pos, kv->n_slots, kv->n_ctx,
                kv->kv_dim, n_head, n_head_kv, head_dim, scale, NULL, NULL, NULL, 0);
        }
    }
    if (xq && !CB_LAUNCHED(cb, "attention (v2 fused)"))
        cb->xq_src = out, cb->xq_ne0 = nq, cb->xq_ntok = 1;
    CB_LAUNCHED(cb, "attention");
}

__global__ void k_swiglu(float *__restrict__ y, const float *__restrict__ g,
                         const float *__restrict__ u, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float a = g[i];
        y[i] = a / (1.0f + expf(-a)) * u[i];
    }
}

/* v2 with integer weights: swiglu of one token row (n columns) that also
 * quantizes its output; one thread per 32 columns */
__global__ void k_swiglu_q(float *__restrict__ y, const float *__restrict__ g,
                           const float *__restrict__ u, int64_t n, uint8_t *__restrict__ xq)
{
    int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n / 32)
        return;
    float v[32];
#pragma unroll
    for (int l = 0; l < 32; l++) {
        float a = g[32 * k + l];
        v[l] = a / (1.0f + expf(-a)) * u[32 * k + l];
        y[32 * k + l] = v[l];
    }
    mmv2_quant_store(xq, n, k, v);
}

__global__ void k_add(float *y, const float *a, const float *b, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = a[i] + b[i];
}

__global__ void k_add_bias(float *__restrict__ y, const float *__restrict__ b, int64_t n_tok,
                           int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n_tok * n)
        y[i] += b[i % n];
}

__global__ void k_scale(float *y, const float *x, float s, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = x[i] * s;
}

__global__ void k_get_rows(float *__restrict__ y, const float *__restrict__ x,
                           const int32_t *__restrict__ idx, int64_t n_rows, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n_rows * n)
        y[i] = x[(int64_t)idx[i / n] * n + i % n];
}

static void cuda_swiglu(backend *be, float *y, const float *gate, const float *up, int64_t n)
{
    cuda_backend *cb = cb_of(be);
    CG_OP(cb);
    if (n <= 0)
        return;
    /* n is all tokens' elements: quantized as one row, which serves a
     * one-token matmul (decode); any other shape re-quantizes */
    if (v2_quant_out(cb, n, 1)) {
        k_swiglu_q<<<grid1(n / 32, 64), 64, 0, cb->stream>>>(y, gate, up, n, cb->xq);
        if (!CB_LAUNCHED(cb, "swiglu (v2, quantized output)"))
            cb->xq_src = y, cb->xq_ne0 = n, cb->xq_ntok = 1;
        return;
    }
    k_swiglu<<<grid1(n, 256), 256, 0, cb->stream>>>(y, gate, up, n);
    CB_LAUNCHED(cb, "swiglu");
}

/* fuse: the add waits; the rmsnorm of its output fuses with it (cuda_rmsnorm) */
static void cuda_add(backend *be, float *y, const float *a, const float *b, int64_t n)
{
    cuda_backend *cb = cb_of(be);
    CG_OP(cb);
    if (n <= 0)
        return;
    if (cb->fuse) {
        cb->padd.on = true;
        cb->padd.y = y, cb->padd.a = a, cb->padd.b = b, cb->padd.n = n;
        return;
    }
    k_add<<<grid1(n, 256), 256, 0, cb->stream>>>(y, a, b, n);
    CB_LAUNCHED(cb, "add");
}

void cuda_pend_flush(cuda_backend *cb)
{
    if (cb->padd.on) {
        cb->padd.on = false;
        k_add<<<grid1(cb->padd.n, 256), 256, 0, cb->stream>>>(cb->padd.y, cb->padd.a, cb->padd.b,
                                                                cb->padd.n);
        CB_LAUNCHED(cb, "add");
    }
    if (cb->prope.on) {
        cb->prope.on = false;
        rope_launch(cb, cb->prope.x, cb->prope.n_tok, cb->prope.n_head, cb->prope.head_dim,
                    cb->prope.pos, &cb->prope.rp);
    }
}

static void cuda_add_bias(backend *be, float *y, const be_weight *bias, int64_t n_tok, int64_t n)
{
    cuda_backend *cb = cb_of(be);
    CG_OP(cb);
    if (n_tok * n <= 0)
        return;
    k_add_bias<<<grid1(n_tok * n, 256), 256, 0, cb->stream>>>(y, (const float *)bias->data, n_tok,
                                                               n);
    CB_LAUNCHED(cb, "add_bias");
}

static void cuda_get_rows(backend *be, float *y, const float *x, const int32_t *idx,
                          int64_t n_rows, int64_t n)
{
    cuda_backend *cb = cb_of(be);
    CG_OP(cb);
    if (n_rows * n <= 0)
        return;
    k_get_rows<<<grid1(n_rows * n, 256), 256, 0, cb->stream>>>(y, x, idx, n_rows, n);
    CB_LAUNCHED(cb, "get_rows");
}

static void cuda_scale(backend *be, float *y, const float *x, float s, int64_t n)
{
    cuda_backend *cb = cb_of(be);
    CG_OP(cb);
    if (n <= 0)
        return;
    k_scale<<<grid1(n, 256), 256, 0, cb->stream>>>(y, x, s, n);
    CB_LAUNCHED(cb, "scale");
}

/* ---- lifetime --------------------------------------------------------------------- */

static void cuda_destroy(backend *be)
{
    if (!be)
        return;
    cuda_backend *cb = cb_of(be);
    CG_FLUSH(cb);
    if (cudaSetDevice(cb->device) == cudaSuccess)
        cv_cuda_tl_device = cb->device;
    if (cb->stream)
        cudaStreamSynchronize(cb->stream);
    cg_destroy(cb);
    cudaFree(cb->xq);
#ifdef CARAVAN_HAVE_CUBLAS
    if (cb->blas)
        cublasDestroy(cb->blas);
#endif
    cudaFree(cb->wh);
    cudaFree(cb->xh);
    for (int k = 0; k < 2; k++) {
        if (cb->stage[k])
            cudaFreeHost(cb->stage[k]);
        if (cb->stage_ev[k])
            cudaEventDestroy(cb->stage_ev[k]);
    }
    if (cb->stream)
        cudaStreamDestroy(cb->stream);
    free(cb);
}

static cv_status cuda_last_error(backend *be, cv_err *e)
{
    cuda_backend *cb = cb_of(be);
    CG_FLUSH(cb); /* a capturing stream cannot be queried */
    if (cb->err == CV_OK) { /* pick up asynchronous kernel faults too */
        cudaError_t rc = cudaStreamQuery(cb->stream);
        if (rc != cudaSuccess && rc != cudaErrorNotReady)
            cb_fail(cb, rc, "stream", __FILE__, __LINE__);
    }
    if (cb->err != CV_OK)
        return cv_err_set(e, cb->err, "%s", cb->err_msg);
    return CV_OK;
}

static const backend_ops cuda_ops = {
    .name = "cuda",
    .host_memory = false,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .from_host = cuda_from_host,
    .to_host = cuda_to_host,
    .copy = cuda_copy,
    .memset0 = cuda_memset0,
    .sync = cuda_sync,
    .weight_upload = cuda_weight_upload,
    .weight_free = cuda_weight_free,
    .mem_free = cuda_mem_free,
    .matmul = cuda_matmul,
    .rmsnorm = cuda_rmsnorm,
    .rope = cuda_rope,
    .attention = cuda_attention,
    .swiglu = cuda_swiglu,
    .add = cuda_add,
    .add_bias = cuda_add_bias,
    .embed = cuda_embed,
    .get_rows = cuda_get_rows,
    .scale = cuda_scale,
    .destroy = cuda_destroy,
    .last_error = cuda_last_error,
};

extern "C" int backend_cuda_device(backend *be)
{
    return be && be->ops == &cuda_ops ? ((cuda_backend *)be->impl)->device : -1;
}

extern "C" cv_status backend_cuda_status(backend *be, cv_err *e)
{
    if (!be || be->ops != &cuda_ops)
        return CV_OK;
    return cuda_last_error(be, e);
}

extern "C" cv_status backend_cuda_create(int device, backend **out, cv_err *e)
{
    *out = NULL;
    int n_dev = 0;
    cudaError_t rc = cudaGetDeviceCount(&n_dev);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError();
        return cv_err_set(e, CV_EDEVICE, "cuda:%d: no usable CUDA device (%s)", device,
                          cudaGetErrorString(rc));
    }
    if (device < 0 || device >= n_dev)
        return cv_err_set(e, CV_EINVAL, "cuda:%d: this machine has %d CUDA device(s)", device,
                          n_dev);
    CV_CUDA(e, cudaSetDevice(device));
    cv_cuda_tl_device = device;
    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof *cb);
    if (!cb)
        return cv_err_set(e, CV_ENOMEM, "cuda backend: out of host memory");
    cb->device = device;
    snprintf(cb->name, sizeof cb->name, "cuda:%d", device);
    cb->base.ops = &cuda_ops;
    cb->base.impl = cb;
    cb->gemm_chunk_el = GEMM_CHUNK_EL;
    {
        const char *ch = getenv("CARAVAN_CUDA_GEMM_CHUNK");
        if (ch && atoll(ch) > 0)
            cb->gemm_chunk_el = atoll(ch);
    }
    /* defaults from the H200 run of 2026-11-26 (kernels/cuda/NOTES.md): v2
     * at 2 tasks per lane was the fastest decode for every type */
    cb->mmv_var = 2;
    {
        const char *v = getenv("CARAVAN_CUDA_MMV");
        if (v && (!strcmp(v, "v1") || !strcmp(v, "1")))
            cb->mmv_var = 1;
        else if (v && *v && strcmp(v, "v2") && strcmp(v, "2"))
            log_warn("cuda:%d: CARAVAN_CUDA_MMV=%s is not v1 or v2; using v2", device, v);
        const char *u = getenv("CARAVAN_CUDA_MMV_U");
        cb->mmv_u = u && atoi(u) == 4 ? 4 : 2;
        const char *f = getenv("CARAVAN_CUDA_FUSE");
        cb->fuse = cb->mmv_var == 2 && !(f && !strcmp(f, "0"));
    }
    cv_status st = CV_OK;
    if ((rc = cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking)) != cudaSuccess)
        goto err_cuda;
    for (int k = 0; k < 2; k++) {
        if ((rc = cudaMallocHost(&cb->stage[k], STAGE_BYTES)) != cudaSuccess)
            goto err_cuda;
        if ((rc = cudaEventCreateWithFlags(&cb->stage_ev[k], cudaEventDisableTiming)) != cudaSuccess)
            goto err_cuda;
    }
#ifdef CARAVAN_HAVE_CUBLAS
    {
        cublasStatus_t bs = cublasCreate(&cb->blas);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            st = cv_err_set(e, CV_EDEVICE, "cuda:%d: cublasCreate failed (status %d)", device,
                            (int)bs);
            goto err;
        }
        cublasSetStream(cb->blas, cb->stream);
        cublasSetMathMode(cb->blas, CUBLAS_DEFAULT_MATH);
    }
#endif
    cg_init(cb);
    {
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, device) == cudaSuccess)
            log_info("cuda:%d: %s, %d SMs, %.1f GiB, compute %d.%d, matvec v%d%s%s", device,
                     prop.name, prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0,
                     prop.major, prop.minor, cb->mmv_var, cb->fuse ? "+fuse" : "",
                     cb->graphs ? ", graphs" : "");
    }
    *out = &cb->base;
    return CV_OK;
err_cuda:
    st = cv_err_set(e, CV_EDEVICE, "cuda:%d: backend setup: %s", device, cudaGetErrorString(rc));
err:
    cuda_destroy(&cb->base);
    return st;
}

/* Device-to-device copy bandwidth (bytes read + written per second), for
 * benchmarks' "% of measured bandwidth": median of `reps` copies of n_bytes. */
extern "C" cv_status backend_cuda_copy_bandwidth(int device, size_t n_bytes, int reps, double *bps,
                                                 cv_err *e)
{
    *bps = 0;
    CV_CUDA(e, cudaSetDevice(device));
    cv_cuda_tl_device = device;
    void *a = NULL, *b = NULL;
    cudaEvent_t t0 = NULL, t1 = NULL;
    cudaError_t rc;
    float *ms = (float *)calloc((size_t)(reps > 0 ? reps : 1), sizeof(float));
    if (!ms)
        return cv_err_set(e, CV_ENOMEM, "copy bandwidth: out of memory");
    if ((rc = cudaMalloc(&a, n_bytes)) || (rc = cudaMalloc(&b, n_bytes)) ||
        (rc = cudaMemset(a, 0x5a, n_bytes)) || (rc = cudaEventCreate(&t0)) ||
        (rc = cudaEventCreate(&t1)))
        goto done;
    for (int i = 0; i < 3 && !rc; i++) /* warm-up */
        rc = cudaMemcpy(b, a, n_bytes, cudaMemcpyDeviceToDevice);
    for (int i = 0; i < reps && !rc; i++) {
        if ((rc = cudaEventRecord(t0)) || (rc = cudaMemcpyAsync(b, a, n_bytes, cudaMemcpyDeviceToDevice)) ||
            (rc = cudaEventRecord(t1)) || (rc = cudaEventSynchronize(t1)) ||
            (rc = cudaEventElapsedTime(&ms[i], t0, t1)))
            break;
    }
    if (!rc) {
        for (int i = 1; i < reps; i++) /* insertion sort: median */
            for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
                float tmp = ms[j];
                ms[j] = ms[j - 1];
                ms[j - 1] = tmp;
            }
        *bps = 2.0 * (double)n_bytes / (ms[reps / 2] * 1e-3);
    }
done:
    if (t0)
        cudaEventDestroy(t0);
    if (t1)
        cudaEventDestroy(t1);
    cudaFree(a);
    cudaFree(b);
    free(ms);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError();
        return cv_err_set(e, CV_EDEVICE, "copy bandwidth on cuda:%d: %s", device,
                          cudaGetErrorString(rc));
    }
    return CV_OK;
}
