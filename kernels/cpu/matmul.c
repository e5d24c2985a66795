/* matmul.c - CPU matrix products y = x @ W^T for every weight type, split
 * over the persistent thread pool.
 *
 * Levels: scalar (dot_row from core/dtype.c per (token, row): the oracle),
 * avx2 and avx512 (kernels in matmul_avx2.c / matmul_avx512.c, see
 * cpu_kernels.h). For the SIMD levels the activations are quantized once
 * per matmul (Q8_0-style blocks or Q8_K, as quantize_row_q8_0/_k; for the
 * AVX2 prefill GEMM of Q8_0 weights to 16 bits, cpu_x16_quantize_ref)
 * unless the weights are float. cpu_matmul_ref is the scalar oracle of
 * whichever path a product takes. Work items are (row chunk, token block)
 * pairs handed out through an atomic counter: decode splits the rows over
 * the threads, prefill also blocks the tokens so one block of quantized
 * activations stays in L2 while the weight rows stream through once per
 * block. Prefill on
 * AVX2 goes to the packed-panel GEMM of gemm_avx2.c (row chunks of up to 64
 * rows, one token block unless the rows are too few to split), which packs
 * Q4_0 / Q8_0 weights re-laid at load (R4, cpu_kernels.h) straight from the
 * groups. */
#include "matmul.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/dtype.h"
#include "../../core/dtype_blocks.h"
#include "cpu_kernels.h"

struct cpu_matmul {
    threadpool *tp;
    cpu_level level;
    uint8_t *xq;         /* quantized activations */
    size_t xq_cap;
    uint8_t *scratch;    /* n_threads x per-thread scratch: unpacked weight rows */
    size_t scratch_cap;
};

cpu_matmul *cpu_matmul_create(threadpool *tp, cpu_level level)
{
    cpu_matmul *mm = calloc(1, sizeof *mm);
    if (!mm)
        return NULL;
    mm->tp = tp;
    mm->level = level > cpu_level_detect() ? cpu_level_detect() : level;
    return mm;
}

void cpu_matmul_free(cpu_matmul *mm)
{
    if (!mm)
        return;
    free(mm->xq);
    free(mm->scratch);
    free(mm);
}

cpu_level cpu_matmul_level(const cpu_matmul *mm)
{
    return mm->level;
}

/* ---- row-interleaved (R4) weights -------------------------------------------- */

#if defined(__x86_64__)
static const cpu_repack r4_q4_0 = {DT_Q4_0, cpu_r4_q4_0_pack, cpu_r4_q4_0_unpack, cpu_r4_q4_0_gemv,
                                   CPU_ACT_Q8B, 1, 1};
static const cpu_repack r4_q8_0 = {DT_Q8_0, cpu_r4_q8_0_pack, cpu_r4_q8_0_unpack, cpu_r4_q8_0_gemv,
                                   CPU_ACT_Q8B, 1, 1};
static const cpu_repack r4_q4_k = {DT_Q4_K, cpu_r4_q4_k_pack, cpu_r4_q4_k_unpack,
                                   cpu_r4_q4_k_gemv, CPU_ACT_Q8KB, 1, 0};
#endif

const cpu_repack *cpu_repack_avx2(int type)
{
#if defined(__x86_64__)
    switch (type) {
    case DT_Q4_0:
        return &r4_q4_0;
    case DT_Q8_0:
        return &r4_q8_0;
    case DT_Q4_K:
        return &r4_q4_k;
    }
#endif
    (void)type;
    return NULL;
}

const cpu_repack *cpu_weight_layout(const be_weight *w)
{
    return (const cpu_repack *)w->priv;
}

typedef struct repack_job {
    const cpu_repack *rp;
    be_weight *w;
    uint8_t *tmp; /* nth x 4 rows */
} repack_job;

static void repack_worker(void *ctx, int ith, int nth)
{
    repack_job *j = ctx;
    const be_weight *w = j->w;
    const size_t gb = 4 * w->row_bytes;
    const int64_t ng = w->ne1 / 4, g0 = ng * ith / nth, g1 = ng * (ith + 1) / nth;
    uint8_t *tmp = j->tmp + (size_t)ith * gb;
    /* group by group in place: a group takes exactly its 4 rows' bytes */
    for (int64_t g = g0; g < g1; g++) {
        uint8_t *p = (uint8_t *)w->data + (size_t)g * gb;
        memcpy(tmp, p, gb);
        j->rp->pack(tmp, w->row_bytes, p, w->ne0);
    }
}

