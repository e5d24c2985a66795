/* grpc.c - the gRPC front end: HTTP/2 cleartext (h2c, prior knowledge) with
 * nghttp2's server session over libevent bufferevents, serving
 * caravan.v1.Caravan (proto/caravan.proto): Generate (server streaming),
 * Tokenize and Status (unary).
 *
 * Message framing on a stream: | compressed u8 (1) | length u32 BE (4) | protobuf |.
 * Responses: HEADERS (:status 200, content-type application/grpc), DATA with
 * framed messages, then trailers grpc-status / grpc-message. An error before
 * any message is a Trailers-Only response. Data providers are deferred until
 * tokens arrive, so HTTP/2 flow control is respected. A reset or closed
 * stream cancels its request at once (coord_req_cancel); connections are
 * freed from a deferred event, never inside nghttp2's or the coordinator's
 * callbacks. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../core/log.h"
#include "caravan.pb-c.h"
#include "coord_internal.h"

#define GRPC_MAX_MESSAGE (4u << 20)
#define GRPC_MAX_CONNS 4096 /* connections beyond this are closed at once */
#define CARAVAN_VERSION "0.1.0"

typedef struct gconn gconn;
typedef struct gstream gstream;

struct grpc_server {
    coord *c;
    struct event_base *base;
    struct evconnlistener *lis;
    gconn *conns;
    int n_conns;
};

struct gstream {
    gconn *conn;
    int32_t id;
    char path[128];
    char auth[512];
    bool has_auth;
    char content_type[64];
    char timeout[32];
    uint8_t *body;
    size_t body_len, body_cap;
    bool too_big;
    bool handled;
    bool responded;        /* response HEADERS submitted */
    struct evbuffer *out;  /* framed messages not yet taken by nghttp2 */
    bool finished;         /* trailers due after out drains */
    bool trailers_sent;
    int status;
    char message[512];
    coord_req *req;
    gstream *next, *prev;
};

struct gconn {
    grpc_server *srv;
    struct bufferevent *bev;
    nghttp2_session *ng;
    gstream *streams;
    bool closing;
    struct event *close_ev;
    struct event *flush_ev;
    gconn *next, *prev;
};

/* ---- helpers ---- */

static void conn_close_later(gconn *c)
{
    c->closing = true;
    event_active(c->close_ev, 0, 0);
}

static void conn_flush(gconn *c)
{
    if (c->closing) return;
    if (nghttp2_session_send(c->ng) != 0) {
        conn_close_later(c);
        return;
    }
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_close_later(c);
}

static void flush_later(gconn *c)
{
    if (!c->closing) event_active(c->flush_ev, 0, 0);
}

static void percent_encode(const char *in, char *out, size_t cap)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < cap; p++) {
        if (*p >= 0x20 && *p <= 0x7E && *p != '%') {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hx[*p >> 4];
            out[o++] = hx[*p & 15];
        }
    }
    out[o] = 0;
}

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

static void stream_append_msg(gstream *s, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n + 5);
    if (!buf) return;
    buf[0] = 0;
    buf[1] = (uint8_t)(n >> 24);
    buf[2] = (uint8_t)(n >> 16);
    buf[3] = (uint8_t)(n >> 8);
    buf[4] = (uint8_t)n;
    protobuf_c_message_pack(m, buf + 5);
    evbuffer_add(s->out, buf, n + 5);
    free(buf);
}

static ssize_t data_read_cb(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    gstream *s = source->ptr;
    int n = evbuffer_remove(s->out, buf, length);
    if (n > 0) return n;
    if (!s->finished) return NGHTTP2_ERR_DEFERRED;
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    if (!s->trailers_sent) {
        s->trailers_sent = true;
        char code[16], msg[1024];
        snprintf(code, sizeof code, "%d", s->status);
        percent_encode(s->message, msg, sizeof msg);
        nghttp2_nv tr[2] = {NV("grpc-status", code), NV("grpc-message", msg)};
        nghttp2_submit_trailer(ng, stream_id, tr, msg[0] ? 2 : 1);
    }
    return 0;
}

/* Headers for a streamed/unary response whose messages follow in s->out. */
static void stream_respond(gstream *s)
{
    if (s->responded) return;
    s->responded = true;
    nghttp2_nv hdr[2] = {NV(":status", "200"), NV("content-type", "application/grpc")};
    nghttp2_data_provider dp = {.source = {.ptr = s}, .read_callback = data_read_cb};
    nghttp2_submit_response(s->conn->ng, s->id, hdr, 2, &dp);
}

