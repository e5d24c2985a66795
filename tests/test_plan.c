/* test_plan.c - the planner: layer ranges (even, uneven, sized by uneven
 * memory), KV-head / FFN-block / vocab splits (even and uneven), byte
 * accounting against sizes computed here from dtype_row_size, and the
 * refusals (T > KV heads, P > layers, a rank too small) with their reasons.
 * Acceptance 6: Llama-3-70B shape, Q4_K, over 4 x 24 GB + 2 x 12 GB. */
#include "coordinator/planner.h"
#include "core/dtype.h"
#include "core/gguf.h"
#include "testutil.h"

#define GB (1024ull * 1024 * 1024)

static plan_request req(int tp, int pp, const uint64_t *mem)
{
    return (plan_request){.tp = tp, .pp = pp, .n_slots = 1, .n_ctx = 4096, .kv_type = DT_F16,
                          .max_batch = 512, .mem = mem};
}

/* Invariants every plan must satisfy. */
static void check_plan(const plan *p, const plan_model *pm, const char *what)
{
    const model_config *c = &pm->cfg;
    int T = p->tp, P = p->pp;
    TU_CHECK(p->n_ranks == P * T, "%s: %d ranks", what, p->n_ranks);
    int next_layer = 0;
    for (int s = 0; s < P; s++) {
        const shard_spec *s0 = &p->ranks[s * T].shard;
        TU_CHECK(s0->layer0 == next_layer, "%s: stage %d starts at %d, expected %d", what, s,
                 s0->layer0, next_layer);
        TU_CHECK(s0->n_layers >= 1, "%s: stage %d has no layers", what, s);
        next_layer += s0->n_layers;
        int64_t heads = 0, kv = 0, ff = 0, vocab = 0;
        for (int t = 0; t < T; t++) {
            const shard_spec *sh = &p->ranks[s * T + t].shard;
            TU_CHECK(sh->pp_rank == s && sh->tp_rank == t && sh->pp_size == P && sh->tp_size == T,
                     "%s: rank %d grid position", what, s * T + t);
            TU_CHECK(sh->layer0 == s0->layer0 && sh->n_layers == s0->n_layers,
                     "%s: TP ranks of stage %d differ in layers", what, s);
            TU_CHECK(sh->head0 == heads && sh->kv_head0 == kv && sh->ff0 == ff,
                     "%s: rank %d slices not contiguous", what, s * T + t);
            TU_CHECK(sh->n_head_kv >= 1 && sh->n_head == sh->n_head_kv * (c->n_head / c->n_head_kv),
                     "%s: rank %d heads %d kv %d not whole GQA groups", what, s * T + t, sh->n_head,
                     sh->n_head_kv);
            int bs = (int)dtype_get(pm->layers[0].w_down)->block_size;
            TU_CHECK(sh->ff0 % bs == 0 && sh->n_ff % bs == 0 && sh->n_ff > 0,
                     "%s: rank %d ff [%lld,+%lld) not on %d-blocks", what, s * T + t,
                     (long long)sh->ff0, (long long)sh->n_ff, bs);
            TU_CHECK(sh->has_embd == (s == 0) && sh->has_head == (s == P - 1),
                     "%s: rank %d embd/head flags", what, s * T + t);
            heads += sh->n_head;
            kv += sh->n_head_kv;
            ff += sh->n_ff;
            if (sh->has_head) {
                TU_CHECK(sh->vocab0 == vocab, "%s: vocab slices not contiguous", what);
                vocab += sh->n_vocab;
            }
            const plan_rank *pr = &p->ranks[s * T + t];
            TU_CHECK(pr->total_bytes == pr->weight_bytes + pr->kv_bytes + pr->scratch_bytes,
                     "%s: rank %d total", what, s * T + t);
            if (pr->mem)
                TU_CHECK(pr->total_bytes <= pr->mem, "%s: rank %d needs %llu > mem %llu", what,
                         s * T + t, (unsigned long long)pr->total_bytes,
                         (unsigned long long)pr->mem);
        }
        TU_CHECK(heads == c->n_head && kv == c->n_head_kv && ff == c->n_ff,
                 "%s: stage %d covers %lld heads %lld kv %lld ff", what, s, (long long)heads,
                 (long long)kv, (long long)ff);
        if (s == P - 1)
            TU_CHECK(vocab == c->n_vocab, "%s: vocab covered %lld of %lld", what,
                     (long long)vocab, (long long)c->n_vocab);
    }
    TU_CHECK(next_layer == c->n_layer, "%s: %d of %d layers placed", what, next_layer, c->n_layer);
}

