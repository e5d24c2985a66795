/* run_common.c - `caravan run` options and opening the engine or MPI group. */
#include "cli/run_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "coordinator/link.h"
#include "core/dtype.h"
#include "worker/engine.h"
#ifdef CARAVAN_HAVE_MPI
#include <mpi.h>

#include "worker/group.h"
#endif

static void run_usage(FILE *f)
{
    fprintf(f,
            "usage: caravan run -m MODEL [-p PROMPT]... [-n N] [options]\n"
            "  -m, --model FILE       GGUF model\n"
            "  -p, --prompt TEXT      prompt (repeat for several concurrent sequences; empty = BOS)\n"
            "  -n, --n-predict N      tokens to generate (default 128)\n"
            "  --temp T               temperature, 0 = greedy (default 0.8)\n"
            "  --top-k K              (default 40; 0 = off)\n"
            "  --top-p P              (default 0.95; 1 = off)\n"
            "  --min-p M              (default 0.05; 0 = off)\n"
            "  --repeat-penalty R     (default 1.0 = off)  --repeat-last-n N (default 64)\n"
            "  --frequency-penalty F  --presence-penalty P (default 0)\n"
            "  --seed S               sampling seed (default: from the clock)\n"
            "  -t, --threads N        CPU threads (default: all cores)\n"
            "  --device D             compute device (default cpu): cpu, cuda:N; in an MPI\n"
            "                         group also cuda:local (the rank's local rank) or a\n"
            "                         comma list with one entry per rank (cpu,cuda:0,...)\n"
            "  --cpu-level L          force a CPU kernel path: scalar|avx2|avx512\n"
            "  -c, --ctx N            context per sequence (default min(trained, 4096))\n"
            "  --kv-type f16|f32      KV cache type (default f16)\n"
            "  -b, --batch N          tokens per step (default 256)\n"
            "  --json                 one JSON object per generated token\n"
            "  --top-logprobs K       with --json: K most likely tokens per step (<= %d)\n"
            "  --no-bos               do not add BOS to the prompt\n"
            "  --ignore-eos           keep generating after end-of-generation tokens\n"
            "  --mmap                 compute from the file mapping instead of copying the\n"
            "                         weights into huge-page memory (less load time, shares the\n"
            "                         page cache; decode ~20%% slower)\n"
            "  --tp T --pp P          tensor/pipeline layout under mpirun (T*P = ranks)\n"
            "  --mem LIST             per-rank memory for the planner, e.g. 8G,8G,4G\n",
            SAMPLER_MAX_TOP);
}

