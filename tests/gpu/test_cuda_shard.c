/* test_cuda_shard.c - two ranks on one GPU, host-staged, give the tokens of
 * one rank: stories260K greedy from BOS for N steps on cuda:0 as one rank
 * (forward_stage on the whole model), as two pipeline stages (PP2: two cuda
 * backends, hidden states passed on the host) and as two tensor-parallel
 * ranks (TP2: two threads, each with its own cuda backend, joined by a
 * threads all-reduce on host memory, so forward_stage stages through the
 * host as it does for an MPI comm). Also compares the one-rank cuda logits
 * with one-rank cpu logits. This stands in for a two-process MPI group on a
 * GPU host without MPI. Needs a GPU: run by tests/gpu/run.sh. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/model_config.h"
#include "kernels/backend.h"
#include "test_comm_threads.h"
#include "testutil.h"
#include "worker/comm.h"
#include "worker/forward.h"
#include "worker/model.h"

#define N_STEPS 64

static model *load(const char *path, const shard_spec *s, backend *be)
{
    gguf_file *f;
    cv_err e = {0};
    if (gguf_open(path, &f, &e)) {
        fprintf(stderr, "FAIL open %s: %s\n", path, e.msg);
        exit(1);
    }
    model_params p = {.n_slots = 1, .n_ctx = N_STEPS + 1, .kv_type = DT_F32, .max_batch = 4};
    model *m;
    if (model_load(f, s, &p, be, &m, &e)) {
        fprintf(stderr, "FAIL model_load (%s): %s\n", be->ops->name, e.msg);
        exit(1);
    }
    return m;
}

static backend *cuda0(void)
{
    backend *be;
    cv_err e = {0};
    if (backend_cuda_create(0, &be, &e)) {
        fprintf(stderr, "FAIL cuda:0: %s\n", e.msg);
        exit(1);
    }
    return be;
}

static int argmax(const float *x, int64_t n)
{
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return (int)b;
}

static double rel_diff(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i]))
            return INFINITY;
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

typedef struct tp_job {
    model *m;
    comm *c;
    const fwd_batch *b;
    float *logits;
    cv_status st;
    cv_err e;
} tp_job;

static void *tp_main(void *p)
{
    tp_job *j = p;
    j->st = forward_stage(j->m, j->c, j->b, NULL, NULL, j->logits, &j->e);
    return NULL;
}

int main(void)
{
    const char *path = tu_model("stories260K.gguf");
    cv_err e = {0};
    gguf_file *f0;
    if (gguf_open(path, &f0, &e)) {
        fprintf(stderr, "FAIL %s\n", e.msg);
        return 1;
    }
    model_config cfg;
    if (model_config_load(f0, &cfg, &e)) {
        fprintf(stderr, "FAIL %s\n", e.msg);
        return 1;
    }
    gguf_close(f0);
    const int64_t V = cfg.n_vocab, E = cfg.n_embd;

    /* one rank on cuda, one rank on cpu */
    backend *be1 = cuda0(), *bec;
    backend_cpu_create(1, "scalar", &bec, &e);
    model *one = load(path, NULL, be1), *onec = load(path, NULL, bec);
    comm *single = comm_single_create();

    /* PP2: layers [0, 3) + embedding, [3, n_layer) + head */
    int l0 = (cfg.n_layer + 1) / 2;
    shard_spec s0 = {.pp_rank = 0, .pp_size = 2, .tp_size = 1, .layer0 = 0, .n_layers = l0,
                     .has_embd = true, .has_head = false, .head0 = 0, .n_head = cfg.n_head,
                     .kv_head0 = 0, .n_head_kv = cfg.n_head_kv, .ff0 = 0, .n_ff = cfg.n_ff,
                     .vocab0 = 0, .n_vocab = V};
    shard_spec s1 = s0;
    s1.pp_rank = 1, s1.layer0 = l0, s1.n_layers = cfg.n_layer - l0, s1.has_embd = false,
    s1.has_head = true;
    backend *bp0 = cuda0(), *bp1 = cuda0();
    model *pp0 = load(path, &s0, bp0), *pp1 = load(path, &s1, bp1);

    /* TP2: half the KV heads (and their query heads), FFN rows, vocab rows each */
    int group = cfg.n_head / cfg.n_head_kv, kvh = cfg.n_head_kv / 2;
    int64_t ff_h = cfg.n_ff / 2, v_h = V / 2;
    shard_spec t0 = {.pp_rank = 0, .pp_size = 1, .tp_rank = 0, .tp_size = 2, .layer0 = 0,
                     .n_layers = cfg.n_layer, .has_embd = true, .has_head = true, .head0 = 0,
                     .n_head = kvh * group, .kv_head0 = 0, .n_head_kv = kvh, .ff0 = 0,
                     .n_ff = ff_h, .vocab0 = 0, .n_vocab = v_h};
    shard_spec t1 = t0;
    t1.tp_rank = 1, t1.head0 = kvh * group, t1.n_head = (cfg.n_head_kv - kvh) * group,
    t1.kv_head0 = kvh, t1.n_head_kv = cfg.n_head_kv - kvh, t1.ff0 = ff_h, t1.n_ff = cfg.n_ff - ff_h,
    t1.vocab0 = v_h, t1.n_vocab = V - v_h;
    backend *bt0 = cuda0(), *bt1 = cuda0();
    model *tp0 = load(path, &t0, bt0), *tp1 = load(path, &t1, bt1);
    tc_shared sh = {.n = 2};
    pthread_barrier_init(&sh.bar, NULL, 2);
    tc_rank tc0 = {&sh, 0}, tc1 = {&sh, 1};
    comm c0 = {&tc_ops, &tc0}, c1 = {&tc_ops, &tc1};

    float *lg1 = malloc(V * 4), *lgc = malloc(V * 4), *lgp = malloc(V * 4), *lgt = malloc(V * 4);
    float *lt0 = malloc(v_h * 4), *lt1 = malloc((V - v_h) * 4), *hid = malloc(E * 4);
    int32_t tok[3] = {1, 1, 1}; /* current token per layout: one, pp, tp */
    int mism_pp = 0, mism_tp = 0, mism_cpu = 0;
    double worst_pp = 0, worst_tp = 0, worst_cpu = 0;
    int32_t idx0 = 0, slot0 = 0;
    for (int step = 0; step < N_STEPS; step++) {
        int32_t pos = step;
        fwd_batch b = {.n_tok = 1, .pos = &pos, .slot = &slot0, .n_out = 1, .out_idx = &idx0};
        /* one rank (cuda) and cpu, both fed the cuda rank's tokens */
        b.tokens = &tok[0];
        if (forward_stage(one, single, &b, NULL, NULL, lg1, &e) ||
            forward_stage(onec, single, &b, NULL, NULL, lgc, &e)) {
            fprintf(stderr, "FAIL one rank step %d: %s\n", step, e.msg);
            return 1;
        }
        /* PP2: fed the same token as the one rank (teacher forcing) */
        if (forward_stage(pp0, single, &b, NULL, hid, NULL, &e) ||
            forward_stage(pp1, single, &b, hid, NULL, lgp, &e)) {
            fprintf(stderr, "FAIL PP2 step %d: %s\n", step, e.msg);
            return 1;
        }
        /* TP2 */
        tp_job j0 = {tp0, &c0, &b, lt0, CV_OK, {0}}, j1 = {tp1, &c1, &b, lt1, CV_OK, {0}};
        pthread_t th0, th1;
        pthread_create(&th0, NULL, tp_main, &j0);
        pthread_create(&th1, NULL, tp_main, &j1);
        pthread_join(th0, NULL);
        pthread_join(th1, NULL);
        if (j0.st || j1.st) {
            fprintf(stderr, "FAIL TP2 step %d: %s %s\n", step, j0.e.msg, j1.e.msg);
            return 1;
        }
        memcpy(lgt, lt0, v_h * 4);
        memcpy(lgt + v_h, lt1, (V - v_h) * 4);
        int n1 = argmax(lg1, V), np = argmax(lgp, V), nt = argmax(lgt, V), nc = argmax(lgc, V);
        mism_pp += np != n1;
        mism_tp += nt != n1;
        mism_cpu += nc != n1;
        worst_pp = fmax(worst_pp, rel_diff(lgp, lg1, V));
        worst_tp = fmax(worst_tp, rel_diff(lgt, lg1, V));
        worst_cpu = fmax(worst_cpu, rel_diff(lg1, lgc, V));
        if (mism_pp + mism_tp + mism_cpu && (np != n1 || nt != n1 || nc != n1))
            fprintf(stderr, "step %d: next token one=%d pp2=%d tp2=%d cpu=%d\n", step, n1, np, nt,
                    nc);
        tok[0] = n1;
    }
    printf("cuda one rank vs cpu:  %d/%d tokens differ, max logits rel diff %.3g\n", mism_cpu,
           N_STEPS, worst_cpu);
    printf("cuda PP2 (host-staged) vs one rank: %d/%d tokens differ, max rel diff %.3g\n", mism_pp,
           N_STEPS, worst_pp);
    printf("cuda TP2 (host-staged) vs one rank: %d/%d tokens differ, max rel diff %.3g\n", mism_tp,
           N_STEPS, worst_tp);
    TU_CHECK(mism_cpu == 0 && worst_cpu <= 1e-4, "cuda one rank differs from cpu");
    TU_CHECK(mism_pp == 0 && worst_pp <= 1e-4, "PP2 differs from one rank");
    TU_CHECK(mism_tp == 0 && worst_tp <= 1e-4, "TP2 differs from one rank");

    model_free(one), model_free(onec), model_free(pp0), model_free(pp1), model_free(tp0),
        model_free(tp1);
    backend_destroy(be1), backend_destroy(bec), backend_destroy(bp0), backend_destroy(bp1),
        backend_destroy(bt0), backend_destroy(bt1);
    comm_destroy(single);
    pthread_barrier_destroy(&sh.bar);
    free(lg1), free(lgc), free(lgp), free(lgt), free(lt0), free(lt1), free(hid);
    return tu_finish("test_cuda_shard");
}
