/* group.c - the MPI worker group: P pipeline stages x T tensor-parallel
 * ranks running one model, led by rank 0 (API and roles in group.h).
 *
 * Messages (all ranks run the same binary on the same architecture, so
 * structs travel as raw bytes; every count is checked against this rank's
 * limits before use):
 *
 *   activation message, rank (s, t) -> (s+1, t), tag TAG_ACT:
 *   | wire_hdr (64) | wire_seq[n_seqs] | tokens i32[n_tok] | released i32[n_released] |
 *   | pad to 8 | hidden f32[n_tok x n_embd] (kind STEP only)                          |
 *   The header's plan_bytes covers everything between the header and the
 *   hidden states. Stage 0's TP ranks get header + plan by two broadcasts
 *   from the leader (no hidden states).
 *
 *   result message, last stage TP rank 0 -> leader, tag TAG_RESULT:
 *   | wire_res (64) | step_seq_result[n_results] | logits f32[n_rows x n_vocab] |
 *   Sampling is split between the last stage and the leader: the last
 *   stage samples the first wire_hdr.n_last_samples outputs of a step and
 *   sends the logits rows of the rest unsampled (seq_id set; rows for the
 *   last n_rows results, all of them when the leader wants logits for
 *   tests); the leader samples those with the plan it kept in its send
 *   buffer and its own copy of the token history. With libm's double exp,
 *   sampling cost ~2 ms per sequence at a 128K vocabulary (the log-softmax
 *   for the reported logprob); all of it on the last stage, which also
 *   holds the output head, left stage 0 idle ~20% of the time with 8
 *   sequences over PP2. CARAVAN_GROUP_SAMPLE=auto has the leader move the
 *   split one output at a time towards the stage that waits more
 *   (wire_res.idle_ms: the last stage's wait for activations since its
 *   previous result; see split_adjust); =leader puts it all on the leader.
 *   The default is =last (all on the last stage): since the sampler's float
 *   exp (0.2-0.3 ms per greedy token) the split's gain was within noise,
 *   and each output it moves sends a logits row (512 KB at 128K vocab)
 *   instead of a 16-byte result, which matters between machines.
 *
 *   error message, any rank -> leader, tag TAG_ERROR: | char[CV_ERR_MSG_MAX] |
 *   so that the leader's wait names the failed rank; the CLI then aborts
 *   the job (MPI_Abort), since ranks blocked in a collective cannot be
 *   released any other way.
 *
 * Up to P x depth steps are in flight (depth 1 unless CARAVAN_GROUP_DEPTH
 * says more): the leader computes stage 0 of step k+1 while stage 1
 * computes step k. Sends between stages are non-blocking with one buffer
 * more than the steps in flight, so a buffer is reused only after the step
 * it carried has come back to the leader: no stage waits for a send. */
#include "group.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#define GROUP_HAVE_FUTEX 1
#endif

#include "../coordinator/planner.h"
#include "../core/dtype.h"
#include "../core/sampler.h"
#include "comm_mpi.h"
#ifdef CARAVAN_HAVE_CUDA
#include "group_gpu.h"
#endif
#include "forward.h"

#define WIRE_MAGIC 0x54535643u /* "CVST" */
#define RES_MAGIC 0x53455243u  /* "CRES" */
#define NSEND_MAX 33 /* send buffers: steps in flight + 1 */
#define DEPTH_MAX 16

enum { KIND_STEP = 1, KIND_SHUTDOWN = 2 };
enum { TAG_ACT = 11, TAG_RESULT = 12, TAG_ERROR = 13 };

typedef struct wire_hdr {
    uint32_t magic;
    uint32_t kind;
    uint64_t id;
    int32_t n_seqs;
    int32_t n_released;
    int64_t n_tok;
    uint64_t plan_bytes;
    uint32_t want_logits;
    int32_t n_last_samples; /* the last stage samples this many outputs, the leader the rest */
    uint32_t pad[4];
} wire_hdr;
_Static_assert(sizeof(wire_hdr) == 64, "wire_hdr is 64 bytes");

typedef struct wire_seq {
    int64_t seq_id;
    int32_t slot, pos, n_tokens, want_sample;
    sampling_params sp;
} wire_seq;

typedef struct wire_res {
    uint32_t magic;
    int32_t status;
    uint64_t id;
    int32_t n_results;
    float idle_ms;   /* the last stage's wait for activations since its previous result */
    int64_t n_rows;  /* logits rows that follow: of the last n_rows results */
    int64_t n_vocab;
    int32_t n_last;  /* results sampled by the last stage (the first n_last) */
    uint8_t pad[20];
} wire_res;
_Static_assert(sizeof(wire_res) == 64, "wire_res is 64 bytes");

/* A decoded plan: pointers into a message buffer. */
typedef struct plan_view {
    const wire_hdr *h;
    const wire_seq *seqs;
    const int32_t *tokens;
    const int32_t *released;
    const float *hidden; /* NULL on stage 0 */
} plan_view;

struct group {
    comm *world;    /* dup of the caller's communicator */
    comm *tp;       /* this stage's TP ranks (counting wrapper over an MPI comm) */
    comm *tp_mpi;
    comm *tp_dev;   /* CUDA: NCCL over the same ranks for the forward all-reduce, or NULL */
    MPI_Comm wc;    /* world handle for raw requests */
    int rank, size, P, T, s, t;
    plan_rank *layout; /* size entries */
    backend *be;
    model *m;
    int64_t n_slots, n_ctx, n_vocab, n_embd, max_batch, max_out;
    bool want_logits;
    bool failed;
    uint64_t bytes_sent;

    /* messages */
    size_t msg_cap;           /* header + largest plan + hidden */
    uint8_t *recv_buf;        /* stages > 0 and stage-0 followers */
    uint8_t *send_buf[NSEND_MAX]; /* to the next stage */
    comm_req *send_req[NSEND_MAX];
    int nsend;                /* buffers in use: max_inflight + 1 */
    int max_inflight;         /* P x depth (1 when P == 1) */
    int send_next;

    /* per-step host arrays (max_batch) */
    int32_t *tokens, *pos, *slot, *out_idx, *seq_of_out;
    float *hidden_tmp; /* last stage: unused hidden_out */

    /* last stage */
    float *logits_local;    /* max_out x shard n_vocab */
    float *logits_gather;   /* TP rank 0: max_out x n_vocab in rank blocks */
    float *logits_all;      /* TP rank 0: max_out x n_vocab rows */
    size_t *g_counts, *g_displs;
    int32_t *hist;          /* sampler rank (and the leader): n_slots x n_ctx tokens fed */
    int64_t *hist_len;
    void *samp_scratch;
    uint8_t *res_buf;       /* result message (sampler rank builds, leader receives) */
    size_t res_cap;

    /* sampling split (see the head) */
    int split_mode;         /* leader: 1 all on the last stage (default), 0 auto, 2 all on the leader */
    int32_t n_last;         /* leader: outputs per step the last stage samples */
    double split_bal;       /* leader: running (leader idle - last stage idle), ms */
    double samp_ms;         /* leader: running cost of one sample, ms (0: not measured) */
    int split_hold;         /* leader: results to wait after a move before the next */
    double idle_acc;        /* seconds waited since the last result (leader, last stage) */

    /* leader */
    int inflight;
    int64_t *slot_len;      /* positions filled per slot, for step checks */
    double t_fwd, t_wait;   /* seconds in forward_stage / waiting for peers (CARAVAN_GROUP_PROFILE) */
    struct trace_ev *trace; /* CARAVAN_GROUP_TRACE=PREFIX: per-step events, PREFIX.RANK at free */
    int64_t n_trace;
    int64_t fail_at;        /* test hook CARAVAN_TEST_FAIL=RANK:STEP: fail at that step (-1 off) */
    int64_t n_steps;        /* steps this rank has run */
    MPI_Request res_req, err_req;
    MPI_Request res_send;   /* last stage TP rank 0: result in flight to the leader */
    bool res_posted, err_posted;
    char err_msg[CV_ERR_MSG_MAX];
    bool local_ready;       /* P == 1: result of the step in flight is in res_buf */
    float *last_logits;
    int64_t last_rows;

    /* doorbells (ranks on this node): one futex word per rank in a shared
     * window; a sender rings the receiver's after posting a message so that
     * a waiting rank sleeps in the kernel instead of polling */
    MPI_Win bell_win;
    MPI_Comm node_comm;
    uint32_t **bells;       /* per world rank: its bell, NULL when on another node */
    uint32_t *my_bell;
};

/* ---- timeline (CARAVAN_GROUP_TRACE) ----------------------------------------- */

enum { TR_SUBMIT = 1, TR_FWD0, TR_FWD1, TR_SENT, TR_WAIT0, TR_WAIT1, TR_SAMPLED, TR_SAMPLE0 };
static const char *const trace_names[] = {"", "submit", "fwd0", "fwd1", "sent", "wait0", "wait1",
                                          "sampled", "sample0"};
#define TRACE_MAX 65536
typedef struct trace_ev {
    double t;
    uint64_t id;
    int code;
} trace_ev;

static double now_s(void);
static void trace(group *g, int code, uint64_t id)
{
    if (g->trace && g->n_trace < TRACE_MAX)
        g->trace[g->n_trace++] = (trace_ev){now_s(), id, code};
}

