/* backend_cpu.c - the CPU backend: host-memory buffers and every op of
 * kernels/backend.h, parallelised over a persistent thread pool.
 *
 * The element-wise ops, RMSNorm, RoPE and attention here are plain scalar C
 * written to be exactly right: they are the oracle the SIMD and CUDA paths
 * are checked against. Matrix products go through cpu_matmul_run
 * (kernels/cpu/matmul.c), which picks the scalar or SIMD kernel per weight
 * type. Not thread-safe: one caller thread per backend. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../core/dtype.h"
#include "../backend.h"
#include "matmul.h"
#include "threadpool.h"

#define CPU_ALIGN 64
/* Below this many elements an element-wise op runs on the caller thread. */
#define CPU_PAR_MIN 16384

typedef struct cpu_backend {
    backend base;
    threadpool *tp;
    cpu_matmul *mm;
    cpu_level level;
    int n_threads;
    float *att_scratch;  /* n_threads x att_cap floats: attention scores */
    int64_t att_cap;     /* positions per thread in att_scratch */
    /* RoPE's (cos, sin) per token and rotated pair (rope_pair's values),
     * kept while the positions and parameters stay the same (q and k of
     * every layer of a forward): computed once instead of per call. Like
     * att_scratch, it assumes one caller at a time per backend. */
    struct {
        rope_params rp;
        int32_t *pos;
        float *cs;          /* n_tok x n_rot/2 pairs (cos, sin) */
        int64_t n_tok, cap; /* cap: tokens pos/cs have room for */
        int half;
    } rope;
} cpu_backend;

static cpu_backend *cpu_of(backend *be) { return (cpu_backend *)be->impl; }

/* ---- parallel-for helper -------------------------------------------------- */

typedef void (*range_fn)(void *ctx, int64_t i0, int64_t i1, int ith);

typedef struct par_ctx {
    range_fn fn;
    void *ctx;
    int64_t n, chunk;
    atomic_llong next; /* first item of the next chunk */
} par_ctx;

static void par_trampoline(void *p, int ith, int nth)
{
    par_ctx *pc = p;
    (void)nth;
    for (;;) {
        int64_t i0 = atomic_fetch_add_explicit(&pc->next, pc->chunk, memory_order_relaxed);
        if (i0 >= pc->n)
            break;
        int64_t i1 = i0 + pc->chunk < pc->n ? i0 + pc->chunk : pc->n;
        pc->fn(pc->ctx, i0, i1, ith);
    }
}

/* Run fn over [0, n) in about 4 contiguous chunks per thread taken from a
 * shared counter (so a thread the OS has not scheduled yet is not waited
 * for); inline when the work (n items of `cost` elements each) is too small
 * to pay for a wake-up. */
static void par_for(cpu_backend *cb, int64_t n, int64_t cost, range_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    if (cb->n_threads <= 1 || n == 1 || n * cost < CPU_PAR_MIN) {
        fn(ctx, 0, n, 0);
        return;
    }
    par_ctx pc;
    pc.fn = fn, pc.ctx = ctx, pc.n = n;
    pc.chunk = (n + 4 * (int64_t)cb->n_threads - 1) / (4 * (int64_t)cb->n_threads);
    atomic_init(&pc.next, 0);
    threadpool_run_shared(cb->tp, par_trampoline, &pc);
}

/* ---- buffers -------------------------------------------------------------- */

static void *cpu_alloc(backend *be, size_t n_bytes)
{
    void *p = NULL;
    if (n_bytes == 0)
        n_bytes = CPU_ALIGN;
    if (posix_memalign(&p, CPU_ALIGN, n_bytes))
        return NULL;
    return p;
}
static void cpu_free(backend *be, void *buf) { free(buf); }
static void cpu_memcpy_c(backend *be, void *dst, const void *src, size_t n)
{
    if (n && dst != src)
        memmove(dst, src, n);
}
static void cpu_memset0(backend *be, void *dst, size_t n)
{
    if (n)
        memset(dst, 0, n);
}
static void cpu_sync(backend *be) {}

static cv_status cpu_weight_upload(backend *be, be_weight *w, int type, int64_t ne0, int64_t ne1,
                                   const void *src, size_t src_stride, bool src_is_mapped,
                                   cv_err *e)
{
    memset(w, 0, sizeof *w);
    const dtype_traits *tr = dtype_get(type);
    if (!tr->known || !tr->supported)
        return cv_err_set(e, CV_EUNSUPPORTED, "weight type %s is not supported by the cpu backend",
                          dtype_name(type));
    if (ne0 <= 0 || ne1 <= 0)
        return cv_err_set(e, CV_EINVAL, "weight shape [%lld, %lld] is empty", (long long)ne0,
                          (long long)ne1);
    size_t row = dtype_row_size(type, ne0);
    if (!row)
        return cv_err_set(e, CV_EINVAL, "weight row of %lld elements is not a multiple of the %s "
                          "block size %lld", (long long)ne0, tr->name, (long long)tr->block_size);
    if (src_stride < row)
        return cv_err_set(e, CV_EINVAL, "weight row stride %zu is below the row size %zu",
                          src_stride, row);
    w->type = type;
    w->ne0 = ne0;
    w->ne1 = ne1;
    w->row_bytes = row;
    if (src_is_mapped && src_stride == row) {
        w->data = (void *)src; /* alias the mapping: zero-copy */
        w->owned = false;
        return CV_OK;
    }
    uint8_t *dst = cpu_alloc(be, row * (size_t)ne1);
    if (!dst)
        return cv_err_set(e, CV_ENOMEM, "allocating %zu bytes for a %s weight [%lld, %lld]",
                          row * (size_t)ne1, tr->name, (long long)ne0, (long long)ne1);
    if (src_stride == row) {
        memcpy(dst, src, row * (size_t)ne1);
    } else {
        for (int64_t r = 0; r < ne1; r++)
            memcpy(dst + (size_t)r * row, (const uint8_t *)src + (size_t)r * src_stride, row);
    }
    w->data = dst;
    w->owned = true;
    return CV_OK;
}

