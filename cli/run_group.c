/* run_group.c - `caravan run` under mpirun: every rank joins one MPI worker
 * group (worker/group.h); rank 0 leads it through link_inproc_group, the
 * others serve steps until the leader is done. */
#ifdef CARAVAN_HAVE_MPI
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/run_common.h"
#include "coordinator/link.h"
#include "worker/group.h"

/* "8G,8G,4G" -> world values; one value applies to all ranks. */
static cv_status parse_mem_list(const char *s, int world, uint64_t *out, cv_err *e)
{
    char *dup = strdup(s), *save = NULL;
    int n = 0;
    for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n >= world) {
            free(dup);
            return cv_err_set(e, CV_EINVAL, "--mem lists more values than the %d ranks", world);
        }
        if (!cli_parse_size("run", "--mem", tok, &out[n])) {
            free(dup);
            return cv_err_set(e, CV_EINVAL, "bad --mem value '%s'", tok);
        }
        n++;
    }
    free(dup);
    if (n == 1)
        for (int i = 1; i < world; i++)
            out[i] = out[0];
    else if (n != world)
        return cv_err_set(e, CV_EINVAL, "--mem lists %d values for %d ranks", n, world);
    return CV_OK;
}

cv_status run_group_open(const run_opts *o, run_backend *rb, int rank, int world, cv_err *e)
{
    if (o->tp * o->pp != world)
        return cv_err_set(e, CV_EINVAL,
                          "--tp %d x --pp %d = %d ranks, but mpirun started %d (use -np %d, or "
                          "adjust --tp/--pp)",
                          o->tp, o->pp, o->tp * o->pp, world, o->tp * o->pp);
    uint64_t *mem = NULL;
    if (o->mem) {
        mem = calloc((size_t)world, sizeof *mem);
        if (!mem)
            return cv_err_set(e, CV_ENOMEM, "out of memory");
        cv_status st = parse_mem_list(o->mem, world, mem, e);
        if (st != CV_OK) {
            free(mem);
            return st;
        }
    }
    group_config gc = {.model_path = o->model,
                       .be = {.device = o->device, .n_threads = (int)o->threads,
                              .cpu_level = o->cpu_level},
                       .params = {.n_slots = o->n_slots, .n_ctx = o->n_ctx,
                                  .kv_type = o->kv_type, .max_batch = o->batch,
                                  .weights_mmap = o->mmap},
                       .tp = o->tp,
                       .pp = o->pp,
                       .mem = mem};
    cv_status st = group_create(MPI_COMM_WORLD, &gc, &rb->grp, e);
    free(mem);
    if (st != CV_OK)
        return st;
    rb->gguf = group_gguf(rb->grp);
    snprintf(rb->backend_name, sizeof rb->backend_name, "%s/tp%d-pp%d", o->device, o->tp, o->pp);
    if (rank == 0) {
        rb->link = link_inproc_group(rb->grp);
        if (!rb->link)
            return cv_err_set(e, CV_ENOMEM, "out of memory");
    }
    return CV_OK;
}

int run_group_serve(run_backend *rb, cv_err *e)
{
    if (group_serve(rb->grp, e) == CV_OK)
        return 0;
    /* Peers may be blocked in a collective with this rank: end the job now
     * (the leader has been told which rank failed and why). */
    fprintf(stderr, "caravan run: %s\n", e->msg);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}

void run_group_close(run_backend *rb)
{
    if (rb->grp && group_failed(rb->grp)) {
        /* the error was printed by the caller; ranks may be blocked: end the job */
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    group_free(rb->grp);
    rb->grp = NULL;
}
#endif
