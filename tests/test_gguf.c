/* test_gguf.c - the GGUF reader against the shared models: header facts,
 * hyperparameters, tokenizer arrays and tensor tables as documented in
 * shared/models/README.md (checked there with an independent Python reader),
 * getter type conversions, file-vs-memory parsing, and missing/non-GGUF files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/gguf.h"
#include "testutil.h"

static gguf_file *open_ok(const char *path)
{
    gguf_file *f = NULL;
    cv_err e = {0};
    cv_status s = gguf_open(path, &f, &e);
    TU_CHECK(s == CV_OK, "gguf_open(%s): %s %s", path, cv_status_name(s), e.msg);
    return s == CV_OK ? f : NULL;
}

static void check_u32(const gguf_file *f, const char *key, uint32_t want)
{
    uint32_t v = 0;
    bool ok = gguf_get_u32(f, key, &v);
    TU_CHECK(ok && v == want, "%s: got %s%u, want %u", key, ok ? "" : "(absent) ", v, want);
}

static void check_str(const gguf_file *f, const char *key, const char *want)
{
    size_t len = 0;
    const char *s = gguf_get_str(f, key, &len);
    TU_CHECK(s && len == strlen(want) && !memcmp(s, want, len), "%s: got '%.*s', want '%s'", key,
             s ? (int)len : 6, s ? s : "(null)", want);
}

static void check_arr_n(const gguf_file *f, const char *key, gguf_vtype et, uint64_t n)
{
    gguf_array a;
    bool ok = gguf_get_arr(f, key, &a);
    TU_CHECK(ok && a.elem_type == et && a.n == n, "%s: array %d type %d n %llu, want type %d n %llu",
             key, ok, ok ? (int)a.elem_type : -1, ok ? (unsigned long long)a.n : 0ULL, (int)et,
             (unsigned long long)n);
}

/* Tensor invariants any valid file has. */
static void check_tensors(const gguf_file *f)
{
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        int64_t nel = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++)
            nel *= t->ne[d];
        TU_CHECK(nel == t->n_elements, "%s: n_elements %lld vs product %lld", t->name,
                 (long long)t->n_elements, (long long)nel);
        TU_CHECK(t->n_bytes == dtype_row_size(t->type, t->ne[0]) * (size_t)(nel / t->ne[0]),
                 "%s: n_bytes", t->name);
        TU_CHECK((const uint8_t *)t->data == gguf_base(f) + gguf_data_offset(f) + t->offset,
                 "%s: data pointer", t->name);
        TU_CHECK(gguf_data_offset(f) + t->offset + t->n_bytes <= gguf_file_size(f), "%s: bounds",
                 t->name);
        TU_CHECK(t->offset % gguf_alignment(f) == 0, "%s: alignment", t->name);
        TU_CHECK(gguf_tensor_find(f, t->name) == t, "%s: find", t->name);
    }
    TU_CHECK(gguf_tensor_find(f, "no.such.tensor") == NULL, "find of a missing tensor");
    TU_CHECK(gguf_tensor(f, -1) == NULL && gguf_tensor(f, gguf_n_tensors(f)) == NULL,
             "tensor index bounds");
}

static int64_t total_params(const gguf_file *f)
{
    int64_t n = 0;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++)
        n += gguf_tensor(f, i)->n_elements;
    return n;
}

