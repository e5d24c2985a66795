/* cmd_inspect.c - `caravan inspect MODEL`: what is inside a GGUF, without
 * touching the weights: format version and layout, architecture and
 * hyperparameters (as the engine will read them, via model_config_load),
 * a tokenizer summary, every KV (long arrays summarised) and the tensor
 * table with types, shapes and sizes. A missing or malformed file is one
 * line on stderr and exit status 1; bad usage exits 2. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/dtype.h"
#include "core/gguf.h"
#include "core/model_config.h"

static void inspect_usage(FILE *out)
{
    fprintf(out,
            "usage: caravan inspect [--no-kv] [--no-tensors] MODEL\n"
            "  MODEL           GGUF file (also accepted as -m/--model MODEL)\n"
            "  --no-kv         leave out the list of all metadata KVs\n"
            "  --no-tensors    leave out the tensor table\n");
}

/* "1.5 MiB" */
static const char *human_bytes(double b, char *buf, size_t n)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    snprintf(buf, n, u ? "%.2f %s" : "%.0f %s", b, units[u]);
    return buf;
}

static void print_str_kv(const gguf_file *f, const char *sep, const char *label, const char *key)
{
    size_t len;
    const char *s = gguf_get_str(f, key, &len);
    if (s)
        printf("%s%s %.*s", sep, label, (int)(len > 64 ? 64 : len), s);
    else
        printf("%s%s -", sep, label);
}

static void print_id_kv(const gguf_file *f, const char *label, const char *key)
{
    uint32_t v;
    if (!gguf_get_u32(f, key, &v))
        return;
    const char *tok = NULL;
    size_t len = 0;
    gguf_array a;
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", &a))
        tok = gguf_arr_str(f, &a, v, &len);
    if (tok)
        printf(", %s %" PRIu32 " '%.*s'", label, v, (int)(len > 32 ? 32 : len), tok);
    else
        printf(", %s %" PRIu32 " (not a token)", label, v);
}

static void print_tokenizer(const gguf_file *f)
{
    printf("tokenizer:");
    print_str_kv(f, " ", "model", "tokenizer.ggml.model");
    print_str_kv(f, ", ", "pre", "tokenizer.ggml.pre");
    gguf_array a;
    uint64_t n_tok = gguf_get_arr(f, "tokenizer.ggml.tokens", &a) ? a.n : 0;
    printf(", %" PRIu64 " tokens", n_tok);
    if (gguf_get_arr(f, "tokenizer.ggml.merges", &a))
        printf(", %" PRIu64 " merges", a.n);
    print_id_kv(f, "bos", "tokenizer.ggml.bos_token_id");
    print_id_kv(f, "eos", "tokenizer.ggml.eos_token_id");
    print_id_kv(f, "unk", "tokenizer.ggml.unknown_token_id");
    print_id_kv(f, "pad", "tokenizer.ggml.padding_token_id");
    bool b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b))
        printf(", add_bos %s", b ? "true" : "false");
    if (gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &b))
        printf(", add_eos %s", b ? "true" : "false");
    if (gguf_find_key(f, "tokenizer.chat_template") >= 0)
        printf(", chat template");
    printf("\n");
}

static void print_hparams(const gguf_file *f)
{
    size_t len, nlen;
    const char *arch = gguf_get_str(f, "general.architecture", &len);
    printf("architecture: %.*s", arch ? (int)len : 1, arch ? arch : "-");
    const char *name = gguf_get_str(f, "general.name", &nlen);
    if (name)
        printf("  name: %.*s", (int)(nlen > 128 ? 128 : nlen), name);
    printf("\n");
    model_config c;
    cv_err e = {0};
    if (model_config_load(f, &c, &e) != CV_OK) {
        /* vocab-only files and other architectures: show the raw "<arch>." scalars */
        printf("hyperparameters: not loadable by the engine: %s\n", e.msg);
        if (!arch)
            return;
        char buf[128];
        int shown = 0;
        for (int64_t i = 0; i < gguf_n_kv(f); i++) {
            const char *k = gguf_kv_key(f, i);
            gguf_vtype t = gguf_kv_type(f, i);
            if (t == GGUF_VT_ARRAY || strncmp(k, arch, len) || k[len] != '.')
                continue;
            gguf_kv_format(f, i, buf, sizeof buf);
            printf("%s%s %s", shown++ ? ", " : "  raw: ", k + len + 1, buf);
        }
        if (shown)
            printf("\n");
        return;
    }
    printf("hyperparameters: n_layer %d, n_embd %" PRId64 ", n_head %d, n_head_kv %d, head_dim %d, "
           "n_ff %" PRId64 ", n_vocab %" PRId64 ", n_ctx_train %" PRId64 "\n",
           c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_ff, c.n_vocab,
           c.n_ctx_train);
    printf("  rms_eps %g, rope: n_rot %d, freq_base %g, freq_scale %g, mode %s%s; "
           "output %s%s, file_type %d\n",
           (double)c.rms_eps, c.n_rot, (double)c.rope_freq_base, (double)c.rope_freq_scale,
           c.rope_mode == 0 ? "normal" : "neox", c.has_rope_freqs ? " + rope_freqs" : "",
           c.tied_output ? "tied to token_embd" : "separate", c.has_qkv_bias ? ", qkv bias" : "",
           c.file_type);
}