/* ---- counting TP comm: forwards to the MPI comm, counts all-reduce bytes -- */

typedef struct count_impl {
    comm *inner;
    uint64_t *bytes;
    double t_allreduce; /* seconds inside all-reduces (CARAVAN_GROUP_PROFILE) */
    int64_t n_allreduce;
} count_impl;

#define INNER(c) (((count_impl *)(c)->impl)->inner)
static int cnt_rank(comm *c) { return comm_rank(INNER(c)); }
static int cnt_size(comm *c) { return comm_size(INNER(c)); }
static cv_status cnt_send(comm *c, const void *b, size_t n, int d, int tag, cv_err *e)
{
    *((count_impl *)c->impl)->bytes += n;
    return INNER(c)->ops->send(INNER(c), b, n, d, tag, e);
}
static cv_status cnt_recv(comm *c, void *b, size_t n, int s, int tag, cv_err *e)
{
    return INNER(c)->ops->recv(INNER(c), b, n, s, tag, e);
}
static cv_status cnt_isend(comm *c, const void *b, size_t n, int d, int tag, comm_req **r,
                           cv_err *e)
{
    *((count_impl *)c->impl)->bytes += n;
    return INNER(c)->ops->isend(INNER(c), b, n, d, tag, r, e);
}
static cv_status cnt_irecv(comm *c, void *b, size_t n, int s, int tag, comm_req **r, cv_err *e)
{
    return INNER(c)->ops->irecv(INNER(c), b, n, s, tag, r, e);
}
static cv_status cnt_wait(comm *c, comm_req *r, cv_err *e)
{
    return INNER(c)->ops->wait(INNER(c), r, e);
}
static cv_status cnt_bcast(comm *c, void *b, size_t n, int root, cv_err *e)
{
    if (comm_rank(INNER(c)) == root)
        *((count_impl *)c->impl)->bytes += n * (size_t)(comm_size(INNER(c)) - 1);
    return INNER(c)->ops->bcast(INNER(c), b, n, root, e);
}
/* Counted as the payload each rank contributes; a ring all-reduce moves
 * about 2 (T-1)/T of it per rank. */
static cv_status cnt_allreduce(comm *c, void *b, size_t count, comm_dtype dt, cv_err *e)
{
    count_impl *ci = c->impl;
    if (comm_size(INNER(c)) > 1)
        *ci->bytes += count * (dt == COMM_U8 ? 1 : 4);
    double t0 = now_s();
    cv_status st = INNER(c)->ops->allreduce_sum(INNER(c), b, count, dt, e);
    ci->t_allreduce += now_s() - t0;
    ci->n_allreduce++;
    return st;
}
static cv_status cnt_gatherv(comm *c, const void *sb, size_t n, void *rb, const size_t *counts,
                             const size_t *displs, int root, cv_err *e)
{
    if (comm_rank(INNER(c)) != root)
        *((count_impl *)c->impl)->bytes += n;
    return INNER(c)->ops->gatherv(INNER(c), sb, n, rb, counts, displs, root, e);
}
static cv_status cnt_barrier(comm *c, cv_err *e) { return INNER(c)->ops->barrier(INNER(c), e); }
static void cnt_destroy(comm *c)
{
    if (c) {
        free(c->impl);
        free(c);
    }
}
static const comm_ops count_ops = {
    .name = "mpi-counted", .rank = cnt_rank, .size = cnt_size, .send = cnt_send,
    .recv = cnt_recv, .isend = cnt_isend, .irecv = cnt_irecv, .wait = cnt_wait,
    .bcast = cnt_bcast, .allreduce_sum = cnt_allreduce, .gatherv = cnt_gatherv,
    .barrier = cnt_barrier, .destroy = cnt_destroy,
};

static comm *count_wrap(comm *inner, uint64_t *bytes)
{
    comm *c = calloc(1, sizeof *c);
    count_impl *ci = calloc(1, sizeof *ci);
    if (!c || !ci) {
        free(c);
        free(ci);
        return NULL;
    }
    ci->inner = inner;
    ci->bytes = bytes;
    c->ops = &count_ops;
    c->impl = ci;
    return c;
}

/* ---- helpers -------------------------------------------------------------- */

static int world_rank_of(const group *g, int s, int t) { return s * g->T + t; }

static size_t plan_bytes_for(int64_t n_seqs, int64_t n_tok, int64_t n_released)
{
    size_t b = (size_t)n_seqs * sizeof(wire_seq) + (size_t)(n_tok + n_released) * sizeof(int32_t);
    return (b + 7) & ~(size_t)7;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* Stage 0's plan broadcast from the leader (TP root 0), non-blocking on
 * every rank (blocking and non-blocking collectives do not match). */
static int wait_polite(group *g, int n, MPI_Request *r, int *idx, MPI_Status *status,
                       bool rung);
static void bell_ring(group *g, int world_rank);
static cv_status plan_bcast(group *g, void *buf, size_t n, cv_err *e)
{
    MPI_Request rq;
    int idx, rc = MPI_Ibcast(buf, (int)n, MPI_BYTE, 0, comm_mpi_handle(g->tp_mpi), &rq);
    if (rc == MPI_SUCCESS && g->t == 0)
        for (int t = 1; t < g->T; t++)
            bell_ring(g, world_rank_of(g, g->s, t));
    if (rc == MPI_SUCCESS) /* the root is not rung: its side completes by progress alone */
        rc = wait_polite(g, 1, &rq, &idx, MPI_STATUS_IGNORE, g->t != 0);
    if (rc == MPI_SUCCESS && g->t != 0 && g->T > 2)
        for (int t = 1; t < g->T; t++) /* a tree: this rank may have forwarded to others */
            bell_ring(g, world_rank_of(g, g->s, t));
    if (rc != MPI_SUCCESS) {
        char s[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(rc, s, &len);
        return cv_err_set(e, CV_ECOMM, "rank %d: plan broadcast in stage %d failed: %s", g->rank,
                          g->s, s);
    }
    if (g->t == 0)
        g->bytes_sent += n * (size_t)(g->T - 1);
    return CV_OK;
}

/* Doorbells. A waiting rank sleeps on its bell (a futex word in memory
 * shared by the node's ranks); a rank that posts a message to it bumps the
 * bell and wakes it. The bell is read before each MPI_Test, so a message
 * posted after that read wakes the sleeper at once (the futex value no
 * longer matches) and one posted before it is seen by the test. The futex
 * wait has a timeout, so a message that rang no bell (another node, an MPI
 * internal step) is still seen within nap_max. */
static void bell_ring(group *g, int world_rank)
{
#ifdef GROUP_HAVE_FUTEX
    uint32_t *b = g->bells ? g->bells[world_rank] : NULL;
    if (!b || world_rank == g->rank)
        return;
    __atomic_fetch_add(b, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, b, FUTEX_WAKE, 1, NULL, NULL, 0);
#else
    (void)g;
    (void)world_rank;
#endif
}

static uint32_t bell_read(const group *g)
{
    return g->my_bell ? __atomic_load_n(g->my_bell, __ATOMIC_SEQ_CST) : 0;
}

/* Sleep until the bell moves off `seen` or `us` microseconds pass. */
static void bell_sleep(group *g, uint32_t seen, long us)
{
#ifdef GROUP_HAVE_FUTEX
    if (g->my_bell) {
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        syscall(SYS_futex, g->my_bell, FUTEX_WAIT, seen, &ts, NULL, 0);
        return;
    }
#endif
    (void)seen;
    sleep_us(us);
}

/* Wait for one of n requests without holding a core: MPI's blocking calls
 * spin, and a pipeline stage waits for a whole stage's compute - on a
 * machine whose cores are hyperthreads or shared, a spinning neighbour
 * slows the stage that computes. Poll briefly, then sleep on this rank's
 * doorbell (a peer on this node wakes it when it posts the message), or
 * without doorbells, or when no peer rings for these requests (`rung`
 * false: a send's completion, the root's side of a broadcast), sleep with a
 * backoff capped at 200 us (small next to a step). *idx: which one
 * completed. */
static int wait_polite(group *g, int n, MPI_Request *r, int *idx, MPI_Status *status,
                       bool rung)
{
    long us = 0;
    int short_sleeps = 0;
    static int spin_limit = -1;
    static long nap_max = 200, bell_max = 50000;
    if (spin_limit < 0) {
        const char *v = getenv("CARAVAN_GROUP_SPIN");
        spin_limit = v ? atoi(v) : 100;
        if ((v = getenv("CARAVAN_GROUP_NAP_US")) && atol(v) > 0)
            nap_max = bell_max = atol(v);
    }
    for (int spins = 0;; spins++) {
        int flag = 0, rc;
        uint32_t seen = bell_read(g);
        if (n == 1) {
            rc = MPI_Test(r, &flag, status);
            *idx = 0;
        } else {
            rc = MPI_Testany(n, r, idx, &flag, status);
        }
        if (rc != MPI_SUCCESS || flag)
            return rc;
        if (spins < spin_limit)
            continue;
        if (g->my_bell && rung) {
            /* The timeout is long: a sleeper woken every 2 ms slowed the
             * stage computing on the other vCPU by ~10% here. After a ring
             * the message may take a few more MPI progress calls to
             * complete (it did with Open MPI): poll again, then sleep
             * briefly a few times before the long sleeps resume. */
            bell_sleep(g, seen, short_sleeps > 0 ? 200 : bell_max);
            if (short_sleeps > 0)
                short_sleeps--;
            if (bell_read(g) != seen) {
                spins = 0;
                short_sleeps = 10;
            }
            continue;
        }
        us = us ? (us * 2 > nap_max ? nap_max : us * 2) : 5;
        sleep_us(us);
    }
}

static cv_status mpi_fail(const group *g, int rc, const char *what, cv_err *e)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS)
        snprintf(s, sizeof s, "MPI error %d", rc);
    return cv_err_set(e, CV_ECOMM, "rank %d: %s: %s", g->rank, what, s);
}