bool cpu_weight_repack(cpu_matmul *mm, be_weight *w)
{
    /* AVX2 only: an AVX-512 CPU runs the wider kernels on standard rows */
    if (mm->level != CPU_AVX2 || cpu_level_detect() < CPU_AVX2 || w->priv || w->ne1 % 4 != 0)
        return false;
    const cpu_repack *rp = cpu_repack_avx2(w->type);
    if (!rp)
        return false;
    /* every thread's buffer first: a weight is re-laid whole or not at all */
    int nth = threadpool_size(mm->tp);
    repack_job j = {rp, w, malloc((size_t)nth * 4 * w->row_bytes)};
    if (!j.tmp)
        return false;
    if (nth > 1 && w->ne1 >= 64)
        threadpool_run(mm->tp, repack_worker, &j);
    else
        repack_worker(&j, 0, 1);
    free(j.tmp);
    w->priv = (void *)rp;
    return true;
}

/* ---- the prefill GEMM's Q8_0 activations, as scalars (the tests' oracle) --- */

int cpu_x16_quantize_ref(const float *x, int64_t n, int16_t *q, float *da, float *ds)
{
    const int64_t nb = n / 32;
    float amax = 0.0f, bmin = INFINITY;
    for (int64_t b = 0; b < nb; b++) {
        float m = 0.0f;
        for (int i = 0; i < 32; i++)
            m = fmaxf(m, fabsf(x[32 * b + i]));
        amax = fmaxf(amax, m);
        if (m > 0.0f)
            bmin = fminf(bmin, m);
    }
    const int one = bmin * 256.0f >= amax;
    *ds = one ? amax / 32767.0f : 1.0f;
    for (int64_t b = 0; b < nb; b++) {
        float d = *ds;
        if (one) {
            da[b] = 1.0f;
        } else {
            float m = 0.0f;
            for (int i = 0; i < 32; i++)
                m = fmaxf(m, fabsf(x[32 * b + i]));
            d = da[b] = m / 32767.0f;
        }
        float id = d > 0.0f ? 1.0f / d : 0.0f;
        for (int i = 0; i < 32; i++) {
            long v = lrintf(x[32 * b + i] * id);
            q[32 * b + i] = (int16_t)(v > 32767 ? 32767 : (v < -32768 ? -32768 : v));
        }
    }
    return one;
}

double cpu_x16_dot_q8_0_ref(const void *w, const int16_t *q, const float *da, float ds, int64_t n)
{
    const dt_block_q8_0 *wb = w;
    double sum = 0.0;
    for (int64_t b = 0; b < n / 32; b++) {
        int64_t s = 0;
        for (int i = 0; i < 32; i++)
            s += (int64_t)wb[b].qs[i] * q[32 * b + i];
        sum += (double)fp16_to_f32(wb[b].d) * da[b] * (double)s;
    }
    return sum * ds;
}

/* ---- scalar path ---------------------------------------------------------- */

static void gemm_scalar(const cpu_gemm_args *a)
{
    for (int64_t t = 0; t < a->n_tok; t++) {
        const float *xt = (const float *)(a->x + t * a->x_stride);
        for (int64_t r = 0; r < a->n_rows; r++)
            a->y[t * a->ldy + r] = dot_row(a->type, a->w + r * a->w_stride, xt, a->n);
    }
}

static cpu_kernel mm_kernel(cpu_level level, int type)
{
    cpu_kernel k = {CPU_ACT_F32, NULL, NULL};
#if defined(__x86_64__)
    if (level >= CPU_AVX512)
        k = cpu_kernel_avx512(type);
    if (!k.gemm && level >= CPU_AVX2)
        k = cpu_kernel_avx2(type);
#endif
    if (!k.gemm) {
        k.act = CPU_ACT_F32;
        k.quantize = NULL;
        k.gemm = gemm_scalar;
    }
    return k;
}

/* The AVX2 prefill GEMM for this product, or no kernel (.gemm NULL) */
static cpu_kernel mm_gemm_kernel(cpu_level level, int type, int64_t n, int64_t n_tok)
{
    cpu_kernel none = {CPU_ACT_F32, NULL, NULL};
#if defined(__x86_64__)
    if (level == CPU_AVX2 && n_tok > cpu_avx2_gemv_multi_max(type) && n_tok >= 2 && n % 32 == 0) {
        cpu_kernel g = cpu_kernel_avx2_gemm(type);
        if (g.gemm && (g.act != CPU_ACT_P8K || n % 256 == 0))
            return g;
    }
#endif
    (void)level, (void)type, (void)n, (void)n_tok;
    return none;
}