static void print_kvs(const gguf_file *f)
{
    printf("metadata (%" PRId64 " KVs):\n", gguf_n_kv(f));
    char buf[512];
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        gguf_kv_format(f, i, buf, sizeof buf);
        const char *ty = gguf_vtype_name(gguf_kv_type(f, i));
        gguf_array a;
        char tbuf[32];
        if (gguf_kv_type(f, i) == GGUF_VT_ARRAY && gguf_get_arr(f, gguf_kv_key(f, i), &a)) {
            snprintf(tbuf, sizeof tbuf, "%s[]", gguf_vtype_name(a.elem_type));
            ty = tbuf;
        }
        printf("  %-44s %-9s %s\n", gguf_kv_key(f, i), ty, buf);
    }
}

static void print_tensors(const gguf_file *f)
{
    printf("tensors (%" PRId64 "):\n", gguf_n_tensors(f));
    if (gguf_n_tensors(f))
        printf("  %5s  %-36s %-6s %-24s %14s %12s\n", "#", "name", "type", "shape", "bytes",
               "offset");
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        char shape[96];
        int n = snprintf(shape, sizeof shape, "[");
        for (int d = 0; d < t->n_dims && n < (int)sizeof shape; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRId64, d ? ", " : "",
                          t->ne[d]);
        if (n < (int)sizeof shape)
            snprintf(shape + n, sizeof shape - (size_t)n, "]");
        printf("  %5" PRId64 "  %-36s %-6s %-24s %14zu %12" PRIu64 "\n", i, t->name,
               dtype_name(t->type), shape, t->n_bytes, t->offset);
    }
}

int cmd_inspect(int argc, char **argv)
{
    const char *model = NULL;
    bool show_kv = true, show_tensors = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            inspect_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "caravan inspect: %s needs a value\n", a);
                return 2;
            }
            if (model) {
                fprintf(stderr, "caravan inspect: more than one MODEL given\n");
                return 2;
            }
            model = argv[++i];
        } else if (!strcmp(a, "--no-kv")) {
            show_kv = false;
        } else if (!strcmp(a, "--no-tensors")) {
            show_tensors = false;
        } else if (a[0] == '-' && a[1] != 0) {
            fprintf(stderr, "caravan inspect: unknown option '%s' (try --help)\n", a);
            return 2;
        } else if (model) {
            fprintf(stderr, "caravan inspect: more than one MODEL given ('%s')\n", a);
            return 2;
        } else {
            model = a;
        }
    }
    if (!model) {
        fprintf(stderr, "caravan inspect: MODEL is required (try --help)\n");
        return 2;
    }
    cv_err e = {0};
    gguf_file *f = NULL;
    if (gguf_open(model, &f, &e) != CV_OK) {
        fprintf(stderr, "caravan inspect: %s\n", e.msg); /* the message names the file */
        return 1;
    }
    char hb[32];
    printf("file: %s (%zu bytes)\n", model, gguf_file_size(f));
    printf("gguf: v%" PRIu32 ", %" PRId64 " KVs, %" PRId64 " tensors, alignment %zu", gguf_version(f),
           gguf_n_kv(f), gguf_n_tensors(f), gguf_alignment(f));
    if (gguf_n_tensors(f))
        printf(", data at offset %zu", gguf_data_offset(f));
    printf("\n");
    print_hparams(f);
    print_tokenizer(f);
    if (show_kv)
        print_kvs(f);
    if (show_tensors)
        print_tensors(f);
    int64_t n_el = 0;
    size_t n_bytes = 0;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        n_el += gguf_tensor(f, i)->n_elements;
        n_bytes += gguf_tensor(f, i)->n_bytes;
    }
    printf("total: %" PRId64 " tensors, %" PRId64 " parameters, %zu bytes of weights (%s)\n",
           gguf_n_tensors(f), n_el, n_bytes, human_bytes((double)n_bytes, hb, sizeof hb));
    gguf_close(f);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "caravan inspect: writing the output failed\n");
        return 1;
    }
    return 0;
}
