/* test_weights_copy.c - the two ways a host backend holds a model's weights
 * (worker/model.c): an anonymous copy with transparent huge pages (default,
 * model_params.weights_mmap 0) and the file mapping itself (weights_mmap 1,
 * or CARAVAN_MMAP=1). Checked: with the copy, no weight the forward pass
 * reads points into the file mapping, with the mapping they all do (the
 * aliased ones: everything but the embedding table, which is looked up in the
 * mapping either way); both hold the same bytes (mapped_resident_bytes); and
 * the logits of a prefill + decode are bit-identical between the two. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dtype.h"
#include "test_engine_model.h"
#include "testutil.h"
#include "worker/comm.h"
#include "worker/forward.h"
#include "worker/model.h"

#define N_TOK 9

static int in_map(const model *m, const void *p)
{
    uintptr_t a = (uintptr_t)gguf_base(m->gguf), b = a + gguf_file_size(m->gguf);
    return (uintptr_t)p >= a && (uintptr_t)p < b;
}

/* load with weights_mmap = keep_map, check where the weights live, run a
 * prefill of N_TOK - 1 tokens and one decode step; logits of both into out */
static void run(const char *path, int keep_map, int64_t V, float *out, size_t *held)
{
    gguf_file *f;
    cv_err e = {0};
    backend *be;
    model *m;
    if (gguf_open(path, &f, &e) || backend_cpu_create(1, NULL, &be, &e)) {
        TU_CHECK(0, "open: %s", e.msg);
        return;
    }
    model_params p = {.n_slots = 1, .n_ctx = 32, .kv_type = DT_F32, .max_batch = 16,
                      .weights_mmap = keep_map};
    if (model_load(f, NULL, &p, be, &m, &e)) {
        TU_CHECK(0, "model_load: %s", e.msg);
        return;
    }
    int n_in = 0, n_out = 0;
    const be_weight *top[3] = {&m->output, &m->output_norm, &m->rope_freqs};
    for (int i = 0; i < 3 + 12 * m->shard.n_layers; i++) {
        const be_weight *w;
        if (i < 3) {
            w = top[i];
        } else {
            const model_layer *L = &m->layers[(i - 3) / 12];
            const be_weight *lw[12] = {&L->attn_norm, &L->wq, &L->wk,       &L->wv,
                                       &L->bq,        &L->bk, &L->bv,       &L->wo,
                                       &L->ffn_norm,  &L->w_gate, &L->w_up, &L->w_down};
            w = lw[(i - 3) % 12];
        }
        if (w->data)
            in_map(m, w->data) ? n_in++ : n_out++;
    }
    if (keep_map)
        TU_CHECK(n_out == 0 && n_in > 0, "mmap: %d weights outside the mapping, %d in it", n_out, n_in);
    else
        TU_CHECK(n_in == 0 && n_out > 0, "copy: %d weights still in the mapping, %d out of it", n_in, n_out);
    TU_CHECK(in_map(m, m->tok_embd.data), "the embedding table is looked up in the mapping");
    *held = m->mapped_resident_bytes;

    comm *single = comm_single_create();
    int32_t tok[N_TOK], pos[N_TOK], slot[N_TOK] = {0}, idx = N_TOK - 2;
    uint64_t rng = 5;
    for (int i = 0; i < N_TOK; i++)
        tok[i] = (int32_t)(tu_rand_u64(&rng) % (uint64_t)V), pos[i] = i;
    fwd_batch b = {.n_tok = N_TOK - 1, .tokens = tok, .pos = pos, .slot = slot, .n_out = 1,
                   .out_idx = &idx};
    TU_CHECK(forward_stage(m, single, &b, NULL, NULL, out, &e) == CV_OK, "prefill: %s", e.msg);
    int32_t zero = 0;
    fwd_batch d = {.n_tok = 1, .tokens = tok + N_TOK - 1, .pos = pos + N_TOK - 1, .slot = slot,
                   .n_out = 1, .out_idx = &zero};
    TU_CHECK(forward_stage(m, single, &d, NULL, NULL, out + V, &e) == CV_OK, "decode: %s", e.msg);
    comm_destroy(single);
    model_free(m);
    backend_destroy(be);
}

int main(void)
{
    unsetenv("CARAVAN_MMAP"); /* the parameter decides here */
    static const int types[] = {DT_Q4_0, DT_Q4_K, DT_F16};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        char path[64];
        snprintf(path, sizeof path, "weights_copy_%s.gguf", dtype_name(types[t]));
        tm_spec sp = {.arch = "llama", .n_layer = 3, .n_embd = 256, .n_head = 4, .n_head_kv = 2,
                      .n_ff = 768, .n_vocab = 1000, .wtype = types[t], .seed = 21 + t};
        if (tm_write(path, &sp)) {
            TU_CHECK(0, "writing %s", path);
            continue;
        }
        int64_t V = sp.n_vocab;
        float *a = calloc((size_t)(2 * V), sizeof(float)), *b = calloc((size_t)(2 * V), sizeof(float));
        size_t held_copy = 0, held_map = 0;
        run(path, 0, V, a, &held_copy);
        run(path, 1, V, b, &held_map);
        TU_CHECK(memcmp(a, b, sizeof(float) * (size_t)(2 * V)) == 0,
                 "%s: logits differ between the copy and the mapping", dtype_name(types[t]));
        TU_CHECK(held_copy == held_map && held_copy > 0, "%s: held %zu (copy) vs %zu (mapping)",
                 dtype_name(types[t]), held_copy, held_map);
        fprintf(stderr, "%s: %zu bytes of weights held, logits identical (copy vs mapping)\n",
                dtype_name(types[t]), held_copy);
        free(a);
        free(b);
        unlink(path);
    }
    return tu_finish("test_weights_copy");
}
