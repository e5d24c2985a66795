/* net_generate.c - `caravan generate [--server HOST:PORT] -p PROMPT [-n N ...]`:
 * a gRPC client (nghttp2 client session over a blocking socket) for
 * caravan.v1.Caravan/Generate that streams the text to stdout. Exit status:
 * 0 on success, 1 with the gRPC status and message on stderr otherwise. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "caravan.pb-c.h"
#include "cli/cli.h"
#include "core/sampler.h"

/* One call (stream). */
typedef struct gen_stream {
    struct gen_client *g;
    int32_t stream_id;
    size_t req_off;
    uint8_t *buf;          /* response bytes not yet parsed into messages */
    size_t buf_len, buf_cap;
    int grpc_status;       /* -1 until the trailers */
    char grpc_message[512];
    int http_status;
    bool closed;
    int64_t n_tokens;
    int64_t prompt_tokens, completion_tokens;
    char finish[32];
    double t_first, t_last; /* arrival of the first / last token (s) */
} gen_stream;

typedef struct gen_client {
    int fd;
    uint8_t *req;          /* framed request message (the same for every call) */
    size_t req_len;
    bool json, quiet;
    int n_open, n_done, n_failed;
    int64_t tokens_total;
    double stream_tok_s_sum;  /* per-stream generation rate, first token excluded */
    int n_rate;
    gen_stream last;       /* the last finished call (status, usage) */
} gen_client;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static ssize_t send_cb(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
    gen_client *g = ud;
    ssize_t w = send(g->fd, data, len, MSG_NOSIGNAL);
    if (w < 0) return errno == EAGAIN ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
    return w;
}

static ssize_t req_read_cb(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t len,
                           uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    gen_client *g = ud;
    gen_stream *gs = src->ptr;
    size_t n = g->req_len - gs->req_off;
    if (n > len) n = len;
    memcpy(buf, g->req + gs->req_off, n);
    gs->req_off += n;
    if (gs->req_off == g->req_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void pct_decode(const uint8_t *v, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        if (v[i] == '%' && i + 2 < n) {
            char hx[3] = {(char)v[i + 1], (char)v[i + 2], 0};
            out[o++] = (char)strtol(hx, NULL, 16);
            i += 2;
        } else {
            out[o++] = (char)v[i];
        }
    }
    out[o] = 0;
}

static int header_cb(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    gen_stream *g = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!g) return 0;
    if (nl == 11 && !memcmp(name, "grpc-status", 11)) {
        char b[16];
        size_t n = vl < 15 ? vl : 15;
        memcpy(b, value, n);
        b[n] = 0;
        g->grpc_status = atoi(b);
    } else if (nl == 12 && !memcmp(name, "grpc-message", 12)) {
        pct_decode(value, vl, g->grpc_message, sizeof g->grpc_message);
    } else if (nl == 7 && !memcmp(name, ":status", 7)) {
        char b[8];
        size_t n = vl < 7 ? vl : 7;
        memcpy(b, value, n);
        b[n] = 0;
        g->http_status = atoi(b);
    }
    return 0;
}

static void print_json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p == '\n') printf("\\n");
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static void handle_message(gen_stream *gs, const uint8_t *m, size_t n)
{
    gen_client *g = gs->g;
    Caravan__V1__GenerateResponse *r = caravan__v1__generate_response__unpack(NULL, n, m);
    if (!r) {
        fprintf(stderr, "caravan generate: invalid GenerateResponse from the server\n");
        return;
    }
    if (r->n_token_ids) {
        double t = now_s();
        if (gs->n_tokens == 0) gs->t_first = t;
        gs->t_last = t;
    }
    if (g->quiet) {
    } else if (g->json) {
        for (size_t i = 0; i < r->n_token_ids; i++) {
            printf("{\"id\": %d", r->token_ids[i]);
            if (i == 0) {
                printf(", \"text\": ");
                print_json_str(r->text ? r->text : "");
            }
            if (i < r->n_tokens) printf(", \"logprob\": %.6g", r->tokens[i]->logprob);
            printf("}\n");
        }
    } else if (r->text && !r->echo) {
        fputs(r->text, stdout);
    }
    fflush(stdout);
    gs->n_tokens += (int64_t)r->n_token_ids;
    if (r->finish_reason && r->finish_reason[0])
        snprintf(gs->finish, sizeof gs->finish, "%s", r->finish_reason);
    if (r->usage) {
        gs->prompt_tokens = r->usage->prompt_tokens;
        gs->completion_tokens = r->usage->completion_tokens;
    }
    caravan__v1__generate_response__free_unpacked(r, NULL);
}

