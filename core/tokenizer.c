/* tokenizer.c - vocabulary loading, special-token splitting, SentencePiece
 * and byte-level BPE encoding, decoding and the streaming detokenizer.
 *
 * The BPE pre-tokenizers (the regexes llama.cpp and HF use) are written out
 * by hand in tok_pretok.c; this file holds everything else. Encoding follows
 * llama.cpp's llama_tokenize() so that its test vectors reproduce exactly:
 *   1. split the text on special-token strings (leftmost, longest first);
 *   2. SPM: each text fragment gets a space prefix when it starts the text or
 *      follows a special token, spaces become U+2581, then bigrams of
 *      adjacent symbols merge by best token score (ties: leftmost first);
 *      symbols that are no token fall back to <0xNN> byte tokens;
 *   3. BPE: pre-tokenize into words, map bytes to GPT-2 code points, merge
 *      adjacent symbols by lowest merge rank (ties: leftmost first). */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "strbuf.h"
#include "tok_internal.h"
#include "unicode.h"

/* A binary min-heap of bigram candidates, one per tokenizer kind: NAME with
 * NAME_push / NAME_pop over elements of TYPE ordered by BEFORE(a, b) (true
 * when a comes out first). Allocation failure sets oom; later pushes are
 * ignored and the caller checks oom once. */
#define TOK_DEFINE_HEAP(NAME, TYPE, BEFORE)                                                       \
    typedef struct NAME {                                                                          \
        TYPE *v;                                                                                   \
        size_t n, cap;                                                                             \
        bool oom;                                                                                  \
    } NAME;                                                                                        \
    static void NAME##_push(NAME *h, TYPE b)                                                       \
    {                                                                                              \
        if (h->oom)                                                                                \
            return;                                                                                \
        if (h->n == h->cap) {                                                                      \
            size_t nc = h->cap ? h->cap * 2 : 64;                                                  \
            TYPE *nv = realloc(h->v, nc * sizeof *nv);                                             \
            if (!nv) {                                                                             \
                h->oom = true;                                                                     \
                return;                                                                            \
            }                                                                                      \
            h->v = nv;                                                                             \
            h->cap = nc;                                                                           \
        }                                                                                          \
        size_t i = h->n++;                                                                         \
        while (i > 0) {                                                                            \
            size_t p = (i - 1) / 2;                                                                \
            if (!BEFORE(&b, &h->v[p]))                                                             \
                break;                                                                             \
            h->v[i] = h->v[p];                                                                     \
            i = p;                                                                                 \
        }                                                                                          \
        h->v[i] = b;                                                                               \
    }                                                                                              \
    static TYPE NAME##_pop(NAME *h)                                                                \
    {                                                                                              \
        TYPE top = h->v[0], last = h->v[--h->n];                                                   \
        size_t i = 0;                                                                              \
        for (;;) {                                                                                 \
            size_t c = 2 * i + 1;                                                                  \
            if (c >= h->n)                                                                         \
                break;                                                                             \
            if (c + 1 < h->n && BEFORE(&h->v[c + 1], &h->v[c]))                                    \
                c++;                                                                               \
            if (!BEFORE(&h->v[c], &last))                                                          \
                break;                                                                             \
            h->v[i] = h->v[c];                                                                     \
            i = c;                                                                                 \
        }                                                                                          \
        if (h->n)                                                                                  \
            h->v[i] = last;                                                                        \
        return top;                                                                                \
    }

/* ---- small helpers --------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

typedef struct ivec {
    int32_t *v;
    size_t n, cap;
    bool oom;
} ivec;

static void ivec_push(ivec *a, int32_t x)
{
    if (a->oom) return;
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        int32_t *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv) {
            a->oom = true;
            return;
        }
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
}

/* ---- the tokenizer --------------------------------------------------------- */

typedef struct tok_entry {
    uint32_t off, len; /* text in the arena (NUL-terminated there) */
    float score;
    uint8_t type;      /* tokenizer_token_type */
    uint8_t eog;
} tok_entry;

struct tokenizer {
    tokenizer_kind kind;
    tok_pre_type pre;
    char pre_name[32];
    int64_t n_vocab;
    tok_entry *toks;   /* [n_vocab] */
    char *arena;       /* all token texts */
    size_t max_len;    /* longest token text, bytes */

    int32_t *map;      /* text -> id, open addressing, -1 empty; [map_mask + 1] */
    size_t map_mask;

    uint64_t *mkey;    /* BPE merges: (left id << 32 | right id) -> rank, merged id */
    int32_t *mrank, *mres;
    size_t merge_mask;
    int64_t n_merges;

    int32_t byte_tok[256]; /* SPM: id of <0xNN>, -1 when absent */

    int32_t *special;  /* ids of control/user-defined/unknown tokens, by first byte then longer first */
    size_t n_special;
    size_t special_start[257];

    int32_t bos, eos, unk, pad, eot, eom;
    bool add_bos, add_eos, add_space_prefix, ignore_merges;
};

