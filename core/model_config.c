/* model_config.c - hyperparameters from GGUF metadata (with the usual
 * defaults) and a check that every tensor the forward pass needs exists
 * with the expected shape and a supported type. Reads no tensor data. */
#include "model_config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/backend.h" /* ROPE_NORMAL / ROPE_NEOX */
#include "dtype.h"

#define SUPPORTED_ARCHS "llama, qwen2"

static void key_of(char *buf, size_t n, const model_config *cfg, const char *suffix)
{
    snprintf(buf, n, "%s.%s", cfg->arch_name, suffix);
}

/* Required integer key `<arch>.suffix` (> 0). */
static cv_status get_req_i64(const gguf_file *f, const model_config *cfg, const char *suffix,
                             int64_t lo, int64_t hi, int64_t *out, cv_err *e)
{
    char k[128];
    key_of(k, sizeof k, cfg, suffix);
    uint64_t v;
    if (!gguf_get_u64(f, k, &v)) {
        if (gguf_find_key(f, k) >= 0)
            return cv_err_set(e, CV_EFORMAT, "metadata key %s is not a non-negative integer", k);
        return cv_err_set(e, CV_EFORMAT, "metadata key %s is missing (required for %s)", k,
                          cfg->arch_name);
    }
    if ((int64_t)v < lo || (int64_t)v > hi || v > (uint64_t)INT64_MAX)
        return cv_err_set(e, CV_EFORMAT, "metadata %s = %llu is out of range [%lld, %lld]", k,
                          (unsigned long long)v, (long long)lo, (long long)hi);
    *out = (int64_t)v;
    return CV_OK;
}

/* Optional integer key: *out unchanged when absent; error when present but bad. */
static cv_status get_opt_i64(const gguf_file *f, const model_config *cfg, const char *suffix,
                             int64_t lo, int64_t hi, int64_t *out, bool *present, cv_err *e)
{
    char k[128];
    key_of(k, sizeof k, cfg, suffix);
    *present = false;
    if (gguf_find_key(f, k) < 0)
        return CV_OK;
    *present = true;
    return get_req_i64(f, cfg, suffix, lo, hi, out, e);
}

static cv_status get_opt_f32(const gguf_file *f, const model_config *cfg, const char *suffix,
                             float *out, bool *present, cv_err *e)
{
    char k[128];
    key_of(k, sizeof k, cfg, suffix);
    *present = false;
    if (gguf_find_key(f, k) < 0)
        return CV_OK;
    float v;
    if (!gguf_get_f32(f, k, &v))
        return cv_err_set(e, CV_EFORMAT, "metadata key %s is not a float", k);
    if (!isfinite(v))
        return cv_err_set(e, CV_EFORMAT, "metadata %s = %g is not finite", k, (double)v);
    *out = v;
    *present = true;
    return CV_OK;
}

/* Check a tensor's presence, shape [ne0, ne1] (ne1 = 1: a vector) and type. */
static cv_status check_tensor(const gguf_file *f, const char *name, int64_t ne0, int64_t ne1,
                              bool matrix, bool required, bool *found, cv_err *e)
{
    const gguf_tensor_info *t = gguf_tensor_find(f, name);
    if (found)
        *found = t != NULL;
    if (!t) {
        if (!required)
            return CV_OK;
        return cv_err_set(e, CV_EFORMAT, "tensor %s is missing (expected shape [%lld, %lld])",
                          name, (long long)ne0, (long long)ne1);
    }
    int64_t a0 = t->ne[0], a1 = t->n_dims >= 2 ? t->ne[1] : 1;
    bool extra = t->n_dims > 2 && (t->ne[2] != 1 || (t->n_dims > 3 && t->ne[3] != 1));
    if (a0 != ne0 || a1 != ne1 || extra)
        return cv_err_set(e, CV_EFORMAT, "tensor %s has shape [%lld, %lld%s], expected [%lld, "
                          "%lld]", name, (long long)a0, (long long)a1, extra ? ", ..." : "",
                          (long long)ne0, (long long)ne1);
    const dtype_traits *tr = dtype_get(t->type);
    if (!tr->known || !tr->supported)
        return cv_err_set(e, CV_EUNSUPPORTED, "tensor %s has type %s, which is not supported",
                          name, dtype_name(t->type));
    if (matrix && !dtype_row_size(t->type, ne0))
        return cv_err_set(e, CV_EFORMAT, "tensor %s: row length %lld is not a multiple of the %s "
                          "block size %lld", name, (long long)ne0, tr->name,
                          (long long)tr->block_size);
    return CV_OK;
}