static int data_cb(nghttp2_session *ng, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                   void *ud)
{
    gen_stream *g = nghttp2_session_get_stream_user_data(ng, sid);
    if (!g) return 0;
    if (g->buf_len + len > g->buf_cap) {
        size_t nc = g->buf_cap ? g->buf_cap * 2 : 4096;
        while (nc < g->buf_len + len) nc *= 2;
        uint8_t *nb = realloc(g->buf, nc);
        if (!nb) return NGHTTP2_ERR_CALLBACK_FAILURE;
        g->buf = nb;
        g->buf_cap = nc;
    }
    memcpy(g->buf + g->buf_len, data, len);
    g->buf_len += len;
    size_t off = 0;
    while (g->buf_len - off >= 5) {
        uint32_t n = (uint32_t)g->buf[off + 1] << 24 | (uint32_t)g->buf[off + 2] << 16 |
                     (uint32_t)g->buf[off + 3] << 8 | g->buf[off + 4];
        if (g->buf_len - off - 5 < n) break;
        handle_message(g, g->buf + off + 5, n);
        off += 5 + (size_t)n;
    }
    memmove(g->buf, g->buf + off, g->buf_len - off);
    g->buf_len -= off;
    return 0;
}

static int close_cb(nghttp2_session *ng, int32_t sid, uint32_t err, void *ud)
{
    gen_client *c = ud;
    gen_stream *g = nghttp2_session_get_stream_user_data(ng, sid);
    if (!g) return 0;
    g->closed = true;
    if (err && g->grpc_status < 0) {
        g->grpc_status = 13;
        snprintf(g->grpc_message, sizeof g->grpc_message, "stream reset by the server (HTTP/2 error %u)",
                 err);
    }
    c->n_open--;
    c->n_done++;
    if (g->grpc_status != 0) c->n_failed++;
    c->tokens_total += g->n_tokens;
    if (g->n_tokens > 1 && g->t_last > g->t_first) {
        c->stream_tok_s_sum += (double)(g->n_tokens - 1) / (g->t_last - g->t_first);
        c->n_rate++;
    }
    free(g->buf);
    g->buf = NULL;
    c->last = *g;
    nghttp2_session_set_stream_user_data(ng, sid, NULL);
    free(g);
    return 0;
}

static int dial(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host) return -1;
    memcpy(host, hostport, colon - hostport);
    host[colon - hostport] = 0;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &ai)) return -1;
    int fd = -1;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static void usage(void)
{
    printf("usage: caravan generate [--server HOST:PORT] -p PROMPT [options]\n"
           "  --server HOST:PORT     coordinator gRPC address (default 127.0.0.1:50051)\n"
           "  -p, --prompt TEXT      prompt\n"
           "  -n, --n-predict N      tokens to generate (default 128; 0 = up to the context)\n"
           "  --temp T  --top-k K  --top-p P  --min-p P  --seed S\n"
           "  --repeat-penalty R  --frequency-penalty F  --presence-penalty P\n"
           "  --stop TEXT            stop string (repeatable)\n"
           "  --no-bos               do not add BOS\n"
           "  --json                 one JSON object per token (id, text, logprob)\n"
           "  --api-key KEY          sent as 'authorization: Bearer KEY' (or $CARAVAN_API_KEY)\n"
           "  --timeout S            deadline in seconds (grpc-timeout)\n"
           "  --ignore-eos           keep generating past end-of-generation tokens\n"
           "  --bench                load generator: no text output, one summary line\n"
           "  --clients C            with --bench: C concurrent streams on one connection (default 1)\n"
           "  --requests R           with --bench: R calls in all (default C)\n");
}