static model_config shape(int n_layer, int64_t n_embd, int n_head, int n_head_kv, int64_t n_ff,
                          int64_t n_vocab)
{
    model_config c = {0};
    snprintf(c.arch_name, sizeof c.arch_name, "llama");
    c.n_layer = n_layer;
    c.n_embd = n_embd;
    c.n_head = n_head;
    c.n_head_kv = n_head_kv;
    c.head_dim = (int)(n_embd / n_head);
    c.n_ff = n_ff;
    c.n_vocab = n_vocab;
    c.n_ctx_train = 2048;
    return c;
}

static void test_70b(void)
{
    cv_err e = {0};
    model_config c;
    plan_model pm;
    TU_CHECK(plan_shape_preset("llama3-70b", &c, &e) == CV_OK, "preset: %s", e.msg);
    TU_CHECK(plan_model_from_shape(&c, DT_Q4_K, &pm, &e) == CV_OK, "shape: %s", e.msg);
    uint64_t mem6[6] = {24 * GB, 24 * GB, 24 * GB, 24 * GB, 12 * GB, 12 * GB};
    for (int tp = 1; tp <= 2; tp++) {
        plan p;
        plan_request rq = req(tp, 6 / tp, mem6);
        cv_status st = planner_plan(&pm, &rq, &p, &e);
        TU_CHECK(st == CV_OK, "70b tp%d: %s", tp, e.msg);
        if (st)
            continue;
        check_plan(&p, &pm, "70b");
        if (tp == 1) {
            plan_print(&p, &pm, &rq, stderr);
            /* 12 GB ranks hold fewer layers than 24 GB ranks */
            TU_CHECK(p.ranks[4].shard.n_layers < p.ranks[1].shard.n_layers,
                     "12 GB stage has %d layers, 24 GB stage %d", p.ranks[4].shard.n_layers,
                     p.ranks[1].shard.n_layers);
        }
        plan_free(&p);
    }
    /* 2 x 8 GB: refused with the reason and what would fit */
    uint64_t mem2[2] = {8 * GB, 8 * GB};
    plan p;
    plan_request rq = req(1, 2, mem2);
    cv_status st = planner_plan(&pm, &rq, &p, &e);
    TU_CHECK(st == CV_ERANGE, "70b on 2x8G gave %s", cv_status_name(st));
    TU_CHECK(strstr(e.msg, "does not fit") && strstr(e.msg, "at least"), "message: %s", e.msg);
    fprintf(stderr, "expected refusal: %s\n", e.msg);
    /* T > KV heads */
    rq = req(16, 1, NULL);
    st = planner_plan(&pm, &rq, &p, &e);
    TU_CHECK(st == CV_EINVAL && strstr(e.msg, "largest --tp for this model is 8"), "tp16: %s",
             e.msg);
    /* P > layers */
    rq = req(1, 81, NULL);
    st = planner_plan(&pm, &rq, &p, &e);
    TU_CHECK(st == CV_EINVAL && strstr(e.msg, "largest --pp for this model is 80"), "pp81: %s",
             e.msg);
    plan_model_free(&pm);
}