/* The R4 layouts of the one-token kernels (matmul.h: cpu_weight_repack);
 * CARAVAN_REPACK=0 keeps the GGUF layout (to compare, or to rule it out). */
static void cpu_weight_optimize(backend *be, be_weight *w)
{
    const char *env = getenv("CARAVAN_REPACK");
    if (env && strcmp(env, "0") == 0)
        return;
    cpu_weight_repack(cpu_of(be)->mm, w);
}

static void cpu_weight_free(backend *be, be_weight *w)
{
    if (w->owned)
        free(w->data);
    memset(w, 0, sizeof *w);
}

/* MemAvailable from /proc/meminfo (what the kernel can give without
 * swapping), else free pages from sysconf. */
static size_t cpu_mem_free(backend *be)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                fclose(f);
                return (size_t)kb * 1024;
            }
        }
        fclose(f);
    }
    long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psz > 0)
        return (size_t)pages * (size_t)psz;
    return 0;
}

/* ---- ops ------------------------------------------------------------------ */

static void cpu_op_matmul(backend *be, float *y, const be_weight *w, const float *x, int64_t n_tok)
{
    cpu_matmul_run(cpu_of(be)->mm, y, w, x, n_tok);
}

typedef struct rms_ctx {
    float *y;
    const float *x, *g;
    int64_t n;
    float eps;
} rms_ctx;

static void rms_range(void *p, int64_t t0, int64_t t1, int ith)
{
    rms_ctx *c = p;
    for (int64_t t = t0; t < t1; t++) {
        const float *x = c->x + t * c->n;
        float *y = c->y + t * c->n;
        double ss = 0;
        for (int64_t i = 0; i < c->n; i++)
            ss += (double)x[i] * x[i];
        float r = (float)(1.0 / sqrt(ss / (double)c->n + (double)c->eps));
        for (int64_t i = 0; i < c->n; i++)
            y[i] = x[i] * r * c->g[i];
    }
}

typedef struct rope_ctx {
    float *x;
    int n_head, head_dim;
    const int32_t *pos;
    const rope_params *rp;
    const float *cs; /* rope_table's (cos, sin) per token and pair, or NULL */
} rope_ctx;

/* cos and sin of the rotation of pair i (< n_rot / 2) at position pos */
static void rope_pair(const rope_params *rp, int32_t pos, int i, float *cn, float *sn)
{
    /* theta_i = pos * freq_scale * base^(-2i / n_rot) / factor_i */
    double theta = (double)pos * rp->freq_scale * pow((double)rp->freq_base, -2.0 * i / (double)rp->n_rot);
    if (rp->freq_factors)
        theta /= rp->freq_factors[i];
    *cn = (float)cos(theta), *sn = (float)sin(theta);
}

static void rope_table_range(void *p, int64_t t0, int64_t t1, int ith)
{
    (void)ith;
    cpu_backend *cb = p;
    for (int64_t t = t0; t < t1; t++) {
        float *cs = cb->rope.cs + t * 2 * cb->rope.half;
        for (int i = 0; i < cb->rope.half; i++)
            rope_pair(&cb->rope.rp, cb->rope.pos[t], i, &cs[2 * i], &cs[2 * i + 1]);
    }
}

static void rope_range(void *p, int64_t t0, int64_t t1, int ith)
{
    (void)ith;
    rope_ctx *c = p;
    const rope_params *rp = c->rp;
    int half = rp->n_rot / 2;
    for (int64_t t = t0; t < t1; t++) {
        for (int i = 0; i < half; i++) {
            float cn, sn;
            if (c->cs)
                cn = c->cs[(t * half + i) * 2], sn = c->cs[(t * half + i) * 2 + 1];
            else
                rope_pair(rp, c->pos[t], i, &cn, &sn);
            for (int h = 0; h < c->n_head; h++) {
                float *v = c->x + (t * c->n_head + h) * (int64_t)c->head_dim;
                int a, b;
                if (rp->mode == ROPE_NEOX) {
                    a = i;
                    b = i + half;
                } else {
                    a = 2 * i;
                    b = 2 * i + 1;
                }
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * cn - x1 * sn;
                v[b] = x0 * sn + x1 * cn;
            }
        }
    }
}

static bool rope_same(const rope_params *a, const rope_params *b)
{
    return a->mode == b->mode && a->n_rot == b->n_rot && a->freq_base == b->freq_base &&
           a->freq_scale == b->freq_scale && a->freq_factors == b->freq_factors;
}

/* The table for these positions and parameters in cb->rope (built unless
 * the last call's), or NULL when it cannot be allocated (rope_range then
 * computes per call, the same values). */
static const float *rope_table(cpu_backend *cb, int64_t n_tok, const int32_t *pos, const rope_params *rp)
{
    int half = rp->n_rot / 2;
    if (cb->rope.cs && cb->rope.n_tok == n_tok && cb->rope.half == half && rope_same(&cb->rope.rp, rp) &&
        !memcmp(cb->rope.pos, pos, (size_t)n_tok * sizeof *pos))
        return cb->rope.cs;
    if (n_tok > cb->rope.cap || half > cb->rope.half) {
        free(cb->rope.pos), free(cb->rope.cs);
        int64_t cap = n_tok > cb->rope.cap ? n_tok : cb->rope.cap;
        cb->rope.pos = malloc((size_t)cap * sizeof *pos);
        cb->rope.cs = malloc((size_t)cap * 2 * (size_t)half * sizeof(float));
        cb->rope.cap = cap;
        if (!cb->rope.pos || !cb->rope.cs) {
            free(cb->rope.pos), free(cb->rope.cs);
            memset(&cb->rope, 0, sizeof cb->rope);
            return NULL;
        }
    }
    cb->rope.rp = *rp, cb->rope.half = half, cb->rope.n_tok = n_tok;
    memcpy(cb->rope.pos, pos, (size_t)n_tok * sizeof *pos);
    par_for(cb, n_tok, 64 * (int64_t)half, rope_table_range, cb);
    return cb->rope.cs;
}

