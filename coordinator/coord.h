/* coord.h - the coordinator core and its request API, shared by every front
 * end (gRPC in grpc.c, OpenAI HTTP in http*.c, batch jobs).
 *
 * One process, one libevent event_base, one thread: every function here is
 * called on the event-loop thread, and every callback fires on it. A front end
 * turns its wire request into a coord_gen_params, calls coord_generate, and
 * receives text/tokens through on_chunk and exactly one on_done (unless it
 * calls coord_req_cancel first). What the coordinator does for a request, in
 * one place (coord.c):
 *
 *   tokenize (model tokenizer) -> validate (context, parameters) ->
 *   sched_submit (bounded queue) -> tokens arrive from a group ->
 *   streaming detokenizer -> stop strings (text that could begin a stop
 *   string is held back) / EOS / max_tokens -> on_chunk ... on_done (usage)
 *
 * Errors a front end must map (coord_code_grpc / coord_code_http give the
 * numbers): COORD_INVALID_ARGUMENT (prompt over the context, bad parameters)
 * -> gRPC 3 / HTTP 400; COORD_RESOURCE_EXHAUSTED (queue full) -> 8 / 429;
 * COORD_UNAVAILABLE (no worker group) -> 14 / 503; COORD_UNAUTHENTICATED
 * (API key) -> 16 / 401; COORD_DEADLINE_EXCEEDED -> 4 / 504;
 * COORD_CANCELLED -> 1 / 499; COORD_INTERNAL -> 13 / 500. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/sampler.h"
#include "../core/status.h"

struct event_base;
struct gguf_file;

typedef struct coord coord;
typedef struct coord_req coord_req;

/* ---- configuration -------------------------------------------------------- */

typedef struct coord_config {
    const char *model_path;    /* GGUF: tokenizer, chat template, n_ctx (no weights loaded) */
    const char *model_name;    /* name reported by /v1/models and Status (default: file name) */
    const char *host;          /* listen address (default "127.0.0.1") */
    int grpc_port;             /* default 50051; < 0: no gRPC listener; 0: ephemeral */
    int http_port;             /* default 8080;  < 0: no HTTP listener; 0: ephemeral */
    int cluster_port;          /* default 50052; < 0: no cluster listener; 0: ephemeral */
    const char *api_key;       /* NULL/"": no client authentication */
    const char *cluster_token; /* NULL/"": groups need no token */
    int64_t max_queue;         /* waiting requests before RESOURCE_EXHAUSTED (default 256) */
    int64_t token_budget;      /* tokens per step (default 256) */
    int64_t max_frame_bytes;   /* cluster frames over this are refused (default 64 MiB) */
    int heartbeat_ms;          /* default 1000 */
    int heartbeat_timeout_ms;  /* a silent group is dropped after this (default 5000) */
    int64_t max_tokens_default;/* max_tokens when a request gives none (default: up to n_ctx) */
} coord_config;

void coord_config_default(coord_config *cfg);

/* Load the tokenizer from cfg->model_path and open the listeners on base.
 * Ports actually bound (after 0 = ephemeral) are in coord_port(). */
cv_status coord_create(const coord_config *cfg, struct event_base *base, coord **out, cv_err *e);
/* Fails every request (CANCELLED, callbacks not called for cancelled ones),
 * closes connections and listeners. */
void coord_free(coord *c);
struct event_base *coord_event_base(coord *c);

typedef enum coord_port_kind { COORD_PORT_GRPC, COORD_PORT_HTTP, COORD_PORT_CLUSTER } coord_port_kind;
int coord_port(const coord *c, coord_port_kind k); /* bound port, -1 if not listening */

/* ---- model information (front ends: chat templates, /v1/models) ---------- */

const char *coord_model_name(const coord *c);
int64_t coord_n_ctx(const coord *c);     /* context of the smallest live group, else of the model */
int64_t coord_n_vocab(const coord *c);
const struct gguf_file *coord_gguf(const coord *c); /* metadata (tokenizer.chat_template ...) */
struct tokenizer;
const struct tokenizer *coord_tokenizer(const coord *c); /* core/tokenizer.h */

/* Text -> tokens with the model's tokenizer, as Generate tokenizes a text
 * prompt (special-token texts become their ids). *ids is malloc'd (caller
 * frees). add_bos: as the model's add_bos flag says, when true. */
cv_status coord_tokenize(coord *c, const char *text, size_t len, bool add_bos, int32_t **ids,
                         int64_t *n_ids, cv_err *e);
/* Text of one token as it would be streamed (malloc'd, NUL-terminated). */
char *coord_token_text(coord *c, int32_t id);

/* ---- security ---------------------------------------------------------- */

/* True when no API key is configured, or `authorization` (the header or
 * metadata value, may be NULL) is exactly "Bearer <key>". Constant time. */
bool coord_check_api_key(const coord *c, const char *authorization);

/* ---- requests ---------------------------------------------------------- */

typedef enum coord_code {
    COORD_OK = 0,
    COORD_INVALID_ARGUMENT,
    COORD_RESOURCE_EXHAUSTED,
    COORD_UNAVAILABLE,
    COORD_UNAUTHENTICATED,
    COORD_DEADLINE_EXCEEDED,
    COORD_CANCELLED,
    COORD_INTERNAL,
} coord_code;

