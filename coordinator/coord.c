/* coord.c - the coordinator core: configuration, listeners, worker groups and
 * the whole request lifecycle in one place (see coord.h):
 *
 *   coord_generate: tokenize -> validate -> sched_submit
 *   pump (deferred event): cancellations, echo chunks, steps to every group
 *   group results -> sched_step_done -> on_token: detokenize, stop strings
 *   (text that could begin a stop string is held back), chunk to the front
 *   end -> on_done: final chunk with finish reason and usage.
 *
 * Everything runs on one event loop. Work that must not run inside someone
 * else's callback (cancellation, freeing, group loss) goes through the pump
 * event, which runs at the top of the loop. */
#define _GNU_SOURCE
#include "coord.h"

#include <event2/event.h>
#include <event2/listener.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../core/gguf.h"
#include "../core/log.h"
#include "../core/model_config.h"
#include "../core/tokenizer.h"
#include "cluster.h"
#include "coord_internal.h"
#include "sched.h"

typedef struct cgroup {
    bool live;
    bool broken;           /* submit failed: waiting for the loss report */
    group_link *link;
    coord_group_desc desc;
    int64_t steps_done;
    double step_ms_sum;
    uint64_t *submit_ms;   /* ring of submit times of in-flight steps */
    int sm_head, sm_len, sm_cap;
    step_result res;       /* results buffer (n_slots + 1 entries) */
} cgroup;

struct coord_req {
    coord *c;
    int64_t id;
    void *ud;
    coord_req_callbacks cb;
    bool cancelled;        /* front end gone or deadline: no more callbacks */
    bool sched_done;       /* the scheduler finished it */
    bool in_defer;         /* on the cancel list */
    bool stopped;          /* a stop string matched */
    bool echo_pending;
    bool ignore_eos;
    detok *dt;
    char *gen;             /* all generated text */
    size_t gen_len, gen_cap, sent;
    char *stop[COORD_MAX_STOP];
    size_t stop_len[COORD_MAX_STOP];
    int n_stop;
    int64_t n_prompt, n_gen;
    int32_t *prompt;       /* kept for echo */
    struct event *deadline;
    coord_req *next_defer;
    coord_req *prev, *next; /* live list */
};

struct coord {
    coord_config cfg;
    char *host, *model_path, *model_name, *api_key, *cluster_token;
    struct event_base *base;
    gguf_file *gguf;
    tokenizer *tok;
    model_config mc;
    int64_t model_n_ctx;
    int32_t eog[64];       /* end-of-generation ids of the vocabulary */
    int32_t n_eog;
    sched *s;
    cgroup *groups;        /* indexed by scheduler group index */
    int n_groups_alloc;
    struct event *pump_ev;
    coord_req *defer_head;
    coord_req *live;
    grpc_server *grpc;
    cluster_server *cluster;
    void *http;
    int ports[3];
    int64_t requests_total, requests_rejected, requests_failed, requests_active;
    int64_t groups_joined, groups_lost;
    bool freeing;
};

/* ---- small helpers ---- */

static char *dup_or_null(const char *s)
{
    return s && s[0] ? strdup(s) : NULL;
}

int coord_code_grpc(coord_code k)
{
    switch (k) {
    case COORD_OK: return 0;
    case COORD_CANCELLED: return 1;
    case COORD_INVALID_ARGUMENT: return 3;
    case COORD_DEADLINE_EXCEEDED: return 4;
    case COORD_RESOURCE_EXHAUSTED: return 8;
    case COORD_INTERNAL: return 13;
    case COORD_UNAVAILABLE: return 14;
    case COORD_UNAUTHENTICATED: return 16;
    }
    return 2;
}

int coord_code_http(coord_code k)
{
    switch (k) {
    case COORD_OK: return 200;
    case COORD_CANCELLED: return 499;
    case COORD_INVALID_ARGUMENT: return 400;
    case COORD_DEADLINE_EXCEEDED: return 504;
    case COORD_RESOURCE_EXHAUSTED: return 429;
    case COORD_INTERNAL: return 500;
    case COORD_UNAVAILABLE: return 503;
    case COORD_UNAUTHENTICATED: return 401;
    }
    return 500;
}

const char *coord_code_name(coord_code k)
{
    switch (k) {
    case COORD_OK: return "OK";
    case COORD_CANCELLED: return "CANCELLED";
    case COORD_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case COORD_DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case COORD_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case COORD_INTERNAL: return "INTERNAL";
    case COORD_UNAVAILABLE: return "UNAVAILABLE";
    case COORD_UNAUTHENTICATED: return "UNAUTHENTICATED";
    }
    return "UNKNOWN";
}