static void cpu_rope(backend *be, float *x, int64_t n_tok, int n_head, int head_dim,
                     const int32_t *pos, const rope_params *rp)
{
    cpu_backend *cb = cpu_of(be);
    const float *cs = rp->n_rot >= 2 ? rope_table(cb, n_tok, pos, rp) : NULL;
    rope_ctx c = {x, n_head, head_dim, pos, rp, cs};
    par_for(cb, n_tok, (int64_t)n_head * head_dim * 8, rope_range, &c);
}

typedef struct att_ctx {
    cpu_backend *cb;
    float *out;
    const float *q, *k, *v;
    be_kv_layer *kv;
    const int32_t *slot, *pos;
    int64_t n_tok;
    int n_head, n_head_kv, head_dim;
    float scale;
    int heads_per_item; /* query heads one work item handles (all of a KV group, or 1) */
    bool simd;          /* use the AVX2 variant */
    const int64_t *tile; /* first token of each tile (att_cut_tiles), or NULL: one token each */
    int64_t n_tiles;
} att_ctx;

#define ATT_TILE 16                /* most tokens of one run of positions per work item */
#define ATT_TILE_SCRATCH (1 << 18) /* floats of scores (per thread) that tiles may take */

/* fp16 -> f32 for every half value: KV reads become one load. */
static float f16_table[65536];
static pthread_once_t f16_table_once = PTHREAD_ONCE_INIT;
static void f16_table_init(void)
{
    for (uint32_t i = 0; i < 65536; i++)
        f16_table[i] = fp16_to_f32((uint16_t)i);
}

static void kv_store_range(void *p, int64_t t0, int64_t t1, int ith)
{
    att_ctx *c = p;
    be_kv_layer *kv = c->kv;
    for (int64_t t = t0; t < t1; t++) {
        int64_t off = ((int64_t)c->slot[t] * kv->n_ctx + c->pos[t]) * kv->kv_dim;
        const float *ks = c->k + t * kv->kv_dim, *vs = c->v + t * kv->kv_dim;
        if (kv->type == DT_F16) {
            uint16_t *kd = (uint16_t *)kv->k + off, *vd = (uint16_t *)kv->v + off;
            for (int64_t i = 0; i < kv->kv_dim; i++) {
                kd[i] = f32_to_fp16(ks[i]);
                vd[i] = f32_to_fp16(vs[i]);
            }
        } else {
            memcpy((float *)kv->k + off, ks, kv->kv_dim * sizeof(float));
            memcpy((float *)kv->v + off, vs, kv->kv_dim * sizeof(float));
        }
    }
}

/* Four independent partial sums: a fixed order, and room for the compiler. */
static inline float dot_f32(const float *a, const float *b, int n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}
static inline float dot_f16(const float *a, const uint16_t *b, int n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * f16_table[b[i]];
        s1 += a[i + 1] * f16_table[b[i + 1]];
        s2 += a[i + 2] * f16_table[b[i + 2]];
        s3 += a[i + 3] * f16_table[b[i + 3]];
    }
    for (; i < n; i++)
        s0 += a[i] * f16_table[b[i]];
    return (s0 + s1) + (s2 + s3);
}

static inline float kv_dot(const be_kv_layer *kv, const float *q, const void *base, int64_t off,
                           int n)
{
    if (kv->type == DT_F16)
        return dot_f16(q, (const uint16_t *)base + off, n);
    return dot_f32(q, (const float *)base + off, n);
}

/* o[0..n) += p * row */
static inline void kv_axpy(const be_kv_layer *kv, float *o, float p, const void *base, int64_t off,
                           int n)
{
    if (kv->type == DT_F16) {
        const uint16_t *r = (const uint16_t *)base + off;
        for (int i = 0; i < n; i++)
            o[i] += p * f16_table[r[i]];
    } else {
        const float *r = (const float *)base + off;
        for (int i = 0; i < n; i++)
            o[i] += p * r[i];
    }
}

/* Query heads [h0, h0 + nh) of token t, all sharing one KV head: scores
 * over positions 0..pos[t] (each K row read once for the group), softmax,
 * weighted sum of V rows. `s` holds nh * (pos+1) floats. */
static void att_group(att_ctx *c, int64_t t, int h0, int nh, float *s)
{
    be_kv_layer *kv = c->kv;
    int hd = c->head_dim;
    int hk = h0 / (c->n_head / c->n_head_kv);
    int64_t n_pos = (int64_t)c->pos[t] + 1;
    int64_t base = (int64_t)c->slot[t] * kv->n_ctx * kv->kv_dim + (int64_t)hk * hd;
    const float *q = c->q + (t * c->n_head + h0) * (int64_t)hd;
    float *o = c->out + (t * c->n_head + h0) * (int64_t)hd;

    for (int64_t j = 0; j < n_pos; j++) {
        int64_t kb = base + j * kv->kv_dim;
        for (int g = 0; g < nh; g++)
            s[g * n_pos + j] = kv_dot(kv, q + g * hd, kv->k, kb, hd) * c->scale;
    }
    for (int g = 0; g < nh; g++) {
        float *sg = s + g * n_pos;
        float mx = -INFINITY;
        for (int64_t j = 0; j < n_pos; j++)
            if (sg[j] > mx)
                mx = sg[j];
        double sum = 0;
        for (int64_t j = 0; j < n_pos; j++) {
            sg[j] = expf(sg[j] - mx);
            sum += sg[j];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < n_pos; j++)
            sg[j] *= inv;
    }
    memset(o, 0, (size_t)nh * hd * sizeof(float));
    for (int64_t j = 0; j < n_pos; j++) {
        int64_t vb = base + j * kv->kv_dim;
        for (int g = 0; g < nh; g++)
            kv_axpy(kv, o + g * hd, s[g * n_pos + j], kv->v, vb, hd);
    }
}

/* Without scratch (allocation failed): one head at a time, scores
 * recomputed in a second pass instead of stored. */
