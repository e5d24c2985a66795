/* test_sampler.c - the sampler against hand-computed expectations: greedy
 * (ties to the lowest id), determinism of the counter-based RNG, the
 * distribution of draws (chi-square over many positions), and the effect
 * of each filter and penalty; logprobs are the raw log-softmax; the float
 * exp of the softmaxes against double exp, its AVX2 and scalar paths
 * bit-identical. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sampler.h"
#include "testutil.h"

static void *scratch_for(int64_t n) { return malloc(sampler_scratch_bytes(n)); }

static int32_t sample(const float *l, int64_t n, const sampling_params *p, int64_t pos,
                      const int32_t *recent, int64_t n_recent)
{
    void *s = scratch_for(n);
    sample_result r;
    sampler_sample(l, n, p, pos, recent, n_recent, s, &r);
    free(s);
    return r.token;
}

/* Draw over positions 0..n_draw-1 and count each token. */
static void histogram(const float *l, int64_t n, const sampling_params *p, int n_draw, int *cnt)
{
    void *s = scratch_for(n);
    memset(cnt, 0, n * sizeof *cnt);
    for (int i = 0; i < n_draw; i++) {
        sample_result r;
        sampler_sample(l, n, p, i, NULL, 0, s, &r);
        cnt[r.token]++;
    }
    free(s);
}

