/* cluster_wire.c - cluster protocol framing (u32 LE length + Envelope) and
 * the step/result <-> protobuf mapping. No I/O except the blocking helpers
 * the worker leader uses. */
#include "cluster.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t cluster_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

cv_status cluster_frame_encode(const cl_env *env, uint8_t **frame, size_t *len, cv_err *e)
{
    size_t n = caravan__cluster__v1__envelope__get_packed_size(env);
    if (n > UINT32_MAX) return cv_err_set(e, CV_ERANGE, "cluster frame of %zu bytes over 4 GiB", n);
    uint8_t *buf = malloc(CLUSTER_FRAME_HEADER + n + 1);
    if (!buf) return cv_err_set(e, CV_ENOMEM, "cluster frame: out of memory (%zu bytes)", n);
    buf[0] = (uint8_t)n;
    buf[1] = (uint8_t)(n >> 8);
    buf[2] = (uint8_t)(n >> 16);
    buf[3] = (uint8_t)(n >> 24);
    caravan__cluster__v1__envelope__pack(env, buf + CLUSTER_FRAME_HEADER);
    *frame = buf;
    *len = CLUSTER_FRAME_HEADER + n;
    return CV_OK;
}

cv_status cluster_frame_length(const uint8_t hdr[CLUSTER_FRAME_HEADER], size_t max_len,
                               uint32_t *len, cv_err *e)
{
    uint32_t n = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 |
                 (uint32_t)hdr[3] << 24;
    if (n == 0) return cv_err_set(e, CV_EFORMAT, "cluster frame: empty envelope (length 0)");
    if (n > max_len)
        return cv_err_set(e, CV_ERANGE, "cluster frame of %u bytes over the maximum of %zu bytes",
                          n, max_len);
    *len = n;
    return CV_OK;
}

cv_status cluster_env_decode(const uint8_t *body, size_t len, cl_env **out, cv_err *e)
{
    cl_env *env = caravan__cluster__v1__envelope__unpack(NULL, len, body);
    if (!env) return cv_err_set(e, CV_EFORMAT, "cluster frame: invalid protobuf Envelope (%zu bytes)", len);
    if (env->msg_case == CARAVAN__CLUSTER__V1__ENVELOPE__MSG__NOT_SET) {
        caravan__cluster__v1__envelope__free_unpacked(env, NULL);
        return cv_err_set(e, CV_EFORMAT, "cluster frame: Envelope without a message");
    }
    *out = env;
    return CV_OK;
}

void cluster_env_free(cl_env *env)
{
    if (env) caravan__cluster__v1__envelope__free_unpacked(env, NULL);
}

static cv_status write_all(int fd, const uint8_t *p, size_t n, cv_err *e)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return cv_err_set(e, CV_ECOMM, "cluster send: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return CV_OK;
}

static cv_status read_all(int fd, uint8_t *p, size_t n, cv_err *e)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) return cv_err_set(e, CV_ECOMM, "cluster connection closed by the peer");
        if (r < 0) return cv_err_set(e, CV_ECOMM, "cluster recv: %s", strerror(errno));
        p += r;
        n -= (size_t)r;
    }
    return CV_OK;
}

cv_status cluster_fd_send(int fd, const cl_env *env, cv_err *e)
{
    uint8_t *buf;
    size_t len;
    cv_status st = cluster_frame_encode(env, &buf, &len, e);
    if (st) return st;
    st = write_all(fd, buf, len, e);
    free(buf);
    return st;
}

cv_status cluster_fd_recv(int fd, size_t max_len, cl_env **out, cv_err *e)
{
    uint8_t hdr[CLUSTER_FRAME_HEADER];
    uint32_t n;
    cv_status st = read_all(fd, hdr, sizeof hdr, e);
    if (st) return st;
    if ((st = cluster_frame_length(hdr, max_len, &n, e))) return st;
    uint8_t *body = malloc(n);
    if (!body) return cv_err_set(e, CV_ENOMEM, "cluster frame: out of memory (%u bytes)", n);
    st = read_all(fd, body, n, e);
    if (!st) st = cluster_env_decode(body, n, out, e);
    free(body);
    return st;
}

/* ---- step mapping ---- */