int run_opts_parse(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    sampling_params_default(&o->sp);
    o->sp.temperature = 0.8f;
    o->sp.top_k = 40;
    o->sp.top_p = 0.95f;
    o->sp.min_p = 0.05f;
    o->sp.repeat_penalty = 1.0f;
    o->sp.penalty_last_n = 64;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    o->sp.seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
    o->n_predict = 128;
    o->device = "cpu";
    o->batch = 256;
    o->kv_type = DT_F16;
    o->tp = o->pp = 1;
    o->prompts = calloc((size_t)argc + 1, sizeof *o->prompts);
    if (!o->prompts) {
        fprintf(stderr, "caravan run: out of memory\n");
        return 2;
    }
    const char *cmd = "run";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t iv;
        double dv;
#define NEED_VALUE()                                                                               \
    if (!v) {                                                                                      \
        fprintf(stderr, "caravan run: %s needs a value\n", a);                                     \
        goto bad;                                                                                  \
    }
#define IS(s1, s2) (!strcmp(a, s1) || !strcmp(a, s2))
        if (IS("-h", "--help")) {
            run_usage(stdout);
            run_opts_free(o);
            return 0;
        } else if (IS("-m", "--model")) {
            NEED_VALUE();
            o->model = v;
            i++;
        } else if (IS("-p", "--prompt")) {
            NEED_VALUE();
            o->prompts[o->n_prompts++] = v;
            i++;
        } else if (IS("-n", "--n-predict")) {
            if (!cli_parse_int(cmd, a, v, 1, 1 << 24, &iv)) goto bad;
            o->n_predict = iv;
            i++;
        } else if (IS("--temp", "--temperature")) {
            if (!cli_parse_float(cmd, a, v, 0, 100, &dv)) goto bad;
            o->sp.temperature = (float)dv;
            i++;
        } else if (IS("--top-k", "--top-k")) {
            if (!cli_parse_int(cmd, a, v, 0, 1 << 30, &iv)) goto bad;
            o->sp.top_k = (int32_t)iv;
            i++;
        } else if (IS("--top-p", "--top-p")) {
            if (!cli_parse_float(cmd, a, v, 0, 1, &dv)) goto bad;
            o->sp.top_p = (float)dv;
            i++;
        } else if (IS("--min-p", "--min-p")) {
            if (!cli_parse_float(cmd, a, v, 0, 1, &dv)) goto bad;
            o->sp.min_p = (float)dv;
            i++;
        } else if (IS("--repeat-penalty", "--repeat-penalty")) {
            if (!cli_parse_float(cmd, a, v, 0.01, 100, &dv)) goto bad;
            o->sp.repeat_penalty = (float)dv;
            i++;
        } else if (IS("--repeat-last-n", "--repeat-last-n")) {
            if (!cli_parse_int(cmd, a, v, 0, 1 << 20, &iv)) goto bad;
            o->sp.penalty_last_n = (int32_t)iv;
            i++;
        } else if (IS("--frequency-penalty", "--frequency-penalty")) {
            if (!cli_parse_float(cmd, a, v, -2, 2, &dv)) goto bad;
            o->sp.frequency_penalty = (float)dv;
            i++;
        } else if (IS("--presence-penalty", "--presence-penalty")) {
            if (!cli_parse_float(cmd, a, v, -2, 2, &dv)) goto bad;
            o->sp.presence_penalty = (float)dv;
            i++;
        } else if (IS("--seed", "-s")) {
            if (!cli_parse_int(cmd, a, v, 0, INT64_MAX, &iv)) goto bad;
            o->sp.seed = (uint64_t)iv;
            i++;
        } else if (IS("-t", "--threads")) {
            if (!cli_parse_int(cmd, a, v, 1, 1024, &iv)) goto bad;
            o->threads = iv;
            i++;
        } else if (IS("--device", "--device")) {
            NEED_VALUE();
            o->device = v;
            i++;
        } else if (IS("--cpu-level", "--cpu-level")) {
            NEED_VALUE();
            o->cpu_level = v;
            i++;
        } else if (IS("-c", "--ctx")) {
            if (!cli_parse_int(cmd, a, v, 2, 1 << 24, &iv)) goto bad;
            o->n_ctx = iv;
            i++;
        } else if (IS("--slots", "--slots")) {
            if (!cli_parse_int(cmd, a, v, 1, 4096, &iv)) goto bad;
            o->n_slots = iv;
            i++;
        } else if (IS("-b", "--batch")) {
            if (!cli_parse_int(cmd, a, v, 1, 1 << 16, &iv)) goto bad;
            o->batch = iv;
            i++;
        } else if (IS("--kv-type", "--kv-type")) {
            NEED_VALUE();
            if (!strcmp(v, "f16") || !strcmp(v, "F16"))
                o->kv_type = DT_F16;
            else if (!strcmp(v, "f32") || !strcmp(v, "F32"))
                o->kv_type = DT_F32;
            else {
                fprintf(stderr, "caravan run: bad value '%s' for --kv-type (f16 or f32)\n", v);
                goto bad;
            }
            i++;
        } else if (IS("--json", "--json")) {
            o->json = true;
        } else if (IS("--top-logprobs", "--top-logprobs")) {
            if (!cli_parse_int(cmd, a, v, 0, SAMPLER_MAX_TOP, &iv)) goto bad;
            o->top_logprobs = (int)iv;
            i++;
        } else if (IS("--no-bos", "--no-bos")) {
            o->no_bos = true;
        } else if (IS("--ignore-eos", "--ignore-eos")) {
            o->ignore_eos = true;
        } else if (IS("--mmap", "--mmap")) {
            o->mmap = true;
        } else if (IS("--tp", "--tp")) {
            if (!cli_parse_int(cmd, a, v, 1, 4096, &iv)) goto bad;
            o->tp = (int)iv;
            i++;
        } else if (IS("--pp", "--pp")) {
            if (!cli_parse_int(cmd, a, v, 1, 4096, &iv)) goto bad;
            o->pp = (int)iv;
            i++;
        } else if (IS("--mem", "--mem")) {
            NEED_VALUE();
            o->mem = v;
            i++;
        } else {
            fprintf(stderr, "caravan run: unknown option '%s' (try caravan run --help)\n", a);
            goto bad;
        }
#undef IS
#undef NEED_VALUE
    }
    if (!o->model) {
        fprintf(stderr, "caravan run: -m MODEL is required (try caravan run --help)\n");
        goto bad;
    }
    if (o->n_prompts == 0)
        o->prompts[o->n_prompts++] = "";
    if (o->top_logprobs > 0 && !o->json) {
        fprintf(stderr, "caravan run: --top-logprobs needs --json\n");
        goto bad;
    }
    o->sp.n_top_logprobs = o->top_logprobs;
    if (o->n_slots <= 0)
        o->n_slots = o->n_prompts;
    if (o->n_slots < o->n_prompts && o->n_slots < 1)
        o->n_slots = 1;
    return -1;
