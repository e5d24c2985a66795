/* metrics.c - Prometheus text format for GET /metrics (see metrics.h).
 *
 * Every family gets "# HELP" and "# TYPE" lines; label values are escaped
 * (backslash, double quote, newline) as the format requires. Step latency
 * is a summary without quantiles (_sum and _count), since the core keeps a
 * running sum per group. */
#include "metrics.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void metrics_http_count(metrics_http *m, const char *endpoint, int status)
{
    for (int i = 0; i < m->n_rows; i++) {
        if (m->rows[i].status == status && strcmp(m->rows[i].endpoint, endpoint) == 0) {
            m->rows[i].count++;
            return;
        }
    }
    if (m->n_rows == METRICS_MAX_ROWS) {
        m->overflow++;
        return;
    }
    m->rows[m->n_rows++] = (metrics_http_row){.endpoint = endpoint, .status = status, .count = 1};
}

/* label value escaping: \ -> \\, " -> \", newline -> \n */
static void esc(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = in; *p && o + 3 < cap; p++) {
        if (*p == '\\' || *p == '"') {
            out[o++] = '\\';
            out[o++] = *p;
        } else if (*p == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = 0;
}

static void family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(struct evbuffer *b, const char *name, const char *type, const char *help,
                   int64_t v)
{
    family(b, name, type, help);
    evbuffer_add_printf(b, "%s %lld\n", name, (long long)v);
}

void metrics_render(coord *c, const metrics_http *m, struct evbuffer *b)
{
    coord_stats *st = malloc(sizeof *st);
    if (!st) return;
    coord_get_stats(c, st);

    family(b, "caravan_http_requests_total", "counter",
           "HTTP responses sent by the OpenAI front end, by endpoint and status code.");
    for (int i = 0; i < m->n_rows; i++)
        evbuffer_add_printf(b, "caravan_http_requests_total{endpoint=\"%s\",code=\"%d\"} %lld\n",
                            m->rows[i].endpoint, m->rows[i].status, (long long)m->rows[i].count);
    scalar(b, "caravan_http_requests_uncounted_total", "counter",
           "HTTP responses not broken down by endpoint and code (table full).", m->overflow);
    scalar(b, "caravan_http_client_disconnects_total", "counter",
           "HTTP clients that went away before their response completed (sequence freed).",
           m->disconnects);
    scalar(b, "caravan_http_streams_total", "counter", "Server-sent-event streams started.",
           m->streams_started);
    scalar(b, "caravan_http_streams_active", "gauge", "Server-sent-event streams in progress.",
           m->streams_active);

    scalar(b, "caravan_requests_total", "counter",
           "Generation requests accepted by the coordinator (all front ends).", st->requests_total);
    scalar(b, "caravan_requests_rejected_total", "counter",
           "Generation requests refused before running (bad input, queue full, no group).",
           st->requests_rejected);
    scalar(b, "caravan_requests_failed_total", "counter",
           "Accepted generation requests that finished with an error.", st->requests_failed);
    scalar(b, "caravan_requests_active", "gauge", "Accepted generation requests not yet finished.",
           st->requests_active);
    scalar(b, "caravan_queue_depth", "gauge", "Requests waiting for a sequence slot.",
           st->queue_depth);
    scalar(b, "caravan_queue_max", "gauge", "Queue bound (over it: HTTP 429).", st->max_queue);
    scalar(b, "caravan_running_sequences", "gauge", "Sequences holding a slot in a worker group.",
           st->running);
    scalar(b, "caravan_prompt_tokens_total", "counter", "Prompt tokens processed.",
           st->prompt_tokens);
    scalar(b, "caravan_generation_tokens_total", "counter", "Tokens generated.",
           st->tokens_generated);

    int up = 0;
    for (int g = 0; g < st->n_groups; g++) up += strcmp(st->groups[g].health, "ready") == 0;
    scalar(b, "caravan_groups_up", "gauge", "Worker groups ready to serve.", up);
    scalar(b, "caravan_groups_joined_total", "counter", "Worker groups that joined.",
           st->groups_joined);
    scalar(b, "caravan_groups_lost_total", "counter", "Worker groups dropped (disconnect, silence).",
           st->groups_lost);

    char name[160];
    static const struct {
        const char *name, *type, *help;
    } per_group[] = {
        {"caravan_group_slots", "gauge", "Sequence slots of the group."},
        {"caravan_group_slots_used", "gauge", "Slots holding a sequence."},
        {"caravan_group_context_tokens", "gauge", "Context length of the group's slots."},
        {"caravan_group_inflight_steps", "gauge", "Steps submitted and not yet answered."},
        {"caravan_group_ranks", "gauge", "Ranks (processes) in the group."},
        {"caravan_group_step_latency_seconds", "summary",
         "Time from submitting a step to its results, per group."},
    };
    for (size_t k = 0; k < sizeof per_group / sizeof per_group[0]; k++) {
        family(b, per_group[k].name, per_group[k].type, per_group[k].help);
        for (int g = 0; g < st->n_groups; g++) {
            const coord_group_info *gi = &st->groups[g];
            esc(gi->name, name, sizeof name);
            char lab[256];
            snprintf(lab, sizeof lab, "group=\"%d\",name=\"%s\"", gi->id, name);
            switch (k) {
            case 0: evbuffer_add_printf(b, "%s{%s} %lld\n", per_group[k].name, lab, (long long)gi->n_slots); break;
            case 1: evbuffer_add_printf(b, "%s{%s} %lld\n", per_group[k].name, lab, (long long)gi->slots_used); break;
            case 2: evbuffer_add_printf(b, "%s{%s} %lld\n", per_group[k].name, lab, (long long)gi->n_ctx); break;
            case 3: evbuffer_add_printf(b, "%s{%s} %lld\n", per_group[k].name, lab, (long long)gi->inflight_steps); break;
            case 4: evbuffer_add_printf(b, "%s{%s} %d\n", per_group[k].name, lab, gi->ranks); break;
            case 5:
                evbuffer_add_printf(b, "%s_sum{%s} %.9g\n", per_group[k].name, lab, gi->step_ms_sum / 1000.0);
                evbuffer_add_printf(b, "%s_count{%s} %lld\n", per_group[k].name, lab, (long long)gi->steps_done);
                break;
            }
        }
    }
    free(st);
}