static const char *tok_text(const tokenizer *t, int32_t id) { return t->arena + t->toks[id].off; }

static int32_t map_find(const tokenizer *t, const char *s, size_t n)
{
    size_t i = hash_bytes(s, n) & t->map_mask;
    for (;;) {
        int32_t id = t->map[i];
        if (id < 0) return -1;
        if (t->toks[id].len == n && !memcmp(tok_text(t, id), s, n)) return id;
        i = (i + 1) & t->map_mask;
    }
}

/* Later ids win on duplicate texts, as in llama.cpp's token_to_id map. */
static void map_insert(tokenizer *t, int32_t id)
{
    const char *s = tok_text(t, id);
    size_t n = t->toks[id].len;
    size_t i = hash_bytes(s, n) & t->map_mask;
    for (;;) {
        int32_t cur = t->map[i];
        if (cur < 0) {
            t->map[i] = id;
            return;
        }
        if (t->toks[cur].len == n && !memcmp(tok_text(t, cur), s, n)) {
            t->map[i] = id;
            return;
        }
        i = (i + 1) & t->map_mask;
    }
}

static bool merge_find(const tokenizer *t, int32_t l, int32_t r, int32_t *rank, int32_t *res)
{
    if (!t->mkey || l < 0 || r < 0) return false;
    uint64_t k = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    size_t i = hash_u64(k) & t->merge_mask;
    for (;;) {
        if (t->mrank[i] < 0) return false;
        if (t->mkey[i] == k) {
            *rank = t->mrank[i];
            *res = t->mres[i];
            return true;
        }
        i = (i + 1) & t->merge_mask;
    }
}

/* First rank wins for a repeated pair. */
static void merge_insert(tokenizer *t, int32_t l, int32_t r, int32_t rank, int32_t res)
{
    uint64_t k = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    size_t i = hash_u64(k) & t->merge_mask;
    while (t->mrank[i] >= 0) {
        if (t->mkey[i] == k) return;
        i = (i + 1) & t->merge_mask;
    }
    t->mkey[i] = k;
    t->mrank[i] = rank;
    t->mres[i] = res;
}

void tokenizer_free(tokenizer *t)
{
    if (!t) return;
    free(t->toks);
    free(t->arena);
    free(t->map);
    free(t->mkey);
    free(t->mrank);
    free(t->mres);
    free(t->special);
    free(t);
}

static int32_t read_id(const gguf_file *f, const char *key, int32_t dflt, int64_t n_vocab)
{
    uint32_t v;
    if (gguf_find_key(f, key) < 0) return dflt;
    if (!gguf_get_u32(f, key, &v)) {
        int32_t s;
        if (gguf_get_i32(f, key, &s) && s == -1) return -1;
        log_warn("tokenizer: %s has a non-integer or negative value; ignored", key);
        return -1;
    }
    if ((int64_t)v >= n_vocab) {
        if (v != 0xFFFFFFFFu) log_warn("tokenizer: %s = %u is out of range (n_vocab %lld); ignored",
                                       key, v, (long long)n_vocab);
        return -1;
    }
    return (int32_t)v;
}

/* Sort key of a special token: first byte, then longer first, then id. */
typedef struct special_key {
    uint8_t first;
    uint32_t len;
    int32_t id;
} special_key;

