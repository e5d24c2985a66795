/* fuzz_gguf.c - libFuzzer target for the GGUF reader: parse the input with
 * gguf_open_memory and, when it is accepted, walk every accessor (each KV
 * through every getter and the formatter, every array element including
 * nested arrays and strings, every tensor and its data) reading every byte
 * the reader hands out, so ASan sees any pointer that escapes the buffer.
 * Invariants the reader promises are checked and trap when broken.
 * Build: tests/fuzz/run.sh (clang -fsanitize=fuzzer,address,undefined). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/dtype.h"
#include "core/gguf.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static volatile uint8_t sink;

/* Reads every byte of [p, p+n) and checks it lies inside the input. */
static void touch(const uint8_t *lo, size_t size, const void *p, size_t n)
{
    const uint8_t *q = p;
    CHECK(q >= lo && n <= size && (size_t)(q - lo) <= size - n);
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc ^= q[i];
    sink ^= acc;
}

static size_t elem_size(gguf_vtype t)
{
    switch (t) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32: return 4;
    case GGUF_VT_UINT64: case GGUF_VT_INT64: case GGUF_VT_FLOAT64: return 8;
    default: return 0;
    }
}

static void walk_array(const gguf_file *f, const uint8_t *lo, size_t size, const gguf_array *a,
                       int depth)
{
    CHECK(depth < 64);
    CHECK(a->elem_type < GGUF_VT_COUNT);
    size_t esz = elem_size(a->elem_type);
    if (esz) {
        CHECK(a->n <= size / esz);
        touch(lo, size, a->data, (size_t)a->n * esz);
        CHECK(gguf_arr_str(f, a, 0, NULL) == NULL);
        return;
    }
    for (uint64_t j = 0; j < a->n; j++) {
        if (a->elem_type == GGUF_VT_STRING) {
            size_t len = 0;
            const char *s = gguf_arr_str(f, a, j, &len);
            CHECK(s != NULL);
            touch(lo, size, s, len);
        } else {
            gguf_array sub;
            CHECK(gguf_arr_nested(f, a, j, &sub));
            walk_array(f, lo, size, &sub, depth + 1);
        }
    }
    size_t len;
    gguf_array sub;
    CHECK(gguf_arr_str(f, a, a->n, &len) == NULL);
    CHECK(!gguf_arr_nested(f, a, a->n, &sub));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    cv_err e = {0};
    if (gguf_open_memory(data, size, &f, &e) != CV_OK) {
        CHECK(f == NULL && e.code != CV_OK && e.msg[0]);
        CHECK(memchr(e.msg, 0, sizeof e.msg) != NULL);
        return 0;
    }
    CHECK(gguf_version(f) == 2 || gguf_version(f) == 3);
    size_t al = gguf_alignment(f);
    CHECK(al && !(al & (al - 1)));
    CHECK(gguf_file_size(f) == size && gguf_base(f) == data);
    char buf[512];
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const char *key = gguf_kv_key(f, i);
        CHECK(key != NULL);
        CHECK(gguf_find_key(f, key) == i);
        gguf_vtype t = gguf_kv_type(f, i);
        CHECK(t < GGUF_VT_COUNT);
        const void *raw;
        size_t rlen;
        CHECK(gguf_kv_raw(f, i, &raw, &rlen));
        touch(data, size, raw, rlen);
        gguf_kv_format(f, i, buf, sizeof buf);
        CHECK(memchr(buf, 0, sizeof buf) != NULL);
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        float f32;
        bool b;
        size_t len;
        (void)gguf_get_u32(f, key, &u32);
        (void)gguf_get_i32(f, key, &i32);
        (void)gguf_get_u64(f, key, &u64);
        (void)gguf_get_f32(f, key, &f32);
        (void)gguf_get_bool(f, key, &b);
        const char *s = gguf_get_str(f, key, &len);
        CHECK((s != NULL) == (t == GGUF_VT_STRING));
        if (s)
            touch(data, size, s, len);
        gguf_array a;
        bool is_arr = gguf_get_arr(f, key, &a);
        CHECK(is_arr == (t == GGUF_VT_ARRAY));
        if (is_arr) {
            CHECK(a.kv_index == i);
            walk_array(f, data, size, &a, 0);
        }
    }
    CHECK(gguf_kv_key(f, gguf_n_kv(f)) == NULL && gguf_kv_key(f, -1) == NULL);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        CHECK(t && t->name && gguf_tensor_find(f, t->name) == t);
        CHECK(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
        CHECK(dtype_get(t->type)->known);
        int64_t nel = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) {
            CHECK(t->ne[d] >= 1);
            CHECK(!__builtin_mul_overflow(nel, t->ne[d], &nel));
        }
        CHECK(nel == t->n_elements);
        CHECK(t->n_bytes == dtype_row_size(t->type, t->ne[0]) * (size_t)(nel / t->ne[0]));
        CHECK(t->offset % al == 0);
        touch(data, size, t->data, t->n_bytes);
    }
    gguf_close(f);
    return 0;
}
