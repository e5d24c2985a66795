/* net_worker.c - `caravan worker --join HOST:PORT -m MODEL [--tp T --pp P]`:
 * a worker group that joins a coordinator over the cluster protocol
 * (proto/cluster.proto, coordinator/cluster.h).
 *
 * Under mpirun/srun every rank opens its shard (run_backend_open, the same
 * code as `caravan run`); rank 0, the leader, then connects to the
 * coordinator, says Hello (version, token, ranks, slots), waits for Assign,
 * answers Ready and serves steps. Other ranks serve the group (group_serve).
 * On the leader, a thread of its own keeps the connection alive (heartbeats
 * every heartbeat_ms, also while a long step computes); the main thread
 * reads steps straight from the socket (no hand-off between threads on the
 * per-token path), keeps up to `stages` of them in flight in the group and
 * sends the results back in order. A coordinator silent for --timeout-ms
 * (checked whenever the main thread waits) ends the worker. The worker exits non-zero when the coordinator refuses it
 * or goes away (so `caravan serve` / a supervisor can restart it). */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/run_common.h"
#include "coordinator/cluster.h"
#include "coordinator/link.h"
#include "core/log.h"
#include "core/model_config.h"

typedef struct wq_item {
    step st;
    struct wq_item *next;
} wq_item;

typedef struct worker_io {
    int fd;
    pthread_mutex_t mu;       /* guards the stop flag and sends */
    pthread_cond_t cv;
    wq_item *head, *tail;
    int n_queued;
    bool stop;                /* coordinator gone or refused */
    char why[640];
    uint64_t last_recv_ms;
    int heartbeat_ms, timeout_ms;
    int64_t n_slots, n_vocab;
    size_t max_frame;
} worker_io;

static void io_fail(worker_io *io, const char *msg)
{
    pthread_mutex_lock(&io->mu);
    if (!io->stop) {
        io->stop = true;
        snprintf(io->why, sizeof io->why, "%s", msg);
    }
    pthread_cond_broadcast(&io->cv);
    pthread_mutex_unlock(&io->mu);
}

static cv_status io_send(worker_io *io, const cl_env *env, cv_err *e)
{
    pthread_mutex_lock(&io->mu);
    cv_status st = cluster_fd_send(io->fd, env, e);
    pthread_mutex_unlock(&io->mu);
    return st;
}

static void send_heartbeat(worker_io *io)
{
    cl_heartbeat hb = CARAVAN__CLUSTER__V1__HEARTBEAT__INIT;
    hb.time_ms = cluster_now_ms();
    cl_env env = CARAVAN__CLUSTER__V1__ENVELOPE__INIT;
    env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    cv_err e;
    if (io_send(io, &env, &e)) io_fail(io, e.msg);
}