/* stories260K shape: 5 layers, 8 heads, 4 kv, n_ff 172, F32 */
static void test_small_uneven(void)
{
    cv_err e = {0};
    model_config c = shape(5, 64, 8, 4, 172, 512);
    plan_model pm;
    TU_CHECK(plan_model_from_shape(&c, DT_F32, &pm, &e) == CV_OK, "%s", e.msg);
    int want_pp[4][5] = {{5}, {3, 2}, {2, 2, 1}, {1, 1, 1, 1, 1}};
    int pps[4] = {1, 2, 3, 5};
    for (int i = 0; i < 4; i++) {
        plan p;
        plan_request rq = req(1, pps[i], NULL);
        TU_CHECK(planner_plan(&pm, &rq, &p, &e) == CV_OK, "pp%d: %s", pps[i], e.msg);
        check_plan(&p, &pm, "stories pp");
        for (int s = 0; s < pps[i]; s++)
            TU_CHECK(p.ranks[s].shard.n_layers == want_pp[i][s], "pp%d stage %d: %d layers",
                     pps[i], s, p.ranks[s].shard.n_layers);
        plan_free(&p);
    }
    /* TP 3: kv 2,1,1; heads 4,2,2; ff 58,57,57; vocab 171,171,170 */
    plan p;
    plan_request rq = req(3, 1, NULL);
    TU_CHECK(planner_plan(&pm, &rq, &p, &e) == CV_OK, "tp3: %s", e.msg);
    check_plan(&p, &pm, "stories tp3");
    int kv[3] = {2, 1, 1}, ff[3] = {58, 57, 57}, vo[3] = {171, 171, 170};
    for (int t = 0; t < 3; t++) {
        const shard_spec *s = &p.ranks[t].shard;
        TU_CHECK(s->n_head_kv == kv[t] && s->n_head == 2 * kv[t] && s->n_ff == ff[t] &&
                     s->n_vocab == vo[t],
                 "tp3 rank %d: kv %d heads %d ff %lld vocab %lld", t, s->n_head_kv, s->n_head,
                 (long long)s->n_ff, (long long)s->n_vocab);
    }
    plan_free(&p);
    /* TP2 x PP2 */
    rq = req(2, 2, NULL);
    TU_CHECK(planner_plan(&pm, &rq, &p, &e) == CV_OK, "tp2pp2: %s", e.msg);
    check_plan(&p, &pm, "stories tp2pp2");
    plan_free(&p);
    /* byte accounting, one rank = the whole model: computed here independently */
    rq = req(1, 1, NULL);
    rq.n_slots = 2;
    rq.n_ctx = 100;
    TU_CHECK(planner_plan(&pm, &rq, &p, &e) == CV_OK, "pp1: %s", e.msg);
    uint64_t per_layer = 4ull * (64 * 64 + 64 * 32 * 2 + 64 * 64 + 172 * 64 * 3 + 64 * 2);
    uint64_t want_w = 5 * per_layer + 4ull * (512 * 64 * 2 + 64);
    uint64_t want_kv = 5ull * 2 * 2 * 100 * 32 * 2;
    TU_CHECK(p.ranks[0].weight_bytes == want_w, "weights %llu, expected %llu",
             (unsigned long long)p.ranks[0].weight_bytes, (unsigned long long)want_w);
    TU_CHECK(p.ranks[0].kv_bytes == want_kv, "kv %llu, expected %llu",
             (unsigned long long)p.ranks[0].kv_bytes, (unsigned long long)want_kv);
    plan_free(&p);
    plan_model_free(&pm);
}

