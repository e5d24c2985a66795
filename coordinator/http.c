/* http.c - the OpenAI-compatible HTTP front end: libevent evhttp on the
 * coordinator's event loop, JSON with jansson. Not a general web server: it
 * serves exactly
 *
 *   POST /v1/completions        legacy completions (prompt text or token ids)
 *   POST /v1/chat/completions   chat (template from the GGUF, core/chat.h)
 *   GET  /v1/models             the one model (and /v1/models/{id})
 *   GET  /health                200 when a worker group is ready, else 503
 *   GET  /metrics               Prometheus text (metrics.c)
 *
 * `stream: true` answers with server-sent events (`data: {chunk}\n\n` ...
 * `data: [DONE]\n\n`) over chunked transfer encoding. Errors use OpenAI's
 * shape {"error": {"message", "type", "param", "code"}} with the status
 * coord_code_http gives. Bodies over HTTP_MAX_BODY are refused by evhttp
 * with 413 before they are buffered.
 *
 * A client that goes away frees its sequence at once: evhttp itself only
 * notices a closed socket when a write fails, so each request in progress
 * also watches its socket for EOF (recv MSG_PEEK); on EOF the connection is
 * freed from that event, its close callback cancels the coord request
 * (coord_req_cancel defers the slot release to the coordinator's pump, a
 * safe point) and frees our state. */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include "../core/chat.h"
#include "../core/log.h"
#include "../core/tokenizer.h"
#include "coord.h"
#include "metrics.h"

#define HTTP_MAX_BODY (8u << 20)      /* request bodies over this: 413 */
#define HTTP_MAX_HEADERS (64u << 10)  /* header block over this: 400 */
#define HTTP_COMPLETIONS_DEFAULT_MAX 16 /* OpenAI's default max_tokens for /v1/completions */

typedef struct http_server http_server;
typedef struct hreq hreq;

struct http_server {
    coord *c;
    struct event_base *base;
    struct evhttp *http;
    hreq *live;            /* requests waiting on the coordinator */
    metrics_http m;
    uint64_t next_id;
};

/* One generation request in progress (completions or chat). */
struct hreq {
    http_server *srv;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    coord_req *cr;
    struct event *watch;   /* EOF on the client socket */
    const char *endpoint;
    bool chat, stream, include_usage, ignore_eos;
    bool logprobs;         /* chat: logprobs true; completions: logprobs given */
    int n_top;
    char id[64];
    long long created;
    struct evbuffer *text; /* generated text (non-streaming) */
    json_t *lp;            /* completions: {tokens, token_logprobs, top_logprobs, text_offset}; chat: [content] */
    size_t text_off;       /* completions text_offset of the next token */
    hreq *prev, *next;
};

/* ---- JSON helpers ---- */

/* A JSON string from bytes that may not be valid UTF-8 (jansson refuses
 * those): invalid bytes become U+FFFD. */
static json_t *jstr(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j) return j;
    char *o = malloc(n * 3 + 1);
    if (!o) return json_string("");
    size_t k = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned char c0 = p[i];
        size_t L = c0 < 0x80 ? 1 : (c0 >> 5) == 6 ? 2 : (c0 >> 4) == 14 ? 3 : (c0 >> 3) == 30 ? 4 : 0;
        bool ok = L > 0 && i + L <= n && c0 != 0;
        for (size_t q = 1; ok && q < L; q++) ok = (p[i + q] & 0xC0) == 0x80;
        if (ok) {
            json_t *t = json_stringn((const char *)p + i, L); /* rejects overlongs, surrogates */
            ok = t != NULL;
            json_decref(t);
        }
        if (ok) {
            memcpy(o + k, p + i, L);
            k += L;
            i += L;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    j = json_stringn(o, k);
    free(o);
    return j ? j : json_string("");
}

static json_t *jreal(double v)
{
    if (!isfinite(v)) v = v < 0 ? -9999.0 : 9999.0; /* JSON has no infinities */
    return json_real(v);
}

/* The bytes of one token for logprob listings: "token" text (OpenAI writes
 * "bytes:\xNN" for a piece that is not valid UTF-8 on its own) and the byte
 * list. */
static void token_piece(coord *c, int32_t id, json_t **text, json_t **bytes)
{
    char buf[256];
    size_t n = tokenizer_token_piece(coord_tokenizer(c), id, false, buf, sizeof buf);
    if (n > sizeof buf) n = sizeof buf;
    json_t *t = json_stringn(buf, n);
    if (!t) {
        char esc[sizeof buf * 4 + 8];
        size_t k = (size_t)snprintf(esc, sizeof esc, "bytes:");
        for (size_t i = 0; i < n && k + 5 < sizeof esc; i++) k += (size_t)snprintf(esc + k, sizeof esc - k, "\\x%02x", (unsigned char)buf[i]);
        t = json_string(esc);
    }
    *text = t;
    if (bytes) {
        json_t *b = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(b, json_integer((unsigned char)buf[i]));
        *bytes = b;
    }
}

/* ---- responses ---- */

static void send_json(http_server *s, struct evhttp_request *req, const char *endpoint, int status,
                      json_t *body, bool close)
{
    char *txt = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct evbuffer *b = evbuffer_new();
    if (txt) {
        evbuffer_add(b, txt, strlen(txt));
        evbuffer_add(b, "\n", 1);
    }
    free(txt);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    if (close) evhttp_add_header(h, "Connection", "close");
    metrics_http_count(&s->m, endpoint, status);
    evhttp_send_reply(req, status, NULL, b);
    evbuffer_free(b);
}

