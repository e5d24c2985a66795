/* test_tokenizer.c - the tokenizers against llama.cpp's test vectors
 * (.inp/.out files in ../shared/models/vocab), decode(encode(x)) == x, the
 * stories260K prompt of acceptance 1 (plus the deepseek-llm/coder vectors,
 * which the models README left unverified), the streaming detokenizer's UTF-8
 * guarantee, special-token flags and the buffer contract of
 * tokenizer_encode. Any mismatch prints the string, the expected and the
 * actual ids, and fails the test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/gguf.h"
#include "core/tokenizer.h"
#include "core/unicode.h"
#include "testutil.h"

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = (size_t)n;
    }
    return buf;
}

static tokenizer *load_tok(const char *rel, gguf_file **gf)
{
    cv_err e = {0};
    gguf_file *f;
    if (gguf_open(tu_model(rel), &f, &e)) {
        TU_CHECK(0, "gguf_open %s: %s", rel, e.msg);
        return NULL;
    }
    tokenizer *t;
    if (tokenizer_load(f, &t, &e)) {
        TU_CHECK(0, "tokenizer_load %s: %s", rel, e.msg);
        gguf_close(f);
        return NULL;
    }
    if (gf)
        *gf = f;
    else
        gguf_close(f); /* the tokenizer must not need the file afterwards */
    return t;
}