bool cpu_matmul_x16(const cpu_matmul *mm, int type, int64_t n, int64_t n_tok)
{
    return type == DT_Q8_0 && mm_gemm_kernel(mm->level, type, n, n_tok).gemm != NULL;
}

double cpu_matmul_ref(const cpu_matmul *mm, int type, const void *w, const float *x, int64_t n,
                      int64_t n_tok)
{
    int vt = dtype_vec_dot_type(type);
    if (mm->level == CPU_SCALAR || vt == DT_F32 || n % dtype_get(type)->block_size != 0)
        return dot_row(type, w, x, n);
    double r = NAN;
    if (cpu_matmul_x16(mm, type, n, n_tok)) {
        int16_t *q = malloc((size_t)n * sizeof *q);
        float *da = malloc((size_t)(n / 32 + 1) * sizeof *da), ds;
        if (q && da) {
            cpu_x16_quantize_ref(x, n, q, da, &ds);
            r = cpu_x16_dot_q8_0_ref(w, q, da, ds, n);
        }
        free(q), free(da);
        return r;
    }
    void *xq = malloc((size_t)n * 2 + 1024);
    if (xq) {
        if (vt == DT_Q8_0)
            quantize_row_q8_0(x, xq, n);
        else
            quantize_row_q8_k(x, xq, n);
        r = vec_dot_q8(type, w, xq, n);
    }
    free(xq);
    return r;
}

/* ---- parallel driver ------------------------------------------------------ */

typedef struct mm_job {
    cpu_kernel k;
    cpu_gemm_args a;     /* whole problem; sliced per work item */
    int64_t row_chunk, n_row_chunks;
    int64_t tok_block, n_tok_blocks;
    atomic_llong next;   /* next work item */
    /* quantization phase */
    const float *xf;
    uint8_t *scratch;
    size_t scratch_each;
    /* R4 weights: .gemv on the groups (one token), j->k on the groups
     * (rp_direct: the few-token decode, the prefill GEMM of Q4_0 / Q8_0), or
     * groups unpacked to standard rows at unpack_off of the thread's
     * scratch, unpack_rows at a time, before j->k runs on them */
    const cpu_repack *rp;
    bool rp_gemv, rp_direct; /* rp_direct: j->k reads the groups itself (a.r4) */
    size_t unpack_off;
    int64_t unpack_rows;
} mm_job;

static void mm_quant_worker(void *ctx, int ith, int nth)
{
    mm_job *j = ctx;
    int64_t t0 = j->a.n_tok * ith / nth, t1 = j->a.n_tok * (ith + 1) / nth;
    for (int64_t t = t0; t < t1; t++)
        j->k.quantize(j->xf + t * j->a.n, (uint8_t *)j->a.x + t * j->a.x_stride, j->a.n);
}

/* One work item over R4 groups for a kernel that reads standard rows: the
 * item's rows (whole groups: row chunks are multiples of 4) unpacked a few
 * groups at a time into the thread's scratch. */
static void mm_unpacked(const mm_job *j, const cpu_gemm_args *a)
{
    uint8_t *u = a->scratch + j->unpack_off;
    for (int64_t r = 0; r < a->n_rows; r += j->unpack_rows) {
        cpu_gemm_args b = *a;
        b.n_rows = a->n_rows - r < j->unpack_rows ? a->n_rows - r : j->unpack_rows;
        for (int64_t g = 0; g < b.n_rows; g += 4)
            j->rp->unpack(a->w + (size_t)(r + g) * a->w_stride, u + (size_t)g * a->w_stride,
                          a->w_stride, a->n);
        b.w = u;
        b.y = a->y + r;
        j->k.gemm(&b);
    }
}

