/* cmd_mkmodel.c - `caravan mkmodel`: write a random-weight GGUF of any
 * Llama/Qwen2 shape in any weight type that has a quantizer, with the
 * tokenizer copied from another GGUF. Tests and benchmarks use it in place of
 * real checkpoints (no downloads here).
 *
 * Weights are uniform random with scales chosen so activations stay O(1)
 * through the layers and the logits are neither flat nor one-hot; norm
 * weights are random around 1 so that an engine that skips a norm gives
 * different output. Row r of tensor t is generated from (seed, t, r) alone,
 * so the file is the same whatever the thread count. The output uses the
 * standard llama.cpp key and tensor names, 32-byte alignment and padding. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/dtype.h"
#include "core/gguf.h"
#include "kernels/cpu/threadpool.h"

typedef struct mk_tensor {
    char name[96];
    int type;
    int n_dims;
    int64_t ne[2];
    float scale;  /* uniform in [-scale, scale] (+ center) */
    float center; /* added to every value (norm weights: 1) */
} mk_tensor;

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

typedef struct gen_job {
    const mk_tensor *t;
    uint64_t seed;
    int tensor_idx;
    int64_t row0, n_rows;
    size_t row_bytes;
    uint8_t *out;      /* n_rows * row_bytes */
    float **scratch;   /* per thread: ne0 floats */
    const uint8_t *pool; /* quantized types: n_pool random blocks of this tensor */
    int64_t n_pool;
} gen_job;

static void fill_random(float *x, int64_t n, uint64_t st, float center, float scale)
{
    for (int64_t i = 0; i < n; i++) {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        float u = (float)((st >> 40) * (1.0 / 8388608.0) - 1.0); /* [-1, 1) */
        x[i] = center + scale * u;
    }
}

static uint64_t row_seed(uint64_t seed, int tensor_idx, int64_t row)
{
    return mix64(seed ^ mix64(((uint64_t)tensor_idx << 40) ^ (uint64_t)row));
}

/* Float types: every element drawn afresh. Quantized types: each block of a
 * row is a block drawn from a pool of properly quantized random blocks (at
 * this tensor's scale), chosen by a hash of (row, block): rows are distinct
 * random sequences of real blocks, and a multi-GB model is written at
 * memory speed instead of quantizer speed. */
static void gen_rows(void *ctx, int ith, int nth)
{
    gen_job *j = ctx;
    const mk_tensor *t = j->t;
    const dtype_traits *tr = dtype_get(t->type);
    for (int64_t r = ith; r < j->n_rows; r += nth) {
        uint64_t st = row_seed(j->seed, j->tensor_idx, j->row0 + r);
        uint8_t *dst = j->out + (size_t)r * j->row_bytes;
        if (!j->pool) {
            fill_random(j->scratch[ith], t->ne[0], st, t->center, t->scale);
            quantize_row(t->type, j->scratch[ith], dst, t->ne[0]);
            continue;
        }
        int64_t nb = t->ne[0] / tr->block_size;
        for (int64_t b = 0; b < nb; b++) {
            uint64_t h = mix64(st + (uint64_t)b);
            memcpy(dst + (size_t)b * tr->type_size, j->pool + (size_t)(h % (uint64_t)j->n_pool) * tr->type_size,
                   tr->type_size);
        }
    }
}

/* Pool of quantized random blocks for one tensor (rows of pool_row elements). */
static void gen_pool(void *ctx, int ith, int nth)
{
    gen_job *j = ctx;
    const mk_tensor *t = j->t;
    const dtype_traits *tr = dtype_get(t->type);
    int64_t per_row = t->ne[0] / tr->block_size;
    int64_t n_rows = (j->n_pool + per_row - 1) / per_row;
    for (int64_t r = ith; r < n_rows; r += nth) {
        int64_t nb = per_row;
        if ((r + 1) * per_row > j->n_pool)
            nb = j->n_pool - r * per_row;
        fill_random(j->scratch[ith], nb * tr->block_size, row_seed(j->seed, j->tensor_idx, -1 - r),
                    t->center, t->scale);
        quantize_row(t->type, j->scratch[ith], (uint8_t *)j->pool + (size_t)(r * per_row) * tr->type_size,
                     nb * tr->block_size);
    }
}

