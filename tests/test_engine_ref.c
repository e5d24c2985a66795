/* test_engine_ref.c - the engine's forward pass against a naive reference
 * written from the maths (tests/test_engine_model.h) on random-weight
 * models that cover what stories260K does not: qwen2 (Q/K/V biases, NEOX
 * rope, default freq base 1e6), tied output head, F16 and Q8_0 weights,
 * llama3 rope_freqs factors, linear rope scaling, GQA ratios 1, 2 and 4.
 * Each model runs as one prefill and as prefill + single-token decodes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "test_engine_model.h"
#include "testutil.h"
#include "worker/engine.h"
#include "worker/forward.h"

#define N_TOK 12

/* tol applies to the SIMD levels; the scalar level (float dot products, the
 * oracle) must match the reference within 1e-4 for every weight type. */
static void run_case(const char *label, const tm_spec *sp, double tol)
{
    char path[256];
    snprintf(path, sizeof path, "engine_ref_%s.gguf", label);
    if (tm_write(path, sp)) {
        TU_CHECK(0, "%s: writing the model failed", label);
        return;
    }
    int32_t tok[N_TOK];
    uint64_t s = sp->seed * 7 + 1;
    for (int i = 0; i < N_TOK; i++)
        tok[i] = (int32_t)(tu_rand_u64(&s) % (uint64_t)sp->n_vocab);
    int64_t V = sp->n_vocab;
    float *ref = malloc(sizeof(float) * N_TOK * V), *got = malloc(sizeof(float) * N_TOK * V);
    if (tm_reference(path, sp, tok, N_TOK, ref)) {
        TU_CHECK(0, "%s: reference failed", label);
        return;
    }
    for (int run = 0; run < 4; run++) {
        int kv = run & 1;
        const char *level = run < 2 ? "scalar" : NULL;
        engine_config cfg = {0};
        cfg.model_path = path;
        cfg.be.n_threads = 2;
        cfg.be.cpu_level = level;
        cfg.params.n_slots = 2;
        cfg.params.n_ctx = 32;
        cfg.params.kv_type = kv ? DT_F16 : DT_F32;
        engine *eng;
        cv_err e = {0};
        if (engine_create(&cfg, &eng, &e)) {
            TU_CHECK(0, "%s: engine_create: %s", label, e.msg);
            break;
        }
        /* (a) one prefill of all tokens, logits for every row, slot 1 */
        int32_t pos[N_TOK], slot[N_TOK], idx[N_TOK];
        for (int i = 0; i < N_TOK; i++)
            pos[i] = i, slot[i] = 1, idx[i] = i;
        fwd_batch b = {.n_tok = N_TOK, .tokens = tok, .pos = pos, .slot = slot, .n_out = N_TOK,
                       .out_idx = idx};
        TU_CHECK(engine_forward_logits(eng, &b, got, &e) == CV_OK, "%s: %s", label, e.msg);
        double worst = 0;
        for (int t = 0; t < N_TOK; t++)
            worst = fmax(worst, tm_rel_diff(got + t * V, ref + t * V, V));
        /* (b) prefill of 5 in slot 0, then one token at a time */
        double worst_dec = 0;
        b = (fwd_batch){.n_tok = 5, .tokens = tok, .pos = pos, .slot = idx, .n_out = 5,
                        .out_idx = idx};
        int32_t zero[N_TOK] = {0};
        b.slot = zero;
        TU_CHECK(engine_forward_logits(eng, &b, got, &e) == CV_OK, "%s: %s", label, e.msg);
        for (int t = 0; t < 5; t++)
            worst_dec = fmax(worst_dec, tm_rel_diff(got + t * V, ref + t * V, V));
        for (int t = 5; t < N_TOK; t++) {
            int32_t o = 0;
            b = (fwd_batch){.n_tok = 1, .tokens = tok + t, .pos = pos + t, .slot = zero,
                            .n_out = 1, .out_idx = &o};
            TU_CHECK(engine_forward_logits(eng, &b, got, &e) == CV_OK, "%s: %s", label, e.msg);
            worst_dec = fmax(worst_dec, tm_rel_diff(got, ref + t * V, V));
        }
        /* F16 KV rounds K and V to 11 bits: allow for it */
        double lim = level ? 1e-4 : tol;
        if (kv)
            lim = fmax(lim, 2e-3);
        fprintf(stderr, "%-22s %-6s kv %s: max relative diff vs reference: prefill %.3g, decode "
                "%.3g (limit %.0e)\n", label, level ? level : "best", kv ? "F16" : "F32", worst,
                worst_dec, lim);
        TU_CHECK(worst <= lim && worst_dec <= lim, "%s %s kv %s: differs from the reference",
                 label, level ? level : "best", kv ? "F16" : "F32");
        engine_free(eng);
    }
    free(ref);
    free(got);
    remove(path);
}

int main(void)
{
    tm_spec sp;
    /* llama, F32, GQA 4, separate head */
    sp = (tm_spec){.arch = "llama", .n_layer = 2, .n_embd = 64, .n_head = 8, .n_head_kv = 2,
                   .n_ff = 96, .n_vocab = 200, .wtype = DT_F32, .seed = 1};
    run_case("llama_f32_gqa4", &sp, 1e-4);
    /* qwen2, F16, biases, NEOX, tied head, GQA 2 */
    sp = (tm_spec){.arch = "qwen2", .n_layer = 2, .n_embd = 64, .n_head = 4, .n_head_kv = 2,
                   .n_ff = 128, .n_vocab = 160, .wtype = DT_F16, .tied = true, .seed = 2};
    run_case("qwen2_f16_tied", &sp, 1e-4);
    /* llama3-style: rope_freqs factors, freq base 500000, linear scaling x2, MHA */
    sp = (tm_spec){.arch = "llama", .n_layer = 1, .n_embd = 64, .n_head = 4, .n_head_kv = 4,
                   .n_ff = 64, .n_vocab = 100, .wtype = DT_F32, .rope_freqs = true,
                   .rope_linear = 2.0f, .freq_base = 500000.0f, .seed = 3};
    run_case("llama_ropefreqs_linear", &sp, 1e-4);
    /* Q8_0 weights: SIMD levels quantize activations to Q8_0 blocks (about 2% of
     * the largest logit on this model; a reference that quantizes its
     * activations the same way agrees to 1e-7), the scalar oracle does not */
    sp = (tm_spec){.arch = "llama", .n_layer = 2, .n_embd = 64, .n_head = 4, .n_head_kv = 2,
                   .n_ff = 96, .n_vocab = 128, .wtype = DT_Q8_0, .seed = 4};
    run_case("llama_q8_0", &sp, 5e-2);
    return tu_finish("test_engine_ref");
}