static void att_one_noscratch(att_ctx *c, int64_t t, int h)
{
    be_kv_layer *kv = c->kv;
    int hd = c->head_dim;
    int hk = h / (c->n_head / c->n_head_kv);
    const float *q = c->q + (t * c->n_head + h) * (int64_t)hd;
    float *o = c->out + (t * c->n_head + h) * (int64_t)hd;
    int64_t n_pos = (int64_t)c->pos[t] + 1;
    int64_t base = (int64_t)c->slot[t] * kv->n_ctx * kv->kv_dim + (int64_t)hk * hd;
    float mx = -INFINITY;
    for (int64_t j = 0; j < n_pos; j++) {
        float d = kv_dot(kv, q, kv->k, base + j * kv->kv_dim, hd) * c->scale;
        if (d > mx)
            mx = d;
    }
    memset(o, 0, (size_t)hd * sizeof(float));
    double sum = 0;
    for (int64_t j = 0; j < n_pos; j++) {
        float p = expf(kv_dot(kv, q, kv->k, base + j * kv->kv_dim, hd) * c->scale - mx);
        sum += p;
        kv_axpy(kv, o, p, kv->v, base + j * kv->kv_dim, hd);
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < hd; i++)
        o[i] *= inv;
}

/* ---- AVX2 variants of attention and SwiGLU ---------------------------------
 * Compiled with a per-function target attribute and used only when the
 * backend's level is avx2 or wider; the scalar functions above stay the
 * oracle (the tests run both). exp256 is a Cephes-style exp, about 1 ulp. */
#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_HAVE_AVX2_OPS 1
#define AVX2_FN __attribute__((target("avx2,fma,f16c")))

AVX2_FN static inline __m256 exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

AVX2_FN static inline float hsum256(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

AVX2_FN static inline __attribute__((always_inline)) __m256 ld8(const void *base, int64_t off,
                                                                 const bool f16)
{
    if (f16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + off)));
    return _mm256_loadu_ps((const float *)base + off);
}

/* the 8 horizontal sums of a[0..7], in order, as one vector */
AVX2_FN static inline __m256 hsum8x8(const __m256 *a)
{
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    t0 = _mm256_hadd_ps(t0, t1);
    t2 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(t0, t2, 0x20), _mm256_permute2f128_ps(t0, t2, 0x31));
}

/* The 8 dot products of query qg with the rows k0 + r * ks (r < 8) of base,
 * hd elements each, as one vector (unscaled). */
AVX2_FN static inline __attribute__((always_inline)) __m256
att_dot8(const float *qg, const void *base, int64_t k0, int64_t ks, int hd, const bool f16)
{
    /* eight named accumulators: GCC -O2 keeps these in registers
     * (an array indexed in a loop spills to the stack) */
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int i = 0; i < hd; i += 8) {
        __m256 qv = _mm256_loadu_ps(qg + i);
        a0 = _mm256_fmadd_ps(qv, ld8(base, k0 + 0 * ks + i, f16), a0);
        a1 = _mm256_fmadd_ps(qv, ld8(base, k0 + 1 * ks + i, f16), a1);
        a2 = _mm256_fmadd_ps(qv, ld8(base, k0 + 2 * ks + i, f16), a2);
        a3 = _mm256_fmadd_ps(qv, ld8(base, k0 + 3 * ks + i, f16), a3);
        a4 = _mm256_fmadd_ps(qv, ld8(base, k0 + 4 * ks + i, f16), a4);
        a5 = _mm256_fmadd_ps(qv, ld8(base, k0 + 5 * ks + i, f16), a5);
        a6 = _mm256_fmadd_ps(qv, ld8(base, k0 + 6 * ks + i, f16), a6);
        a7 = _mm256_fmadd_ps(qv, ld8(base, k0 + 7 * ks + i, f16), a7);
    }
    __m256 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    return hsum8x8(acc);
}

/* P V of one head over positions [0, np) (weights sg[p]), nv <= 8 output
 * vectors: row p of base at vb0 + p * vs; the accumulators start at zero
 * (first) or at o[0 .. 8 nv), and end there times sc. */
AVX2_FN static inline __attribute__((always_inline)) void
att_pv64(const float *sg, int64_t np, const void *base, int64_t vb0, int64_t vs, int nv,
         float *o, bool first, float sc, const bool f16)
{
    /* named registers, not an array: an array went through the stack at
     * both ends of every call */
    const __m256 z = _mm256_setzero_ps();
#define ATT_PV_LD(r) (first || (r) >= nv ? z : _mm256_loadu_ps(o + 8 * (r)))
    __m256 a0 = ATT_PV_LD(0), a1 = ATT_PV_LD(1), a2 = ATT_PV_LD(2), a3 = ATT_PV_LD(3);
    __m256 a4 = ATT_PV_LD(4), a5 = ATT_PV_LD(5), a6 = ATT_PV_LD(6), a7 = ATT_PV_LD(7);
#undef ATT_PV_LD
    if (nv == 8) {
        for (int64_t p = 0; p < np; p++) {
            __m256 w = _mm256_set1_ps(sg[p]);
            int64_t vb = vb0 + p * vs;
            a0 = _mm256_fmadd_ps(w, ld8(base, vb + 0, f16), a0);
            a1 = _mm256_fmadd_ps(w, ld8(base, vb + 8, f16), a1);
            a2 = _mm256_fmadd_ps(w, ld8(base, vb + 16, f16), a2);
            a3 = _mm256_fmadd_ps(w, ld8(base, vb + 24, f16), a3);
            a4 = _mm256_fmadd_ps(w, ld8(base, vb + 32, f16), a4);
            a5 = _mm256_fmadd_ps(w, ld8(base, vb + 40, f16), a5);
            a6 = _mm256_fmadd_ps(w, ld8(base, vb + 48, f16), a6);
            a7 = _mm256_fmadd_ps(w, ld8(base, vb + 56, f16), a7);
        }
    } else {
        for (int64_t p = 0; p < np; p++) {
            __m256 w = _mm256_set1_ps(sg[p]);
            int64_t vb = vb0 + p * vs;
            a0 = _mm256_fmadd_ps(w, ld8(base, vb + 0, f16), a0);
            if (nv > 1) a1 = _mm256_fmadd_ps(w, ld8(base, vb + 8, f16), a1);
            if (nv > 2) a2 = _mm256_fmadd_ps(w, ld8(base, vb + 16, f16), a2);
            if (nv > 3) a3 = _mm256_fmadd_ps(w, ld8(base, vb + 24, f16), a3);
            if (nv > 4) a4 = _mm256_fmadd_ps(w, ld8(base, vb + 32, f16), a4);
            if (nv > 5) a5 = _mm256_fmadd_ps(w, ld8(base, vb + 40, f16), a5);
            if (nv > 6) a6 = _mm256_fmadd_ps(w, ld8(base, vb + 48, f16), a6);
        }
    }
    __m256 vi = _mm256_set1_ps(sc); /* x * 1.0f == x: partial sums are stored as they are */
    _mm256_storeu_ps(o, _mm256_mul_ps(a0, vi));
#define ATT_PV_ST(r, a)                                                                            \
    if (nv > (r))                                                                                  \
        _mm256_storeu_ps(o + 8 * (r), _mm256_mul_ps(a, vi));
    ATT_PV_ST(1, a1) ATT_PV_ST(2, a2) ATT_PV_ST(3, a3) ATT_PV_ST(4, a4) ATT_PV_ST(5, a5)
    ATT_PV_ST(6, a6) ATT_PV_ST(7, a7)
#undef ATT_PV_ST
}