bad:
    run_opts_free(o);
    return 2;
}

void run_opts_free(run_opts *o)
{
    free(o->prompts);
    o->prompts = NULL;
}

static bool under_mpi_launcher(void)
{
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_NTASKS",
                          "MV2_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return true;
    return false;
}

cv_status run_backend_open(const run_opts *o, run_backend *rb, int *rank, int *world, cv_err *e)
{
    memset(rb, 0, sizeof *rb);
    *rank = 0;
    *world = 1;
    if (o->tp * o->pp > 1 && !under_mpi_launcher())
        return cv_err_set(e, CV_EINVAL,
                          "--tp %d --pp %d needs %d ranks: start it with mpirun -np %d caravan run "
                          "...",
                          o->tp, o->pp, o->tp * o->pp, o->tp * o->pp);
#ifdef CARAVAN_HAVE_MPI
    if (under_mpi_launcher()) {
        int provided = 0;
        MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        rb->mpi_initialized = true;
        MPI_Comm_rank(MPI_COMM_WORLD, rank);
        MPI_Comm_size(MPI_COMM_WORLD, world);
        if (*world > 1)
            return run_group_open(o, rb, *rank, *world, e);
    }
#endif
    engine_config ec = {.model_path = o->model,
                        .be = {.device = o->device, .n_threads = (int)o->threads,
                               .cpu_level = o->cpu_level},
                        .params = {.n_slots = o->n_slots, .n_ctx = o->n_ctx,
                                   .kv_type = o->kv_type, .max_batch = o->batch,
                                   .weights_mmap = o->mmap}};
    cv_status st = engine_create(&ec, &rb->eng, e);
    if (st != CV_OK)
        return st;
    rb->gguf = engine_gguf(rb->eng);
    rb->link = link_inproc_engine(rb->eng);
    if (!rb->link)
        return cv_err_set(e, CV_ENOMEM, "out of memory");
    snprintf(rb->backend_name, sizeof rb->backend_name, "%s", o->device);
    return CV_OK;
}

int run_backend_serve(run_backend *rb, cv_err *e)
{
#ifdef CARAVAN_HAVE_MPI
    if (rb->grp)
        return run_group_serve(rb, e);
#endif
    return 0;
}

void run_backend_close(run_backend *rb)
{
    if (rb->link)
        rb->link->ops->destroy(rb->link);
    rb->link = NULL;
#ifdef CARAVAN_HAVE_MPI
    if (rb->grp)
        run_group_close(rb);
#endif
    if (rb->eng)
        engine_free(rb->eng);
    rb->eng = NULL;
#ifdef CARAVAN_HAVE_MPI
    if (rb->mpi_initialized) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin)
            MPI_Finalize();
    }
#endif
    rb->mpi_initialized = false;
}
