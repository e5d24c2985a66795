/* sched.c - continuous batching over worker groups (see sched.h).
 *
 * A sequence holds its whole token history (prompt + generated) and how many
 * of those tokens its group has already fed into the KV cache (n_fed). A step
 * feeds each chosen sequence its pending tokens: one for a decoding sequence,
 * a chunk for one still in prefill. Replay after a lost group is the same
 * mechanism with n_fed reset to 0: the history is re-fed as a prefill. */
#include "sched.h"

#include <stdlib.h>
#include <string.h>

enum seq_state { SEQ_WAITING = 0, SEQ_RUNNING, SEQ_DONE };

typedef struct seq {
    int64_t id;
    int state;
    int group;          /* -1 while waiting */
    int32_t slot;       /* -1 while waiting */
    int32_t *tokens;    /* (cap) prompt then generated */
    int64_t n_tokens;
    int64_t cap;
    int64_t n_prompt;
    int64_t n_fed;      /* tokens already in the KV cache of its group */
    int64_t max_tokens;
    sampling_params sp;
    int32_t *stop_tokens;
    int32_t n_stop;
    void *ud;
    bool inflight;      /* part of an outstanding step */
    bool cancelled;     /* cancel requested while in flight */
} seq;

typedef struct inflight_step {
    step st;
    seq **seqs;         /* st.n_seqs entries, parallel to st.seqs */
    int32_t *tok_pool;
    struct inflight_step *next;
} inflight_step;

typedef struct group_state {
    bool alive;
    int64_t n_slots;
    int64_t n_ctx;
    int max_inflight;
    seq **slot_owner;         /* (n_slots) */
    int32_t *released;        /* slots to clear with the next step */
    int32_t n_released;
    inflight_step *head, *tail; /* outstanding steps, oldest first */
    int n_inflight;
    int64_t next_step_id;
    int64_t rr;               /* round-robin start for fairness */
} group_state;

struct sched {
    sched_config cfg;
    group_state *groups;
    int n_groups;             /* ever added */
    seq **waiting;            /* FIFO; replays go to the front */
    int64_t n_waiting, cap_waiting;
    int64_t next_seq_id;
    int64_t n_running;
    int64_t tokens_generated, prompt_tokens, requests_done;
    seq **all;                /* every live (not finished) sequence, for lookup */
    int64_t n_all, cap_all;
};

static bool grow(void **p, int64_t *cap, int64_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    int64_t nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, (size_t)nc * elem);
    if (!np)
        return false;
    *p = np;
    *cap = nc;
    return true;
}

sched *sched_create(const sched_config *cfg)
{
    sched *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cfg = *cfg;
    if (s->cfg.token_budget <= 0)
        s->cfg.token_budget = 256;
    if (s->cfg.prefill_chunk <= 0 || s->cfg.prefill_chunk > s->cfg.token_budget)
        s->cfg.prefill_chunk = s->cfg.token_budget;
    if (s->cfg.max_queue <= 0)
        s->cfg.max_queue = 1024;
    s->next_seq_id = 1;
    return s;
}

static void seq_free(seq *q)
{
    free(q->tokens);
    free(q->stop_tokens);
    free(q);
}

static void step_free(inflight_step *is)
{
    free(is->st.seqs);
    free(is->st.released_slots);
    free(is->seqs);
    free(is->tok_pool);
    free(is);
}

void sched_free(sched *s)
{
    if (!s)
        return;
    for (int g = 0; g < s->n_groups; g++) {
        group_state *gs = &s->groups[g];
        for (inflight_step *is = gs->head, *n; is; is = n) {
            n = is->next;
            step_free(is);
        }
        free(gs->slot_owner);
        free(gs->released);
    }
    for (int64_t i = 0; i < s->n_all; i++)
        seq_free(s->all[i]);
    free(s->all);
    free(s->groups);
    free(s->waiting);
    free(s);
}

int sched_add_group(sched *s, int64_t n_slots, int64_t n_ctx, int max_inflight)
{
    if (n_slots <= 0 || n_ctx <= 1)
        return -1;
    group_state *ng = realloc(s->groups, (size_t)(s->n_groups + 1) * sizeof *ng);
    if (!ng)
        return -1;
    s->groups = ng;
    group_state *gs = &s->groups[s->n_groups];
    memset(gs, 0, sizeof *gs);
    gs->slot_owner = calloc((size_t)n_slots, sizeof *gs->slot_owner);
    gs->released = calloc((size_t)n_slots, sizeof *gs->released);
    if (!gs->slot_owner || !gs->released) {
        free(gs->slot_owner);
        free(gs->released);
        return -1;
    }
    gs->alive = true;
    gs->n_slots = n_slots;
    gs->n_ctx = n_ctx;
    gs->max_inflight = max_inflight > 0 ? max_inflight : 1;
    gs->next_step_id = 1;
    return s->n_groups++;
}