static void mm_gemm_worker(void *ctx, int ith, int nth)
{
    mm_job *j = ctx;
    int64_t n_items = j->n_row_chunks * j->n_tok_blocks;
    for (;;) {
        int64_t it = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (it >= n_items)
            break;
        int64_t tb = it / j->n_row_chunks, rc = it % j->n_row_chunks;
        cpu_gemm_args a = j->a;
        int64_t r0 = rc * j->row_chunk, t0 = tb * j->tok_block;
        a.w += r0 * a.w_stride;
        a.n_rows = a.n_rows - r0 < j->row_chunk ? a.n_rows - r0 : j->row_chunk;
        a.x += t0 * a.x_stride;
        a.n_tok = a.n_tok - t0 < j->tok_block ? a.n_tok - t0 : j->tok_block;
        a.y += t0 * a.ldy + r0;
        a.scratch = j->scratch + (size_t)ith * j->scratch_each;
        if (!j->rp)
            j->k.gemm(&a);
        else if (j->rp_gemv)
            j->rp->gemv(&a);
        else if (j->rp_direct) {
            a.r4 = 1;
            j->k.gemm(&a);
        }
        else
            mm_unpacked(j, &a);
    }
}

static bool mm_reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    free(*buf);
    *cap = 0;
    *buf = aligned_alloc(64, cpu_align64(need));
    if (!*buf)
        return false;
    *cap = cpu_align64(need);
    return true;
}