static void test_stories(void)
{
    gguf_file *f = open_ok(tu_model("stories260K.gguf"));
    if (!f)
        return;
    TU_CHECK(gguf_version(f) == 3, "version %u", gguf_version(f));
    TU_CHECK(gguf_n_kv(f) == 19, "n_kv %lld", (long long)gguf_n_kv(f));
    TU_CHECK(gguf_n_tensors(f) == 48, "n_tensors %lld", (long long)gguf_n_tensors(f));
    TU_CHECK(gguf_alignment(f) == 32, "alignment %zu", gguf_alignment(f));
    TU_CHECK(gguf_data_offset(f) == 14176, "data offset %zu", gguf_data_offset(f));
    TU_CHECK(total_params(f) == 292800, "params %lld", (long long)total_params(f));
    check_str(f, "general.architecture", "llama");
    check_u32(f, "llama.block_count", 5);
    check_u32(f, "llama.embedding_length", 64);
    check_u32(f, "llama.attention.head_count", 8);
    check_u32(f, "llama.attention.head_count_kv", 4);
    check_u32(f, "llama.feed_forward_length", 172);
    check_u32(f, "llama.rope.dimension_count", 8);
    check_u32(f, "tokenizer.ggml.bos_token_id", 1);
    check_u32(f, "tokenizer.ggml.eos_token_id", 2);
    check_u32(f, "tokenizer.ggml.unknown_token_id", 0);
    check_u32(f, "tokenizer.ggml.seperator_token_id", 0xFFFFFFFFu);
    check_str(f, "tokenizer.ggml.model", "llama");
    int32_t i32;
    TU_CHECK(!gguf_get_i32(f, "tokenizer.ggml.seperator_token_id", &i32),
             "0xFFFFFFFF must not convert to i32");
    uint64_t u64 = 0;
    TU_CHECK(gguf_get_u64(f, "llama.block_count", &u64) && u64 == 5, "u32 -> u64");
    float eps = 0;
    TU_CHECK(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &eps) && eps == 1e-5f,
             "rms eps %g", eps);
    TU_CHECK(!gguf_get_f32(f, "llama.block_count", &eps), "u32 must not read as f32");
    TU_CHECK(gguf_get_str(f, "llama.block_count", NULL) == NULL, "u32 must not read as string");
    TU_CHECK(gguf_find_key(f, "llama.rope.freq_base") < 0, "no freq_base key expected");
    check_arr_n(f, "tokenizer.ggml.tokens", GGUF_VT_STRING, 512);
    check_arr_n(f, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, 512);
    check_arr_n(f, "tokenizer.ggml.token_type", GGUF_VT_INT32, 512);
    gguf_array tt;
    if (gguf_get_arr(f, "tokenizer.ggml.token_type", &tt) && tt.n == 512) {
        int count[8] = {0};
        for (uint64_t j = 0; j < tt.n; j++) {
            int32_t v;
            memcpy(&v, (const uint8_t *)tt.data + 4 * j, 4);
            if (v >= 0 && v < 8)
                count[v]++;
        }
        TU_CHECK(count[1] == 253 && count[2] == 1 && count[3] == 2 && count[6] == 256,
                 "token types normal %d unknown %d control %d byte %d", count[1], count[2],
                 count[3], count[6]);
    }
    gguf_array tok;
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", &tok)) {
        size_t len;
        const char *s = gguf_arr_str(f, &tok, 3, &len);
        TU_CHECK(s && len == 6 && !memcmp(s, "<0x00>", 6), "token 3 is '%.*s'", (int)len, s);
        TU_CHECK(gguf_arr_str(f, &tok, 512, &len) == NULL, "string index bounds");
        gguf_array nest;
        TU_CHECK(!gguf_arr_nested(f, &tok, 0, &nest), "string array is not nested");
    }
    const gguf_tensor_info *t = gguf_tensor_find(f, "token_embd.weight");
    TU_CHECK(t && t->type == DT_F32 && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512,
             "token_embd shape");
    t = gguf_tensor_find(f, "blk.4.ffn_down.weight");
    TU_CHECK(t && t->ne[0] == 172 && t->ne[1] == 64, "blk.4.ffn_down shape");
    for (int64_t i = 0; i < gguf_n_tensors(f); i++)
        TU_CHECK(gguf_tensor(f, i)->type == DT_F32, "tensor %lld not F32", (long long)i);
    check_tensors(f);
    char buf[256];
    int64_t ki = gguf_find_key(f, "tokenizer.ggml.tokens");
    gguf_kv_format(f, ki, buf, sizeof buf);
    TU_CHECK(strstr(buf, "512 string") != NULL, "kv_format of tokens: %s", buf);
    gguf_kv_format(f, gguf_find_key(f, "general.architecture"), buf, sizeof buf);
    TU_CHECK(!strcmp(buf, "\"llama\""), "kv_format of arch: %s", buf);

    /* the same bytes through gguf_open_memory */
    size_t size = gguf_file_size(f);
    gguf_file *m = NULL;
    cv_err e = {0};
    TU_CHECK(gguf_open_memory(gguf_base(f), size, &m, &e) == CV_OK, "open_memory: %s", e.msg);
    if (m) {
        TU_CHECK(gguf_n_kv(m) == 19 && gguf_n_tensors(m) == 48 &&
                     gguf_data_offset(m) == gguf_data_offset(f),
                 "memory parse differs");
        gguf_close(m);
    }
    gguf_close(f);
}

/* Tokens and scores of llama-2-tiny-random equal the llama-spm vocab file. */
static void test_tiny_random(void)
{
    gguf_file *f = open_ok(tu_model("llama-2-tiny-random.gguf"));
    gguf_file *v = open_ok(tu_model("vocab/ggml-vocab-llama-spm.gguf"));
    if (!f || !v)
        goto out;
    TU_CHECK(gguf_version(f) == 3 && gguf_n_kv(f) == 18 && gguf_n_tensors(f) == 12,
             "header v%u kv %lld tensors %lld", gguf_version(f), (long long)gguf_n_kv(f),
             (long long)gguf_n_tensors(f));
    TU_CHECK(gguf_data_offset(f) == 724416, "data offset %zu", gguf_data_offset(f));
    TU_CHECK(total_params(f) == 513048, "params %lld", (long long)total_params(f));
    int n16 = 0, n32 = 0;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        n16 += gguf_tensor(f, i)->type == DT_F16;
        n32 += gguf_tensor(f, i)->type == DT_F32;
    }
    TU_CHECK(n16 == 9 && n32 == 3, "F16 %d F32 %d", n16, n32);
    check_u32(f, "general.file_type", 1);
    check_u32(f, "llama.block_count", 1);
    check_u32(f, "llama.embedding_length", 8);
    check_tensors(f);
    gguf_array ta, tb, sa, sb;
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", &ta) && gguf_get_arr(v, "tokenizer.ggml.tokens", &tb) &&
        gguf_get_arr(f, "tokenizer.ggml.scores", &sa) && gguf_get_arr(v, "tokenizer.ggml.scores", &sb)) {
        TU_CHECK(ta.n == 32000 && tb.n == 32000 && sa.n == 32000 && sb.n == 32000, "vocab sizes");
        int bad = 0;
        for (uint64_t j = 0; j < 32000 && ta.n == 32000 && tb.n == 32000; j++) {
            size_t la, lb;
            const char *a = gguf_arr_str(f, &ta, j, &la), *b = gguf_arr_str(v, &tb, j, &lb);
            bad += !a || !b || la != lb || memcmp(a, b, la);
        }
        TU_CHECK(bad == 0, "%d tokens differ", bad);
        TU_CHECK(sa.n == sb.n && !memcmp(sa.data, sb.data, sa.n * 4), "scores differ");
    } else {
        TU_CHECK(0, "tokenizer arrays missing");
    }
