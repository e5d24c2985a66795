/* test_sched.c - the scheduler against a fake group whose "model" is a hash
 * of each slot's token history: checks that continuous batching, chunked
 * prefill, several groups, cancellation, replay after a lost group and the
 * queue limit all give exactly the tokens of running each request alone. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/sched.h"
#include "testutil.h"

#define VOCAB 1000
#define MAXCTX 256
#define MAXSLOTS 8

typedef struct fake_group {
    int64_t n_slots, n_ctx;
    int32_t hist[MAXSLOTS][MAXCTX];
    int64_t len[MAXSLOTS];
} fake_group;

/* next token = FNV of the history up to and including pos */
static int32_t fake_next(const int32_t *h, int64_t n, uint64_t seed)
{
    uint64_t x = 1469598103934665603ULL ^ seed;
    for (int64_t i = 0; i < n; i++)
        x = (x ^ (uint64_t)h[i]) * 1099511628211ULL;
    return (int32_t)(x % VOCAB);
}

static int fake_run(fake_group *fg, const step *s, step_result *r)
{
    for (int32_t i = 0; i < s->n_released; i++)
        fg->len[s->released_slots[i]] = 0;
    r->n_results = 0;
    r->id = s->id;
    for (int32_t i = 0; i < s->n_seqs; i++) {
        const step_seq *q = &s->seqs[i];
        if (q->slot < 0 || q->slot >= fg->n_slots || q->pos + q->n_tokens > fg->n_ctx)
            return -1;
        if (q->pos != fg->len[q->slot] && q->pos != 0)
            return -2; /* positions must continue the slot's history */
        for (int32_t k = 0; k < q->n_tokens; k++)
            fg->hist[q->slot][q->pos + k] = q->tokens[k];
        fg->len[q->slot] = q->pos + q->n_tokens;
        if (q->want_sample) {
            step_seq_result *res = &r->results[r->n_results++];
            memset(res, 0, sizeof *res);
            res->seq_id = q->seq_id;
            res->r.token = fake_next(fg->hist[q->slot], fg->len[q->slot], q->sp.seed);
        }
    }
    return 0;
}

typedef struct req_out {
    int32_t toks[MAXCTX];
    int n;
    int done;
    sched_finish why;
    int stop_after; /* on_token returns false after this many (0 = never) */
} req_out;

static bool cb_token(void *ud, int64_t id, const sample_result *r)
{
    req_out *o = ud;
    o->toks[o->n++] = r->token;
    return !(o->stop_after && o->n >= o->stop_after);
}
static void cb_done(void *ud, int64_t id, sched_finish why, const char *msg)
{
    req_out *o = ud;
    o->done++;
    o->why = why;
}

/* Reference: the request alone, token by token, no scheduler. */
static void reference(const int32_t *prompt, int n_prompt, int max_tokens, uint64_t seed,
                      int32_t stop_tok, req_out *ref)
{
    int32_t h[MAXCTX];
    memcpy(h, prompt, (size_t)n_prompt * sizeof *h);
    int n = n_prompt;
    memset(ref, 0, sizeof *ref);
    while (ref->n < max_tokens && n < MAXCTX) {
        int32_t t = fake_next(h, n, seed);
        ref->toks[ref->n++] = t;
        h[n++] = t;
        if (t == stop_tok)
            break;
    }
}

typedef struct pending {
    int group;
    step_result r;
} pending;

/* Drive the scheduler over n_groups fake groups; kill group `kill` after
 * `kill_after` completed steps (-1: never). */
static void drive(sched *s, fake_group *fgs, int *gids, int n_groups, int kill, int kill_after,
                  req_out *outs, int n_req)
{
    step_result r;
    r.results = calloc(MAXSLOTS, sizeof *r.results);
    int steps = 0;
    for (int iter = 0; iter < 100000; iter++) {
        int all_done = 1;
        for (int i = 0; i < n_req; i++)
            all_done &= outs[i].done == 1;
        if (all_done)
            break;
        int progressed = 0;
        for (int g = 0; g < n_groups; g++) {
            if (gids[g] < 0)
                continue;
            step st;
            if (sched_next_step(s, gids[g], &st)) {
                int rc = fake_run(&fgs[g], &st, &r);
                TU_CHECK(rc == 0, "fake group rejected a step (%d)", rc);
                if (kill == g && steps >= kill_after) {
                    kill = -1;
                    sched_remove_group(s, gids[g]);
                    gids[g] = -1;
                    progressed = 1;
                    continue;
                }
                sched_step_done(s, gids[g], &r);
                steps++;
                progressed = 1;
            }
        }
        if (!progressed) {
            TU_CHECK(0, "scheduler stalled");
            break;
        }
    }
    free(r.results);
}