static const char *error_type(int status)
{
    switch (status) {
    case 400: case 404: case 405: case 413: return "invalid_request_error";
    case 401: return "authentication_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    case 504: return "timeout_error";
    default: return "server_error";
    }
}

static json_t *error_body(int status, const char *param, const char *code, const char *msg)
{
    json_t *e = json_object();
    json_object_set_new(e, "message", jstr(msg, strlen(msg)));
    json_object_set_new(e, "type", json_string(error_type(status)));
    json_object_set_new(e, "param", param ? json_string(param) : json_null());
    json_object_set_new(e, "code", code ? json_string(code) : json_null());
    json_t *o = json_object();
    json_object_set_new(o, "error", e);
    return o;
}

static void send_error(http_server *s, struct evhttp_request *req, const char *endpoint, int status,
                       const char *param, const char *code, const char *msg)
{
    if (status == 401)
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
    send_json(s, req, endpoint, status, error_body(status, param, code, msg), status == 413);
}

/* Parameter name for an error message of coord_generate ("top_p must be in
 * [0, 1] (got 7)" -> "top_p"), mapped to the OpenAI field name. */
static const char *param_of(const char *msg, bool chat)
{
    static const char *names[] = {"temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                                  "frequency_penalty", "presence_penalty", "logprobs",
                                  "max_tokens", "stop", "prompt"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t L = strlen(names[i]);
        if (strncmp(msg, names[i], L) == 0 && (msg[L] == ' ' || msg[L] == 0)) {
            if (!strcmp(names[i], "repeat_penalty")) return "repetition_penalty";
            if (!strcmp(names[i], "logprobs") && chat) return "top_logprobs";
            if (!strcmp(names[i], "prompt") && chat) return "messages";
            return names[i];
        }
    }
    if (strstr(msg, "prompt") || strstr(msg, "context")) return chat ? "messages" : "prompt";
    return NULL;
}

static const char *code_of(coord_code k, const char *msg)
{
    switch (k) {
    case COORD_INVALID_ARGUMENT:
        return strstr(msg, "context") ? "context_length_exceeded" : "invalid_value";
    case COORD_RESOURCE_EXHAUSTED: return "queue_full";
    case COORD_UNAVAILABLE: return "no_worker_group";
    case COORD_UNAUTHENTICATED: return "invalid_api_key";
    case COORD_DEADLINE_EXCEEDED: return "deadline_exceeded";
    case COORD_CANCELLED: return "cancelled";
    default: return "internal_error";
    }
}

/* ---- request state ---- */

static void watch_cb(evutil_socket_t fd, short what, void *arg);

static void hreq_unlink_free(hreq *h)
{
    http_server *s = h->srv;
    if (h->prev) h->prev->next = h->next;
    else if (s->live == h) s->live = h->next;
    if (h->next) h->next->prev = h->prev;
    if (h->watch) event_free(h->watch);
    if (h->text) evbuffer_free(h->text);
    json_decref(h->lp);
    free(h);
}

/* The connection closed under a request in progress (EOF seen by our watch,
 * a failed write, or shutdown). Runs inside evhttp_connection_free. */
static void conn_close_cb(struct evhttp_connection *evcon, void *arg)
{
    hreq *h = arg;
    http_server *s = h->srv;
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    if (h->cr) {
        coord_req_cancel(h->cr); /* slot released at the coordinator's next pump */
        h->cr = NULL;
        s->m.disconnects++;
    }
    if (h->stream) s->m.streams_active--;
    /* After a failed write evhttp detaches a request the user has not
     * finished (evcon NULL) and leaves it to us; otherwise it frees it. */
    if (evhttp_request_get_connection(h->req) == NULL) evhttp_request_free(h->req);
    hreq_unlink_free(h);
}

static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
    hreq *h = arg;
    char b;
    ssize_t r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r > 0) return; /* the client sent more (pipelining): stop watching, writes will tell */
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        event_add(h->watch, NULL);
        return;
    }
    /* EOF or reset: free the connection; its close callback frees h */
    evhttp_connection_free(h->evcon);
}

/* The request is finishing normally: stop watching the connection. */
static void hreq_detach(hreq *h)
{
    if (h->evcon) evhttp_connection_set_closecb(h->evcon, NULL, NULL);
    if (h->watch) {
        event_free(h->watch);
        h->watch = NULL;
    }
}

static void sse_send(hreq *h, json_t *obj)
{
    char *txt = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!txt) return;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "data: ", 6);
    evbuffer_add(b, txt, strlen(txt));
    evbuffer_add(b, "\n\n", 2);
    free(txt);
    evhttp_send_reply_chunk(h->req, b);
    evbuffer_free(b);
}

static json_t *usage_obj(const coord_final *f)
{
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)f->prompt_tokens,
                     "completion_tokens", (json_int_t)f->completion_tokens, "total_tokens",
                     (json_int_t)(f->prompt_tokens + f->completion_tokens));
}

static json_t *chunk_head(hreq *h)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", h->id, "object",
                     h->chat ? "chat.completion.chunk" : "text_completion", "created",
                     (json_int_t)h->created, "model", coord_model_name(h->srv->c));
}

/* Logprob entries for the tokens of one chunk. Completions: appended to
 * the legacy arrays; chat: returned as a "content" array. */