void coord_config_default(coord_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->grpc_port = 50051;
    cfg->http_port = 8080;
    cfg->cluster_port = 50052;
    cfg->max_queue = 256;
    cfg->token_budget = 256;
    cfg->max_frame_bytes = CLUSTER_DEFAULT_MAX_FRAME;
    cfg->heartbeat_ms = 1000;
    cfg->heartbeat_timeout_ms = 5000;
}

void coord_gen_params_default(coord_gen_params *p)
{
    memset(p, 0, sizeof *p);
    p->add_bos = true;
    p->parse_special = false;
    sampling_params_default(&p->sp);
}

struct evconnlistener *coord_listen(struct event_base *base, const char *host, int port,
                                    void (*cb)(struct evconnlistener *, int, struct sockaddr *,
                                               int, void *),
                                    void *ud, int *bound_port, cv_err *e)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0 || !ai) {
        cv_err_set(e, CV_EINVAL, "cannot resolve listen address '%s': %s", host, gai_strerror(rc));
        return NULL;
    }
    struct evconnlistener *lis =
        evconnlistener_new_bind(base, (evconnlistener_cb)cb, ud,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128, ai->ai_addr,
                                (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (!lis) {
        cv_err_set(e, CV_EIO, "cannot listen on %s:%d: %s", host, port,
                   evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    *bound_port = port;
    if (getsockname(evconnlistener_get_fd(lis), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6) *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return lis;
}

/* ---- requests: text, stop strings ---- */

static bool gen_append(coord_req *r, const char *s, size_t n)
{
    if (r->gen_len + n + 1 > r->gen_cap) {
        size_t nc = r->gen_cap ? r->gen_cap * 2 : 256;
        while (nc < r->gen_len + n + 1) nc *= 2;
        char *g = realloc(r->gen, nc);
        if (!g) return false;
        r->gen = g;
        r->gen_cap = nc;
    }
    memcpy(r->gen + r->gen_len, s, n);
    r->gen_len += n;
    r->gen[r->gen_len] = 0;
    return true;
}

/* How much of the unsent text can go out now. Returns the end of sendable
 * text; *stop_at set to the stop-string start when one matched (else -1). */
static size_t text_ready(coord_req *r, long *stop_at)
{
    *stop_at = -1;
    if (r->n_stop == 0) return r->gen_len;
    /* A stop string may straddle the sent boundary: search from there back. */
    size_t from = 0;
    size_t maxl = 0;
    for (int i = 0; i < r->n_stop; i++) maxl = r->stop_len[i] > maxl ? r->stop_len[i] : maxl;
    from = r->sent > maxl ? r->sent - maxl : 0;
    long best = -1;
    for (int i = 0; i < r->n_stop; i++) {
        const char *hit = r->gen_len >= from ? memmem(r->gen + from, r->gen_len - from, r->stop[i], r->stop_len[i]) : NULL;
        if (hit && (best < 0 || hit - r->gen < best)) best = hit - r->gen;
    }
    if (best >= 0) {
        *stop_at = best;
        return (size_t)best < r->sent ? r->sent : (size_t)best;
    }
    /* Hold back the longest suffix that is a proper prefix of a stop string. */
    size_t hold = 0;
    for (int i = 0; i < r->n_stop; i++) {
        size_t L = r->stop_len[i];
        for (size_t k = L - 1; k > hold && k > 0; k--) {
            if (k > r->gen_len) continue;
            if (!memcmp(r->gen + r->gen_len - k, r->stop[i], k)) {
                hold = k;
                break;
            }
        }
    }
    size_t end = r->gen_len - hold;
    return end < r->sent ? r->sent : end;
}

static void emit(coord_req *r, size_t end, int32_t n_tok, const int32_t *tok,
                 const sample_result *res)
{
    if (r->cancelled || !r->cb.on_chunk) return;
    if (end < r->sent) end = r->sent;
    if (end == r->sent && n_tok == 0) return;
    coord_chunk ch = {.text = r->gen + r->sent, .text_len = end - r->sent, .n_tokens = n_tok,
                      .tokens = tok, .results = res};
    r->sent = end;
    r->cb.on_chunk(r->ud, &ch);
}

static void req_free(coord_req *r)
{
    coord *c = r->c;
    if (r->prev) r->prev->next = r->next;
    else if (c->live == r) c->live = r->next;
    if (r->next) r->next->prev = r->prev;
    if (r->deadline) event_free(r->deadline);
    if (r->dt) detok_free(r->dt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->gen);
    free(r->prompt);
    free(r);
}

static void pump_later(coord *c)
{
    if (c->pump_ev) event_active(c->pump_ev, 0, 0);
}

static bool on_token_cb(void *ud, int64_t seq_id, const sample_result *res)
{
    coord_req *r = ud;
    r->n_gen++;
    if (r->cancelled) return false;
    int32_t tok = res->token;
    if (!r->ignore_eos && tokenizer_is_eog(r->c->tok, tok)) {
        emit(r, r->sent, 1, &tok, res); /* the EOG token itself has no text */
        return true;                    /* the scheduler stops on its stop tokens */
    }
    size_t n = 0;
    const char *piece = detok_feed(r->dt, tok, &n);
    if (n && !gen_append(r, piece, n)) return false;
    long stop_at;
    size_t end = text_ready(r, &stop_at);
    emit(r, end, 1, &tok, res);
    if (stop_at >= 0) {
        r->stopped = true;
        return false;
    }
    return true;
}

static void on_done_cb(void *ud, int64_t seq_id, sched_finish why, const char *msg)
{
    coord_req *r = ud;
    coord *c = r->c;
    r->sched_done = true;
    c->requests_active--;
    if (r->deadline) event_del(r->deadline);
    if (!r->cancelled) {
        if (!r->stopped && why != SCHED_FINISH_ERROR) {
            size_t n = 0;
            const char *tail = detok_flush(r->dt, &n);
            if (n) gen_append(r, tail, n);
            long stop_at;
            size_t end = text_ready(r, &stop_at);
            if (stop_at < 0) end = r->gen_len; /* held-back text completes no stop string */
            emit(r, end, 0, NULL, NULL);
        }
        coord_final f = {.prompt_tokens = r->n_prompt, .completion_tokens = r->n_gen, .message = ""};
        switch (why) {
        case SCHED_FINISH_LENGTH:
            f.finish = COORD_FINISH_LENGTH;
            f.finish_reason = "length";
            break;
        case SCHED_FINISH_ERROR:
        case SCHED_FINISH_CANCELLED:
        case SCHED_FINISH_NONE:
            f.finish = COORD_FINISH_ERROR;
            f.finish_reason = "error";
            f.code = why == SCHED_FINISH_CANCELLED ? COORD_CANCELLED
                     : sched_n_groups(c->s) == 0   ? COORD_UNAVAILABLE
                                                   : COORD_INTERNAL;
            f.message = msg && msg[0] ? msg : "failed";
            c->requests_failed++;
            break;
        default:
            f.finish = COORD_FINISH_STOP;
            f.finish_reason = "stop";
        }
        r->cancelled = true; /* no callbacks after on_done */
        if (r->cb.on_done) r->cb.on_done(r->ud, &f);
    }
    if (!r->in_defer) req_free(r);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    coord_req *r = arg;
    if (r->cancelled || r->sched_done) return;
    coord_final f = {.finish = COORD_FINISH_ERROR, .finish_reason = "error",
                     .code = COORD_DEADLINE_EXCEEDED, .message = "deadline exceeded",
                     .prompt_tokens = r->n_prompt, .completion_tokens = r->n_gen};
    r->c->requests_failed++;
    coord_req_callbacks cb = r->cb;
    coord_req_cancel(r);
    if (cb.on_done) cb.on_done(r->ud, &f);
}

void coord_req_cancel(coord_req *r)
{
    if (!r || r->cancelled || r->in_defer) {
        if (r) r->cancelled = true;
        return;
    }
    r->cancelled = true;
    r->in_defer = true;
    r->next_defer = r->c->defer_head;
    r->c->defer_head = r;
    pump_later(r->c);
}

int64_t coord_req_prompt_tokens(const coord_req *r) { return r->n_prompt; }
int64_t coord_req_id(const coord_req *r) { return r->id; }

/* ---- the pump ---- */

static void group_submit_all(coord *c, int g)
{
    cgroup *cg = &c->groups[g];
    if (!cg->live || cg->broken) return;
    step st;
    while (sched_next_step(c->s, g, &st)) {
        cv_err e;
        if (cg->link->ops->submit(cg->link, &st, &e) != CV_OK) {
            log_warn("group %d: submit failed: %s", g, e.msg);
            cg->broken = true;
            return;
        }
        if (cg->sm_len == cg->sm_cap) {
            int nc = cg->sm_cap ? cg->sm_cap * 2 : 8;
            uint64_t *n = malloc(nc * sizeof *n);
            if (n) {
                for (int i = 0; i < cg->sm_len; i++) n[i] = cg->submit_ms[(cg->sm_head + i) % cg->sm_cap];
                free(cg->submit_ms);
                cg->submit_ms = n;
                cg->sm_head = 0;
                cg->sm_cap = nc;
            }
        }
        if (cg->sm_len < cg->sm_cap) {
            cg->submit_ms[(cg->sm_head + cg->sm_len) % cg->sm_cap] = cluster_now_ms();
            cg->sm_len++;
        }
    }
}

static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
    coord *c = arg;
    /* 1. cancellations, at a safe point */
    while (c->defer_head) {
        coord_req *r = c->defer_head;
        c->defer_head = r->next_defer;
        r->in_defer = false;
        if (r->sched_done) {
            req_free(r);
            continue;
        }
        sched_cancel(c->s, r->id); /* may call on_done, which frees r */
    }
    /* 2. echo chunks of new requests (before any of their tokens) */
    for (coord_req *r = c->live; r; r = r->next) {
        if (!r->echo_pending) continue;
        r->echo_pending = false;
        if (r->cancelled || !r->cb.on_chunk) continue;
        char *text = NULL;
        size_t tl = 0;
        cv_err e;
        if (tokenizer_decode(c->tok, r->prompt, r->n_prompt, true, false, &text, &tl, &e)) {
            text = NULL;
            tl = 0;
        }
        coord_chunk ch = {.text = text ? text : "", .text_len = tl, .n_tokens = (int32_t)r->n_prompt,
                          .tokens = r->prompt, .echo = true};
        r->cb.on_chunk(r->ud, &ch);
        free(text);
    }
    /* 3. steps to every group, least loaded first: the scheduler admits
     * waiting requests into the group it builds a step for, so this order
     * spreads new requests over the groups (data parallel) */
    int ng = c->n_groups_alloc;
    int order[256];
    int no = 0;
    for (int g = 0; g < ng && no < 256; g++)
        if (c->groups[g].live) order[no++] = g;
    for (int a = 1; a < no; a++)
        for (int b = a; b > 0; b--) {
            cgroup *x = &c->groups[order[b - 1]], *y = &c->groups[order[b]];
            double lx = (double)sched_group_slots_used(c->s, order[b - 1]) / (double)x->link->n_slots;
            double ly = (double)sched_group_slots_used(c->s, order[b]) / (double)y->link->n_slots;
            if (lx <= ly) break;
            int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    for (int i = 0; i < no; i++) group_submit_all(c, order[i]);
    for (int g = 0; g < ng; g++) /* beyond the first 256 */
        if (c->groups[g].live && no == 256) group_submit_all(c, g);
    /* 4. nothing can run anywhere */
    if (sched_n_groups(c->s) == 0) {
        sched_stats st;
        sched_get_stats(c->s, &st);
        if (st.waiting > 0)
            sched_fail_waiting(c->s, "no worker group is connected (all groups were lost); "
                                     "start one with `caravan worker --join HOST:PORT`");
    }
}

/* ---- groups ---- */

int coord_group_add(coord *c, group_link *l, const coord_group_desc *d)
{
    int g = sched_add_group(c->s, l->n_slots, l->n_ctx, l->max_inflight);
    if (g < 0) return -1;
    if (g >= c->n_groups_alloc) {
        int nn = g + 8;
        cgroup *ng = realloc(c->groups, nn * sizeof *ng);
        if (!ng) return -1; /* the link stays with the caller */
        memset(ng + c->n_groups_alloc, 0, (nn - c->n_groups_alloc) * sizeof *ng);
        c->groups = ng;
        c->n_groups_alloc = nn;
    }
    cgroup *cg = &c->groups[g];
    memset(cg, 0, sizeof *cg);
    cg->live = true;
    cg->link = l;
    cg->desc = *d;
    cg->res.results = calloc((size_t)l->n_slots + 1, sizeof *cg->res.results);
    c->groups_joined++;
    log_info("group %d joined: %s, %lld slots, n_ctx %lld, %d in flight", g, d->name,
             (long long)l->n_slots, (long long)l->n_ctx, l->max_inflight);
    pump_later(c);
    return g;
}

void coord_group_results(coord *c, int g)
{
    if (g < 0 || g >= c->n_groups_alloc) return;
    cgroup *cg = &c->groups[g];
    while (cg->live) {
        bool ready = false;
        cv_err e;
        cv_err_clear(&e);
        cv_status st = cg->link->ops->poll(cg->link, &cg->res, 0, &ready, &e);
        if (!ready) break;
        if (cg->sm_len > 0) {
            cg->step_ms_sum += (double)(cluster_now_ms() - cg->submit_ms[cg->sm_head]);
            cg->sm_head = (cg->sm_head + 1) % cg->sm_cap;
            cg->sm_len--;
        }
        cg->steps_done++;
        if (st == CV_OK)
            sched_step_done(c->s, g, &cg->res);
        else
            sched_step_failed(c->s, g, e.msg);
    }
    /* the next step for this group goes out at once (latency per token);
     * cancellations and the other groups follow in the pump */
    group_submit_all(c, g);
    pump_later(c);
}

static void group_drop(coord *c, int g)
{
    cgroup *cg = &c->groups[g];
    cg->live = false;
    sched_remove_group(c->s, g);
    if (cg->link) cg->link->ops->destroy(cg->link);
    cg->link = NULL;
    free(cg->res.results);
    cg->res.results = NULL;
    free(cg->submit_ms);
    cg->submit_ms = NULL;
    cg->sm_len = cg->sm_cap = cg->sm_head = 0;
}

void coord_group_lost(coord *c, int g, const char *why)
{
    if (g < 0 || g >= c->n_groups_alloc || !c->groups[g].live) return;
    log_warn("group %d (%s) lost: %s; its sequences are replayed elsewhere", g,
             c->groups[g].desc.name, why ? why : "");
    c->groups_lost++;
    group_drop(c, g);
    pump_later(c);
}

/* ---- accessors ---- */

size_t coord_max_frame(const coord *c) { return (size_t)c->cfg.max_frame_bytes; }
const char *coord_cluster_token(const coord *c) { return c->cluster_token; }
int coord_heartbeat_ms(const coord *c) { return c->cfg.heartbeat_ms; }
int coord_heartbeat_timeout_ms(const coord *c) { return c->cfg.heartbeat_timeout_ms; }
const char *coord_model_path(const coord *c) { return c->model_path; }
struct event_base *coord_event_base(coord *c) { return c->base; }
const char *coord_model_name(const coord *c) { return c->model_name; }
int64_t coord_n_vocab(const coord *c) { return tokenizer_n_vocab(c->tok); }
const struct gguf_file *coord_gguf(const coord *c) { return c->gguf; }
const struct tokenizer *coord_tokenizer(const coord *c) { return c->tok; }

int coord_port(const coord *c, coord_port_kind k)
{
    return k >= 0 && k < 3 ? c->ports[k] : -1;
}

int64_t coord_n_ctx(const coord *c)
{
    int64_t n = 0;
    for (int g = 0; g < c->n_groups_alloc; g++)
        if (c->groups[g].live && (n == 0 || c->groups[g].link->n_ctx < n)) n = c->groups[g].link->n_ctx;
    return n > 0 ? n : c->model_n_ctx;
}

bool coord_check_api_key(const coord *c, const char *authorization)
{
    if (!c->api_key) return true;
    if (!authorization) return false;
    const char *want = c->api_key;
    if (strncmp(authorization, "Bearer ", 7) != 0) return false;
    const char *got = authorization + 7;
    size_t lg = strlen(got), lw = strlen(want);
    unsigned char d = lg != lw;
    for (size_t i = 0; i < lw; i++) d |= (unsigned char)want[i] ^ (unsigned char)(i < lg ? got[i] : 0);
    return d == 0;
}

cv_status coord_tokenize(coord *c, const char *text, size_t len, bool add_bos, int32_t **ids,
                         int64_t *n_ids, cv_err *e)
{
    return tokenizer_encode_alloc(c->tok, text, len, add_bos, true, ids, n_ids, e);
}

char *coord_token_text(coord *c, int32_t id)
{
    char *out = NULL;
    size_t n = 0;
    if (tokenizer_decode(c->tok, &id, 1, false, false, &out, &n, NULL) != CV_OK) return strdup("");
    return out;
}

/* ---- generate ---- */

static coord_code reject(coord *c, coord_code k, char *msg, size_t msg_len, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static coord_code reject(coord *c, coord_code k, char *msg, size_t msg_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (msg && msg_len) vsnprintf(msg, msg_len, fmt, ap);
    va_end(ap);
    c->requests_rejected++;
    return k;
}

#define BAD(...) reject(c, COORD_INVALID_ARGUMENT, msg, msg_len, __VA_ARGS__)

coord_code coord_generate(coord *c, const coord_gen_params *p, const coord_req_callbacks *cb,
                          void *ud, coord_req **out, char *msg, size_t msg_len)
{
    *out = NULL;
    const sampling_params *sp = &p->sp;
    if (!(sp->temperature >= 0 && sp->temperature <= 100))
        return BAD("temperature must be in [0, 100] (got %g)", sp->temperature);
    if (sp->top_k < 0 || sp->top_k > tokenizer_n_vocab(c->tok))
        return BAD("top_k must be in [0, %lld] (got %d)", (long long)tokenizer_n_vocab(c->tok), sp->top_k);
    if (!(sp->top_p >= 0 && sp->top_p <= 1)) return BAD("top_p must be in [0, 1] (got %g)", sp->top_p);
    if (!(sp->min_p >= 0 && sp->min_p <= 1)) return BAD("min_p must be in [0, 1] (got %g)", sp->min_p);
    if (!(sp->repeat_penalty >= 0 && sp->repeat_penalty <= 10))
        return BAD("repeat_penalty must be in [0, 10] (got %g)", sp->repeat_penalty);
    if (!(sp->frequency_penalty >= -2 && sp->frequency_penalty <= 2))
        return BAD("frequency_penalty must be in [-2, 2] (got %g)", sp->frequency_penalty);
    if (!(sp->presence_penalty >= -2 && sp->presence_penalty <= 2))
        return BAD("presence_penalty must be in [-2, 2] (got %g)", sp->presence_penalty);
    if (sp->penalty_last_n < 0 || sp->penalty_last_n > 1 << 20)
        return BAD("penalty_last_n must be in [0, %d] (got %d)", 1 << 20, sp->penalty_last_n);
    if (sp->n_top_logprobs < 0 || sp->n_top_logprobs > SAMPLER_MAX_TOP)
        return BAD("logprobs must be in [0, %d] (got %d)", SAMPLER_MAX_TOP, sp->n_top_logprobs);
    if (p->max_tokens < 0 || p->max_tokens > (1 << 24))
        return BAD("max_tokens must be in [0, %d] (got %lld)", 1 << 24, (long long)p->max_tokens);
    if (p->timeout_ms < 0) return BAD("timeout must be >= 0 (got %lld ms)", (long long)p->timeout_ms);
    if (p->n_stop < 0 || p->n_stop > COORD_MAX_STOP)
        return BAD("at most %d stop strings (got %d)", COORD_MAX_STOP, p->n_stop);
    for (int i = 0; i < p->n_stop; i++) {
        size_t L = p->stop[i] ? strlen(p->stop[i]) : 0;
        if (L == 0 || L > COORD_MAX_STOP_LEN)
            return BAD("stop string %d must be 1..%d bytes (got %zu)", i, COORD_MAX_STOP_LEN, L);
    }
    if (p->prompt && p->prompt_tokens && p->n_prompt_tokens > 0)
        return BAD("give either prompt text or prompt token ids, not both");
    if (p->n_prompt_tokens < 0) return BAD("n_prompt_tokens < 0");

    int32_t *ids = NULL;
    int64_t n_ids = 0;
    bool from_text = p->prompt_tokens == NULL || p->n_prompt_tokens == 0;
    if (!from_text) {
        int64_t nv = tokenizer_n_vocab(c->tok);
        for (int64_t i = 0; i < p->n_prompt_tokens; i++)
            if (p->prompt_tokens[i] < 0 || p->prompt_tokens[i] >= nv)
                return BAD("prompt token %lld is id %d, outside the vocabulary of %lld", (long long)i,
                           p->prompt_tokens[i], (long long)nv);
        ids = malloc((size_t)p->n_prompt_tokens * sizeof *ids);
        if (!ids) return reject(c, COORD_INTERNAL, msg, msg_len, "out of memory");
        memcpy(ids, p->prompt_tokens, (size_t)p->n_prompt_tokens * sizeof *ids);
        n_ids = p->n_prompt_tokens;
    } else {
        cv_err e;
        const char *text = p->prompt ? p->prompt : "";
        size_t len = p->prompt ? p->prompt_len : 0;
        if (tokenizer_encode_alloc(c->tok, text, len, p->add_bos, p->parse_special, &ids, &n_ids, &e))
            return BAD("cannot tokenize the prompt: %s", e.msg);
        if (n_ids == 0) {
            /* an empty prompt means BOS alone, as in `caravan run` */
            int32_t bos = tokenizer_bos(c->tok);
            free(ids);
            if (bos < 0) return BAD("empty prompt and the vocabulary has no BOS token");
            ids = malloc(sizeof *ids);
            if (!ids) return reject(c, COORD_INTERNAL, msg, msg_len, "out of memory");
            ids[0] = bos;
            n_ids = 1;
        }
    }
    coord_code k = COORD_OK;
    if (sched_n_groups(c->s) == 0) {
        k = reject(c, COORD_UNAVAILABLE, msg, msg_len,
                   "no worker group is connected; start one with `caravan worker --join HOST:PORT`");
        free(ids);
        return k;
    }
    int64_t n_ctx = coord_n_ctx(c);
    if (n_ids >= n_ctx) {
        k = BAD("prompt of %lld tokens does not fit the context of %lld tokens (at least one "
                "position must be left to generate)",
                (long long)n_ids, (long long)n_ctx);
        free(ids);
        return k;
    }
    int64_t max_tokens = p->max_tokens > 0 ? p->max_tokens : c->cfg.max_tokens_default;
    if (max_tokens <= 0 || max_tokens > n_ctx - n_ids) max_tokens = n_ctx - n_ids;

    coord_req *r = calloc(1, sizeof *r);
    if (!r) {
        free(ids);
        return reject(c, COORD_INTERNAL, msg, msg_len, "out of memory");
    }
    r->c = c;
    r->ud = ud;
    r->cb = *cb;
    r->ignore_eos = p->ignore_eos;
    r->n_prompt = n_ids;
    r->prompt = ids;
    r->echo_pending = p->echo;
    r->dt = detok_new(c->tok, n_ids == 1 && ids[0] == tokenizer_bos(c->tok), false);
    for (int i = 0; i < p->n_stop; i++) {
        r->stop[i] = strdup(p->stop[i]);
        r->stop_len[i] = strlen(p->stop[i]);
        r->n_stop++;
    }
    /* end-of-generation ids the scheduler stops on */
    sched_request rq = {.prompt = ids, .n_prompt = n_ids, .max_tokens = max_tokens, .sp = p->sp,
                        .stop_tokens = c->eog, .n_stop_tokens = p->ignore_eos ? 0 : c->n_eog,
                        .ud = r};
    cv_err e;
    cv_status st = sched_submit(c->s, &rq, &r->id, &e);
    if (st != CV_OK || !r->dt) {
        k = st == CV_ERANGE ? COORD_RESOURCE_EXHAUSTED : st == CV_EINVAL ? COORD_INVALID_ARGUMENT
                                                                        : COORD_INTERNAL;
        reject(c, k, msg, msg_len, "%s", st ? e.msg : "out of memory");
        if (r->dt) detok_free(r->dt);
        for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
        free(r->prompt);
        free(r);
        return k;
    }
    r->next = c->live;
    if (c->live) c->live->prev = r;
    c->live = r;
    if (p->timeout_ms > 0) {
        r->deadline = evtimer_new(c->base, deadline_cb, r);
        struct timeval tv = {p->timeout_ms / 1000, (p->timeout_ms % 1000) * 1000};
        if (r->deadline) evtimer_add(r->deadline, &tv);
    }
    c->requests_total++;
    c->requests_active++;
    *out = r;
    pump_later(c);
    return COORD_OK;
}

/* ---- stats ---- */

void coord_get_stats(coord *c, coord_stats *st)
{
    memset(st, 0, sizeof *st);
    sched_stats ss;
    sched_get_stats(c->s, &ss);
    st->requests_total = c->requests_total;
    st->requests_rejected = c->requests_rejected;
    st->requests_failed = c->requests_failed;
    st->requests_active = c->requests_active;
    st->queue_depth = ss.waiting;
    st->running = ss.running;
    st->prompt_tokens = ss.prompt_tokens;
    st->tokens_generated = ss.tokens_generated;
    st->groups_joined = c->groups_joined;
    st->groups_lost = c->groups_lost;
    st->max_queue = c->cfg.max_queue;
    for (int g = 0; g < c->n_groups_alloc && st->n_groups < COORD_MAX_GROUPS_REPORTED; g++) {
        cgroup *cg = &c->groups[g];
        if (!cg->live) continue;
        coord_group_info *gi = &st->groups[st->n_groups++];
        gi->id = g;
        snprintf(gi->name, sizeof gi->name, "%s", cg->desc.name);
        gi->ranks = cg->desc.ranks;
        gi->tp = cg->desc.tp;
        gi->pp = cg->desc.pp;
        snprintf(gi->plan, sizeof gi->plan, "%s", cg->desc.plan);
        gi->health = cg->broken ? "lost" : "ready";
        gi->n_slots = cg->link->n_slots;
        gi->n_ctx = cg->link->n_ctx;
        gi->slots_used = sched_group_slots_used(c->s, g);
        gi->steps_done = cg->steps_done;
        gi->inflight_steps = cg->sm_len;
        gi->step_ms_sum = cg->step_ms_sum;
    }
}

/* ---- lifetime ---- */

cv_status coord_create(const coord_config *cfg, struct event_base *base, coord **out, cv_err *e)
{
    *out = NULL;
    coord *c = calloc(1, sizeof *c);
    if (!c) return cv_err_set(e, CV_ENOMEM, "coordinator: out of memory");
    c->cfg = *cfg;
    c->base = base;
    c->ports[0] = c->ports[1] = c->ports[2] = -1;
    c->host = strdup(cfg->host && cfg->host[0] ? cfg->host : "127.0.0.1");
    c->model_path = dup_or_null(cfg->model_path);
    c->api_key = dup_or_null(cfg->api_key);
    c->cluster_token = dup_or_null(cfg->cluster_token);
    if (c->cfg.max_queue <= 0) c->cfg.max_queue = 256;
    if (c->cfg.token_budget <= 0) c->cfg.token_budget = 256;
    if (c->cfg.max_frame_bytes <= 0) c->cfg.max_frame_bytes = CLUSTER_DEFAULT_MAX_FRAME;
    if (c->cfg.heartbeat_ms <= 0) c->cfg.heartbeat_ms = 1000;
    if (c->cfg.heartbeat_timeout_ms <= 0) c->cfg.heartbeat_timeout_ms = 5 * c->cfg.heartbeat_ms;
    cv_status st;
    if (!c->model_path) {
        st = cv_err_set(e, CV_EINVAL, "coordinator: no model (-m MODEL.gguf)");
        goto err;
    }
    if ((st = gguf_open(c->model_path, &c->gguf, e))) goto err;
    if ((st = model_config_load(c->gguf, &c->mc, e))) goto err;
    if ((st = tokenizer_load(c->gguf, &c->tok, e))) goto err;
    {
        int64_t nv = tokenizer_n_vocab(c->tok);
        for (int64_t t = 0; t < nv && c->n_eog < 64; t++)
            if (tokenizer_is_eog(c->tok, (int32_t)t)) c->eog[c->n_eog++] = (int32_t)t;
    }
    c->model_n_ctx = c->mc.n_ctx_train > 0 && c->mc.n_ctx_train < 4096 ? c->mc.n_ctx_train : 4096;
    if (cfg->model_name && cfg->model_name[0]) {
        c->model_name = strdup(cfg->model_name);
    } else {
        const char *b = strrchr(c->model_path, '/');
        c->model_name = strdup(b ? b + 1 : c->model_path);
    }
    sched_config sc = {.token_budget = c->cfg.token_budget, .max_queue = c->cfg.max_queue,
                       .cb = {.on_token = on_token_cb, .on_done = on_done_cb}};
    c->s = sched_create(&sc);
    c->pump_ev = event_new(base, -1, 0, pump_cb, c);
    if (!c->s || !c->pump_ev || !c->model_name || !c->host) {
        st = cv_err_set(e, CV_ENOMEM, "coordinator: out of memory");
        goto err;
    }
    if (cfg->grpc_port >= 0 &&
        (st = grpc_server_start(c, base, c->host, cfg->grpc_port, &c->grpc, &c->ports[0], e)))
        goto err;
    if (cfg->cluster_port >= 0 &&
        (st = cluster_server_start(c, base, c->host, cfg->cluster_port, &c->cluster, &c->ports[2], e)))
        goto err;
    if (cfg->http_port >= 0 && coord_http_start &&
        (st = coord_http_start(c, base, c->host, cfg->http_port, &c->http, &c->ports[1], e)))
        goto err;
    *out = c;
    return CV_OK;
err:
    coord_free(c);
    return st;
}

void coord_free(coord *c)
{
    if (!c) return;
    c->freeing = true;
    /* front ends first: they cancel their requests */
    if (c->http && coord_http_stop) coord_http_stop(c->http);
    if (c->grpc) grpc_server_free(c->grpc);
    for (coord_req *r = c->live; r; r = r->next) r->cancelled = true;
    for (int g = 0; g < c->n_groups_alloc; g++)
        if (c->groups[g].live) group_drop(c, g);
    if (c->cluster) cluster_server_free(c->cluster);
    if (c->s) {
        sched_fail_waiting(c->s, "coordinator shutting down");
    }
    while (c->defer_head) {
        coord_req *r = c->defer_head;
        c->defer_head = r->next_defer;
        r->in_defer = false;
        if (r->sched_done) req_free(r);
    }
    if (c->s) sched_free(c->s);
    while (c->live) req_free(c->live);
    if (c->pump_ev) event_free(c->pump_ev);
    free(c->groups);
    if (c->tok) tokenizer_free(c->tok);
    if (c->gguf) gguf_close(c->gguf);
    free(c->host);
    free(c->model_path);
    free(c->model_name);
    free(c->api_key);
    free(c->cluster_token);
    free(c);
}