int sched_n_groups(const sched *s)
{
    int n = 0;
    for (int g = 0; g < s->n_groups; g++)
        n += s->groups[g].alive;
    return n;
}

static void all_remove(sched *s, seq *q)
{
    for (int64_t i = 0; i < s->n_all; i++)
        if (s->all[i] == q) {
            s->all[i] = s->all[--s->n_all];
            return;
        }
}

static seq *find_seq(const sched *s, int64_t id)
{
    for (int64_t i = 0; i < s->n_all; i++)
        if (s->all[i]->id == id)
            return s->all[i];
    return NULL;
}

static void waiting_remove(sched *s, seq *q)
{
    for (int64_t i = 0; i < s->n_waiting; i++)
        if (s->waiting[i] == q) {
            memmove(&s->waiting[i], &s->waiting[i + 1],
                    (size_t)(s->n_waiting - i - 1) * sizeof *s->waiting);
            s->n_waiting--;
            return;
        }
}

/* Release the slot of a running sequence; the group clears it with its next step. */
static void slot_release(sched *s, seq *q)
{
    if (q->group < 0 || q->slot < 0)
        return;
    group_state *gs = &s->groups[q->group];
    if (gs->alive && gs->slot_owner[q->slot] == q) {
        gs->slot_owner[q->slot] = NULL;
        gs->released[gs->n_released++] = q->slot;
    }
    q->group = -1;
    q->slot = -1;
    s->n_running--;
}

/* Finish a sequence: callback, then free. */
static void seq_finish(sched *s, seq *q, sched_finish why, const char *msg)
{
    if (q->state == SEQ_WAITING)
        waiting_remove(s, q);
    else if (q->state == SEQ_RUNNING)
        slot_release(s, q);
    q->state = SEQ_DONE;
    all_remove(s, q);
    s->requests_done++;
    if (s->cfg.cb.on_done)
        s->cfg.cb.on_done(q->ud, q->id, why, msg);
    seq_free(q);
}

cv_status sched_submit(sched *s, const sched_request *req, int64_t *seq_id, cv_err *e)
{
    if (!req->prompt || req->n_prompt < 1)
        return cv_err_set(e, CV_EINVAL, "empty prompt: at least one token (e.g. BOS) is needed");
    if (req->max_tokens < 1)
        return cv_err_set(e, CV_EINVAL, "max_tokens must be >= 1 (got %lld)",
                          (long long)req->max_tokens);
    if (req->sp.n_top_logprobs < 0 || req->sp.n_top_logprobs > SAMPLER_MAX_TOP)
        return cv_err_set(e, CV_EINVAL, "top logprobs must be in [0, %d] (got %d)",
                          SAMPLER_MAX_TOP, req->sp.n_top_logprobs);
    int64_t max_ctx = 0;
    for (int g = 0; g < s->n_groups; g++)
        if (s->groups[g].alive && s->groups[g].n_ctx > max_ctx)
            max_ctx = s->groups[g].n_ctx;
    if (max_ctx > 0 && req->n_prompt >= max_ctx)
        return cv_err_set(e, CV_ERANGE,
                          "prompt of %lld tokens does not fit the context of %lld tokens "
                          "(at least one position must be left to generate)",
                          (long long)req->n_prompt, (long long)max_ctx);
    if (s->n_waiting >= s->cfg.max_queue)
        return cv_err_set(e, CV_ERANGE, "queue full: %lld requests waiting (limit %lld)",
                          (long long)s->n_waiting, (long long)s->cfg.max_queue);

    seq *q = calloc(1, sizeof *q);
    if (!q)
        return cv_err_set(e, CV_ENOMEM, "out of memory");
    int64_t cap = req->n_prompt + (req->max_tokens < 4096 ? req->max_tokens : 4096) + 1;
    q->tokens = malloc((size_t)cap * sizeof *q->tokens);
    q->stop_tokens = malloc((size_t)(req->n_stop_tokens + 1) * sizeof *q->stop_tokens);
    if (!q->tokens || !q->stop_tokens ||
        !grow((void **)&s->waiting, &s->cap_waiting, s->n_waiting + 1, sizeof *s->waiting) ||
        !grow((void **)&s->all, &s->cap_all, s->n_all + 1, sizeof *s->all)) {
        seq_free(q);
        return cv_err_set(e, CV_ENOMEM, "out of memory");
    }
    memcpy(q->tokens, req->prompt, (size_t)req->n_prompt * sizeof *q->tokens);
    if (req->n_stop_tokens > 0)
        memcpy(q->stop_tokens, req->stop_tokens, (size_t)req->n_stop_tokens * sizeof(int32_t));
    q->n_stop = req->n_stop_tokens > 0 ? req->n_stop_tokens : 0;
    q->cap = cap;
    q->n_tokens = q->n_prompt = req->n_prompt;
    q->max_tokens = req->max_tokens;
    q->sp = req->sp;
    q->ud = req->ud;
    q->id = s->next_seq_id++;
    q->group = -1;
    q->slot = -1;
    q->state = SEQ_WAITING;
    s->waiting[s->n_waiting++] = q;
    s->all[s->n_all++] = q;
    s->prompt_tokens += req->n_prompt;
    if (seq_id)
        *seq_id = q->id;
    return CV_OK;
}

