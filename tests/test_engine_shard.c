/* test_engine_shard.c - the model split over pipeline stages and tensor-
 * parallel ranks (model_load slices + forward_stage with all-reduces)
 * gives the logits of the whole model on one rank. The ranks of a stage
 * are threads of this process joined by a small all-reduce communicator
 * (fixed summation order, so every rank gets identical sums); stages run
 * one after the other, passing hidden states on the host. Layouts include
 * uneven head/FFN/vocab splits, one layer per stage, a quantized (Q4_K)
 * model split on block boundaries, and a Q4_K split whose attn_output and
 * ffn_down column slices are not on block boundaries (dequantized to F32 by
 * the loader; compared at the scalar level, where the quantized and the F32
 * dot products differ only by float rounding). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "test_engine_model.h"
#include "test_comm_threads.h"
#include "testutil.h"
#include "worker/comm.h"
#include "worker/forward.h"
#include "worker/model.h"

#define MAX_T TC_MAX_RANKS
#define MAX_P 8

/* split n units into T parts (first ones one larger), each a multiple of `unit` units */
static void split(int64_t n, int T, int64_t unit, int64_t *off, int64_t *cnt)
{
    int64_t blocks = n / unit, o = 0;
    for (int t = 0; t < T; t++) {
        int64_t b = blocks / T + (t < blocks % T);
        off[t] = o * unit;
        cnt[t] = b * unit;
        o += b;
    }
}

typedef struct rank_job {
    model *m;
    comm *c;
    const fwd_batch *b;
    const float *hin;
    float *hout, *logits;
    cv_status st;
    cv_err e;
} rank_job;

static void *rank_main(void *p)
{
    rank_job *j = p;
    j->st = forward_stage(j->m, j->c, j->b, j->hin, j->hout, j->logits, &j->e);
    return NULL;
}

typedef struct layout {
    int P, T;
    int64_t ff_unit; /* FFN split granularity (block size of the type) */
    const char *level; /* cpu level of every rank and the reference (NULL: best) */
} layout;

static model_params params(void)
{
    model_params p = {.n_slots = 2, .n_ctx = 32, .kv_type = DT_F32, .max_batch = 16};
    return p;
}

static model *load_or_die(const char *path, const shard_spec *s, backend *be)
{
    gguf_file *f;
    cv_err e = {0};
    if (gguf_open(path, &f, &e)) {
        fprintf(stderr, "FAIL open %s: %s\n", path, e.msg);
        exit(1);
    }
    model *m;
    model_params p = params();
    if (model_load(f, s, &p, be, &m, &e)) {
        fprintf(stderr, "FAIL model_load %s (stage %d rank %d): %s\n", path, s ? s->pp_rank : 0,
                s ? s->tp_rank : 0, e.msg);
        exit(1);
    }
    return m;
}

/* the rounds of the check: two sequences, prefill chunks then decodes */
#define N_ROUND 4
static const int chunk[2][N_ROUND] = {{7, 1, 1, 1}, {3, 4, 1, 1}};