/* Every rank contributes its status; all get the first failure, prefixed
 * with the failing rank. Collective over the world comm. */
static cv_status agree(group *g, cv_status st, cv_err *e, const char *phase)
{
    typedef struct {
        int32_t code;
        char msg[CV_ERR_MSG_MAX - 4];
    } rec;
    rec mine = {.code = (int32_t)st};
    if (st)
        snprintf(mine.msg, sizeof mine.msg, "%.480s", e ? e->msg : "failed");
    rec *all = malloc(sizeof(rec) * (size_t)g->size);
    if (!all)
        return cv_err_set(e, CV_ENOMEM, "%s: out of memory", phase);
    int rc = MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, g->wc);
    if (rc != MPI_SUCCESS) {
        free(all);
        return mpi_fail(g, rc, phase, e);
    }
    cv_status out = CV_OK;
    for (int r = 0; r < g->size; r++)
        if (all[r].code) {
            out = cv_err_set(e, (cv_status)all[r].code, "%s failed on rank %d (stage %d, tp %d): %s",
                             phase, r, g->T ? r / g->T : 0, g->T ? r % g->T : 0, all[r].msg);
            break;
        }
    free(all);
    return out;
}

/* Non-leader failure: tell the leader (eager, small), keep the message. */
static cv_status report_failure(group *g, cv_status st, cv_err *e)
{
    g->failed = true;
    if (g->rank != 0) {
        char msg[CV_ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "rank %d (stage %d, tp %d) failed: %.440s", g->rank, g->s, g->t,
                 e ? e->msg : cv_status_name(st));
        MPI_Request rq;
        if (MPI_Isend(msg, (int)sizeof msg, MPI_BYTE, 0, TAG_ERROR, g->wc, &rq) == MPI_SUCCESS) {
            MPI_Request_free(&rq);
            bell_ring(g, 0);
        }
    }
    return st;
}

static cv_status wait_send(group *g, int k, cv_err *e)
{
    if (!g->send_req[k])
        return CV_OK;
    cv_status st = g->world->ops->wait(g->world, g->send_req[k], e);
    g->send_req[k] = NULL;
    return st;
}

/* Check a received plan against this rank's limits and decode it. */
static cv_status plan_decode(const group *g, const uint8_t *buf, bool with_hidden, plan_view *v,
                             cv_err *e)
{
    const wire_hdr *h = (const wire_hdr *)buf;
    if (h->magic != WIRE_MAGIC)
        return cv_err_set(e, CV_EFORMAT, "rank %d: activation message with bad magic 0x%08x",
                          g->rank, h->magic);
    v->h = h;
    if (h->kind == KIND_SHUTDOWN)
        return CV_OK;
    if (h->kind != KIND_STEP || h->n_seqs < 0 || h->n_seqs > g->max_batch || h->n_tok < 0 ||
        h->n_tok > g->max_batch || h->n_released < 0 || h->n_released > g->n_slots ||
        h->plan_bytes != plan_bytes_for(h->n_seqs, h->n_tok, h->n_released))
        return cv_err_set(e, CV_EFORMAT,
                          "rank %d: bad step header (kind %u, %d seqs, %lld tokens, %d released, "
                          "plan %llu bytes)",
                          g->rank, h->kind, h->n_seqs, (long long)h->n_tok, h->n_released,
                          (unsigned long long)h->plan_bytes);
    v->seqs = (const wire_seq *)(buf + sizeof *h);
    v->tokens = (const int32_t *)(v->seqs + h->n_seqs);
    v->released = v->tokens + h->n_tok;
    v->hidden = with_hidden ? (const float *)(buf + sizeof *h + h->plan_bytes) : NULL;
    int64_t n = 0;
    for (int32_t i = 0; i < h->n_seqs; i++) {
        const wire_seq *q = &v->seqs[i];
        if (q->n_tokens < 1 || q->slot < 0 || q->slot >= g->n_slots || q->pos < 0 ||
            (int64_t)q->pos + q->n_tokens > g->n_ctx)
            return cv_err_set(e, CV_EFORMAT, "rank %d: step %llu seq %d: bad slot %d / pos %d / "
                              "%d tokens", g->rank, (unsigned long long)h->id, i, q->slot, q->pos,
                              q->n_tokens);
        n += q->n_tokens;
    }
    if (n != h->n_tok)
        return cv_err_set(e, CV_EFORMAT, "rank %d: step %llu: sequences hold %lld tokens, header "
                          "says %lld", g->rank, (unsigned long long)h->id, (long long)n,
                          (long long)h->n_tok);
    for (int32_t i = 0; i < h->n_released; i++)
        if (v->released[i] < 0 || v->released[i] >= g->n_slots)
            return cv_err_set(e, CV_EFORMAT, "rank %d: released slot %d out of range", g->rank,
                              v->released[i]);
    return CV_OK;
}

static cv_status logits_gather_and_sample(group *g, const plan_view *v, int64_t n_out,
                                          cv_err *e);

/* This rank's part of one step: releases, forward, and on the last stage
 * gather + sample. hidden_out: where a non-last stage writes its output. */
static cv_status stage_run(group *g, const plan_view *v, float *hidden_out, cv_err *e)
{
    const wire_hdr *h = v->h;
    /* the token history for penalties: kept where sampling may happen */
    bool sampler = g->hist != NULL;
    for (int32_t i = 0; i < h->n_released; i++) {
        model_slot_clear(g->m, v->released[i]);
        if (sampler)
            g->hist_len[v->released[i]] = 0;
    }
    if (g->fail_at >= 0 && g->n_steps == g->fail_at)
        return cv_err_set(e, CV_EINTERNAL, "rank %d (stage %d, tp %d): injected failure at step "
                          "%lld (CARAVAN_TEST_FAIL)", g->rank, g->s, g->t, (long long)g->fail_at);
    g->n_steps++;
    int64_t n = 0, n_out = 0;
    const int32_t *tk = v->tokens;
    for (int32_t i = 0; i < h->n_seqs; i++) {
        const wire_seq *q = &v->seqs[i];
        for (int32_t j = 0; j < q->n_tokens; j++) {
            g->tokens[n] = tk[j];
            g->pos[n] = q->pos + j;
            g->slot[n] = q->slot;
            n++;
        }
        if (q->want_sample) {
            g->out_idx[n_out] = (int32_t)(n - 1);
            g->seq_of_out[n_out] = i;
            n_out++;
        }
        if (sampler) {
            /* tokens fed at positions pos.. (penalty history, as engine.c keeps it) */
            memcpy(g->hist + (int64_t)q->slot * g->n_ctx + q->pos, tk,
                   (size_t)q->n_tokens * sizeof(int32_t));
            if (q->pos + q->n_tokens > g->hist_len[q->slot])
                g->hist_len[q->slot] = q->pos + q->n_tokens;
        }
        tk += q->n_tokens;
    }
    if (n_out > g->max_out)
        return cv_err_set(e, CV_ERANGE, "rank %d: step %llu wants %lld samples, over %lld",
                          g->rank, (unsigned long long)h->id, (long long)n_out,
                          (long long)g->max_out);
    cv_status st;
    if (n > 0) {
        fwd_batch b = {.n_tok = n, .tokens = g->tokens, .pos = g->pos, .slot = g->slot,
                       .n_out = n_out, .out_idx = g->out_idx};
        double t0 = now_s();
        trace(g, TR_FWD0, h->id);
        st = forward_stage(g->m, g->tp_dev ? g->tp_dev : g->tp, &b, v->hidden, hidden_out,
                           g->logits_local, e);
        trace(g, TR_FWD1, h->id);
        g->t_fwd += now_s() - t0;
        if (st)
            return cv_err_prefix(e, "rank %d (stage %d, tp %d), step %llu", g->rank, g->s, g->t,
                                 (unsigned long long)h->id);
    }
    if (g->m->shard.has_head) {
        st = logits_gather_and_sample(g, v, n_out, e);
        trace(g, TR_SAMPLED, h->id);
        return st;
    }
    return CV_OK;
}

/* Last stage: vocab slices -> TP rank 0 -> rows of n_vocab -> sample; the
 * result message is left in res_buf. */