static int pick_type(int want, int64_t ne0, const char *name)
{
    const dtype_traits *tr = dtype_get(want);
    if (ne0 % tr->block_size == 0)
        return want;
    int fb = (ne0 % 32 == 0) ? DT_Q8_0 : DT_F16;
    if (want == DT_F32 || want == DT_F16 || want == DT_BF16)
        fb = want;
    fprintf(stderr, "caravan mkmodel: %s has rows of %lld, not a multiple of %s's %lld-element "
                    "blocks; writing it as %s\n",
            name, (long long)ne0, tr->name, (long long)tr->block_size, dtype_name(fb));
    return fb;
}

static int file_type_of(int type)
{
    switch (type) {
    case DT_F32: return 0;
    case DT_F16: return 1;
    case DT_Q4_0: return 2;
    case DT_Q4_1: return 3;
    case DT_Q8_0: return 7;
    case DT_Q5_0: return 8;
    case DT_Q5_1: return 9;
    case DT_Q2_K: return 10;
    case DT_Q3_K: return 11; /* Q3_K_S */
    case DT_Q4_K: return 14; /* Q4_K_S */
    case DT_Q5_K: return 16; /* Q5_K_S */
    case DT_Q6_K: return 18;
    case DT_BF16: return 32;
    }
    return -1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: caravan mkmodel -o OUT.gguf --vocab-from VOCAB.gguf [--arch llama|qwen2]\n"
            "         --n-layer L --n-embd E --n-head H [--n-head-kv K] --n-ff F [--n-ctx C]\n"
            "         [--type Q4_K|Q4_K_M|...] [--tied] [--seed S] [--rope-base B] [--rms-eps X]\n"
            "         [--name NAME] [-t THREADS] [--pool-blocks N]\n"
            "Writes a random-weight model of that shape; matrices in --type (default F16;\n"
            "rows that a block size does not divide fall back to Q8_0/F16), norms in F32;\n"
            "Q4_K_M / Q5_K_M: that base type with Q6_K for the output head and for attn_v\n"
            "and ffn_down of the first and last eighth of the layers and every third between.\n"
            "--pool-blocks N: draw quantized blocks from a pool of N per tensor (fast for\n"
            "multi-GB models); 0 quantizes every element, so the same --seed in F32 and in\n"
            "a quantized type gives the same underlying weights. Default: 0 up to 256M\n"
            "parameters, 512 above.\n");
}

int cmd_mkmodel(int argc, char **argv)
{
    const char *out_path = NULL, *vocab_path = NULL, *arch = "llama", *type_name = "F16";
    const char *name = NULL;
    int64_t n_layer = -1, n_embd = -1, n_head = -1, n_head_kv = -1, n_ff = -1, n_ctx = 4096;
    int64_t seed = 1234, threads = 0, pool_blocks = -1;
    double rope_base = -1, rms_eps = 1e-5;
    int tied = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define INTARG(flag, var, lo, hi)                                                                  \
    if (!strcmp(a, flag)) {                                                                        \
        if (!cli_parse_int("mkmodel", flag, v, lo, hi, &var))                                      \
            return 2;                                                                              \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "-o") || !strcmp(a, "--vocab-from") || !strcmp(a, "--arch") ||
            !strcmp(a, "--type") || !strcmp(a, "--name")) {
            if (!v) {
                fprintf(stderr, "caravan mkmodel: %s needs a value\n", a);
                return 2;
            }
            if (!strcmp(a, "-o")) out_path = v;
            else if (!strcmp(a, "--vocab-from")) vocab_path = v;
            else if (!strcmp(a, "--arch")) arch = v;
            else if (!strcmp(a, "--type")) type_name = v;
            else name = v;
            i++;
            continue;
        }
        INTARG("--n-layer", n_layer, 1, 1024)
        INTARG("--n-embd", n_embd, 1, 1 << 20)
        INTARG("--n-head", n_head, 1, 4096)
        INTARG("--n-head-kv", n_head_kv, 1, 4096)
        INTARG("--n-ff", n_ff, 1, 1 << 22)
        INTARG("--n-ctx", n_ctx, 2, 1 << 24)
        INTARG("--seed", seed, 0, INT64_MAX)
        INTARG("-t", threads, 0, 1024)
        INTARG("--pool-blocks", pool_blocks, 0, 1 << 24)
