/* test_group.c - a worker group against the single-process oracle, under
 * mpirun: `test_group MODEL TP PP [--seqs N] [--gen N] [--golden JSON]`.
 *
 * Rank 0 leads the group (want_logits) and also runs the whole model in a
 * single-process engine. N sequences (sequence 0 is BOS alone; the others
 * BOS + a few seeded tokens) are prefilled and decoded greedily; each round
 * splits the sequences into up to P micro-batches submitted together (so
 * stages overlap), then the engine runs the same batches. Checked: every
 * sampled token equals the argmax of the engine's logits, and, with
 * --golden, sequence 0 reproduces the golden token ids. Reported: the max
 * absolute logit difference to single-process. Exit non-zero on any
 * mismatch. Other ranks serve.
 *
 * --rss 1: no single-process engine and no checks; after generating, every
 * rank prints its VmRSS beside its planned bytes (README figures). */
#include <math.h>
#include <mpi.h>
#include <unistd.h>

#include "core/dtype.h"
#include "testutil.h"
#include "worker/engine.h"
#include "worker/forward.h"
#include "worker/group.h"

/* Bytes of [p, p+n) present in this process's page table (/proc/self/pagemap). */
static double present_bytes(const void *p, size_t n)
{
    static FILE *pm;
    if (!pm && !(pm = fopen("/proc/self/pagemap", "rb")))
        return -1;
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p / (uintptr_t)ps, b = ((uintptr_t)p + n + (uintptr_t)ps - 1) / (uintptr_t)ps;
    double cnt = 0;
    for (uintptr_t pg = a; pg < b; pg++) {
        uint64_t ent;
        if (fseeko(pm, (off_t)(pg * 8), SEEK_SET) || fread(&ent, 8, 1, pm) != 1)
            return -1;
        cnt += (double)((ent >> 63) & 1);
    }
    return cnt * (double)ps;
}

/* Which GGUF tensors are resident in this rank (debug for --rss 2). */
static void print_present(const group *g)
{
    const gguf_file *f = group_gguf(g);
    double tot = 0;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        double b = present_bytes(t->data, t->n_bytes);
        tot += b;
        if (strstr(t->name, "blk.0.") != NULL)
            printf("  rank %d present %s: %.1f of %.1f MiB\n", group_rank(g), t->name, b / 1048576.0,
                   (double)t->n_bytes / 1048576.0);
        if (b > 4e6 && !strstr(t->name, "blk."))
            printf("  rank %d present %s: %.1f of %.1f MiB\n", group_rank(g), t->name, b / 1048576.0,
                   (double)t->n_bytes / 1048576.0);
    }
    printf("  rank %d: GGUF tensors present %.1f MiB\n", group_rank(g), tot / 1048576.0);
}

static void print_rss(const group *g, int64_t n_tok)
{
    if (getenv("CARAVAN_TEST_PRESENT"))
        print_present(g);
    double rss_kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lf kB", &rss_kb) == 1)
            break;
    if (f)
        fclose(f);
    double pss_kb = 0;
    if ((f = fopen("/proc/self/smaps_rollup", "r"))) {
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "Pss: %lf kB", &pss_kb) == 1)
                break;
        fclose(f);
    }
    uint64_t w, kv, sc, res;
    group_planned_bytes(g, &w, &kv, &sc, &res);
    const shard_spec *s = group_shard(g);
    const double MiB = 1024.0 * 1024.0;
    printf("rss tp %d pp %d rank %d (stage %d, tp %d, layers %d%s%s): VmRSS %.1f MiB, Pss %.1f "
           "MiB, planned resident %.1f MiB (%+.1f%%), planned total %.1f MiB (weights %.1f + kv %.1f + scratch "
           "%.1f), loader weights %.1f + kv %.1f MiB\n",
           group_tp(g), group_pp(g), group_rank(g), s->pp_rank, s->tp_rank, s->n_layers,
           s->has_embd ? "+embd" : "", s->has_head ? "+head" : "", rss_kb / 1024.0,
           pss_kb / 1024.0, (double)res / MiB, 100.0 * (rss_kb * 1024.0 - (double)res) / (double)res,
           (double)(w + kv + sc) / MiB, (double)w / MiB, (double)kv / MiB, (double)sc / MiB,
           (double)group_model(g)->weight_bytes / MiB, (double)group_model(g)->kv_bytes / MiB);
    printf("bytes tp %d pp %d rank %d: sent %llu bytes for %lld tokens = %.0f bytes/token\n",
           group_tp(g), group_pp(g), group_rank(g), (unsigned long long)group_bytes_sent(g),
           (long long)n_tok, (double)group_bytes_sent(g) / (double)n_tok);
    fflush(stdout);
}

