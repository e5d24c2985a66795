/* tok_pretok.c - BPE pre-tokenizers written out by hand (no regex library).
 *
 * Each function below is the leftmost-first, greedy (PCRE-style) match of
 * one regex, applied repeatedly from the start of the text; a position no
 * alternative matches becomes a one-character word, so the words always
 * cover the text. \p{L}, \p{N} and \s come from unicode.c.
 *
 * Llama 3 ("llama-bpe"), and Qwen2 with \p{N} instead of \p{N}{1,3}:
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * GPT-2:
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * DeepSeek LLM and Coder are sequences of regexes instead (HF "Split"
 * pre-tokenizers, behaviour Isolated): each one splits every piece left by
 * the previous into its matches and the gaps between them:
 *   coder: [\r\n]  \s?\p{L}+  \s?\p{P}+  [CJK]+  \p{N}
 *   llm:   [\r\n]  \s?[cased letters]+  \s?[ASCII/fullwidth punctuation]+  \s+$  [CJK]+
 *          \p{N}+
 * with [CJK] = [\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF] and the cased-letter
 * class of the DeepSeek tokenizer's regex (ds_cased below). */
#include <stdlib.h>

#include "tok_internal.h"
#include "unicode.h"

enum { CL_L = 1, CL_N = 2, CL_WS = 4, CL_NL = 8 };

typedef struct cpts {
    uint32_t *cp;   /* [n] code points (UNICODE_INVALID for a malformed byte) */
    uint8_t *cls;   /* [n] CL_* flags */
    size_t *off;    /* [n + 1] byte offset of each code point */
    size_t n;
} cpts;

static bool cpts_build(const char *text, size_t len, cpts *c)
{
    c->cp = malloc((len + 1) * sizeof *c->cp);
    c->cls = malloc(len + 1);
    c->off = malloc((len + 1) * sizeof *c->off);
    if (!c->cp || !c->cls || !c->off) return false;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t adv;
        uint32_t cp = unicode_utf8_decode((const uint8_t *)text + i, len - i, &adv);
        uint8_t f = 0;
        if (cp != UNICODE_INVALID) {
            if (unicode_is_letter(cp)) f |= CL_L;
            else if (unicode_is_number(cp)) f |= CL_N;
            if (unicode_is_whitespace(cp)) f |= CL_WS;
            if (cp == '\r' || cp == '\n') f |= CL_NL;
        }
        c->cp[n] = cp;
        c->cls[n] = f;
        c->off[n] = i;
        n++;
        i += adv;
    }
    c->off[n] = len;
    c->n = n;
    return true;
}

/* class at i, 0 past the end */
static uint8_t cl(const cpts *c, size_t i) { return i < c->n ? c->cls[i] : 0; }
static bool is_l(const cpts *c, size_t i) { return cl(c, i) & CL_L; }
static bool is_n(const cpts *c, size_t i) { return cl(c, i) & CL_N; }
static bool is_ws(const cpts *c, size_t i) { return cl(c, i) & CL_WS; }
static bool is_nl(const cpts *c, size_t i) { return cl(c, i) & CL_NL; }
/* [^\s\p{L}\p{N}] */
static bool is_other(const cpts *c, size_t i)
{
    return i < c->n && !(c->cls[i] & (CL_L | CL_N | CL_WS));
}

static uint32_t lower_ascii(const cpts *c, size_t i, bool fold)
{
    if (i >= c->n) return 0;
    uint32_t x = c->cp[i];
    return fold && x >= 'A' && x <= 'Z' ? x + 32 : x;
}

