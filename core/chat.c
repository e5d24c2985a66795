/* chat.c - chat template families: detection from Jinja markers and the
 * text each family's reference template renders (see chat.h). The
 * reference templates are the ones shipped in the models'
 * tokenizer_config.json (Meta Llama 2/3/3.1 chat, Mistral-7B-Instruct-v0.1,
 * Qwen2/Qwen2.5 instruct, Phi-3-mini instruct, TinyLlama-1.1B-Chat);
 * comments above each renderer quote what it reproduces. */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "strbuf.h"


/* Python str.strip() / Jinja trim for the ASCII whitespace set. */
static void put_trimmed(strbuf *b, const char *s)
{
    size_t n = strlen(s), i = 0;
    while (i < n && strchr(" \t\n\r\v\f", s[i])) i++;
    while (n > i && strchr(" \t\n\r\v\f", s[n - 1])) n--;
    strbuf_put(b, s + i, n - i);
}

static bool role_is(const chat_msg *m, const char *r) { return m->role && !strcmp(m->role, r); }

static bool contains(const char *hay, size_t len, const char *needle)
{
    size_t nl = strlen(needle);
    if (nl > len) return false;
    for (size_t i = 0; i + nl <= len; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, nl)) return true;
    return false;
}

chat_family chat_template_detect(const char *j, size_t len)
{
    if (!j) return CHAT_UNKNOWN;
    if (contains(j, len, "<|start_header_id|>"))
        return contains(j, len, "Cutting Knowledge Date") ? CHAT_LLAMA31 : CHAT_LLAMA3;
    if (contains(j, len, "<|im_start|>")) {
        if (contains(j, len, "You are Qwen, created by Alibaba Cloud")) return CHAT_QWEN25;
        if (contains(j, len, "You are a helpful assistant")) return CHAT_QWEN2;
        return CHAT_CHATML;
    }
    if (contains(j, len, "[INST]")) return contains(j, len, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
    if (contains(j, len, "<|user|>")) return contains(j, len, "<|end|>") ? CHAT_PHI3 : CHAT_ZEPHYR;
    return CHAT_UNKNOWN;
}

chat_family chat_template_from_gguf(const gguf_file *f, bool *from_template)
{
    size_t len = 0;
    const char *j = gguf_get_str(f, "tokenizer.chat_template", &len);
    chat_family fam = chat_template_detect(j, len);
    if (from_template) *from_template = fam != CHAT_UNKNOWN;
    if (fam != CHAT_UNKNOWN) return fam;
    size_t al = 0, ml = 0, pl = 0;
    const char *arch = gguf_get_str(f, "general.architecture", &al);
    const char *model = gguf_get_str(f, "tokenizer.ggml.model", &ml);
    const char *pre = gguf_get_str(f, "tokenizer.ggml.pre", &pl);
    if (arch && al == 5 && !memcmp(arch, "qwen2", 5)) fam = CHAT_CHATML;
    else if (model && ml == 5 && !memcmp(model, "llama", 5)) fam = CHAT_LLAMA2;
    else if (pre && pl == 9 && !memcmp(pre, "llama-bpe", 9)) fam = CHAT_LLAMA3;
    else fam = CHAT_CHATML;
    if (j)
        log_warn("chat template not recognised (no known markers in %zu bytes); using %s", len,
                 chat_family_name(fam));
    return fam;
}

static const char *family_names[CHAT_FAMILY_COUNT] = {
    [CHAT_UNKNOWN] = "unknown", [CHAT_LLAMA2] = "llama2", [CHAT_LLAMA3] = "llama3",
    [CHAT_LLAMA31] = "llama3.1", [CHAT_MISTRAL] = "mistral", [CHAT_CHATML] = "chatml",
    [CHAT_QWEN2] = "qwen2", [CHAT_QWEN25] = "qwen2.5", [CHAT_PHI3] = "phi3",
    [CHAT_ZEPHYR] = "zephyr",
};

const char *chat_family_name(chat_family fam)
{
    return fam >= 0 && fam < CHAT_FAMILY_COUNT ? family_names[fam] : "unknown";
}

chat_family chat_family_from_name(const char *name)
{
    for (int i = 1; i < CHAT_FAMILY_COUNT; i++)
        if (name && !strcmp(name, family_names[i])) return (chat_family)i;
    return CHAT_UNKNOWN;
}

/* Llama 2 chat (meta-llama/Llama-2-*-chat-hf):
 *   system = messages[0] if its role is system; then roles must alternate
 *   user/assistant; the first user content becomes
 *   '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content;
 *   user:      bos + '[INST] ' + content.strip() + ' [/INST]'
 *   assistant: ' ' + content.strip() + ' ' + eos
 * (the very first bos is left to the tokenizer). */
static cv_status render_llama2(strbuf *b, const chat_msg *m, size_t n, cv_err *e)
{
    size_t first = 0;
    const char *sys = NULL;
    if (n > 0 && role_is(&m[0], "system")) {
        sys = m[0].content;
        first = 1;
    }
    for (size_t i = first; i < n; i++) {
        bool want_user = (i - first) % 2 == 0;
        if (role_is(&m[i], "user") != want_user || (!want_user && !role_is(&m[i], "assistant")))
            return cv_err_set(e, CV_EINVAL, "chat (llama2): message %zu has role '%s'; after an "
                              "optional system message roles must alternate user/assistant", i,
                              m[i].role ? m[i].role : "(null)");
        strbuf content = {0};
        if (i == first && sys) {
            strbuf_puts(&content, "<<SYS>>\n");
            strbuf_puts(&content, sys);
            strbuf_puts(&content, "\n<</SYS>>\n\n");
        }
        strbuf_puts(&content, m[i].content ? m[i].content : "");
        if (content.oom) {
            free(content.p);
            return cv_err_set(e, CV_ENOMEM, "chat: out of memory");
        }
        if (want_user) {
            if (i != first) strbuf_puts(b, "<s>");
            strbuf_puts(b, "[INST] ");
            put_trimmed(b, content.p);
            strbuf_puts(b, " [/INST]");
        } else {
            strbuf_puts(b, " ");
            put_trimmed(b, content.p);
            strbuf_puts(b, " </s>");
        }
        free(content.p);
    }
    return CV_OK;
}

/* Mistral-7B-Instruct-v0.1:
 *   roles alternate user/assistant (we also accept a leading system message,
 *   prepended to the first user content followed by "\n\n");
 *   user: '[INST] ' + content + ' [/INST]'   assistant: content + eos */
static cv_status render_mistral(strbuf *b, const chat_msg *m, size_t n, cv_err *e)
{
    size_t first = 0;
    const char *sys = NULL;
    if (n > 0 && role_is(&m[0], "system")) {
        sys = m[0].content;
        first = 1;
    }
    for (size_t i = first; i < n; i++) {
        bool want_user = (i - first) % 2 == 0;
        if (role_is(&m[i], "user") != want_user || (!want_user && !role_is(&m[i], "assistant")))
            return cv_err_set(e, CV_EINVAL, "chat (mistral): message %zu has role '%s'; after an "
                              "optional system message roles must alternate user/assistant", i,
                              m[i].role ? m[i].role : "(null)");
        const char *c = m[i].content ? m[i].content : "";
        if (want_user) {
            strbuf_puts(b, "[INST] ");
            if (i == first && sys) {
                strbuf_puts(b, sys);
                strbuf_puts(b, "\n\n");
            }
            strbuf_puts(b, c);
            strbuf_puts(b, " [/INST]");
        } else {
            strbuf_puts(b, c);
            strbuf_puts(b, "</s>");
        }
    }
    return CV_OK;
}

/* Llama 3 instruct: per message
 *   '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content|trim + '<|eot_id|>'
 * (bos before the first), then '<|start_header_id|>assistant<|end_header_id|>\n\n'.
 * Llama 3.1/3.2 (no tools): first a system block
 *   '<|start_header_id|>system<|end_header_id|>\n\n' + 'Cutting Knowledge Date: December 2023\n'
 *   + 'Today Date: 26 Jul 2024\n\n' + system content|trim + '<|eot_id|>'
 * made from messages[0] when it is a system message (else empty), then the rest as above. */
static void render_llama3(strbuf *b, const chat_msg *m, size_t n, bool gen, bool v31)
{
    size_t first = 0;
    if (v31) {
        strbuf_puts(b, "<|start_header_id|>system<|end_header_id|>\n\n");
        strbuf_puts(b, "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n");
        if (n > 0 && role_is(&m[0], "system")) {
            put_trimmed(b, m[0].content ? m[0].content : "");
            first = 1;
        }
        strbuf_puts(b, "<|eot_id|>");
    }
    for (size_t i = first; i < n; i++) {
        strbuf_puts(b, "<|start_header_id|>");
        strbuf_puts(b, m[i].role ? m[i].role : "");
        strbuf_puts(b, "<|end_header_id|>\n\n");
        put_trimmed(b, m[i].content ? m[i].content : "");
        strbuf_puts(b, "<|eot_id|>");
    }
    if (gen) strbuf_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* ChatML: '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n' per message,
 * then '<|im_start|>assistant\n'. Qwen2 inserts its default system message
 * before the first message when that is not a system message (inside the
 * loop: nothing for an empty conversation); Qwen2.5 does it outside the
 * loop (always). */
static void render_chatml(strbuf *b, const chat_msg *m, size_t n, bool gen, chat_family fam)
{
    bool has_sys = n > 0 && role_is(&m[0], "system");
    if (!has_sys && ((fam == CHAT_QWEN2 && n > 0) || fam == CHAT_QWEN25)) {
        strbuf_puts(b, "<|im_start|>system\n");
        strbuf_puts(b, fam == CHAT_QWEN2 ? "You are a helpful assistant."
                                 : "You are Qwen, created by Alibaba Cloud. You are a helpful "
                                   "assistant.");
        strbuf_puts(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        strbuf_puts(b, "<|im_start|>");
        strbuf_puts(b, m[i].role ? m[i].role : "");
        strbuf_puts(b, "\n");
        strbuf_puts(b, m[i].content ? m[i].content : "");
        strbuf_puts(b, "<|im_end|>\n");
    }
    if (gen) strbuf_puts(b, "<|im_start|>assistant\n");
}

/* Phi-3 (system/user/assistant; other roles are skipped by the template):
 *   '<|' + role + '|>\n' + content + '<|end|>\n' per message, then
 *   '<|assistant|>\n' with a generation prompt, else eos '<|endoftext|>'.
 * Zephyr / TinyLlama chat:
 *   '<|' + role + '|>\n' + content + '</s>' + '\n' per message, then '<|assistant|>\n'. */
static void render_tagged(strbuf *b, const chat_msg *m, size_t n, bool gen, bool phi3)
{
    for (size_t i = 0; i < n; i++) {
        if (!role_is(&m[i], "system") && !role_is(&m[i], "user") && !role_is(&m[i], "assistant"))
            continue;
        strbuf_puts(b, "<|");
        strbuf_puts(b, m[i].role);
        strbuf_puts(b, "|>\n");
        strbuf_puts(b, m[i].content ? m[i].content : "");
        strbuf_puts(b, phi3 ? "<|end|>\n" : "</s>\n");
    }
    if (gen) strbuf_puts(b, "<|assistant|>\n");
    else if (phi3) strbuf_puts(b, "<|endoftext|>");
}

cv_status chat_apply(chat_family fam, const chat_msg *msgs, size_t n, bool add_generation_prompt,
                     char **out, cv_err *e)
{
    *out = NULL;
    if (n > 0 && !msgs) return cv_err_set(e, CV_EINVAL, "chat: NULL messages, n = %zu", n);
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role)
            return cv_err_set(e, CV_EINVAL, "chat: message %zu has no role", i);
    strbuf b = {0};
    strbuf_puts(&b, "");
    cv_status st = CV_OK;
    switch (fam) {
    case CHAT_LLAMA2: st = render_llama2(&b, msgs, n, e); break;
    case CHAT_MISTRAL: st = render_mistral(&b, msgs, n, e); break;
    case CHAT_LLAMA3: render_llama3(&b, msgs, n, add_generation_prompt, false); break;
    case CHAT_LLAMA31: render_llama3(&b, msgs, n, add_generation_prompt, true); break;
    case CHAT_CHATML:
    case CHAT_QWEN2:
    case CHAT_QWEN25: render_chatml(&b, msgs, n, add_generation_prompt, fam); break;
    case CHAT_PHI3: render_tagged(&b, msgs, n, add_generation_prompt, true); break;
    case CHAT_ZEPHYR: render_tagged(&b, msgs, n, add_generation_prompt, false); break;
    default:
        st = cv_err_set(e, CV_EINVAL, "chat: unknown template family %d", (int)fam);
        break;
    }
    if (st == CV_OK && b.oom) st = cv_err_set(e, CV_ENOMEM, "chat: out of memory");
    if (st != CV_OK) {
        free(b.p);
        return st;
    }
    *out = b.p;
    return CV_OK;
}