int coord_code_grpc(coord_code k);  /* gRPC status code number */
int coord_code_http(coord_code k);  /* HTTP status */
const char *coord_code_name(coord_code k); /* "INVALID_ARGUMENT" */

#define COORD_MAX_STOP 16          /* stop strings per request */
#define COORD_MAX_STOP_LEN 256     /* bytes per stop string */

typedef struct coord_gen_params {
    /* Input: text (tokenized here) or token ids (used as given); exactly one. */
    const char *prompt;            /* UTF-8, may be NULL when prompt_tokens is set */
    size_t prompt_len;
    const int32_t *prompt_tokens;  /* copied */
    int64_t n_prompt_tokens;
    bool add_bos;                  /* with text: add BOS if the model wants it (default true) */
    bool parse_special;            /* with text: "<|eot_id|>" etc. become control tokens (chat) */
    int64_t max_tokens;            /* 0: coord_config.max_tokens_default / up to the context */
    sampling_params sp;            /* sampling_params_default() then overridden; n_top_logprobs = logprobs */
    const char *const *stop;       /* n_stop stop strings (copied), <= COORD_MAX_STOP */
    int n_stop;
    bool ignore_eos;
    bool echo;                     /* first chunk: the prompt (text and ids), chunk.echo = true */
    int64_t timeout_ms;            /* 0: none; else DEADLINE_EXCEEDED after it */
} coord_gen_params;

void coord_gen_params_default(coord_gen_params *p);

typedef struct coord_chunk {
    const char *text;              /* new text, not NUL-terminated; may be empty */
    size_t text_len;
    int32_t n_tokens;              /* tokens sampled since the previous chunk (0 or 1 usually) */
    const int32_t *tokens;
    const sample_result *results;  /* n_tokens entries: logprob, top (n_top per sp.n_top_logprobs) */
    bool echo;                     /* this chunk is the echoed prompt (results NULL) */
} coord_chunk;

typedef enum coord_finish {
    COORD_FINISH_STOP = 0,         /* EOS or stop string */
    COORD_FINISH_LENGTH,           /* max_tokens or context full */
    COORD_FINISH_ERROR,            /* see code/message */
} coord_finish;

typedef struct coord_final {
    coord_finish finish;
    const char *finish_reason;     /* "stop" | "length" | "error" */
    coord_code code;               /* COORD_OK unless finish == COORD_FINISH_ERROR */
    const char *message;           /* error text, "" when ok */
    int64_t prompt_tokens;
    int64_t completion_tokens;
} coord_final;

typedef struct coord_req_callbacks {
    /* New text/tokens. Held-back text (a possible stop-string prefix) is sent
     * later or dropped when the stop string completes. */
    void (*on_chunk)(void *ud, const coord_chunk *ch);
    /* Exactly once, last. The coord_req is freed right after it returns. */
    void (*on_done)(void *ud, const coord_final *f);
} coord_req_callbacks;

/* Start a request. On failure returns the code (never COORD_OK) with a
 * message in msg, no callbacks fire and *out is NULL. On success *out is the
 * handle until on_done. Callbacks never fire from inside coord_generate. */
coord_code coord_generate(coord *c, const coord_gen_params *p, const coord_req_callbacks *cb,
                          void *ud, coord_req **out, char *msg, size_t msg_len);

/* The client is gone (disconnect, RST_STREAM, cancel): callbacks never fire
 * again (not even on_done) and the sequence's slot is freed at once (a
 * running sequence: released in its group's next step). Safe to call from
 * inside this request's own callbacks. */
void coord_req_cancel(coord_req *r);
int64_t coord_req_prompt_tokens(const coord_req *r);
int64_t coord_req_id(const coord_req *r);

/* ---- status and metrics ------------------------------------------------- */

#define COORD_MAX_GROUPS_REPORTED 64

typedef struct coord_group_info {
    int id;
    char name[64];                 /* peer address */
    int ranks, tp, pp;
    char plan[256];
    const char *health;            /* "joining" | "ready" */
    int64_t n_slots, slots_used, n_ctx;
    int64_t steps_done;
    int64_t inflight_steps;
    double step_ms_sum;            /* for Prometheus: step latency sum (ms) and count = steps_done */
} coord_group_info;

typedef struct coord_stats {
    int64_t requests_total;        /* accepted by coord_generate */
    int64_t requests_rejected;     /* refused by coord_generate (any code) */
    int64_t requests_failed;       /* finished with an error */
    int64_t requests_active;       /* accepted, not finished */
    int64_t queue_depth;           /* waiting for a slot */
    int64_t running;               /* holding a slot */
    int64_t prompt_tokens;         /* totals */
    int64_t tokens_generated;
    int64_t groups_joined, groups_lost;
    int64_t max_queue;
    int n_groups;
    coord_group_info groups[COORD_MAX_GROUPS_REPORTED];
} coord_stats;

void coord_get_stats(coord *c, coord_stats *st);

/* ---- front-end hooks ---------------------------------------------------- */

/* The OpenAI HTTP front end (coordinator/http*.c) provides these; when linked
 * in and http_port >= 0, coord_create calls coord_http_start and coord_free
 * calls coord_http_stop. *bound_port: the port actually bound. */
cv_status coord_http_start(coord *c, struct event_base *base, const char *host, int port,
                           void **handle, int *bound_port, cv_err *e) __attribute__((weak));
void coord_http_stop(void *handle) __attribute__((weak));
