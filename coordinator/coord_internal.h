/* coord_internal.h - what the coordinator's own modules (grpc.c, link_tcp.c,
 * cluster listener) share with coord.c; front ends use coord.h only. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "coord.h"
#include "link.h"

struct event_base;
struct evconnlistener;

typedef struct coord_group_desc {
    char name[64];  /* peer address */
    int ranks, tp, pp;
    char plan[256];
} coord_group_desc;

/* A group is ready: the coordinator takes ownership of l (destroyed when the
 * group is lost or the coordinator freed). Returns the group handle. */
int coord_group_add(coord *c, group_link *l, const coord_group_desc *d);
/* Results are waiting in the group's link (call from the event loop). */
void coord_group_results(coord *c, int handle);
/* The group is gone (disconnect, heartbeat timeout, protocol error).
 * Call at a safe point (never from inside the link's own poll/submit). */
void coord_group_lost(coord *c, int handle, const char *why);

size_t coord_max_frame(const coord *c);
const char *coord_cluster_token(const coord *c);
int coord_heartbeat_ms(const coord *c);
int coord_heartbeat_timeout_ms(const coord *c);
const char *coord_model_path(const coord *c);

/* link_tcp.c: the cluster listener on (host, port); accepted connections go
 * through Hello/Assign/Ready and then become groups. */
typedef struct cluster_server cluster_server;
cv_status cluster_server_start(coord *c, struct event_base *base, const char *host, int port,
                               cluster_server **out, int *bound_port, cv_err *e);
void cluster_server_free(cluster_server *s);

/* grpc.c: the gRPC server. */
typedef struct grpc_server grpc_server;
cv_status grpc_server_start(coord *c, struct event_base *base, const char *host, int port,
                            grpc_server **out, int *bound_port, cv_err *e);
void grpc_server_free(grpc_server *s);

/* Shared helper: a listening socket bound to host:port (port 0: ephemeral). */
struct evconnlistener *coord_listen(struct event_base *base, const char *host, int port,
                                    void (*cb)(struct evconnlistener *, int, struct sockaddr *,
                                               int, void *),
                                    void *ud, int *bound_port, cv_err *e);