void sched_cancel(sched *s, int64_t seq_id)
{
    seq *q = find_seq(s, seq_id);
    if (!q)
        return;
    if (q->inflight) {
        q->cancelled = true; /* finished when its step returns */
        return;
    }
    seq_finish(s, q, SCHED_FINISH_CANCELLED, "cancelled");
}

void sched_fail_waiting(sched *s, const char *msg)
{
    while (s->n_waiting > 0)
        seq_finish(s, s->waiting[0], SCHED_FINISH_ERROR, msg);
}

/* Move waiting sequences into free slots of g whose context fits them. */
static void admit(sched *s, int g)
{
    group_state *gs = &s->groups[g];
    int64_t i = 0;
    while (i < s->n_waiting) {
        seq *q = s->waiting[i];
        if (q->n_tokens >= gs->n_ctx) {
            i++; /* does not fit this group; another may take it */
            continue;
        }
        int32_t slot = -1;
        for (int64_t k = 0; k < gs->n_slots; k++)
            if (!gs->slot_owner[k]) {
                slot = (int32_t)k;
                break;
            }
        if (slot < 0)
            return;
        memmove(&s->waiting[i], &s->waiting[i + 1],
                (size_t)(s->n_waiting - i - 1) * sizeof *s->waiting);
        s->n_waiting--;
        q->state = SEQ_RUNNING;
        q->group = g;
        q->slot = slot;
        q->n_fed = 0;
        gs->slot_owner[slot] = q;
        s->n_running++;
    }
}