/* Finish a stream with a status: Trailers-Only when nothing was sent yet. */
static void stream_finish(gstream *s, coord_code k, const char *msg)
{
    if (s->finished) return;
    s->finished = true;
    s->status = coord_code_grpc(k);
    snprintf(s->message, sizeof s->message, "%s", msg ? msg : "");
    if (!s->responded) {
        s->responded = true;
        s->trailers_sent = true;
        char code[16], m[1024];
        snprintf(code, sizeof code, "%d", s->status);
        percent_encode(s->message, m, sizeof m);
        nghttp2_nv hdr[4] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                             NV("grpc-status", code), NV("grpc-message", m)};
        nghttp2_submit_response(s->conn->ng, s->id, hdr, m[0] ? 4 : 3, NULL);
    } else {
        nghttp2_session_resume_data(s->conn->ng, s->id);
    }
}

static void stream_free(gstream *s)
{
    gconn *c = s->conn;
    if (s->req) {
        coord_req_cancel(s->req);
        s->req = NULL;
    }
    if (s->prev) s->prev->next = s->next;
    else c->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    if (s->out) evbuffer_free(s->out);
    free(s->body);
    free(s);
}

/* ---- Generate ---- */

static void gen_on_chunk(void *ud, const coord_chunk *ch)
{
    gstream *s = ud;
    coord *c = s->conn->srv->c;
    Caravan__V1__GenerateResponse m = CARAVAN__V1__GENERATE_RESPONSE__INIT;
    char *text = malloc(ch->text_len + 1);
    if (!text) return;
    memcpy(text, ch->text, ch->text_len);
    text[ch->text_len] = 0;
    m.text = text;
    m.n_token_ids = (size_t)ch->n_tokens;
    m.token_ids = (int32_t *)ch->tokens;
    m.echo = ch->echo;
    Caravan__V1__TokenInfo *ti = NULL, **tip = NULL;
    Caravan__V1__TokenLogprob *tl = NULL, **tlp = NULL;
    char **tl_text = NULL;
    int n_top_total = 0;
    if (ch->results && ch->n_tokens > 0) {
        ti = calloc(ch->n_tokens, sizeof *ti);
        tip = calloc(ch->n_tokens, sizeof *tip);
        for (int i = 0; i < ch->n_tokens; i++) n_top_total += ch->results[i].n_top;
        tl = calloc(n_top_total + 1, sizeof *tl);
        tlp = calloc(n_top_total + 1, sizeof *tlp);
        tl_text = calloc(n_top_total + 1, sizeof *tl_text);
        if (ti && tip && tl && tlp && tl_text) {
            int k = 0;
            for (int i = 0; i < ch->n_tokens; i++) {
                caravan__v1__token_info__init(&ti[i]);
                ti[i].id = ch->tokens[i];
                ti[i].logprob = ch->results[i].logprob;
                ti[i].n_top = (size_t)ch->results[i].n_top;
                ti[i].top = &tlp[k];
                for (int j = 0; j < ch->results[i].n_top; j++, k++) {
                    caravan__v1__token_logprob__init(&tl[k]);
                    tl[k].id = ch->results[i].top_ids[j];
                    tl[k].logprob = ch->results[i].top_logprobs[j];
                    tl_text[k] = coord_token_text(c, tl[k].id);
                    tl[k].text = tl_text[k] ? tl_text[k] : "";
                    tlp[k] = &tl[k];
                }
                tip[i] = &ti[i];
            }
            m.n_tokens = (size_t)ch->n_tokens;
            m.tokens = tip;
        }
    }
    stream_append_msg(s, &m.base);
    free(text);
    if (tl_text)
        for (int k = 0; k < n_top_total; k++) free(tl_text[k]);
    free(tl_text);
    free(ti);
    free(tip);
    free(tl);
    free(tlp);
    nghttp2_session_resume_data(s->conn->ng, s->id);
    flush_later(s->conn);
}

static void gen_on_done(void *ud, const coord_final *f)
{
    gstream *s = ud;
    s->req = NULL;
    if (f->code == COORD_OK) {
        Caravan__V1__GenerateResponse m = CARAVAN__V1__GENERATE_RESPONSE__INIT;
        Caravan__V1__Usage u = CARAVAN__V1__USAGE__INIT;
        u.prompt_tokens = (int32_t)f->prompt_tokens;
        u.completion_tokens = (int32_t)f->completion_tokens;
        m.usage = &u;
        m.finish_reason = (char *)f->finish_reason;
        stream_append_msg(s, &m.base);
    }
    stream_finish(s, f->code, f->message);
    flush_later(s->conn);
}

