/* test_gguf_build.h - a tiny hand-rolled GGUF serializer for the tests,
 * independent of core/gguf_write.c: it writes raw fields one by one and
 * remembers where each landed, so the corrupt-corpus test can patch a chosen
 * field (n_kv, a string length, a tensor's ne or offset...) in place. */
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/gguf.h"

typedef struct gb {
    uint8_t *p;
    size_t len, cap;
} gb;

static inline void gb_put(gb *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}
static inline size_t gb_u8(gb *b, uint8_t v) { size_t at = b->len; gb_put(b, &v, 1); return at; }
static inline size_t gb_u16(gb *b, uint16_t v) { size_t at = b->len; gb_put(b, &v, 2); return at; }
static inline size_t gb_u32(gb *b, uint32_t v) { size_t at = b->len; gb_put(b, &v, 4); return at; }
static inline size_t gb_u64(gb *b, uint64_t v) { size_t at = b->len; gb_put(b, &v, 8); return at; }
static inline size_t gb_f32(gb *b, float v) { size_t at = b->len; gb_put(b, &v, 4); return at; }
static inline size_t gb_f64(gb *b, double v) { size_t at = b->len; gb_put(b, &v, 8); return at; }
/* gguf_str; returns the offset of its length field */
static inline size_t gb_str(gb *b, const char *s)
{
    size_t at = gb_u64(b, strlen(s));
    gb_put(b, s, strlen(s));
    return at;
}
/* key + type; returns the offset of the key's length field */
static inline size_t gb_key(gb *b, const char *key, gguf_vtype t)
{
    size_t at = gb_str(b, key);
    gb_u32(b, (uint32_t)t);
    return at;
}
static inline void gb_pad(gb *b, size_t align)
{
    while (b->len % align)
        gb_u8(b, 0);
}
static inline void gb_set_u32(gb *b, size_t at, uint32_t v) { memcpy(b->p + at, &v, 4); }
static inline void gb_set_u64(gb *b, size_t at, uint64_t v) { memcpy(b->p + at, &v, 8); }
static inline uint64_t gb_get_u64(const gb *b, size_t at)
{
    uint64_t v;
    memcpy(&v, b->p + at, 8);
    return v;
}
