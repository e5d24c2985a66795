/* sampler.c - token sampling as a pure function of (logits, parameters,
 * seed, position, recent tokens). No hidden state: the random draw comes
 * from a counter-based generator keyed by (seed, position), so a sequence
 * replayed on another topology or after a failure continues exactly.
 *
 * Order of the filters (llama.cpp's default chain): penalties, top-k,
 * top-p, min-p, temperature, draw. top-p and min-p therefore see the
 * softmax at temperature 1. Greedy (temperature <= 0) takes the argmax of
 * the penalised logits, lowest id on ties. Reported logprobs are the raw
 * log-softmax of the model's logits, before penalties and temperature. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void sampling_params_default(sampling_params *p)
{
    memset(p, 0, sizeof *p);
    p->temperature = 0.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->repeat_penalty = 1.0f;
    p->frequency_penalty = 0.0f;
    p->presence_penalty = 0.0f;
    p->penalty_last_n = 64;
    p->seed = 0;
    p->n_top_logprobs = 0;
}

/* splitmix64 finaliser: a bijective 64-bit mix. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t rng_u64(uint64_t seed, uint64_t counter)
{
    /* two rounds so that nearby seeds and nearby counters decorrelate */
    return mix64(mix64(seed + 0x9E3779B97F4A7C15ULL) ^ (counter * 0xD1B54A32D192ED03ULL + 1));
}

