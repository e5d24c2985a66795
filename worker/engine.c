/* engine.c - a whole model in one process behind the step interface (the
 * single-rank worker group): validates a step, runs one batched forward
 * pass over all its sequences (split into max_batch-token calls when
 * needed), and samples each sequence that asked for a token.
 *
 * The engine keeps each slot's token history (what was fed at positions
 * 0..len-1) for the penalties, so sampling stays a pure function of the
 * sequence: replaying the same steps gives the same tokens. */
#include "engine.h"

#include <stdlib.h>
#include <string.h>

#include "../core/dtype.h"
#include "comm.h"
#include "forward.h"

struct engine {
    backend *be;
    model *m;
    comm *tp;          /* comm_single */
    int64_t n_slots, n_ctx, n_vocab;
    int32_t *hist;     /* (n_slots, n_ctx) tokens fed at each position */
    int64_t *slot_len; /* positions filled per slot */
    /* per-call host arrays, max_batch each */
    int32_t *tokens, *pos, *slot, *out_idx;
    int32_t *seq_of_out; /* (cap_out) which step_seq each out row belongs to */
    float *logits;       /* (cap_out, n_vocab) */
    int64_t cap_out;
    void *samp_scratch;
};

cv_status engine_create(const engine_config *cfg, engine **out, cv_err *e)
{
    *out = NULL;
    cv_status st;
    engine *eng = calloc(1, sizeof *eng);
    if (!eng)
        return cv_err_set(e, CV_ENOMEM, "allocating the engine");
    gguf_file *f = NULL;
    if (!cfg->model_path) {
        st = cv_err_set(e, CV_EINVAL, "no model path");
        goto err;
    }
    if ((st = gguf_open(cfg->model_path, &f, e)))
        goto err; /* gguf_open's message already names the file */
    if ((st = backend_create(&cfg->be, &eng->be, e)))
        goto err;
    model_params p = cfg->params;
    if ((st = model_load(f, NULL, &p, eng->be, &eng->m, e))) {
        cv_err_prefix(e, "%s", cfg->model_path);
        goto err;
    }
    f = NULL; /* owned by the model */
    eng->tp = comm_single_create();
    if (!eng->tp) {
        st = cv_err_set(e, CV_ENOMEM, "allocating the communicator");
        goto err;
    }
    const model_params *mp = &eng->m->params;
    eng->n_slots = mp->n_slots;
    eng->n_ctx = mp->n_ctx;
    eng->n_vocab = eng->m->cfg.n_vocab;
    int64_t B = mp->max_batch;
    eng->hist = calloc((size_t)(eng->n_slots * eng->n_ctx), sizeof(int32_t));
    eng->slot_len = calloc((size_t)eng->n_slots, sizeof(int64_t));
    eng->tokens = malloc((size_t)B * sizeof(int32_t));
    eng->pos = malloc((size_t)B * sizeof(int32_t));
    eng->slot = malloc((size_t)B * sizeof(int32_t));
    eng->out_idx = malloc((size_t)B * sizeof(int32_t));
    eng->samp_scratch = malloc(sampler_scratch_bytes(eng->n_vocab));
    if (!eng->hist || !eng->slot_len || !eng->tokens || !eng->pos || !eng->slot ||
        !eng->out_idx || !eng->samp_scratch) {
        st = cv_err_set(e, CV_ENOMEM, "allocating engine buffers (%lld slots x %lld positions)",
                        (long long)eng->n_slots, (long long)eng->n_ctx);
        goto err;
    }
    *out = eng;
    return CV_OK;
err:
    if (f)
        gguf_close(f);
    engine_free(eng);
    return st;
}

void engine_free(engine *eng)
{
    if (!eng)
        return;
    model_free(eng->m);
    backend_destroy(eng->be);
    comm_destroy(eng->tp);
    free(eng->hist);
    free(eng->slot_len);
    free(eng->tokens);
    free(eng->pos);
    free(eng->slot);
    free(eng->out_idx);
    free(eng->seq_of_out);
    free(eng->logits);
    free(eng->samp_scratch);
    free(eng);
}

