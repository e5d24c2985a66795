/* test_embd_resident.c - the token embedding table does not accumulate in
 * the resident set of a CPU rank (issue 4: resident memory = the rank's
 * share). The table stays in the file mapping and is looked up by row; each
 * lookup faults a few pages in, and model_embd_release drops them again after
 * the embed op. Checked: a model whose (untied) table is 16384 rows, run
 * through batches whose tokens sweep every row, ends with < 10% of the
 * table's pages mapped in this process (measured from /proc/self/smaps over
 * the table's address range; without the release it is ~100%), and the
 * logits of a batch are bit-identical before and after the sweep (dropped
 * pages fault back in from the page cache with the same bytes). */
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

#define BATCH 64

/* Rss (bytes) of the parts of this process's mappings that lie in [a, b). */
static double smaps_rss_in(uintptr_t a, uintptr_t b)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    double rss = 0;
    uintptr_t lo = 0, hi = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long x, y;
        if (sscanf(line, "%lx-%lx ", &x, &y) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            lo = x, hi = y;
        } else if (!strncmp(line, "Rss:", 4) && lo < b && hi > a) {
            double kb = atof(line + 4);
            /* a VMA that straddles the range: count the share inside it */
            uintptr_t s = lo > a ? lo : a, e = hi < b ? hi : b;
            rss += kb * 1024.0 * (double)(e - s) / (double)(hi - lo);
        }
    }
    if (f)
        fclose(f);
    return rss;
}

int main(void)
{
    const char *path = "embd_resident.gguf";
    tm_spec sp = {.arch = "llama", .n_layer = 1, .n_embd = 256, .n_head = 4, .n_head_kv = 4,
                  .n_ff = 512, .n_vocab = 16384, .wtype = DT_Q8_0, .seed = 11};
    TU_CHECK(tm_write(path, &sp) == 0, "writing %s", path);
    gguf_file *f;
    cv_err e = {0};
    if (gguf_open(path, &f, &e)) {
        fprintf(stderr, "FAIL open: %s\n", e.msg);
        return 1;
    }
    backend *be;
    if (backend_cpu_create(1, NULL, &be, &e)) {
        fprintf(stderr, "FAIL backend: %s\n", e.msg);
        return 1;
    }
    model_params p = {.n_slots = 1, .n_ctx = BATCH, .kv_type = DT_F32, .max_batch = BATCH};
    model *m;
    if (model_load(f, NULL, &p, be, &m, &e)) {
        fprintf(stderr, "FAIL model_load: %s\n", e.msg);
        return 1;
    }
    TU_CHECK(m->output.data != m->tok_embd.data, "the model must not tie the head to the table");
    uintptr_t ta = (uintptr_t)m->tok_embd.data;
    uintptr_t tb = ta + m->tok_embd.row_bytes * (size_t)m->tok_embd.ne1;
    double table = (double)(tb - ta);

    comm *single = comm_single_create();
    int32_t tok[BATCH], pos[BATCH], slot[BATCH], idx[1] = {BATCH - 1};
    float *first = malloc(sizeof(float) * sp.n_vocab), *again = malloc(sizeof(float) * sp.n_vocab);
    for (int i = 0; i < BATCH; i++)
        pos[i] = i, slot[i] = 0;
    fwd_batch b = {.n_tok = BATCH, .tokens = tok, .pos = pos, .slot = slot, .n_out = 1,
                   .out_idx = idx};
    /* batch k holds rows k, k + 256, k + 512, ...: every row once over 256 batches */
    int n_batches = (int)(sp.n_vocab / BATCH);
    for (int k = 0; k < n_batches; k++) {
        for (int i = 0; i < BATCH; i++)
            tok[i] = (int32_t)(k + n_batches * i);
        float *out = k == 0 ? first : again;
        TU_CHECK(forward_stage(m, single, &b, NULL, NULL, out, &e) == CV_OK, "forward: %s", e.msg);
    }
    double held = smaps_rss_in(ta, tb);
    fprintf(stderr, "embedding table %.1f KiB, mapped after a sweep of every row: %.1f KiB (%.1f%%)\n",
            table / 1024, held / 1024, 100.0 * held / table);
    TU_CHECK(held < 0.10 * table, "%.0f of the table's %.0f bytes stayed resident", held, table);

    /* the first batch again: the same logits from re-faulted pages */
    for (int i = 0; i < BATCH; i++)
        tok[i] = (int32_t)(n_batches * i);
    TU_CHECK(forward_stage(m, single, &b, NULL, NULL, again, &e) == CV_OK, "forward: %s", e.msg);
    TU_CHECK(memcmp(first, again, sizeof(float) * sp.n_vocab) == 0,
             "logits differ after the table's pages were dropped");

    free(first);
    free(again);
    comm_destroy(single);
    model_free(m);
    backend_destroy(be);
    unlink(path);
    return tu_finish("test_embd_resident");
}
