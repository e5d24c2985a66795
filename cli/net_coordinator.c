/* net_coordinator.c - `caravan coordinator -m MODEL [options]`: the
 * coordinator alone (tokenizer from the GGUF, no weights); worker groups join
 * it with `caravan worker --join HOST:CLUSTER_PORT`. Also the option parser
 * and event loop that `caravan serve` reuses (net_common.h). */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/net_common.h"
#include "core/log.h"

static void coord_usage(const char *cmd)
{
    printf("usage: caravan %s -m MODEL [options]\n"
           "  --host H               listen address (default 127.0.0.1)\n"
           "  --grpc-port P          gRPC port (default 50051; 0 = any free port, -1 = off)\n"
           "  --http-port P          OpenAI-compatible HTTP port (default 8080)\n"
           "  --cluster-port P       port worker groups join (default 50052)\n"
           "  --api-key KEY          clients must send 'authorization: Bearer KEY' (or $CARAVAN_API_KEY)\n"
           "  --cluster-token T      groups must present T (or $CARAVAN_CLUSTER_TOKEN)\n"
           "  --max-queue N          waiting requests before RESOURCE_EXHAUSTED / 429 (default 256)\n"
           "  --batch N              tokens per step (default 256)\n"
           "  --max-frame BYTES      largest cluster frame accepted (default 64M)\n"
           "  --heartbeat-ms N       heartbeat period (default 1000)\n"
           "  --heartbeat-timeout-ms N  drop a silent group after N ms (default 5000)\n"
           "  --name NAME            model name reported to clients\n",
           cmd);
}

int net_coord_parse(const char *cmd, int argc, char **argv, coord_config *cfg, char **rest,
                    int *n_rest)
{
    coord_config_default(cfg);
    cfg->api_key = getenv("CARAVAN_API_KEY");
    cfg->cluster_token = getenv("CARAVAN_CLUSTER_TOKEN");
    if (n_rest) *n_rest = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t iv;
        uint64_t uv;
#define FLAG(s) (!strcmp(a, s))
#define NEED()                                                                        \
    do {                                                                              \
        if (!v) {                                                                     \
            fprintf(stderr, "caravan %s: %s needs a value\n", cmd, a);                \
            return 2;                                                                 \
        }                                                                             \
        i++;                                                                          \
    } while (0)
        if (FLAG("-h") || FLAG("--help")) {
            coord_usage(cmd);
            return 0;
        } else if (FLAG("-m") || FLAG("--model")) {
            NEED();
            cfg->model_path = v;
        } else if (FLAG("--host")) {
            NEED();
            cfg->host = v;
        } else if (FLAG("--grpc-port") || FLAG("--http-port") || FLAG("--cluster-port")) {
            NEED();
            if (!cli_parse_int(cmd, a, v, -1, 65535, &iv)) return 2;
            if (FLAG("--grpc-port")) cfg->grpc_port = (int)iv;
            else if (FLAG("--http-port")) cfg->http_port = (int)iv;
            else cfg->cluster_port = (int)iv;
        } else if (FLAG("--api-key")) {
            NEED();
            cfg->api_key = v;
        } else if (FLAG("--cluster-token")) {
            NEED();
            cfg->cluster_token = v;
        } else if (FLAG("--max-queue")) {
            NEED();
            if (!cli_parse_int(cmd, a, v, 1, 1 << 24, &iv)) return 2;
            cfg->max_queue = iv;
        } else if (FLAG("--batch") || FLAG("-b")) {
            NEED();
            if (!cli_parse_int(cmd, a, v, 1, 1 << 20, &iv)) return 2;
            cfg->token_budget = iv;
        } else if (FLAG("--max-frame")) {
            NEED();
            if (!cli_parse_size(cmd, a, v, &uv)) return 2;
            if (uv < 64 || uv > (1ull << 31)) {
                fprintf(stderr, "caravan %s: bad value '%s' for --max-frame: 64 .. 2G\n", cmd, v);
                return 2;
            }
            cfg->max_frame_bytes = (int64_t)uv;
        } else if (FLAG("--heartbeat-ms")) {
            NEED();
            if (!cli_parse_int(cmd, a, v, 10, 600000, &iv)) return 2;
            cfg->heartbeat_ms = (int)iv;
        } else if (FLAG("--heartbeat-timeout-ms")) {
            NEED();
            if (!cli_parse_int(cmd, a, v, 20, 3600000, &iv)) return 2;
            cfg->heartbeat_timeout_ms = (int)iv;
        } else if (FLAG("--name")) {
            NEED();
            cfg->model_name = v;
        } else if (rest) {
            rest[(*n_rest)++] = argv[i];
        } else {
            fprintf(stderr, "caravan %s: unknown option '%s' (try caravan %s --help)\n", cmd, a, cmd);
            return 2;
        }
#undef FLAG
#undef NEED
    }
    if (!cfg->model_path) {
        fprintf(stderr, "caravan %s: -m MODEL is required (try caravan %s --help)\n", cmd, cmd);
        return 2;
    }
    return -1;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    log_info("signal %d: shutting down", (int)sig);
    event_base_loopbreak(arg);
}

int net_coord_run(const char *cmd, const coord_config *cfg,
                  void (*on_start)(coord *c, struct event_base *base, void *ud),
                  void (*on_stop)(void *ud), void *ud)
{
    signal(SIGPIPE, SIG_IGN);
    cv_log_set_tag("coord");
    struct event_base *base = event_base_new();
    if (!base) {
        fprintf(stderr, "caravan %s: cannot create the event loop\n", cmd);
        return 1;
    }
    coord *c = NULL;
    cv_err e;
    cv_err_clear(&e);
    if (coord_create(cfg, base, &c, &e) != CV_OK) {
        fprintf(stderr, "caravan %s: %s\n", cmd, e.msg);
        event_base_free(base);
        return 1;
    }
    struct event *sint = evsignal_new(base, SIGINT, on_signal, base);
    struct event *sterm = evsignal_new(base, SIGTERM, on_signal, base);
    event_add(sint, NULL);
    event_add(sterm, NULL);
    printf("caravan: listening grpc=%d http=%d cluster=%d host=%s model=%s\n",
           coord_port(c, COORD_PORT_GRPC), coord_port(c, COORD_PORT_HTTP),
           coord_port(c, COORD_PORT_CLUSTER), cfg->host ? cfg->host : "127.0.0.1",
           coord_model_name(c));
    fflush(stdout);
    if (on_start) on_start(c, base, ud);
    event_base_dispatch(base);
    if (on_stop) on_stop(ud);
    coord_free(c);
    event_free(sint);
    event_free(sterm);
    event_base_free(base);
    return 0;
}

int cmd_coordinator(int argc, char **argv)
{
    coord_config cfg;
    int rc = net_coord_parse("coordinator", argc, argv, &cfg, NULL, NULL);
    if (rc >= 0) return rc;
    return net_coord_run("coordinator", &cfg, NULL, NULL, NULL);
}