int cmd_generate(int argc, char **argv)
{
    const char *server = "127.0.0.1:50051", *prompt = "", *api_key = getenv("CARAVAN_API_KEY");
    int64_t n_predict = 128, timeout_s = 0;
    Caravan__V1__GenerateRequest rq = CARAVAN__V1__GENERATE_REQUEST__INIT;
    Caravan__V1__SamplingParams sp = CARAVAN__V1__SAMPLING_PARAMS__INIT;
    char *stops[16];
    size_t n_stop = 0;
    gen_client g = {.fd = -1};
    bool bench = false;
    int64_t clients = 1, requests = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double dv;
        int64_t iv;
#define F(s) (!strcmp(a, s))
        if (F("-h") || F("--help")) {
            usage();
            return 0;
        }
        if (F("--json") || F("--no-bos") || F("--bench") || F("--ignore-eos")) {
            if (F("--json")) g.json = true;
            else if (F("--bench")) bench = g.quiet = true;
            else if (F("--ignore-eos")) rq.ignore_eos = true;
            else rq.no_bos = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "caravan generate: unknown option or missing value: '%s'\n", a);
            return 2;
        }
        i++;
        if (F("--server")) server = v;
        else if (F("-p") || F("--prompt")) prompt = v;
        else if (F("--api-key")) api_key = v;
        else if (F("-n") || F("--n-predict")) {
            if (!cli_parse_int("generate", a, v, 0, 1 << 24, &n_predict)) return 2;
        } else if (F("--clients")) {
            if (!cli_parse_int("generate", a, v, 1, 1024, &clients)) return 2;
        } else if (F("--requests")) {
            if (!cli_parse_int("generate", a, v, 1, 1 << 24, &requests)) return 2;
        } else if (F("--timeout")) {
            if (!cli_parse_int("generate", a, v, 1, 86400, &timeout_s)) return 2;
        } else if (F("--seed")) {
            if (!cli_parse_int("generate", a, v, 0, INT64_MAX, &iv)) return 2;
            sp.seed = (uint64_t)iv;
        } else if (F("--top-k")) {
            if (!cli_parse_int("generate", a, v, 0, 1 << 30, &iv)) return 2;
            sp.top_k = (int32_t)iv;
        } else if (F("--stop")) {
            if (n_stop < 16) stops[n_stop++] = (char *)v;
        } else if (F("--temp") || F("--top-p") || F("--min-p") || F("--repeat-penalty") ||
                   F("--frequency-penalty") || F("--presence-penalty")) {
            if (!cli_parse_float("generate", a, v, -1e9, 1e9, &dv)) return 2;
            if (F("--temp")) sp.temperature = (float)dv;
            else if (F("--top-p")) sp.top_p = (float)dv;
            else if (F("--min-p")) sp.min_p = (float)dv;
            else if (F("--repeat-penalty")) sp.repeat_penalty = (float)dv;
            else if (F("--frequency-penalty")) sp.frequency_penalty = (float)dv;
            else sp.presence_penalty = (float)dv;
        } else {
            fprintf(stderr, "caravan generate: unknown option '%s' (try --help)\n", a);
            return 2;
        }
#undef F
    }
    signal(SIGPIPE, SIG_IGN);
    rq.input_case = CARAVAN__V1__GENERATE_REQUEST__INPUT_PROMPT;
    rq.prompt = (char *)prompt;
    rq.max_tokens = (int32_t)n_predict;
    rq.sampling = &sp;
    rq.n_stop = n_stop;
    rq.stop = stops;
    size_t n = caravan__v1__generate_request__get_packed_size(&rq);
    g.req = malloc(n + 5);
    if (!g.req) return 1;
    g.req[0] = 0;
    g.req[1] = (uint8_t)(n >> 24);
    g.req[2] = (uint8_t)(n >> 16);
    g.req[3] = (uint8_t)(n >> 8);
    g.req[4] = (uint8_t)n;
    caravan__v1__generate_request__pack(&rq, g.req + 5);
    g.req_len = n + 5;

    g.fd = dial(server);
    if (g.fd < 0) {
        fprintf(stderr, "caravan generate: cannot connect to %s: %s\n", server, strerror(errno));
        free(g.req);
        return 1;
    }
    nghttp2_session_callbacks *cbs;
    nghttp2_session *ng = NULL;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, close_cb);
    nghttp2_session_client_new(&ng, cbs, &g);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[1] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    if (!ng) {
        fprintf(stderr, "caravan generate: out of memory\n");
        close(g.fd);
        free(g.req);
        return 1;
    }
    nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, iv, 1);
    char path[] = "/caravan.v1.Caravan/Generate";
    char auth[600] = "", tmo[32] = "";
    nghttp2_nv hdr[8];
    int nh = 0;
