/* tokenizer.h - text <-> token ids from a GGUF's tokenizer.ggml.* metadata.
 *
 * Two vocabulary kinds, as llama.cpp names them in tokenizer.ggml.model:
 *   "llama"  SentencePiece-style: a space prefix, spaces as U+2581, bigram
 *            merging by token score, byte fallback through <0xNN> tokens.
 *   "gpt2"   byte-level BPE: GPT-2 byte <-> code point map, merges by rank,
 *            a regex-style pre-tokenizer chosen by tokenizer.ggml.pre
 *            ("llama-bpe" = Llama 3, "gpt-2", "qwen2", "deepseek-llm",
 *            "deepseek-coder"; anything else falls back to llama-bpe with
 *            a warning).
 * Encoding matches llama.cpp's llama_tokenize() for the same flags; the
 * shared test vectors (tests/test_tokenizer.c) hold it to that.
 *
 * A loaded tokenizer is read-only: encode/decode may run on many threads at
 * once. It copies what it needs, so the gguf_file may be closed afterwards.
 * Not here: WordPiece/Unigram vocabularies, Unicode normalisation. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"

typedef struct tokenizer tokenizer; /* opaque */

typedef enum tokenizer_kind { TOKENIZER_SPM = 0, TOKENIZER_BPE } tokenizer_kind;

/* GGUF tokenizer.ggml.token_type values */
typedef enum tokenizer_token_type {
    TOKEN_TYPE_UNDEFINED = 0,
    TOKEN_TYPE_NORMAL = 1,
    TOKEN_TYPE_UNKNOWN = 2,
    TOKEN_TYPE_CONTROL = 3,
    TOKEN_TYPE_USER_DEFINED = 4,
    TOKEN_TYPE_UNUSED = 5,
    TOKEN_TYPE_BYTE = 6,
} tokenizer_token_type;

/* Build from tokenizer.ggml.{model, pre, tokens, scores, token_type, merges,
 * bos/eos/unknown/padding/eot/eom_token_id, add_bos_token, add_eos_token,
 * add_space_prefix}. Errors name the key and the bad value. */
cv_status tokenizer_load(const gguf_file *f, tokenizer **out, cv_err *e);
void tokenizer_free(tokenizer *t);

/* Encode len bytes of text (need not be NUL-terminated, may be any bytes).
 *   add_special:   prepend BOS when the vocabulary's add-BOS flag is set
 *                  (tokenizer_add_bos), append EOS when add-EOS is set.
 *   parse_special: control / unknown token texts in the text ("<|eot_id|>",
 *                  "</s>") become their ids; without it they are tokenized
 *                  as plain text. User-defined tokens are always matched.
 * Writes at most max_out ids; *n_out is always the full count, and when it
 * exceeds max_out the call fails with CV_ERANGE (out holds the first
 * max_out ids). */
cv_status tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special,
                           bool parse_special, int32_t *out, int64_t max_out, int64_t *n_out,
                           cv_err *e);
/* Same, into a malloc'ed array the caller frees (*out is NULL when n is 0). */
cv_status tokenizer_encode_alloc(const tokenizer *t, const char *text, size_t len,
                                 bool add_special, bool parse_special, int32_t **out,
                                 int64_t *n_out, cv_err *e);

tokenizer_kind tokenizer_get_kind(const tokenizer *t);
int64_t tokenizer_n_vocab(const tokenizer *t);
int32_t tokenizer_bos(const tokenizer *t); /* -1 when the vocabulary has none */
int32_t tokenizer_eos(const tokenizer *t); /* -1 when none */
int32_t tokenizer_eot(const tokenizer *t); /* end of turn (<|eot_id|>, <|im_end|>...), -1 when none */
bool tokenizer_add_bos(const tokenizer *t); /* add_bos_token (default: true for SPM) */
bool tokenizer_add_eos(const tokenizer *t);
/* The tokenizer.ggml.pre name ("default" for SPM). */
const char *tokenizer_pre_name(const tokenizer *t);

/* End of generation: eos, eot, eom and the usual end-of-turn control tokens
 * (<|eot_id|>, <|eom_id|>, <|im_end|>, <|end|>, <end_of_turn>,
 * <|endoftext|>, ...). False for ids out of range. */
bool tokenizer_is_eog(const tokenizer *t, int32_t id);
/* Control/unknown/unused tokens (not text; rendered empty by default). */
bool tokenizer_is_control(const tokenizer *t, int32_t id);
tokenizer_token_type tokenizer_token_type_of(const tokenizer *t, int32_t id);

/* The vocabulary string of a token as stored (U+2581 / byte-level code
 * points, not decoded); NULL when id is out of range. *len may be NULL. */
const char *tokenizer_token_str(const tokenizer *t, int32_t id, size_t *len);
/* Id of a token whose vocabulary string is exactly s (NUL-terminated), -1 if none. */
int32_t tokenizer_find_token(const tokenizer *t, const char *s);

/* The bytes one token decodes to, on its own (may be part of a UTF-8
 * character: a <0xE4> byte token gives one byte). Writes at most cap bytes
 * to buf and returns the full length. For logprob listings; text for users
 * should go through detok. */
size_t tokenizer_token_piece(const tokenizer *t, int32_t id, bool render_special, char *buf,
                             size_t cap);

/* Decode a whole sequence into a malloc'ed NUL-terminated string (valid
 * UTF-8: malformed bytes become U+FFFD). at_start / render_special as for
 * detok_new. */
cv_status tokenizer_decode(const tokenizer *t, const int32_t *ids, int64_t n, bool at_start,
                           bool render_special, char **out, size_t *out_len, cv_err *e);

/* ---- streaming detokenizer --------------------------------------------------
 * One per sequence. Feed ids one at a time; each call returns only the bytes
 * that became complete UTF-8 characters, so a multi-byte character split
 * over several byte tokens is held back until it is whole. Malformed bytes
 * come out as U+FFFD, so the output is always valid UTF-8.
 *   at_start:       the first id fed starts the text (SPM: the space the
 *                   encoder prefixed is dropped from the first text piece,
 *                   as llama.cpp does after BOS). Use false when feeding a
 *                   continuation (generated tokens after a prompt).
 *   render_special: control tokens render as their text ("<|eot_id|>")
 *                   instead of nothing. */
typedef struct detok detok;
detok *detok_new(const tokenizer *t, bool at_start, bool render_special); /* NULL: out of memory */
/* Returns the new bytes (not NUL-terminated), valid until the next call;
 * *len may be 0. Ids out of range give nothing. */
const char *detok_feed(detok *d, int32_t id, size_t *len);
/* End of the sequence: whatever is held back, as U+FFFD. */
const char *detok_flush(detok *d, size_t *len);
void detok_free(detok *d);
