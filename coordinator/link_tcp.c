/* link_tcp.c - the cluster listener and group_link over TCP: a remote worker
 * group leader, on the coordinator's event loop (never blocking).
 *
 * A connection goes HELLO -> LOADING -> READY:
 *   peer Hello     checked: protocol version (a mismatch names both), cluster
 *                  token, sizes; answered with Assign, or Error and close.
 *   peer Ready     the group is added to the coordinator (coord_group_add).
 *   Step/StepResult in submission order, up to `stages` in flight.
 * Heartbeats go out every heartbeat_ms; a peer silent for heartbeat_timeout_ms,
 * a closed socket, an oversized frame (refused from its 4 header bytes, before
 * allocation) or any invalid message drops the peer. Loss is reported to the
 * coordinator from a deferred event, never from inside another callback. */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../core/log.h"
#include "cluster.h"
#include "coord_internal.h"

typedef enum peer_state { PEER_HELLO, PEER_LOADING, PEER_READY, PEER_CLOSING, PEER_DEAD } peer_state;

typedef struct inflight {
    uint64_t id;
    int32_t n_seqs;
} inflight;

typedef struct tcp_peer tcp_peer;
struct cluster_server {
    coord *c;
    struct event_base *base;
    struct evconnlistener *lis;
    tcp_peer *peers; /* all live peer objects */
    int next_group_id;
};

struct tcp_peer {
    cluster_server *srv;
    coord *c;
    struct bufferevent *bev;
    peer_state state;
    char name[64];
    uint64_t last_recv_ms;
    uint64_t closing_since_ms;
    struct event *timer;  /* heartbeat and silence check */
    struct event *defer;  /* loss notification at a safe point */
    group_link link;
    int handle;           /* coordinator group handle once ready, else -1 */
    bool destroyed_by_coord;
    coord_group_desc desc;
    inflight *fl;         /* ring of in-flight steps */
    int fl_head, fl_len, fl_cap;
    cl_env **res;         /* ring of received StepResult/Error envelopes */
    int r_head, r_len, r_cap;
    char why[256];
    tcp_peer *next, *prev;
};

static void peer_free(tcp_peer *p);

static void peer_fail(tcp_peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void peer_fail(tcp_peer *p, const char *fmt, ...)
{
    if (p->state == PEER_DEAD) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, sizeof p->why, fmt, ap);
    va_end(ap);
    log_warn("cluster peer %s dropped: %s", p->name, p->why);
    p->state = PEER_DEAD;
    if (p->bev) {
        bufferevent_free(p->bev);
        p->bev = NULL;
    }
    event_del(p->timer);
    event_active(p->defer, 0, 0);
}

static void peer_defer_cb(evutil_socket_t fd, short what, void *arg)
{
    tcp_peer *p = arg;
    if (p->handle >= 0) {
        int h = p->handle;
        coord_group_lost(p->c, h, p->why); /* destroys the link (and p) */
    } else {
        peer_free(p);
    }
}

static void peer_send(tcp_peer *p, const cl_env *env)
{
    if (!p->bev || p->state == PEER_DEAD) return;
    uint8_t *buf;
    size_t len;
    cv_err e;
    if (cluster_frame_encode(env, &buf, &len, &e)) {
        peer_fail(p, "encode: %s", e.msg);
        return;
    }
    bufferevent_write(p->bev, buf, len);
    free(buf);
}

static void peer_drained_cb(struct bufferevent *bev, void *arg)
{
    tcp_peer *p = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) peer_fail(p, "%s", p->why);
}

/* Send an Error to the peer, then close once it is written. */
static void peer_error_close(tcp_peer *p, cv_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void peer_error_close(tcp_peer *p, cv_status code, const char *fmt, ...)
{
    if (p->state == PEER_DEAD || p->state == PEER_CLOSING) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, sizeof p->why, fmt, ap);
    va_end(ap);
    cl_error er = CARAVAN__CLUSTER__V1__ERROR__INIT;
    er.code = code;
    er.message = p->why;
    cl_env env = CARAVAN__CLUSTER__V1__ENVELOPE__INIT;
    env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_ERROR;
    env.error = &er;
    peer_send(p, &env);
    if (p->state == PEER_DEAD) return;
    p->state = PEER_CLOSING;
    p->closing_since_ms = cluster_now_ms();
    bufferevent_disable(p->bev, EV_READ);
    bufferevent_setcb(p->bev, NULL, peer_drained_cb, NULL, p);
    bufferevent_setwatermark(p->bev, EV_WRITE, 0, 0);
    if (evbuffer_get_length(bufferevent_get_output(p->bev)) == 0) peer_fail(p, "%s", p->why);
}

