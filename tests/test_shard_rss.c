/* test_shard_rss.c - resident memory of each rank of a worker group against
 * the planner's bytes (issue 4, acceptance 3), under mpirun:
 * `test_shard_rss MODEL TP PP [--seqs N] [--gen N] [--max-over PCT]`.
 *
 * Every rank records its VmRSS right after MPI_Init (the process: libraries,
 * MPI; nothing of the model) as its baseline, builds the group, and the
 * leader generates --gen greedy tokens for --seqs sequences, so that every
 * rank has run its whole forward pass (touched every weight it computes
 * with) and looked up embedding rows. Then every rank reads VmRSS and Pss.
 * The model's share is VmRSS minus the baseline; it must be within
 * --max-over percent (default 10) of the planner's resident bytes for the
 * rank (weights + KV cache + scratch, less the mapped embedding table), both
 * ways. Also checked: the bytes of weights the loader holds equal the bytes
 * the planner counted (F32 column slices included). Rank 0 prints one line
 * per rank (README table). Exit non-zero on any miss. */
#include <math.h>
#include <mpi.h>

#include "core/dtype.h"
#include "testutil.h"
#include "worker/group.h"
#include "worker/model.h"

/* kB value of `key` in a /proc file ("VmRSS:", "Pss:"), -1 when absent. */
static double proc_kb(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    char line[256];
    double v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n)) {
            v = atof(line + n);
            break;
        }
    if (f)
        fclose(f);
    return v;
}