int main(void)
{
    sampling_params p;
    /* ---- greedy ---- */
    {
        float l[6] = {0.1f, 2.0f, -1.0f, 2.0f, 1.5f, 2.0f};
        sampling_params_default(&p);
        TU_CHECK(sample(l, 6, &p, 0, NULL, 0) == 1, "greedy tie must pick the lowest id");
        p.temperature = -1;
        TU_CHECK(sample(l, 6, &p, 5, NULL, 0) == 1, "negative temperature is greedy");
        float l2[3] = {-5, -3, -4};
        sampling_params_default(&p);
        TU_CHECK(sample(l2, 3, &p, 0, NULL, 0) == 1, "greedy with all-negative logits");
    }
    /* ---- the RNG ---- */
    {
        TU_CHECK(sampler_uniform(7, 3) == sampler_uniform(7, 3), "uniform not a pure function");
        TU_CHECK(sampler_uniform(7, 3) != sampler_uniform(7, 4), "counter ignored");
        TU_CHECK(sampler_uniform(7, 3) != sampler_uniform(8, 3), "seed ignored");
        int bins[10] = {0};
        double mean = 0;
        int N = 100000;
        for (int i = 0; i < N; i++) {
            float u = sampler_uniform(99, (uint64_t)i);
            TU_CHECK(u >= 0 && u < 1, "uniform %g outside [0,1)", u);
            mean += u;
            bins[(int)(u * 10)]++;
        }
        mean /= N;
        double chi = 0;
        for (int b = 0; b < 10; b++)
            chi += (bins[b] - N / 10.0) * (bins[b] - N / 10.0) / (N / 10.0);
        fprintf(stderr, "uniform: mean %.4f, chi-square (9 dof) %.2f\n", mean, chi);
        TU_CHECK(fabs(mean - 0.5) < 0.01, "uniform mean %g", mean);
        TU_CHECK(chi < 27.88, "uniform chi-square %g over the p=0.001 bound 27.88", chi);
    }
    /* ---- determinism and distribution at temperature 1 ---- */
    float probs[4] = {0.5f, 0.25f, 0.125f, 0.125f};
    float l4[4];
    for (int i = 0; i < 4; i++)
        l4[i] = logf(probs[i]) + 3.0f; /* shift: softmax is shift-invariant */
    {
        sampling_params_default(&p);
        p.temperature = 1.0f;
        p.seed = 12345;
        int32_t a = sample(l4, 4, &p, 17, NULL, 0), b = sample(l4, 4, &p, 17, NULL, 0);
        TU_CHECK(a == b, "same inputs gave %d then %d", a, b);
        int distinct[4] = {0};
        for (int pos = 0; pos < 64; pos++)
            distinct[sample(l4, 4, &p, pos, NULL, 0)] = 1;
        TU_CHECK(distinct[0] + distinct[1] + distinct[2] + distinct[3] >= 3,
                 "positions 0..63 draw fewer than 3 distinct tokens");
        int diff_seed = 0;
        sampling_params p2 = p;
        p2.seed = 54321;
        for (int pos = 0; pos < 64; pos++)
            diff_seed += sample(l4, 4, &p, pos, NULL, 0) != sample(l4, 4, &p2, pos, NULL, 0);
        TU_CHECK(diff_seed > 5, "another seed changed only %d of 64 draws", diff_seed);

        int cnt[4], N = 40000;
        histogram(l4, 4, &p, N, cnt);
        double chi = 0;
        for (int i = 0; i < 4; i++)
            chi += (cnt[i] - N * probs[i]) * (cnt[i] - N * probs[i]) / (N * probs[i]);
        fprintf(stderr, "T=1 draws: %d %d %d %d, chi-square (3 dof) %.2f\n", cnt[0], cnt[1],
                cnt[2], cnt[3], chi);
        TU_CHECK(chi < 16.27, "distribution chi-square %g over the p=0.001 bound 16.27", chi);

        /* temperature 2: p ~ sqrt(probs), normalised; temperature 0.25: p ~ probs^4 */
        p.temperature = 2.0f;
        histogram(l4, 4, &p, N, cnt);
        double q[4], z = 0;
        for (int i = 0; i < 4; i++)
            z += q[i] = sqrt(probs[i]);
        chi = 0;
        for (int i = 0; i < 4; i++)
            chi += (cnt[i] - N * q[i] / z) * (cnt[i] - N * q[i] / z) / (N * q[i] / z);
        fprintf(stderr, "T=2 draws: %d %d %d %d, chi-square %.2f\n", cnt[0], cnt[1], cnt[2],
                cnt[3], chi);
        TU_CHECK(chi < 16.27, "T=2 chi-square %g", chi);
        p.temperature = 0.25f;
        histogram(l4, 4, &p, N, cnt);
        TU_CHECK(cnt[0] > 0.85 * N, "T=0.25 should concentrate on token 0: %d of %d", cnt[0], N);
    }
    /* ---- filters ---- */
    {
        int cnt[4], N = 4000;
        sampling_params_default(&p);
        p.temperature = 1.0f;
        p.seed = 5;
        p.top_k = 2;
        histogram(l4, 4, &p, N, cnt);
        TU_CHECK(cnt[2] == 0 && cnt[3] == 0 && cnt[0] > 0 && cnt[1] > 0,
                 "top-k 2: %d %d %d %d", cnt[0], cnt[1], cnt[2], cnt[3]);
        /* ties at the k boundary resolve to the lower id */
        float lt[4] = {1, 0.5f, 0.5f, 0.5f};
        p.top_k = 2;
        histogram(lt, 4, &p, N, cnt);
        TU_CHECK(cnt[2] == 0 && cnt[3] == 0 && cnt[1] > 0, "top-k tie: %d %d %d %d", cnt[0],
                 cnt[1], cnt[2], cnt[3]);
        p.top_k = 1;
        histogram(l4, 4, &p, N, cnt);
        TU_CHECK(cnt[0] == N, "top-k 1 must be greedy: %d", cnt[0]);

        p.top_k = 0;
        p.top_p = 0.55f; /* cum 0.5 < 0.55 <= 0.75: keep {0, 1} */
        histogram(l4, 4, &p, N, cnt);
        TU_CHECK(cnt[2] == 0 && cnt[3] == 0 && cnt[0] > 0 && cnt[1] > 0,
                 "top-p 0.55: %d %d %d %d", cnt[0], cnt[1], cnt[2], cnt[3]);
        /* kept {0,1} renormalised: 2/3, 1/3 */
        TU_CHECK(fabs(cnt[0] / (double)N - 2.0 / 3) < 0.04, "top-p renormalisation: %d", cnt[0]);
        p.top_p = 0.45f;
        histogram(l4, 4, &p, N, cnt);
        TU_CHECK(cnt[0] == N, "top-p 0.45 keeps only token 0: %d", cnt[0]);
        p.top_p = 0.8f; /* keep {0,1,2} */
        histogram(l4, 4, &p, N, cnt);
        TU_CHECK(cnt[3] == 0 && cnt[2] > 0, "top-p 0.8: %d %d %d %d", cnt[0], cnt[1], cnt[2],
                 cnt[3]);

        p.top_p = 1.0f;
        p.min_p = 0.3f; /* keep p >= 0.15: {0, 1} */
        histogram(l4, 4, &p, N, cnt);
        TU_CHECK(cnt[2] == 0 && cnt[3] == 0 && cnt[1] > 0, "min-p 0.3: %d %d %d %d", cnt[0],
                 cnt[1], cnt[2], cnt[3]);
        p.min_p = 0.2f; /* keep p >= 0.1: all */
        histogram(l4, 4, &p, N, cnt);
        TU_CHECK(cnt[3] > 0 && cnt[2] > 0, "min-p 0.2 keeps all: %d %d %d %d", cnt[0], cnt[1],
                 cnt[2], cnt[3]);
    }
    /* ---- top-p over a large vocabulary (the partial sort must grow) ---- */
    {
        int64_t n = 5000;
        float *l = malloc(n * sizeof *l);
        uint64_t s = 4242;
        for (int64_t i = 0; i < n; i++)
            l[i] = 2.0f * tu_rand_f(&s);
        /* brute force: rank of each token in the sorted order and the kept prefix */
        int32_t *ord = malloc(n * sizeof *ord);
        for (int64_t i = 0; i < n; i++)
            ord[i] = (int32_t)i;
        for (int64_t i = 1; i < n; i++) { /* insertion sort, descending, ties by id */
            int32_t v = ord[i];
            int64_t j = i;
            while (j > 0 && (l[ord[j - 1]] < l[v] || (l[ord[j - 1]] == l[v] && ord[j - 1] > v))) {
                ord[j] = ord[j - 1];
                j--;
            }
            ord[j] = v;
        }
        double z = 0, cum = 0;
        for (int64_t i = 0; i < n; i++)
            z += exp(l[i] - l[ord[0]]);
        int64_t keep = n;
        for (int64_t i = 0; i < n; i++) {
            cum += exp(l[ord[i]] - l[ord[0]]);
            if (cum >= 0.9 * z) {
                keep = i + 1;
                break;
            }
        }
        int32_t *rank = malloc(n * sizeof *rank);
        for (int64_t i = 0; i < n; i++)
            rank[ord[i]] = (int32_t)i;
        sampling_params_default(&p);
        p.temperature = 100.0f; /* nearly uniform over the kept set */
        p.top_p = 0.9f;
        p.seed = 8;
        void *sc = scratch_for(n);
        int outside = 0, max_rank = 0;
        for (int i = 0; i < 4000; i++) {
            sample_result r;
            sampler_sample(l, n, &p, i, NULL, 0, sc, &r);
            if (rank[r.token] >= keep)
                outside++;
            if (rank[r.token] > max_rank)
                max_rank = rank[r.token];
        }
        fprintf(stderr, "top-p 0.9 over %lld tokens: brute-force keeps %lld, highest rank drawn "
                "%d, %d draws outside\n", (long long)n, (long long)keep, max_rank, outside);
        TU_CHECK(keep > 1024, "test needs a kept set larger than the first partial sort");
        TU_CHECK(outside == 0, "top-p drew %d tokens outside the nucleus", outside);
        TU_CHECK(max_rank >= keep - 30, "top-p never reached the end of the nucleus (%d of %lld)",
                 max_rank, (long long)keep);
        free(sc);
        free(l);
        free(ord);
        free(rank);
    }
    /* ---- penalties (greedy so the effect is exact) ---- */
    {
        float l[4] = {2.0f, 1.9f, -1.0f, -1.05f};
        int32_t rec0[1] = {0};
        sampling_params_default(&p);
        p.repeat_penalty = 1.5f; /* 2.0 / 1.5 = 1.33 < 1.9 */
        TU_CHECK(sample(l, 4, &p, 0, rec0, 1) == 1, "repeat penalty on a positive logit");
        TU_CHECK(sample(l, 4, &p, 0, NULL, 0) == 0, "no recent tokens: no penalty");
        float ln[2] = {-1.0f, -1.05f};
        TU_CHECK(sample(ln, 2, &p, 0, rec0, 1) == 1, "repeat penalty multiplies a negative logit");
        int32_t rec_old[4] = {0, 2, 3, 2};
        p.penalty_last_n = 2; /* window {3, 2}: token 0 not penalised */
        TU_CHECK(sample(l, 4, &p, 0, rec_old, 4) == 0, "penalty_last_n window ignored");
        p.penalty_last_n = 4;
        TU_CHECK(sample(l, 4, &p, 0, rec_old, 4) == 1, "penalty_last_n 4 must reach token 0");
        p.penalty_last_n = 0;
        TU_CHECK(sample(l, 4, &p, 0, rec_old, 4) == 0, "penalty_last_n 0 disables penalties");

        float lf[3] = {1.0f, 0.9f, 0.85f};
        int32_t rec3[3] = {0, 0, 0};
        sampling_params_default(&p);
        p.frequency_penalty = 0.04f; /* 1.0 - 3*0.04 = 0.88 < 0.9 */
        TU_CHECK(sample(lf, 3, &p, 0, rec3, 3) == 1, "frequency penalty x count");
        p.frequency_penalty = 0.02f; /* 1.0 - 0.06 = 0.94 > 0.9 */
        TU_CHECK(sample(lf, 3, &p, 0, rec3, 3) == 0, "frequency penalty too strong");
        sampling_params_default(&p);
        p.presence_penalty = 0.2f; /* 0.8, 0.7, 0.85 */
        int32_t rec01[3] = {1, 0, 1};
        TU_CHECK(sample(lf, 3, &p, 0, rec01, 3) == 2, "presence penalty");
        p.presence_penalty = 0.12f; /* 0.88, 0.78, 0.85 */
        TU_CHECK(sample(lf, 3, &p, 0, rec01, 3) == 0, "presence penalty counted once");
    }
    /* ---- logprobs ---- */
    {
        int64_t n = 1000;
        float *l = malloc(n * sizeof *l);
        uint64_t s = 77;
        for (int64_t i = 0; i < n; i++)
            l[i] = 3 * tu_rand_f(&s);
        double mx = -1e30, z = 0;
        int64_t best = 0;
        for (int64_t i = 0; i < n; i++)
            if (l[i] > mx) {
                mx = l[i];
                best = i;
            }
        for (int64_t i = 0; i < n; i++)
            z += exp(l[i] - mx);
        double lse = mx + log(z);
        sampling_params_default(&p);
        p.n_top_logprobs = 5;
        p.repeat_penalty = 2.0f; /* must not change the reported logprobs */
        int32_t rec[1] = {(int32_t)best};
        void *sc = scratch_for(n);
        sample_result r;
        sampler_sample(l, n, &p, 3, rec, 1, sc, &r);
        TU_CHECK(r.token != best, "penalised best token still chosen");
        TU_CHECK(fabs(r.logprob - (l[r.token] - lse)) < 1e-5, "logprob %g want %g", r.logprob,
                 l[r.token] - lse);
        TU_CHECK(r.n_top == 5, "n_top %d", r.n_top);
        TU_CHECK(r.top_ids[0] == best, "top id %d want %lld", r.top_ids[0], (long long)best);
        for (int i = 0; i < r.n_top; i++) {
            TU_CHECK(fabs(r.top_logprobs[i] - (l[r.top_ids[i]] - lse)) < 1e-5, "top %d logprob", i);
            if (i)
                TU_CHECK(r.top_logprobs[i] <= r.top_logprobs[i - 1], "top logprobs not descending");
        }
        int n_above = 0;
        for (int64_t i = 0; i < n; i++)
            n_above += l[i] > l[r.top_ids[4]];
        TU_CHECK(n_above == 4, "top-5 misses a larger logit (%d above the 5th)", n_above);
        free(sc);
        free(l);
    }
    /* ---- the float exp of the softmaxes: accuracy against double exp, and
     * the AVX2 and scalar paths bit-identical (odd lengths cross the 8-lane
     * groups and the 256-term flush blocks) ---- */
    {
        const int64_t lens[] = {1, 7, 8, 9, 255, 256, 257, 1000, 128256};
        uint64_t st = 12345;
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            int64_t n = lens[k];
            float *l = malloc((size_t)n * sizeof(float)), *e1 = malloc((size_t)n * sizeof(float)),
                  *e2 = malloc((size_t)n * sizeof(float));
            float m = -INFINITY;
            for (int64_t i = 0; i < n; i++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                l[i] = (float)((double)(st >> 11) / 9007199254740992.0 * 40.0 - 25.0);
                if (i % 97 == 3)
                    l[i] = -INFINITY; /* masked tokens */
                if (l[i] > m)
                    m = l[i];
            }
            for (int sc = 0; sc < 2; sc++) {
                float scale = sc ? 1.0f / 0.7f : 1.0f;
                double s1 = sampler_exp_terms(l, e1, n, m, scale, 1), ref = 0, worst = 0;
                for (int64_t i = 0; i < n; i++) {
                    double x = ((double)l[i] - m) * scale, want = exp(x);
                    ref += want;
                    /* float x itself is off by up to half an ulp of |x|: relative
                     * error of the term ~6e-8 |x|, plus the polynomial's */
                    double err = fabs(e1[i] - want) / (want > 1e-30 ? want : 1e-30) / (1 + fabs(x));
                    if (want > 1e-30 && err > worst)
                        worst = err;
                }
                TU_CHECK(worst < 2.5e-7, "n %lld scale %g: worst term error %.3g (per 1+|x|)", (long long)n,
                         scale, worst);
                TU_CHECK(fabs(s1 - ref) / ref < 2e-6, "n %lld scale %g: sum %.9g want %.9g", (long long)n,
                         scale, s1, ref);
                double s2 = sampler_exp_terms(l, e2, n, m, scale, 2);
                if (isnan(s2)) {
                    printf("exp terms: no AVX2+FMA on this CPU, scalar path only\n");
                } else {
                    TU_CHECK(s2 == s1 && !memcmp(e1, e2, (size_t)n * sizeof(float)),
                             "n %lld scale %g: AVX2 and scalar exp terms differ (%.17g vs %.17g)",
                             (long long)n, scale, s2, s1);
                }
                if (n == 128256)
                    printf("exp terms over %lld logits, scale %g: worst term rel error / (1+|x|) %.2g, sum rel error "
                           "%.2g\n",
                           (long long)n, scale, worst, fabs(s1 - ref) / ref);
            }
            free(l), free(e1), free(e2);
        }
    }
    return tu_finish("test_sampler");
}