float sampler_uniform(uint64_t seed, uint64_t counter)
{
    return (float)(rng_u64(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

/* 53-bit uniform in [0, 1) for the draw itself. */
static double uniform_d(uint64_t seed, uint64_t counter)
{
    return (double)(rng_u64(seed, counter) >> 11) * (1.0 / 9007199254740992.0);
}

size_t sampler_scratch_bytes(int64_t n_vocab)
{
    return (size_t)n_vocab * (2 * sizeof(float) + sizeof(int32_t));
}

typedef struct cand {
    float logit;
    int32_t id;
} cand;

/* descending logit, ascending id on ties: a total order, so the result
 * never depends on the sort algorithm */
static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit > y->logit)
        return -1;
    if (x->logit < y->logit)
        return 1;
    return (x->id > y->id) - (x->id < y->id);
}
static inline bool cand_before(float la, int32_t ia, float lb, int32_t ib)
{
    return la > lb || (la == lb && ia < ib);
}

/* ---- exp over a whole vocabulary ----------------------------------------
 * The log-softmax for the reported logprob and the temperature softmax run
 * over every token (128K for Llama 3): libm's double exp took 1-2 ms per
 * sampled token, most of a pipeline's last-stage time with 8 sequences. So
 * the terms exp((l_i - m) * scale) (<= 1: m is the maximum) are computed in
 * float, x = n ln2 + r, e^r by its degree-6 Taylor polynomial on |r| <=
 * ln2/2 (truncation 1.2e-7 relative), times 2^n; x < -87 gives 0. Sums run
 * in 8 float lanes flushed into a double every 256 terms, in one fixed
 * order, so the AVX2 path and the scalar path (fmaf, nearbyintf: the same
 * roundings) give bit-identical results on any machine. Error of a sum:
 * a few 1e-6 relative at most, 1e-7 typical. */
#define EXP_LANES 8
#define EXP_BLOCK 256
/* shared by both paths, so they round alike */
#define EXP_MIN_X (-87.0f)            /* below: the term is 0 */
#define EXP_LOG2E 1.44269504f         /* x -> n = nearest(x log2 e) */
#define EXP_LN2_HI (-0.693145752f)    /* r = x - n ln2, ln2 in two parts */
#define EXP_LN2_LO (-1.42860677e-06f)
#define EXP_P6 (1.0f / 720)           /* e^r = 1 + r(1 + r(1/2 + r(1/6 + r(1/24 + r(1/120 + r/720))))) */
#define EXP_P5 (1.0f / 120)
#define EXP_P4 (1.0f / 24)
#define EXP_P3 (1.0f / 6)
#define EXP_P2 0.5f

static inline float exp_term(float l, float m, float scale)
{
    float x = (l - m) * scale;
    if (!(x >= EXP_MIN_X))
        return x != x ? x : 0.0f; /* NaN stays NaN */
    float n = nearbyintf(x * EXP_LOG2E);
    float r = fmaf(n, EXP_LN2_HI, x);
    r = fmaf(n, EXP_LN2_LO, r);
    float p = EXP_P6;
    p = fmaf(p, r, EXP_P5);
    p = fmaf(p, r, EXP_P4);
    p = fmaf(p, r, EXP_P3);
    p = fmaf(p, r, EXP_P2);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    union {
        uint32_t u;
        float f;
    } b = {.u = (uint32_t)((int32_t)n + 127) << 23};
    return p * b.f;
}

/* out[i] = exp_term(l[i], m, scale) (out may be l, or NULL); returns the sum */
static double exp_terms_scalar(const float *l, float *out, int64_t n, float m, float scale)
{
    double s = 0;
    float acc[EXP_LANES] = {0};
    int64_t i = 0;
    for (; i + EXP_LANES <= n; i += EXP_LANES) {
        for (int j = 0; j < EXP_LANES; j++) {
            float e = exp_term(l[i + j], m, scale);
            if (out)
                out[i + j] = e;
            acc[j] += e;
        }
        if ((i + EXP_LANES) % EXP_BLOCK == 0 || i + 2 * EXP_LANES > n)
            for (int j = 0; j < EXP_LANES; j++) {
                s += acc[j];
                acc[j] = 0;
            }
    }
    for (; i < n; i++) {
        float e = exp_term(l[i], m, scale);
        if (out)
            out[i] = e;
        s += e;
    }
    return s;
}

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx2,fma"))) static double exp_terms_avx2(const float *l, float *out, int64_t n,
                                                                 float m, float scale)
{
    const __m256 vm = _mm256_set1_ps(m), vs = _mm256_set1_ps(scale), lo = _mm256_set1_ps(EXP_MIN_X);
    const __m256 l2e = _mm256_set1_ps(EXP_LOG2E), c1 = _mm256_set1_ps(EXP_LN2_HI),
                 c2 = _mm256_set1_ps(EXP_LN2_LO), one = _mm256_set1_ps(1.0f);
    double s = 0;
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + EXP_LANES <= n; i += EXP_LANES) {
        __m256 x = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(l + i), vm), vs);
        __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ), nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
        __m256 nn = _mm256_round_ps(_mm256_mul_ps(x, l2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 r = _mm256_fmadd_ps(nn, c1, x);
        r = _mm256_fmadd_ps(nn, c2, r);
        __m256 p = _mm256_set1_ps(EXP_P6);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
        p = _mm256_fmadd_ps(p, r, one);
        p = _mm256_fmadd_ps(p, r, one);
        __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nn), _mm256_set1_epi32(127)), 23);
        __m256 e = _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(bits)), keep);
        e = _mm256_blendv_ps(e, x, nan);
        if (out)
            _mm256_storeu_ps(out + i, e);
        acc = _mm256_add_ps(acc, e);
        if ((i + EXP_LANES) % EXP_BLOCK == 0 || i + 2 * EXP_LANES > n) {
            float a[EXP_LANES];
            _mm256_storeu_ps(a, acc);
            for (int j = 0; j < EXP_LANES; j++)
                s += a[j];
            acc = _mm256_setzero_ps();
        }
    }
    for (; i < n; i++) {
        float e = exp_term(l[i], m, scale);
        if (out)
            out[i] = e;
        s += e;
    }
    return s;
}
#endif

static double exp_terms(const float *l, float *out, int64_t n, float m, float scale)
{
#if defined(__x86_64__)
    static int have = -1; /* racy but idempotent */
    if (have < 0)
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (have)
        return exp_terms_avx2(l, out, n, m, scale);
#endif
    return exp_terms_scalar(l, out, n, m, scale);
}

double sampler_exp_terms(const float *l, float *out, int64_t n, float m, float scale, int path)
{
    if (path == 1)
        return exp_terms_scalar(l, out, n, m, scale);
#if defined(__x86_64__)
    if (path == 2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                   ? exp_terms_avx2(l, out, n, m, scale)
                   : NAN;
#else
    if (path == 2)
        return NAN;
#endif
    return exp_terms(l, out, n, m, scale);
}

/* Raw log-softmax facts: max and log-sum-exp of the logits. */
static void log_softmax_stats(const float *l, int64_t n, float *mx, double *lse)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (l[i] > m)
            m = l[i];
    double s = exp_terms(l, NULL, n, m, 1.0f);
    *mx = m;
    *lse = (double)m + log(s);
}