static void peer_heartbeat(tcp_peer *p)
{
    cl_heartbeat hb = CARAVAN__CLUSTER__V1__HEARTBEAT__INIT;
    hb.time_ms = cluster_now_ms();
    cl_env env = CARAVAN__CLUSTER__V1__ENVELOPE__INIT;
    env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    peer_send(p, &env);
}

static void peer_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    tcp_peer *p = arg;
    uint64_t now = cluster_now_ms();
    if (p->state == PEER_CLOSING) {
        if (now - p->closing_since_ms > 2000) peer_fail(p, "%s", p->why);
        return;
    }
    uint64_t silent = now - p->last_recv_ms;
    if (silent > (uint64_t)coord_heartbeat_timeout_ms(p->c)) {
        peer_fail(p, "no message for %llu ms (heartbeat timeout %d ms)", (unsigned long long)silent,
                  coord_heartbeat_timeout_ms(p->c));
        return;
    }
    if (p->state == PEER_READY || p->state == PEER_LOADING) peer_heartbeat(p);
}

/* ---- group_link ops ---- */

static cv_status tcp_submit(group_link *l, const step *s, cv_err *e)
{
    tcp_peer *p = l->impl;
    if (p->state != PEER_READY) return cv_err_set(e, CV_ECOMM, "group %s is gone", p->name);
    cl_step *ps = cluster_step_to_pb(s);
    if (!ps) return cv_err_set(e, CV_ENOMEM, "step: out of memory");
    cl_env env = CARAVAN__CLUSTER__V1__ENVELOPE__INIT;
    env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_STEP;
    env.step = ps;
    uint8_t *buf;
    size_t len;
    cv_status st = cluster_frame_encode(&env, &buf, &len, e);
    cluster_step_pb_free(ps);
    if (st) return st;
    if (p->fl_len == p->fl_cap) {
        int nc = p->fl_cap ? p->fl_cap * 2 : 8;
        inflight *nf = malloc(nc * sizeof *nf);
        if (!nf) {
            free(buf);
            return cv_err_set(e, CV_ENOMEM, "step queue: out of memory");
        }
        for (int i = 0; i < p->fl_len; i++) nf[i] = p->fl[(p->fl_head + i) % p->fl_cap];
        free(p->fl);
        p->fl = nf;
        p->fl_head = 0;
        p->fl_cap = nc;
    }
    p->fl[(p->fl_head + p->fl_len) % p->fl_cap] = (inflight){s->id, s->n_seqs};
    p->fl_len++;
    bufferevent_write(p->bev, buf, len);
    free(buf);
    /* on the per-token path: write now rather than on the next loop turn
     * (what the socket does not take, the bufferevent writes later) */
    evbuffer_write(bufferevent_get_output(p->bev), bufferevent_getfd(p->bev));
    return CV_OK;
}

static cv_status tcp_poll(group_link *l, step_result *r, int timeout_ms, bool *ready, cv_err *e)
{
    tcp_peer *p = l->impl;
    *ready = false;
    if (p->state != PEER_READY || p->r_len == 0) return CV_OK;
    cl_env *env = p->res[p->r_head];
    p->r_head = (p->r_head + 1) % p->r_cap;
    p->r_len--;
    if (p->fl_len == 0) {
        cluster_env_free(env);
        peer_fail(p, "a result for no outstanding step");
        return CV_OK;
    }
    inflight f = p->fl[p->fl_head];
    p->fl_head = (p->fl_head + 1) % p->fl_cap;
    p->fl_len--;
    cv_status st = CV_OK;
    if (env->msg_case == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_ERROR) {
        *ready = true;
        st = cv_err_set(e, CV_ECOMM, "group %s: step %llu failed: %s", p->name,
                        (unsigned long long)f.id, env->error->message ? env->error->message : "");
    } else if (env->step_result->id != f.id) {
        peer_fail(p, "result for step %llu, expected step %llu",
                  (unsigned long long)env->step_result->id, (unsigned long long)f.id);
    } else {
        cv_err e2;
        int64_t nv = coord_n_vocab(p->c);
        if (cluster_result_from_pb(env->step_result, f.n_seqs, r, &e2)) {
            peer_fail(p, "%s", e2.msg);
        } else {
            *ready = true;
            /* a group must not inject ids the tokenizer does not have */
            for (int32_t i = 0; i < r->n_results && *ready; i++) {
                const sample_result *q = &r->results[i].r;
                bool bad = q->token < 0 || q->token >= nv;
                for (int32_t t = 0; t < q->n_top; t++) bad |= q->top_ids[t] < 0 || q->top_ids[t] >= nv;
                if (bad) {
                    *ready = false;
                    peer_fail(p, "StepResult %llu: token id outside the vocabulary of %lld",
                              (unsigned long long)f.id, (long long)nv);
                }
            }
        }
    }
    cluster_env_free(env);
    return st;
}