static json_t *logprob_entries(hreq *h, const coord_chunk *ch, size_t text_len, json_t *legacy)
{
    coord *c = h->srv->c;
    const tokenizer *tok = coord_tokenizer(c);
    json_t *content = h->chat ? json_array() : NULL;
    for (int i = 0; i < ch->n_tokens; i++) {
        int32_t id = ch->tokens[i];
        if (!h->ignore_eos && tokenizer_is_eog(tok, id)) continue; /* the end token is no output */
        const sample_result *r = &ch->results[i];
        json_t *t, *bytes;
        token_piece(c, id, &t, &bytes);
        if (h->chat) {
            json_t *top = json_array();
            for (int j = 0; j < r->n_top && j < h->n_top; j++) {
                json_t *tt, *tb;
                token_piece(c, r->top_ids[j], &tt, &tb);
                json_array_append_new(top, json_pack("{s:o,s:o,s:o}", "token", tt, "logprob",
                                                     jreal(r->top_logprobs[j]), "bytes", tb));
            }
            json_array_append_new(content, json_pack("{s:o,s:o,s:o,s:o}", "token", t, "logprob",
                                                     jreal(r->logprob), "bytes", bytes,
                                                     "top_logprobs", top));
        } else {
            json_decref(bytes);
            json_t *top = json_object();
            for (int j = 0; j < r->n_top && j < h->n_top; j++) {
                json_t *tt;
                token_piece(c, r->top_ids[j], &tt, NULL);
                json_object_set_new(top, json_string_value(tt), jreal(r->top_logprobs[j]));
                json_decref(tt);
            }
            json_array_append_new(json_object_get(legacy, "tokens"), t);
            json_array_append_new(json_object_get(legacy, "token_logprobs"), jreal(r->logprob));
            json_array_append_new(json_object_get(legacy, "top_logprobs"), top);
            json_array_append_new(json_object_get(legacy, "text_offset"),
                                  json_integer((json_int_t)h->text_off));
        }
    }
    h->text_off += text_len;
    return content;
}

static json_t *legacy_lp_new(void)
{
    return json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs",
                     "text_offset");
}

/* ---- coordinator callbacks ---- */

static void gen_on_chunk(void *ud, const coord_chunk *ch)
{
    hreq *h = ud;
    if (ch->echo) { /* completions echo: the prompt text comes first */
        if (h->stream) {
            json_t *o = chunk_head(h);
            json_object_set_new(o, "choices",
                                json_pack("[{s:o,s:i,s:n,s:n}]", "text", jstr(ch->text, ch->text_len),
                                          "index", 0, "logprobs", "finish_reason"));
            sse_send(h, o);
        } else {
            evbuffer_add(h->text, ch->text, ch->text_len);
        }
        h->text_off += ch->text_len;
        return;
    }
    bool has_lp = h->logprobs && ch->results && ch->n_tokens > 0;
    if (!h->stream) {
        evbuffer_add(h->text, ch->text, ch->text_len);
        if (has_lp) {
            json_t *content = logprob_entries(h, ch, ch->text_len, h->lp);
            if (content) {
                json_array_extend(h->lp, content);
                json_decref(content);
            }
        } else {
            h->text_off += ch->text_len;
        }
        return;
    }
    /* streaming: one event per chunk with text (or with logprobs to report) */
    json_t *legacy = has_lp && !h->chat ? legacy_lp_new() : NULL;
    json_t *content = has_lp ? logprob_entries(h, ch, ch->text_len, legacy) : NULL;
    if (!has_lp) h->text_off += ch->text_len;
    bool empty_lp = !has_lp || (content ? json_array_size(content) == 0
                                        : json_array_size(json_object_get(legacy, "tokens")) == 0);
    if (ch->text_len == 0 && empty_lp) {
        json_decref(legacy);
        json_decref(content);
        return;
    }
    json_t *o = chunk_head(h);
    json_t *choice;
    if (h->chat) {
        choice = json_pack("{s:i,s:{s:o},s:n}", "index", 0, "delta", "content",
                           jstr(ch->text, ch->text_len), "finish_reason");
        json_object_set_new(choice, "logprobs",
                            content ? json_pack("{s:o}", "content", content) : json_null());
    } else {
        choice = json_pack("{s:o,s:i,s:n}", "text", jstr(ch->text, ch->text_len), "index", 0,
                           "finish_reason");
        json_object_set_new(choice, "logprobs", legacy ? legacy : json_null());
    }
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    if (h->include_usage) json_object_set_new(o, "usage", json_null());
    sse_send(h, o);
}

