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
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
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

bool tok_pretokenize(tok_pre_type pre, const char *text, size_t len, tok_span **words,
                     size_t *n_words)
{
    *words = NULL;
    *n_words = 0;
    cpts c = {0};
    bool ok = cpts_build(text, len, &c);
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