static void tcp_destroy(group_link *l)
{
    tcp_peer *p = l->impl;
    peer_free(p);
}

static const group_link_ops tcp_ops = {
    .name = "tcp",
    .submit = tcp_submit,
    .poll = tcp_poll,
    .destroy = tcp_destroy,
};

/* ---- protocol ---- */

static bool str_eq_ct(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++) d |= (unsigned char)a[i] ^ (unsigned char)b[i % (lb ? lb : 1)];
    return d == 0;
}

static void peer_on_hello(tcp_peer *p, const cl_hello *h)
{
    if (h->version != CLUSTER_PROTOCOL_VERSION) {
        peer_error_close(p, CV_EUNSUPPORTED,
                         "cluster protocol version mismatch: the group speaks version %u, "
                         "this coordinator speaks version %u",
                         h->version, CLUSTER_PROTOCOL_VERSION);
        return;
    }
    const char *want = coord_cluster_token(p->c);
    if (want && want[0] && !str_eq_ct(h->token ? h->token : "", want)) {
        peer_error_close(p, CV_EINVAL, "wrong cluster token (--cluster-token)");
        return;
    }
    if (h->ranks < 1 || h->ranks > 65536 || h->stages < 1 || h->stages > 1024) {
        peer_error_close(p, CV_EINVAL, "Hello: ranks %d / stages %d out of range", h->ranks,
                         h->stages);
        return;
    }
    p->desc.ranks = h->ranks;
    p->desc.tp = h->tp > 0 ? h->tp : 1;
    p->desc.pp = h->stages;
    cl_assign as = CARAVAN__CLUSTER__V1__ASSIGN__INIT;
    as.model = (char *)coord_model_path(p->c);
    as.plan = "";
    as.group_id = p->srv->next_group_id++;
    as.heartbeat_ms = (uint32_t)coord_heartbeat_ms(p->c);
    cl_env env = CARAVAN__CLUSTER__V1__ENVELOPE__INIT;
    env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_ASSIGN;
    env.assign = &as;
    peer_send(p, &env);
    p->state = PEER_LOADING;
    log_info("cluster peer %s: hello (%d ranks, tp %d, %d stages), assigned", p->name, h->ranks,
             p->desc.tp, h->stages);
}

static void peer_on_ready(tcp_peer *p, const cl_ready *r)
{
    if (r->n_slots < 1 || r->n_slots > 1 << 20 || r->n_ctx < 1 || r->n_ctx > 1 << 24 ||
        r->stages < 1 || r->stages > 1024) {
        peer_error_close(p, CV_EINVAL, "Ready: n_slots %lld / n_ctx %lld / stages %d out of range",
                         (long long)r->n_slots, (long long)r->n_ctx, r->stages);
        return;
    }
    p->link.ops = &tcp_ops;
    p->link.impl = p;
    p->link.n_slots = r->n_slots;
    p->link.n_ctx = r->n_ctx;
    p->link.max_inflight = r->stages;
    p->desc.pp = r->stages;
    snprintf(p->desc.plan, sizeof p->desc.plan, "%s", r->plan ? r->plan : "");
    p->state = PEER_READY;
    p->handle = coord_group_add(p->c, &p->link, &p->desc);
    log_info("cluster peer %s: ready (%lld slots, n_ctx %lld, %d stages) as group %d", p->name,
             (long long)r->n_slots, (long long)r->n_ctx, r->stages, p->handle);
}

static bool peer_push_result(tcp_peer *p, cl_env *env)
{
    if (p->r_len == p->r_cap) {
        int nc = p->r_cap ? p->r_cap * 2 : 8;
        cl_env **nr = malloc(nc * sizeof *nr);
        if (!nr) return false;
        for (int i = 0; i < p->r_len; i++) nr[i] = p->res[(p->r_head + i) % p->r_cap];
        free(p->res);
        p->res = nr;
        p->r_head = 0;
        p->r_cap = nc;
    }
    p->res[(p->r_head + p->r_len) % p->r_cap] = env;
    p->r_len++;
    return true;
}