#undef INTARG
        if (!strcmp(a, "--tied")) {
            tied = 1;
            continue;
        }
        if (!strcmp(a, "--rope-base")) {
            if (!cli_parse_float("mkmodel", a, v, 1, 1e12, &rope_base))
                return 2;
            i++;
            continue;
        }
        if (!strcmp(a, "--rms-eps")) {
            if (!cli_parse_float("mkmodel", a, v, 1e-12, 1, &rms_eps))
                return 2;
            i++;
            continue;
        }
        fprintf(stderr, "caravan mkmodel: unknown option '%s' (try --help)\n", a);
        return 2;
    }
    if (!out_path || !vocab_path || n_layer < 0 || n_embd < 0 || n_head < 0 || n_ff < 0) {
        fprintf(stderr, "caravan mkmodel: -o, --vocab-from, --n-layer, --n-embd, --n-head and "
                        "--n-ff are required (try --help)\n");
        return 2;
    }
    if (strcmp(arch, "llama") && strcmp(arch, "qwen2")) {
        fprintf(stderr, "caravan mkmodel: unsupported --arch '%s' (supported: llama, qwen2)\n",
                arch);
        return 2;
    }
    if (n_head_kv < 0)
        n_head_kv = n_head;
    if (n_embd % n_head != 0 || n_head % n_head_kv != 0) {
        fprintf(stderr, "caravan mkmodel: n_embd (%lld) must be a multiple of n_head (%lld) and "
                        "n_head a multiple of n_head_kv (%lld)\n",
                (long long)n_embd, (long long)n_head, (long long)n_head_kv);
        return 2;
    }
    int64_t head_dim = n_embd / n_head;
    if (head_dim % 2 != 0) {
        fprintf(stderr, "caravan mkmodel: head_dim %lld must be even for RoPE\n",
                (long long)head_dim);
        return 2;
    }
    /* Q4_K_M / Q5_K_M: the mixes of that name in llama.cpp-made files - the
     * base type, Q6_K for the output head and for attn_v and ffn_down of the
     * first and last eighth of the layers and every third layer between */
    int mix = 0;
    char base_name[16];
    size_t tl = strlen(type_name);
    if (tl == 6 && (!strcmp(type_name, "Q4_K_M") || !strcmp(type_name, "Q5_K_M"))) {
        snprintf(base_name, sizeof base_name, "%.4s", type_name);
        type_name = base_name;
        mix = 1;
    }
    int type = dtype_from_name(type_name);
    if (type < 0 || !dtype_get(type)->can_quantize) {
        fprintf(stderr, "caravan mkmodel: type '%s' has no quantizer (supported:", type_name);
        for (int t = 0; t < DT_COUNT; t++)
            if (dtype_get(t)->can_quantize)
                fprintf(stderr, " %s", dtype_name(t));
        fprintf(stderr, ")\n");
        return 2;
    }
    int is_qwen = !strcmp(arch, "qwen2");
    if (rope_base < 0)
        rope_base = is_qwen ? 1000000.0 : 10000.0;

    cv_err err = {0};
    gguf_file *vf = NULL;
    if (gguf_open(vocab_path, &vf, &err) != CV_OK) {
        fprintf(stderr, "caravan mkmodel: %s: %s\n", vocab_path, err.msg);
        return 1;
    }
    gguf_array toks;
    if (!gguf_get_arr(vf, "tokenizer.ggml.tokens", &toks) || toks.elem_type != GGUF_VT_STRING ||
        toks.n == 0) {
        fprintf(stderr, "caravan mkmodel: %s has no tokenizer.ggml.tokens string array\n",
                vocab_path);
        gguf_close(vf);
        return 1;
    }
    int64_t n_vocab = (int64_t)toks.n;

    /* Tensor list, in llama.cpp's order. */
    int64_t n_tensors_max = 3 + n_layer * 12;
    mk_tensor *ts = calloc((size_t)n_tensors_max, sizeof *ts);
    int nt = 0;
    float s_in = sqrtf(3.0f / (float)n_embd);
    float s_res = s_in / sqrtf(2.0f * (float)n_layer) * 2.0f;