out:
    gguf_close(f);
    gguf_close(v);
}

static void test_vocab_only(void)
{
    static const struct {
        const char *file, *model, *pre;
        uint64_t n_vocab, n_merges;
        uint32_t bos, eos;
    } vf[] = {
        {"vocab/ggml-vocab-llama-spm.gguf", "llama", "default", 32000, 0, 1, 2},
        {"vocab/ggml-vocab-phi-3.gguf", "llama", "default", 32064, 0, 1, 32000},
        {"vocab/llama3.2-bpe-vocab.gguf", "gpt2", "llama-bpe", 128256, 280147, 128000, 128001},
        {"vocab/ggml-vocab-gpt-2.gguf", "gpt2", "gpt-2", 50257, 50000, 50256, 50256},
        {"vocab/ggml-vocab-deepseek-llm.gguf", "gpt2", "deepseek-llm", 102400, 99757, 100000, 100001},
        {"vocab/ggml-vocab-deepseek-coder.gguf", "gpt2", "deepseek-coder", 32256, 31757, 32013, 32014},
    };
    for (size_t k = 0; k < sizeof vf / sizeof vf[0]; k++) {
        gguf_file *f = open_ok(tu_model(vf[k].file));
        if (!f)
            continue;
        TU_CHECK(gguf_n_tensors(f) == 0, "%s: tensors", vf[k].file);
        check_str(f, "tokenizer.ggml.model", vf[k].model);
        check_str(f, "tokenizer.ggml.pre", vf[k].pre);
        check_arr_n(f, "tokenizer.ggml.tokens", GGUF_VT_STRING, vf[k].n_vocab);
        if (vf[k].n_merges)
            check_arr_n(f, "tokenizer.ggml.merges", GGUF_VT_STRING, vf[k].n_merges);
        check_u32(f, "tokenizer.ggml.bos_token_id", vf[k].bos);
        check_u32(f, "tokenizer.ggml.eos_token_id", vf[k].eos);
        /* every string of every string array is inside the file */
        for (int64_t i = 0; i < gguf_n_kv(f); i++) {
            gguf_array a;
            if (gguf_kv_type(f, i) != GGUF_VT_ARRAY || !gguf_get_arr(f, gguf_kv_key(f, i), &a) ||
                a.elem_type != GGUF_VT_STRING)
                continue;
            for (uint64_t j = 0; j < a.n; j++) {
                size_t len;
                const char *s = gguf_arr_str(f, &a, j, &len);
                if (!s || (const uint8_t *)s + len > gguf_base(f) + gguf_file_size(f)) {
                    TU_CHECK(0, "%s: %s[%llu] out of bounds", vf[k].file, gguf_kv_key(f, i),
                             (unsigned long long)j);
                    break;
                }
            }
        }
        if (strstr(vf[k].file, "llama3.2")) {
            gguf_array a;
            size_t len = 0;
            const char *s = NULL;
            if (gguf_get_arr(f, "tokenizer.ggml.tokens", &a))
                s = gguf_arr_str(f, &a, 128000, &len);
            TU_CHECK(s && len == 17 && !memcmp(s, "<|begin_of_text|>", 17), "token 128000 '%.*s'",
                     (int)len, s ? s : "");
        }
        gguf_close(f);
    }
}

static void test_bad_files(void)
{
    gguf_file *f = NULL;
    cv_err e = {0};
    cv_status s = gguf_open("/nonexistent/model.gguf", &f, &e);
    TU_CHECK(s == CV_EIO && f == NULL, "missing file: %s", cv_status_name(s));
    s = gguf_open(tu_model("README.md"), &f, &e);
    TU_CHECK(s == CV_EFORMAT && f == NULL && strstr(e.msg, "magic"), "non-GGUF file: %s %s",
             cv_status_name(s), e.msg);
    s = gguf_open_memory("GGUF", 4, &f, &e);
    TU_CHECK(s == CV_EFORMAT && strstr(e.msg, "version"), "4-byte file: %s", e.msg);
}

int main(void)
{
    test_stories();
    test_tiny_random();
    test_vocab_only();
    test_bad_files();
    return tu_finish("test_gguf");
}