static int64_t parse_timeout_ms(const char *t)
{
    /* grpc-timeout: 1-8 digits and a unit H M S m u n */
    size_t n = strlen(t);
    if (n < 2 || n > 9) return -1;
    int64_t v = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (t[i] < '0' || t[i] > '9') return -1;
        v = v * 10 + (t[i] - '0');
    }
    switch (t[n - 1]) {
    case 'H': return v * 3600000;
    case 'M': return v * 60000;
    case 'S': return v * 1000;
    case 'm': return v;
    case 'u': return v / 1000 > 0 ? v / 1000 : 1;
    case 'n': return v / 1000000 > 0 ? v / 1000000 : 1;
    }
    return -1;
}

static void handle_generate(gstream *s, const uint8_t *msg, size_t len)
{
    coord *c = s->conn->srv->c;
    Caravan__V1__GenerateRequest *rq = caravan__v1__generate_request__unpack(NULL, len, msg);
    if (!rq) {
        stream_finish(s, COORD_INVALID_ARGUMENT, "invalid protobuf: cannot decode GenerateRequest");
        return;
    }
    coord_gen_params p;
    coord_gen_params_default(&p);
    if (rq->input_case == CARAVAN__V1__GENERATE_REQUEST__INPUT_PROMPT_TOKENS && rq->prompt_tokens) {
        p.prompt_tokens = rq->prompt_tokens->ids;
        p.n_prompt_tokens = (int64_t)rq->prompt_tokens->n_ids;
        if (p.n_prompt_tokens == 0) {
            p.prompt = "";
            p.prompt_tokens = NULL;
        }
    } else {
        p.prompt = rq->prompt ? rq->prompt : "";
        p.prompt_len = strlen(p.prompt);
    }
    p.add_bos = !rq->no_bos;
    p.parse_special = true; /* as `caravan run` does */
    if (rq->max_tokens < 0) {
        char m[128];
        snprintf(m, sizeof m, "max_tokens must be >= 0 (got %d)", rq->max_tokens);
        caravan__v1__generate_request__free_unpacked(rq, NULL);
        stream_finish(s, COORD_INVALID_ARGUMENT, m);
        return;
    }
    p.max_tokens = rq->max_tokens;
    if (rq->sampling) {
        Caravan__V1__SamplingParams *sp = rq->sampling;
        p.sp.temperature = sp->temperature;
        p.sp.top_k = sp->top_k;
        p.sp.top_p = sp->top_p == 0 ? 1.0f : sp->top_p;
        p.sp.min_p = sp->min_p;
        p.sp.repeat_penalty = sp->repeat_penalty == 0 ? 1.0f : sp->repeat_penalty;
        p.sp.frequency_penalty = sp->frequency_penalty;
        p.sp.presence_penalty = sp->presence_penalty;
        if (sp->penalty_last_n != 0) p.sp.penalty_last_n = sp->penalty_last_n;
        p.sp.seed = sp->seed;
    }
    p.sp.n_top_logprobs = rq->logprobs;
    p.stop = (const char *const *)rq->stop;
    p.n_stop = rq->n_stop > 1000 ? 1000 : (int)rq->n_stop;
    p.echo = rq->echo;
    p.ignore_eos = rq->ignore_eos;
    if (s->timeout[0]) {
        int64_t t = parse_timeout_ms(s->timeout);
        if (t < 0) {
            caravan__v1__generate_request__free_unpacked(rq, NULL);
            stream_finish(s, COORD_INVALID_ARGUMENT, "malformed grpc-timeout header");
            return;
        }
        p.timeout_ms = t > 0 ? t : 1;
    }
    coord_req_callbacks cb = {.on_chunk = gen_on_chunk, .on_done = gen_on_done};
    char err[512] = "";
    coord_req *r = NULL;
    coord_code k = coord_generate(c, &p, &cb, s, &r, err, sizeof err);
    caravan__v1__generate_request__free_unpacked(rq, NULL);
    if (k != COORD_OK) {
        stream_finish(s, k, err);
        return;
    }
    s->req = r;
    stream_respond(s);
}