/* Length of a contraction ('s 't 're 've 'm 'll 'd) at pos, 0 if none. */
static size_t match_contraction(const cpts *c, size_t pos, bool fold)
{
    if (c->cp[pos] != '\'') return 0;
    uint32_t a = lower_ascii(c, pos + 1, fold), b = lower_ascii(c, pos + 2, fold);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* Whitespace alternatives shared by all three: \s*[\r\n]+ (llama3 only),
 * \s+(?!\S), \s+. Returns the match end, pos if c[pos] is no whitespace. */
static size_t match_spaces(const cpts *c, size_t pos, bool newline_rule)
{
    if (!is_ws(c, pos)) return pos;
    size_t end = pos;
    while (is_ws(c, end)) end++;
    if (newline_rule) {
        size_t last_nl = end;
        for (size_t j = pos; j < end; j++)
            if (is_nl(c, j)) last_nl = j;
        if (last_nl < end) return last_nl + 1;
    }
    if (end < c->n && end - pos > 1) return end - 1; /* \s+(?!\S) backs off one */
    return end;
}

static size_t next_llama3(const cpts *c, size_t pos, size_t max_digits)
{
    size_t k = match_contraction(c, pos, true);
    if (k) return pos + k;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    size_t p = pos;
    if (!is_nl(c, p) && !is_l(c, p) && !is_n(c, p) && is_l(c, p + 1)) p++;
    if (is_l(c, p)) {
        while (is_l(c, p)) p++;
        return p;
    }
    /* \p{N}{1,max_digits} */
    if (is_n(c, pos)) {
        p = pos;
        while (p - pos < max_digits && is_n(c, p)) p++;
        return p;
    }
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    p = pos;
    if (c->cp[p] == ' ' && is_other(c, p + 1)) p++;
    if (is_other(c, p)) {
        while (is_other(c, p)) p++;
        while (is_nl(c, p)) p++;
        return p;
    }
    p = match_spaces(c, pos, true);
    if (p > pos) return p;
    return pos + 1;
}

static size_t next_gpt2(const cpts *c, size_t pos)
{
    size_t k = match_contraction(c, pos, false);
    if (k) return pos + k;
    size_t p = pos + (c->cp[pos] == ' ' ? 1 : 0);
    if (is_l(c, p)) { /* ' ?\p{L}+' */
        while (is_l(c, p)) p++;
        return p;
    }
    if (is_n(c, p)) { /* ' ?\p{N}+' */
        while (is_n(c, p)) p++;
        return p;
    }
    if (is_other(c, p)) { /* ' ?[^\s\p{L}\p{N}]+' */
        while (is_other(c, p)) p++;
        return p;
    }
    p = match_spaces(c, pos, false);
    if (p > pos) return p;
    return pos + 1;
}

/* ---- DeepSeek: sequences of Split regexes ---------------------------------- */

/* The cased-letter class of DeepSeek LLM's second regex (a subset of Unicode
 * Lu|Ll|Lt), as inclusive code point ranges. */
static const uint32_t ds_cased[][2] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA},
    {0x1BC, 0x1BF}, {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377}, {0x37B, 0x37D},
    {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5},
    {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5},
    {0x13F8, 0x13FD}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77},
    {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D},
    {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D},
    {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC},
    {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC},
    {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D},
    {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134},
    {0x2139, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184},
    {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0xA640, 0xA66D},
    {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E}, {0xAB70, 0xABBF},
    {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2},
    {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};

static bool in_ranges(uint32_t cp, const uint32_t (*r)[2], size_t n)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

typedef bool (*cpt_pred)(uint32_t cp);

static bool ds_is_cased(uint32_t cp)
{
    return in_ranges(cp, ds_cased, sizeof ds_cased / sizeof ds_cased[0]);
}
/* [!-/:-~！-／：-～‘-‟　-。] */
static bool ds_is_punct(uint32_t cp)
{
    return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x7E) ||
           (cp >= 0xFF01 && cp <= 0xFF0F) || (cp >= 0xFF1A && cp <= 0xFF5E) ||
           (cp >= 0x2018 && cp <= 0x201F) || (cp >= 0x3000 && cp <= 0x3002);
}
static bool ds_is_cjk(uint32_t cp)
{
    return (cp >= 0x0800 && cp <= 0x9FA5) || (cp >= 0xAC00 && cp <= 0xD7FF);
}
static bool ds_is_nl(uint32_t cp) { return cp == '\r' || cp == '\n'; }
static bool p_letter(uint32_t cp) { return cp != UNICODE_INVALID && unicode_is_letter(cp); }
static bool p_punct(uint32_t cp) { return cp != UNICODE_INVALID && unicode_is_punct(cp); }
static bool p_number(uint32_t cp) { return cp != UNICODE_INVALID && unicode_is_number(cp); }
static bool p_space(uint32_t cp) { return cp != UNICODE_INVALID && unicode_is_whitespace(cp); }

typedef enum ds_kind {
    DS_ONE,      /* [class] */
    DS_RUN,      /* [class]+ */
    DS_SP_RUN,   /* \s?[class]+ */
    DS_SP_END,   /* \s+$ */
} ds_kind;

typedef struct ds_stage {
    ds_kind kind;
    cpt_pred pred;
} ds_stage;