#define H(n_, v_) hdr[nh++] = (nghttp2_nv){(uint8_t *)(n_), (uint8_t *)(v_), strlen(n_), strlen(v_), 0}
    H(":method", "POST");
    H(":scheme", "http");
    H(":path", path);
    H(":authority", server);
    H("content-type", "application/grpc");
    H("te", "trailers");
    if (api_key && api_key[0]) {
        snprintf(auth, sizeof auth, "Bearer %s", api_key);
        H("authorization", auth);
    }
    if (timeout_s > 0) {
        snprintf(tmo, sizeof tmo, "%lldS", (long long)timeout_s);
        H("grpc-timeout", tmo);
    }
#undef H
    if (!bench) clients = requests = 1;
    if (requests <= 0) requests = clients;
    int64_t submitted = 0;
    int rc = 0;
    uint8_t rbuf[16384];
    double t0 = now_s();
    while (g.n_done < requests) {
        while (submitted < requests && g.n_open < clients) {
            gen_stream *gs = calloc(1, sizeof *gs);
            if (!gs) break;
            gs->g = &g;
            gs->grpc_status = -1;
            nghttp2_data_provider dp = {.source = {.ptr = gs}, .read_callback = req_read_cb};
            gs->stream_id = nghttp2_submit_request(ng, NULL, hdr, nh, &dp, gs);
            if (gs->stream_id < 0) {
                free(gs);
                rc = -1;
                break;
            }
            submitted++;
            g.n_open++;
        }
        if (rc < 0 || nghttp2_session_send(ng) != 0) {
            rc = -1;
            break;
        }
        struct pollfd pf = {.fd = g.fd, .events = POLLIN};
        if (poll(&pf, 1, 1000) < 0 && errno != EINTR) {
            rc = -1;
            break;
        }
        if (!(pf.revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t r = recv(g.fd, rbuf, sizeof rbuf, 0);
        if (r <= 0) {
            rc = -1;
            break;
        }
        if (nghttp2_session_mem_recv(ng, rbuf, (size_t)r) < 0) {
            rc = -1;
            break;
        }
    }
    double wall = now_s() - t0;
    nghttp2_session_del(ng);
    close(g.fd);
    free(g.req);
    if (bench) {
        printf("caravan generate --bench: server=%s clients=%lld requests=%d failed=%d tokens=%lld "
               "wall_s=%.3f req_s=%.2f tok_s=%.1f stream_tok_s=%.1f\n",
               server, (long long)clients, g.n_done, g.n_failed + (int)(requests - g.n_done),
               (long long)g.tokens_total, wall, g.n_done / wall, g.tokens_total / wall,
               g.n_rate ? g.stream_tok_s_sum / g.n_rate : 0.0);
        if (g.n_failed)
            fprintf(stderr, "caravan generate: last failure: gRPC status %d: %s\n", g.last.grpc_status,
                    g.last.grpc_message);
        return rc < 0 || g.n_failed ? 1 : 0;
    }
    if (!g.json) printf("\n");
    if (g.n_done == 0) {
        fprintf(stderr, "caravan generate: connection to %s failed before the call finished\n", server);
        return 1;
    }
    if (g.last.grpc_status != 0) {
        fprintf(stderr, "caravan generate: gRPC status %d: %s\n",
                g.last.grpc_status < 0 ? 2 : g.last.grpc_status,
                g.last.grpc_message[0] ? g.last.grpc_message : "(no message)");
        return 1;
    }
    fprintf(stderr, "caravan generate: finish=%s prompt_tokens=%lld completion_tokens=%lld\n",
            g.last.finish[0] ? g.last.finish : "?", (long long)g.last.prompt_tokens,
            (long long)g.last.completion_tokens);
    return 0;
}