#define ADD(nm, ty, nd, e0, e1, sc, ce)                                                            \
    do {                                                                                           \
        mk_tensor *t_ = &ts[nt++];                                                                 \
        snprintf(t_->name, sizeof t_->name, "%s", nm);                                             \
        t_->n_dims = nd;                                                                           \
        t_->ne[0] = e0;                                                                            \
        t_->ne[1] = e1;                                                                            \
        t_->type = (nd) == 1 ? DT_F32 : pick_type(ty, e0, nm);                                     \
        t_->scale = sc;                                                                            \
        t_->center = ce;                                                                           \
    } while (0)
    ADD("token_embd.weight", type, 2, n_embd, n_vocab, 1.0f, 0.0f);
    ADD("output_norm.weight", DT_F32, 1, n_embd, 1, 0.5f, 1.0f);
    if (!tied)
        ADD("output.weight", mix ? DT_Q6_K : type, 2, n_embd, n_vocab, 3.0f * s_in, 0.0f);
    for (int64_t l = 0; l < n_layer; l++) {
        char nm[96];
        int more = mix && (l < n_layer / 8 || l >= 7 * n_layer / 8 || (l - n_layer / 8) % 3 == 2);
        int vd_type = more ? DT_Q6_K : type; /* attn_v, ffn_down */
#define LNAME(suffix) (snprintf(nm, sizeof nm, "blk.%lld.%s", (long long)l, suffix), nm)
        ADD(LNAME("attn_norm.weight"), DT_F32, 1, n_embd, 1, 0.5f, 1.0f);
        ADD(LNAME("attn_q.weight"), type, 2, n_embd, n_head * head_dim, s_in, 0.0f);
        ADD(LNAME("attn_k.weight"), type, 2, n_embd, n_head_kv * head_dim, s_in, 0.0f);
        ADD(LNAME("attn_v.weight"), vd_type, 2, n_embd, n_head_kv * head_dim, s_in, 0.0f);
        if (is_qwen) {
            ADD(LNAME("attn_q.bias"), DT_F32, 1, n_head * head_dim, 1, 0.1f, 0.0f);
            ADD(LNAME("attn_k.bias"), DT_F32, 1, n_head_kv * head_dim, 1, 0.1f, 0.0f);
            ADD(LNAME("attn_v.bias"), DT_F32, 1, n_head_kv * head_dim, 1, 0.1f, 0.0f);
        }
        ADD(LNAME("attn_output.weight"), type, 2, n_head * head_dim, n_embd,
            s_res * sqrtf((float)n_embd / (float)(n_head * head_dim)), 0.0f);
        ADD(LNAME("ffn_norm.weight"), DT_F32, 1, n_embd, 1, 0.5f, 1.0f);
        ADD(LNAME("ffn_gate.weight"), type, 2, n_embd, n_ff, s_in, 0.0f);
        ADD(LNAME("ffn_up.weight"), type, 2, n_embd, n_ff, s_in, 0.0f);
        ADD(LNAME("ffn_down.weight"), vd_type, 2, n_ff, n_embd,
            s_res * sqrtf((float)n_embd / (float)n_ff) * 2.0f, 0.0f);
#undef LNAME
    }