const model_config *engine_model_config(const engine *eng) { return &eng->m->cfg; }
const gguf_file *engine_gguf(const engine *eng) { return eng->m->gguf; }
int64_t engine_n_slots(const engine *eng) { return eng->n_slots; }
int64_t engine_n_ctx(const engine *eng) { return eng->n_ctx; }

static cv_status logits_reserve(engine *eng, int64_t n_out, cv_err *e)
{
    if (n_out <= eng->cap_out)
        return CV_OK;
    float *l = realloc(eng->logits, (size_t)n_out * (size_t)eng->n_vocab * sizeof(float));
    if (!l)
        return cv_err_set(e, CV_ENOMEM, "allocating logits for %lld rows x %lld", (long long)n_out,
                          (long long)eng->n_vocab);
    eng->logits = l;
    int32_t *so = realloc(eng->seq_of_out, (size_t)n_out * sizeof(int32_t));
    if (!so)
        return cv_err_set(e, CV_ENOMEM, "allocating %lld output rows", (long long)n_out);
    eng->seq_of_out = so;
    eng->cap_out = n_out;
    return CV_OK;
}

static cv_status step_check(engine *eng, const step *s, cv_err *e)
{
    if (s->n_seqs < 0 || (s->n_seqs > 0 && !s->seqs))
        return cv_err_set(e, CV_EINVAL, "step %llu: bad sequence list (n_seqs %d)",
                          (unsigned long long)s->id, s->n_seqs);
    for (int32_t i = 0; i < s->n_released; i++)
        if (s->released_slots[i] < 0 || s->released_slots[i] >= eng->n_slots)
            return cv_err_set(e, CV_EINVAL, "step %llu: released slot %d outside [0, %lld)",
                              (unsigned long long)s->id, s->released_slots[i],
                              (long long)eng->n_slots);
    for (int32_t i = 0; i < s->n_seqs; i++) {
        const step_seq *q = &s->seqs[i];
        long long sid = (long long)q->seq_id;
        if (q->slot < 0 || q->slot >= eng->n_slots)
            return cv_err_set(e, CV_EINVAL, "step %llu seq %lld: slot %d outside [0, %lld)",
                              (unsigned long long)s->id, sid, q->slot, (long long)eng->n_slots);
        if (q->n_tokens < 1 || !q->tokens)
            return cv_err_set(e, CV_EINVAL, "step %llu seq %lld: n_tokens %d (needs >= 1)",
                              (unsigned long long)s->id, sid, q->n_tokens);
        if (q->pos < 0 || (int64_t)q->pos + q->n_tokens > eng->n_ctx)
            return cv_err_set(e, CV_ERANGE, "step %llu seq %lld: positions [%d, %lld) exceed the "
                              "context of %lld", (unsigned long long)s->id, sid, q->pos,
                              (long long)q->pos + q->n_tokens, (long long)eng->n_ctx);
        /* slot_len already reflects this step's releases (applied first) */
        if (q->pos > eng->slot_len[q->slot])
            return cv_err_set(e, CV_EINVAL, "step %llu seq %lld: starts at position %d but slot %d "
                              "holds only %lld positions (a gap)", (unsigned long long)s->id, sid,
                              q->pos, q->slot, (long long)eng->slot_len[q->slot]);
        for (int32_t j = 0; j < q->n_tokens; j++)
            if (q->tokens[j] < 0 || q->tokens[j] >= eng->n_vocab)
                return cv_err_set(e, CV_EINVAL, "step %llu seq %lld: token %d at index %d outside "
                                  "the vocabulary [0, %lld)", (unsigned long long)s->id, sid,
                                  q->tokens[j], j, (long long)eng->n_vocab);
        for (int32_t j = 0; j < i; j++)
            if (s->seqs[j].slot == q->slot)
                return cv_err_set(e, CV_EINVAL, "step %llu: slot %d used by two sequences (%lld "
                                  "and %lld)", (unsigned long long)s->id, q->slot,
                                  (long long)s->seqs[j].seq_id, sid);
    }
    return CV_OK;
}

/* Record the tokens fed to a slot (for penalties and the no-gap check). */
static void hist_record(engine *eng, int32_t slot, int32_t pos, const int32_t *tok, int64_t n)
{
    memcpy(eng->hist + (int64_t)slot * eng->n_ctx + pos, tok, (size_t)n * sizeof(int32_t));
    if (pos + n > eng->slot_len[slot])
        eng->slot_len[slot] = pos + n;
}