static int special_cmp(const void *a, const void *b)
{
    const special_key *x = a, *y = b;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static tok_pre_type pre_from_name(const char *name, bool *known)
{
    static const char *llama3[] = {"llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral",
                                   "smaug-bpe", "dbrx", "superbpe"};
    static const char *gpt2[] = {"gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "jina-v1-en",
                                 "jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe",
                                 "mpt", "olmo", "gigachat"};
    static const char *qwen2[] = {"qwen2", "deepseek-r1-qwen", "megrez"};
    *known = true;
    for (size_t i = 0; i < sizeof llama3 / sizeof *llama3; i++)
        if (!strcmp(name, llama3[i])) return TOK_PRE_LLAMA3;
    for (size_t i = 0; i < sizeof gpt2 / sizeof *gpt2; i++)
        if (!strcmp(name, gpt2[i])) return TOK_PRE_GPT2;
    for (size_t i = 0; i < sizeof qwen2 / sizeof *qwen2; i++)
        if (!strcmp(name, qwen2[i])) return TOK_PRE_QWEN2;
    if (!strcmp(name, "deepseek-llm")) return TOK_PRE_DEEPSEEK_LLM;
    if (!strcmp(name, "deepseek-coder")) return TOK_PRE_DEEPSEEK_CODER;
    *known = false;
    return TOK_PRE_LLAMA3;
}

static cv_status load_merges(tokenizer *t, const gguf_file *f, cv_err *e)
{
    gguf_array a;
    if (!gguf_get_arr(f, "tokenizer.ggml.merges", &a))
        return cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.merges is missing (required for gpt2 "
                                         "tokenizers)");
    if (a.elem_type != GGUF_VT_STRING)
        return cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.merges: expected a string array, got "
                                         "element type %d", (int)a.elem_type);
    if (a.n > INT32_MAX) return cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.merges: %llu merges",
                                           (unsigned long long)a.n);
    size_t cap = pow2_at_least((size_t)a.n * 2 + 16);
    t->mkey = malloc(cap * sizeof *t->mkey);
    t->mrank = malloc(cap * sizeof *t->mrank);
    t->mres = malloc(cap * sizeof *t->mres);
    if (!t->mkey || !t->mrank || !t->mres)
        return cv_err_set(e, CV_ENOMEM, "tokenizer: out of memory for %llu merges",
                          (unsigned long long)a.n);
    for (size_t i = 0; i < cap; i++) t->mrank[i] = -1;
    t->merge_mask = cap - 1;
    char *tmp = malloc(2 * t->max_len + 2);
    if (!tmp) return cv_err_set(e, CV_ENOMEM, "tokenizer: out of memory");
    int64_t skipped = 0;
    for (uint64_t j = 0; j < a.n; j++) {
        size_t n;
        const char *s = gguf_arr_str(f, &a, j, &n);
        if (!s) {
            free(tmp);
            return cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.merges[%llu] unreadable",
                              (unsigned long long)j);
        }
        /* "left right": split at the first space after the first byte */
        size_t sp = 1;
        while (sp < n && s[sp] != ' ') sp++;
        if (sp >= n) {
            skipped++;
            continue;
        }
        int32_t l = map_find(t, s, sp), r = map_find(t, s + sp + 1, n - sp - 1);
        int32_t res = -1;
        if (l >= 0 && r >= 0 && n - 1 <= 2 * t->max_len) {
            memcpy(tmp, s, sp);
            memcpy(tmp + sp, s + sp + 1, n - sp - 1);
            res = map_find(t, tmp, n - 1);
        }
        if (l < 0 || r < 0 || res < 0) {
            skipped++;
            continue;
        }
        merge_insert(t, l, r, (int32_t)j, res);
    }
    free(tmp);
    t->n_merges = (int64_t)a.n;
    if (skipped)
        log_warn("tokenizer: %lld of %llu merges name strings that are not tokens; ignored",
                 (long long)skipped, (unsigned long long)a.n);
    return CV_OK;
}