static cv_status logits_gather_and_sample(group *g, const plan_view *v, int64_t n_out, cv_err *e)
{
    int T = g->T;
    int64_t V = g->n_vocab;
    float *rows = g->logits_local;
    cv_status st;
    if (T > 1 && n_out > 0) {
        if (g->t == 0)
            for (int t = 0; t < T; t++) {
                const shard_spec *sh = &g->layout[world_rank_of(g, g->s, t)].shard;
                g->g_counts[t] = (size_t)(n_out * sh->n_vocab) * sizeof(float);
                g->g_displs[t] = (size_t)(n_out * sh->vocab0) * sizeof(float);
            }
        st = g->tp->ops->gatherv(g->tp, g->logits_local,
                                 (size_t)(n_out * g->m->shard.n_vocab) * sizeof(float),
                                 g->logits_gather, g->g_counts, g->g_displs, 0, e);
        if (st)
            return cv_err_prefix(e, "rank %d: gathering logits", g->rank);
        if (g->t != 0)
            return CV_OK;
        /* block of rank t is (n_out x V_t) at n_out * vocab0_t */
        for (int t = 0; t < T; t++) {
            const shard_spec *sh = &g->layout[world_rank_of(g, g->s, t)].shard;
            const float *blk = g->logits_gather + n_out * sh->vocab0;
            for (int64_t i = 0; i < n_out; i++)
                memcpy(g->logits_all + i * V + sh->vocab0, blk + i * sh->n_vocab,
                       (size_t)sh->n_vocab * sizeof(float));
        }
        rows = g->logits_all;
    } else if (g->t != 0) {
        return CV_OK;
    }
    wire_res *wr = (wire_res *)g->res_buf;
    memset(wr, 0, sizeof *wr);
    wr->magic = RES_MAGIC;
    wr->id = v->h->id;
    step_seq_result *res = (step_seq_result *)(g->res_buf + sizeof *wr);
    int64_t n_last = g->P > 1 && v->h->n_last_samples < n_out ? v->h->n_last_samples : n_out;
    if (n_last < 0)
        n_last = 0;
    for (int64_t k = 0; k < n_out; k++) {
        const wire_seq *q = &v->seqs[g->seq_of_out[k]];
        int64_t end = (int64_t)q->pos + q->n_tokens; /* the position being generated */
        res[k].seq_id = q->seq_id;
        if (k >= n_last) /* the leader's */
            memset(&res[k].r, 0, sizeof res[k].r);
        else
            sampler_sample(rows + k * V, V, &q->sp, end, g->hist + (int64_t)q->slot * g->n_ctx,
                           end, g->samp_scratch, &res[k].r);
    }
    wr->n_results = (int32_t)n_out;
    wr->n_last = (int32_t)n_last;
    wr->n_vocab = V;
    wr->idle_ms = (float)(g->idle_acc * 1e3);
    g->idle_acc = 0;
    if (!v->h->want_logits && n_last < n_out) {
        wr->n_rows = n_out - n_last;
        memcpy(g->res_buf + sizeof *wr + (size_t)n_out * sizeof *res, rows + n_last * V,
               (size_t)(wr->n_rows * V) * sizeof(float));
    } else if (v->h->want_logits) {
        wr->n_rows = n_out;
        memcpy(g->res_buf + sizeof *wr + (size_t)n_out * sizeof *res, rows,
               (size_t)(n_out * V) * sizeof(float));
    }
    return CV_OK;
}

static size_t res_msg_bytes(const group *g)
{
    const wire_res *wr = (const wire_res *)g->res_buf;
    return sizeof *wr + (size_t)wr->n_results * sizeof(step_seq_result) +
           (size_t)(wr->n_rows * wr->n_vocab) * sizeof(float);
}

/* Pass [header | plan | hidden] from send buffer k on to (s+1, t). */
static cv_status forward_on(group *g, int k, size_t n_bytes, cv_err *e)
{
    int dst = world_rank_of(g, g->s + 1, g->t);
    g->bytes_sent += n_bytes;
    cv_status st = g->world->ops->isend(g->world, g->send_buf[k], n_bytes, dst, TAG_ACT,
                                        &g->send_req[k], e);
    if (!st)
        bell_ring(g, dst);
    trace(g, TR_SENT, ((const wire_hdr *)g->send_buf[k])->id);
    return st;
}

/* ---- create / free -------------------------------------------------------- */

/* The loader (model.c's residency step) has already dropped the data
 * section's pages this rank does not compute from and faulted in its own;
 * what parsing the metadata paged in (the header, the tokenizer's arrays:
 * megabytes for a 128K vocabulary) is left. A rank of a group drops those
 * pages too (read-only private file mapping: they stay in the page cache
 * and fault back in on use, e.g. when the leader tokenizes). */
