/* test_simd_golden.c - stories260K.gguf greedy from BOS must reproduce the 256
 * golden tokens (stories260K.greedy.json) with every CPU level this machine
 * has (scalar, avx2, avx512) and thread counts 1..4: the SIMD kernels and the
 * work split must not change a single greedy choice. Also prefills BOS + 100
 * golden tokens in one forward call (the n_tok > 1 GEMM path) and checks the
 * next 32 greedy tokens. Levels the CPU lacks are reported as not run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "kernels/cpu/matmul.h"
#include "testutil.h"
#include "worker/engine.h"
#include "worker/forward.h"

static int32_t argmax(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return (int32_t)best;
}

/* Greedy: forward prompt (one call), then n-1 single-token steps. */
static int run_greedy(engine *eng, const int32_t *prompt, int n_prompt, int n, int32_t *out,
                      int64_t n_vocab)
{
    int32_t toks[512], pos[512], slot[512] = {0};
    float *logits = malloc(sizeof(float) * (size_t)n_vocab);
    memcpy(toks, prompt, sizeof(int32_t) * (size_t)n_prompt);
    for (int i = 0; i < n_prompt + n; i++)
        pos[i] = i;
    cv_err e = {0};
    int32_t last = n_prompt - 1;
    fwd_batch b = {.n_tok = n_prompt, .tokens = toks, .pos = pos, .slot = slot, .n_out = 1,
                   .out_idx = &last};
    int ok = engine_forward_logits(eng, &b, logits, &e) == CV_OK;
    for (int i = 0; ok && i < n; i++) {
        out[i] = argmax(logits, n_vocab);
        if (i + 1 == n)
            break;
        int32_t zero = 0;
        fwd_batch s = {.n_tok = 1, .tokens = &out[i], .pos = &pos[n_prompt + i], .slot = slot,
                       .n_out = 1, .out_idx = &zero};
        ok = engine_forward_logits(eng, &s, logits, &e) == CV_OK;
    }
    if (!ok)
        fprintf(stderr, "FAIL forward: %s\n", e.msg);
    free(logits);
    return ok ? n : -1;
}

static int compare(const char *what, const int32_t *got, const int32_t *want, int n)
{
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) {
            fprintf(stderr, "FAIL %s: token %d is %d, golden %d\n", what, i, got[i], want[i]);
            return 1;
        }
    return 0;
}

int main(void)
{
    static int32_t gold[1024], prompt[16], got[1024];
    const char *json = tu_model("stories260K.greedy.json");
    const char *model = tu_model("stories260K.gguf");
    int n_prompt = tu_json_ids(json, "prompt_token_ids", prompt, 16);
    int n_gold = tu_json_ids(json, "generated_token_ids", gold, 1024);
    TU_CHECK(n_prompt == 1 && n_gold == 256, "golden file: %d prompt, %d generated ids", n_prompt,
             n_gold);
    if (n_gold != 256)
        return tu_finish("test_simd_golden");
    cpu_level best = cpu_level_detect();
    for (int lv = CPU_AVX512; lv > (int)best; lv--)
        printf("level %s: NOT RUN (CPU lacks it)\n", cpu_level_name(lv));
    for (int lv = CPU_SCALAR; lv <= (int)best; lv++) {
        for (int nt = 1; nt <= 4; nt++) {
            engine_config cfg = {0};
            cfg.model_path = model;
            cfg.be.device = "cpu";
            cfg.be.n_threads = nt;
            cfg.be.cpu_level = cpu_level_name(lv);
            cfg.params.n_slots = 1;
            cfg.params.n_ctx = 512;
            cfg.params.kv_type = DT_F32;
            cfg.params.max_batch = 128;
            engine *eng = NULL;
            cv_err e = {0};
            if (engine_create(&cfg, &eng, &e)) {
                TU_CHECK(0, "engine_create level %s threads %d: %s", cpu_level_name(lv), nt, e.msg);
                continue;
            }
            int64_t n_vocab = engine_model_config(eng)->n_vocab;
            char what[96];
            snprintf(what, sizeof what, "level=%s threads=%d greedy from BOS", cpu_level_name(lv), nt);
            int n = run_greedy(eng, prompt, 1, 256, got, n_vocab);
            int bad = n != 256 || compare(what, got, gold, 256);
            TU_CHECK(!bad, "%s", what);
            /* BOS + 100 golden tokens as one 101-token forward, then 32 more */
            int32_t pre[101];
            pre[0] = prompt[0];
            memcpy(pre + 1, gold, 100 * sizeof *pre);
            snprintf(what, sizeof what, "level=%s threads=%d after 101-token prefill",
                     cpu_level_name(lv), nt);
            n = run_greedy(eng, pre, 101, 32, got, n_vocab);
            int bad2 = n != 32 || compare(what, got, gold + 100, 32);
            TU_CHECK(!bad2, "%s", what);
            printf("level=%s threads=%d: 256/256 golden from BOS %s, 32/32 after prefill %s\n",
                   cpu_level_name(lv), nt, bad ? "FAIL" : "ok", bad2 ? "FAIL" : "ok");
            engine_free(eng);
        }
    }
    return tu_finish("test_simd_golden");
}