cv_status tokenizer_load(const gguf_file *f, tokenizer **out, cv_err *e)
{
    *out = NULL;
    size_t mlen;
    const char *model = gguf_get_str(f, "tokenizer.ggml.model", &mlen);
    if (!model) return cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.model is missing");
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) return cv_err_set(e, CV_ENOMEM, "tokenizer: out of memory");
    cv_status st = CV_OK;
    if (mlen == 5 && !memcmp(model, "llama", 5)) {
        t->kind = TOKENIZER_SPM;
    } else if (mlen == 4 && !memcmp(model, "gpt2", 4)) {
        t->kind = TOKENIZER_BPE;
    } else {
        st = cv_err_set(e, CV_EUNSUPPORTED,
                        "tokenizer.ggml.model '%.*s' is not supported (supported: llama, gpt2)",
                        (int)(mlen > 64 ? 64 : mlen), model);
        goto err;
    }

    gguf_array toks;
    if (!gguf_get_arr(f, "tokenizer.ggml.tokens", &toks) || toks.elem_type != GGUF_VT_STRING) {
        st = cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.tokens is missing or not a string array");
        goto err;
    }
    if (toks.n == 0 || toks.n > INT32_MAX) {
        st = cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.tokens: bad count %llu",
                        (unsigned long long)toks.n);
        goto err;
    }
    int64_t n = (int64_t)toks.n;
    t->n_vocab = n;
    t->toks = calloc((size_t)n, sizeof *t->toks);
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t len = 0;
        if (!gguf_arr_str(f, &toks, (uint64_t)i, &len)) {
            st = cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.tokens[%lld] unreadable", (long long)i);
            goto err;
        }
        if (len > UINT32_MAX / 2) {
            st = cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.tokens[%lld]: length %zu",
                            (long long)i, len);
            goto err;
        }
        total += len + 1;
    }
    if (total > UINT32_MAX) {
        st = cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.tokens: %zu bytes of text", total);
        goto err;
    }
    t->arena = malloc(total ? total : 1);
    size_t map_cap = pow2_at_least((size_t)n * 2);
    t->map = malloc(map_cap * sizeof *t->map);
    if (!t->toks || !t->arena || !t->map) {
        st = cv_err_set(e, CV_ENOMEM, "tokenizer: out of memory for %lld tokens", (long long)n);
        goto err;
    }
    memset(t->map, 0xFF, map_cap * sizeof *t->map);
    t->map_mask = map_cap - 1;

    gguf_array scores, types;
    bool have_scores = gguf_get_arr(f, "tokenizer.ggml.scores", &scores);
    bool have_types = gguf_get_arr(f, "tokenizer.ggml.token_type", &types);
    if (have_scores && (scores.elem_type != GGUF_VT_FLOAT32 || scores.n != toks.n)) {
        st = cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.scores: expected %lld float32, got %llu "
                        "of type %d", (long long)n, (unsigned long long)scores.n,
                        (int)scores.elem_type);
        goto err;
    }
    if (have_types && ((types.elem_type != GGUF_VT_INT32 && types.elem_type != GGUF_VT_UINT32) ||
                       types.n != toks.n)) {
        st = cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.token_type: expected %lld int32, got %llu "
                        "of type %d", (long long)n, (unsigned long long)types.n,
                        (int)types.elem_type);
        goto err;
    }
    size_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t len;
        const char *s = gguf_arr_str(f, &toks, (uint64_t)i, &len);
        memcpy(t->arena + off, s, len);
        t->arena[off + len] = 0;
        tok_entry *te = &t->toks[i];
        te->off = (uint32_t)off;
        te->len = (uint32_t)len;
        off += len + 1;
        if (len > t->max_len) t->max_len = len;
        if (have_scores) memcpy(&te->score, (const char *)scores.data + 4 * i, 4);
        int32_t ty = TOKEN_TYPE_NORMAL;
        if (have_types) memcpy(&ty, (const char *)types.data + 4 * i, 4);
        if (ty < TOKEN_TYPE_UNDEFINED || ty > TOKEN_TYPE_BYTE) {
            st = cv_err_set(e, CV_EFORMAT, "tokenizer.ggml.token_type[%lld] = %d is not a token "
                            "type (0..6)", (long long)i, ty);
            goto err;
        }
        te->type = (uint8_t)ty;
        map_insert(t, (int32_t)i);
    }

    /* pre-tokenizer and flags */
    size_t plen = 0;
    const char *pre = gguf_get_str(f, "tokenizer.ggml.pre", &plen);
    if (!pre || plen == 0) {
        pre = "default";
        plen = 7;
    }
    snprintf(t->pre_name, sizeof t->pre_name, "%.*s", (int)plen, pre);
    if (t->kind == TOKENIZER_BPE) {
        bool known;
        t->pre = pre_from_name(t->pre_name, &known);
        if (!known)
            log_warn("tokenizer: pre-tokenizer '%s' is not implemented; using llama-bpe (Llama 3) "
                     "rules, some texts may tokenize differently", t->pre_name);
        t->ignore_merges = t->pre == TOK_PRE_LLAMA3;
        t->add_bos = t->pre == TOK_PRE_LLAMA3;
        t->add_space_prefix = false;
        st = load_merges(t, f, e);
        if (st) goto err;
    } else {
        t->pre = TOK_PRE_NONE;
        t->add_bos = true;
        t->add_space_prefix = true;
    }
    bool b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b)) t->add_bos = b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &b)) t->add_eos = b;
    if (t->kind == TOKENIZER_SPM && gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &b))
        t->add_space_prefix = b;

    bool spm = t->kind == TOKENIZER_SPM;
    t->bos = read_id(f, "tokenizer.ggml.bos_token_id", spm ? 1 : -1, n);
    t->eos = read_id(f, "tokenizer.ggml.eos_token_id", spm ? 2 : -1, n);
    t->unk = read_id(f, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1, n);
    t->pad = read_id(f, "tokenizer.ggml.padding_token_id", -1, n);
    t->eot = read_id(f, "tokenizer.ggml.eot_token_id", -1, n);
    t->eom = read_id(f, "tokenizer.ggml.eom_token_id", -1, n);
    static const char *eot_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                      "<|endoftext|>", "<EOT>", "_<EOT>", "<end_of_utterance>"};
    static const char *eog_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>",
                                      "<|call|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
                                      "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>"};
    for (size_t i = 0; t->eot < 0 && i < sizeof eot_names / sizeof *eot_names; i++)
        t->eot = map_find(t, eot_names[i], strlen(eot_names[i]));
    if (t->eom < 0) t->eom = map_find(t, "<|eom_id|>", 10);
    for (size_t i = 0; i < sizeof eog_names / sizeof *eog_names; i++) {
        int32_t id = map_find(t, eog_names[i], strlen(eog_names[i]));
        if (id >= 0) t->toks[id].eog = 1;
    }
    if (t->eos >= 0) t->toks[t->eos].eog = 1;
    if (t->eot >= 0) t->toks[t->eot].eog = 1;
    if (t->eom >= 0) t->toks[t->eom].eog = 1;

    /* byte fallback tokens */
    for (int i = 0; i < 256; i++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", i);
        t->byte_tok[i] = map_find(t, buf, 6);
    }

    /* special tokens for splitting */
    for (int64_t i = 0; i < n; i++) {
        int ty = t->toks[i].type;
        if ((ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED || ty == TOKEN_TYPE_UNKNOWN) &&
            t->toks[i].len > 0)
            t->n_special++;
    }
    t->special = malloc((t->n_special ? t->n_special : 1) * sizeof *t->special);
    if (!t->special) {
        st = cv_err_set(e, CV_ENOMEM, "tokenizer: out of memory");
        goto err;
    }
    special_key *keys = malloc((t->n_special ? t->n_special : 1) * sizeof *keys);
    if (!keys) {
        st = cv_err_set(e, CV_ENOMEM, "tokenizer: out of memory");
        goto err;
    }
    size_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        int ty = t->toks[i].type;
        if ((ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED || ty == TOKEN_TYPE_UNKNOWN) &&
            t->toks[i].len > 0)
            keys[k++] = (special_key){(uint8_t)tok_text(t, (int32_t)i)[0], t->toks[i].len,
                                      (int32_t)i};
    }
    qsort(keys, t->n_special, sizeof *keys, special_cmp);
    for (k = 0; k < t->n_special; k++) t->special[k] = keys[k].id;
    free(keys);
    for (int c = 0, j = 0; c <= 256; c++) {
        while ((size_t)j < t->n_special && (uint8_t)tok_text(t, t->special[j])[0] < c) j++;
        t->special_start[c] = (size_t)j;
    }
    *out = t;
    return CV_OK;