typedef struct seq {
    int32_t *toks; /* prompt then generated */
    int n, n_prompt, fed;
} seq;

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (argc < 4) {
        fprintf(stderr, "usage: test_group MODEL TP PP [--seqs N] [--gen N] [--golden JSON]\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const char *model = argv[1];
    int tp = atoi(argv[2]), pp = atoi(argv[3]), n_seqs = 1, n_gen = 32;
    const char *golden = NULL;
    double tol = 1e-2;
    int allow_ties = 0, rss = 0;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tol"))
            tol = atof(argv[i + 1]);
        if (!strcmp(argv[i], "--rss"))
            rss = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--near-ties"))
            allow_ties = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--seqs"))
            n_seqs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--gen"))
            n_gen = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--golden"))
            golden = argv[i + 1];
    }
    if (model[0] != '/')
        model = tu_model(model);
    if (golden && golden[0] != '/')
        golden = tu_model(golden);
    int64_t n_ctx = n_gen + 16;
    const char *level = getenv("CARAVAN_TEST_CPU_LEVEL"); /* NULL: the best level */
    group_config gc = {.model_path = model,
                       .be = {.device = "cpu", .n_threads = 1, .cpu_level = level},
                       .params = {.n_slots = n_seqs, .n_ctx = n_ctx, .kv_type = DT_F32,
                                  .max_batch = 64},
                       .tp = tp,
                       .pp = pp,
                       .want_logits = !rss};
    cv_err e = {0};
    group *g = NULL;
    cv_status st = group_create(MPI_COMM_WORLD, &gc, &g, &e);
    if (st) {
        fprintf(stderr, "FAIL group_create: %s\n", e.msg);
        MPI_Finalize();
        return 1;
    }
    /* tokens every rank forwards (prompts + generated but the last) */
    int64_t n_tok_all = 0;
    for (int i = 0; i < n_seqs; i++)
        n_tok_all += (i == 0 ? 1 : 1 + 2 + i % 4) + n_gen - 1;
    if (rss) {
        /* right after loading, before any step */
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "VmRSS:", 6))
                printf("rss after load rank %d: %s", group_rank(g), line + 6);
        if (f)
            fclose(f);
        fflush(stdout);
    }
    if (!group_is_leader(g)) {
        st = group_serve(g, &e);
        if (st) {
            fprintf(stderr, "FAIL rank %d serve: %s\n", group_rank(g), e.msg);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (rss)
            print_rss(g, n_tok_all);
        group_free(g);
        MPI_Finalize();
        return 0;
    }

    engine_config ec = {.model_path = model,
                        .be = {.device = "cpu", .n_threads = 1, .cpu_level = level},
                        .params = gc.params};
    engine *eng = NULL;
    if (!rss && engine_create(&ec, &eng, &e)) {
        fprintf(stderr, "FAIL engine_create: %s\n", e.msg);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int64_t V = group_model_config(g)->n_vocab;
    int32_t gold[1024];
    int n_gold = golden ? tu_json_ids(golden, "generated_token_ids", gold, 1024) : 0;
    TU_CHECK(!golden || n_gold >= n_gen, "golden file %s: %d ids", golden ? golden : "", n_gold);

    seq *sq = calloc((size_t)n_seqs, sizeof *sq);
    uint64_t rng = 1234;
    for (int i = 0; i < n_seqs; i++) {
        sq[i].toks = calloc((size_t)(n_ctx + 8), sizeof(int32_t));
        sq[i].toks[0] = 1; /* BOS */
        sq[i].n_prompt = i == 0 ? 1 : 1 + 2 + i % 4;
        for (int j = 1; j < sq[i].n_prompt; j++)
            sq[i].toks[j] = (int32_t)(3 + tu_rand_u64(&rng) % (uint64_t)(V - 3));
        sq[i].n = sq[i].n_prompt;
    }
    int n_mb = n_seqs < pp ? n_seqs : pp;
    step_seq *ss = calloc((size_t)n_seqs, sizeof *ss);
    step_result res = {.results = calloc((size_t)n_seqs, sizeof(step_seq_result))};
    float *ref = malloc((size_t)(n_seqs * V) * sizeof(float));
    int32_t *bt = malloc(64 * sizeof(int32_t)), *bp = malloc(64 * sizeof(int32_t)),
            *bs = malloc(64 * sizeof(int32_t)), *bo = malloc(64 * sizeof(int32_t));
    double max_diff = 0;
    int mism = 0, gold_mism = 0, ties = 0;
    uint64_t step_id = 0;
    int64_t tokens_done = 0;
    for (int round = 0; round < n_gen; round++) {
        /* micro-batch m holds sequences i with i % n_mb == m */
        for (int m = 0; m < n_mb; m++) {
            int k = 0;
            for (int i = m; i < n_seqs; i += n_mb) {
                step_seq *q = &ss[k++];
                q->seq_id = i;
                q->slot = i;
                q->pos = sq[i].fed;
                q->n_tokens = sq[i].n - sq[i].fed;
                q->tokens = sq[i].toks + sq[i].fed;
                q->want_sample = true;
                sampling_params_default(&q->sp);
            }
            step s = {.id = step_id++, .n_seqs = k, .seqs = ss};
            if ((st = group_submit(g, &s, &e))) {
                fprintf(stderr, "FAIL submit: %s\n", e.msg);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
        }
        for (int m = 0; m < n_mb; m++) {
            if ((st = group_wait(g, &res, &e))) {
                fprintf(stderr, "FAIL wait: %s\n", e.msg);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            if (rss) {
                int r = 0;
                for (int i = m; i < n_seqs; i += n_mb, r++) {
                    sq[i].fed = sq[i].n;
                    sq[i].toks[sq[i].n++] = res.results[r].r.token;
                }
                continue;
            }
            int64_t rows, vv;
            const float *gl = group_last_logits(g, &rows, &vv);
            /* the same micro-batch through the single-process engine */
            int n = 0, n_out = 0;
            for (int i = m; i < n_seqs; i += n_mb) {
                for (int j = sq[i].fed; j < sq[i].n; j++) {
                    bt[n] = sq[i].toks[j];
                    bp[n] = j;
                    bs[n] = i;
                    n++;
                }
                bo[n_out++] = n - 1;
            }
            fwd_batch b = {.n_tok = n, .tokens = bt, .pos = bp, .slot = bs, .n_out = n_out,
                           .out_idx = bo};
            if (engine_forward_logits(eng, &b, ref, &e)) {
                fprintf(stderr, "FAIL engine: %s\n", e.msg);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            TU_CHECK(gl && rows == n_out && vv == V && res.n_results == n_out,
                     "step: %lld logit rows, %d results, expected %d", (long long)rows,
                     res.n_results, n_out);
            int r = 0;
            for (int i = m; i < n_seqs && gl; i += n_mb, r++) {
                int arg = 0;
                double row_diff = 0;
                for (int64_t v = 0; v < V; v++) {
                    double d = fabs((double)gl[r * V + v] - (double)ref[r * V + v]);
                    if (d > row_diff)
                        row_diff = d;
                    if (ref[r * V + v] > ref[r * V + arg])
                        arg = (int)v;
                }
                if (row_diff > max_diff)
                    max_diff = row_diff;
                int32_t tok = res.results[r].r.token;
                /* a near tie: the single-process margin between the two
                 * tokens is within this row's logit difference */
                if (allow_ties && tok != arg &&
                    (double)ref[r * V + arg] - (double)ref[r * V + tok] <= 2 * row_diff) {
                    fprintf(stderr, "near tie seq %d gen %d: group %d, single-process %d (margin "
                            "%.3g, row diff %.3g)\n", i, round, tok, arg,
                            (double)ref[r * V + arg] - (double)ref[r * V + tok], row_diff);
                    ties++;
                    arg = tok;
                }
                TU_CHECK(res.results[r].seq_id == i, "result %d for seq %lld, expected %d", r,
                         (long long)res.results[r].seq_id, i);
                if (tok != arg && mism++ < 5)
                    fprintf(stderr, "MISMATCH seq %d gen %d: group %d, single-process %d\n", i,
                            round, tok, arg);
                if (i == 0 && golden && tok != gold[round] && gold_mism++ < 5)
                    fprintf(stderr, "GOLDEN MISMATCH gen %d: group %d, golden %d\n", round, tok,
                            gold[round]);
                sq[i].fed = sq[i].n;
                sq[i].toks[sq[i].n++] = tok;
                tokens_done++;
            }
        }
    }
    if (rss) {
        print_rss(g, n_tok_all);
        fflush(stdout);
        group_free(g);
        MPI_Finalize();
        return 0;
    }
    TU_CHECK(mism == 0, "%d tokens differ from single-process", mism);
    TU_CHECK(gold_mism == 0, "%d tokens differ from the golden ids", gold_mism);
    TU_CHECK(max_diff < tol, "max |logit diff| %.3g over %g", max_diff, tol);
    printf("test_group: %s tp %d pp %d: %d seqs x %d tokens (%d micro-batches in flight): "
           "max |logit diff| vs single-process %.3g, token mismatches %d, near ties %d%s, "
           "cpu %s, bytes sent by leader %llu\n",
           model, tp, pp, n_seqs, n_gen, n_mb, max_diff, mism, ties,
           golden ? (gold_mism ? ", GOLDEN MISMATCH" : ", golden ids match") : "",
           level ? level : "best", (unsigned long long)group_bytes_sent(g));
    fflush(stdout);
    group_free(g);
    engine_free(eng);
    for (int i = 0; i < n_seqs; i++)
        free(sq[i].toks);
    free(sq);
    free(ss);
    free(res.results);
    free(ref);
    free(bt);
    free(bp);
    free(bs);
    free(bo);
    MPI_Finalize();
    return tu_finish("test_group");
}