#define ATT_SHARE_HD 256   /* largest head_dim whose K/V blocks are copied into L1 per item */
#define ATT_PV_FLOATS 4096 /* floats of V per block of positions (L1; 8 positions at least) */

/* The score of one position (a token's last < 8 positions, after its whole
 * blocks of 8): one accumulator, unscaled. */
AVX2_FN static inline __attribute__((always_inline)) float
att_dot1(const float *qg, const void *base, int64_t kb, int hd, const bool f16)
{
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < hd; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i), ld8(base, kb + i, f16), acc);
    return hsum256(acc);
}

/* Softmax of one (token, head)'s n scores in place, left unnormalised:
 * returns 1 / sum (applied at the end of P V). The max is exact in any
 * order, so it is taken 8 lanes at a time. */
AVX2_FN static float att_softmax(float *sg, int64_t n)
{
    __m256 vmx = _mm256_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(sg + j));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmx), _mm256_extractf128_ps(vmx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    for (; j < n; j++)
        if (sg[j] > mx)
            mx = sg[j];
    vmx = _mm256_set1_ps(mx);
    __m256 vsum = _mm256_setzero_ps();
    j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(sg + j), vmx));
        _mm256_storeu_ps(sg + j, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    double sum = hsum256(vsum);
    for (; j < n; j++) {
        sg[j] = expf(sg[j] - mx);
        sum += sg[j];
    }
    return (float)(1.0 / sum);
}

/* One work item: query heads [h0, h0 + nh), which share one KV head, of
 * tokens t0 .. t0 + nt - 1, consecutive positions of one sequence; token
 * t0 + k sees np0 + k positions. Query row r = k * nh + g (token t0 + k,
 * head h0 + g) keeps its scores at s + r * npm. */
typedef struct att_tile {
    int64_t t0, np0, npm;
    int nt, h0, nh;
    float *s;
} att_tile;

/* Scores of the positions j .. j + 7 (row r at ko + r * ks of kb) for every
 * token of the tile that sees any of them: whole blocks with att_dot8, a
 * token's last < 8 positions one at a time (as a token alone does). */
AVX2_FN static inline __attribute__((always_inline)) void
att_tile_scores(const att_ctx *c, const att_tile *tl, int64_t j, const void *kb, int64_t ko,
                int64_t ks, const bool f16)
{
    const int hd = c->head_dim, nh = tl->nh;
    const int64_t npm = tl->npm;
    const __m256 vscale = _mm256_set1_ps(c->scale);
    for (int k = 0; k < tl->nt; k++) {
        const int64_t n = tl->np0 + k;
        const float *q = c->q + ((tl->t0 + k) * c->n_head + tl->h0) * (int64_t)hd;
        float *sk = tl->s + (int64_t)k * nh * npm;
        if (j + 8 <= n) {
            for (int g = 0; g < nh; g++)
                _mm256_storeu_ps(sk + g * npm + j,
                                 _mm256_mul_ps(att_dot8(q + g * hd, kb, ko, ks, hd, f16), vscale));
        } else {
            for (int64_t p = j; p < n; p++)
                for (int g = 0; g < nh; g++)
                    sk[g * npm + p] = att_dot1(q + g * hd, kb, ko + (p - j) * ks, hd, f16) * c->scale;
        }
    }
}

/* P V over the positions [p0, p1) (row p at vo + (p - p0) * vs of vb) for
 * every token of the tile that sees any of them; a row's partial sums wait
 * in its output between blocks (x * 1.0f == x), 1 / sum applied after its
 * last position. */
AVX2_FN static inline __attribute__((always_inline)) void
att_tile_pv(const att_ctx *c, const att_tile *tl, const float *inv, int64_t p0, int64_t p1,
            const void *vb, int64_t vo, int64_t vs, const bool f16)
{
    const int hd = c->head_dim, nh = tl->nh;
    for (int k = 0; k < tl->nt; k++) {
        const int64_t n = tl->np0 + k;
        if (n <= p0)
            continue;
        int64_t pe = p1 < n ? p1 : n;
        float *o = c->out + ((tl->t0 + k) * c->n_head + tl->h0) * (int64_t)hd;
        for (int g = 0; g < nh; g++) {
            const float *sg = tl->s + (int64_t)(k * nh + g) * tl->npm + p0;
            float sc = pe == n ? inv[k * nh + g] : 1.0f;
            for (int i0 = 0; i0 < hd; i0 += 64) {
                int nv = (hd - i0) / 8 < 8 ? (hd - i0) / 8 : 8;
                att_pv64(sg, pe - p0, vb, vo + i0, vs, nv, o + g * hd + i0, p0 == 0, sc, f16);
            }
        }
    }
}

/* n rows of hd elements of a cache (row r at off + r * stride of src, F16
 * converted) into dst, contiguous */