static void gen_on_done(void *ud, const coord_final *f)
{
    hreq *h = ud;
    http_server *s = h->srv;
    h->cr = NULL; /* freed by the coordinator after this returns */
    hreq_detach(h);
    if (f->code != COORD_OK) {
        int status = coord_code_http(f->code);
        const char *msg = f->message && f->message[0] ? f->message : coord_code_name(f->code);
        if (h->stream) {
            /* the status line is gone already: an error event, then the end */
            json_t *e = error_body(status, NULL, code_of(f->code, msg), msg);
            sse_send(h, e);
            s->m.streams_active--;
            evhttp_send_reply_end(h->req);
        } else {
            send_error(s, h->req, h->endpoint, status, NULL, code_of(f->code, msg), msg);
        }
        hreq_unlink_free(h);
        return;
    }
    if (h->stream) {
        json_t *o = chunk_head(h);
        json_t *choice = h->chat ? json_pack("{s:i,s:{},s:n,s:s}", "index", 0, "delta", "logprobs",
                                             "finish_reason", f->finish_reason)
                                 : json_pack("{s:s,s:i,s:n,s:s}", "text", "", "index", 0, "logprobs",
                                             "finish_reason", f->finish_reason);
        json_object_set_new(o, "choices", json_pack("[o]", choice));
        if (h->include_usage) json_object_set_new(o, "usage", json_null());
        sse_send(h, o);
        if (h->include_usage) {
            o = chunk_head(h);
            json_object_set_new(o, "choices", json_array());
            json_object_set_new(o, "usage", usage_obj(f));
            sse_send(h, o);
        }
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, "data: [DONE]\n\n", 14);
        evhttp_send_reply_chunk(h->req, b);
        evbuffer_free(b);
        s->m.streams_active--;
        evhttp_send_reply_end(h->req);
        hreq_unlink_free(h);
        return;
    }
    size_t n = evbuffer_get_length(h->text);
    const char *txt = n ? (const char *)evbuffer_pullup(h->text, -1) : "";
    json_t *choice;
    if (h->chat) {
        choice = json_pack("{s:i,s:{s:s,s:o},s:s}", "index", 0, "message", "role", "assistant",
                           "content", jstr(txt, n), "finish_reason", f->finish_reason);
        json_object_set_new(choice, "logprobs",
                            h->logprobs ? json_pack("{s:O}", "content", h->lp) : json_null());
    } else {
        choice = json_pack("{s:o,s:i,s:s}", "text", jstr(txt, n), "index", 0, "finish_reason",
                           f->finish_reason);
        json_object_set_new(choice, "logprobs", h->logprobs ? json_incref(h->lp) : json_null());
    }
    json_t *o = json_pack("{s:s,s:s,s:I,s:s}", "id", h->id, "object",
                          h->chat ? "chat.completion" : "text_completion", "created",
                          (json_int_t)h->created, "model", coord_model_name(s->c));
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    json_object_set_new(o, "usage", usage_obj(f));
    struct evhttp_request *req = h->req;
    const char *ep = h->endpoint;
    hreq_unlink_free(h);
    send_json(s, req, ep, 200, o, false);
}

/* ---- parameter parsing ---- */

typedef struct perr {
    char msg[512];
    const char *param;
} perr;

#define PFAIL(pe, name, ...)                                                                      \
    do {                                                                                          \
        snprintf((pe)->msg, sizeof (pe)->msg, __VA_ARGS__);                                       \
        (pe)->param = (name);                                                                     \
        return false;                                                                             \
    } while (0)

/* Optional number field: absent or null leaves *out alone. */
static bool opt_num(json_t *o, const char *key, double *out, perr *pe)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) PFAIL(pe, key, "'%s' must be a number", key);
    *out = json_number_value(v);
    return true;
}

static bool opt_int(json_t *o, const char *key, json_int_t lo, json_int_t hi, json_int_t *out,
                    perr *pe)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
        fabs(json_real_value(v)) < 9e15) {
        *out = (json_int_t)json_real_value(v);
    } else if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else {
        PFAIL(pe, key, "'%s' must be an integer", key);
    }
    if (*out < lo || *out > hi)
        PFAIL(pe, key, "'%s' must be in [%lld, %lld] (got %lld)", key, (long long)lo,
              (long long)hi, (long long)*out);
    return true;
}

static bool opt_bool(json_t *o, const char *key, bool *out, perr *pe)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) PFAIL(pe, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return true;
}

/* Everything the two generation endpoints share: sampling, stop, n, stream. */
typedef struct gen_common {
    coord_gen_params p;
    const char *stop[COORD_MAX_STOP];
    bool stream, include_usage;
    int32_t *ids;          /* token-id prompt (owned) */
    char *rendered;        /* chat prompt (owned) */
} gen_common;

