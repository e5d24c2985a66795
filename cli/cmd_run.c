/* cmd_run.c - `caravan run`: generate from one or more prompts with no
 * coordinator and no network. The scheduler (coordinator/sched.c) drives a
 * group through a group_link exactly as the coordinator does: an in-process
 * engine for one rank, or, under mpirun with several ranks, an MPI worker
 * group led by rank 0 (worker/group.h). Same code path, same numbers.
 *
 * Output: text streamed to stdout (or, with --json, one JSON object per
 * generated token), and one summary line on stderr with prompt and
 * generation tok/s. Several -p options run as concurrent sequences. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/run_common.h"
#include "coordinator/link.h"
#include "coordinator/sched.h"
#include "core/gguf.h"
#include "core/strbuf.h"
#include "core/tokenizer.h"
#include "worker/engine.h"

typedef struct run_seq {
    int index;          /* which -p */
    int64_t seq_id;
    detok *dt;
    strbuf text;        /* accumulated (multi-prompt text mode) */
    int64_t n_gen;
    double t_first;     /* time of the first token */
    int done;
    sched_finish why;
} run_seq;

typedef struct run_ctx {
    run_opts *o;
    const tokenizer *tok;
    run_seq *seqs;
    int n_seqs;
    int n_done;
    int64_t total_gen;
    double t_start;
    int had_error;
} run_ctx;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
    }
    fputc('"', f);
}

/* sched passes each sequence's run_seq as ud; the run as a whole is this. */
static run_ctx *g_rc;

static bool run_on_token(void *ud, int64_t seq_id, const sample_result *r)
{
    run_seq *rs = ud;
    run_ctx *rc = g_rc;
    if (rs->n_gen == 0)
        rs->t_first = now_s();
    rs->n_gen++;
    rc->total_gen++;
    size_t n = 0;
    const char *piece = detok_feed(rs->dt, r->token, &n);
    if (rc->o->json) {
        printf("{");
        if (rc->n_seqs > 1)
            printf("\"seq\": %d, ", rs->index);
        printf("\"id\": %d, \"text\": ", r->token);
        json_str(stdout, piece, n);
        printf(", \"logprob\": %.6g", r->logprob);
        if (rc->o->top_logprobs > 0) {
            printf(", \"top_logprobs\": [");
            for (int i = 0; i < r->n_top; i++)
                printf("%s[%d, %.6g]", i ? ", " : "", r->top_ids[i], r->top_logprobs[i]);
            printf("]");
        }
        printf("}\n");
        fflush(stdout);
    } else if (rc->n_seqs == 1) {
        fwrite(piece, 1, n, stdout);
        fflush(stdout);
    } else {
        strbuf_put(&rs->text, piece, n);
    }
    return true;
}

static void run_on_done(void *ud, int64_t seq_id, sched_finish why, const char *msg)
{
    run_seq *rs = ud;
    run_ctx *rc = g_rc;
    size_t n = 0;
    const char *tail = detok_flush(rs->dt, &n);
    if (!rc->o->json) {
        if (rc->n_seqs == 1)
            fwrite(tail, 1, n, stdout);
        else
            strbuf_put(&rs->text, tail, n);
    }
    rs->done = 1;
    rs->why = why;
    rc->n_done++;
    if (why == SCHED_FINISH_ERROR) {
        fprintf(stderr, "caravan run: sequence %d failed: %s\n", rs->index, msg ? msg : "error");
        rc->had_error = 1;
    }
}

static const char *finish_name(sched_finish f)
{
    switch (f) {
    case SCHED_FINISH_STOP: return "stop";
    case SCHED_FINISH_LENGTH: return "length";
    case SCHED_FINISH_CANCELLED: return "cancelled";
    case SCHED_FINISH_ERROR: return "error";
    default: return "none";
    }
}

