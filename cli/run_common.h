/* run_common.h - options and group set-up shared by `caravan run` and other
 * one-shot commands: parses the run flags and opens either a single-process
 * engine or (under mpirun with several ranks) an MPI worker group, returning
 * a group_link the scheduler can drive. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "core/gguf.h"
#include "core/sampler.h"
#include "core/status.h"

struct group_link;

typedef struct run_opts {
    const char *model;
    const char **prompts; /* n_prompts (>= 1; "" means BOS alone) */
    int n_prompts;
    int64_t n_predict;    /* tokens to generate per prompt */
    sampling_params sp;
    int64_t threads;      /* 0 = all cores */
    const char *device;   /* "cpu" | "cuda:N" */
    const char *cpu_level;
    int64_t n_ctx;        /* 0 = min(train ctx, 4096) */
    int64_t n_slots;      /* 0 = number of prompts (at least 1) */
    int64_t batch;        /* tokens per step */
    int kv_type;          /* DT_F32 / DT_F16 */
    int tp, pp;           /* layout under mpirun */
    const char *mem;      /* --mem list for the planner */
    bool json;
    int top_logprobs;
    bool no_bos;
    bool ignore_eos;
    bool mmap;   /* --mmap: compute from the file mapping, no huge-page copy */
} run_opts;

/* Parse argv (argv[0] = "run"). Returns -1 to go on, or an exit code (0 for
 * --help, 2 for bad input after printing a one-line error). */
int run_opts_parse(int argc, char **argv, run_opts *o);
void run_opts_free(run_opts *o);

typedef struct run_backend {
    struct engine *eng;      /* single process */
    struct group *grp;       /* MPI group (several ranks) */
    struct group_link *link; /* rank 0 only */
    const gguf_file *gguf;   /* metadata for the tokenizer */
    gguf_file *own_gguf;     /* opened here (MPI path) */
    char backend_name[64];
    bool mpi_initialized;
} run_backend;

/* Open the model: an engine when this is one process, else an MPI group
 * (collective: every rank calls it). rank and world tell the caller its role. */
cv_status run_backend_open(const run_opts *o, run_backend *rb, int *rank, int *world, cv_err *e);
/* Follower ranks: serve steps until the leader closes the group. 0 on success. */
int run_backend_serve(run_backend *rb, cv_err *e);
void run_backend_close(run_backend *rb);

#ifdef CARAVAN_HAVE_MPI
/* The MPI side (cli/run_group.c): open a group over MPI_COMM_WORLD. */
cv_status run_group_open(const run_opts *o, run_backend *rb, int rank, int world, cv_err *e);
int run_group_serve(run_backend *rb, cv_err *e);
void run_group_close(run_backend *rb);
#endif