static void drop_header_pages(const gguf_file *f)
{
    long ps = sysconf(_SC_PAGESIZE);
    if (!f || ps <= 0 || !gguf_is_file_mapping(f))
        return;
    uintptr_t base = (uintptr_t)gguf_base(f);
    uintptr_t a = base & ~((uintptr_t)ps - 1);
    uintptr_t b = (base + gguf_data_offset(f)) & ~((uintptr_t)ps - 1); /* first data page stays */
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

static int local_ranks(MPI_Comm mc)
{
    MPI_Comm node;
    int n = 1;
    if (MPI_Comm_split_type(mc, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_size(node, &n);
        MPI_Comm_free(&node);
    }
    return n;
}

static cv_status alloc_buffers(group *g, cv_err *e)
{
    int64_t B = g->max_batch;
    g->msg_cap = sizeof(wire_hdr) + plan_bytes_for(B, B, g->n_slots) +
                 (size_t)(B * g->n_embd) * sizeof(float);
    g->recv_buf = malloc(g->msg_cap);
    for (int k = 0; k < g->nsend; k++)
        if (!(g->send_buf[k] = malloc(g->msg_cap)))
            goto nomem;
    g->tokens = malloc((size_t)B * sizeof(int32_t));
    g->pos = malloc((size_t)B * sizeof(int32_t));
    g->slot = malloc((size_t)B * sizeof(int32_t));
    g->out_idx = malloc((size_t)B * sizeof(int32_t));
    g->seq_of_out = malloc((size_t)B * sizeof(int32_t));
    if (!g->recv_buf || !g->tokens || !g->pos || !g->slot || !g->out_idx || !g->seq_of_out)
        goto nomem;
    /* logits rows: for tests, and for the leader to sample from (P > 1; the
     * pages of rows never sent are never touched) */
    g->res_cap = sizeof(wire_res) + (size_t)g->max_out * sizeof(step_seq_result) +
                 (g->want_logits || g->P > 1 ? (size_t)(g->max_out * g->n_vocab) * sizeof(float) : 0);
    if (g->rank == 0 || (g->m->shard.has_head && g->t == 0))
        if (!(g->res_buf = calloc(1, g->res_cap)))
            goto nomem;
    if (g->m->shard.has_head) {
        g->logits_local = malloc((size_t)(g->max_out * g->m->shard.n_vocab) * sizeof(float));
        if (!g->logits_local)
            goto nomem;
        if (g->t == 0) {
            g->hist = calloc((size_t)(g->n_slots * g->n_ctx), sizeof(int32_t));
            g->hist_len = calloc((size_t)g->n_slots, sizeof(int64_t));
            g->samp_scratch = malloc(sampler_scratch_bytes(g->n_vocab));
            g->g_counts = calloc((size_t)g->T, sizeof(size_t));
            g->g_displs = calloc((size_t)g->T, sizeof(size_t));
            if (!g->hist || !g->hist_len || !g->samp_scratch || !g->g_counts || !g->g_displs)
                goto nomem;
            if (g->T > 1) {
                g->logits_gather = malloc((size_t)(g->max_out * g->n_vocab) * sizeof(float));
                g->logits_all = malloc((size_t)(g->max_out * g->n_vocab) * sizeof(float));
                if (!g->logits_gather || !g->logits_all)
                    goto nomem;
            }
        }
    }
    if (g->rank == 0) {
        g->slot_len = calloc((size_t)g->n_slots, sizeof(int64_t));
        if (!g->slot_len)
            goto nomem;
        if (g->P > 1 && g->split_mode != 1 && !g->hist) { /* the leader's share of the sampling */
            g->hist = calloc((size_t)(g->n_slots * g->n_ctx), sizeof(int32_t));
            g->hist_len = calloc((size_t)g->n_slots, sizeof(int64_t));
            g->samp_scratch = malloc(sampler_scratch_bytes(g->n_vocab));
            if (!g->hist || !g->hist_len || !g->samp_scratch)
                goto nomem;
        }
    }
    return CV_OK;
nomem:
    return cv_err_set(e, CV_ENOMEM, "rank %d: allocating message buffers (%zu bytes each)",
                      g->rank, g->msg_cap);
}

/* Doorbells for the ranks on this node (see bell_ring). Best effort and
 * collective over the world comm: without a shared window (or with
 * CARAVAN_GROUP_BELL=0) waits fall back to capped naps. */
static void bells_create(group *g)
{
    g->node_comm = MPI_COMM_NULL;
    g->bell_win = MPI_WIN_NULL;
#ifdef GROUP_HAVE_FUTEX
    const char *v = getenv("CARAVAN_GROUP_BELL");
    int want = !(v && !strcmp(v, "0")), all = 0;
    MPI_Allreduce(&want, &all, 1, MPI_INT, MPI_MIN, g->wc); /* every rank agrees */
    if (!all)
        return;
    if (MPI_Comm_split_type(g->wc, MPI_COMM_TYPE_SHARED, g->rank, MPI_INFO_NULL, &g->node_comm) !=
        MPI_SUCCESS) {
        g->node_comm = MPI_COMM_NULL;
        return;
    }
    void *base = NULL;
    int ok = MPI_Win_allocate_shared(64, 1, MPI_INFO_NULL, g->node_comm, &base, &g->bell_win) ==
             MPI_SUCCESS, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, g->wc);
    if (!all_ok) {
        if (ok)
            MPI_Win_free(&g->bell_win);
        g->bell_win = MPI_WIN_NULL;
        MPI_Comm_free(&g->node_comm);
        return;
    }
    memset(base, 0, 64);
    g->bells = calloc((size_t)g->size, sizeof *g->bells);
    int *wr = malloc(sizeof *wr * (size_t)g->size), *nr = malloc(sizeof *nr * (size_t)g->size);
    MPI_Group gw, gn;
    MPI_Comm_group(g->wc, &gw);
    MPI_Comm_group(g->node_comm, &gn);
    if (g->bells && wr && nr) {
        for (int r = 0; r < g->size; r++)
            wr[r] = r;
        MPI_Group_translate_ranks(gw, g->size, wr, gn, nr);
        for (int r = 0; r < g->size; r++) {
            MPI_Aint sz = 0;
            int du = 0;
            void *p = NULL;
            if (nr[r] != MPI_UNDEFINED &&
                MPI_Win_shared_query(g->bell_win, nr[r], &sz, &du, &p) == MPI_SUCCESS && sz >= 4)
                g->bells[r] = p;
        }
        g->my_bell = g->bells[g->rank];
    }
    MPI_Group_free(&gw);
    MPI_Group_free(&gn);
    free(wr);
    free(nr);
    MPI_Barrier(g->node_comm); /* bells zeroed before anyone rings */
#endif
}

static void bells_free(group *g)
{
    if (!g->failed && g->bell_win != MPI_WIN_NULL)
        MPI_Win_free(&g->bell_win); /* collective: skipped when peers may be gone */
    if (!g->failed && g->node_comm != MPI_COMM_NULL)
        MPI_Comm_free(&g->node_comm);
    free(g->bells);
    g->bells = NULL;
    g->my_bell = NULL;
}

cv_status group_create(MPI_Comm mc, const group_config *cfg, group **out, cv_err *e)
{
    *out = NULL;
    group *g = calloc(1, sizeof *g);
    if (!g)
        return cv_err_set(e, CV_ENOMEM, "allocating the group");
    g->bell_win = MPI_WIN_NULL;
    g->node_comm = MPI_COMM_NULL;
    g->res_send = MPI_REQUEST_NULL;
    if (getenv("CARAVAN_GROUP_TRACE"))
        g->trace = malloc(sizeof *g->trace * TRACE_MAX);
    cv_status st = comm_mpi_create(mc, "group", &g->world, e);
    if (st) {
        free(g);
        return st;
    }
    g->wc = comm_mpi_handle(g->world);
    g->rank = comm_rank(g->world);
    g->size = comm_size(g->world);
    g->want_logits = cfg->want_logits;
    g->T = cfg->tp > 0 ? cfg->tp : 1;
    g->P = cfg->pp > 0 ? cfg->pp : g->size / g->T;
    {
        const char *sv = getenv("CARAVAN_GROUP_SAMPLE"); /* only the leader's is used */
        g->split_mode = sv && !strcmp(sv, "auto") ? 0 : sv && !strcmp(sv, "leader") ? 2 : 1;
    }
    if (g->P * g->T != g->size) {
        /* every rank sees the same numbers: no need to agree */
        st = cv_err_set(e, CV_EINVAL,
                        "--tp %d x --pp %d = %d ranks, but the group has %d (start %d ranks)",
                        g->T, g->P, g->P * g->T, g->size, g->P * g->T);
        goto fail;
    }
    g->s = g->rank / g->T;
    g->t = g->rank % g->T;
    /* micro-batches per stage in flight (tuning knob; every rank reads the
     * same environment under mpirun, and only the leader and the buffer
     * count depend on it) */
    int depth = 1;
    const char *dv = getenv("CARAVAN_GROUP_DEPTH");
    if (dv && atoi(dv) > 1)
        depth = atoi(dv) > DEPTH_MAX ? DEPTH_MAX : atoi(dv);
    g->max_inflight = g->P > 1 ? g->P * depth : 1;
    if (g->max_inflight > NSEND_MAX - 1)
        g->max_inflight = NSEND_MAX - 1;
    g->nsend = g->max_inflight + 1 < 3 ? 3 : g->max_inflight + 1;
    g->fail_at = -1;
    const char *fail = getenv("CARAVAN_TEST_FAIL"); /* test hook: "RANK:STEP" */
    if (fail) {
        int fr = -1;
        long long fs = -1;
        if (sscanf(fail, "%d:%lld", &fr, &fs) == 2 && fr == g->rank && fs >= 0)
            g->fail_at = fs;
    }

    /* 1. every rank: open the GGUF and a backend, measure memory */
    gguf_file *f = NULL;
    int n_local = local_ranks(g->wc);
#ifdef CARAVAN_HAVE_CUDA
    char dev[32]; /* this rank's element of --device (group_gpu.h); collective, so before any failure */
    cv_status dst = group_gpu_device(g->wc, cfg->be.device, dev, sizeof dev, e);
#endif
    st = gguf_open(cfg->model_path, &f, e); /* its message names the path */
    if (!st) {
        backend_config bc = cfg->be;
        if (bc.n_threads <= 0) {
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            bc.n_threads = cores / n_local > 0 ? (int)(cores / n_local) : 1;
        }
#ifdef CARAVAN_HAVE_CUDA
        bc.device = dev;
        st = dst ? dst : backend_create(&bc, &g->be, e);
#else
        st = backend_create(&bc, &g->be, e);
#endif
    }
    if ((st = agree(g, st, e, "opening the model"))) {
        gguf_close(f);
        goto fail;
    }
    uint64_t my_mem = g->be->ops->mem_free ? g->be->ops->mem_free(g->be) : 0;
    if (g->be->ops->host_memory && n_local > 1)
        my_mem /= (uint64_t)n_local; /* ranks on one machine share its memory */
    uint64_t *mems = calloc((size_t)g->size, sizeof *mems);
    g->layout = calloc((size_t)g->size, sizeof *g->layout);
    if (!mems || !g->layout) {
        free(mems);
        gguf_close(f);
        st = cv_err_set(e, CV_ENOMEM, "out of memory");
        goto fail;
    }
    MPI_Allgather(&my_mem, 1, MPI_UINT64_T, mems, 1, MPI_UINT64_T, g->wc);

    /* 2. rank 0 plans; everyone gets the layout */
    model_params mp = cfg->params;
    st = CV_OK;
    if (g->rank == 0) {
        plan_model pm;
        st = plan_model_from_gguf(f, &pm, e);
        if (!st) {
            if (mp.n_slots <= 0)
                mp.n_slots = 8;
            if (mp.n_ctx <= 0)
                mp.n_ctx = pm.cfg.n_ctx_train < 4096 ? pm.cfg.n_ctx_train : 4096;
            if (mp.max_batch <= 0)
                mp.max_batch = 512;
            plan_request rq = {.tp = g->T, .pp = g->P, .n_slots = mp.n_slots, .n_ctx = mp.n_ctx,
                               .kv_type = mp.kv_type, .max_batch = mp.max_batch,
                               .balance = cfg->mem ? PLAN_BALANCE_MEMORY : PLAN_BALANCE_COMPUTE,
                               .mem = cfg->mem ? cfg->mem : mems};
            plan p;
            st = planner_plan(&pm, &rq, &p, e);
            if (!st) {
                memcpy(g->layout, p.ranks, sizeof *g->layout * (size_t)g->size);
                plan_free(&p);
            }
            plan_model_free(&pm);
        }
    }
    free(mems);
    if ((st = agree(g, st, e, "planning"))) {
        gguf_close(f);
        goto fail;
    }
    MPI_Bcast(g->layout, (int)(sizeof *g->layout * (size_t)g->size), MPI_BYTE, 0, g->wc);
    MPI_Bcast(&mp, (int)sizeof mp, MPI_BYTE, 0, g->wc);
    int fl[2] = {g->max_inflight, g->nsend}; /* the leader's depth for every rank */
    MPI_Bcast(fl, 2, MPI_INT, 0, g->wc);
    g->max_inflight = fl[0];
    g->nsend = fl[1];

    /* 3. sub-communicators and this rank's shard */
    if ((st = comm_mpi_split(g->world, g->s, g->t, "stage tp", &g->tp_mpi, e))) {
        gguf_close(f);
        goto fail;
    }
    bells_create(g);
    g->tp = count_wrap(g->tp_mpi, &g->bytes_sent);
    if (!g->tp) {
        gguf_close(f);
        st = cv_err_set(e, CV_ENOMEM, "out of memory");
        goto fail;
    }
#ifdef CARAVAN_HAVE_CUDA
    /* NCCL for the TP all-reduce when it can (collective over the stage's TP
     * ranks; a failure is agreed on below like a failed load) */
    st = group_gpu_tp_comm(g->tp_mpi, g->be, &g->tp_dev, e);
    if (!st)
        st = model_load(f, &g->layout[g->rank].shard, &mp, g->be, &g->m, e);
#else
    st = model_load(f, &g->layout[g->rank].shard, &mp, g->be, &g->m, e);
#endif
    if (st)
        gguf_close(f); /* model_load owns f only on success */
    if (!st) {
        g->n_slots = g->m->params.n_slots;
        g->n_ctx = g->m->params.n_ctx;
        g->max_batch = g->m->params.max_batch;
        g->n_vocab = g->m->cfg.n_vocab;
        g->n_embd = g->m->cfg.n_embd;
        g->max_out = g->max_batch < g->n_slots ? g->max_batch : g->n_slots;
        g->n_last = g->split_mode == 2 ? 0 : (int32_t)g->max_out;
        st = alloc_buffers(g, e);
        if (g->be->ops->host_memory || g->T > 1 || g->P > 1)
            drop_header_pages(g->m->gguf);
    }
    if ((st = agree(g, st, e, "loading the shard")))
        goto fail;
    if (g->rank == 0 && g->P > 1) {
        int rc = MPI_Irecv(g->err_msg, (int)sizeof g->err_msg, MPI_BYTE, MPI_ANY_SOURCE, TAG_ERROR,
                           g->wc, &g->err_req);
        if (rc != MPI_SUCCESS) {
            st = mpi_fail(g, rc, "posting the error receive", e);
            goto fail;
        }
        g->err_posted = true;
    }
    *out = g;
    return CV_OK;
fail:
    g->failed = true;
    group_free(g);
    return st;
}

static void free_buffers(group *g)
{
    free(g->recv_buf);
    for (int k = 0; k < g->nsend; k++)
        free(g->send_buf[k]);
    free(g->tokens);
    free(g->pos);
    free(g->slot);
    free(g->out_idx);
    free(g->seq_of_out);
    free(g->hidden_tmp);
    free(g->logits_local);
    free(g->logits_gather);
    free(g->logits_all);
    free(g->g_counts);
    free(g->g_displs);
    free(g->hist);
    free(g->hist_len);
    free(g->samp_scratch);
    free(g->res_buf);
    free(g->slot_len);
}

static void cancel_req(MPI_Request *r, bool *posted)
{
    if (*posted) {
        MPI_Cancel(r);
        MPI_Wait(r, MPI_STATUS_IGNORE);
        *posted = false;
    }
}

void group_free(group *g)
{
    if (!g)
        return;
    cv_err e = {0};
    if (getenv("CARAVAN_GROUP_PROFILE") && g->m)
        fprintf(stderr, "group rank %d (stage %d, tp %d): %lld steps, forward %.3f s, waiting %.3f "
                "s, sent %llu bytes\n", g->rank, g->s, g->t, (long long)g->n_steps, g->t_fwd,
                g->t_wait, (unsigned long long)g->bytes_sent);
    if (getenv("CARAVAN_GROUP_PROFILE") && g->tp && g->T > 1)
        fprintf(stderr, "group rank %d: %lld all-reduces, %.3f s in them (%.1f us each)\n",
                g->rank, (long long)((count_impl *)g->tp->impl)->n_allreduce,
                ((count_impl *)g->tp->impl)->t_allreduce,
                1e6 * ((count_impl *)g->tp->impl)->t_allreduce /
                    (double)(((count_impl *)g->tp->impl)->n_allreduce + !((count_impl *)g->tp->impl)->n_allreduce));
    const char *tp = getenv("CARAVAN_GROUP_TRACE");
    if (tp && g->trace) {
        char path[512];
        snprintf(path, sizeof path, "%s.%d", tp, g->rank);
        FILE *f = fopen(path, "w");
        for (int64_t i = 0; f && i < g->n_trace; i++)
            fprintf(f, "%.6f %s %llu\n", g->trace[i].t, trace_names[g->trace[i].code],
                    (unsigned long long)g->trace[i].id);
        if (f)
            fclose(f);
    }
    free(g->trace);
    g->trace = NULL;
    if (g->rank == 0 && g->m && !g->failed) {
        /* drain what is in flight, then send the shutdown down the pipeline */
        step_result r;
        r.results = calloc((size_t)g->max_out + 1, sizeof *r.results);
        while (r.results && g->inflight > 0 && !g->failed)
            if (group_wait(g, &r, &e))
                break;
        free(r.results);
        if (!g->failed) {
            int k = g->send_next;
            if (wait_send(g, k, &e) == CV_OK) {
                wire_hdr *h = (wire_hdr *)g->send_buf[k];
                memset(h, 0, sizeof *h);
                h->magic = WIRE_MAGIC;
                h->kind = KIND_SHUTDOWN;
                if (g->T > 1)
                    plan_bcast(g, h, sizeof *h, &e);
                if (g->P > 1 && forward_on(g, k, sizeof *h, &e) == CV_OK)
                    wait_send(g, k, &e);
            }
        }
    }
    if (!g->failed)
        for (int k = 0; k < g->nsend; k++)
            wait_send(g, k, &e);
    if (g->res_send != MPI_REQUEST_NULL && !g->failed)
        MPI_Wait(&g->res_send, MPI_STATUS_IGNORE);
    cancel_req(&g->res_req, &g->res_posted);
    cancel_req(&g->err_req, &g->err_posted);
    bells_free(g);
    model_free(g->m);
    backend_destroy(g->be);
    free_buffers(g);
    comm_destroy(g->tp_dev);
    comm_destroy(g->tp);
    comm_destroy(g->tp_mpi);
    comm_destroy(g->world);
    free(g->layout);
    free(g);
}

/* ---- accessors ------------------------------------------------------------ */

bool group_is_leader(const group *g) { return g->rank == 0; }
int group_rank(const group *g) { return g->rank; }
int group_size(const group *g) { return g->size; }
int group_pp(const group *g) { return g->P; }
int group_tp(const group *g) { return g->T; }
const model_config *group_model_config(const group *g) { return &g->m->cfg; }
const gguf_file *group_gguf(const group *g) { return g->m->gguf; }
int64_t group_n_slots(const group *g) { return g->n_slots; }
int64_t group_n_ctx(const group *g) { return g->n_ctx; }
int group_max_inflight(const group *g) { return g->max_inflight; }
const shard_spec *group_shard(const group *g) { return &g->m->shard; }
const model *group_model(const group *g) { return g->m; }
int group_inflight(const group *g) { return g->inflight; }
uint64_t group_bytes_sent(const group *g) { return g->bytes_sent; }
bool group_failed(const group *g) { return g->failed; }

void group_planned_bytes(const group *g, uint64_t *weights, uint64_t *kv, uint64_t *scratch,
                         uint64_t *resident)
{
    const plan_rank *pr = &g->layout[g->rank];
    *weights = pr->weight_bytes;
    *kv = pr->kv_bytes;
    *scratch = pr->scratch_bytes;
    *resident = pr->resident_bytes;
}

const float *group_last_logits(const group *g, int64_t *n_rows, int64_t *n_vocab)
{
    if (n_rows)
        *n_rows = g->last_rows;
    if (n_vocab)
        *n_vocab = g->n_vocab;
    return g->last_rows > 0 ? g->last_logits : NULL;
}

/* ---- leader --------------------------------------------------------------- */

/* The engine's step rules, so that a group refuses exactly what an engine
 * refuses (slot_len reflects this step's releases). */
static cv_status step_check(group *g, const step *s, int64_t *n_tok, cv_err *e)
{
    unsigned long long id = (unsigned long long)s->id;
    if (s->n_seqs < 0 || (s->n_seqs > 0 && !s->seqs) || s->n_released < 0 ||
        (s->n_released > 0 && !s->released_slots))
        return cv_err_set(e, CV_EINVAL, "step %llu: bad sequence or released-slot list", id);
    if (s->n_released > g->n_slots)
        return cv_err_set(e, CV_EINVAL, "step %llu: %d released slots, more than the %lld slots",
                          id, s->n_released, (long long)g->n_slots);
    for (int32_t i = 0; i < s->n_released; i++)
        if (s->released_slots[i] < 0 || s->released_slots[i] >= g->n_slots)
            return cv_err_set(e, CV_EINVAL, "step %llu: released slot %d outside [0, %lld)", id,
                              s->released_slots[i], (long long)g->n_slots);
    int64_t n = 0;
    for (int32_t i = 0; i < s->n_seqs; i++) {
        const step_seq *q = &s->seqs[i];
        long long sid = (long long)q->seq_id;
        if (q->slot < 0 || q->slot >= g->n_slots)
            return cv_err_set(e, CV_EINVAL, "step %llu seq %lld: slot %d outside [0, %lld)", id,
                              sid, q->slot, (long long)g->n_slots);
        if (q->n_tokens < 1 || !q->tokens)
            return cv_err_set(e, CV_EINVAL, "step %llu seq %lld: n_tokens %d (needs >= 1)", id,
                              sid, q->n_tokens);
        if (q->pos < 0 || (int64_t)q->pos + q->n_tokens > g->n_ctx)
            return cv_err_set(e, CV_ERANGE, "step %llu seq %lld: positions [%d, %lld) exceed the "
                              "context of %lld", id, sid, q->pos, (long long)q->pos + q->n_tokens,
                              (long long)g->n_ctx);
        bool released = false;
        for (int32_t j = 0; j < s->n_released; j++)
            released |= s->released_slots[j] == q->slot;
        int64_t have = released ? 0 : g->slot_len[q->slot];
        if (q->pos > have)
            return cv_err_set(e, CV_EINVAL, "step %llu seq %lld: starts at position %d but slot %d "
                              "holds only %lld positions (a gap)", id, sid, q->pos, q->slot,
                              (long long)have);
        for (int32_t j = 0; j < q->n_tokens; j++)
            if (q->tokens[j] < 0 || q->tokens[j] >= g->n_vocab)
                return cv_err_set(e, CV_EINVAL, "step %llu seq %lld: token %d at index %d outside "
                                  "the vocabulary [0, %lld)", id, sid, q->tokens[j], j,
                                  (long long)g->n_vocab);
        for (int32_t j = 0; j < i; j++)
            if (s->seqs[j].slot == q->slot)
                return cv_err_set(e, CV_EINVAL, "step %llu: slot %d used by two sequences", id,
                                  q->slot);
        n += q->n_tokens;
    }
    if (n > g->max_batch)
        return cv_err_set(e, CV_ERANGE, "step %llu has %lld tokens, over the group's max batch of "
                          "%lld (split it)", id, (long long)n, (long long)g->max_batch);
    *n_tok = n;
    return CV_OK;
}

cv_status group_submit(group *g, const step *s, cv_err *e)
{
    if (g->rank != 0)
        return cv_err_set(e, CV_EINVAL, "group_submit on rank %d: only the leader submits", g->rank);
    if (g->failed)
        return cv_err_set(e, CV_ECOMM, "the group has failed");
    if (g->inflight >= g->max_inflight)
        return cv_err_set(e, CV_ERANGE, "%d steps in flight already (the pipeline depth): wait "
                          "for a result first", g->inflight);
    trace(g, TR_SUBMIT, s->id);
    int64_t n_tok = 0;
    cv_status st = step_check(g, s, &n_tok, e);
    if (st)
        return st;
    int k = g->send_next;
    if ((st = wait_send(g, k, e)))
        return report_failure(g, st, e);
    g->send_next = (k + 1) % g->nsend;

    /* encode */
    uint8_t *buf = g->send_buf[k];
    wire_hdr *h = (wire_hdr *)buf;
    memset(h, 0, sizeof *h);
    h->magic = WIRE_MAGIC;
    h->kind = KIND_STEP;
    h->id = s->id;
    h->n_seqs = s->n_seqs;
    h->n_released = s->n_released;
    h->n_tok = n_tok;
    h->plan_bytes = plan_bytes_for(s->n_seqs, n_tok, s->n_released);
    h->want_logits = g->want_logits;
    h->n_last_samples = g->n_last;
    wire_seq *ws = (wire_seq *)(buf + sizeof *h);
    int32_t *tk = (int32_t *)(ws + s->n_seqs);
    for (int32_t i = 0; i < s->n_seqs; i++) {
        const step_seq *q = &s->seqs[i];
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].seq_id = q->seq_id;
        ws[i].slot = q->slot;
        ws[i].pos = q->pos;
        ws[i].n_tokens = q->n_tokens;
        ws[i].want_sample = q->want_sample;
        ws[i].sp = q->sp;
        memcpy(tk, q->tokens, (size_t)q->n_tokens * sizeof(int32_t));
        tk += q->n_tokens;
    }
    if (s->n_released)
        memcpy(tk, s->released_slots, (size_t)s->n_released * sizeof(int32_t));
    for (int32_t i = 0; i < s->n_released; i++)
        g->slot_len[s->released_slots[i]] = 0;
    for (int32_t i = 0; i < s->n_seqs; i++) {
        const step_seq *q = &s->seqs[i];
        if (q->pos + q->n_tokens > g->slot_len[q->slot])
            g->slot_len[q->slot] = q->pos + q->n_tokens;
    }

    /* stage 0's TP ranks get the plan; then run stage 0 */
    if (g->T > 1) {
        if ((st = plan_bcast(g, buf, sizeof *h, e)) ||
            (st = plan_bcast(g, buf + sizeof *h, h->plan_bytes, e)))
            return report_failure(g, st, e);
    }
    plan_view v;
    if ((st = plan_decode(g, buf, false, &v, e)))
        return report_failure(g, st, e);
    float *hidden_out = (float *)(buf + sizeof *h + h->plan_bytes);
    g->local_ready = false;
    if ((st = stage_run(g, &v, g->P > 1 ? hidden_out : NULL, e)))
        return report_failure(g, st, e);
    if (g->P > 1) {
        size_t n_bytes = sizeof *h + h->plan_bytes + (size_t)(n_tok * g->n_embd) * sizeof(float);
        if ((st = forward_on(g, k, n_bytes, e)))
            return report_failure(g, st, e);
    } else {
        g->local_ready = true;
    }
    g->inflight++;
    return CV_OK;
}

