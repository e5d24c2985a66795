/* net_serve.c - `caravan serve -m MODEL [--tp T --pp P --groups G] [ports...]`:
 * the one-command local case. Starts the coordinator (net_coord_run) and G
 * local worker groups joined to its cluster port: `mpirun -np T*P caravan
 * worker --join 127.0.0.1:PORT ...` when T*P > 1, else a `caravan worker`
 * process. A group that dies is restarted (after a short, growing delay);
 * one refused by the coordinator (exit status 3) is not. Worker options
 * (--threads, --slots, --ctx, --device, ...) are passed through. */
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/net_common.h"
#include "core/log.h"

#define SERVE_MAX_GROUPS 64

typedef struct serve_child {
    pid_t pid;
    int restarts;
    struct event *restart_ev;
    struct serve_ctx *ctx;
    int index;
} serve_child;

typedef struct serve_ctx {
    const coord_config *cfg;
    int64_t tp, pp, groups;
    char **rest;
    int n_rest;
    char self[4096];
    int cluster_port;
    coord *c;
    struct event_base *base;
    struct event *sigchld;
    serve_child kids[SERVE_MAX_GROUPS];
    bool stopping;
} serve_ctx;

static void spawn(serve_child *k)
{
    serve_ctx *s = k->ctx;
    char join[64], np[16], tps[16], pps[16];
    snprintf(join, sizeof join, "127.0.0.1:%d", s->cluster_port);
    snprintf(np, sizeof np, "%lld", (long long)(s->tp * s->pp));
    snprintf(tps, sizeof tps, "%lld", (long long)s->tp);
    snprintf(pps, sizeof pps, "%lld", (long long)s->pp);
    const char *av[64 + 2 * 32];
    int n = 0;
    if (s->tp * s->pp > 1) {
        av[n++] = "mpirun";
        av[n++] = "-np";
        av[n++] = np;
    }
    av[n++] = s->self;
    av[n++] = "worker";
    av[n++] = "--join";
    av[n++] = join;
    av[n++] = "-m";
    av[n++] = s->cfg->model_path;
    if (s->tp * s->pp > 1) {
        av[n++] = "--tp";
        av[n++] = tps;
        av[n++] = "--pp";
        av[n++] = pps;
    }
    for (int i = 0; i < s->n_rest && n < 120; i++) av[n++] = s->rest[i];
    av[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        log_error("serve: fork failed: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        if (s->cfg->cluster_token) setenv("CARAVAN_CLUSTER_TOKEN", s->cfg->cluster_token, 1);
        signal(SIGPIPE, SIG_DFL);
        execvp(av[0], (char *const *)av);
        fprintf(stderr, "caravan serve: cannot run %s: %s\n", av[0], strerror(errno));
        _exit(127);
    }
    k->pid = pid;
    log_info("serve: started group %d (pid %d%s)", k->index, (int)pid,
             s->tp * s->pp > 1 ? ", mpirun" : "");
}

static void restart_cb(evutil_socket_t fd, short what, void *arg)
{
    serve_child *k = arg;
    if (!k->ctx->stopping) spawn(k);
}

static void sigchld_cb(evutil_socket_t sig, short what, void *arg)
{
    serve_ctx *s = arg;
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < s->groups; i++) {
            serve_child *k = &s->kids[i];
            if (k->pid != pid) continue;
            k->pid = 0;
            int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            if (s->stopping) break;
            if (code == 3) {
                log_error("serve: group %d was refused by the coordinator; not restarting", i);
                break;
            }
            int delay_ms = 500 * (1 << (k->restarts < 5 ? k->restarts : 5));
            k->restarts++;
            log_warn("serve: group %d (pid %d) exited with status %d; restarting in %d ms", i,
                     (int)pid, code, delay_ms);
            struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
            evtimer_add(k->restart_ev, &tv);
        }
    }
}

static void on_start(coord *c, struct event_base *base, void *ud)
{
    serve_ctx *s = ud;
    s->c = c;
    s->base = base;
    s->cluster_port = coord_port(c, COORD_PORT_CLUSTER);
    s->sigchld = evsignal_new(base, SIGCHLD, sigchld_cb, s);
    event_add(s->sigchld, NULL);
    for (int i = 0; i < s->groups; i++) {
        s->kids[i].ctx = s;
        s->kids[i].index = i;
        s->kids[i].restart_ev = evtimer_new(base, restart_cb, &s->kids[i]);
        spawn(&s->kids[i]);
    }
}

/* Loop ended: stop the groups, free their events while the loop exists. */
static void on_stop(void *ud)
{
    serve_ctx *s = ud;
    s->stopping = true;
    for (int i = 0; i < s->groups; i++)
        if (s->kids[i].pid > 0) kill(s->kids[i].pid, SIGTERM);
    for (int i = 0; i < s->groups; i++) {
        if (s->kids[i].pid > 0) {
            int st;
            int t = 0;
            while (t++ < 50 && waitpid(s->kids[i].pid, &st, WNOHANG) == 0) usleep(100000);
            if (t > 50) {
                kill(s->kids[i].pid, SIGKILL);
                waitpid(s->kids[i].pid, &st, 0);
            }
            s->kids[i].pid = 0;
        }
        if (s->kids[i].restart_ev) event_free(s->kids[i].restart_ev);
        s->kids[i].restart_ev = NULL;
    }
    if (s->sigchld) event_free(s->sigchld);
    s->sigchld = NULL;
}

int cmd_serve(int argc, char **argv)
{
    serve_ctx s;
    memset(&s, 0, sizeof s);
    s.tp = s.pp = s.groups = 1;
    char **rest = calloc((size_t)argc + 1, sizeof *rest), **pass = calloc((size_t)argc + 1, sizeof *pass);
    if (!rest || !pass) return 1;
    coord_config cfg;
    int n_rest = 0;
    int rc = net_coord_parse("serve", argc, argv, &cfg, rest, &n_rest);
    if (rc >= 0) {
        if (rc == 0)
            printf("  --tp T --pp P          layout of each local group (mpirun -np T*P)\n"
                   "  --groups G             local groups (default 1)\n"
                   "  worker options (--threads, --slots, --ctx, --device, ...) are passed on\n");
        free(rest);
        free(pass);
        return rc;
    }
    for (int i = 0; i < n_rest; i++) {
        const char *a = rest[i];
        int64_t *dst = !strcmp(a, "--tp") ? &s.tp : !strcmp(a, "--pp") ? &s.pp
                     : !strcmp(a, "--groups") ? &s.groups : NULL;
        if (dst) {
            if (i + 1 >= n_rest || !cli_parse_int("serve", a, rest[i + 1], 1, dst == &s.groups ? SERVE_MAX_GROUPS : 1024, dst)) {
                if (i + 1 >= n_rest) fprintf(stderr, "caravan serve: %s needs a value\n", a);
                free(rest);
                free(pass);
                return 2;
            }
            i++;
        } else {
            pass[s.n_rest++] = rest[i];
        }
    }
    if (cfg.cluster_port < 0) {
        fprintf(stderr, "caravan serve: local groups need the cluster port (--cluster-port >= 0)\n");
        free(rest);
        free(pass);
        return 2;
    }
    s.rest = pass;
    s.cfg = &cfg;
    ssize_t n = readlink("/proc/self/exe", s.self, sizeof s.self - 1);
    if (n <= 0) snprintf(s.self, sizeof s.self, "%s", "caravan");
    else s.self[n] = 0;
    rc = net_coord_run("serve", &cfg, on_start, on_stop, &s);
    free(rest);
    free(pass);
    return rc;
}