err:
    tokenizer_free(t);
    return st;
}

/* ---- accessors ------------------------------------------------------------- */

tokenizer_kind tokenizer_get_kind(const tokenizer *t) { return t->kind; }
int64_t tokenizer_n_vocab(const tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tokenizer *t) { return t->eos; }
int32_t tokenizer_eot(const tokenizer *t) { return t->eot; }
bool tokenizer_add_bos(const tokenizer *t) { return t->add_bos; }
bool tokenizer_add_eos(const tokenizer *t) { return t->add_eos; }
const char *tokenizer_pre_name(const tokenizer *t) { return t->pre_name; }

bool tokenizer_is_eog(const tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->toks[id].eog;
}

bool tokenizer_is_control(const tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab) return false;
    int ty = t->toks[id].type;
    return ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_UNKNOWN || ty == TOKEN_TYPE_UNUSED;
}

tokenizer_token_type tokenizer_token_type_of(const tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab) return TOKEN_TYPE_UNDEFINED;
    return (tokenizer_token_type)t->toks[id].type;
}

const char *tokenizer_token_str(const tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab) return NULL;
    if (len) *len = t->toks[id].len;
    return tok_text(t, id);
}

int32_t tokenizer_find_token(const tokenizer *t, const char *s)
{
    return map_find(t, s, strlen(s));
}

/* ---- SentencePiece-style encoding ------------------------------------------ */

typedef struct spm_sym {
    int32_t prev, next;
    uint32_t start, n; /* bytes of the escaped text; n == 0: merged away */
} spm_sym;

typedef struct spm_bigram {
    float score;
    int32_t left, right;
    uint32_t size;
} spm_bigram;

/* max-heap: higher score first, then lower left index */
static bool spm_before(const spm_bigram *a, const spm_bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

TOK_DEFINE_HEAP(spm_heap, spm_bigram, spm_before)

static void spm_try_bigram(const tokenizer *t, const char *s, const spm_sym *sym, spm_heap *h,
                           int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return;
    uint32_t size = sym[l].n + sym[r].n;
    int32_t id = map_find(t, s + sym[l].start, size);
    if (id < 0) return;
    spm_bigram b = {t->toks[id].score, l, r, size};
    spm_heap_push(h, b);
}

/* Tokenize escaped text s[0..n) (spaces already U+2581). */
static bool spm_encode(const tokenizer *t, const char *s, size_t n, ivec *out)
{
    if (n == 0) return true;
    spm_sym *sym = malloc(n * sizeof *sym);
    spm_heap h = {0};
    if (!sym) return false;
    int32_t ns = 0;
    for (size_t off = 0; off < n;) {
        size_t len = unicode_utf8_len((uint8_t)s[off]);
        if (len > n - off) len = n - off;
        sym[ns].start = (uint32_t)off;
        sym[ns].n = (uint32_t)len;
        sym[ns].prev = ns - 1;
        sym[ns].next = off + len < n ? ns + 1 : -1;
        ns++;
        off += len;
    }
    for (int32_t i = 1; i < ns; i++) spm_try_bigram(t, s, sym, &h, i - 1, i);
    while (h.n && !h.oom) {
        spm_bigram b = spm_heap_pop(&h);
        spm_sym *l = &sym[b.left], *r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* outdated */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        spm_try_bigram(t, s, sym, &h, l->prev, b.left);
        spm_try_bigram(t, s, sym, &h, b.left, l->next);
    }
    bool ok = !h.oom;
    for (int32_t i = 0; ok && i >= 0; i = sym[i].next) {
        int32_t id = map_find(t, s + sym[i].start, sym[i].n);
        if (id >= 0) {
            ivec_push(out, id);
            continue;
        }
        for (uint32_t j = 0; j < sym[i].n; j++) {
            uint8_t c = (uint8_t)s[sym[i].start + j];
            int32_t bid = t->byte_tok[c];
            if (bid < 0) bid = map_find(t, (const char *)&c, 1);
            if (bid < 0) bid = t->unk;
            if (bid >= 0) ivec_push(out, bid);
        }
    }
    free(sym);
    free(h.v);
    return ok;
}

static bool spm_encode_fragment(const tokenizer *t, const char *text, size_t len, bool prefix,
                                ivec *out)
{
    strbuf esc = {0};
    if (prefix) strbuf_put(&esc, "\xE2\x96\x81", 3);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            strbuf_put(&esc, text + run, i - run);
            strbuf_put(&esc, "\xE2\x96\x81", 3);
            run = i + 1;
        }
    }
    strbuf_put(&esc, text + run, len - run);
    bool ok = !esc.oom && spm_encode(t, esc.p, esc.n, out);
    free(esc.p);
    return ok;
}