/* Leader: sample the results the last stage left unsampled (the last
 * n_rows, or those from n_last when every row came for the tests), from the
 * plan of their step (still in the send buffer that carried it: a buffer is
 * reused only after its step's result is taken) and the leader's token
 * history. */
static cv_status leader_sample(group *g, wire_res *wr, cv_err *e)
{
    if (wr->n_last == wr->n_results)
        return CV_OK;
    const wire_hdr *h = NULL;
    for (int k = 0; k < g->nsend && !h; k++) {
        const wire_hdr *c = (const wire_hdr *)g->send_buf[k];
        if (c->magic == WIRE_MAGIC && c->kind == KIND_STEP && c->id == wr->id)
            h = c;
    }
    int64_t base = wr->n_results - wr->n_rows; /* result of the first row */
    if (!h || wr->n_last < 0 || wr->n_last > wr->n_results || base < 0 || base > wr->n_last ||
        wr->n_vocab != g->n_vocab)
        return cv_err_set(e, CV_EFORMAT, "leader: result of step %llu: %s (%d results, %d sampled "
                          "by the last stage, %lld rows)", (unsigned long long)wr->id,
                          h ? "rows do not match" : "no such step in flight", wr->n_results,
                          wr->n_last, (long long)wr->n_rows);
    const wire_seq *seqs = (const wire_seq *)((const uint8_t *)h + sizeof *h);
    step_seq_result *res = (step_seq_result *)((uint8_t *)wr + sizeof *wr);
    const float *rows = (const float *)(res + wr->n_results);
    int32_t k = 0;
    double t0 = now_s();
    for (int32_t i = 0; i < h->n_seqs; i++) {
        const wire_seq *q = &seqs[i];
        if (!q->want_sample)
            continue;
        if (k >= wr->n_results || res[k].seq_id != q->seq_id)
            return cv_err_set(e, CV_EFORMAT, "leader: result of step %llu: result %d is not for "
                              "sequence %lld", (unsigned long long)wr->id, k, (long long)q->seq_id);
        int64_t end = (int64_t)q->pos + q->n_tokens; /* the position being generated */
        if (k >= wr->n_last)
            sampler_sample(rows + (k - base) * g->n_vocab, g->n_vocab, &q->sp, end,
                           g->hist + (int64_t)q->slot * g->n_ctx, end, g->samp_scratch, &res[k].r);
        k++;
    }
    if (k != wr->n_results)
        return cv_err_set(e, CV_EFORMAT, "leader: result of step %llu: %d results for %d sampled "
                          "sequences", (unsigned long long)wr->id, wr->n_results, k);
    double ms = (now_s() - t0) * 1e3 / (wr->n_results - wr->n_last);
    g->samp_ms = g->samp_ms > 0 ? 0.8 * g->samp_ms + 0.2 * ms : ms;
    return CV_OK;
}