static bool parse_common(json_t *o, gen_common *g, bool chat, perr *pe)
{
    coord_gen_params *p = &g->p;
    double t = 1.0, top_p = 1.0, min_p = 0.0, fp = 0.0, pp = 0.0, rp = 1.0;
    if (!opt_num(o, "temperature", &t, pe) || !opt_num(o, "top_p", &top_p, pe) ||
        !opt_num(o, "min_p", &min_p, pe) || !opt_num(o, "frequency_penalty", &fp, pe) ||
        !opt_num(o, "presence_penalty", &pp, pe) || !opt_num(o, "repetition_penalty", &rp, pe))
        return false;
    /* OpenAI ranges; the coordinator checks its own (wider) ones again */
    if (!(t >= 0 && t <= 2)) PFAIL(pe, "temperature", "temperature must be in [0, 2] (got %g)", t);
    if (!(top_p > 0 && top_p <= 1)) PFAIL(pe, "top_p", "top_p must be in (0, 1] (got %g)", top_p);
    if (!(min_p >= 0 && min_p <= 1)) PFAIL(pe, "min_p", "min_p must be in [0, 1] (got %g)", min_p);
    if (!(fp >= -2 && fp <= 2))
        PFAIL(pe, "frequency_penalty", "frequency_penalty must be in [-2, 2] (got %g)", fp);
    if (!(pp >= -2 && pp <= 2))
        PFAIL(pe, "presence_penalty", "presence_penalty must be in [-2, 2] (got %g)", pp);
    if (!(rp > 0 && rp <= 10))
        PFAIL(pe, "repetition_penalty", "repetition_penalty must be in (0, 10] (got %g)", rp);
    p->sp.temperature = (float)t;
    p->sp.top_p = (float)top_p;
    p->sp.min_p = (float)min_p;
    p->sp.frequency_penalty = (float)fp;
    p->sp.presence_penalty = (float)pp;
    p->sp.repeat_penalty = (float)rp;
    json_int_t top_k = 0, n = 1, seed = -1, best_of = 1;
    if (!opt_int(o, "top_k", -1, 1 << 30, &top_k, pe)) return false;
    p->sp.top_k = top_k < 0 ? 0 : (int32_t)top_k; /* -1: off, as in vLLM */
    if (!opt_int(o, "n", 1, 1, &n, pe)) PFAIL(pe, "n", "only n = 1 is supported (got %s)",
                                              json_is_integer(json_object_get(o, "n")) ? "another count" : "a non-integer");
    if (!chat && !opt_int(o, "best_of", 1, 1, &best_of, pe))
        PFAIL(pe, "best_of", "only best_of = 1 is supported");
    json_t *sv = json_object_get(o, "seed");
    if (sv && !json_is_null(sv)) {
        if (!json_is_integer(sv)) PFAIL(pe, "seed", "'seed' must be an integer");
        seed = json_integer_value(sv);
        p->sp.seed = (uint64_t)seed;
    } else {
        /* no seed: a different stream for every request, as OpenAI does */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        p->sp.seed = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec;
    }
    json_t *st = json_object_get(o, "stop");
    if (st && !json_is_null(st)) {
        if (json_is_string(st)) {
            g->stop[0] = json_string_value(st);
            p->n_stop = 1;
        } else if (json_is_array(st)) {
            if (json_array_size(st) > COORD_MAX_STOP)
                PFAIL(pe, "stop", "at most %d stop strings (got %zu)", COORD_MAX_STOP,
                      json_array_size(st));
            for (size_t i = 0; i < json_array_size(st); i++) {
                json_t *e = json_array_get(st, i);
                if (!json_is_string(e)) PFAIL(pe, "stop", "'stop' must be a string or an array of strings");
                g->stop[p->n_stop++] = json_string_value(e);
            }
        } else {
            PFAIL(pe, "stop", "'stop' must be a string or an array of strings");
        }
        for (int i = 0; i < p->n_stop; i++) {
            size_t L = strlen(g->stop[i]);
            if (L == 0 || L > COORD_MAX_STOP_LEN)
                PFAIL(pe, "stop", "stop string %d must be 1..%d bytes (got %zu)", i,
                      COORD_MAX_STOP_LEN, L);
        }
        p->stop = g->stop;
    }
    if (!opt_bool(o, "stream", &g->stream, pe) || !opt_bool(o, "ignore_eos", &p->ignore_eos, pe))
        return false;
    json_t *so = json_object_get(o, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) PFAIL(pe, "stream_options", "'stream_options' must be an object");
        if (!opt_bool(so, "include_usage", &g->include_usage, pe)) {
            pe->param = "stream_options";
            return false;
        }
    }
    json_t *lb = json_object_get(o, "logit_bias");
    if (lb && !json_is_null(lb) && !(json_is_object(lb) && json_object_size(lb) == 0))
        PFAIL(pe, "logit_bias", "logit_bias is not supported");
    json_t *tools = json_object_get(o, "tools");
    if (tools && !json_is_null(tools) && !(json_is_array(tools) && json_array_size(tools) == 0))
        PFAIL(pe, "tools", "tools are not supported");
    return true;
}

static bool parse_max_tokens(json_t *o, const char *key, int64_t dflt, coord_gen_params *p, perr *pe)
{
    json_int_t mt = dflt;
    if (!opt_int(o, key, 0, 1 << 24, &mt, pe)) return false;
    p->max_tokens = mt;
    return true;
}

static bool parse_completions(json_t *o, gen_common *g, hreq *h, perr *pe)
{
    coord_gen_params *p = &g->p;
    json_t *pr = json_object_get(o, "prompt");
    if (!pr) PFAIL(pe, "prompt", "'prompt' is required");
    if (json_is_array(pr) && json_array_size(pr) == 1 && !json_is_integer(json_array_get(pr, 0)))
        pr = json_array_get(pr, 0); /* ["text"] or [[ids]] */
    if (json_is_string(pr)) {
        p->prompt = json_string_value(pr);
        p->prompt_len = json_string_length(pr);
    } else if (json_is_array(pr)) {
        size_t n = json_array_size(pr);
        for (size_t i = 0; i < n; i++)
            if (!json_is_integer(json_array_get(pr, i)))
                PFAIL(pe, "prompt",
                      "'prompt' must be a string or an array of token ids (one prompt per request; "
                      "element %zu is neither)", i);
        if (n == 0) {
            p->prompt = "";
        } else {
            g->ids = malloc(n * sizeof *g->ids);
            if (!g->ids) PFAIL(pe, NULL, "out of memory");
            for (size_t i = 0; i < n; i++) {
                json_int_t v = json_integer_value(json_array_get(pr, i));
                if (v < 0 || v > INT32_MAX)
                    PFAIL(pe, "prompt", "prompt token %zu is %lld, not a token id", i, (long long)v);
                g->ids[i] = (int32_t)v;
            }
            p->prompt_tokens = g->ids;
            p->n_prompt_tokens = (int64_t)n;
        }
    } else {
        PFAIL(pe, "prompt", "'prompt' must be a string or an array of token ids");
    }
    if (!parse_max_tokens(o, "max_tokens", HTTP_COMPLETIONS_DEFAULT_MAX, p, pe)) return false;
    json_int_t lp = -1;
    if (json_is_boolean(json_object_get(o, "logprobs")))
        PFAIL(pe, "logprobs", "'logprobs' must be an integer (the number of top logprobs) for completions");
    if (!opt_int(o, "logprobs", 0, SAMPLER_MAX_TOP, &lp, pe)) return false;
    if (lp >= 0) {
        h->logprobs = true;
        h->n_top = (int)lp;
        p->sp.n_top_logprobs = (int32_t)lp;
    }
    if (!opt_bool(o, "echo", &p->echo, pe)) return false;
    if (p->echo && h->logprobs)
        PFAIL(pe, "echo", "echo with logprobs is not supported (no prompt logprobs)");
    json_t *suf = json_object_get(o, "suffix");
    if (suf && !json_is_null(suf) && !(json_is_string(suf) && json_string_length(suf) == 0))
        PFAIL(pe, "suffix", "suffix is not supported");
    return true;
}