int main(void)
{
    uint64_t rs = 42;
    enum { NREQ = 20 };
    int32_t prompts[NREQ][64];
    int n_prompt[NREQ];
    int max_tok[NREQ];
    for (int i = 0; i < NREQ; i++) {
        n_prompt[i] = 1 + (int)(tu_rand_u64(&rs) % 60);
        max_tok[i] = 1 + (int)(tu_rand_u64(&rs) % 40);
        for (int k = 0; k < n_prompt[i]; k++)
            prompts[i][k] = (int32_t)(tu_rand_u64(&rs) % VOCAB);
    }
    int32_t stop_tok = 7;

    for (int scenario = 0; scenario < 4; scenario++) {
        /* 0: one group; 1: two groups; 2: two groups, one killed mid-way; 3: small budget */
        int n_groups = scenario == 0 || scenario == 3 ? 1 : 2;
        sched_config sc = {.token_budget = scenario == 3 ? 5 : 64,
                           .prefill_chunk = scenario == 3 ? 3 : 16,
                           .cb = {.on_token = cb_token, .on_done = cb_done}};
        sched *s = sched_create(&sc);
        fake_group *fgs = calloc((size_t)n_groups, sizeof *fgs);
        int gids[2];
        for (int g = 0; g < n_groups; g++) {
            fgs[g].n_slots = g == 0 ? 4 : 3;
            fgs[g].n_ctx = MAXCTX;
            gids[g] = sched_add_group(s, fgs[g].n_slots, fgs[g].n_ctx, 1 + g);
        }
        req_out outs[NREQ];
        memset(outs, 0, sizeof outs);
        for (int i = 0; i < NREQ; i++) {
            sched_request rq = {.prompt = prompts[i], .n_prompt = n_prompt[i],
                                .max_tokens = max_tok[i], .stop_tokens = &stop_tok,
                                .n_stop_tokens = 1, .ud = &outs[i]};
            sampling_params_default(&rq.sp);
            rq.sp.seed = (uint64_t)i;
            cv_err e;
            TU_CHECK(sched_submit(s, &rq, NULL, &e) == CV_OK, "submit %d: %s", i, e.msg);
        }
        drive(s, fgs, gids, n_groups, scenario == 2 ? 1 : -1, 6, outs, NREQ);
        if (scenario == 2)
            TU_CHECK(sched_n_groups(s) == 1, "killed group still counted");
        for (int i = 0; i < NREQ; i++) {
            req_out ref;
            reference(prompts[i], n_prompt[i], max_tok[i], (uint64_t)i, stop_tok, &ref);
            TU_CHECK(outs[i].done == 1, "scenario %d req %d: done %d times", scenario, i,
                     outs[i].done);
            /* After a replay, the tokens already streamed are not streamed
             * again: the sequence continues where it was. */
            int same = outs[i].n == ref.n && !memcmp(outs[i].toks, ref.toks, (size_t)ref.n * 4);
            TU_CHECK(same, "scenario %d req %d: %d tokens, reference %d (first diff at %d)",
                     scenario, i, outs[i].n, ref.n,
                     ({
                         int d = 0;
                         while (d < outs[i].n && d < ref.n && outs[i].toks[d] == ref.toks[d])
                             d++;
                         d;
                     }));
            sched_finish want = (ref.n && ref.toks[ref.n - 1] == stop_tok && ref.n <= max_tok[i])
                                    ? SCHED_FINISH_STOP
                                    : SCHED_FINISH_LENGTH;
            TU_CHECK(outs[i].why == want, "scenario %d req %d: finish %d want %d", scenario, i,
                     outs[i].why, want);
        }
        sched_stats st;
        sched_get_stats(s, &st);
        TU_CHECK(st.running == 0 && st.waiting == 0, "scenario %d: %lld running %lld waiting",
                 scenario, (long long)st.running, (long long)st.waiting);
        sched_free(s);
        free(fgs);
    }

    /* Queue limit, cancel, prompt over context, callback stop. */
    {
        sched_config sc = {.token_budget = 32, .max_queue = 2,
                           .cb = {.on_token = cb_token, .on_done = cb_done}};
        sched *s = sched_create(&sc);
        fake_group fg = {.n_slots = 1, .n_ctx = 32};
        int g = sched_add_group(s, 1, 32, 1);
        req_out o[4];
        memset(o, 0, sizeof o);
        o[0].stop_after = 3;
        int64_t ids[4];
        cv_err e;
        for (int i = 0; i < 2; i++) {
            sched_request rq = {.prompt = prompts[i], .n_prompt = 4, .max_tokens = 10, .ud = &o[i]};
            sampling_params_default(&rq.sp);
            TU_CHECK(sched_submit(s, &rq, &ids[i], &e) == CV_OK, "submit: %s", e.msg);
        }
        sched_request rq = {.prompt = prompts[2], .n_prompt = 4, .max_tokens = 10, .ud = &o[2]};
        sampling_params_default(&rq.sp);
        TU_CHECK(sched_submit(s, &rq, &ids[2], &e) == CV_ERANGE, "queue limit not enforced");
        sched_request big = {.prompt = prompts[3], .n_prompt = 40, .max_tokens = 1, .ud = &o[3]};
        sampling_params_default(&big.sp);
        int32_t longp[40] = {0};
        big.prompt = longp;
        TU_CHECK(sched_submit(s, &big, &ids[3], &e) == CV_ERANGE, "prompt over context accepted");
        sched_cancel(s, ids[1]); /* waiting -> finished now */
        TU_CHECK(o[1].done == 1 && o[1].why == SCHED_FINISH_CANCELLED, "waiting cancel");
        step_result r;
        r.results = calloc(2, sizeof *r.results);
        step st;
        int n = 0;
        while (!o[0].done && n++ < 100 && sched_next_step(s, g, &st)) {
            fake_run(&fg, &st, &r);
            sched_step_done(s, g, &r);
        }
        TU_CHECK(o[0].done && o[0].why == SCHED_FINISH_STOP && o[0].n == 3,
                 "on_token stop: done %d why %d n %d", o[0].done, o[0].why, o[0].n);
        free(r.results);
        sched_free(s);
    }
    return tu_finish("test_sched");
}
