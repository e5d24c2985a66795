/* test_types_vs_f32.c - issue 2 acceptance 5: mkmodel writes the same
 * random model (same seed and shape: n_embd 256, 4 layers, 8 heads, 4 KV
 * heads) in F32 and in F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, Q4_K_M; each loads
 * and generates, and its logits over 64 positions are compared with the F32
 * model's: mean cosine similarity and top-1 agreement, each with a floor per
 * type. Prints one line per type (the figures in the README). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dtype.h"
#include "testutil.h"
#include "worker/engine.h"
#include "worker/forward.h"

#define NPOS 64

static float *run_logits(const char *path, int64_t *n_vocab)
{
    engine_config ec = {.model_path = path,
                        .be = {.device = "cpu", .n_threads = 2},
                        .params = {.n_slots = 1, .n_ctx = 128, .kv_type = DT_F32, .max_batch = 128}};
    engine *eng = NULL;
    cv_err e = {0};
    if (engine_create(&ec, &eng, &e) != CV_OK) {
        fprintf(stderr, "FAIL %s: %s\n", path, e.msg);
        return NULL;
    }
    const model_config *cfg = engine_model_config(eng);
    *n_vocab = cfg->n_vocab;
    int32_t tok[NPOS], pos[NPOS], slot[NPOS], idx[NPOS];
    uint64_t rs = 99;
    for (int i = 0; i < NPOS; i++) {
        tok[i] = (int32_t)(3 + tu_rand_u64(&rs) % (uint64_t)(cfg->n_vocab - 3));
        pos[i] = i;
        slot[i] = 0;
        idx[i] = i;
    }
    tok[0] = 1;
    fwd_batch b = {.n_tok = NPOS, .tokens = tok, .pos = pos, .slot = slot, .n_out = NPOS,
                   .out_idx = idx};
    float *lg = malloc((size_t)NPOS * (size_t)cfg->n_vocab * sizeof *lg);
    if (engine_forward_logits(eng, &b, lg, &e) != CV_OK) {
        fprintf(stderr, "FAIL %s: forward: %s\n", path, e.msg);
        free(lg);
        lg = NULL;
    }
    /* and it generates through the step path */
    step_seq sq = {.seq_id = 1, .slot = 0, .pos = NPOS, .n_tokens = 1, .tokens = &tok[5],
                   .want_sample = true};
    sampling_params_default(&sq.sp);
    step st = {.id = 1, .n_seqs = 1, .seqs = &sq};
    step_seq_result res;
    step_result r = {.results = &res};
    if (lg && engine_step(eng, &st, &r, &e) != CV_OK) {
        fprintf(stderr, "FAIL %s: step: %s\n", path, e.msg);
        free(lg);
        lg = NULL;
    }
    engine_free(eng);
    return lg;
}

int main(void)
{
    const char *bin = getenv("CARAVAN_BIN");
    const char *vocab = tu_model("vocab/ggml-vocab-llama-spm.gguf");
    if (!bin) {
        fprintf(stderr, "FAIL: CARAVAN_BIN not set\n");
        return 1;
    }
    char dir[] = "/tmp/caravan-types-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    struct {
        const char *type;
        double min_cos, min_top1;
    } types[] = {/* floors: a little below what the scalar path measured (README) */
                 {"F32", 1.0, 1.0},     {"F16", 0.9999, 0.95}, {"BF16", 0.9995, 0.90},
                 {"Q8_0", 0.999, 0.85}, {"Q6_K", 0.996, 0.75}, {"Q5_K", 0.99, 0.65},
                 {"Q4_K", 0.96, 0.45},  {"Q4_0", 0.955, 0.45},
                 /* the mix: Q4_K with Q6_K head, attn_v and ffn_down in some layers */
                 {"Q4_K_M", 0.965, 0.50}};
    float *ref = NULL;
    int64_t nv = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        char path[256], cmd[1024];
        snprintf(path, sizeof path, "%s/m-%s.gguf", dir, types[k].type);
        snprintf(cmd, sizeof cmd,
                 "%s mkmodel -o %s --n-layer 4 --n-embd 256 --n-head 8 --n-head-kv 4 --n-ff 768 "
                 "--type %s --seed 7 --pool-blocks 0 --vocab-from %s 2>/dev/null",
                 bin, path, types[k].type, vocab);
        int rc = system(cmd);
        TU_CHECK(rc == 0, "mkmodel %s failed (%d)", types[k].type, rc);
        if (rc)
            continue;
        int64_t n_vocab = 0;
        float *lg = run_logits(path, &n_vocab);
        unlink(path);
        TU_CHECK(lg != NULL, "%s: no logits", types[k].type);
        if (!lg)
            continue;
        if (!ref) {
            ref = lg;
            nv = n_vocab;
            /* non-degenerate: the F32 logits vary */
            double mean = 0, var = 0;
            for (int64_t i = 0; i < nv; i++)
                mean += ref[i];
            mean /= (double)nv;
            for (int64_t i = 0; i < nv; i++)
                var += (ref[i] - mean) * (ref[i] - mean);
            TU_CHECK(sqrt(var / (double)nv) > 0.5, "F32 logits nearly constant (std %.3g)",
                     sqrt(var / (double)nv));
            continue;
        }
        double cos_sum = 0;
        int top1 = 0;
        for (int p = 0; p < NPOS; p++) {
            const float *a = ref + (size_t)p * nv, *b = lg + (size_t)p * nv;
            double ab = 0, aa = 0, bb = 0;
            int64_t ia = 0, ib = 0;
            for (int64_t i = 0; i < nv; i++) {
                ab += (double)a[i] * b[i];
                aa += (double)a[i] * a[i];
                bb += (double)b[i] * b[i];
                if (a[i] > a[ia]) ia = i;
                if (b[i] > b[ib]) ib = i;
            }
            cos_sum += ab / sqrt(aa * bb + 1e-30);
            top1 += ia == ib;
        }
        double cosv = cos_sum / NPOS, t1 = (double)top1 / NPOS;
        printf("type=%-5s cosine_vs_f32=%.6f top1_agreement=%.3f (floors %.4f / %.2f)\n",
               types[k].type, cosv, t1, types[k].min_cos, types[k].min_top1);
        TU_CHECK(cosv >= types[k].min_cos, "%s: cosine %.6f below floor %.4f", types[k].type, cosv,
                 types[k].min_cos);
        TU_CHECK(t1 >= types[k].min_top1, "%s: top-1 agreement %.3f below floor %.2f",
                 types[k].type, t1, types[k].min_top1);
        free(lg);
    }
    free(ref);
    rmdir(dir);
    return tu_finish("test_types_vs_f32");
}
