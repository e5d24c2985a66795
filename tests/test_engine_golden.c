/* test_engine_golden.c - acceptance 1: stories260K.gguf, greedy from BOS
 * alone, reproduces the 256 golden token ids of stories260K.greedy.json
 * (a reference fp32 forward pass) through engine_step, with F32 KV. A
 * second run feeds the first 100 golden tokens as one prefill chunk and
 * checks that greedy decoding continues the golden sequence, then a third
 * uses max_batch 7 so the prefill is cut into several forward calls; then
 * thread counts 1..4 at the scalar and the best CPU level. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "testutil.h"
#include "worker/engine.h"

#define MAX_GOLD 4096

static engine *open_engine_at(int kv_type, int64_t max_batch, int n_threads, const char *level)
{
    engine_config cfg = {0};
    cfg.model_path = tu_model("stories260K.gguf");
    cfg.be.device = "cpu";
    cfg.be.n_threads = n_threads;
    cfg.be.cpu_level = level;
    cfg.params.n_slots = 2;
    cfg.params.n_ctx = 512;
    cfg.params.kv_type = kv_type;
    cfg.params.max_batch = max_batch;
    engine *eng = NULL;
    cv_err e = {0};
    if (engine_create(&cfg, &eng, &e)) {
        fprintf(stderr, "FAIL engine_create: %s\n", e.msg);
        exit(1);
    }
    return eng;
}

static engine *open_engine(int kv_type, int64_t max_batch)
{
    return open_engine_at(kv_type, max_batch, 2, NULL);
}

/* Greedy-generate n tokens after feeding prompt (one chunk) in `slot`. */
static int generate(engine *eng, int32_t slot, const int32_t *prompt, int n_prompt, int n,
                    int32_t *out)
{
    int32_t buf[MAX_GOLD];
    memcpy(buf, prompt, n_prompt * sizeof *buf);
    step_seq q = {0};
    q.seq_id = 42;
    q.slot = slot;
    q.pos = 0;
    q.n_tokens = n_prompt;
    q.tokens = buf;
    q.want_sample = true;
    sampling_params_default(&q.sp);
    step_seq_result res;
    step s = {.id = 1, .n_seqs = 1, .seqs = &q, .n_released = 1, .released_slots = &slot};
    step_result r = {.results = &res};
    for (int i = 0; i < n; i++) {
        cv_err e = {0};
        if (engine_step(eng, &s, &r, &e)) {
            fprintf(stderr, "FAIL engine_step %d: %s\n", i, e.msg);
            return -1;
        }
        if (r.n_results != 1 || r.results[0].seq_id != 42) {
            fprintf(stderr, "FAIL step %d: %d results\n", i, r.n_results);
            return -1;
        }
        out[i] = r.results[0].r.token;
        /* next step: the sampled token, one position on */
        q.pos += q.n_tokens;
        buf[0] = out[i];
        q.n_tokens = 1;
        s.n_released = 0;
        s.id++;
    }
    return n;
}

static int compare(const char *what, const int32_t *got, const int32_t *want, int n)
{
    int first = -1, n_bad = 0;
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) {
            if (first < 0)
                first = i;
            n_bad++;
        }
    if (first >= 0) {
        fprintf(stderr, "%s: %d of %d tokens differ; first at %d: got %d, want %d\n", what, n_bad,
                n, first, got[first], want[first]);
        for (int i = first; i < n && i < first + 8; i++)
            fprintf(stderr, "  [%d] got %d want %d\n", i, got[i], want[i]);
    } else {
        fprintf(stderr, "%s: %d/%d tokens match\n", what, n, n);
    }
    return n_bad;
}

int main(void)
{
    static int32_t gold[MAX_GOLD], prompt[16], got[MAX_GOLD];
    const char *json = tu_model("stories260K.greedy.json");
    int n_prompt = tu_json_ids(json, "prompt_token_ids", prompt, 16);
    int n_gold = tu_json_ids(json, "generated_token_ids", gold, MAX_GOLD);
    TU_CHECK(n_prompt == 1 && prompt[0] == 1, "prompt ids: n=%d", n_prompt);
    TU_CHECK(n_gold == 256, "golden ids: n=%d (expected 256)", n_gold);
    if (n_gold <= 0)
        return tu_finish("test_engine_golden");

    /* 1. BOS alone, then 256 greedy decode steps */
    engine *eng = open_engine(DT_F32, 512);
    int n = generate(eng, 1, prompt, n_prompt, n_gold, got);
    TU_CHECK(n == n_gold, "generation failed");
    if (n == n_gold)
        TU_CHECK(compare("greedy from BOS", got, gold, n_gold) == 0, "golden mismatch");

    /* 2. BOS + first 100 golden tokens as one prefill chunk in slot 0 */
    int32_t pre[128];
    int n_pre = 101;
    pre[0] = 1;
    memcpy(pre + 1, gold, 100 * sizeof *pre);
    n = generate(eng, 0, pre, n_pre, n_gold - 100, got);
    TU_CHECK(n == n_gold - 100, "generation after prefill failed");
    if (n == n_gold - 100)
        TU_CHECK(compare("greedy after 101-token prefill", got, gold + 100, n_gold - 100) == 0,
                 "golden mismatch after prefill");
    engine_free(eng);

    /* 3. the same prefill cut into max_batch = 7 token forward calls */
    eng = open_engine(DT_F32, 7);
    n = generate(eng, 1, pre, n_pre, 64, got);
    TU_CHECK(n == 64, "generation with max_batch 7 failed");
    if (n == 64)
        TU_CHECK(compare("greedy after prefill, max_batch 7", got, gold + 100, 64) == 0,
                 "golden mismatch with max_batch 7");
    engine_free(eng);

    /* 4. every thread count 1..4, at the scalar oracle level and the best
     *    level this CPU has: 96 tokens from BOS each (a thread split of the
     *    rows must never change a token) */
    for (int lv = 0; lv < 2; lv++)
        for (int nt = 1; nt <= 4; nt++) {
            const char *level = lv ? NULL : "scalar";
            char what[64];
            snprintf(what, sizeof what, "greedy from BOS, %d threads, level %s", nt,
                     level ? level : "best");
            eng = open_engine_at(DT_F32, 512, nt, level);
            n = generate(eng, 0, prompt, n_prompt, 96, got);
            TU_CHECK(n == 96 && compare(what, got, gold, 96) == 0, "%s: golden mismatch", what);
            engine_free(eng);
        }
    return tu_finish("test_engine_golden");
}