/* ---- Tokenize / Status ---- */

static void handle_tokenize(gstream *s, const uint8_t *msg, size_t len)
{
    coord *c = s->conn->srv->c;
    Caravan__V1__TokenizeRequest *rq = caravan__v1__tokenize_request__unpack(NULL, len, msg);
    if (!rq) {
        stream_finish(s, COORD_INVALID_ARGUMENT, "invalid protobuf: cannot decode TokenizeRequest");
        return;
    }
    int32_t *ids = NULL;
    int64_t n = 0;
    cv_err e;
    const char *t = rq->text ? rq->text : "";
    if (coord_tokenize(c, t, strlen(t), !rq->no_bos, &ids, &n, &e) != CV_OK) {
        caravan__v1__tokenize_request__free_unpacked(rq, NULL);
        stream_finish(s, COORD_INVALID_ARGUMENT, e.msg);
        return;
    }
    Caravan__V1__TokenizeResponse m = CARAVAN__V1__TOKENIZE_RESPONSE__INIT;
    m.n_ids = (size_t)n;
    m.ids = ids;
    char **pieces = calloc(n + 1, sizeof *pieces);
    if (pieces) {
        for (int64_t i = 0; i < n; i++) {
            pieces[i] = coord_token_text(c, ids[i]);
            if (!pieces[i]) pieces[i] = strdup("");
        }
        m.n_pieces = (size_t)n;
        m.pieces = pieces;
    }
    stream_respond(s);
    stream_append_msg(s, &m.base);
    if (pieces)
        for (int64_t i = 0; i < n; i++) free(pieces[i]);
    free(pieces);
    free(ids);
    caravan__v1__tokenize_request__free_unpacked(rq, NULL);
    stream_finish(s, COORD_OK, "");
}

static void handle_status(gstream *s, const uint8_t *msg, size_t len)
{
    coord *c = s->conn->srv->c;
    Caravan__V1__StatusRequest *rq = caravan__v1__status_request__unpack(NULL, len, msg);
    if (!rq) {
        stream_finish(s, COORD_INVALID_ARGUMENT, "invalid protobuf: cannot decode StatusRequest");
        return;
    }
    caravan__v1__status_request__free_unpacked(rq, NULL);
    coord_stats *st = malloc(sizeof *st);
    if (!st) {
        stream_finish(s, COORD_INTERNAL, "out of memory");
        return;
    }
    coord_get_stats(c, st);
    Caravan__V1__StatusResponse m = CARAVAN__V1__STATUS_RESPONSE__INIT;
    m.model = (char *)coord_model_name(c);
    m.version = CARAVAN_VERSION;
    m.queue_depth = st->queue_depth;
    m.running = st->running;
    m.active_requests = st->requests_active;
    m.requests_total = st->requests_total;
    m.tokens_generated = st->tokens_generated;
    m.prompt_tokens = st->prompt_tokens;
    m.max_queue = st->max_queue;
    Caravan__V1__GroupStatus gs[COORD_MAX_GROUPS_REPORTED], *gp[COORD_MAX_GROUPS_REPORTED];
    int64_t slots = 0;
    for (int i = 0; i < st->n_groups; i++) {
        coord_group_info *g = &st->groups[i];
        caravan__v1__group_status__init(&gs[i]);
        gs[i].id = g->id;
        gs[i].name = g->name;
        gs[i].ranks = g->ranks;
        gs[i].tp = g->tp;
        gs[i].pp = g->pp;
        gs[i].plan = g->plan;
        gs[i].health = (char *)g->health;
        gs[i].n_slots = g->n_slots;
        gs[i].slots_used = g->slots_used;
        gs[i].n_ctx = g->n_ctx;
        gs[i].steps_done = g->steps_done;
        gs[i].step_ms_avg = g->steps_done ? g->step_ms_sum / (double)g->steps_done : 0;
        gs[i].inflight_steps = g->inflight_steps;
        gp[i] = &gs[i];
        slots += g->n_slots;
    }
    m.n_groups = (size_t)st->n_groups;
    m.groups = gp;
    m.load = slots ? (double)st->running / (double)slots : 0;
    stream_respond(s);
    stream_append_msg(s, &m.base);
    free(st);
    stream_finish(s, COORD_OK, "");
}