cl_step *cluster_step_to_pb(const step *s)
{
    cl_step *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    caravan__cluster__v1__step__init(p);
    p->id = s->id;
    p->n_seqs = (size_t)s->n_seqs;
    p->seqs = calloc(s->n_seqs ? s->n_seqs : 1, sizeof *p->seqs);
    Caravan__Cluster__V1__StepSeq *ss = calloc(s->n_seqs ? s->n_seqs : 1, sizeof *ss);
    Caravan__Cluster__V1__Sampling *sm = calloc(s->n_seqs ? s->n_seqs : 1, sizeof *sm);
    if (!p->seqs || !ss || !sm) {
        free(p->seqs); free(ss); free(sm); free(p);
        return NULL;
    }
    if (s->n_seqs == 0) {
        free(ss);
        free(sm);
    }
    for (int32_t i = 0; i < s->n_seqs; i++) {
        const step_seq *q = &s->seqs[i];
        caravan__cluster__v1__step_seq__init(&ss[i]);
        caravan__cluster__v1__sampling__init(&sm[i]);
        ss[i].seq_id = q->seq_id;
        ss[i].slot = q->slot;
        ss[i].pos = q->pos;
        ss[i].n_tokens = (size_t)q->n_tokens;
        ss[i].tokens = q->tokens;
        ss[i].want_sample = q->want_sample;
        sm[i].temperature = q->sp.temperature;
        sm[i].top_k = q->sp.top_k;
        sm[i].top_p = q->sp.top_p;
        sm[i].min_p = q->sp.min_p;
        sm[i].repeat_penalty = q->sp.repeat_penalty;
        sm[i].frequency_penalty = q->sp.frequency_penalty;
        sm[i].presence_penalty = q->sp.presence_penalty;
        sm[i].penalty_last_n = q->sp.penalty_last_n;
        sm[i].seed = q->sp.seed;
        sm[i].n_top_logprobs = q->sp.n_top_logprobs;
        ss[i].sampling = &sm[i];
        p->seqs[i] = &ss[i];
    }
    p->n_released_slots = (size_t)s->n_released;
    p->released_slots = s->released_slots;
    return p;
}

void cluster_step_pb_free(cl_step *p)
{
    if (!p) return;
    if (p->n_seqs) {
        free(p->seqs[0]->sampling);
        free(p->seqs[0]);
    }
    free(p->seqs);
    free(p);
}

cv_status cluster_step_from_pb(const cl_step *p, int64_t n_slots, int64_t n_vocab, step *out,
                               cv_err *e)
{
    memset(out, 0, sizeof *out);
    if (p->n_seqs > INT32_MAX || p->n_released_slots > INT32_MAX)
        return cv_err_set(e, CV_EFORMAT, "Step %llu: %zu sequences / %zu released slots",
                          (unsigned long long)p->id, p->n_seqs, p->n_released_slots);
    out->id = p->id;
    out->n_seqs = (int32_t)p->n_seqs;
    out->seqs = calloc(p->n_seqs ? p->n_seqs : 1, sizeof *out->seqs);
    out->n_released = (int32_t)p->n_released_slots;
    out->released_slots = calloc(p->n_released_slots ? p->n_released_slots : 1, sizeof(int32_t));
    if (!out->seqs || !out->released_slots) {
        cluster_step_free(out);
        return cv_err_set(e, CV_ENOMEM, "Step: out of memory");
    }
    for (size_t i = 0; i < p->n_released_slots; i++) {
        int32_t sl = p->released_slots[i];
        if (sl < 0 || (n_slots > 0 && sl >= n_slots)) {
            cluster_step_free(out);
            return cv_err_set(e, CV_EFORMAT, "Step %llu: released slot %d out of 0..%lld",
                              (unsigned long long)p->id, sl, (long long)n_slots - 1);
        }
        out->released_slots[i] = sl;
    }
    for (size_t i = 0; i < p->n_seqs; i++) {
        const Caravan__Cluster__V1__StepSeq *q = p->seqs[i];
        step_seq *d = &out->seqs[i];
        if (q->slot < 0 || (n_slots > 0 && q->slot >= n_slots) || q->pos < 0 || q->n_tokens == 0 ||
            q->n_tokens > INT32_MAX) {
            out->n_seqs = (int32_t)i;
            cluster_step_free(out);
            return cv_err_set(e, CV_EFORMAT, "Step %llu seq %zu: slot %d pos %d n_tokens %zu invalid",
                              (unsigned long long)p->id, i, q->slot, q->pos, q->n_tokens);
        }
        d->seq_id = q->seq_id;
        d->slot = q->slot;
        d->pos = q->pos;
        d->n_tokens = (int32_t)q->n_tokens;
        d->want_sample = q->want_sample;
        d->tokens = malloc(q->n_tokens * sizeof(int32_t));
        if (!d->tokens) {
            out->n_seqs = (int32_t)i;
            cluster_step_free(out);
            return cv_err_set(e, CV_ENOMEM, "Step: out of memory");
        }
        for (size_t t = 0; t < q->n_tokens; t++) {
            if (q->tokens[t] < 0 || (n_vocab > 0 && q->tokens[t] >= n_vocab)) {
                out->n_seqs = (int32_t)i + 1;
                cluster_step_free(out);
                return cv_err_set(e, CV_EFORMAT, "Step seq %zu: token %d out of 0..%lld", i,
                                  q->tokens[t], (long long)n_vocab - 1);
            }
            d->tokens[t] = q->tokens[t];
        }
        sampling_params_default(&d->sp);
        if (q->sampling) {
            const Caravan__Cluster__V1__Sampling *s = q->sampling;
            d->sp.temperature = s->temperature;
            d->sp.top_k = s->top_k;
            d->sp.top_p = s->top_p;
            d->sp.min_p = s->min_p;
            d->sp.repeat_penalty = s->repeat_penalty;
            d->sp.frequency_penalty = s->frequency_penalty;
            d->sp.presence_penalty = s->presence_penalty;
            d->sp.penalty_last_n = s->penalty_last_n;
            d->sp.seed = s->seed;
            d->sp.n_top_logprobs = s->n_top_logprobs < 0 ? 0
                                   : s->n_top_logprobs > SAMPLER_MAX_TOP ? SAMPLER_MAX_TOP
                                                                         : s->n_top_logprobs;
        }
    }
    return CV_OK;
}