bool sched_next_step(sched *s, int g, step *out)
{
    if (g < 0 || g >= s->n_groups || !s->groups[g].alive)
        return false;
    group_state *gs = &s->groups[g];
    if (gs->n_inflight >= gs->max_inflight)
        return false;
    admit(s, g);

    /* Choose sequences: decoders first (one token each), then prefill chunks. */
    int64_t budget = s->cfg.token_budget;
    int64_t max_seqs = s->cfg.max_seqs_per_step > 0 ? s->cfg.max_seqs_per_step : gs->n_slots;
    if (s->cfg.max_seqs_per_step <= 0 && gs->max_inflight > 1) {
        /* A pipeline of P stages overlaps only when the group's sequences are
         * spread over P micro-batches in flight: each step takes its share. */
        int64_t owned = 0;
        for (int64_t k = 0; k < gs->n_slots; k++)
            owned += gs->slot_owner[k] != NULL;
        int64_t share = (owned + gs->max_inflight - 1) / gs->max_inflight;
        if (share >= 1 && share < max_seqs)
            max_seqs = share;
    }
    seq **pick = malloc((size_t)gs->n_slots * sizeof *pick);
    int32_t *take = malloc((size_t)gs->n_slots * sizeof *take);
    if (!pick || !take) {
        free(pick);
        free(take);
        return false;
    }
    int64_t n_pick = 0, n_tok = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t k = 0; k < gs->n_slots && n_pick < max_seqs && budget > 0; k++) {
            seq *q = gs->slot_owner[(gs->rr + k) % gs->n_slots];
            if (!q || q->inflight)
                continue;
            int64_t pending = q->n_tokens - q->n_fed;
            if (pending <= 0)
                continue;
            bool decoding = q->n_fed >= q->n_prompt && pending == 1;
            if ((pass == 0) != decoding)
                continue;
            int64_t n = pending;
            if (n > s->cfg.prefill_chunk)
                n = s->cfg.prefill_chunk;
            if (n > budget)
                n = budget;
            pick[n_pick] = q;
            take[n_pick] = (int32_t)n;
            n_pick++;
            n_tok += n;
            budget -= n;
        }
    }
    gs->rr = (gs->rr + 1) % gs->n_slots;
    if (n_pick == 0 && gs->n_released == 0) {
        free(pick);
        free(take);
        return false;
    }
    if (n_pick == 0) {
        /* Only releases pending: they ride along with the next real step. */
        free(pick);
        free(take);
        return false;
    }

    inflight_step *is = calloc(1, sizeof *is);
    if (!is) {
        free(pick);
        free(take);
        return false;
    }
    is->st.seqs = calloc((size_t)n_pick, sizeof *is->st.seqs);
    is->seqs = pick;
    is->tok_pool = malloc((size_t)n_tok * sizeof *is->tok_pool);
    is->st.released_slots = malloc((size_t)(gs->n_released + 1) * sizeof(int32_t));
    if (!is->st.seqs || !is->tok_pool || !is->st.released_slots) {
        free(take);
        step_free(is);
        return false;
    }
    is->st.id = (uint64_t)gs->next_step_id++;
    is->st.n_seqs = (int32_t)n_pick;
    memcpy(is->st.released_slots, gs->released, (size_t)gs->n_released * sizeof(int32_t));
    is->st.n_released = gs->n_released;
    gs->n_released = 0;
    int64_t off = 0;
    for (int64_t i = 0; i < n_pick; i++) {
        seq *q = pick[i];
        step_seq *ss = &is->st.seqs[i];
        ss->seq_id = q->id;
        ss->slot = q->slot;
        ss->pos = (int32_t)q->n_fed;
        ss->n_tokens = take[i];
        ss->tokens = is->tok_pool + off;
        memcpy(ss->tokens, q->tokens + q->n_fed, (size_t)take[i] * sizeof(int32_t));
        off += take[i];
        ss->want_sample = q->n_fed + take[i] == q->n_tokens;
        ss->sp = q->sp;
        q->n_fed += take[i];
        q->inflight = true;
    }
    free(take);
    if (gs->tail)
        gs->tail->next = is;
    else
        gs->head = is;
    gs->tail = is;
    gs->n_inflight++;
    *out = is->st;
    return true;
}

static bool append_token(seq *q, int32_t tok)
{
    if (q->n_tokens + 1 > q->cap) {
        int64_t nc = q->cap * 2;
        int32_t *nt = realloc(q->tokens, (size_t)nc * sizeof *nt);
        if (!nt)
            return false;
        q->tokens = nt;
        q->cap = nc;
    }
    q->tokens[q->n_tokens++] = tok;
    return true;
}

static inflight_step *pop_oldest(group_state *gs)
{
    inflight_step *is = gs->head;
    if (!is)
        return NULL;
    gs->head = is->next;
    if (!gs->head)
        gs->tail = NULL;
    gs->n_inflight--;
    return is;
}

void sched_step_done(sched *s, int g, const step_result *r)
{
    if (g < 0 || g >= s->n_groups)
        return;
    group_state *gs = &s->groups[g];
    inflight_step *is = pop_oldest(gs);
    if (!is)
        return;
    for (int32_t i = 0; i < is->st.n_seqs; i++) {
        seq *q = is->seqs[i];
        q->inflight = false;
        if (q->cancelled) {
            seq_finish(s, q, SCHED_FINISH_CANCELLED, "cancelled");
            continue;
        }
        if (!is->st.seqs[i].want_sample)
            continue;
        const sample_result *res = NULL;
        for (int32_t j = 0; j < r->n_results; j++)
            if (r->results[j].seq_id == q->id) {
                res = &r->results[j].r;
                break;
            }
        if (!res) {
            seq_finish(s, q, SCHED_FINISH_ERROR, "group returned no token for the sequence");
            continue;
        }
        if (!append_token(q, res->token)) {
            seq_finish(s, q, SCHED_FINISH_ERROR, "out of memory");
            continue;
        }
        s->tokens_generated++;
        bool keep = true;
        if (s->cfg.cb.on_token)
            keep = s->cfg.cb.on_token(q->ud, q->id, res);
        bool is_stop = false;
        for (int32_t k = 0; k < q->n_stop; k++)
            is_stop |= q->stop_tokens[k] == res->token;
        int64_t n_gen = q->n_tokens - q->n_prompt;
        if (q->cancelled)
            seq_finish(s, q, SCHED_FINISH_CANCELLED, "cancelled");
        else if (!keep || is_stop)
            seq_finish(s, q, SCHED_FINISH_STOP, NULL);
        else if (n_gen >= q->max_tokens)
            seq_finish(s, q, SCHED_FINISH_LENGTH, NULL);
        else if (q->n_tokens >= gs->n_ctx)
            seq_finish(s, q, SCHED_FINISH_LENGTH, "context full");
    }
    step_free(is);
}