AVX2_FN static inline __attribute__((always_inline)) void
att_rows_copy(float *dst, const void *src, int64_t off, int64_t stride, int64_t n, int hd, const bool f16)
{
    for (int64_t r = 0; r < n; r++)
        for (int i = 0; i < hd; i += 8)
            _mm256_store_ps(dst + r * hd + i, ld8(src, off + r * stride + i, f16));
}

/* Attention of one work item (att_tile; nt == 1: any token). Each block of
 * K rows (8 positions) and of V rows (ATT_PV_FLOATS) is read, and copied or
 * converted from F16 into L1, once for all the item's queries: the tile's
 * tokens share all but their last few positions, and with one token per
 * item a prefill read (and converted) each row ~n/2 times per head group.
 * Every (token, head) still does the float operations of a token alone, in
 * the same order: scores (att_tile_scores), softmax, P V in position order.
 * s holds nt * nh * (pos[t0] + nt) floats. */
AVX2_FN static inline __attribute__((always_inline)) void
att_tile_avx2_t(att_ctx *c, int64_t t0, int nt, int h0, int nh, float *s, const bool f16)
{
    be_kv_layer *kv = c->kv;
    const int hd = c->head_dim;
    const int64_t kvd = kv->kv_dim;
    int hk = h0 / (c->n_head / c->n_head_kv);
    int64_t np0 = (int64_t)c->pos[t0] + 1;
    att_tile tl = {t0, np0, np0 + nt - 1, nt, h0, nh, s};
    const int64_t npm = tl.npm;
    int64_t base = (int64_t)c->slot[t0] * kv->n_ctx * kvd + (int64_t)hk * hd;

    /* Blocks of rows are copied (F16: converted) into kf / vf, contiguous,
     * for the item's queries to share: read in place, the V rows of an F32
     * cache, kv_dim floats apart, fell into a few L1 sets and evicted each
     * other before their reuse. One token and head reads each row once
     * anyway: no copy. */
    const bool conv = hd <= ATT_SHARE_HD && nt * nh > 1;
    float kf[8 * ATT_SHARE_HD] __attribute__((aligned(32)));
    for (int64_t j = 0; j < npm; j += 8) {
        int64_t kb = base + j * kvd;
        if (!conv) {
            att_tile_scores(c, &tl, j, kv->k, kb, kvd, f16);
            continue;
        }
        att_rows_copy(kf, kv->k, kb, kvd, npm - j < 8 ? npm - j : 8, hd, f16);
        att_tile_scores(c, &tl, j, kf, 0, hd, false);
    }
    float inv[ATT_TILE * 64]; /* nt <= ATT_TILE, nh <= 64 (cpu_attention) */
    for (int r = 0; r < nt * nh; r++)
        inv[r] = att_softmax(s + r * npm, np0 + r / nh);

    /* a single (token, head) sums over all its positions in one pass */
    const int64_t pvb = conv || nt > 1 ? (hd <= ATT_PV_FLOATS / 8 ? ATT_PV_FLOATS / hd : 8) : npm;
    float vf[ATT_PV_FLOATS > 8 * ATT_SHARE_HD ? ATT_PV_FLOATS : 8 * ATT_SHARE_HD]
        __attribute__((aligned(32)));
    for (int64_t p0 = 0; p0 < npm; p0 += pvb) {
        int64_t p1 = npm - p0 < pvb ? npm : p0 + pvb;
        if (!conv) {
            att_tile_pv(c, &tl, inv, p0, p1, kv->v, base + p0 * kvd, kvd, f16);
            continue;
        }
        att_rows_copy(vf, kv->v, base + p0 * kvd, kvd, p1 - p0, hd, f16);
        att_tile_pv(c, &tl, inv, p0, p1, vf, 0, hd, false);
    }
}

AVX2_FN static void att_tile_avx2(att_ctx *c, int64_t t0, int nt, int h0, int nh, float *s)
{
    if (c->kv->type == DT_F16)
        att_tile_avx2_t(c, t0, nt, h0, nh, s, true);
    else
        att_tile_avx2_t(c, t0, nt, h0, nh, s, false);
}
#endif

/* Work item i: head group i / n_tiles (head-group major: a thread walks the
 * tokens of one KV head, whose cache rows then stay in its L2), tile
 * i % n_tiles: tokens tile[i] .. tile[i + 1] - 1, or token i % n_tiles
 * when there are no tiles. */
static void att_range(void *p, int64_t i0, int64_t i1, int ith)
{
    att_ctx *c = p;
    int per = c->heads_per_item;
    float *s = c->cb->att_scratch ? c->cb->att_scratch + (int64_t)ith * c->cb->att_cap : NULL;
    for (int64_t i = i0; i < i1; i++) {
        int64_t ti = i % c->n_tiles;
        int h0 = (int)(i / c->n_tiles) * per;
        int64_t ta = c->tile ? c->tile[ti] : ti, tb = c->tile ? c->tile[ti + 1] : ti + 1;
        if (s) {
#ifdef CPU_HAVE_AVX2_OPS
            if (c->simd) {
                att_tile_avx2(c, ta, (int)(tb - ta), h0, per, s);
                continue;
            }
#endif
            for (int64_t t = ta; t < tb; t++)
                att_group(c, t, h0, per, s);
        } else {
            for (int64_t t = ta; t < tb; t++)
                for (int h = h0; h < h0 + per; h++)
                    att_one_noscratch(c, t, h);
        }
    }
}

/* Cut the batch into tiles of at most `nt` tokens that are consecutive
 * positions of one sequence: tile[i] is the first token of tile i,
 * tile[n] = n_tok. Returns n. */
static int64_t att_cut_tiles(const int32_t *slot, const int32_t *pos, int64_t n_tok, int nt,
                             int64_t *tile)
{
    int64_t n = 0;
    for (int64_t t = 0; t < n_tok; t++)
        if (t == 0 || t - tile[n - 1] == nt || slot[t] != slot[t - 1] || pos[t] != pos[t - 1] + 1)
            tile[n++] = t;
    tile[n] = n_tok;
    return n;
}