static void print_ids(const char *label, const int32_t *ids, int64_t n)
{
    fprintf(stderr, "    %s:", label);
    for (int64_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* A string as a C literal, for mismatch reports. */
static void print_str(const char *label, const char *s, size_t n)
{
    fprintf(stderr, "    %s: \"", label);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fprintf(stderr, "\\n");
        else if (c == '\t') fprintf(stderr, "\\t");
        else if (c == '"') fprintf(stderr, "\\\"");
        else if (c < 0x20) fprintf(stderr, "\\x%02x", c);
        else fputc(c, stderr);
    }
    fprintf(stderr, "\"\n");
}

/* SPM decode adds the encoder's space prefix back after each special token
 * that text follows; this is the text decode(encode(x)) must give. */
static size_t spm_expected_roundtrip(const char *x, size_t n, const char *special, char *out)
{
    size_t k = 0, sl = strlen(special);
    for (size_t i = 0; i < n;) {
        if (i + sl <= n && !memcmp(x + i, special, sl)) {
            memcpy(out + k, special, sl);
            k += sl;
            i += sl;
            if (i < n && !(i + sl <= n && !memcmp(x + i, special, sl))) out[k++] = ' ';
        } else {
            out[k++] = x[i++];
        }
    }
    return k;
}

/* Runs every vector of inp/out against vocab; returns the number that match. */
static int run_vectors(const char *vocab, const char *vec, int *n_total)
{
    char pin[256], pout[256];
    snprintf(pin, sizeof pin, "vocab/%s.inp", vec);
    snprintf(pout, sizeof pout, "vocab/%s.out", vec);
    size_t lin, lout;
    char *inp = read_all(tu_model(pin), &lin), *outp = read_all(tu_model(pout), &lout);
    tokenizer *t = load_tok(vocab, NULL);
    *n_total = 0;
    if (!inp || !outp || !t) {
        TU_CHECK(0, "%s: could not read vectors or vocab", vec);
        free(inp);
        free(outp);
        tokenizer_free(t);
        return 0;
    }
    bool spm = tokenizer_get_kind(t) == TOKENIZER_SPM;
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t seplen = strlen(sep);
    char *s = inp, *line = outp;
    int n_ok = 0, n_rt_ok = 0, idx = 0;
    while (s < inp + lin) {
        char *end = strstr(s, sep);
        if (!end) break;
        size_t slen = (size_t)(end - s);
        char *nl = strchr(line, '\n');
        if (!nl) {
            TU_CHECK(0, "%s: .out has fewer lines than .inp has strings (%d)", vec, idx);
            break;
        }
        *nl = 0;
        int32_t expect[1024];
        int64_t n_expect = 0;
        for (char *p = line; *p;) {
            char *q;
            long v = strtol(p, &q, 10);
            if (q == p) break;
            if (n_expect < 1024) expect[n_expect++] = (int32_t)v;
            p = q;
        }
        int32_t *got = NULL;
        int64_t n_got = 0;
        cv_err e = {0};
        cv_status st = tokenizer_encode_alloc(t, s, slen, false, true, &got, &n_got, &e);
        bool match = st == CV_OK && n_got == n_expect &&
                     (n_got == 0 || !memcmp(got, expect, (size_t)n_got * sizeof *got));
        if (match) {
            n_ok++;
        } else {
            fprintf(stderr, "MISMATCH %s #%d (%s)\n", vec, idx, st ? e.msg : "ids differ");
            print_str("text", s, slen);
            print_ids("expected", expect, n_expect);
            print_ids("got     ", got, n_got);
        }
        /* round trip, special tokens rendered as their text */
        char *dec = NULL;
        size_t dlen = 0;
        st = tokenizer_decode(t, got, n_got, true, true, &dec, &dlen, &e);
        char *want = malloc(2 * slen + 1);
        size_t wlen = spm ? spm_expected_roundtrip(s, slen, "</s>", want) : slen;
        if (!spm) memcpy(want, s, slen);
        if (st == CV_OK && dlen == wlen && !memcmp(dec, want, wlen)) {
            n_rt_ok++;
        } else {
            fprintf(stderr, "ROUNDTRIP %s #%d\n", vec, idx);
            print_str("text   ", want, wlen);
            print_str("decoded", dec ? dec : "", dlen);
        }
        free(want);
        free(dec);
        free(got);
        idx++;
        s = end + seplen;
        line = nl + 1;
    }
    TU_CHECK(idx > 0, "%s: no vectors read", vec);
    TU_CHECK(n_ok == idx, "%s: %d of %d vectors match", vec, n_ok, idx);
    TU_CHECK(n_rt_ok == idx, "%s: decode(encode(x)) == x for %d of %d", vec, n_rt_ok, idx);
    fprintf(stderr, "vectors %-31s vocab %-37s %d/%d match, round trip %d/%d\n", vec, vocab,
            n_ok, idx, n_rt_ok, idx);
    *n_total = idx;
    free(inp);
    free(outp);
    tokenizer_free(t);
    return n_ok;
}

static bool valid_utf8(const char *s, size_t n)
{
    bool incomplete;
    return unicode_utf8_valid_prefix((const uint8_t *)s, n, &incomplete) == n;
}

/* Feed token by token: every chunk valid UTF-8, concatenation == decode. */
static void check_streaming(const char *vocab, const char *text)
{
    tokenizer *t = load_tok(vocab, NULL);
    if (!t) return;
    int32_t *ids;
    int64_t n;
    cv_err e = {0};
    TU_CHECK(tokenizer_encode_alloc(t, text, strlen(text), true, false, &ids, &n, &e) == CV_OK,
             "encode: %s", e.msg);
    char *full = NULL;
    size_t flen = 0;
    TU_CHECK(tokenizer_decode(t, ids, n, true, false, &full, &flen, &e) == CV_OK, "decode: %s",
             e.msg);
    TU_CHECK(flen == strlen(text) && !memcmp(full, text, flen), "%s: decode != text", vocab);
    detok *d = detok_new(t, true, false);
    char cat[4096];
    size_t clen = 0;
    int held_back = 0;
    for (int64_t i = 0; i <= n; i++) {
        size_t len;
        const char *s = i < n ? detok_feed(d, ids[i], &len) : detok_flush(d, &len);
        TU_CHECK(valid_utf8(s, len), "%s: chunk %lld is not valid UTF-8", vocab, (long long)i);
        if (i < n && len == 0) held_back++;
        if (clen + len < sizeof cat) {
            memcpy(cat + clen, s, len);
            clen += len;
        }
    }
    TU_CHECK(clen == flen && !memcmp(cat, full, flen), "%s: streamed text != full decode", vocab);
    TU_CHECK(held_back > 0, "%s: expected some tokens to be held back (partial characters)",
             vocab);
    fprintf(stderr, "streaming %s: %lld tokens, %d held back, %zu bytes, all chunks valid\n",
            vocab, (long long)n, held_back, clen);
    /* a lone lead byte, then flush: U+FFFD, never a raw 0xF0 */
    detok_free(d);
    if (tokenizer_get_kind(t) == TOKENIZER_SPM) {
        d = detok_new(t, false, false);
        int32_t f0 = tokenizer_find_token(t, "<0xF0>"), a = tokenizer_find_token(t, "a");
        size_t len;
        const char *s = detok_feed(d, f0, &len);
        TU_CHECK(len == 0, "lone <0xF0> emitted %zu bytes", len);
        s = detok_feed(d, a, &len);
        TU_CHECK(len == 4 && !memcmp(s, "\xEF\xBF\xBD" "a", 4), "<0xF0> a -> U+FFFD a");
        s = detok_feed(d, f0, &len);
        s = detok_flush(d, &len);
        TU_CHECK(len == 3 && !memcmp(s, "\xEF\xBF\xBD", 3), "flush of <0xF0> -> U+FFFD");
        detok_free(d);
    }
    free(full);
    free(ids);
    tokenizer_free(t);
}

/* Seeded random texts: valid UTF-8 from several scripts, whitespace runs,
 * digits, apostrophes and emoji must round-trip exactly (SPM: the added
 * leading space is dropped by the decoder; a literal U+2581 is left out
 * there, since SentencePiece itself cannot tell it from an escaped space);
 * arbitrary bytes must encode
 * without error and decode to valid UTF-8. */
static void check_random_roundtrip(const char *vocab, int n_iter)
{
    tokenizer *t = load_tok(vocab, NULL);
    if (!t) return;
    static const uint32_t pool[] = {' ', ' ', ' ', '\n', '\t', '\r', 'a', 'Z', 'q', '0', '7',
                                    '\'', 's', '!', '.', '<', '|', '>', 0xE9, 0x4E2D, 0x6587,
                                    0x3042, 0x0416, 0x03A9, 0x0915, 0x093F, 0x1F999, 0x1F600,
                                    0x2581, 0x0120, 0xA0, 0x3000, 0xFFFD, 0x10FFFD, 0x0301};
    uint64_t seed = 0x5EED0001u;
    int n_ok = 0;
    for (int it = 0; it < n_iter; it++) {
        char text[512];
        size_t len = 0;
        int n_cp = (int)(tu_rand_u64(&seed) % 40);
        for (int k = 0; k < n_cp; k++) {
            uint32_t cp = pool[tu_rand_u64(&seed) % (sizeof pool / sizeof pool[0])];
            if (cp == 0x2581 && tokenizer_get_kind(t) == TOKENIZER_SPM) cp = ' ';
            char u[4];
            size_t m = unicode_utf8_encode(cp, u);
            memcpy(text + len, u, m);
            len += m;
        }
        int32_t *ids = NULL;
        int64_t n = 0;
        cv_err e = {0};
        char *dec = NULL;
        size_t dlen = 0;
        bool ok = tokenizer_encode_alloc(t, text, len, false, false, &ids, &n, &e) == CV_OK &&
                  tokenizer_decode(t, ids, n, true, false, &dec, &dlen, &e) == CV_OK &&
                  dlen == len && !memcmp(dec, text, len);
        if (ok) n_ok++;
        else if (n_ok + 5 > it) {
            fprintf(stderr, "ROUNDTRIP random %s #%d\n", vocab, it);
            print_str("text   ", text, len);
            print_str("decoded", dec ? dec : "", dlen);
        }
        free(ids);
        free(dec);
        /* arbitrary bytes */
        for (size_t k = 0; k < len; k++) text[k] = (char)tu_rand_u64(&seed);
        ids = NULL;
        dec = NULL;
        bool ok2 = tokenizer_encode_alloc(t, text, len, true, true, &ids, &n, &e) == CV_OK &&
                   tokenizer_decode(t, ids, n, true, true, &dec, &dlen, &e) == CV_OK &&
                   valid_utf8(dec, dlen);
        TU_CHECK(ok2, "%s: random bytes #%d: encode/decode failed or invalid UTF-8", vocab, it);
        free(ids);
        free(dec);
    }
    TU_CHECK(n_ok == n_iter, "%s: random round trip %d/%d", vocab, n_ok, n_iter);
    fprintf(stderr, "random round trip %s: %d/%d\n", vocab, n_ok, n_iter);
    tokenizer_free(t);
}

static void check_stories(void)
{
    tokenizer *t = load_tok("stories260K.gguf", NULL);
    if (!t) return;
    const int32_t want[] = {1, 403, 407, 261, 378};
    int32_t got[8];
    int64_t n = 0;
    cv_err e = {0};
    cv_status st = tokenizer_encode(t, "Once upon a time", 16, true, false, got, 8, &n, &e);
    TU_CHECK(st == CV_OK && n == 5 && !memcmp(got, want, sizeof want),
             "stories260K \"Once upon a time\" != [1, 403, 407, 261, 378]");
    if (!(st == CV_OK && n == 5)) print_ids("got", got, n < 8 ? n : 8);
    /* too small a buffer: CV_ERANGE, full count reported, prefix written */
    int32_t small[3] = {0};
    st = tokenizer_encode(t, "Once upon a time", 16, true, false, small, 3, &n, &e);
    TU_CHECK(st == CV_ERANGE && n == 5 && small[0] == 1 && small[2] == 407,
             "small buffer: st %d n %lld", (int)st, (long long)n);
    TU_CHECK(tokenizer_bos(t) == 1 && tokenizer_eos(t) == 2 && tokenizer_add_bos(t),
             "stories260K bos/eos/add_bos");
    TU_CHECK(tokenizer_is_eog(t, 2) && !tokenizer_is_eog(t, 1), "stories260K eog");
    /* continuation detok keeps the leading space; at_start drops it */
    int32_t ids[5];
    memcpy(ids, want, sizeof want);
    char *s;
    size_t len;
    tokenizer_decode(t, ids, 5, true, false, &s, &len, &e);
    TU_CHECK(s && !strcmp(s, "Once upon a time"), "decode(BOS Once upon a time) = '%s'", s);
    free(s);
    tokenizer_decode(t, ids + 2, 3, false, false, &s, &len, &e);
    TU_CHECK(s && !strcmp(s, " upon a time"), "continuation decode = '%s'", s);
    free(s);
    /* single-token pieces: raw bytes, partial UTF-8 allowed, control empty */
    char buf[16];
    size_t pn = tokenizer_token_piece(t, 403, false, buf, sizeof buf);
    TU_CHECK(pn == 5 && !memcmp(buf, " Once", 5), "piece(403) = '%.*s'", (int)pn, buf);
    int32_t e4 = tokenizer_find_token(t, "<0xE4>");
    pn = tokenizer_token_piece(t, e4, false, buf, sizeof buf);
    TU_CHECK(e4 >= 0 && pn == 1 && (uint8_t)buf[0] == 0xE4, "piece(<0xE4>) is the byte");
    TU_CHECK(tokenizer_token_piece(t, 1, false, buf, sizeof buf) == 0 &&
             tokenizer_token_piece(t, 1, true, buf, sizeof buf) == 3, "piece(BOS) '' / '<s>'");
    tokenizer_free(t);
}

static void check_llama3_specials(void)
{
    tokenizer *t = load_tok("vocab/llama3.2-bpe-vocab.gguf", NULL);
    if (!t) return;
    TU_CHECK(tokenizer_n_vocab(t) == 128256, "n_vocab %lld", (long long)tokenizer_n_vocab(t));
    TU_CHECK(tokenizer_find_token(t, "<|eot_id|>") == 128009, "find <|eot_id|>");
    TU_CHECK(tokenizer_bos(t) == 128000 && tokenizer_eos(t) == 128001, "llama3 bos/eos");
    TU_CHECK(tokenizer_eot(t) == 128009, "llama3 eot %d", tokenizer_eot(t));
    TU_CHECK(tokenizer_is_eog(t, 128001) && tokenizer_is_eog(t, 128009) &&
             tokenizer_is_eog(t, 128008) && !tokenizer_is_eog(t, 128000) &&
             !tokenizer_is_eog(t, 9906), "llama3 eog set");
    const char *txt = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
    int32_t *ids;
    int64_t n;
    cv_err e = {0};
    tokenizer_encode_alloc(t, txt, strlen(txt), true, true, &ids, &n, &e);
    const int32_t want[] = {128000, 128006, 882, 128007, 271, 13347, 128009};
    TU_CHECK(n == 7 && !memcmp(ids, want, sizeof want), "llama3 chat header encoding");
    if (n != 7) print_ids("got", ids, n);
    free(ids);
    /* without parse_special the marker is plain text */
    tokenizer_encode_alloc(t, "<|eot_id|>", 10, false, false, &ids, &n, &e);
    bool has_special = false;
    for (int64_t i = 0; i < n; i++) has_special |= ids[i] == 128009;
    TU_CHECK(n > 1 && !has_special, "parse_special=false must not produce <|eot_id|>");
    free(ids);
    /* control tokens render empty unless asked */
    detok *d = detok_new(t, true, false);
    size_t len;
    detok_feed(d, 128009, &len);
    TU_CHECK(len == 0, "control token rendered %zu bytes", len);
    detok_free(d);
    d = detok_new(t, true, true);
    const char *s = detok_feed(d, 128009, &len);
    TU_CHECK(len == 10 && !memcmp(s, "<|eot_id|>", 10), "render_special");
    detok_free(d);
    tokenizer_free(t);
}

int main(void)
{
    struct {
        const char *vocab, *vec;
    } sets[] = {
        {"vocab/ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-spm.gguf"},
        {"vocab/ggml-vocab-phi-3.gguf", "ggml-vocab-phi-3.gguf"},
        {"vocab/ggml-vocab-gpt-2.gguf", "ggml-vocab-gpt-2.gguf"},
        {"vocab/llama3.2-bpe-vocab.gguf", "ggml-vocab-llama-bpe.gguf"},
        {"vocab/ggml-vocab-llama-spm.gguf", "ggml-vocab-tinyllama.gguf"},
        {"llama-2-tiny-random.gguf", "ggml-vocab-llama-spm.gguf"},
        {"vocab/ggml-vocab-deepseek-llm.gguf", "ggml-vocab-deepseek-llm.gguf"},
        {"vocab/ggml-vocab-deepseek-coder.gguf", "ggml-vocab-deepseek-coder.gguf"},
    };
    int ok_all = 0, total_all = 0;
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        int total;
        ok_all += run_vectors(sets[i].vocab, sets[i].vec, &total);
        total_all += total;
    }
    fprintf(stderr, "vectors total: %d/%d\n", ok_all, total_all);
    check_stories();
    check_llama3_specials();
    const char *multi = "Ünïcödé: 你好，世界! 🦙🚀 Привет мир ☕ naïve café 日本語テキスト";
    check_streaming("vocab/ggml-vocab-llama-spm.gguf", multi);
    check_streaming("vocab/llama3.2-bpe-vocab.gguf", multi);
    check_streaming("vocab/ggml-vocab-gpt-2.gguf", multi);
    check_random_roundtrip("vocab/ggml-vocab-llama-spm.gguf", 300);
    check_random_roundtrip("vocab/llama3.2-bpe-vocab.gguf", 300);
    check_random_roundtrip("vocab/ggml-vocab-gpt-2.gguf", 300);
    check_random_roundtrip("stories260K.gguf", 300);
    check_random_roundtrip("vocab/ggml-vocab-deepseek-llm.gguf", 300);
    check_random_roundtrip("vocab/ggml-vocab-deepseek-coder.gguf", 300);
    return tu_finish("test_tokenizer");
}
