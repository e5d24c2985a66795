/* strbuf.h - a growable NUL-terminated byte buffer for building text
 * (chat prompts, token pieces, JSON). An allocation failure sets oom and
 * makes later appends no-ops, so callers check once at the end. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

typedef struct strbuf {
    char *p;      /* NUL-terminated once anything was appended; NULL before */
    size_t n;     /* bytes, without the NUL */
    size_t cap;
    bool oom;
} strbuf;

void strbuf_put(strbuf *b, const char *s, size_t n);
void strbuf_puts(strbuf *b, const char *s);
