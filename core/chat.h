/* chat.h - chat templates: recognise the family of a GGUF's
 * tokenizer.chat_template (Jinja source) by its markers, and render a
 * conversation the way that family's reference template does. No Jinja
 * interpreter: each family's output is written out in chat.c.
 *
 * The rendered text NEVER contains the leading BOS (bos_token at the start
 * of the reference template); encode it with
 *     tokenizer_encode(tok, text, len, add_special = true, parse_special = true, ...)
 * so the tokenizer adds BOS where the model wants one and the markers
 * ("<|eot_id|>", "[INST]" is plain text, "</s><s>" inside a Llama 2
 * history) become their token ids. Everything after the leading BOS,
 * including BOS/EOS texts inside the history, is in the output. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "gguf.h"
#include "status.h"

typedef enum chat_family {
    CHAT_UNKNOWN = 0,
    CHAT_LLAMA2,  /* Meta Llama 2 chat: [INST] <<SYS>>\n..\n<</SYS>>\n\n.. [/INST] .. </s><s>[INST] */
    CHAT_LLAMA3,  /* Llama 3 instruct: <|start_header_id|>role<|end_header_id|>\n\n..<|eot_id|> */
    CHAT_LLAMA31, /* Llama 3.1/3.2: LLAMA3 plus the system block with "Cutting Knowledge Date:
                     December 2023\nToday Date: 26 Jul 2024\n\n" (the template's default date) */
    CHAT_MISTRAL, /* Mistral instruct v0.1: [INST] .. [/INST]..</s>; a system message is
                     prepended to the first user message followed by "\n\n" */
    CHAT_CHATML,  /* <|im_start|>role\n..<|im_end|>\n */
    CHAT_QWEN2,   /* ChatML; default system "You are a helpful assistant." when none given */
    CHAT_QWEN25,  /* ChatML; default system "You are Qwen, created by Alibaba Cloud. You are a
                     helpful assistant." */
    CHAT_PHI3,    /* <|user|>\n..<|end|>\n<|assistant|>\n; no generation prompt: <|endoftext|> */
    CHAT_ZEPHYR,  /* TinyLlama chat: <|user|>\n..</s>\n<|assistant|>\n */
    CHAT_FAMILY_COUNT
} chat_family;

typedef struct chat_msg {
    const char *role;    /* "system", "user", "assistant" (others pass through where the
                            family's template allows them) */
    const char *content; /* NUL-terminated UTF-8 */
} chat_msg;

/* Family from the Jinja source by its markers ("<|start_header_id|>" ->
 * llama3, "<|im_start|>" -> chatml/qwen, "[INST]" with "<<SYS>>" -> llama2,
 * without -> mistral, ...); CHAT_UNKNOWN when none match or jinja is NULL. */
chat_family chat_template_detect(const char *jinja, size_t len);

/* The family to use for a model: its tokenizer.chat_template when
 * recognised, else a default from the architecture and vocabulary (qwen2 ->
 * chatml, SPM "llama" vocab -> llama2, llama-bpe vocab -> llama3, other ->
 * chatml). *from_template (may be NULL) says whether the template decided. */
chat_family chat_template_from_gguf(const gguf_file *f, bool *from_template);

const char *chat_family_name(chat_family fam);          /* "llama3", ... */
chat_family chat_family_from_name(const char *name);    /* CHAT_UNKNOWN if not a family name */

/* Render msgs[0..n) into a malloc'ed NUL-terminated string (*out, caller
 * frees). add_generation_prompt appends the assistant header where the
 * family has one. Conversations the reference template rejects (Llama 2 and
 * Mistral: roles not alternating user/assistant after an optional leading
 * system message) give CV_EINVAL naming the message index and role. */
cv_status chat_apply(chat_family fam, const chat_msg *msgs, size_t n, bool add_generation_prompt,
                     char **out, cv_err *e);