static bool parse_chat(http_server *s, json_t *o, gen_common *g, hreq *h, perr *pe)
{
    coord_gen_params *p = &g->p;
    json_t *msgs = json_object_get(o, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        PFAIL(pe, "messages", "'messages' must be a non-empty array");
    size_t n = json_array_size(msgs);
    chat_msg *cm = calloc(n, sizeof *cm);
    char **owned = calloc(n, sizeof *owned);
    bool ok = cm && owned;
    if (!ok) snprintf(pe->msg, sizeof pe->msg, "out of memory");
    for (size_t i = 0; ok && i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        ok = false;
        pe->param = "messages";
        if (!json_is_object(m)) {
            snprintf(pe->msg, sizeof pe->msg, "messages[%zu] must be an object", i);
            break;
        }
        if (!json_is_string(role)) {
            snprintf(pe->msg, sizeof pe->msg, "messages[%zu].role must be a string", i);
            break;
        }
        const char *r = json_string_value(role);
        if (!strcmp(r, "developer")) r = "system";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")) {
            snprintf(pe->msg, sizeof pe->msg,
                     "messages[%zu].role '%.64s' is not supported (system, user, assistant)", i, r);
            break;
        }
        cm[i].role = r;
        if (json_is_string(content)) {
            cm[i].content = json_string_value(content);
        } else if (json_is_null(content) || !content) {
            if (strcmp(r, "assistant")) {
                snprintf(pe->msg, sizeof pe->msg, "messages[%zu].content is required", i);
                break;
            }
            cm[i].content = "";
        } else if (json_is_array(content)) {
            /* content parts: text only, concatenated */
            size_t tot = 0;
            bool bad = false;
            for (size_t k = 0; k < json_array_size(content); k++) {
                json_t *part = json_array_get(content, k);
                json_t *ty = json_object_get(part, "type"), *tx = json_object_get(part, "text");
                if (!json_is_string(ty) || strcmp(json_string_value(ty), "text") || !json_is_string(tx)) {
                    snprintf(pe->msg, sizeof pe->msg,
                             "messages[%zu].content[%zu]: only {\"type\": \"text\", \"text\": ...} parts are supported", i, k);
                    bad = true;
                    break;
                }
                tot += json_string_length(tx);
            }
            if (bad) break;
            owned[i] = malloc(tot + 1);
            if (!owned[i]) {
                snprintf(pe->msg, sizeof pe->msg, "out of memory");
                break;
            }
            size_t off = 0;
            for (size_t k = 0; k < json_array_size(content); k++) {
                json_t *tx = json_object_get(json_array_get(content, k), "text");
                memcpy(owned[i] + off, json_string_value(tx), json_string_length(tx));
                off += json_string_length(tx);
            }
            owned[i][off] = 0;
            cm[i].content = owned[i];
        } else {
            snprintf(pe->msg, sizeof pe->msg, "messages[%zu].content must be a string or an array of text parts", i);
            break;
        }
        ok = true;
    }
    if (ok) {
        chat_family fam = chat_template_from_gguf(coord_gguf(s->c), NULL);
        cv_err e;
        if (chat_apply(fam, cm, n, true, &g->rendered, &e) != CV_OK) {
            snprintf(pe->msg, sizeof pe->msg, "cannot apply the %s chat template: %.400s",
                     chat_family_name(fam), e.msg);
            pe->param = "messages";
            ok = false;
        }
    }
    for (size_t i = 0; owned && i < n; i++) free(owned[i]);
    free(owned);
    free(cm);
    if (!ok) return false;
    p->prompt = g->rendered;
    p->prompt_len = strlen(g->rendered);
    p->add_bos = true;
    p->parse_special = true;
    json_t *mct = json_object_get(o, "max_completion_tokens");
    if (!parse_max_tokens(o, mct && !json_is_null(mct) ? "max_completion_tokens" : "max_tokens", 0,
                          p, pe))
        return false;
    json_int_t top = 0;
    if (!opt_bool(o, "logprobs", &h->logprobs, pe)) return false;
    if (!opt_int(o, "top_logprobs", 0, SAMPLER_MAX_TOP, &top, pe)) return false;
    if (top > 0 && !h->logprobs)
        PFAIL(pe, "top_logprobs", "top_logprobs needs logprobs: true");
    h->n_top = (int)top;
    p->sp.n_top_logprobs = (int32_t)top;
    return true;
}