/* ---- byte-level BPE encoding ----------------------------------------------- */

typedef struct bpe_sym {
    int32_t prev, next;
    int32_t id;        /* token of this symbol, -1 when none */
    uint32_t start, n; /* bytes of the encoded word; n == 0: merged away */
} bpe_sym;

typedef struct bpe_bigram {
    int32_t rank, left, right, lid, rid, res;
} bpe_bigram;

static bool bpe_before(const bpe_bigram *a, const bpe_bigram *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

TOK_DEFINE_HEAP(bpe_heap, bpe_bigram, bpe_before)

static void bpe_try_bigram(const tokenizer *t, const bpe_sym *sym, bpe_heap *h, int32_t l,
                           int32_t r)
{
    if (l < 0 || r < 0) return;
    int32_t rank, res;
    if (!merge_find(t, sym[l].id, sym[r].id, &rank, &res)) return;
    bpe_bigram b = {rank, l, r, sym[l].id, sym[r].id, res};
    bpe_heap_push(h, b);
}

/* One pre-tokenized word, already mapped to GPT-2 code points (UTF-8). */
static bool bpe_encode_word(const tokenizer *t, const char *w, size_t n, bpe_sym **symbuf,
                            size_t *symcap, bpe_heap *h, ivec *out)
{
    if (n == 0) return true;
    if (t->ignore_merges) {
        int32_t id = map_find(t, w, n);
        if (id >= 0) {
            ivec_push(out, id);
            return true;
        }
    }
    if (*symcap < n) {
        bpe_sym *nv = realloc(*symbuf, n * sizeof *nv);
        if (!nv) return false;
        *symbuf = nv;
        *symcap = n;
    }
    bpe_sym *sym = *symbuf;
    int32_t ns = 0;
    for (size_t off = 0; off < n;) {
        size_t len = unicode_utf8_len((uint8_t)w[off]);
        if (len > n - off) len = n - off;
        sym[ns].start = (uint32_t)off;
        sym[ns].n = (uint32_t)len;
        sym[ns].id = map_find(t, w + off, len);
        sym[ns].prev = ns - 1;
        sym[ns].next = off + len < n ? ns + 1 : -1;
        ns++;
        off += len;
    }
    h->n = 0;
    for (int32_t i = 1; i < ns; i++) bpe_try_bigram(t, sym, h, i - 1, i);
    while (h->n && !h->oom) {
        bpe_bigram b = bpe_heap_pop(h);
        bpe_sym *l = &sym[b.left], *r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->id != b.lid || r->id != b.rid || l->next != b.right)
            continue; /* outdated */
        l->n += r->n;
        l->id = b.res;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        bpe_try_bigram(t, sym, h, l->prev, b.left);
        bpe_try_bigram(t, sym, h, b.left, l->next);
    }
    if (h->oom) return false;
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        if (sym[i].id >= 0) {
            ivec_push(out, sym[i].id);
            continue;
        }
        for (uint32_t j = 0; j < sym[i].n; j++) { /* as llama.cpp: single-byte tokens, if any */
            int32_t id = map_find(t, w + sym[i].start + j, 1);
            if (id >= 0) ivec_push(out, id);
        }
    }
    return true;
}

static bool bpe_encode_fragment(const tokenizer *t, const char *text, size_t len, ivec *out)
{
    tok_span *words = NULL;
    size_t n_words = 0;
    if (!tok_pretokenize(t->pre, text, len, &words, &n_words)) return false;
    strbuf enc = {0};
    bpe_sym *sym = NULL;
    size_t symcap = 0;
    bpe_heap h = {0};
    bool ok = true;
    for (size_t w = 0; ok && w < n_words; w++) {
        enc.n = 0;
        for (size_t i = words[w].start; i < words[w].end; i++) {
            char u[4];
            size_t k = unicode_utf8_encode(unicode_byte_to_cpt((uint8_t)text[i]), u);
            strbuf_put(&enc, u, k);
        }
        ok = !enc.oom && bpe_encode_word(t, enc.p, enc.n, &sym, &symcap, &h, out);
    }
    free(words);
    free(enc.p);
    free(sym);
    free(h.v);
    return ok;
}

