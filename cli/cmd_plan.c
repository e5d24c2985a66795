/* cmd_plan.c - `caravan plan`: print the pipeline x tensor-parallel layout of
 * a model over ranks (coordinator/planner.h) without loading weights: the
 * model is a GGUF's metadata and tensor infos (-m), a named shape (--shape),
 * or shape flags (--n-layer ...). Exit 0 with the table, or 1 with the
 * planner's reason when the layout cannot work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "coordinator/planner.h"
#include "core/dtype.h"
#include "core/gguf.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: caravan plan (-m MODEL.gguf | --shape NAME | --n-layer L --n-embd E --n-head H\n"
            "                     [--n-head-kv K] [--head-dim D] --n-ff F --n-vocab V [--tied])\n"
            "                    [--type Q4_K] --tp T --pp P [--mem 24G,24G,12G,...]\n"
            "                    [--ctx N] [--slots N] [--batch N] [--kv-type f16|f32]\n"
            "Prints the layout: per rank its stage, layers, heads, KV heads, FFN rows, vocab\n"
            "rows and bytes (weights, of which F32 column slices, KV cache, scratch). --mem\n"
            "gives each rank's memory in world-rank order (one value: every rank); without\n"
            "it layers split evenly. Column slices off their type's blocks (e.g. 128\n"
            "columns of Q4_K) are dequantized to F32 by the loader and counted so.\n"
            "--type applies to shapes (default Q4_K). Shapes: %s.\n",
            plan_shape_names());
}

static cv_status parse_mem(const char *s, int n, uint64_t *out, cv_err *e)
{
    char *dup = strdup(s), *save = NULL;
    int k = 0;
    if (!dup)
        return cv_err_set(e, CV_ENOMEM, "out of memory");
    for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (k >= n) {
            free(dup);
            return cv_err_set(e, CV_EINVAL, "--mem lists more than the %d ranks of --tp x --pp", n);
        }
        if (!cli_parse_size("plan", "--mem", tok, &out[k])) {
            free(dup);
            return cv_err_set(e, CV_EINVAL, "bad --mem value '%s'", tok);
        }
        k++;
    }
    free(dup);
    if (k == 1)
        for (int i = 1; i < n; i++)
            out[i] = out[0];
    else if (k != n)
        return cv_err_set(e, CV_EINVAL, "--mem lists %d values for %d ranks (--tp x --pp)", k, n);
    return CV_OK;
}

int cmd_plan(int argc, char **argv)
{
    const char *model = NULL, *shape_name = NULL, *type_name = "Q4_K", *mem_s = NULL;
    const char *kv_name = "f16";
    int64_t tp = 1, pp = 1, n_ctx = 0, n_slots = 1, batch = 512;
    int64_t n_layer = 0, n_embd = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0,
            n_vocab = 0;
    bool tied = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--tied")) {
            tied = true;
            continue;
        }
#define STR(flag, var)                                                                             \
    if (!strcmp(a, flag)) {                                                                        \
        if (!v) {                                                                                  \
            fprintf(stderr, "caravan plan: %s needs a value\n", flag);                             \
            return 2;                                                                              \
        }                                                                                          \
        var = v;                                                                                   \
        i++;                                                                                       \
        continue;                                                                                  \
    }
#define INT(flag, var, lo, hi)                                                                     \
    if (!strcmp(a, flag)) {                                                                        \
        if (!cli_parse_int("plan", flag, v, lo, hi, &var))                                         \
            return 2;                                                                              \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        STR("-m", model)
        STR("--model", model)
        STR("--shape", shape_name)
        STR("--type", type_name)
        STR("--mem", mem_s)
        STR("--kv-type", kv_name)
        INT("--tp", tp, 1, 256)
        INT("--pp", pp, 1, 4096)
        INT("--ctx", n_ctx, 1, (int64_t)1 << 24)
        INT("--slots", n_slots, 1, 1 << 16)
        INT("--batch", batch, 1, 1 << 20)
        INT("--n-layer", n_layer, 1, 4096)
        INT("--n-embd", n_embd, 1, 1 << 20)
        INT("--n-head", n_head, 1, 4096)
        INT("--n-head-kv", n_head_kv, 1, 4096)
        INT("--head-dim", head_dim, 1, 4096)
        INT("--n-ff", n_ff, 1, 1 << 22)
        INT("--n-vocab", n_vocab, 1, (int64_t)1 << 31)
#undef STR
#undef INT
        fprintf(stderr, "caravan plan: unknown option '%s' (try --help)\n", a);
        return 2;
    }
    int kv_type;
    if (!strcmp(kv_name, "f16") || !strcmp(kv_name, "F16"))
        kv_type = DT_F16;
    else if (!strcmp(kv_name, "f32") || !strcmp(kv_name, "F32"))
        kv_type = DT_F32;
    else {
        fprintf(stderr, "caravan plan: bad --kv-type '%s' (f16 or f32)\n", kv_name);
        return 2;
    }
    int sources = (model != NULL) + (shape_name != NULL) + (n_layer > 0);
    if (sources != 1) {
        fprintf(stderr, "caravan plan: give exactly one of -m MODEL, --shape NAME or --n-layer ... "
                        "(try --help)\n");
        return 2;
    }

    cv_err e = {0};
    plan_model pm;
    gguf_file *f = NULL;
    cv_status st;
    if (model) {
        if ((st = gguf_open(model, &f, &e))) {
            fprintf(stderr, "caravan plan: %s: %s\n", model, e.msg);
            return 1;
        }
        st = plan_model_from_gguf(f, &pm, &e);
    } else {
        model_config cfg;
        memset(&cfg, 0, sizeof cfg);
        if (shape_name) {
            if ((st = plan_shape_preset(shape_name, &cfg, &e))) {
                fprintf(stderr, "caravan plan: %s\n", e.msg);
                return 2;
            }
        } else {
            if (!n_embd || !n_head || !n_ff || !n_vocab) {
                fprintf(stderr, "caravan plan: a shape needs --n-layer, --n-embd, --n-head, --n-ff "
                                "and --n-vocab\n");
                return 2;
            }
            snprintf(cfg.arch_name, sizeof cfg.arch_name, "llama");
            snprintf(cfg.name, sizeof cfg.name, "custom shape");
            cfg.n_layer = (int)n_layer;
            cfg.n_embd = n_embd;
            cfg.n_head = (int)n_head;
            cfg.n_head_kv = (int)(n_head_kv ? n_head_kv : n_head);
            cfg.head_dim = (int)(head_dim ? head_dim : n_embd / n_head);
            cfg.n_ff = n_ff;
            cfg.n_vocab = n_vocab;
            cfg.n_ctx_train = 4096;
            cfg.tied_output = tied;
        }
        int type = dtype_from_name(type_name);
        if (type < 0) {
            fprintf(stderr, "caravan plan: unknown --type '%s'\n", type_name);
            return 2;
        }
        st = plan_model_from_shape(&cfg, type, &pm, &e);
    }
    if (st) {
        fprintf(stderr, "caravan plan: %s\n", e.msg);
        gguf_close(f);
        return 1;
    }
    if (n_ctx == 0)
        n_ctx = pm.cfg.n_ctx_train > 0 && pm.cfg.n_ctx_train < 4096 ? pm.cfg.n_ctx_train : 4096;
    int n = (int)(tp * pp);
    uint64_t *mem = NULL;
    if (mem_s) {
        mem = calloc((size_t)n, sizeof *mem);
        if (!mem || parse_mem(mem_s, n, mem, &e)) {
            fprintf(stderr, "caravan plan: %s\n", mem ? e.msg : "out of memory");
            free(mem);
            plan_model_free(&pm);
            gguf_close(f);
            return 2;
        }
    }
    plan_request rq = {.tp = (int)tp, .pp = (int)pp, .n_slots = n_slots, .n_ctx = n_ctx,
                       .kv_type = kv_type, .max_batch = batch, .mem = mem};
    plan p;
    int rc = 0;
    if ((st = planner_plan(&pm, &rq, &p, &e))) {
        fprintf(stderr, "caravan plan: %s\n", e.msg);
        rc = 1;
    } else {
        plan_print(&p, &pm, &rq, stdout);
        plan_free(&p);
    }
    free(mem);
    plan_model_free(&pm);
    gguf_close(f);
    return rc;
}