/* ---- endpoints ---- */

static void handle_generate(http_server *s, struct evhttp_request *req, bool chat)
{
    const char *ep = chat ? "/v1/chat/completions" : "/v1/completions";
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    json_error_t je;
    json_t *o = json_loadb(body, len, 0, &je);
    if (!o || !json_is_object(o)) {
        char m[400];
        if (!o)
            snprintf(m, sizeof m, "invalid JSON body: %s (line %d, column %d)", je.text, je.line,
                     je.column);
        else
            snprintf(m, sizeof m, "the request body must be a JSON object");
        json_decref(o);
        send_error(s, req, ep, 400, NULL, "invalid_json", m);
        return;
    }
    hreq *h = calloc(1, sizeof *h);
    gen_common g;
    memset(&g, 0, sizeof g);
    coord_gen_params_default(&g.p);
    g.p.parse_special = true; /* as `caravan run` does */
    perr pe = {.msg = "", .param = NULL};
    if (!h) {
        json_decref(o);
        send_error(s, req, ep, 500, NULL, "internal_error", "out of memory");
        return;
    }
    h->srv = s;
    h->req = req;
    h->chat = chat;
    h->endpoint = ep;
    bool ok = parse_common(o, &g, chat, &pe) &&
              (chat ? parse_chat(s, o, &g, h, &pe) : parse_completions(o, &g, h, &pe));
    if (!ok) {
        send_error(s, req, ep, 400, pe.param, "invalid_value", pe.msg);
        goto out_free;
    }
    h->stream = g.stream;
    h->include_usage = g.stream && g.include_usage;
    h->ignore_eos = g.p.ignore_eos;
    h->text = evbuffer_new();
    if (h->logprobs) h->lp = chat ? json_array() : legacy_lp_new();
    snprintf(h->id, sizeof h->id, "%s-%016llx", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)(++s->next_id * 0x9E3779B97F4A7C15ull));
    h->created = (long long)time(NULL);

    coord_req_callbacks cb = {.on_chunk = gen_on_chunk, .on_done = gen_on_done};
    char err[512] = "";
    coord_req *r = NULL;
    coord_code k = coord_generate(s->c, &g.p, &cb, h, &r, err, sizeof err);
    if (k != COORD_OK) {
        send_error(s, req, ep, coord_code_http(k), k == COORD_INVALID_ARGUMENT ? param_of(err, chat) : NULL,
                   code_of(k, err), err[0] ? err : coord_code_name(k));
        goto out_free;
    }
    /* accepted: callbacks fire from the loop from now on (never inside coord_generate) */
    h->cr = r;
    h->evcon = evhttp_request_get_connection(req);
    h->next = s->live;
    if (s->live) s->live->prev = h;
    s->live = h;
    evhttp_connection_set_closecb(h->evcon, conn_close_cb, h);
    evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(h->evcon));
    if (fd >= 0) {
        h->watch = event_new(s->base, fd, EV_READ, watch_cb, h);
        if (h->watch) event_add(h->watch, NULL);
    }
    if (h->stream) {
        struct evkeyvalq *hd = evhttp_request_get_output_headers(req);
        evhttp_add_header(hd, "Content-Type", "text/event-stream");
        evhttp_add_header(hd, "Cache-Control", "no-cache");
        metrics_http_count(&s->m, ep, 200);
        s->m.streams_started++;
        s->m.streams_active++;
        evhttp_send_reply_start(req, 200, "OK");
        if (chat) {
            json_t *c0 = chunk_head(h);
            json_object_set_new(c0, "choices",
                                json_pack("[{s:i,s:{s:s,s:s},s:n,s:n}]", "index", 0, "delta", "role",
                                          "assistant", "content", "", "logprobs", "finish_reason"));
            if (h->include_usage) json_object_set_new(c0, "usage", json_null());
            sse_send(h, c0);
        }
    }
    json_decref(o);
    free(g.ids);
    free(g.rendered);
    return;
out_free:
    json_decref(o);
    free(g.ids);
    free(g.rendered);
    if (h->text) evbuffer_free(h->text);
    json_decref(h->lp);
    free(h);
}

static json_t *model_obj(http_server *s)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:I}", "id", coord_model_name(s->c), "object", "model",
                     "created", (json_int_t)0, "owned_by", "caravan", "context_length",
                     (json_int_t)coord_n_ctx(s->c));
}

static void handle_models(http_server *s, struct evhttp_request *req)
{
    send_json(s, req, "/v1/models", 200,
              json_pack("{s:s,s:[o]}", "object", "list", "data", model_obj(s)), false);
}

/* GET /v1/models/{id}: the model when id (percent-decoded) is its name. */
static void handle_model_one(http_server *s, struct evhttp_request *req, const char *enc_id)
{
    char *id = evhttp_uridecode(enc_id, 0, NULL);
    if (id && !strcmp(id, coord_model_name(s->c))) {
        send_json(s, req, "/v1/models/{id}", 200, model_obj(s), false);
    } else {
        char msg[400];
        snprintf(msg, sizeof msg, "the model '%.200s' does not exist (this server has '%.64s')",
                 id ? id : enc_id, coord_model_name(s->c));
        send_error(s, req, "/v1/models/{id}", 404, "model", "model_not_found", msg);
    }
    free(id);
}