void cpu_matmul_run(cpu_matmul *mm, float *y, const be_weight *w, const float *x, int64_t n_tok)
{
    int nth = threadpool_size(mm->tp);
    mm_job j;
    memset(&j, 0, sizeof j);
    j.k = mm_kernel(mm->level, w->type);
    int64_t n = w->ne0;
    /* quantized types need whole blocks; anything else goes to the oracle */
    if (j.k.act != CPU_ACT_F32 && n % dtype_get(w->type)->block_size != 0)
        j.k = mm_kernel(CPU_SCALAR, w->type);
    /* prefill on AVX2: the register-blocked GEMM on packed panels (gemm_avx2.c);
     * a few tokens (<= cpu_avx2_gemv_multi_max) go to the fused decode of gemv_multi_avx2.c */
    int64_t gemm_rc = 0;
    cpu_kernel g = mm_gemm_kernel(mm->level, w->type, n, n_tok);
    if (g.gemm) {
        j.k = g;
        /* row chunks of up to 64 rows: their panel (64 x 2048 levels +
         * scales, 160 KiB) stays in L2 while the token groups pass */
        gemm_rc = w->ne1 / (4 * nth);
        gemm_rc = (gemm_rc + GEMM_RR - 1) / GEMM_RR * GEMM_RR;
        if (gemm_rc > 64)
            gemm_rc = 64;
        if (gemm_rc < GEMM_RR)
            gemm_rc = GEMM_RR;
    }
    /* R4 weights: one token, a few tokens and the prefill GEMM of the types
     * that say so on the groups (the GEMM packs its panels from them: an
     * unpacked copy would be one more pass over the weights and 64 rows of
     * L2), anything else on unpacked rows (row chunks stay multiples of 4
     * rows: whole groups) */
    j.rp = cpu_weight_layout(w);
    if (j.rp) {
        j.rp_gemv = n_tok == 1 && mm->level == CPU_AVX2 && j.k.act == j.rp->act;
#if defined(__x86_64__)
        j.rp_direct = !j.rp_gemv && !gemm_rc && j.rp->multi && mm->level == CPU_AVX2 &&
                      n_tok >= 2 && n_tok <= cpu_avx2_gemv_multi_max(w->type) && j.k.act == j.rp->act;
        j.rp_direct = j.rp_direct || (gemm_rc && j.rp->gemm);
#endif
        gemm_rc = (gemm_rc + 3) & ~(int64_t)3;
    }
    size_t x_stride = cpu_act_row_bytes(j.k.act, n);
    size_t scratch_each = gemm_rc ? cpu_gemm_scratch_bytes(gemm_rc, n)
                                  : cpu_align64(cpu_scratch_bytes(j.k.act, n));
    if (j.rp && !j.rp_gemv && !j.rp_direct) {
        /* the GEMM's chunk at once (its panels are packed per call); else
         * about 128 KiB of rows, which stay in L2 for the kernel */
        int64_t ur = gemm_rc ? gemm_rc : (int64_t)((128 << 10) / w->row_bytes) & ~(int64_t)3;
        j.unpack_rows = ur < 4 ? 4 : ur;
        j.unpack_off = cpu_align64(scratch_each);
        scratch_each = j.unpack_off + cpu_align64((size_t)j.unpack_rows * w->row_bytes);
    }
    if ((j.k.act != CPU_ACT_F32 && !mm_reserve(&mm->xq, &mm->xq_cap, x_stride * (size_t)n_tok)) ||
        !mm_reserve(&mm->scratch, &mm->scratch_cap, scratch_each * (size_t)nth + 64)) {
        j.k = mm_kernel(CPU_SCALAR, w->type); /* out of memory: the oracle needs no scratch */
        x_stride = (size_t)n * 4;
        scratch_each = 0;
        gemm_rc = 0;
        if (j.rp) { /* ... but R4 groups must be unpacked: one group at a time */
            j.rp_gemv = j.rp_direct = false;
            j.unpack_rows = 4;
            j.unpack_off = 0;
            scratch_each = cpu_align64(4 * w->row_bytes);
            if (!mm_reserve(&mm->scratch, &mm->scratch_cap, scratch_each * (size_t)nth + 64)) {
                for (int64_t i = 0; i < n_tok * w->ne1; i++)
                    y[i] = NAN; /* no memory at all: say so in the result, never read past it */
                return;
            }
        }
    }
    j.a.type = w->type;
    j.a.n = n;
    j.a.w = w->data;
    j.a.w_stride = w->row_bytes;
    j.a.n_rows = w->ne1;
    j.a.x_stride = x_stride;
    j.a.n_tok = n_tok;
    j.a.y = y;
    j.a.ldy = w->ne1;
    j.xf = x;
    j.scratch = mm->scratch;
    j.scratch_each = scratch_each;
    if (j.k.act == CPU_ACT_F32) {
        j.a.x = (const uint8_t *)x;
    } else {
        j.a.x = mm->xq;
        if (n_tok * n >= 16384 && nth > 1)
            threadpool_run(mm->tp, mm_quant_worker, &j);
        else
            mm_quant_worker(&j, 0, 1);
    }
    if (gemm_rc) {
        /* each row is packed once per token block: one block of all tokens
         * unless there are too few row chunks to keep the threads busy */
        j.row_chunk = gemm_rc;
        j.n_row_chunks = (w->ne1 + gemm_rc - 1) / gemm_rc;
        int64_t want = 4 * (int64_t)nth, ntb = 1;
        if (nth > 1 && j.n_row_chunks < want)
            ntb = (want + j.n_row_chunks - 1) / j.n_row_chunks;
        int64_t tb = (n_tok + ntb - 1) / ntb;
        tb = (tb + GEMM_RT - 1) / GEMM_RT * GEMM_RT;
        j.tok_block = tb;
        j.n_tok_blocks = (n_tok + tb - 1) / tb;
        atomic_init(&j.next, 0);
        if (j.n_row_chunks * j.n_tok_blocks == 1 || nth == 1)
            mm_gemm_worker(&j, 0, 1);
        else
            threadpool_run(mm->tp, mm_gemm_worker, &j);
        return;
    }
    /* Token blocks: the activations of one block should stay in L2 (~384 KiB of
     * 512), and each row is unpacked once per block. */
    int64_t tb = (int64_t)((384 << 10) / (x_stride ? x_stride : 1));
    tb = tb < 4 ? 4 : (tb / 4) * 4;
    if (tb > 128)
        tb = 128;
    if (tb >= n_tok)
        tb = n_tok;
    j.tok_block = tb;
    j.n_tok_blocks = (n_tok + tb - 1) / tb;
    /* Row chunks: about 4 per thread per token block (load balance under
     * noise), multiples of 4 rows, at least 16 rows. Decode (one token):
     * about 16 per thread of at least 64 KiB of weights each, since the op
     * ends with the last chunk and a chunk only streams its bytes once; one
     * chunk on one thread (the decode kernels prefetch only within a chunk). */
    int64_t rows = w->ne1;
    int64_t rc = rows / ((n_tok == 1 ? 16 : 4) * nth);
    if (n_tok == 1 && rc < (int64_t)((64 << 10) / w->row_bytes))
        rc = (int64_t)((64 << 10) / w->row_bytes);
    if (n_tok == 1 && nth == 1)
        rc = rows;
    rc = (rc + 3) & ~(int64_t)3;
    if (rc < 16)
        rc = 16;
    if (rc > rows)
        rc = rows;
    j.row_chunk = rc;
    j.n_row_chunks = (rows + rc - 1) / rc;
    atomic_init(&j.next, 0);
    if (j.n_row_chunks * j.n_tok_blocks == 1 || nth == 1)
        mm_gemm_worker(&j, 0, 1);
    else if (n_tok == 1) /* decode: a late worker is not waited for (work items are shared) */
        threadpool_run_shared(mm->tp, mm_gemm_worker, &j);
    else
        threadpool_run(mm->tp, mm_gemm_worker, &j);
}