static void peer_read_cb(struct bufferevent *bev, void *arg)
{
    tcp_peer *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    bool got_results = false;
    while (p->state != PEER_DEAD && p->state != PEER_CLOSING) {
        size_t avail = evbuffer_get_length(in);
        if (avail < CLUSTER_FRAME_HEADER) break;
        uint8_t hdr[CLUSTER_FRAME_HEADER];
        evbuffer_copyout(in, hdr, sizeof hdr);
        uint32_t n;
        cv_err e;
        if (cluster_frame_length(hdr, coord_max_frame(p->c), &n, &e)) {
            peer_error_close(p, e.code, "%s", e.msg);
            break;
        }
        if (avail < CLUSTER_FRAME_HEADER + (size_t)n) {
            bufferevent_setwatermark(bev, EV_READ, CLUSTER_FRAME_HEADER + (size_t)n, 0);
            break;
        }
        bufferevent_setwatermark(bev, EV_READ, 0, 0);
        evbuffer_drain(in, CLUSTER_FRAME_HEADER);
        uint8_t *body = evbuffer_pullup(in, n);
        cl_env *env = NULL;
        cv_status st = cluster_env_decode(body, n, &env, &e);
        evbuffer_drain(in, n);
        if (st) {
            peer_error_close(p, st, "%s", e.msg);
            break;
        }
        p->last_recv_ms = cluster_now_ms();
        int mc = env->msg_case;
        bool keep = false;
        if (mc == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_HEARTBEAT) {
            /* liveness only */
        } else if (mc == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_ERROR && p->state != PEER_READY) {
            peer_fail(p, "group reported: %s", env->error->message ? env->error->message : "");
        } else if (p->state == PEER_HELLO && mc == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_HELLO) {
            peer_on_hello(p, env->hello);
        } else if (p->state == PEER_LOADING && mc == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_READY) {
            peer_on_ready(p, env->ready);
        } else if (p->state == PEER_READY && (mc == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_STEP_RESULT ||
                                               mc == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_ERROR)) {
            if (p->r_len >= p->fl_len) {
                peer_error_close(p, CV_EFORMAT, "unexpected %s with no step outstanding",
                                 mc == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_ERROR ? "Error" : "StepResult");
            } else if (!peer_push_result(p, env)) {
                peer_fail(p, "out of memory");
            } else {
                keep = true;
                got_results = true;
            }
        } else {
            peer_error_close(p, CV_EFORMAT, "unexpected message (case %d) in state %d", mc, p->state);
        }
        if (!keep) cluster_env_free(env);
    }
    if (got_results && p->state == PEER_READY) coord_group_results(p->c, p->handle);
}

static void peer_event_cb(struct bufferevent *bev, short what, void *arg)
{
    tcp_peer *p = arg;
    if (what & BEV_EVENT_EOF)
        peer_fail(p, "connection closed by the group");
    else if (what & BEV_EVENT_ERROR)
        peer_fail(p, "socket error: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void peer_free(tcp_peer *p)
{
    if (p->bev) bufferevent_free(p->bev);
    if (p->timer) event_free(p->timer);
    if (p->defer) event_free(p->defer);
    for (int i = 0; i < p->r_len; i++) cluster_env_free(p->res[(p->r_head + i) % p->r_cap]);
    free(p->res);
    free(p->fl);
    if (p->prev) p->prev->next = p->next;
    else p->srv->peers = p->next;
    if (p->next) p->next->prev = p->prev;
    free(p);
}

static void accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int socklen,
                      void *arg)
{
    cluster_server *s = arg;
    tcp_peer *p = calloc(1, sizeof *p);
    if (!p) {
        evutil_closesocket(fd);
        return;
    }
    p->srv = s;
    p->c = s->c;
    p->handle = -1;
    char addr[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, addr, sizeof addr);
        port = ntohs(((struct sockaddr_in *)sa)->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof addr);
        port = ntohs(((struct sockaddr_in6 *)sa)->sin6_port);
    }
    snprintf(p->name, sizeof p->name, "%s:%d", addr, port);
    snprintf(p->desc.name, sizeof p->desc.name, "%s", p->name);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    p->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    p->timer = event_new(s->base, -1, EV_PERSIST, peer_timer_cb, p);
    p->defer = event_new(s->base, -1, 0, peer_defer_cb, p);
    p->next = s->peers;
    if (s->peers) s->peers->prev = p;
    s->peers = p;
    if (!p->bev || !p->timer || !p->defer) {
        peer_free(p);
        return;
    }
    p->last_recv_ms = cluster_now_ms();
    int hb = coord_heartbeat_ms(s->c);
    struct timeval tv = {hb / 1000, (hb % 1000) * 1000};
    event_add(p->timer, &tv);
    bufferevent_setcb(p->bev, peer_read_cb, NULL, peer_event_cb, p);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
}

cv_status cluster_server_start(coord *c, struct event_base *base, const char *host, int port,
                               cluster_server **out, int *bound_port, cv_err *e)
{
    cluster_server *s = calloc(1, sizeof *s);
    if (!s) return cv_err_set(e, CV_ENOMEM, "cluster server: out of memory");
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

void cluster_server_free(cluster_server *s)
{
    if (!s) return;
    evconnlistener_free(s->lis);
    /* The coordinator destroys its groups (ready peers) first; what is left
     * here are peers still in the handshake. */
    while (s->peers) peer_free(s->peers);
    free(s);
}