/* Leader, after each result with outputs: move one output of the next
 * steps' sampling towards the stage that waited more, when the difference
 * (smoothed) is over one sample's cost; after a move, wait for the steps in
 * flight to show its effect. */
static void split_adjust(group *g, const wire_res *wr)
{
    double idle0 = g->idle_acc * 1e3;
    g->idle_acc = 0;
    if (g->split_mode || wr->n_results == 0)
        return;
    g->split_bal = 0.7 * g->split_bal + 0.3 * (idle0 - wr->idle_ms);
    if (g->split_hold > 0) {
        g->split_hold--;
        return;
    }
    double dead = g->samp_ms > 0.5 ? g->samp_ms : 0.5;
    int32_t n_last = g->n_last < wr->n_results ? g->n_last : wr->n_results; /* in effect */
    if (g->split_bal > dead && n_last > 0)
        g->n_last = n_last - 1; /* the leader waits more: it takes one more */
    else if (g->split_bal < -dead && g->n_last < g->max_out)
        g->n_last = n_last + 1;
    else
        return;
    g->split_bal = 0;
    g->split_hold = g->max_inflight;
}

static cv_status result_take(group *g, step_result *r, cv_err *e)
{
    wire_res *wr = (wire_res *)g->res_buf;
    if (wr->magic != RES_MAGIC || wr->n_results < 0 || wr->n_results > g->max_out ||
        wr->n_rows < 0 || wr->n_rows > wr->n_results || (wr->n_rows && !g->want_logits && g->P == 1))
        return cv_err_set(e, CV_EFORMAT, "leader: bad result message (magic 0x%08x, %d results)",
                          wr->magic, wr->n_results);
    if (g->P > 1) {
        trace(g, TR_SAMPLE0, wr->id);
        cv_status st = leader_sample(g, wr, e);
        trace(g, TR_SAMPLED, wr->id);
        if (st)
            return st;
        split_adjust(g, wr);
        if (!g->want_logits)
            wr->n_rows = 0;
    }
    r->id = wr->id;
    r->n_results = wr->n_results;
    memcpy(r->results, g->res_buf + sizeof *wr, (size_t)wr->n_results * sizeof *r->results);
    g->last_rows = wr->n_rows;
    g->last_logits = (float *)(g->res_buf + sizeof *wr + (size_t)wr->n_results *
                                                             sizeof(step_seq_result));
    g->inflight--;
    return CV_OK;
}