void cluster_step_free(step *s)
{
    if (!s) return;
    if (s->seqs)
        for (int32_t i = 0; i < s->n_seqs; i++) free(s->seqs[i].tokens);
    free(s->seqs);
    free(s->released_slots);
    memset(s, 0, sizeof *s);
}

cl_step_result *cluster_result_to_pb(const step_result *r)
{
    cl_step_result *p = calloc(1, sizeof *p);
    int32_t n = r->n_results;
    Caravan__Cluster__V1__SeqResult *rs = calloc(n ? n : 1, sizeof *rs);
    Caravan__Cluster__V1__SeqResult **pp = calloc(n ? n : 1, sizeof *pp);
    if (!p || !rs || !pp) {
        free(p); free(rs); free(pp);
        return NULL;
    }
    caravan__cluster__v1__step_result__init(p);
    if (n == 0) {
        free(rs);
        rs = NULL;
    }
    p->id = r->id;
    p->n_results = (size_t)n;
    p->results = pp;
    for (int32_t i = 0; i < n; i++) {
        const step_seq_result *q = &r->results[i];
        caravan__cluster__v1__seq_result__init(&rs[i]);
        rs[i].seq_id = q->seq_id;
        rs[i].token = q->r.token;
        rs[i].logprob = q->r.logprob;
        int32_t nt = q->r.n_top < 0 ? 0 : q->r.n_top > SAMPLER_MAX_TOP ? SAMPLER_MAX_TOP : q->r.n_top;
        rs[i].n_top_ids = (size_t)nt;
        rs[i].top_ids = (int32_t *)q->r.top_ids;
        rs[i].n_top_logprobs = (size_t)nt;
        rs[i].top_logprobs = (float *)q->r.top_logprobs;
        pp[i] = &rs[i];
    }
    return p;
}

void cluster_result_pb_free(cl_step_result *p)
{
    if (!p) return;
    if (p->results && p->n_results) free(p->results[0]);
    free(p->results);
    free(p);
}

cv_status cluster_result_from_pb(const cl_step_result *p, int32_t max_results, step_result *r,
                                 cv_err *e)
{
    if (p->n_results > (size_t)max_results)
        return cv_err_set(e, CV_EFORMAT, "StepResult %llu: %zu results for a step of %d sequences",
                          (unsigned long long)p->id, p->n_results, max_results);
    r->id = p->id;
    r->n_results = (int32_t)p->n_results;
    for (size_t i = 0; i < p->n_results; i++) {
        const Caravan__Cluster__V1__SeqResult *q = p->results[i];
        step_seq_result *d = &r->results[i];
        memset(d, 0, sizeof *d);
        d->seq_id = q->seq_id;
        d->r.token = q->token;
        d->r.logprob = q->logprob;
        size_t nt = q->n_top_ids < q->n_top_logprobs ? q->n_top_ids : q->n_top_logprobs;
        if (nt > SAMPLER_MAX_TOP) nt = SAMPLER_MAX_TOP;
        d->r.n_top = (int32_t)nt;
        for (size_t t = 0; t < nt; t++) {
            d->r.top_ids[t] = q->top_ids[t];
            d->r.top_logprobs[t] = q->top_logprobs[t];
        }
    }
    return CV_OK;
}