/* The k best (logit, id) of l[n] in order, by insertion into a small sorted list. */
static int top_n(const float *l, int64_t n, int k, int32_t *ids, float *vals)
{
    int cnt = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = l[i];
        if (cnt == k && !cand_before(v, (int32_t)i, vals[k - 1], ids[k - 1]))
            continue;
        int j = cnt < k ? cnt++ : k - 1;
        while (j > 0 && cand_before(v, (int32_t)i, vals[j - 1], ids[j - 1])) {
            vals[j] = vals[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        vals[j] = v;
        ids[j] = (int32_t)i;
    }
    return cnt;
}

/* Sift-down for a min-heap (worst candidate at the root) used by top-k. */
static void heap_down(cand *h, int n, int i)
{
    for (;;) {
        int w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && cand_before(h[w].logit, h[w].id, h[l].logit, h[l].id))
            w = l;
        if (r < n && cand_before(h[w].logit, h[w].id, h[r].logit, h[r].id))
            w = r;
        if (w == i)
            return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* Move the m best of c[0..n) to c[0..m), sorted; the others stay in
 * c[m..n) in some order (so a later call with a larger m still sees all). */
static void select_best(cand *c, int64_t n, int64_t m)
{
    if (m >= n) {
        qsort(c, (size_t)n, sizeof *c, cand_cmp);
        return;
    }
    for (int64_t j = m / 2 - 1; j >= 0; j--)
        heap_down(c, (int)m, (int)j);
    for (int64_t i = m; i < n; i++)
        if (cand_before(c[i].logit, c[i].id, c[0].logit, c[0].id)) {
            cand t = c[0];
            c[0] = c[i];
            c[i] = t;
            heap_down(c, (int)m, 0);
        }
    qsort(c, (size_t)m, sizeof *c, cand_cmp);
}

void sampler_sample(const float *logits, int64_t n_vocab, const sampling_params *p, int64_t pos,
                    const int32_t *recent, int64_t n_recent, void *scratch, sample_result *out)
{
    memset(out, 0, sizeof *out);
    float *work = scratch;                         /* n_vocab: penalised logits */
    cand *cands = (cand *)(work + n_vocab);        /* n_vocab (float + int32 each) */

    /* raw log-softmax for the reported logprobs */
    float mx;
    double lse;
    log_softmax_stats(logits, n_vocab, &mx, &lse);
    int n_top = p->n_top_logprobs;
    if (n_top > SAMPLER_MAX_TOP)
        n_top = SAMPLER_MAX_TOP;
    if (n_top > n_vocab)
        n_top = (int)n_vocab;
    if (n_top > 0) {
        out->n_top = top_n(logits, n_vocab, n_top, out->top_ids, out->top_logprobs);
        for (int i = 0; i < out->n_top; i++)
            out->top_logprobs[i] = (float)((double)out->top_logprobs[i] - lse);
    }

    /* penalties over the last penalty_last_n tokens (-1: all of `recent`) */
    memcpy(work, logits, (size_t)n_vocab * sizeof(float));
    int64_t win = n_recent;
    if (p->penalty_last_n >= 0 && p->penalty_last_n < win)
        win = p->penalty_last_n;
    bool pen = win > 0 && recent &&
               (p->repeat_penalty != 1.0f || p->frequency_penalty != 0.0f ||
                p->presence_penalty != 0.0f);
    if (pen) {
        /* count occurrences in cands[].id (scratch), touching only the window's tokens */
        const int32_t *rw = recent + (n_recent - win);
        for (int64_t i = 0; i < win; i++)
            if (rw[i] >= 0 && rw[i] < n_vocab)
                cands[rw[i]].id = 0;
        for (int64_t i = 0; i < win; i++)
            if (rw[i] >= 0 && rw[i] < n_vocab)
                cands[rw[i]].id++;
        for (int64_t i = 0; i < win; i++) {
            int32_t t = rw[i];
            if (t < 0 || t >= n_vocab || cands[t].id == 0)
                continue; /* out of range, or already penalised */
            int32_t cnt = cands[t].id;
            cands[t].id = 0;
            float l = work[t];
            if (p->repeat_penalty != 1.0f && p->repeat_penalty > 0)
                l = l > 0 ? l / p->repeat_penalty : l * p->repeat_penalty;
            l -= (float)cnt * p->frequency_penalty + p->presence_penalty;
            work[t] = l;
        }
    }

    int32_t tok = 0;
    if (!(p->temperature > 0)) {
        /* greedy: argmax, lowest id on ties */
        float best = work[0];
        for (int64_t i = 1; i < n_vocab; i++)
            if (work[i] > best) {
                best = work[i];
                tok = (int32_t)i;
            }
    } else {
        int64_t n = 0;
        /* top-k: keep the k best (a min-heap of size k), else every token */
        if (p->top_k > 0 && p->top_k < n_vocab) {
            int k = p->top_k;
            for (int64_t i = 0; i < n_vocab; i++) {
                if (n < k) {
                    cands[n].logit = work[i];
                    cands[n].id = (int32_t)i;
                    n++;
                    if (n == k)
                        for (int j = k / 2 - 1; j >= 0; j--)
                            heap_down(cands, k, j);
                } else if (cand_before(work[i], (int32_t)i, cands[0].logit, cands[0].id)) {
                    cands[0].logit = work[i];
                    cands[0].id = (int32_t)i;
                    heap_down(cands, k, 0);
                }
            }
        } else {
            for (int64_t i = 0; i < n_vocab; i++) {
                cands[i].logit = work[i];
                cands[i].id = (int32_t)i;
            }
            n = n_vocab;
        }
        float cmax = -INFINITY;
        for (int64_t i = 0; i < n; i++)
            if (cands[i].logit > cmax)
                cmax = cands[i].logit;
        /* min-p: keep p_i >= min_p * p_max, i.e. logit >= max + log(min_p). It
         * cuts the same sorted list as top-p, so applying it first only saves
         * sorting work; the kept set is the shorter of the two prefixes. */
        if (p->min_p > 0 && p->min_p <= 1) {
            float thr = cmax + logf(p->min_p);
            int64_t w = 0;
            for (int64_t i = 0; i < n; i++)
                if (cands[i].logit >= thr)
                    cands[w++] = cands[i];
            n = w;
        }
        bool sorted = false;
        if (p->top_p < 1.0f) {
            /* the smallest prefix of the sorted list holding top_p of the mass;
             * sort only the best m candidates, growing m until it suffices */
            for (int64_t i = 0; i < n; i++) /* work is free once cands hold the logits */
                work[i] = cands[i].logit;
            double z = exp_terms(work, NULL, n, cmax, 1.0f);
            double target = (double)p->top_p * z;
            int64_t keep = n;
            for (int64_t m = 128;; m *= 8) {
                select_best(cands, n, m);
                double cum = 0;
                int64_t lim = m < n ? m : n, i;
                for (i = 0; i < lim; i++) {
                    cum += exp_term(cands[i].logit, cmax, 1.0f);
                    if (cum >= target)
                        break;
                }
                if (i < lim) {
                    keep = i + 1;
                    break;
                }
                if (m >= n)
                    break;
            }
            sorted = true;
            n = keep < 1 ? 1 : keep;
        }
        if (!sorted && p->top_k > 0 && p->top_k < n_vocab) /* heap order is not a fixed order */
            qsort(cands, (size_t)n, sizeof *cands, cand_cmp);
        /* temperature, softmax over the kept candidates, one draw */
        float inv_t = 1.0f / p->temperature;
        for (int64_t i = 0; i < n; i++)
            work[i] = cands[i].logit;
        double z = exp_terms(work, work, n, cmax, inv_t); /* work[i]: candidate i's term */
        double u = uniform_d(p->seed, (uint64_t)pos) * z, cum = 0;
        tok = cands[n - 1].id;
        for (int64_t i = 0; i < n; i++) {
            cum += work[i];
            if (u < cum) {
                tok = cands[i].id;
                break;
            }
        }
    }
    out->token = tok;
    out->logprob = (float)((double)logits[tok] - lse);
}
