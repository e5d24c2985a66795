/* cluster.h - the cluster protocol (proto/cluster.proto) framing and the
 * step <-> protobuf mapping, shared by the coordinator (link_tcp.c,
 * cluster_server.c) and the worker group leader (cli/net_worker.c).
 *
 * Frame:  | length u32 little-endian (4) | Envelope protobuf (length) |
 * A length over the receiver's maximum is refused from the 4 header bytes
 * alone, before any allocation. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"
#include "../worker/step.h"
#include "cluster.pb-c.h"

#define CLUSTER_PROTOCOL_VERSION 1u
#define CLUSTER_FRAME_HEADER 4
#define CLUSTER_DEFAULT_MAX_FRAME (64u << 20)

typedef Caravan__Cluster__V1__Envelope cl_env;
typedef Caravan__Cluster__V1__Hello cl_hello;
typedef Caravan__Cluster__V1__Assign cl_assign;
typedef Caravan__Cluster__V1__Ready cl_ready;
typedef Caravan__Cluster__V1__Step cl_step;
typedef Caravan__Cluster__V1__StepResult cl_step_result;
typedef Caravan__Cluster__V1__Heartbeat cl_heartbeat;
typedef Caravan__Cluster__V1__Error cl_error;

/* Serialize env into a malloc'd frame (header included). */
cv_status cluster_frame_encode(const cl_env *env, uint8_t **frame, size_t *len, cv_err *e);
/* Body length from the 4 header bytes; CV_ERANGE when over max_len (or 0). */
cv_status cluster_frame_length(const uint8_t hdr[CLUSTER_FRAME_HEADER], size_t max_len,
                               uint32_t *len, cv_err *e);
/* Decode a body; CV_EFORMAT for invalid protobuf or an empty envelope.
 * Free with cluster_env_free. */
cv_status cluster_env_decode(const uint8_t *body, size_t len, cl_env **out, cv_err *e);
void cluster_env_free(cl_env *env);

/* Blocking socket helpers (worker side). recv returns CV_ECOMM on EOF/error. */
cv_status cluster_fd_send(int fd, const cl_env *env, cv_err *e);
cv_status cluster_fd_recv(int fd, size_t max_len, cl_env **out, cv_err *e);

/* Step <-> protobuf. The pb side borrows from the C side (valid while it
 * lives): free with cluster_step_pb_free. */
cl_step *cluster_step_to_pb(const step *s);
void cluster_step_pb_free(cl_step *p);
/* pb -> C: allocates *out's arrays (free with cluster_step_free). Validates
 * counts, slots and token ids against n_slots/n_vocab when > 0. */
cv_status cluster_step_from_pb(const cl_step *p, int64_t n_slots, int64_t n_vocab, step *out,
                               cv_err *e);
void cluster_step_free(step *s);

cl_step_result *cluster_result_to_pb(const step_result *r);
void cluster_result_pb_free(cl_step_result *p);
/* r->results must have room for max_results entries. */
cv_status cluster_result_from_pb(const cl_step_result *p, int32_t max_results, step_result *r,
                                 cv_err *e);

/* Monotonic milliseconds. */
uint64_t cluster_now_ms(void);