#undef ADD

    if (pool_blocks < 0) {
        int64_t n_params = 0;
        for (int i = 0; i < nt; i++)
            n_params += ts[i].ne[0] * (ts[i].n_dims == 1 ? 1 : ts[i].ne[1]);
        pool_blocks = n_params <= (256ll << 20) ? 0 : 512;
    }

    gguf_writer *w = NULL;
    if (gguf_writer_open(out_path, &w, &err) != CV_OK) {
        fprintf(stderr, "caravan mkmodel: %s\n", err.msg);
        free(ts);
        gguf_close(vf);
        return 1;
    }
    char key[128];
#define K(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    gguf_writer_set_str(w, "general.architecture", arch, strlen(arch));
    char gname[128];
    if (name)
        snprintf(gname, sizeof gname, "%s", name);
    else
        snprintf(gname, sizeof gname, "caravan-random-%s-%lldL-%lld-%s", arch, (long long)n_layer,
                 (long long)n_embd, mix ? (type == DT_Q4_K ? "Q4_K_M" : "Q5_K_M") : dtype_name(type));
    gguf_writer_set_str(w, "general.name", gname, strlen(gname));
    gguf_writer_set_u32(w, "general.file_type",
                        (uint32_t)(mix ? (type == DT_Q4_K ? 15 : 17) : file_type_of(type)));
    gguf_writer_set_u32(w, "general.quantization_version", 2);
    gguf_writer_set_u32(w, "general.alignment", GGUF_DEFAULT_ALIGNMENT);
    gguf_writer_set_u32(w, K("context_length"), (uint32_t)n_ctx);
    gguf_writer_set_u32(w, K("embedding_length"), (uint32_t)n_embd);
    gguf_writer_set_u32(w, K("block_count"), (uint32_t)n_layer);
    gguf_writer_set_u32(w, K("feed_forward_length"), (uint32_t)n_ff);
    gguf_writer_set_u32(w, K("attention.head_count"), (uint32_t)n_head);
    gguf_writer_set_u32(w, K("attention.head_count_kv"), (uint32_t)n_head_kv);
    gguf_writer_set_f32(w, K("attention.layer_norm_rms_epsilon"), (float)rms_eps);
    gguf_writer_set_f32(w, K("rope.freq_base"), (float)rope_base);
    gguf_writer_set_u32(w, K("rope.dimension_count"), (uint32_t)head_dim);
    gguf_writer_set_u32(w, K("vocab_size"), (uint32_t)n_vocab);
