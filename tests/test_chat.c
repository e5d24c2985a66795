/* test_chat.c - chat template families: detection from the models' real
 * Jinja sources, the exact text each family renders (expected strings are
 * what the reference Jinja templates produce for the same conversation,
 * minus the leading BOS), role errors, and how the rendered text encodes
 * with parse_special (markers -> single control-token ids). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/chat.h"
#include "core/gguf.h"
#include "core/tokenizer.h"
#include "testutil.h"

/* Reference templates (tokenizer_config.json "chat_template" of each model). */
static const char *tmpl_llama2 =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] "
    "== 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != "
    "false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
    "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif "
    "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% "
    "endfor %}";
static const char *tmpl_llama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% "
    "endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
static const char *tmpl_llama31 =
    "{{- bos_token }}\n{%- if custom_tools is defined %}\n ... {{- \"<|start_header_id|>system"
    "<|end_header_id|>\\n\\n\" }}\n ... {{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }} ...";
static const char *tmpl_mistral =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] "
    "' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}";
static const char *tmpl_qwen2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' "
    "+ message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if "
    "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
static const char *tmpl_chatml =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' "
    "}}{% endif %}";
static const char *tmpl_phi3 =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + "
    "message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + "
    "message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' "
    "%}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}";
static const char *tmpl_zephyr =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' "
    "+ message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ "
    "'<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and "
    "add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

static const chat_msg conv[] = {
    {"system", "You are terse."},
    {"user", "Hello! "},
    {"assistant", " Hi."},
    {"user", "How are you?"},
};
static const chat_msg conv_nosys[] = {
    {"user", "Hello! "},
    {"assistant", " Hi."},
    {"user", "How are you?"},
};

static void expect_render(chat_family fam, const chat_msg *m, size_t n, bool gen, const char *want)
{
    char *out = NULL;
    cv_err e = {0};
    cv_status st = chat_apply(fam, m, n, gen, &out, &e);
    TU_CHECK(st == CV_OK, "%s: chat_apply: %s", chat_family_name(fam), e.msg);
    if (st != CV_OK) return;
    if (strcmp(out, want)) {
        TU_CHECK(0, "%s (n=%zu gen=%d) renders differently", chat_family_name(fam), n, gen);
        fprintf(stderr, "  expected: [%s]\n  got:      [%s]\n", want, out);
    }
    free(out);
}