static cv_status check_tensors(const gguf_file *f, model_config *cfg, cv_err *e)
{
    cv_status st;
    int64_t q_dim = (int64_t)cfg->n_head * cfg->head_dim;
    int64_t kv_dim = (int64_t)cfg->n_head_kv * cfg->head_dim;
    bool found;
    if ((st = check_tensor(f, "token_embd.weight", cfg->n_embd, cfg->n_vocab, true, true, NULL,
                           e)))
        return st;
    if ((st = check_tensor(f, "output_norm.weight", cfg->n_embd, 1, false, true, NULL, e)))
        return st;
    if ((st = check_tensor(f, "output.weight", cfg->n_embd, cfg->n_vocab, true, false, &found, e)))
        return st;
    cfg->tied_output = !found;
    if ((st = check_tensor(f, "rope_freqs.weight", cfg->n_rot / 2, 1, false, false, &found, e)))
        return st;
    cfg->has_rope_freqs = found;
    for (int l = 0; l < cfg->n_layer; l++) {
        struct {
            const char *suffix;
            int64_t ne0, ne1;
            bool matrix, required;
        } want[] = {
            {"attn_norm.weight", cfg->n_embd, 1, false, true},
            {"attn_q.weight", cfg->n_embd, q_dim, true, true},
            {"attn_k.weight", cfg->n_embd, kv_dim, true, true},
            {"attn_v.weight", cfg->n_embd, kv_dim, true, true},
            {"attn_output.weight", q_dim, cfg->n_embd, true, true},
            {"ffn_norm.weight", cfg->n_embd, 1, false, true},
            {"ffn_gate.weight", cfg->n_embd, cfg->n_ff, true, true},
            {"ffn_up.weight", cfg->n_embd, cfg->n_ff, true, true},
            {"ffn_down.weight", cfg->n_ff, cfg->n_embd, true, true},
            {"attn_q.bias", q_dim, 1, false, cfg->has_qkv_bias},
            {"attn_k.bias", kv_dim, 1, false, cfg->has_qkv_bias},
            {"attn_v.bias", kv_dim, 1, false, cfg->has_qkv_bias},
        };
        int n_want = (int)(sizeof want / sizeof want[0]);
        if (!cfg->has_qkv_bias)
            n_want -= 3;
        for (int i = 0; i < n_want; i++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s", l, want[i].suffix);
            if ((st = check_tensor(f, name, want[i].ne0, want[i].ne1, want[i].matrix,
                                   want[i].required, NULL, e)))
                return st;
        }
    }
    return CV_OK;
}