enum { F_BASE, F_RSS, F_PSS, F_PLAN_RES, F_PLAN_W, F_LOAD_W, F_F32, F_MAPPED, F_LAYERS, F_N };

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Barrier(MPI_COMM_WORLD);
    double base_kb = proc_kb("/proc/self/status", "VmRSS:");
    if (argc < 4) {
        fprintf(stderr, "usage: test_shard_rss MODEL TP PP [--seqs N] [--gen N] [--max-over PCT]\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const char *model_path = argv[1];
    int tp = atoi(argv[2]), pp = atoi(argv[3]), n_seqs = 4, n_gen = 8;
    double max_over = 10.0;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seqs"))
            n_seqs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--gen"))
            n_gen = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-over"))
            max_over = atof(argv[i + 1]);
    }
    if (model_path[0] != '/')
        model_path = tu_model(model_path);
    int64_t n_ctx = n_gen + 16;
    group_config gc = {.model_path = model_path,
                       .be = {.device = "cpu", .n_threads = 1},
                       .params = {.n_slots = n_seqs, .n_ctx = n_ctx, .kv_type = DT_F32,
                                  .max_batch = 64},
                       .tp = tp,
                       .pp = pp};
    cv_err e = {0};
    group *g = NULL;
    if (group_create(MPI_COMM_WORLD, &gc, &g, &e)) {
        fprintf(stderr, "FAIL group_create: %s\n", e.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int rank = group_rank(g), size = group_size(g);
    if (group_is_leader(g)) {
        /* sequences of 1..4 prompt tokens, decoded greedily; one micro-batch
         * per round (memory, not overlap, is measured here) */
        int64_t V = group_model_config(g)->n_vocab;
        int32_t *toks = calloc((size_t)(n_seqs * (n_ctx + 8)), sizeof *toks);
        int *n = calloc((size_t)n_seqs, sizeof *n), *fed = calloc((size_t)n_seqs, sizeof *fed);
        step_seq *ss = calloc((size_t)n_seqs, sizeof *ss);
        step_result res = {.results = calloc((size_t)n_seqs, sizeof(step_seq_result))};
        uint64_t rng = 99;
        for (int i = 0; i < n_seqs; i++) {
            n[i] = 1 + i % 4;
            for (int j = 0; j < n[i]; j++)
                toks[i * (n_ctx + 8) + j] = (int32_t)(tu_rand_u64(&rng) % (uint64_t)V);
        }
        for (int round = 0; round < n_gen; round++) {
            for (int i = 0; i < n_seqs; i++) {
                ss[i] = (step_seq){.seq_id = i, .slot = i, .pos = fed[i], .n_tokens = n[i] - fed[i],
                                   .tokens = toks + i * (n_ctx + 8) + fed[i], .want_sample = true};
                sampling_params_default(&ss[i].sp);
            }
            step s = {.id = (uint64_t)round, .n_seqs = n_seqs, .seqs = ss};
            if (group_submit(g, &s, &e) || group_wait(g, &res, &e)) {
                fprintf(stderr, "FAIL step %d: %s\n", round, e.msg);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            for (int r = 0; r < res.n_results; r++) {
                int i = (int)res.results[r].seq_id;
                fed[i] = n[i];
                toks[i * (n_ctx + 8) + n[i]++] = res.results[r].r.token;
            }
        }
        free(toks);
        free(n);
        free(fed);
        free(ss);
        free(res.results);
    } else if (group_serve(g, &e)) {
        fprintf(stderr, "FAIL rank %d serve: %s\n", rank, e.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* the leader measures before group_free (which stops the others); the
     * others after group_serve returned, with their shard still loaded */
    double v[F_N];
    uint64_t w, kv, sc, res_b;
    group_planned_bytes(g, &w, &kv, &sc, &res_b);
    const model *m = group_model(g);
    v[F_BASE] = base_kb * 1024.0;
    v[F_RSS] = proc_kb("/proc/self/status", "VmRSS:") * 1024.0;
    v[F_PSS] = proc_kb("/proc/self/smaps_rollup", "Pss:") * 1024.0;
    v[F_PLAN_RES] = (double)res_b;
    v[F_PLAN_W] = (double)w;
    v[F_LOAD_W] = (double)m->weight_bytes;
    v[F_F32] = 0;
    for (int l = 0; l < m->shard.n_layers; l++) {
        const model_layer *L = &m->layers[l];
        if (L->wo.type == DT_F32 && L->wq.type != DT_F32)
            v[F_F32] += (double)(L->wo.row_bytes * (size_t)L->wo.ne1);
        if (L->w_down.type == DT_F32 && L->w_gate.type != DT_F32)
            v[F_F32] += (double)(L->w_down.row_bytes * (size_t)L->w_down.ne1);
    }
    v[F_MAPPED] = (double)m->mapped_resident_bytes;
    v[F_LAYERS] = m->shard.n_layers;
    group_free(g);
    double *all = rank == 0 ? calloc((size_t)size * F_N, sizeof *all) : NULL;
    MPI_Gather(v, F_N, MPI_DOUBLE, all, F_N, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        const double MiB = 1024.0 * 1024.0;
        double worst = 0;
        for (int r = 0; r < size; r++) {
            const double *x = all + r * F_N;
            double model_rss = x[F_RSS] - x[F_BASE];
            double over = 100.0 * (model_rss - x[F_PLAN_RES]) / x[F_PLAN_RES];
            double raw = 100.0 * (x[F_RSS] - x[F_PLAN_RES]) / x[F_PLAN_RES];
            printf("rss tp %d pp %d rank %d (%d layers): planned %.1f MiB, VmRSS %.1f MiB "
                   "(%+.1f%%), process baseline %.1f MiB, VmRSS - baseline %.1f MiB (%+.1f%%), "
                   "Pss %.1f MiB, f32 slices %.1f MiB, mapping held %.1f MiB\n",
                   tp, pp, r, (int)x[F_LAYERS], x[F_PLAN_RES] / MiB, x[F_RSS] / MiB, raw,
                   x[F_BASE] / MiB, model_rss / MiB, over, x[F_PSS] / MiB, x[F_F32] / MiB,
                   x[F_MAPPED] / MiB);
            TU_CHECK(fabs(over) <= max_over, "rank %d: resident %.1f MiB is %+.1f%% off its "
                     "planned %.1f MiB (bound %.0f%%)", r, model_rss / MiB, over,
                     x[F_PLAN_RES] / MiB, max_over);
            TU_CHECK(fabs(x[F_LOAD_W] - x[F_PLAN_W]) <= 0.001 * x[F_PLAN_W] + 4096,
                     "rank %d: loader holds %.0f bytes of weights, planner counted %.0f", r,
                     x[F_LOAD_W], x[F_PLAN_W]);
            if (fabs(over) > worst)
                worst = fabs(over);
        }
        printf("test_shard_rss: %s tp %d pp %d: worst rank %.1f%% off its plan (bound %.0f%%)\n",
               model_path, tp, pp, worst, max_over);
        free(all);
    }
    fflush(stdout);
    int rc = rank == 0 ? tu_finish("test_shard_rss") : 0;
    MPI_Finalize();
    return rc;
}