void sched_step_failed(sched *s, int g, const char *msg)
{
    if (g < 0 || g >= s->n_groups)
        return;
    group_state *gs = &s->groups[g];
    inflight_step *is = pop_oldest(gs);
    if (!is)
        return;
    for (int32_t i = 0; i < is->st.n_seqs; i++) {
        seq *q = is->seqs[i];
        q->inflight = false;
        seq_finish(s, q, q->cancelled ? SCHED_FINISH_CANCELLED : SCHED_FINISH_ERROR, msg);
    }
    step_free(is);
}

void sched_remove_group(sched *s, int g)
{
    if (g < 0 || g >= s->n_groups || !s->groups[g].alive)
        return;
    group_state *gs = &s->groups[g];
    gs->alive = false;
    for (inflight_step *is = gs->head, *n; is; is = n) {
        n = is->next;
        for (int32_t i = 0; i < is->st.n_seqs; i++)
            is->seqs[i]->inflight = false;
        step_free(is);
    }
    gs->head = gs->tail = NULL;
    gs->n_inflight = 0;
    gs->n_released = 0;
    /* Re-queue this group's sequences at the front, oldest first, for replay. */
    seq **mine = malloc((size_t)gs->n_slots * sizeof *mine);
    int64_t n_mine = 0;
    for (int64_t k = 0; k < gs->n_slots; k++) {
        seq *q = gs->slot_owner[k];
        gs->slot_owner[k] = NULL;
        if (!q)
            continue;
        s->n_running--;
        q->group = -1;
        q->slot = -1;
        q->n_fed = 0;
        if (q->cancelled) {
            q->state = SEQ_DONE;
            all_remove(s, q);
            s->requests_done++;
            if (s->cfg.cb.on_done)
                s->cfg.cb.on_done(q->ud, q->id, SCHED_FINISH_CANCELLED, "cancelled");
            seq_free(q);
            continue;
        }
        q->state = SEQ_WAITING;
        if (mine)
            mine[n_mine++] = q;
    }
    if (mine && n_mine > 0) {
        /* oldest (smallest id) first */
        for (int64_t a = 1; a < n_mine; a++)
            for (int64_t b = a; b > 0 && mine[b - 1]->id > mine[b]->id; b--) {
                seq *t = mine[b];
                mine[b] = mine[b - 1];
                mine[b - 1] = t;
            }
        if (grow((void **)&s->waiting, &s->cap_waiting, s->n_waiting + n_mine,
                 sizeof *s->waiting)) {
            memmove(&s->waiting[n_mine], &s->waiting[0], (size_t)s->n_waiting * sizeof *s->waiting);
            memcpy(&s->waiting[0], mine, (size_t)n_mine * sizeof *mine);
            s->n_waiting += n_mine;
        }
    }
    free(mine);
}

void sched_get_stats(const sched *s, sched_stats *st)
{
    memset(st, 0, sizeof *st);
    st->waiting = s->n_waiting;
    st->running = s->n_running;
    for (int g = 0; g < s->n_groups; g++)
        st->inflight_steps += s->groups[g].n_inflight;
    st->tokens_generated = s->tokens_generated;
    st->prompt_tokens = s->prompt_tokens;
    st->requests_done = s->requests_done;
}

int64_t sched_group_slots_used(const sched *s, int g)
{
    if (g < 0 || g >= s->n_groups || !s->groups[g].alive)
        return 0;
    int64_t n = 0;
    for (int64_t k = 0; k < s->groups[g].n_slots; k++)
        n += s->groups[g].slot_owner[k] != NULL;
    return n;
}