cv_status model_config_load(const gguf_file *f, model_config *cfg, cv_err *e)
{
    cv_status st;
    memset(cfg, 0, sizeof *cfg);
    size_t len = 0;
    const char *arch = gguf_get_str(f, "general.architecture", &len);
    if (!arch)
        return cv_err_set(e, CV_EFORMAT, "metadata key general.architecture is missing "
                          "(supported architectures: " SUPPORTED_ARCHS ")");
    if (len >= sizeof cfg->arch_name)
        len = sizeof cfg->arch_name - 1;
    memcpy(cfg->arch_name, arch, len);
    cfg->arch_name[len] = 0;
    if (!strcmp(cfg->arch_name, "llama")) {
        cfg->arch = ARCH_LLAMA;
        cfg->rope_mode = ROPE_NORMAL;
    } else if (!strcmp(cfg->arch_name, "qwen2")) {
        cfg->arch = ARCH_QWEN2;
        cfg->rope_mode = ROPE_NEOX;
        cfg->has_qkv_bias = true;
    } else {
        return cv_err_set(e, CV_EUNSUPPORTED, "unsupported architecture '%s' (supported "
                          "architectures: " SUPPORTED_ARCHS ")", cfg->arch_name);
    }
    const char *nm = gguf_get_str(f, "general.name", &len);
    if (nm) {
        if (len >= sizeof cfg->name)
            len = sizeof cfg->name - 1;
        memcpy(cfg->name, nm, len);
        cfg->name[len] = 0;
    }

    int64_t v;
    bool present;
    if ((st = get_req_i64(f, cfg, "block_count", 1, 100000, &v, e)))
        return st;
    cfg->n_layer = (int)v;
    if ((st = get_req_i64(f, cfg, "embedding_length", 1, (int64_t)1 << 24, &cfg->n_embd, e)))
        return st;
    if ((st = get_req_i64(f, cfg, "attention.head_count", 1, 65536, &v, e)))
        return st;
    cfg->n_head = (int)v;
    v = cfg->n_head;
    if ((st = get_opt_i64(f, cfg, "attention.head_count_kv", 1, 65536, &v, &present, e)))
        return st;
    cfg->n_head_kv = (int)v;
    if (cfg->n_head % cfg->n_head_kv)
        return cv_err_set(e, CV_EFORMAT, "%s.attention.head_count %d is not a multiple of "
                          "head_count_kv %d", cfg->arch_name, cfg->n_head, cfg->n_head_kv);
    v = cfg->n_embd / cfg->n_head;
    if ((st = get_opt_i64(f, cfg, "attention.key_length", 1, 65536, &v, &present, e)))
        return st;
    if (!present && cfg->n_embd % cfg->n_head)
        return cv_err_set(e, CV_EFORMAT, "%s.embedding_length %lld is not a multiple of "
                          "head_count %d and attention.key_length is absent", cfg->arch_name,
                          (long long)cfg->n_embd, cfg->n_head);
    cfg->head_dim = (int)v;
    int64_t vlen = cfg->head_dim;
    if ((st = get_opt_i64(f, cfg, "attention.value_length", 1, 65536, &vlen, &present, e)))
        return st;
    if (vlen != cfg->head_dim)
        return cv_err_set(e, CV_EUNSUPPORTED, "%s.attention.value_length %lld differs from "
                          "key_length %d (not supported)", cfg->arch_name, (long long)vlen,
                          cfg->head_dim);
    if ((st = get_req_i64(f, cfg, "feed_forward_length", 1, (int64_t)1 << 26, &cfg->n_ff, e)))
        return st;
    cfg->n_ctx_train = 2048;
    if ((st = get_opt_i64(f, cfg, "context_length", 1, (int64_t)1 << 31, &cfg->n_ctx_train,
                          &present, e)))
        return st;

    cfg->rms_eps = 1e-5f;
    if ((st = get_opt_f32(f, cfg, "attention.layer_norm_rms_epsilon", &cfg->rms_eps, &present,
                          e)))
        return st;
    if (cfg->rms_eps <= 0)
        return cv_err_set(e, CV_EFORMAT, "%s.attention.layer_norm_rms_epsilon %g is not > 0",
                          cfg->arch_name, (double)cfg->rms_eps);
    cfg->rope_freq_base = cfg->arch == ARCH_QWEN2 ? 1000000.0f : 10000.0f;
    if ((st = get_opt_f32(f, cfg, "rope.freq_base", &cfg->rope_freq_base, &present, e)))
        return st;
    if (cfg->rope_freq_base <= 0)
        return cv_err_set(e, CV_EFORMAT, "%s.rope.freq_base %g is not > 0", cfg->arch_name,
                          (double)cfg->rope_freq_base);
    v = cfg->head_dim;
    if ((st = get_opt_i64(f, cfg, "rope.dimension_count", 2, cfg->head_dim, &v, &present, e)))
        return st;
    if (v % 2)
        return cv_err_set(e, CV_EFORMAT, "%s.rope.dimension_count %lld is odd", cfg->arch_name,
                          (long long)v);
    cfg->n_rot = (int)v;

    /* rope scaling: rope.scaling.type + factor, or the older rope.scale_linear */
    cfg->rope_freq_scale = 1.0f;
    char k[128];
    key_of(k, sizeof k, cfg, "rope.scaling.type");
    const char *stype = gguf_get_str(f, k, &len);
    float factor = 1.0f;
    bool has_factor;
    if ((st = get_opt_f32(f, cfg, "rope.scaling.factor", &factor, &has_factor, e)))
        return st;
    if (stype && !(len == 4 && !memcmp(stype, "none", 4))) {
        if (len == 6 && !memcmp(stype, "linear", 6)) {
            if (has_factor && factor > 0)
                cfg->rope_freq_scale = 1.0f / factor;
        } else {
            return cv_err_set(e, CV_EUNSUPPORTED, "%s = '%.*s' is not supported (supported: none, "
                              "linear; llama3 scaling via rope_freqs)", k, (int)len, stype);
        }
    } else if (!stype) {
        float lin = 1.0f;
        if ((st = get_opt_f32(f, cfg, "rope.scale_linear", &lin, &present, e)))
            return st;
        if (present && lin > 0)
            cfg->rope_freq_scale = 1.0f / lin;
    }

    /* vocabulary: <arch>.vocab_size, else rows of token_embd, else the tokenizer */
    const gguf_tensor_info *te = gguf_tensor_find(f, "token_embd.weight");
    cfg->n_vocab = 0;
    if ((st = get_opt_i64(f, cfg, "vocab_size", 1, (int64_t)1 << 31, &cfg->n_vocab, &present, e)))
        return st;
    if (!present) {
        if (te && te->n_dims >= 2) {
            cfg->n_vocab = te->ne[1];
        } else {
            gguf_array a;
            if (gguf_get_arr(f, "tokenizer.ggml.tokens", &a))
                cfg->n_vocab = (int64_t)a.n;
        }
    }
    if (cfg->n_vocab <= 0)
        return cv_err_set(e, CV_EFORMAT, "cannot tell the vocabulary size: no %s.vocab_size, no "
                          "token_embd.weight, no tokenizer.ggml.tokens", cfg->arch_name);

    uint32_t ft;
    cfg->file_type = gguf_get_u32(f, "general.file_type", &ft) ? (int)ft : -1;

    if (gguf_n_tensors(f) == 0)
        return cv_err_set(e, CV_EFORMAT, "the file has no tensors (a vocab-only GGUF?)");
    if ((st = check_tensors(f, cfg, e)))
        return st;
    return CV_OK;
}