static void check_detect(void)
{
    struct {
        const char *t;
        chat_family want;
    } cases[] = {
        {tmpl_llama2, CHAT_LLAMA2}, {tmpl_llama3, CHAT_LLAMA3}, {tmpl_llama31, CHAT_LLAMA31},
        {tmpl_mistral, CHAT_MISTRAL}, {tmpl_qwen2, CHAT_QWEN2}, {tmpl_chatml, CHAT_CHATML},
        {tmpl_phi3, CHAT_PHI3}, {tmpl_zephyr, CHAT_ZEPHYR}, {"{{ messages }}", CHAT_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        chat_family got = chat_template_detect(cases[i].t, strlen(cases[i].t));
        TU_CHECK(got == cases[i].want, "detect case %zu: got %s, want %s", i,
                 chat_family_name(got), chat_family_name(cases[i].want));
    }
    TU_CHECK(chat_template_detect(NULL, 0) == CHAT_UNKNOWN, "detect(NULL)");
    for (int f = 1; f < CHAT_FAMILY_COUNT; f++)
        TU_CHECK(chat_family_from_name(chat_family_name((chat_family)f)) == f, "name round trip %d",
                 f);
}

static void check_render(void)
{
    expect_render(CHAT_LLAMA2, conv, 4, true,
                  "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello! [/INST] Hi. </s>"
                  "<s>[INST] How are you? [/INST]");
    expect_render(CHAT_LLAMA2, conv_nosys, 3, false,
                  "[INST] Hello! [/INST] Hi. </s><s>[INST] How are you? [/INST]");
    expect_render(CHAT_LLAMA3, conv, 4, true,
                  "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHi.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
    expect_render(CHAT_LLAMA3, conv_nosys, 1, false,
                  "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>");
    expect_render(CHAT_LLAMA31, conv, 2, true,
                  "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                  "December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
    expect_render(CHAT_LLAMA31, conv_nosys, 1, false,
                  "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                  "December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>");
    expect_render(CHAT_MISTRAL, conv_nosys, 3, true,
                  "[INST] Hello!  [/INST] Hi.</s>[INST] How are you? [/INST]");
    expect_render(CHAT_MISTRAL, conv, 2, true, "[INST] You are terse.\n\nHello!  [/INST]");
    expect_render(CHAT_CHATML, conv, 4, true,
                  "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello! "
                  "<|im_end|>\n<|im_start|>assistant\n Hi.<|im_end|>\n<|im_start|>user\nHow are "
                  "you?<|im_end|>\n<|im_start|>assistant\n");
    expect_render(CHAT_CHATML, conv_nosys, 1, false, "<|im_start|>user\nHello! <|im_end|>\n");
    expect_render(CHAT_QWEN2, conv_nosys, 1, true,
                  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                  "<|im_start|>user\nHello! <|im_end|>\n<|im_start|>assistant\n");
    expect_render(CHAT_QWEN2, conv, 2, false,
                  "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello! "
                  "<|im_end|>\n");
    expect_render(CHAT_QWEN2, conv, 0, true, "<|im_start|>assistant\n");
    expect_render(CHAT_QWEN25, conv_nosys, 1, true,
                  "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                  "assistant.<|im_end|>\n<|im_start|>user\nHello! <|im_end|>\n"
                  "<|im_start|>assistant\n");
    expect_render(CHAT_PHI3, conv, 3, true,
                  "<|system|>\nYou are terse.<|end|>\n<|user|>\nHello! <|end|>\n"
                  "<|assistant|>\n Hi.<|end|>\n<|assistant|>\n");
    expect_render(CHAT_PHI3, conv_nosys, 1, false, "<|user|>\nHello! <|end|>\n<|endoftext|>");
    expect_render(CHAT_ZEPHYR, conv, 2, true,
                  "<|system|>\nYou are terse.</s>\n<|user|>\nHello! </s>\n<|assistant|>\n");

    /* conversations the Llama 2 / Mistral templates reject */
    const chat_msg bad[] = {{"user", "a"}, {"user", "b"}};
    const chat_msg bad2[] = {{"assistant", "a"}};
    char *out = NULL;
    cv_err e = {0};
    TU_CHECK(chat_apply(CHAT_LLAMA2, bad, 2, true, &out, &e) == CV_EINVAL && !out,
             "llama2 must reject user,user");
    TU_CHECK(strstr(e.msg, "message 1") != NULL, "error names the message: %s", e.msg);
    TU_CHECK(chat_apply(CHAT_MISTRAL, bad2, 1, true, &out, &e) == CV_EINVAL && !out,
             "mistral must reject a leading assistant");
    TU_CHECK(chat_apply(CHAT_UNKNOWN, conv, 1, true, &out, &e) == CV_EINVAL,
             "unknown family is an error");
}

static tokenizer *load(const char *rel, gguf_file **gf)
{
    cv_err e = {0};
    gguf_file *f = NULL;
    tokenizer *t = NULL;
    if (gguf_open(tu_model(rel), &f, &e) || tokenizer_load(f, &t, &e)) {
        TU_CHECK(0, "%s: %s", rel, e.msg);
        gguf_close(f);
        return NULL;
    }
    *gf = f;
    return t;
}

/* The rendered text, encoded as chat.h says, gives the token sequences the
 * models were trained on: BOS once, markers as single control tokens. */
static void check_encode(void)
{
    gguf_file *f;
    tokenizer *t = load("vocab/llama3.2-bpe-vocab.gguf", &f);
    if (t) {
        TU_CHECK(chat_template_from_gguf(f, NULL) == CHAT_LLAMA3, "llama-bpe default -> llama3");
        char *s;
        cv_err e = {0};
        chat_apply(CHAT_LLAMA3, conv_nosys, 1, true, &s, &e);
        int32_t *ids;
        int64_t n;
        tokenizer_encode_alloc(t, s, strlen(s), true, true, &ids, &n, &e);
        /* <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>
         * <|start_header_id|>assistant<|end_header_id|>\n\n */
        const int32_t want[] = {128000, 128006, 882, 128007, 271, 9906, 0, 128009,
                                128006, 78191, 128007, 271};
        bool ok = n == 12;
        for (int i = 0; ok && i < 12; i++) ok = ids[i] == want[i];
        TU_CHECK(ok, "llama3 chat encoding differs (n=%lld)", (long long)n);
        if (!ok) {
            for (int64_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n");
        }
        free(ids);
        free(s);
        tokenizer_free(t);
        gguf_close(f);
    }
    t = load("vocab/ggml-vocab-llama-spm.gguf", &f);
    if (t) {
        TU_CHECK(chat_template_from_gguf(f, NULL) == CHAT_LLAMA2, "SPM llama default -> llama2");
        char *s;
        cv_err e = {0};
        chat_apply(CHAT_LLAMA2, conv_nosys, 3, true, &s, &e);
        int32_t *ids;
        int64_t n;
        tokenizer_encode_alloc(t, s, strlen(s), true, true, &ids, &n, &e);
        int n_bos = 0, n_eos = 0;
        for (int64_t i = 0; i < n; i++) {
            n_bos += ids[i] == 1;
            n_eos += ids[i] == 2;
        }
        TU_CHECK(n > 0 && ids[0] == 1 && n_bos == 2 && n_eos == 1,
                 "llama2 history: BOS first, 2 BOS and 1 EOS in all (got %d/%d)", n_bos, n_eos);
        free(ids);
        free(s);
        tokenizer_free(t);
        gguf_close(f);
    }
}

int main(void)
{
    check_detect();
    check_render();
    check_encode();
    return tu_finish("test_chat");
}