/* K-quant FFN blocks and uneven memory */
static void test_kquant_and_memory(void)
{
    cv_err e = {0};
    model_config c = shape(6, 512, 8, 4, 1280, 1000);
    plan_model pm;
    TU_CHECK(plan_model_from_shape(&c, DT_Q4_K, &pm, &e) == CV_OK, "%s", e.msg);
    plan p;
    plan_request rq = req(2, 1, NULL);
    TU_CHECK(planner_plan(&pm, &rq, &p, &e) == CV_OK, "q4k tp2: %s", e.msg);
    check_plan(&p, &pm, "q4k tp2");
    TU_CHECK(p.ranks[0].shard.n_ff == 768 && p.ranks[1].shard.n_ff == 512 &&
                 p.ranks[1].shard.ff0 == 768,
             "ff split %lld/%lld", (long long)p.ranks[0].shard.n_ff,
             (long long)p.ranks[1].shard.n_ff);
    /* w_down column slice in whole Q4_K blocks: 768/256 blocks of 144 B per row */
    TU_CHECK(plan_slice_bytes(DT_Q4_K, 512, 768) == 512ull * 3 * 144, "slice bytes");
    /* unaligned slice counted as F32 */
    TU_CHECK(plan_slice_bytes(DT_Q4_K, 512, 128) == 512ull * 128 * 4, "unaligned slice bytes");
    /* head_dim 64, 2 heads per KV head: TP 4 gives 128-column slices of
     * attn_output, not whole Q4_K blocks -> planned as F32 (the loader
     * dequantizes them): 512 rows x 128 columns x 4 bytes per layer */
    TU_CHECK(p.ranks[0].f32_slice_bytes == 0, "tp2 f32 slices %llu",
             (unsigned long long)p.ranks[0].f32_slice_bytes);
    plan_free(&p);
    rq = req(4, 1, NULL);
    TU_CHECK(planner_plan(&pm, &rq, &p, &e) == CV_OK, "q4k tp4: %s", e.msg);
    if (p.ranks) {
        check_plan(&p, &pm, "q4k tp4");
        for (int r = 0; r < 4; r++)
            TU_CHECK(p.ranks[r].f32_slice_bytes == 6ull * 512 * 128 * 4,
                     "q4k tp4 rank %d: f32 slices %llu", r,
                     (unsigned long long)p.ranks[r].f32_slice_bytes);
    }
    plan_free(&p);
    /* 5 FFN blocks cannot go to 8 ranks... but KV heads refuse first (4) */
    rq = req(8, 1, NULL);
    TU_CHECK(planner_plan(&pm, &rq, &p, &e) == CV_EINVAL, "tp8 accepted");
    /* uneven memory: stage 1 has 3x the memory of stage 0 -> more layers */
    rq = req(1, 2, NULL);
    TU_CHECK(planner_plan(&pm, &rq, &p, &e) == CV_OK, "%s", e.msg);
    uint64_t need = p.ranks[0].total_bytes + p.ranks[1].total_bytes;
    plan_free(&p);
    uint64_t mem[2] = {need * 2 / 5, need * 6 / 5};
    rq = req(1, 2, mem);
    if (planner_plan(&pm, &rq, &p, &e) == CV_OK) {
        check_plan(&p, &pm, "uneven mem");
        TU_CHECK(p.ranks[0].shard.n_layers < p.ranks[1].shard.n_layers, "layers %d vs %d",
                 p.ranks[0].shard.n_layers, p.ranks[1].shard.n_layers);
        plan_free(&p);
    } else {
        TU_CHECK(0, "uneven mem: %s", e.msg);
    }
    /* one known rank that is too small with the others unknown */
    uint64_t mem_small[2] = {1024, 0};
    rq = req(1, 2, mem_small);
    TU_CHECK(planner_plan(&pm, &rq, &p, &e) == CV_ERANGE && strstr(e.msg, "rank 0"),
             "small rank: %s", e.msg);
    plan_model_free(&pm);
}

/* From a real file: stories260K (F32) */
static void test_gguf(void)
{
    cv_err e = {0};
    gguf_file *f = NULL;
    if (gguf_open(tu_model("stories260K.gguf"), &f, &e)) {
        TU_CHECK(0, "open: %s", e.msg);
        return;
    }
    plan_model pm;
    cv_status st = plan_model_from_gguf(f, &pm, &e);
    TU_CHECK(st == CV_OK, "from gguf: %s", e.msg);
    if (!st) {
        TU_CHECK(pm.cfg.n_layer == 5 && pm.cfg.n_head_kv == 4 && pm.layers[4].w_down == DT_F32,
                 "config");
        plan p;
        plan_request rq = req(2, 2, NULL);
        TU_CHECK(planner_plan(&pm, &rq, &p, &e) == CV_OK, "%s", e.msg);
        check_plan(&p, &pm, "stories gguf tp2pp2");
        plan_free(&p);
        plan_model_free(&pm);
    }
    gguf_close(f);
}

int main(void)
{
    test_70b();
    test_small_uneven();
    test_kquant_and_memory();
    test_gguf();
    return tu_finish("test_plan");
}