static void handle_health(http_server *s, struct evhttp_request *req)
{
    coord_stats *st = malloc(sizeof *st);
    if (!st) {
        send_error(s, req, "/health", 500, NULL, "internal_error", "out of memory");
        return;
    }
    coord_get_stats(s->c, st);
    int ready = 0;
    for (int g = 0; g < st->n_groups; g++) ready += strcmp(st->groups[g].health, "ready") == 0;
    json_t *o = json_pack("{s:s,s:i,s:i,s:I,s:I}", "status", ready ? "ok" : "unavailable",
                          "groups_ready", ready, "groups", st->n_groups, "queue_depth",
                          (json_int_t)st->queue_depth, "running", (json_int_t)st->running);
    if (!ready)
        json_object_set_new(o, "message",
                            json_string("no worker group is ready; start one with `caravan worker "
                                        "--join HOST:PORT`"));
    free(st);
    send_json(s, req, "/health", ready ? 200 : 503, o, false);
}

static void handle_metrics(http_server *s, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    metrics_http_count(&s->m, "/metrics", 200); /* counted before rendering: includes itself */
    metrics_render(s->c, &s->m, b);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void gencb(struct evhttp_request *req, void *arg)
{
    http_server *s = arg;
    const char *uri = evhttp_request_get_uri(req);
    if (!uri) { /* evhttp's own failures (oversized body ...) */
        int code = evhttp_request_get_response_code(req);
        send_error(s, req, "other", code >= 400 ? code : 400, NULL, NULL,
                   code == 413 ? "request body too large" : "malformed HTTP request");
        return;
    }
    const struct evhttp_uri *eu = evhttp_request_get_evhttp_uri(req);
    const char *path = eu ? evhttp_uri_get_path(eu) : NULL;
    if (!path) path = "";
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    static const struct {
        const char *path;
        bool post, auth;
    } routes[] = {
        {"/v1/completions", true, true}, {"/v1/chat/completions", true, true},
        {"/v1/models", false, true},     {"/health", false, false},
        {"/metrics", false, false},      {"/v1/models/{id}", false, true},
    };
    int ri = -1;
    for (int i = 0; i < (int)(sizeof routes / sizeof routes[0]); i++)
        if (!strcmp(path, routes[i].path)) ri = i;
    if (ri < 0 && !strncmp(path, "/v1/models/", 11) && path[11]) ri = 5;
    if (ri < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "no such endpoint: %.200s", path);
        send_error(s, req, "other", 404, NULL, "not_found", msg);
        return;
    }
    const char *ep = routes[ri].path;
    bool want_post = routes[ri].post;
    if (want_post ? m != EVHTTP_REQ_POST : (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", want_post ? "POST" : "GET");
        send_error(s, req, ep, 405, NULL, "method_not_allowed",
                   want_post ? "use POST for this endpoint" : "use GET for this endpoint");
        return;
    }
    if (routes[ri].auth &&
        !coord_check_api_key(s->c, evhttp_find_header(evhttp_request_get_input_headers(req),
                                                      "Authorization"))) {
        bool has = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
        send_error(s, req, ep, 401, NULL, "invalid_api_key",
                   has ? "invalid API key" : "missing API key (Authorization: Bearer KEY)");
        return;
    }
    switch (ri) {
    case 0: handle_generate(s, req, false); break;
    case 1: handle_generate(s, req, true); break;
    case 2: handle_models(s, req); break;
    case 3: handle_health(s, req); break;
    case 4: handle_metrics(s, req); break;
    case 5: handle_model_one(s, req, path + 11); break;
    }
}

/* ---- lifetime (the hooks coord.h declares) ---- */

cv_status coord_http_start(coord *c, struct event_base *base, const char *host, int port,
                           void **handle, int *bound_port, cv_err *e)
{
    *handle = NULL;
    http_server *s = calloc(1, sizeof *s);
    if (!s) return cv_err_set(e, CV_ENOMEM, "http: out of memory");
    s->c = c;
    s->base = base;
    s->http = evhttp_new(base);
    if (!s->http) {
        free(s);
        return cv_err_set(e, CV_ENOMEM, "http: evhttp_new failed");
    }
    evhttp_set_max_body_size(s->http, HTTP_MAX_BODY);
    evhttp_set_max_headers_size(s->http, HTTP_MAX_HEADERS);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_timeout(s->http, 120); /* idle keep-alive / slow request bodies */
    evhttp_set_gencb(s->http, gencb, s);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)port);
    if (!bs) {
        evhttp_free(s->http);
        free(s);
        return cv_err_set(e, CV_EIO, "http: cannot listen on %s:%d: %s", host, port, strerror(errno));
    }
    *bound_port = port;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) *bound_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6) *bound_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    *handle = s;
    return CV_OK;
}

void coord_http_stop(void *handle)
{
    http_server *s = handle;
    if (!s) return;
    while (s->live) {
        hreq *h = s->live;
        if (h->cr) coord_req_cancel(h->cr);
        h->cr = NULL;
        hreq_detach(h);
        hreq_unlink_free(h); /* evhttp_free below frees the requests and connections */
    }
    evhttp_free(s->http);
    free(s);
}