/* Drive the scheduler over one link until every sequence is done. */
static int drive(sched *s, group_link *link, run_ctx *rc)
{
    int g = sched_add_group(s, link->n_slots, link->n_ctx, link->max_inflight);
    if (g < 0) {
        fprintf(stderr, "caravan run: could not add the group to the scheduler\n");
        return 1;
    }
    step_result res;
    res.results = calloc((size_t)link->n_slots + 1, sizeof *res.results);
    if (!res.results)
        return 1;
    int inflight = 0;
    cv_err err = {0};
    while (rc->n_done < rc->n_seqs) {
        step st;
        while (sched_next_step(s, g, &st)) {
            if (link->ops->submit(link, &st, &err) != CV_OK) {
                fprintf(stderr, "caravan run: %s\n", err.msg);
                free(res.results);
                return 1;
            }
            inflight++;
        }
        if (inflight == 0) {
            fprintf(stderr, "caravan run: scheduler stalled with %d sequences unfinished\n",
                    rc->n_seqs - rc->n_done);
            free(res.results);
            return 1;
        }
        bool ready = false;
        cv_status stt = link->ops->poll(link, &res, -1, &ready, &err);
        if (stt != CV_OK) {
            fprintf(stderr, "caravan run: %s\n", err.msg);
            sched_step_failed(s, g, err.msg);
            free(res.results);
            return 1;
        }
        if (ready) {
            inflight--;
            sched_step_done(s, g, &res);
        }
    }
    free(res.results);
    return rc->had_error ? 1 : 0;
}