static void run_layout(const char *label, const char *path, const layout *L)
{
    gguf_file *f0;
    cv_err e = {0};
    if (gguf_open(path, &f0, &e)) {
        TU_CHECK(0, "%s", e.msg);
        return;
    }
    model_config cfg;
    TU_CHECK(model_config_load(f0, &cfg, &e) == CV_OK, "%s", e.msg);
    gguf_close(f0);
    int P = L->P, T = L->T;
    int64_t V = cfg.n_vocab, E = cfg.n_embd;

    /* reference: the whole model on one rank */
    backend *be_full;
    backend_cpu_create(1, L->level, &be_full, &e);
    model *full = load_or_die(path, NULL, be_full);
    comm *single = comm_single_create();

    /* the shards */
    int64_t l_off[MAX_P], l_cnt[MAX_P], kv_off[MAX_T], kv_cnt[MAX_T], ff_off[MAX_T],
        ff_cnt[MAX_T], v_off[MAX_T], v_cnt[MAX_T];
    split(cfg.n_layer, P, 1, l_off, l_cnt);
    split(cfg.n_head_kv, T, 1, kv_off, kv_cnt);
    split(cfg.n_ff, T, L->ff_unit, ff_off, ff_cnt);
    split(V, T, 1, v_off, v_cnt);
    int group = cfg.n_head / cfg.n_head_kv;
    model *m[MAX_P][MAX_T];
    backend *be[MAX_P][MAX_T];
    tc_shared sh[MAX_P];
    tc_rank tc[MAX_P][MAX_T];
    comm cm[MAX_P][MAX_T];
    size_t bytes_total = 0;
    for (int p = 0; p < P; p++) {
        sh[p].n = T;
        pthread_barrier_init(&sh[p].bar, NULL, (unsigned)T);
        for (int t = 0; t < T; t++) {
            shard_spec s = {.pp_rank = p, .pp_size = P, .tp_rank = t, .tp_size = T,
                            .layer0 = (int)l_off[p], .n_layers = (int)l_cnt[p],
                            .has_embd = p == 0, .has_head = p == P - 1,
                            .head0 = (int)kv_off[t] * group, .n_head = (int)kv_cnt[t] * group,
                            .kv_head0 = (int)kv_off[t], .n_head_kv = (int)kv_cnt[t],
                            .ff0 = ff_off[t], .n_ff = ff_cnt[t], .vocab0 = v_off[t],
                            .n_vocab = v_cnt[t]};
            backend_cpu_create(1, L->level, &be[p][t], &e);
            m[p][t] = load_or_die(path, &s, be[p][t]);
            bytes_total += m[p][t]->weight_bytes;
            tc[p][t] = (tc_rank){&sh[p], t};
            cm[p][t] = (comm){&tc_ops, &tc[p][t]};
        }
    }

    int32_t tok[16], pos[16], slot[16], idx[16];
    int p0[2] = {0, 0};
    uint64_t rs = 0xABCDEF;
    float *ref = malloc(sizeof(float) * 16 * V), *got = malloc(sizeof(float) * 16 * V);
    float *hid[MAX_P][MAX_T], *lg[MAX_T];
    for (int p = 0; p < P; p++)
        for (int t = 0; t < T; t++)
            hid[p][t] = malloc(sizeof(float) * 16 * E);
    for (int t = 0; t < T; t++)
        lg[t] = malloc(sizeof(float) * 16 * v_cnt[t]);
    double worst = 0;
    int n_rows = 0, hid_mismatch = 0;
    for (int r = 0; r < N_ROUND; r++) {
        int n = 0;
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < chunk[s][r]; i++) {
                tok[n] = (int32_t)(tu_rand_u64(&rs) % (uint64_t)V);
                pos[n] = p0[s] + i;
                slot[n] = s;
                idx[n] = n;
                n++;
            }
        for (int s = 0; s < 2; s++)
            p0[s] += chunk[s][r];
        fwd_batch b = {.n_tok = n, .tokens = tok, .pos = pos, .slot = slot, .n_out = n,
                       .out_idx = idx};
        TU_CHECK(forward_stage(full, single, &b, NULL, NULL, ref, &e) == CV_OK, "full: %s", e.msg);
        for (int p = 0; p < P; p++) {
            pthread_t th[MAX_T];
            rank_job job[MAX_T];
            for (int t = 0; t < T; t++) {
                job[t] = (rank_job){m[p][t], &cm[p][t], &b, p ? hid[p - 1][0] : NULL, hid[p][t],
                                    lg[t], CV_OK, {0}};
                pthread_create(&th[t], NULL, rank_main, &job[t]);
            }
            for (int t = 0; t < T; t++) {
                pthread_join(th[t], NULL);
                TU_CHECK(job[t].st == CV_OK, "%s stage %d rank %d: %s", label, p, t, job[t].e.msg);
            }
            if (p < P - 1)
                for (int t = 1; t < T; t++)
                    hid_mismatch += memcmp(hid[p][t], hid[p][0], sizeof(float) * n * E) != 0;
        }
        for (int i = 0; i < n; i++)
            for (int t = 0; t < T; t++)
                memcpy(got + i * V + v_off[t], lg[t] + i * v_cnt[t], sizeof(float) * v_cnt[t]);
        for (int i = 0; i < n; i++, n_rows++)
            worst = fmax(worst, tm_rel_diff(got + i * V, ref + i * V, V));
    }
    fprintf(stderr, "%-28s P=%d T=%d: %d rows, max relative diff vs one rank %.3g; weights "
            "%zu bytes over all ranks (one rank: %zu)\n", label, P, T, n_rows, worst, bytes_total,
            full->weight_bytes);
    TU_CHECK(worst <= 1e-4, "%s P=%d T=%d: logits differ from one rank (%.3g)", label, P, T, worst);
    TU_CHECK(hid_mismatch == 0, "%s: TP ranks disagree on hidden states", label);

    for (int p = 0; p < P; p++) {
        for (int t = 0; t < T; t++) {
            model_free(m[p][t]);
            backend_destroy(be[p][t]);
            free(hid[p][t]);
        }
        pthread_barrier_destroy(&sh[p].bar);
    }
    for (int t = 0; t < T; t++)
        free(lg[t]);
    free(ref);
    free(got);
    model_free(full);
    backend_destroy(be_full);
    comm_destroy(single);
}

int main(void)
{
    const char *stories = tu_model("stories260K.gguf");
    layout ls[] = {{1, 2, 1, NULL}, {2, 1, 1, NULL}, {2, 3, 1, NULL}, {5, 4, 1, NULL},
                   {1, 4, 1, NULL}};
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++)
        run_layout("stories260K", stories, &ls[i]);

    /* qwen2 (biases, tied head) in F16, 3-way uneven TP over 2 stages */
    tm_spec q = {.arch = "qwen2", .n_layer = 3, .n_embd = 64, .n_head = 8, .n_head_kv = 4,
                 .n_ff = 96, .n_vocab = 100, .wtype = DT_F16, .tied = true, .seed = 11};
    TU_CHECK(tm_write("engine_shard_qwen2.gguf", &q) == 0, "write qwen2");
    layout lq = {2, 3, 1, NULL};
    run_layout("qwen2 F16 tied", "engine_shard_qwen2.gguf", &lq);
    remove("engine_shard_qwen2.gguf");

    /* Q4_K: head and FFN slices on 256-element block boundaries */
    tm_spec k = {.arch = "llama", .n_layer = 2, .n_embd = 512, .n_head = 16, .n_head_kv = 8,
                 .n_ff = 512, .n_vocab = 64, .wtype = DT_Q4_K, .seed = 12};
    TU_CHECK(tm_write("engine_shard_q4k.gguf", &k) == 0, "write Q4_K");
    layout lk = {2, 2, 256, NULL};
    run_layout("llama Q4_K", "engine_shard_q4k.gguf", &lk);
    /* 4 heads x 32 = 128 columns of attn_output and 128 FFN rows (so 128
     * columns of ffn_down, starting off a block on ranks 1 and 3) per rank:
     * not whole 256-element Q4_K blocks, dequantized to F32 at load */
    layout lk4 = {1, 4, 128, "scalar"};
    run_layout("llama Q4_K, F32 slices", "engine_shard_q4k.gguf", &lk4);
    remove("engine_shard_q4k.gguf");
    return tu_finish("test_engine_shard");
}