cv_status engine_step(engine *eng, const step *s, step_result *r, cv_err *e)
{
    cv_status st;
    r->id = s->id;
    r->n_results = 0;
    if (s->n_released < 0 || (s->n_released > 0 && !s->released_slots))
        return cv_err_set(e, CV_EINVAL, "step %llu: bad released-slot list",
                          (unsigned long long)s->id);
    for (int32_t i = 0; i < s->n_released; i++) {
        int32_t sl = s->released_slots[i];
        if (sl < 0 || sl >= eng->n_slots)
            return cv_err_set(e, CV_EINVAL, "step %llu: released slot %d outside [0, %lld)",
                              (unsigned long long)s->id, sl, (long long)eng->n_slots);
    }
    for (int32_t i = 0; i < s->n_released; i++) {
        model_slot_clear(eng->m, s->released_slots[i]);
        eng->slot_len[s->released_slots[i]] = 0;
    }
    if ((st = step_check(eng, s, e)))
        return st;

    int64_t n_want = 0;
    for (int32_t i = 0; i < s->n_seqs; i++)
        n_want += s->seqs[i].want_sample;
    if ((st = logits_reserve(eng, n_want > 0 ? n_want : 1, e)))
        return st;

    /* Concatenate every sequence's tokens; cut into calls of at most
     * max_batch tokens (a long prefill may span calls: causal order holds
     * because calls run in order). out rows are numbered across calls. */
    int64_t B = eng->m->params.max_batch;
    int64_t n = 0, n_out = 0, out_base = 0;
    fwd_batch b = {0};
    for (int32_t i = 0; i < s->n_seqs; i++) {
        const step_seq *q = &s->seqs[i];
        for (int32_t j = 0; j < q->n_tokens; j++) {
            eng->tokens[n] = q->tokens[j];
            eng->pos[n] = q->pos + j;
            eng->slot[n] = q->slot;
            if (j == q->n_tokens - 1 && q->want_sample) {
                eng->out_idx[n_out] = (int32_t)n;
                eng->seq_of_out[out_base + n_out] = i;
                n_out++;
            }
            n++;
            bool last = i == s->n_seqs - 1 && j == q->n_tokens - 1;
            if (n == B || last) {
                b.n_tok = n;
                b.tokens = eng->tokens;
                b.pos = eng->pos;
                b.slot = eng->slot;
                b.n_out = n_out;
                b.out_idx = eng->out_idx;
                if ((st = forward_stage(eng->m, eng->tp, &b, NULL, NULL,
                                        eng->logits + out_base * eng->n_vocab, e)))
                    return cv_err_prefix(e, "step %llu", (unsigned long long)s->id);
                out_base += n_out;
                n = 0;
                n_out = 0;
            }
        }
        hist_record(eng, q->slot, q->pos, q->tokens, q->n_tokens);
    }

    /* sample each sequence that asked, in step order */
    for (int64_t k = 0; k < out_base; k++) {
        const step_seq *q = &s->seqs[eng->seq_of_out[k]];
        int64_t end = (int64_t)q->pos + q->n_tokens; /* the position being generated */
        step_seq_result *res = &r->results[r->n_results++];
        res->seq_id = q->seq_id;
        sampler_sample(eng->logits + k * eng->n_vocab, eng->n_vocab, &q->sp, end,
                       eng->hist + (int64_t)q->slot * eng->n_ctx, end, eng->samp_scratch,
                       &res->r);
    }
    return CV_OK;
}

cv_status engine_forward_logits(engine *eng, const struct fwd_batch *b, float *logits, cv_err *e)
{
    cv_status st = forward_stage(eng->m, eng->tp, b, NULL, NULL, logits, e);
    if (st)
        return st;
    for (int64_t t = 0; t < b->n_tok; t++) {
        int32_t sl = b->slot[t];
        eng->hist[(int64_t)sl * eng->n_ctx + b->pos[t]] = b->tokens[t];
        if (b->pos[t] + 1 > eng->slot_len[sl])
            eng->slot_len[sl] = b->pos[t] + 1;
    }
    return CV_OK;
}