int cmd_run(int argc, char **argv)
{
    run_opts o;
    int prc = run_opts_parse(argc, argv, &o);
    if (prc >= 0)
        return prc;

    cv_err err = {0};
    int rank = 0, world = 1;
    run_backend rb;
    if (run_backend_open(&o, &rb, &rank, &world, &err) != CV_OK) {
        fprintf(stderr, "caravan run: %s\n", err.msg);
        return 1;
    }
    if (rank != 0) {
        /* A follower rank of an MPI group: serve until the leader shuts it down. */
        int rc = run_backend_serve(&rb, &err);
        if (rc != 0)
            fprintf(stderr, "caravan run: rank %d: %s\n", rank, err.msg);
        run_backend_close(&rb);
        return rc;
    }

    tokenizer *tok = NULL;
    if (tokenizer_load(rb.gguf, &tok, &err) != CV_OK) {
        fprintf(stderr, "caravan run: %s: tokenizer: %s\n", o.model, err.msg);
        run_backend_close(&rb);
        return 1;
    }
    int64_t n_ctx = rb.link->n_ctx;
    int64_t n_vocab = tokenizer_n_vocab(tok);

    /* End-of-generation ids stop a sequence (unless --ignore-eos). */
    int32_t *stops = NULL;
    int32_t n_stops = 0;
    if (!o.ignore_eos) {
        stops = malloc((size_t)n_vocab * sizeof *stops);
        for (int64_t i = 0; stops && i < n_vocab; i++)
            if (tokenizer_is_eog(tok, (int32_t)i))
                stops[n_stops++] = (int32_t)i;
    }

    run_ctx rc = {.o = &o, .tok = tok, .n_seqs = o.n_prompts};
    g_rc = &rc;
    rc.seqs = calloc((size_t)o.n_prompts, sizeof *rc.seqs);
    sched_config sc = {.token_budget = o.batch,
                       .max_queue = o.n_prompts + 1,
                       .cb = {.on_token = run_on_token, .on_done = run_on_done}};
    sched *s = sched_create(&sc);
    int status = 0;
    int64_t total_prompt = 0;
    if (!rc.seqs || !s) {
        fprintf(stderr, "caravan run: out of memory\n");
        status = 1;
        goto out;
    }
    {
        /* Register the group first so that submit checks prompts against its context. */
        for (int i = 0; i < o.n_prompts; i++) {
            int32_t *ids = NULL;
            int64_t n_ids = 0;
            const char *p = o.prompts[i];
            if (tokenizer_encode_alloc(tok, p, strlen(p), !o.no_bos, true, &ids, &n_ids, &err) !=
                CV_OK) {
                fprintf(stderr, "caravan run: cannot tokenize prompt %d: %s\n", i, err.msg);
                status = 1;
                goto out;
            }
            if (n_ids == 0) {
                /* An empty prompt means BOS alone. */
                int32_t bos = tokenizer_bos(tok);
                if (bos < 0) {
                    fprintf(stderr, "caravan run: empty prompt and the vocabulary has no BOS "
                                    "token\n");
                    status = 1;
                    free(ids);
                    goto out;
                }
                free(ids);
                ids = malloc(sizeof *ids);
                ids[0] = bos;
                n_ids = 1;
            }
            if (n_ids >= n_ctx) {
                fprintf(stderr,
                        "caravan run: prompt %d is %lld tokens, longer than the context of %lld "
                        "(use a shorter prompt or a larger --ctx)\n",
                        i, (long long)n_ids, (long long)n_ctx);
                free(ids);
                status = 1;
                goto out;
            }
            total_prompt += n_ids;
            run_seq *rs = &rc.seqs[i];
            rs->index = i;
            rs->dt = detok_new(tok, n_ids == 1 && ids[0] == tokenizer_bos(tok), false);
            /* Echo nothing: like llama.cpp's --no-display-prompt. */
            sched_request rq = {.prompt = ids,
                                .n_prompt = n_ids,
                                .max_tokens = o.n_predict,
                                .sp = o.sp,
                                .stop_tokens = stops,
                                .n_stop_tokens = n_stops,
                                .ud = rs};
            rq.sp.seed = o.sp.seed + (uint64_t)i * 0x9E3779B97F4A7C15ULL * (o.n_prompts > 1);
            if (sched_submit(s, &rq, &rs->seq_id, &err) != CV_OK) {
                fprintf(stderr, "caravan run: %s\n", err.msg);
                free(ids);
                status = 1;
                goto out;
            }
            free(ids);
        }
        rc.t_start = now_s();
        status = drive(s, rb.link, &rc);
        double t_end = now_s();
        if (!o.json && o.n_prompts == 1)
            printf("\n");
        if (!o.json && o.n_prompts > 1)
            for (int i = 0; i < o.n_prompts; i++)
                printf("[%d] %s\n", i, rc.seqs[i].text.p ? rc.seqs[i].text.p : "");
        fflush(stdout);
        /* Prompt time: until the first token of the last sequence to start; generation: after. */
        double t_first = 0;
        for (int i = 0; i < o.n_prompts; i++)
            if (rc.seqs[i].t_first > t_first)
                t_first = rc.seqs[i].t_first;
        if (t_first == 0)
            t_first = t_end;
        double pp_s = t_first - rc.t_start, tg_s = t_end - t_first;
        int64_t tg_tokens = rc.total_gen - o.n_prompts;
        fprintf(stderr,
                "caravan run: model=%s backend=%s ranks=%d prompt_tokens=%lld prompt_tok_s=%.2f "
                "gen_tokens=%lld gen_tok_s=%.2f finish=%s seed=%llu\n",
                o.model, rb.backend_name, world, (long long)total_prompt,
                pp_s > 0 ? (double)total_prompt / pp_s : 0.0, (long long)rc.total_gen,
                (tg_s > 0 && tg_tokens > 0) ? (double)tg_tokens / tg_s : 0.0,
                finish_name(rc.seqs[0].why), (unsigned long long)o.sp.seed);
    }
out:
    if (rc.seqs)
        for (int i = 0; i < o.n_prompts; i++) {
            detok_free(rc.seqs[i].dt);
            free(rc.seqs[i].text.p);
        }
    free(rc.seqs);
    free(stops);
    sched_free(s);
    tokenizer_free(tok);
    run_backend_close(&rb);
    run_opts_free(&o);
    return status;
}