/* ---- top level ------------------------------------------------------------- */

/* Longest special token at text[i], or -1. */
static int32_t special_at(const tokenizer *t, const char *text, size_t len, size_t i,
                          bool parse_special)
{
    uint8_t c = (uint8_t)text[i];
    for (size_t k = t->special_start[c]; k < t->special_start[c + 1]; k++) {
        int32_t id = t->special[k];
        const tok_entry *te = &t->toks[id];
        if (!parse_special && te->type != TOKEN_TYPE_USER_DEFINED) continue;
        if (te->len <= len - i && !memcmp(text + i, tok_text(t, id), te->len)) return id;
    }
    return -1;
}

static cv_status encode_vec(const tokenizer *t, const char *text, size_t len, bool add_special,
                            bool parse_special, ivec *out, cv_err *e)
{
    if (!text && len) return cv_err_set(e, CV_EINVAL, "tokenizer_encode: NULL text of length %zu",
                                        len);
    if (add_special && t->add_bos && t->bos >= 0) ivec_push(out, t->bos);
    bool prev_special = true; /* SPM: a space prefix at the start and after special tokens */
    size_t frag = 0, i = 0;
    bool ok = true;
    while (ok && frag < len) {
        int32_t sid = -1;
        for (i = frag; i < len; i++) {
            sid = special_at(t, text, len, i, parse_special);
            if (sid >= 0) break;
        }
        if (i > frag) { /* raw text fragment [frag, i) */
            if (t->kind == TOKENIZER_SPM)
                ok = spm_encode_fragment(t, text + frag, i - frag,
                                         t->add_space_prefix && prev_special, out);
            else
                ok = bpe_encode_fragment(t, text + frag, i - frag, out);
            prev_special = false;
        }
        if (sid >= 0) {
            ivec_push(out, sid);
            prev_special = true;
            i += t->toks[sid].len;
        }
        frag = i;
    }
    if (add_special && t->add_eos && t->eos >= 0) ivec_push(out, t->eos);
    if (!ok || out->oom) return cv_err_set(e, CV_ENOMEM, "tokenizer_encode: out of memory "
                                           "(text of %zu bytes)", len);
    return CV_OK;
}

cv_status tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special,
                           bool parse_special, int32_t *out, int64_t max_out, int64_t *n_out,
                           cv_err *e)
{
    ivec v = {0};
    *n_out = 0;
    cv_status st = encode_vec(t, text, len, add_special, parse_special, &v, e);
    if (st) {
        free(v.v);
        return st;
    }
    *n_out = (int64_t)v.n;
    size_t ncopy = v.n;
    if (max_out < 0) max_out = 0;
    if ((int64_t)ncopy > max_out) ncopy = (size_t)max_out;
    if (ncopy) memcpy(out, v.v, ncopy * sizeof *out);
    free(v.v);
    if ((int64_t)v.n > max_out)
        return cv_err_set(e, CV_ERANGE, "text needs %zu tokens, the buffer holds %lld", v.n,
                          (long long)max_out);
    return CV_OK;
}

cv_status tokenizer_encode_alloc(const tokenizer *t, const char *text, size_t len,
                                 bool add_special, bool parse_special, int32_t **out,
                                 int64_t *n_out, cv_err *e)
{
    ivec v = {0};
    *out = NULL;
    *n_out = 0;
    cv_status st = encode_vec(t, text, len, add_special, parse_special, &v, e);
    if (st) {
        free(v.v);
        return st;
    }
    if (v.n == 0) {
        free(v.v);
        return CV_OK;
    }
    *out = v.v;
    *n_out = (int64_t)v.n;
    return CV_OK;
}

/* ---- decoding -------------------------------------------------------------- */