#undef K
    for (int64_t i = 0; i < gguf_n_kv(vf); i++)
        if (!strncmp(gguf_kv_key(vf, i), "tokenizer.", 10))
            gguf_writer_copy_kv(w, vf, i);
    for (int i = 0; i < nt; i++)
        gguf_writer_add_tensor(w, ts[i].name, ts[i].type, ts[i].n_dims, ts[i].ne);
    if (gguf_writer_begin(w, &err) != CV_OK) {
        fprintf(stderr, "caravan mkmodel: %s\n", err.msg);
        gguf_writer_close(w, NULL);
        free(ts);
        gguf_close(vf);
        return 1;
    }

    if (threads <= 0)
        threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    threadpool *tp = threadpool_create((int)threads);
    int64_t max_ne0 = 0;
    size_t total = 0;
    for (int i = 0; i < nt; i++) {
        if (ts[i].ne[0] > max_ne0)
            max_ne0 = ts[i].ne[0];
    }
    float **scratch = calloc((size_t)threads, sizeof *scratch);
    for (int64_t i = 0; i < threads; i++)
        scratch[i] = malloc((size_t)max_ne0 * sizeof(float));
    const size_t chunk_target = 64u << 20;
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    int rc = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < nt && rc == 0; i++) {
        const mk_tensor *t = &ts[i];
        size_t row_bytes = dtype_row_size(t->type, t->ne[0]);
        int64_t rows = t->n_dims == 1 ? 1 : t->ne[1];
        int64_t per_chunk = (int64_t)(chunk_target / row_bytes);
        if (per_chunk < 1)
            per_chunk = 1;
        if (per_chunk > rows)
            per_chunk = rows;
        size_t need = (size_t)per_chunk * row_bytes;
        if (need > buf_cap) {
            free(buf);
            buf = malloc(need);
            buf_cap = need;
        }
        if (!buf || !tp || !scratch) {
            fprintf(stderr, "caravan mkmodel: out of memory\n");
            rc = 1;
            break;
        }
        /* The whole tensor goes out in one write call sequence; the writer pads after it. */
        size_t tensor_bytes = (size_t)rows * row_bytes;
        uint8_t *whole = NULL;
        if (tensor_bytes <= buf_cap)
            whole = buf;
        else
            whole = malloc(tensor_bytes);
        if (!whole) {
            fprintf(stderr, "caravan mkmodel: out of memory for %s (%zu bytes)\n", t->name,
                    tensor_bytes);
            rc = 1;
            break;
        }
        const dtype_traits *tr = dtype_get(t->type);
        uint8_t *pool = NULL;
        int64_t n_pool = 0;
        int64_t n_blocks = rows * (t->ne[0] / tr->block_size);
        if (tr->block_size > 1 && pool_blocks > 0 && n_blocks > 4 * pool_blocks) {
            n_pool = pool_blocks;
            pool = malloc((size_t)n_pool * tr->type_size);
            if (!pool) {
                fprintf(stderr, "caravan mkmodel: out of memory\n");
                rc = 1;
                if (whole != buf)
                    free(whole);
                break;
            }
            gen_job pj = {.t = t, .seed = (uint64_t)seed, .tensor_idx = i, .scratch = scratch,
                          .pool = pool, .n_pool = n_pool};
            threadpool_run(tp, gen_pool, &pj);
        }
        for (int64_t r0 = 0; r0 < rows; r0 += per_chunk) {
            gen_job j = {.t = t, .seed = (uint64_t)seed, .tensor_idx = i, .row0 = r0,
                         .n_rows = (r0 + per_chunk <= rows) ? per_chunk : rows - r0,
                         .row_bytes = row_bytes, .out = whole + (size_t)r0 * row_bytes,
                         .scratch = scratch, .pool = pool, .n_pool = n_pool};
            threadpool_run(tp, gen_rows, &j);
        }
        free(pool);
        if (gguf_writer_write_tensor(w, whole, tensor_bytes, &err) != CV_OK) {
            fprintf(stderr, "caravan mkmodel: writing %s: %s\n", t->name, err.msg);
            rc = 1;
        }
        if (whole != buf)
            free(whole);
        total += tensor_bytes;
    }
    if (gguf_writer_close(w, &err) != CV_OK && rc == 0) {
        fprintf(stderr, "caravan mkmodel: %s\n", err.msg);
        rc = 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (rc == 0)
        fprintf(stderr,
                "caravan mkmodel: wrote %s: %s, %lld layers, n_embd %lld, %lld/%lld heads, n_ff "
                "%lld, vocab %lld, %s, %d tensors, %.1f MiB of weights in %.1f s\n",
                out_path, arch, (long long)n_layer, (long long)n_embd, (long long)n_head,
                (long long)n_head_kv, (long long)n_ff, (long long)n_vocab,
                mix ? (type == DT_Q4_K ? "Q4_K_M" : "Q5_K_M") : dtype_name(type), nt,
                (double)total / (1024.0 * 1024.0), secs);
    else
        unlink(out_path);
    for (int64_t i = 0; i < threads; i++)
        free(scratch[i]);
    free(scratch);
    free(buf);
    threadpool_free(tp);
    free(ts);
    gguf_close(vf);
    return rc;
}