static void cpu_attention(backend *be, float *out, const float *q, const float *k, const float *v,
                          be_kv_layer *kv, const int32_t *slot, const int32_t *pos, int64_t n_tok,
                          int n_head, int n_head_kv, int head_dim, float scale)
{
    cpu_backend *cb = cpu_of(be);
    int group = n_head / n_head_kv;
    /* a work item is a whole KV group (each K/V row read once for it) unless
     * that leaves threads idle, e.g. decoding one token with few KV heads */
    int per = (n_tok * n_head_kv >= cb->n_threads || group == 1) ? group : 1;
    att_ctx c = {cb, out, q, k, v, kv, slot, pos, n_tok, n_head, n_head_kv, head_dim, scale, per,
                 cb->level >= CPU_AVX2 && head_dim % 8 == 0 && per <= 64, NULL, n_tok};
    /* every token's K/V first, so tokens of one sequence in this batch see
     * the earlier ones (causal order holds through pos) */
    par_for(cb, n_tok, kv->kv_dim * 2, kv_store_range, &c);

    int64_t need = 0; /* positions the longest row sees */
    for (int64_t t = 0; t < n_tok; t++)
        if (pos[t] + 1 > need)
            need = pos[t] + 1;
    /* tiles of several tokens (AVX2 only: the scalar path stays one token
     * per item) while their scores fit ATT_TILE_SCRATCH floats */
    int nt = c.simd ? ATT_TILE : 1;
    while (nt > 1 && (int64_t)nt * per * need > ATT_TILE_SCRATCH)
        nt /= 2;
    int64_t *tile = nt > 1 ? malloc((size_t)(n_tok + 1) * sizeof *tile) : NULL;
    if (tile) {
        c.n_tiles = att_cut_tiles(slot, pos, n_tok, nt, tile);
        c.tile = tile;
        if (c.n_tiles == n_tok || c.n_tiles * (n_head / per) < cb->n_threads) {
            c.tile = NULL; /* no runs, or too few items for the threads */
            c.n_tiles = n_tok;
        }
    }
    int64_t cap_need = (c.tile ? nt : 1) * per * need; /* the tile's last token sees <= need */
    if (cap_need > cb->att_cap) {
        free(cb->att_scratch);
        cb->att_cap = 0;
        int64_t cap = cap_need < 4096 ? 4096 : cap_need;
        cb->att_scratch = malloc((size_t)cap * cb->n_threads * sizeof(float));
        if (cb->att_scratch)
            cb->att_cap = cap; /* else: att_one_noscratch recomputes the scores */
    }
    par_for(cb, c.n_tiles * (n_head / per), need * head_dim * 2 * per * (n_tok / c.n_tiles),
            att_range, &c);
    free(tile);
}

typedef struct ew_ctx {
    float *y;
    const float *a, *b;
    float s;
    int64_t n_col; /* add_bias: row length */
} ew_ctx;

static void swiglu_range(void *p, int64_t i0, int64_t i1, int ith)
{
    ew_ctx *c = p;
    for (int64_t i = i0; i < i1; i++) {
        float g = c->a[i];
        c->y[i] = g / (1.0f + expf(-g)) * c->b[i];
    }
}

#ifdef CPU_HAVE_AVX2_OPS
AVX2_FN static void swiglu_range_avx2(void *p, int64_t i0, int64_t i1, int ith)
{
    ew_ctx *c = p;
    int64_t i = i0;
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; i + 8 <= i1; i += 8) {
        __m256 g = _mm256_loadu_ps(c->a + i);
        __m256 e = exp256(_mm256_sub_ps(zero, g));
        __m256 y = _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(c->b + i));
        _mm256_storeu_ps(c->y + i, y);
    }
    for (; i < i1; i++) {
        float g = c->a[i];
        c->y[i] = g / (1.0f + expf(-g)) * c->b[i];
    }
}
#endif

#ifdef CPU_HAVE_AVX2_OPS
/* rms_range with the sum of squares in 16 double lanes (then added in a
 * fixed order): the same precision class as the scalar sum, not the same
 * bits; y as rms_range (x * r * g in float, left to right) */
AVX2_FN static void rms_range_avx2(void *p, int64_t t0, int64_t t1, int ith)
{
    (void)ith;
    rms_ctx *c = p;
    for (int64_t t = t0; t < t1; t++) {
        const float *x = c->x + t * c->n;
        float *y = c->y + t * c->n;
        __m256d s[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
        int64_t i = 0;
        for (; i + 16 <= c->n; i += 16) {
            __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
            __m256d d[4] = {_mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)),
                            _mm256_cvtps_pd(_mm256_castps256_ps128(b)), _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1))};
            for (int k = 0; k < 4; k++)
                s[k] = _mm256_fmadd_pd(d[k], d[k], s[k]);
        }
        __m256d s4 = _mm256_add_pd(_mm256_add_pd(s[0], s[1]), _mm256_add_pd(s[2], s[3]));
        __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
        double ss = _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
        for (; i < c->n; i++)
            ss += (double)x[i] * x[i];
        float r = (float)(1.0 / sqrt(ss / (double)c->n + (double)c->eps));
        const __m256 vr = _mm256_set1_ps(r);
        for (i = 0; i + 8 <= c->n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vr), _mm256_loadu_ps(c->g + i)));
        for (; i < c->n; i++)
            y[i] = x[i] * r * c->g[i];
    }
}
#endif

static void cpu_rmsnorm(backend *be, float *y, const float *x, const be_weight *g, int64_t n_tok,
                        int64_t n, float eps)
{
    rms_ctx c = {y, x, (const float *)g->data, n, eps};
#ifdef CPU_HAVE_AVX2_OPS
    if (cpu_of(be)->level >= CPU_AVX2) {
        par_for(cpu_of(be), n_tok, n, rms_range_avx2, &c);
        return;
    }
#endif
    par_for(cpu_of(be), n_tok, n, rms_range, &c);
}

static void cpu_swiglu(backend *be, float *y, const float *gate, const float *up, int64_t n)
{
    ew_ctx c = {y, gate, up, 0, 0};
#ifdef CPU_HAVE_AVX2_OPS
    if (cpu_of(be)->level >= CPU_AVX2) {
        par_for(cpu_of(be), n, 8, swiglu_range_avx2, &c);
        return;
    }
#endif
    par_for(cpu_of(be), n, 8, swiglu_range, &c);
}