static const ds_stage ds_coder[] = {
    {DS_ONE, ds_is_nl}, {DS_SP_RUN, p_letter}, {DS_SP_RUN, p_punct}, {DS_RUN, ds_is_cjk},
    {DS_ONE, p_number},
};
static const ds_stage ds_llm[] = {
    {DS_ONE, ds_is_nl}, {DS_SP_RUN, ds_is_cased}, {DS_SP_RUN, ds_is_punct}, {DS_SP_END, NULL},
    {DS_RUN, ds_is_cjk}, {DS_RUN, p_number},
};

/* Length of the stage's match at p within a piece ending at end, 0 if none. */
static size_t ds_match(const ds_stage *st, const uint32_t *cp, size_t p, size_t end)
{
    size_t q = p;
    switch (st->kind) {
    case DS_ONE:
        return st->pred(cp[p]) ? 1 : 0;
    case DS_SP_RUN:
        if (p_space(cp[q]) && q + 1 < end && st->pred(cp[q + 1])) q++;
        /* fall through */
    case DS_RUN:
        if (!st->pred(cp[q])) return 0;
        while (q < end && st->pred(cp[q])) q++;
        return q - p;
    case DS_SP_END:
        while (q < end && p_space(cp[q])) q++;
        return q == end ? end - p : 0;
    }
    return 0;
}

/* Applies the stages in turn; pieces are code point index ranges. */
static bool ds_split(const cpts *c, const ds_stage *stages, size_t n_stages, tok_span **out,
                     size_t *n_out)
{
    size_t cap = c->n + 1, n = 0;
    tok_span *cur = malloc(cap * sizeof *cur), *next = malloc(cap * sizeof *next);
    if (!cur || !next) {
        free(cur);
        free(next);
        return false;
    }
    if (c->n) cur[n++] = (tok_span){0, c->n};
    for (size_t s = 0; s < n_stages; s++) {
        size_t m = 0;
        for (size_t k = 0; k < n; k++) {
            size_t gap = cur[k].start, end = cur[k].end;
            for (size_t p = gap; p < end;) {
                size_t len = ds_match(&stages[s], c->cp, p, end);
                if (!len) {
                    p++;
                    continue;
                }
                if (p > gap) next[m++] = (tok_span){gap, p};
                next[m++] = (tok_span){p, p + len};
                p += len;
                gap = p;
            }
            if (gap < end) next[m++] = (tok_span){gap, end};
        }
        tok_span *t = cur;
        cur = next;
        next = t;
        n = m;
    }
    free(next);
    for (size_t k = 0; k < n; k++) { /* code points -> bytes */
        cur[k].start = c->off[cur[k].start];
        cur[k].end = c->off[cur[k].end];
    }
    *out = cur;
    *n_out = n;
    return true;
}

bool tok_pretokenize(tok_pre_type pre, const char *text, size_t len, tok_span **words,
                     size_t *n_words)
{
    *words = NULL;
    *n_words = 0;
    cpts c = {0};
    bool ok = cpts_build(text, len, &c);
    if (ok && (pre == TOK_PRE_DEEPSEEK_LLM || pre == TOK_PRE_DEEPSEEK_CODER)) {
        if (pre == TOK_PRE_DEEPSEEK_LLM)
            ok = ds_split(&c, ds_llm, sizeof ds_llm / sizeof ds_llm[0], words, n_words);
        else
            ok = ds_split(&c, ds_coder, sizeof ds_coder / sizeof ds_coder[0], words, n_words);
        free(c.cp);
        free(c.cls);
        free(c.off);
        return ok;
    }
    tok_span *w = ok ? malloc((c.n + 1) * sizeof *w) : NULL;
    if (!w) ok = false;
    size_t nw = 0;
    for (size_t pos = 0; ok && pos < c.n;) {
        size_t end;
        switch (pre) {
        case TOK_PRE_GPT2: end = next_gpt2(&c, pos); break;
        case TOK_PRE_QWEN2: end = next_llama3(&c, pos, 1); break;
        default: end = next_llama3(&c, pos, 3); break;
        }
        w[nw].start = c.off[pos];
        w[nw].end = c.off[end];
        nw++;
        pos = end;
    }
    free(c.cp);
    free(c.cls);
    free(c.off);
    if (!ok) {
        free(w);
        return false;
    }
    *words = w;
    *n_words = nw;
    return true;
}