static void handle_request(gstream *s)
{
    if (s->handled) return;
    s->handled = true;
    coord *c = s->conn->srv->c;
    if (strncmp(s->content_type, "application/grpc", 16) != 0) {
        /* not a gRPC request: plain HTTP 415 */
        s->responded = s->finished = s->trailers_sent = true;
        nghttp2_nv hdr[2] = {NV(":status", "415"), NV("content-type", "text/plain")};
        nghttp2_submit_response(s->conn->ng, s->id, hdr, 2, NULL);
        return;
    }
    if (!coord_check_api_key(c, s->has_auth ? s->auth : NULL)) {
        stream_finish(s, COORD_UNAUTHENTICATED,
                      s->has_auth ? "invalid API key" : "missing API key (authorization: Bearer KEY)");
        return;
    }
    if (s->too_big) {
        char m[128];
        snprintf(m, sizeof m, "request message over the maximum of %u bytes", GRPC_MAX_MESSAGE);
        stream_finish(s, COORD_RESOURCE_EXHAUSTED, m);
        return;
    }
    void (*h)(gstream *, const uint8_t *, size_t) = NULL;
    if (!strcmp(s->path, "/caravan.v1.Caravan/Generate")) h = handle_generate;
    else if (!strcmp(s->path, "/caravan.v1.Caravan/Tokenize")) h = handle_tokenize;
    else if (!strcmp(s->path, "/caravan.v1.Caravan/Status")) h = handle_status;
    if (!h) {
        char m[256];
        snprintf(m, sizeof m, "unknown method %.200s", s->path);
        s->status = 12;
        s->finished = false;
        /* UNIMPLEMENTED is not in coord_code; send it directly */
        s->finished = true;
        s->responded = true;
        s->trailers_sent = true;
        char mm[512];
        percent_encode(m, mm, sizeof mm);
        nghttp2_nv hdr[4] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                             NV("grpc-status", "12"), NV("grpc-message", mm)};
        nghttp2_submit_response(s->conn->ng, s->id, hdr, 4, NULL);
        return;
    }
    if (s->body_len < 5) {
        stream_finish(s, COORD_INVALID_ARGUMENT, "missing gRPC message (need a 5-byte prefix)");
        return;
    }
    uint32_t n = (uint32_t)s->body[1] << 24 | (uint32_t)s->body[2] << 16 |
                 (uint32_t)s->body[3] << 8 | s->body[4];
    if (s->body[0] != 0) {
        s->finished = s->responded = s->trailers_sent = true;
        nghttp2_nv hdr[4] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                             NV("grpc-status", "12"),
                             NV("grpc-message", "compressed messages are not supported")};
        nghttp2_submit_response(s->conn->ng, s->id, hdr, 4, NULL);
        return;
    }
    if ((size_t)n != s->body_len - 5) {
        char m[160];
        snprintf(m, sizeof m, "gRPC message length %u does not match the %zu bytes received", n,
                 s->body_len - 5);
        stream_finish(s, COORD_INVALID_ARGUMENT, m);
        return;
    }
    h(s, s->body + 5, n);
}

/* ---- nghttp2 callbacks ---- */

static ssize_t send_cb(nghttp2_session *ng, const uint8_t *data, size_t length, int flags, void *ud)
{
    gconn *c = ud;
    if (!c->bev) return NGHTTP2_ERR_CALLBACK_FAILURE;
    bufferevent_write(c->bev, data, length);
    return (ssize_t)length;
}

static int begin_headers_cb(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    gconn *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    gstream *s = calloc(1, sizeof *s);
    if (!s) return NGHTTP2_ERR_CALLBACK_FAILURE;
    s->conn = c;
    s->id = f->hd.stream_id;
    s->out = evbuffer_new();
    s->next = c->streams;
    if (c->streams) c->streams->prev = s;
    c->streams = s;
    nghttp2_session_set_stream_user_data(ng, s->id, s);
    return 0;
}

static void copy_hdr(char *dst, size_t cap, const uint8_t *v, size_t vl)
{
    size_t n = vl < cap - 1 ? vl : cap - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
}

static int header_cb(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS) return 0;
    gstream *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!s || s->handled) return 0;
#define IS(n) (nl == sizeof(n) - 1 && !memcmp(name, n, nl))
    if (IS(":path")) copy_hdr(s->path, sizeof s->path, value, vl);
    else if (IS("content-type")) copy_hdr(s->content_type, sizeof s->content_type, value, vl);
    else if (IS("authorization")) {
        copy_hdr(s->auth, sizeof s->auth, value, vl);
        s->has_auth = true;
    } else if (IS("grpc-timeout")) copy_hdr(s->timeout, sizeof s->timeout, value, vl);