/* Raw bytes of one token (may be partial UTF-8) appended to b. */
static void token_piece(const tokenizer *t, int32_t id, bool render_special, strbuf *b)
{
    if (id < 0 || id >= t->n_vocab) return;
    const tok_entry *te = &t->toks[id];
    const char *s = tok_text(t, id);
    switch (te->type) {
    case TOKEN_TYPE_CONTROL:
        if (render_special) strbuf_put(b, s, te->len);
        return;
    case TOKEN_TYPE_UNKNOWN:
    case TOKEN_TYPE_USER_DEFINED:
        strbuf_put(b, s, te->len);
        return;
    case TOKEN_TYPE_UNUSED:
        return;
    case TOKEN_TYPE_BYTE:
        if (t->kind == TOKENIZER_SPM) {
            unsigned v;
            if (te->len == 6 && sscanf(s, "<0x%02X>", &v) == 1) {
                char c = (char)v;
                strbuf_put(b, &c, 1);
                return;
            }
        }
        break;
    default:
        break;
    }
    if (t->kind == TOKENIZER_SPM) {
        size_t run = 0;
        for (size_t i = 0; i + 3 <= te->len;) {
            if (!memcmp(s + i, "\xE2\x96\x81", 3)) {
                strbuf_put(b, s + run, i - run);
                strbuf_put(b, " ", 1);
                i += 3;
                run = i;
            } else {
                i++;
            }
        }
        strbuf_put(b, s + run, te->len - run);
    } else {
        for (size_t i = 0; i < te->len;) {
            size_t adv;
            uint32_t cp = unicode_utf8_decode((const uint8_t *)s + i, te->len - i, &adv);
            int byte = cp == UNICODE_INVALID ? -1 : unicode_cpt_to_byte(cp);
            if (byte >= 0) {
                char c = (char)byte;
                strbuf_put(b, &c, 1);
            } else {
                strbuf_put(b, s + i, adv);
            }
            i += adv;
        }
    }
}

size_t tokenizer_token_piece(const tokenizer *t, int32_t id, bool render_special, char *buf,
                             size_t cap)
{
    strbuf b = {0};
    token_piece(t, id, render_special, &b);
    size_t n = b.oom ? 0 : b.n;
    if (n && cap) memcpy(buf, b.p, n < cap ? n : cap);
    free(b.p);
    return n;
}

struct detok {
    const tokenizer *tok;
    bool strip_space;  /* drop one leading space from the next non-empty piece */
    bool render_special;
    strbuf piece;        /* pending incomplete bytes + the new piece */
    strbuf out;          /* returned to the caller */
};

detok *detok_new(const tokenizer *t, bool at_start, bool render_special)
{
    detok *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->tok = t;
    d->strip_space = at_start && t->kind == TOKENIZER_SPM && t->add_space_prefix;
    d->render_special = render_special;
    return d;
}

void detok_free(detok *d)
{
    if (!d) return;
    free(d->piece.p);
    free(d->out.p);
    free(d);
}

static const char *detok_emit(detok *d, size_t *len)
{
    if (d->out.oom || d->piece.oom) { /* drop what we cannot hold; never half a character */
        d->out.oom = d->piece.oom = false;
        d->out.n = d->piece.n = 0;
    }
    *len = d->out.n;
    return d->out.n ? d->out.p : "";
}

const char *detok_feed(detok *d, int32_t id, size_t *len)
{
    d->out.n = 0;
    size_t before = d->piece.n;
    token_piece(d->tok, id, d->render_special, &d->piece);
    if (d->strip_space && d->piece.n > before) {
        if (d->piece.p[before] == ' ') {
            memmove(d->piece.p + before, d->piece.p + before + 1, d->piece.n - before - 1);
            d->piece.n--;
        }
        d->strip_space = false;
    }
    const uint8_t *p = (const uint8_t *)d->piece.p;
    size_t n = d->piece.n, i = 0;
    while (i < n) {
        bool incomplete;
        size_t ok = unicode_utf8_valid_prefix(p + i, n - i, &incomplete);
        strbuf_put(&d->out, (const char *)p + i, ok);
        i += ok;
        if (i == n || incomplete) break;
        strbuf_put(&d->out, "\xEF\xBF\xBD", 3); /* malformed byte -> U+FFFD */
        i++;
    }
    if (n - i) memmove(d->piece.p, p + i, n - i);
    d->piece.n = n - i;
    return detok_emit(d, len);
}

const char *detok_flush(detok *d, size_t *len)
{
    d->out.n = 0;
    if (d->piece.n) strbuf_put(&d->out, "\xEF\xBF\xBD", 3);
    d->piece.n = 0;
    return detok_emit(d, len);
}

cv_status tokenizer_decode(const tokenizer *t, const int32_t *ids, int64_t n, bool at_start,
                           bool render_special, char **out, size_t *out_len, cv_err *e)
{
    *out = NULL;
    if (out_len) *out_len = 0;
    detok *d = detok_new(t, at_start, render_special);
    strbuf b = {0};
    if (!d) return cv_err_set(e, CV_ENOMEM, "tokenizer_decode: out of memory");
    strbuf_put(&b, "", 0);
    for (int64_t i = 0; i < n; i++) {
        size_t len;
        const char *s = detok_feed(d, ids[i], &len);
        strbuf_put(&b, s, len);
    }
    size_t len;
    const char *s = detok_flush(d, &len);
    strbuf_put(&b, s, len);
    detok_free(d);
    if (b.oom) {
        free(b.p);
        return cv_err_set(e, CV_ENOMEM, "tokenizer_decode: out of memory (%lld tokens)",
                          (long long)n);
    }
    *out = b.p;
    if (out_len) *out_len = b.n;
    return CV_OK;
}
