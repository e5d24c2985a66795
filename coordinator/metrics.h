/* metrics.h - Prometheus text exposition (format 0.0.4) of the coordinator's
 * counters for GET /metrics: the HTTP front end's per-endpoint/status request
 * counts (kept here) plus the core's coord_stats (requests, tokens, queue,
 * running sequences, groups, per-group step latency as a summary).
 * Not thread-safe: everything runs on the coordinator's event loop. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "coord.h"

struct evbuffer;

#define METRICS_MAX_ROWS 64 /* distinct (endpoint, status) pairs counted */

typedef struct metrics_http_row {
    const char *endpoint; /* static string: "/v1/completions", ..., "other" */
    int status;           /* HTTP status sent */
    int64_t count;
} metrics_http_row;

typedef struct metrics_http {
    metrics_http_row rows[METRICS_MAX_ROWS];
    int n_rows;
    int64_t overflow;          /* responses whose (endpoint, status) found no free row */
    int64_t disconnects;       /* clients gone before their response completed */
    int64_t streams_started;   /* SSE responses begun */
    int64_t streams_active;    /* SSE responses in progress */
} metrics_http;

/* Count one response; endpoint must be a string with static lifetime. */
void metrics_http_count(metrics_http *m, const char *endpoint, int status);

/* Append the whole exposition (HTTP counters, then coord_get_stats) to out. */
void metrics_render(coord *c, const metrics_http *m, struct evbuffer *out);