#undef IS
    return 0;
}

static int data_chunk_cb(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *ud)
{
    gstream *s = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (!s || s->handled || s->too_big) return 0;
    if (s->body_len + len > GRPC_MAX_MESSAGE + 5) {
        s->too_big = true;
        free(s->body);
        s->body = NULL;
        s->body_len = s->body_cap = 0;
        return 0;
    }
    if (s->body_len + len > s->body_cap) {
        size_t nc = s->body_cap ? s->body_cap * 2 : 1024;
        while (nc < s->body_len + len) nc *= 2;
        uint8_t *nb = realloc(s->body, nc);
        if (!nb) return NGHTTP2_ERR_CALLBACK_FAILURE;
        s->body = nb;
        s->body_cap = nc;
    }
    memcpy(s->body + s->body_len, data, len);
    s->body_len += len;
    return 0;
}

static int frame_recv_cb(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        gstream *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
        if (s) handle_request(s);
    }
    return 0;
}

static int stream_close_cb(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *ud)
{
    gstream *s = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (s) {
        nghttp2_session_set_stream_user_data(ng, stream_id, NULL);
        stream_free(s); /* cancels its request (deferred inside the coordinator) */
    }
    return 0;
}

/* ---- connections ---- */

static void conn_free(gconn *c)
{
    while (c->streams) stream_free(c->streams);
    if (c->ng) nghttp2_session_del(c->ng);
    if (c->bev) bufferevent_free(c->bev);
    if (c->close_ev) event_free(c->close_ev);
    if (c->flush_ev) event_free(c->flush_ev);
    if (c->prev) c->prev->next = c->next;
    else c->srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->srv->n_conns--;
    free(c);
}

static void close_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_free(arg);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_flush(arg);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    gconn *c = arg;
    if (c->closing) return;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    unsigned char *data = evbuffer_pullup(in, -1);
    ssize_t rv = nghttp2_session_mem_recv(c->ng, data, len);
    if (rv < 0) {
        log_debug("grpc: connection dropped: %s", nghttp2_strerror((int)rv));
        /* send what nghttp2 queued (GOAWAY) and close */
        nghttp2_session_send(c->ng);
        conn_close_later(c);
        return;
    }
    evbuffer_drain(in, (size_t)rv);
    conn_flush(c);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    gconn *c = arg;
    if (c->closing) return;
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
        evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_close_later(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    gconn *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) conn_close_later(c);
}

static void accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int socklen,
                      void *arg)
{
    grpc_server *srv = arg;
    gconn *c = srv->n_conns < GRPC_MAX_CONNS ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        log_warn("grpc: connection refused (%d open)", srv->n_conns);
        evutil_closesocket(fd);
        return;
    }
    srv->n_conns++;
    c->srv = srv;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->close_ev = event_new(srv->base, -1, 0, close_cb, c);
    c->flush_ev = event_new(srv->base, -1, 0, flush_cb, c);
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    nghttp2_session_callbacks *cbs;
    if (!c->bev || !c->close_ev || !c->flush_ev || nghttp2_session_callbacks_new(&cbs) != 0) {
        conn_free(c);
        return;
    }
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, begin_headers_cb);
    nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_chunk_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, frame_recv_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, stream_close_cb);
    int rv = nghttp2_session_server_new(&c->ng, cbs, c);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        conn_free(c);
        return;
    }
    nghttp2_settings_entry iv[2] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 256},
                                    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 2);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    conn_flush(c);
}

cv_status grpc_server_start(coord *c, struct event_base *base, const char *host, int port,
                            grpc_server **out, int *bound_port, cv_err *e)
{
    grpc_server *s = calloc(1, sizeof *s);
    if (!s) return cv_err_set(e, CV_ENOMEM, "grpc server: out of memory");
    s->c = c;
    s->base = base;
    s->lis = coord_listen(base, host, port, accept_cb, s, bound_port, e);
    if (!s->lis) {
        free(s);
        return e ? e->code : CV_EIO;
    }
    *out = s;
    return CV_OK;
}

void grpc_server_free(grpc_server *s)
{
    if (!s) return;
    evconnlistener_free(s->lis);
    while (s->conns) conn_free(s->conns);
    free(s);
}