static void add_range(void *p, int64_t i0, int64_t i1, int ith)
{
    ew_ctx *c = p;
    for (int64_t i = i0; i < i1; i++)
        c->y[i] = c->a[i] + c->b[i];
}

static void cpu_add(backend *be, float *y, const float *a, const float *b, int64_t n)
{
    ew_ctx c = {y, a, b, 0, 0};
    par_for(cpu_of(be), n, 1, add_range, &c);
}

static void bias_range(void *p, int64_t t0, int64_t t1, int ith)
{
    ew_ctx *c = p;
    for (int64_t t = t0; t < t1; t++)
        for (int64_t i = 0; i < c->n_col; i++)
            c->y[t * c->n_col + i] += c->b[i];
}

static void cpu_add_bias(backend *be, float *y, const be_weight *bias, int64_t n_tok, int64_t n)
{
    ew_ctx c = {y, NULL, (const float *)bias->data, 0, n};
    par_for(cpu_of(be), n_tok, n, bias_range, &c);
}

static void scale_range(void *p, int64_t i0, int64_t i1, int ith)
{
    ew_ctx *c = p;
    for (int64_t i = i0; i < i1; i++)
        c->y[i] = c->a[i] * c->s;
}

static void cpu_scale(backend *be, float *y, const float *x, float s, int64_t n)
{
    ew_ctx c = {y, x, NULL, s, 0};
    par_for(cpu_of(be), n, 1, scale_range, &c);
}

typedef struct embed_ctx {
    float *y;
    const be_weight *emb;
    const int32_t *tokens;
} embed_ctx;

static void embed_range(void *p, int64_t t0, int64_t t1, int ith)
{
    embed_ctx *c = p;
    const be_weight *w = c->emb;
    for (int64_t t = t0; t < t1; t++) {
        int64_t id = c->tokens[t];
        float *y = c->y + t * w->ne0;
        if (id < 0 || id >= w->ne1) { /* callers validate; never read out of bounds */
            memset(y, 0, w->ne0 * sizeof(float));
            continue;
        }
        dequantize_row(w->type, (const uint8_t *)w->data + (size_t)id * w->row_bytes, y, w->ne0);
    }
}

static void cpu_embed(backend *be, float *y, const be_weight *emb, const int32_t *tokens,
                      int64_t n_tok)
{
    embed_ctx c = {y, emb, tokens};
    par_for(cpu_of(be), n_tok, emb->ne0, embed_range, &c);
}

static void cpu_get_rows(backend *be, float *y, const float *x, const int32_t *idx, int64_t n_rows,
                         int64_t n)
{
    for (int64_t r = 0; r < n_rows; r++)
        memmove(y + r * n, x + (int64_t)idx[r] * n, n * sizeof(float));
}

static void cpu_destroy(backend *be)
{
    cpu_backend *cb = cpu_of(be);
    if (!cb)
        return;
    cpu_matmul_free(cb->mm);
    threadpool_free(cb->tp);
    free(cb->rope.pos);
    free(cb->rope.cs);
    free(cb->att_scratch);
    free(cb);
}

#define CPU_OPS(nm)                                                                                \
    {                                                                                              \
        .name = nm, .host_memory = true, .alloc = cpu_alloc, .free = cpu_free,                     \
        .from_host = cpu_memcpy_c, .to_host = cpu_memcpy_c, .copy = cpu_memcpy_c,                  \
        .memset0 = cpu_memset0, .sync = cpu_sync, .weight_upload = cpu_weight_upload,              \
        .weight_free = cpu_weight_free, .weight_optimize = cpu_weight_optimize,                    \
        .mem_free = cpu_mem_free, .matmul = cpu_op_matmul,                                         \
        .rmsnorm = cpu_rmsnorm, .rope = cpu_rope, .attention = cpu_attention,                      \
        .swiglu = cpu_swiglu, .add = cpu_add, .add_bias = cpu_add_bias, .embed = cpu_embed,        \
        .get_rows = cpu_get_rows, .scale = cpu_scale, .destroy = cpu_destroy,                      \
    }
/* One ops table per level so the name says which kernels are in use. */
static const backend_ops cpu_ops_by_level[3] = {
    CPU_OPS("cpu-scalar"),
    CPU_OPS("cpu-avx2"),
    CPU_OPS("cpu-avx512"),
};


cv_status backend_cpu_create(int n_threads, const char *level, backend **out, cv_err *e)
{
    *out = NULL;
    cpu_level best = cpu_level_detect();
    cpu_level lv = best;
    if (level && *level) {
        int l = cpu_level_parse(level);
        if (l < 0)
            return cv_err_set(e, CV_EINVAL, "unknown cpu level '%s' (expected scalar, avx2 or "
                              "avx512)", level);
        if (l > (int)best)
            return cv_err_set(e, CV_EUNSUPPORTED, "cpu level '%s' is not supported by this CPU "
                              "(best: %s)", level, cpu_level_name(best));
        lv = (cpu_level)l;
    }
    if (n_threads < 0)
        return cv_err_set(e, CV_EINVAL, "n_threads %d < 0", n_threads);
    if (n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    pthread_once(&f16_table_once, f16_table_init);
    cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb)
        return cv_err_set(e, CV_ENOMEM, "allocating the cpu backend");
    cb->n_threads = n_threads;
    cb->level = lv;
    cb->tp = threadpool_create(n_threads);
    if (!cb->tp) {
        free(cb);
        return cv_err_set(e, CV_ENOMEM, "creating a thread pool of %d threads", n_threads);
    }
    cb->mm = cpu_matmul_create(cb->tp, lv);
    if (!cb->mm) {
        threadpool_free(cb->tp);
        free(cb);
        return cv_err_set(e, CV_ENOMEM, "creating the cpu matmul state");
    }
    cb->base.ops = &cpu_ops_by_level[lv];
    cb->base.impl = cb;
    *out = &cb->base;
    return CV_OK;
}
