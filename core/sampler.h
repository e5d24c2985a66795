/* sampler.h - token sampling as a pure function of (logits, parameters,
 * seed, position, recent tokens): a counter-based RNG keyed by (seed, pos),
 * no hidden state, so any topology and any replay gives the same token. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sampling_params {
    float temperature;        /* <= 0: greedy */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1: off */
    float min_p;              /* <= 0: off */
    float repeat_penalty;     /* 1: off (llama.cpp semantics: divide positive logits) */
    float frequency_penalty;  /* 0: off (OpenAI semantics) */
    float presence_penalty;   /* 0: off */
    int32_t penalty_last_n;   /* window of recent tokens for penalties; default 64 */
    uint64_t seed;
    int32_t n_top_logprobs;   /* 0..SAMPLER_MAX_TOP */
} sampling_params;

#define SAMPLER_MAX_TOP 20

void sampling_params_default(sampling_params *p); /* greedy, penalties off, last_n 64 */

typedef struct sample_result {
    int32_t token;
    float logprob;                   /* log softmax of the raw logits (before penalties/temp) */
    int32_t n_top;
    int32_t top_ids[SAMPLER_MAX_TOP];/* most likely tokens, raw log softmax, descending */
    float top_logprobs[SAMPLER_MAX_TOP];
} sample_result;

/* Sample one token. `recent` holds the last n_recent tokens of the sequence
 * (prompt + generated) for penalties. `scratch` needs 2*n_vocab floats + n_vocab ints
 * (sampler_scratch_bytes); it makes the call allocation-free. */
size_t sampler_scratch_bytes(int64_t n_vocab);
void sampler_sample(const float *logits, int64_t n_vocab, const sampling_params *p, int64_t pos,
                    const int32_t *recent, int64_t n_recent, void *scratch, sample_result *out);

/* The counter-based generator: a uniform float in [0,1) from (seed, counter). */
float sampler_uniform(uint64_t seed, uint64_t counter);

/* The float exp the softmaxes use, exposed for tests: out[i] (out may be l
 * or NULL) = exp((l[i] - m) * scale) for terms <= 1, and the returned sum
 * of them in the sampler's fixed order. path 0: the best this CPU has, 1:
 * scalar, 2: AVX2+FMA (returns NAN where the CPU lacks it). */
double sampler_exp_terms(const float *l, float *out, int64_t n, float m, float scale, int path);