cv_status group_poll(group *g, step_result *r, int timeout_ms, bool *ready, cv_err *e)
{
    *ready = false;
    if (g->rank != 0)
        return cv_err_set(e, CV_EINVAL, "group_poll on rank %d: only the leader waits", g->rank);
    if (g->failed)
        return cv_err_set(e, CV_ECOMM, "the group has failed");
    if (g->inflight == 0)
        return cv_err_set(e, CV_EINVAL, "group_poll: no step in flight");
    cv_status st;
    if (g->P == 1) {
        if (!g->local_ready)
            return cv_err_set(e, CV_EINTERNAL, "group_poll: no local result");
        g->local_ready = false;
        if ((st = result_take(g, r, e)))
            return report_failure(g, st, e);
        *ready = true;
        return CV_OK;
    }
    if (!g->res_posted) {
        int rc = MPI_Irecv(g->res_buf, (int)g->res_cap, MPI_BYTE, world_rank_of(g, g->P - 1, 0),
                           TAG_RESULT, g->wc, &g->res_req);
        if (rc != MPI_SUCCESS)
            return report_failure(g, mpi_fail(g, rc, "posting the result receive", e), e);
        g->res_posted = true;
    }
    MPI_Request reqs[2] = {g->res_req, g->err_req};
    int idx = MPI_UNDEFINED, flag = 0, rc;
    MPI_Status status;
    if (timeout_ms < 0) {
        double t0 = now_s();
        trace(g, TR_WAIT0, 0);
        rc = wait_polite(g, 2, reqs, &idx, &status, true);
        trace(g, TR_WAIT1, 0);
        g->t_wait += now_s() - t0;
        g->idle_acc += now_s() - t0;
        flag = rc == MPI_SUCCESS;
    } else {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        double idle0 = g->idle_acc;
        for (;;) {
            uint32_t seen = bell_read(g);
            rc = MPI_Testany(2, reqs, &idx, &flag, &status);
            if (rc != MPI_SUCCESS || flag)
                break;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
            g->idle_acc = idle0 + ms * 1e-3;
            if (ms >= timeout_ms)
                break;
            if (g->my_bell) {
                double left_us = (timeout_ms - ms) * 1e3;
                bell_sleep(g, seen, left_us < 2000 ? (long)left_us + 1 : 2000);
            } else {
                sleep_us(50);
            }
        }
    }
    g->res_req = reqs[0];
    g->err_req = reqs[1];
    if (rc != MPI_SUCCESS)
        return report_failure(g, mpi_fail(g, rc, "waiting for a result", e), e);
    if (!flag || idx == MPI_UNDEFINED)
        return CV_OK;
    if (idx == 1) {
        g->err_posted = false;
        g->err_msg[sizeof g->err_msg - 1] = 0;
        g->failed = true;
        return cv_err_set(e, CV_ECOMM, "%s", g->err_msg);
    }
    g->res_posted = false;
    if ((st = result_take(g, r, e)))
        return report_failure(g, st, e);
    *ready = true;
    return CV_OK;
}

cv_status group_wait(group *g, step_result *r, cv_err *e)
{
    bool ready = false;
    cv_status st = group_poll(g, r, -1, &ready, e);
    if (!st && !ready)
        return cv_err_set(e, CV_EINTERNAL, "group_wait: no result");
    return st;
}

cv_status group_step(group *g, const step *s, step_result *r, cv_err *e)
{
    cv_status st = group_submit(g, s, e);
    return st ? st : group_wait(g, r, e);
}

/* ---- followers ------------------------------------------------------------ */

/* The last stage's previous result send, before res_buf is reused. */
static cv_status res_send_wait(group *g, cv_err *e)
{
    if (g->res_send == MPI_REQUEST_NULL)
        return CV_OK;
    /* nobody rings a sender: the leader's receive completing may leave this
     * request to a later progress call, so nap briefly instead of sleeping on
     * the bell (that sleep ran to its 50 ms timeout between pipeline steps) */
    int idx, rc = wait_polite(g, 1, &g->res_send, &idx, MPI_STATUS_IGNORE, false);
    g->res_send = MPI_REQUEST_NULL;
    return rc == MPI_SUCCESS ? CV_OK : mpi_fail(g, rc, "sending a result to the leader", e);
}

cv_status group_serve(group *g, cv_err *e)
{
    if (g->rank == 0)
        return cv_err_set(e, CV_EINVAL, "group_serve on the leader");
    cv_status st;
    bool last = g->s == g->P - 1;
    for (;;) {
        uint8_t *in = g->recv_buf;
        plan_view v;
        if (g->s == 0) {
            /* the leader's plan, by broadcast */
            if ((st = plan_bcast(g, in, sizeof(wire_hdr), e)))
                return report_failure(g, st, e);
            const wire_hdr *h = (const wire_hdr *)in;
            if (h->magic == WIRE_MAGIC && h->kind == KIND_STEP) {
                if (h->plan_bytes > g->msg_cap - sizeof *h)
                    return report_failure(
                        g, cv_err_set(e, CV_EFORMAT, "rank %d: plan of %llu bytes over %zu",
                                      g->rank, (unsigned long long)h->plan_bytes, g->msg_cap),
                        e);
                if ((st = plan_bcast(g, in + sizeof *h, h->plan_bytes, e)))
                    return report_failure(g, st, e);
            }
            if ((st = plan_decode(g, in, false, &v, e)))
                return report_failure(g, st, e);
        } else {
            int src = world_rank_of(g, g->s - 1, g->t);
            MPI_Request rq;
            int idx, rc = MPI_Irecv(in, (int)g->msg_cap, MPI_BYTE, src, TAG_ACT, g->wc, &rq);
            double t0 = now_s();
            trace(g, TR_WAIT0, 0);
            if (rc == MPI_SUCCESS)
                rc = wait_polite(g, 1, &rq, &idx, MPI_STATUS_IGNORE, true);
            trace(g, TR_WAIT1, ((const wire_hdr *)in)->id);
            g->t_wait += now_s() - t0;
            g->idle_acc += now_s() - t0;
            if (rc != MPI_SUCCESS)
                return report_failure(
                    g, mpi_fail(g, rc, "receiving activations from the previous stage", e), e);
            if ((st = plan_decode(g, in, true, &v, e)))
                return report_failure(g, st, e);
        }
        const wire_hdr *h = v.h;
        int k = g->send_next;
        if (!last) {
            if ((st = wait_send(g, k, e)))
                return report_failure(g, st, e);
            g->send_next = (k + 1) % g->nsend;
        }
        if ((st = res_send_wait(g, e)))
            return report_failure(g, st, e);
        if (h->kind == KIND_SHUTDOWN) {
            if (!last) {
                memcpy(g->send_buf[k], h, sizeof *h);
                if ((st = forward_on(g, k, sizeof *h, e)) || (st = wait_send(g, k, e)))
                    return report_failure(g, st, e);
            }
            return CV_OK;
        }
        float *hidden_out = NULL;
        if (!last) {
            memcpy(g->send_buf[k], in, sizeof *h + h->plan_bytes);
            hidden_out = (float *)(g->send_buf[k] + sizeof *h + h->plan_bytes);
        }
        if ((st = stage_run(g, &v, hidden_out, e)))
            return report_failure(g, st, e);
        if (!last) {
            size_t n_bytes =
                sizeof *h + h->plan_bytes + (size_t)(h->n_tok * g->n_embd) * sizeof(float);
            if ((st = forward_on(g, k, n_bytes, e)))
                return report_failure(g, st, e);
        } else if (g->t == 0) {
            /* non-blocking: a large result (rendezvous) completes while the
             * next step computes; waited before res_buf is written again */
            size_t n = res_msg_bytes(g);
            g->bytes_sent += n;
            int rc = MPI_Isend(g->res_buf, (int)n, MPI_BYTE, 0, TAG_RESULT, g->wc, &g->res_send);
            if (rc != MPI_SUCCESS)
                return report_failure(g, mpi_fail(g, rc, "sending a result to the leader", e), e);
            bell_ring(g, 0);
            trace(g, TR_SENT, h->id);
        }
    }
}
