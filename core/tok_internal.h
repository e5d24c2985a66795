/* tok_internal.h - what tokenizer.c and the pre-tokenizers (tok_pretok.c)
 * share; not a public interface. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

/* BPE pre-tokenizer rules (the regexes of HF tokenizers, by hand). */
typedef enum tok_pre_type {
    TOK_PRE_NONE = 0, /* SPM: no pre-tokenizer */
    TOK_PRE_LLAMA3,   /* Llama 3 "llama-bpe" */
    TOK_PRE_GPT2,     /* GPT-2 */
    TOK_PRE_QWEN2,    /* Llama 3 rules with single digits */
    TOK_PRE_DEEPSEEK_LLM,
    TOK_PRE_DEEPSEEK_CODER,
} tok_pre_type;

typedef struct tok_span {
    size_t start, end; /* byte offsets into the text, end exclusive */
} tok_span;

/* Split text[0..len) into words (malloc'ed *words, *n_words); the spans
 * cover the text in order without gaps. Malformed UTF-8 bytes are one
 * "other" character each. Returns false when out of memory. */
bool tok_pretokenize(tok_pre_type pre, const char *text, size_t len, tok_span **words,
                     size_t *n_words);
