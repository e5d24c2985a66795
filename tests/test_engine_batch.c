/* test_engine_batch.c - acceptance 7: one forward call over several
 * sequences at different positions (prefill chunks and decode tokens
 * mixed, in different KV slots) gives the same logits, row for row, as
 * running each sequence alone. Checked for stories260K (F32 weights, GQA)
 * and llama-2-tiny-random (F16 weights), each with F32 and F16 KV caches.
 *
 * Every sequence has a chunk schedule over rounds: round r feeds chunk[r]
 * tokens (0 = idle that round). The batched run puts all the round's
 * chunks in one call, in a shuffled order, in other slots than the solo
 * runs; logits are requested for every row. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "testutil.h"
#include "worker/engine.h"
#include "worker/forward.h"

#define N_SEQ 4
#define N_ROUND 7
#define MAX_TOK 64

/* tokens per round: A prefill 9 then decodes; B prefill 21 in chunks 8+8+5
 * then decodes; C BOS then decodes; D starts late with chunks 6+8 */
static const int chunks[N_SEQ][N_ROUND] = {
    {9, 1, 1, 1, 1, 1, 1},
    {8, 8, 5, 1, 1, 1, 0},
    {1, 1, 1, 0, 1, 1, 1},
    {0, 0, 6, 8, 1, 1, 1},
};
static const int order[N_ROUND][N_SEQ] = {
    {0, 1, 2, 3}, {3, 2, 1, 0}, {1, 3, 0, 2}, {2, 0, 3, 1},
    {0, 2, 1, 3}, {3, 1, 2, 0}, {1, 0, 3, 2},
};
static const int32_t batch_slot[N_SEQ] = {3, 0, 2, 1}; /* solo runs use slot 0 */

static engine *open_engine(const char *model, int kv_type)
{
    engine_config cfg = {0};
    cfg.model_path = tu_model(model);
    cfg.be.n_threads = 2;
    cfg.params.n_slots = 4;
    cfg.params.n_ctx = 64;
    cfg.params.kv_type = kv_type;
    cfg.params.max_batch = 64;
    engine *eng = NULL;
    cv_err e = {0};
    if (engine_create(&cfg, &eng, &e)) {
        fprintf(stderr, "FAIL engine_create %s: %s\n", model, e.msg);
        exit(1);
    }
    return eng;
}

static void run_model(const char *model, int kv_type)
{
    int32_t seq_tok[N_SEQ][MAX_TOK];
    int n_tok[N_SEQ] = {0};
    uint64_t rs = 0xC0FFEE;
    engine *probe = open_engine(model, kv_type);
    int64_t V = engine_model_config(probe)->n_vocab;
    engine_free(probe);
    for (int s = 0; s < N_SEQ; s++) {
        for (int r = 0; r < N_ROUND; r++)
            n_tok[s] += chunks[s][r];
        seq_tok[s][0] = 1;
        for (int i = 1; i < n_tok[s]; i++)
            seq_tok[s][i] = 3 + (int32_t)(tu_rand_u64(&rs) % (uint64_t)(V - 3));
    }
    float *ref = malloc((size_t)N_SEQ * MAX_TOK * V * sizeof(float));
    float *got = malloc((size_t)N_SEQ * MAX_TOK * V * sizeof(float));
    int32_t pos[MAX_TOK * N_SEQ], slot[MAX_TOK * N_SEQ], tok[MAX_TOK * N_SEQ], idx[MAX_TOK * N_SEQ];
    cv_err e = {0};

    /* each sequence alone, in slot 0 of a fresh engine */
    for (int s = 0; s < N_SEQ; s++) {
        engine *eng = open_engine(model, kv_type);
        int p0 = 0;
        for (int r = 0; r < N_ROUND; r++) {
            int n = chunks[s][r];
            if (!n)
                continue;
            for (int i = 0; i < n; i++) {
                tok[i] = seq_tok[s][p0 + i];
                pos[i] = p0 + i;
                slot[i] = 0;
                idx[i] = i;
            }
            fwd_batch b = {.n_tok = n, .tokens = tok, .pos = pos, .slot = slot, .n_out = n,
                           .out_idx = idx};
            TU_CHECK(engine_forward_logits(eng, &b, ref + ((size_t)s * MAX_TOK + p0) * V, &e) ==
                         CV_OK, "solo forward: %s", e.msg);
            p0 += n;
        }
        engine_free(eng);
    }

    /* all sequences together, one call per round */
    engine *eng = open_engine(model, kv_type);
    int p0[N_SEQ] = {0};
    float *lb = malloc((size_t)MAX_TOK * N_SEQ * V * sizeof(float));
    int max_calls_tok = 0;
    for (int r = 0; r < N_ROUND; r++) {
        int n = 0, owner[MAX_TOK * N_SEQ];
        for (int k = 0; k < N_SEQ; k++) {
            int s = order[r][k];
            for (int i = 0; i < chunks[s][r]; i++) {
                tok[n] = seq_tok[s][p0[s] + i];
                pos[n] = p0[s] + i;
                slot[n] = batch_slot[s];
                idx[n] = n;
                owner[n] = s;
                n++;
            }
        }
        if (n > max_calls_tok)
            max_calls_tok = n;
        fwd_batch b = {.n_tok = n, .tokens = tok, .pos = pos, .slot = slot, .n_out = n,
                       .out_idx = idx};
        TU_CHECK(engine_forward_logits(eng, &b, lb, &e) == CV_OK, "batched forward: %s", e.msg);
        for (int t = 0; t < n; t++)
            memcpy(got + ((size_t)owner[t] * MAX_TOK + pos[t]) * V, lb + (size_t)t * V,
                   V * sizeof(float));
        for (int k = 0; k < N_SEQ; k++)
            p0[order[r][k]] += chunks[order[r][k]][r];
    }
    engine_free(eng);

    /* compare every row: |got - ref| <= 1e-5 * max|ref row| */
    double worst = 0;
    int n_bad = 0, n_rows = 0;
    for (int s = 0; s < N_SEQ; s++)
        for (int p = 0; p < n_tok[s]; p++) {
            const float *a = got + ((size_t)s * MAX_TOK + p) * V;
            const float *b = ref + ((size_t)s * MAX_TOK + p) * V;
            double amax = 0, dmax = 0;
            for (int64_t i = 0; i < V; i++) {
                amax = fmax(amax, fabs(b[i]));
                dmax = fmax(dmax, fabs((double)a[i] - b[i]));
            }
            double rel = amax > 0 ? dmax / amax : dmax;
            worst = fmax(worst, rel);
            n_rows++;
            if (!(rel <= 1e-5)) {
                if (n_bad < 5)
                    fprintf(stderr, "  %s seq %d pos %d: max diff %g (relative %g)\n", model, s, p,
                            dmax, rel);
                n_bad++;
            }
        }
    fprintf(stderr, "%s kv %s: %d rows (batches up to %d tokens), max relative diff %.3g, %d "
            "over 1e-5\n", model, dtype_name(kv_type), n_rows, max_calls_tok, worst, n_bad);
    TU_CHECK(n_bad == 0, "%s kv %s: %d rows differ", model, dtype_name(kv_type), n_bad);
    free(lb);
    free(ref);
    free(got);
}

int main(void)
{
    run_model("stories260K.gguf", DT_F32);
    run_model("stories260K.gguf", DT_F16);
    run_model("llama-2-tiny-random.gguf", DT_F32);
    run_model("llama-2-tiny-random.gguf", DT_F16);
    return tu_finish("test_engine_batch");
}
