/* test_engine_config.c - model_config_load on generated GGUFs: the
 * hyperparameters and defaults it reads, and the clear refusals (an
 * unsupported architecture, a missing tensor, a mis-shaped tensor, a head
 * count that does not divide) that name what is wrong. Plus engine_step's
 * refusals of bad steps. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/model_config.h"
#include "test_engine_model.h"
#include "testutil.h"
#include "worker/engine.h"

static cv_status load(const tm_spec *sp, model_config *c, cv_err *e)
{
    const char *path = "engine_config_test.gguf";
    if (tm_write(path, sp))
        return cv_err_set(e, CV_EIO, "could not write %s", path);
    gguf_file *f;
    cv_status st = gguf_open(path, &f, e);
    if (st)
        return st;
    st = model_config_load(f, c, e);
    gguf_close(f);
    remove(path);
    return st;
}

static void expect_error(const tm_spec *sp, cv_status code, const char *s1, const char *s2)
{
    model_config c;
    cv_err e = {0};
    cv_status st = load(sp, &c, &e);
    TU_CHECK(st == code, "expected %s, got %s (%s)", cv_status_name(code), cv_status_name(st),
             e.msg);
    TU_CHECK(strstr(e.msg, s1) != NULL, "message '%s' does not name '%s'", e.msg, s1);
    if (s2)
        TU_CHECK(strstr(e.msg, s2) != NULL, "message '%s' does not name '%s'", e.msg, s2);
    fprintf(stderr, "refused as expected: %s\n", e.msg);
}

int main(void)
{
    tm_spec base = {.arch = "llama", .n_layer = 2, .n_embd = 32, .n_head = 4, .n_head_kv = 2,
                    .n_ff = 48, .n_vocab = 50, .wtype = DT_F32, .seed = 9};
    model_config c;
    cv_err e = {0};
    TU_CHECK(load(&base, &c, &e) == CV_OK, "base model: %s", e.msg);
    TU_CHECK(c.arch == ARCH_LLAMA && c.n_layer == 2 && c.n_embd == 32 && c.n_head == 4 &&
                 c.n_head_kv == 2 && c.head_dim == 8 && c.n_ff == 48 && c.n_vocab == 50 &&
                 c.n_rot == 8 && c.rope_mode == 0 && !c.tied_output && !c.has_qkv_bias &&
                 !c.has_rope_freqs && c.rope_freq_base == 10000.0f && c.rope_freq_scale == 1.0f &&
                 c.rms_eps == 1e-6f && c.n_ctx_train == 256,
             "llama hyperparameters");

    tm_spec q = base;
    q.arch = "qwen2";
    q.tied = true;
    TU_CHECK(load(&q, &c, &e) == CV_OK, "qwen2: %s", e.msg);
    TU_CHECK(c.arch == ARCH_QWEN2 && c.has_qkv_bias && c.tied_output && c.rope_mode == 2 &&
                 c.rope_freq_base == 1000000.0f,
             "qwen2 defaults: bias %d tied %d mode %d base %g", c.has_qkv_bias, c.tied_output,
             c.rope_mode, c.rope_freq_base);

    tm_spec r = base;
    r.rope_freqs = true;
    r.rope_linear = 4.0f;
    r.freq_base = 500000.0f;
    TU_CHECK(load(&r, &c, &e) == CV_OK, "rope model: %s", e.msg);
    TU_CHECK(c.has_rope_freqs && c.rope_freq_scale == 0.25f && c.rope_freq_base == 500000.0f,
             "rope scaling: freqs %d scale %g base %g", c.has_rope_freqs, c.rope_freq_scale,
             c.rope_freq_base);

    tm_spec bad = base;
    bad.arch = "gpt2";
    expect_error(&bad, CV_EUNSUPPORTED, "gpt2", "llama, qwen2");
    bad = base;
    bad.omit = "blk.1.ffn_up.weight";
    expect_error(&bad, CV_EFORMAT, "blk.1.ffn_up.weight", "missing");
    bad = base;
    bad.bad_shape = "blk.0.attn_k.weight";
    expect_error(&bad, CV_EFORMAT, "blk.0.attn_k.weight", "[32, 17]");
    bad = base;
    bad.arch = "qwen2";
    bad.omit = "blk.0.attn_v.bias";
    expect_error(&bad, CV_EFORMAT, "blk.0.attn_v.bias", NULL);
    bad = base;
    bad.n_head_kv = 3;
    expect_error(&bad, CV_EFORMAT, "head_count_kv", NULL);

    /* engine_step refusals */
    const char *path = "engine_config_step.gguf";
    TU_CHECK(tm_write(path, &base) == 0, "write");
    engine_config ec = {0};
    ec.model_path = path;
    ec.be.n_threads = 1;
    ec.params.n_slots = 2;
    ec.params.n_ctx = 16;
    engine *eng;
    TU_CHECK(engine_create(&ec, &eng, &e) == CV_OK, "engine: %s", e.msg);
    int32_t toks[20] = {1, 2, 3};
    step_seq sq = {.seq_id = 5, .slot = 0, .pos = 0, .n_tokens = 3, .tokens = toks,
                   .want_sample = true};
    sampling_params_default(&sq.sp);
    step_seq_result res[2];
    step s = {.id = 1, .n_seqs = 1, .seqs = &sq};
    step_result rr = {.results = res};
    struct {
        const char *what;
        step_seq mod;
        const char *needle;
        cv_status code;
    } cases[] = {
        {"slot", {.seq_id = 5, .slot = 2, .pos = 0, .n_tokens = 3, .tokens = toks}, "slot 2",
         CV_EINVAL},
        {"context", {.seq_id = 5, .slot = 0, .pos = 0, .n_tokens = 17, .tokens = toks},
         "context", CV_ERANGE},
        {"gap", {.seq_id = 5, .slot = 0, .pos = 4, .n_tokens = 1, .tokens = toks}, "gap",
         CV_EINVAL},
        {"token", {.seq_id = 5, .slot = 0, .pos = 0, .n_tokens = 3, .tokens = toks + 3},
         "vocabulary", CV_EINVAL},
    };
    toks[3] = 1, toks[4] = 50, toks[5] = 2;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        step_seq m = cases[i].mod;
        sampling_params_default(&m.sp);
        s.seqs = &m;
        cv_status st = engine_step(eng, &s, &rr, &e);
        TU_CHECK(st == cases[i].code && strstr(e.msg, cases[i].needle),
                 "bad %s: got %s '%s'", cases[i].what, cv_status_name(st), e.msg);
        fprintf(stderr, "step refused as expected: %s\n", e.msg);
    }
    /* two sequences in one slot */
    step_seq two[2] = {sq, sq};
    two[1].seq_id = 6;
    s.seqs = two;
    s.n_seqs = 2;
    TU_CHECK(engine_step(eng, &s, &rr, &e) == CV_EINVAL && strstr(e.msg, "two sequences"),
             "duplicate slot: %s", e.msg);
    /* a good step still works after the refusals */
    s.seqs = &sq;
    s.n_seqs = 1;
    TU_CHECK(engine_step(eng, &s, &rr, &e) == CV_OK && rr.n_results == 1, "good step: %s", e.msg);
    engine_free(eng);
    remove(path);
    return tu_finish("test_engine_config");
}