/* The heartbeat thread: liveness while the main thread computes. */
static void *hb_thread(void *arg)
{
    worker_io *io = arg;
    for (;;) {
        pthread_mutex_lock(&io->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += io->heartbeat_ms / 1000;
        ts.tv_nsec += (long)(io->heartbeat_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        while (!io->stop && pthread_cond_timedwait(&io->cv, &io->mu, &ts) == 0) {
        }
        bool stop = io->stop;
        pthread_mutex_unlock(&io->mu);
        if (stop) break;
        send_heartbeat(io);
    }
    return NULL;
}

/* Read every frame that is waiting (block up to wait_ms for the first one):
 * steps are queued, heartbeats noted, an Error or anything else ends it. */
static void read_frames(worker_io *io, int wait_ms)
{
    for (int first = 1;; first = 0) {
        struct pollfd pf = {.fd = io->fd, .events = POLLIN};
        int rc = poll(&pf, 1, first ? wait_ms : 0);
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) {
            uint64_t now = cluster_now_ms();
            if (now - io->last_recv_ms > (uint64_t)io->timeout_ms) {
                char m[128];
                snprintf(m, sizeof m, "coordinator silent for %llu ms",
                         (unsigned long long)(now - io->last_recv_ms));
                io_fail(io, m);
            }
            return;
        }
        cl_env *env = NULL;
        cv_err e;
        if (cluster_fd_recv(io->fd, io->max_frame, &env, &e)) {
            io_fail(io, e.msg);
            return;
        }
        io->last_recv_ms = cluster_now_ms();
        if (env->msg_case == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_STEP) {
            wq_item *it = calloc(1, sizeof *it);
            if (!it || cluster_step_from_pb(env->step, io->n_slots, io->n_vocab, &it->st, &e)) {
                free(it);
                cluster_env_free(env);
                io_fail(io, it ? e.msg : "out of memory");
                return;
            }
            if (io->tail) io->tail->next = it;
            else io->head = it;
            io->tail = it;
            io->n_queued++;
        } else if (env->msg_case == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_ERROR) {
            char m[600];
            snprintf(m, sizeof m, "coordinator: %.500s", env->error->message ? env->error->message : "");
            cluster_env_free(env);
            io_fail(io, m);
            return;
        } else if (env->msg_case != CARAVAN__CLUSTER__V1__ENVELOPE__MSG_HEARTBEAT) {
            cluster_env_free(env);
            io_fail(io, "unexpected message from the coordinator");
            return;
        }
        cluster_env_free(env);
    }
}

static int connect_to(const char *hostport, cv_err *e)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof host) {
        cv_err_set(e, CV_EINVAL, "--join wants HOST:PORT (got '%s')", hostport);
        return -1;
    }
    memcpy(host, hostport, colon - hostport);
    host[colon - hostport] = 0;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, colon + 1, &hints, &ai);
    if (rc) {
        cv_err_set(e, CV_EINVAL, "cannot resolve %s: %s", hostport, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        cv_err_set(e, CV_ECOMM, "cannot connect to the coordinator at %s: %s", hostport, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void usage(void)
{
    printf("usage: caravan worker --join HOST:PORT -m MODEL [--tp T --pp P] [--cluster-token T]\n"
           "                      [--slots N] [--ctx N] [--threads N] [--batch N] [--device D]\n"
           "  Run under mpirun/srun for T*P ranks; rank 0 joins the coordinator.\n"
           "  --slots N            sequences resident at once (default 16)\n"
           "  --heartbeat-ms N     heartbeat period (default 1000; the coordinator's Assign wins)\n"
           "  --timeout-ms N       exit when the coordinator is silent this long (default 10000)\n"
           "  --retry-s N          keep trying to connect for N seconds (default 30)\n"
           "  $CARAVAN_CLUSTER_TOKEN is used when --cluster-token is not given\n");
}

int cmd_worker(int argc, char **argv)
{
    const char *join = NULL, *token = getenv("CARAVAN_CLUSTER_TOKEN");
    int64_t hb_ms = 1000, timeout_ms = 10000, retry_s = 30;
    bool have_slots = false;
    /* our flags out, the rest to the run parser */
    char **rargv = calloc((size_t)argc + 4, sizeof *rargv);
    int rargc = 0;
    if (!rargv) return 1;
    rargv[rargc++] = "worker";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            free(rargv);
            return 0;
        } else if (!strcmp(a, "--join") && i + 1 < argc) {
            join = argv[++i];
        } else if (!strcmp(a, "--cluster-token") && i + 1 < argc) {
            token = argv[++i];
        } else if (!strcmp(a, "--heartbeat-ms") && i + 1 < argc) {
            if (!cli_parse_int("worker", a, argv[++i], 10, 600000, &hb_ms)) return 2;
        } else if (!strcmp(a, "--retry-s") && i + 1 < argc) {
            if (!cli_parse_int("worker", a, argv[++i], 0, 86400, &retry_s)) return 2;
        } else if (!strcmp(a, "--timeout-ms") && i + 1 < argc) {
            if (!cli_parse_int("worker", a, argv[++i], 100, 3600000, &timeout_ms)) return 2;
        } else {
            if (!strcmp(a, "--slots")) have_slots = true;
            rargv[rargc++] = argv[i];
        }
    }
    if (!have_slots) {
        rargv[rargc++] = "--slots";
        rargv[rargc++] = "16";
    }
    if (!join) {
        fprintf(stderr, "caravan worker: --join HOST:PORT is required (try caravan worker --help)\n");
        free(rargv);
        return 2;
    }
    run_opts o;
    int rc = run_opts_parse(rargc, rargv, &o);
    if (rc >= 0) {
        free(rargv);
        return rc;
    }
    signal(SIGPIPE, SIG_IGN);
    run_backend rb;
    int rank = 0, world = 1;
    cv_err e;
    cv_err_clear(&e);
    int status = 0;
    if (run_backend_open(&o, &rb, &rank, &world, &e) != CV_OK) {
        fprintf(stderr, "caravan worker (rank %d): %s\n", rank, e.msg);
        run_backend_close(&rb);
        run_opts_free(&o);
        free(rargv);
        return 1;
    }
    if (rank != 0) {
        status = run_backend_serve(&rb, &e) ? 1 : 0;
        if (status) fprintf(stderr, "caravan worker (rank %d): %s\n", rank, e.msg);
        run_backend_close(&rb);
        run_opts_free(&o);
        free(rargv);
        return status;
    }
    group_link *link = rb.link;
    worker_io io = {.fd = -1, .heartbeat_ms = (int)hb_ms, .timeout_ms = (int)timeout_ms,
                    .n_slots = link->n_slots, .max_frame = CLUSTER_DEFAULT_MAX_FRAME};
    pthread_mutex_init(&io.mu, NULL);
    pthread_cond_init(&io.cv, NULL);
    pthread_t th;
    bool th_started = false;
    step_result res = {0};
    res.results = calloc((size_t)link->n_slots + 1, sizeof *res.results);
    if (rb.gguf) {
        model_config mc;
        if (model_config_load(rb.gguf, &mc, NULL) == CV_OK) io.n_vocab = mc.n_vocab;
    }
    /* the coordinator may not be up yet (or restarting): retry for a while */
    for (int64_t t = 0;; t++) {
        io.fd = connect_to(join, &e);
        if (io.fd >= 0 || t >= retry_s || e.code != CV_ECOMM) break;
        if (t == 0) fprintf(stderr, "caravan worker: %s; retrying for %lld s\n", e.msg, (long long)retry_s);
        sleep(1);
    }
    if (io.fd < 0 || !res.results) {
        fprintf(stderr, "caravan worker: %s\n", io.fd < 0 ? e.msg : "out of memory");
        status = 1;
        goto out;
    }
    {
        /* Hello -> Assign | Error */
        cl_hello h = CARAVAN__CLUSTER__V1__HELLO__INIT;
        h.version = CLUSTER_PROTOCOL_VERSION;
        h.token = (char *)(token ? token : "");
        h.ranks = world;
        h.n_slots = link->n_slots;
        h.n_ctx = link->n_ctx;
        h.stages = link->max_inflight;
        h.tp = o.tp > 0 ? o.tp : 1;
        h.model = (char *)o.model;
        h.software = "caravan " CARAVAN_VERSION_STRING;
        /* the leader's own device and free memory (the group's layout is in Ready's plan) */
        Caravan__Cluster__V1__Device dev = CARAVAN__CLUSTER__V1__DEVICE__INIT;
        Caravan__Cluster__V1__Device *devp = &dev;
        long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        dev.kind = (char *)(o.device && !strncmp(o.device, "cuda", 4) ? "cuda" : "cpu");
        dev.name = (char *)(o.device ? o.device : "cpu");
        dev.memory_bytes = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
        h.n_devices = 1;
        h.devices = &devp;
        h.memory_bytes = dev.memory_bytes;
        cl_env env = CARAVAN__CLUSTER__V1__ENVELOPE__INIT;
        env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_HELLO;
        env.hello = &h;
        cl_env *ans = NULL;
        if (cluster_fd_send(io.fd, &env, &e) || cluster_fd_recv(io.fd, io.max_frame, &ans, &e)) {
            fprintf(stderr, "caravan worker: joining %s: %s\n", join, e.msg);
            status = 1;
            goto out;
        }
        if (ans->msg_case == CARAVAN__CLUSTER__V1__ENVELOPE__MSG_ERROR) {
            fprintf(stderr, "caravan worker: the coordinator refused this group: %s\n",
                    ans->error->message ? ans->error->message : "");
            cluster_env_free(ans);
            status = 3;
            goto out;
        }
        if (ans->msg_case != CARAVAN__CLUSTER__V1__ENVELOPE__MSG_ASSIGN) {
            fprintf(stderr, "caravan worker: expected Assign from the coordinator (got case %d)\n",
                    ans->msg_case);
            cluster_env_free(ans);
            status = 1;
            goto out;
        }
        if (ans->assign->heartbeat_ms >= 10) io.heartbeat_ms = (int)ans->assign->heartbeat_ms;
        cluster_env_free(ans);
        cl_ready r = CARAVAN__CLUSTER__V1__READY__INIT;
        r.n_slots = link->n_slots;
        r.n_ctx = link->n_ctx;
        r.stages = link->max_inflight;
        char plan[128];
        snprintf(plan, sizeof plan, "%d ranks: tp %d x pp %d (%s)", world, o.tp > 0 ? o.tp : 1,
                 o.pp > 0 ? o.pp : 1, rb.backend_name);
        r.plan = plan;
        env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_READY;
        env.ready = &r;
        if (cluster_fd_send(io.fd, &env, &e)) {
            fprintf(stderr, "caravan worker: %s\n", e.msg);
            status = 1;
            goto out;
        }
        fprintf(stderr, "caravan worker: joined %s (%d ranks, %lld slots, n_ctx %lld)\n", join,
                world, (long long)link->n_slots, (long long)link->n_ctx);
    }
    io.last_recv_ms = cluster_now_ms();
    if (pthread_create(&th, NULL, hb_thread, &io) != 0) {
        fprintf(stderr, "caravan worker: cannot start the heartbeat thread\n");
        status = 1;
        goto out;
    }
    th_started = true;
    /* steps in order, up to max_inflight outstanding */
    {
        int inflight = 0;
        for (;;) {
            /* wait for steps only when nothing is in flight */
            read_frames(&io, inflight > 0 ? 0 : 200);
            pthread_mutex_lock(&io.mu);
            bool stop = io.stop;
            pthread_mutex_unlock(&io.mu);
            if (stop) break;
            while (io.head && inflight < link->max_inflight) {
                wq_item *it = io.head;
                io.head = it->next;
                if (!io.head) io.tail = NULL;
                io.n_queued--;
                cv_status st = link->ops->submit(link, &it->st, &e);
                uint64_t sid = it->st.id;
                cluster_step_free(&it->st);
                free(it);
                if (st) {
                    cl_error er = CARAVAN__CLUSTER__V1__ERROR__INIT;
                    er.code = st;
                    er.message = e.msg;
                    er.step_id = sid;
                    cl_env env = CARAVAN__CLUSTER__V1__ENVELOPE__INIT;
                    env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_ERROR;
                    env.error = &er;
                    cv_err e2;
                    if (io_send(&io, &env, &e2)) io_fail(&io, e2.msg);
                    continue;
                }
                inflight++;
            }
            while (inflight > 0) {
                bool ready = false;
                /* pipeline full or nothing more to feed it: wait a little for a result */
                int to = (inflight >= link->max_inflight || !io.head) ? 2 : 0;
                cv_status st = link->ops->poll(link, &res, to, &ready, &e);
                if (st && !ready) {
                    fprintf(stderr, "caravan worker: group failed: %s\n", e.msg);
                    io_fail(&io, e.msg);
                    status = 1;
                    break;
                }
                if (!ready) break; /* look at the socket again */
                inflight--;
                cl_env env = CARAVAN__CLUSTER__V1__ENVELOPE__INIT;
                cl_error er = CARAVAN__CLUSTER__V1__ERROR__INIT;
                cl_step_result *pr = NULL;
                if (st) {
                    er.code = st;
                    er.message = e.msg;
                    er.step_id = res.id;
                    env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_ERROR;
                    env.error = &er;
                } else {
                    pr = cluster_result_to_pb(&res);
                    env.msg_case = CARAVAN__CLUSTER__V1__ENVELOPE__MSG_STEP_RESULT;
                    env.step_result = pr;
                }
                cv_err e2;
                if (io_send(&io, &env, &e2)) io_fail(&io, e2.msg);
                cluster_result_pb_free(pr);
            }
            if (status) break;
        }
    }
    pthread_mutex_lock(&io.mu);
    if (!status && io.why[0]) {
        fprintf(stderr, "caravan worker: leaving: %s\n", io.why);
        status = 4;
    }
    pthread_mutex_unlock(&io.mu);
out:
    if (th_started) {
        io_fail(&io, "shutting down");
        pthread_join(th, NULL);
    }
    while (io.head) {
        wq_item *it = io.head;
        io.head = it->next;
        cluster_step_free(&it->st);
        free(it);
    }
    if (io.fd >= 0) close(io.fd);
    free(res.results);
    run_backend_close(&rb);
    run_opts_free(&o);
    free(rargv);
    return status;
}
