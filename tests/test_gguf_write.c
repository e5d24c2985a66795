/* test_gguf_write.c - GGUF writer round trip: a source file with every value
 * type (all scalars, string, arrays of each type, string arrays, nested
 * arrays), built by hand (test_gguf_build.h), is read, its KVs copied by the
 * writer next to values set with each setter and tensors of several types,
 * and the written file is read back and compared field by field and byte by
 * byte. Also: a copy of stories260K.gguf through the writer reproduces the
 * converter's file byte for byte (same standard layout), and writer misuse
 * gives an error and leaves no file behind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/gguf.h"
#include "test_gguf_build.h"
#include "testutil.h"

static char tmpdir[1024];

static const char *tmp_path(const char *name)
{
    static char buf[4][1200];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 1200, "%s/%s", tmpdir, name);
    return p;
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Source with every value type; 0 tensors. */
static gb build_all_types(void)
{
    gb b = {0};
    gb_put(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    size_t nkv_at = gb_u64(&b, 0);
    uint64_t n = 0;
    gb_key(&b, "t.u8", GGUF_VT_UINT8), gb_u8(&b, 200), n++;
    gb_key(&b, "t.i8", GGUF_VT_INT8), gb_u8(&b, (uint8_t)-5), n++;
    gb_key(&b, "t.u16", GGUF_VT_UINT16), gb_u16(&b, 60000), n++;
    gb_key(&b, "t.i16", GGUF_VT_INT16), gb_u16(&b, (uint16_t)-30000), n++;
    gb_key(&b, "t.u32", GGUF_VT_UINT32), gb_u32(&b, 4000000000u), n++;
    gb_key(&b, "t.i32", GGUF_VT_INT32), gb_u32(&b, (uint32_t)-2000000000), n++;
    gb_key(&b, "t.f32", GGUF_VT_FLOAT32), gb_f32(&b, 0.25f), n++;
    gb_key(&b, "t.bool", GGUF_VT_BOOL), gb_u8(&b, 1), n++;
    gb_key(&b, "t.str", GGUF_VT_STRING), gb_str(&b, "hello, gguf"), n++;
    gb_key(&b, "t.u64", GGUF_VT_UINT64), gb_u64(&b, 0xFFFFFFFFFFFFFFF0ULL), n++;
    gb_key(&b, "t.i64", GGUF_VT_INT64), gb_u64(&b, (uint64_t)-7), n++;
    gb_key(&b, "t.f64", GGUF_VT_FLOAT64), gb_f64(&b, 1.5), n++;
    gb_key(&b, "t.empty", GGUF_VT_STRING), gb_str(&b, ""), n++;
    /* arrays of each fixed-size type, 3 elements each */
    for (int t = 0; t < GGUF_VT_COUNT; t++) {
        if (t == GGUF_VT_STRING || t == GGUF_VT_ARRAY)
            continue;
        char key[64];
        snprintf(key, sizeof key, "a.%s", gguf_vtype_name((gguf_vtype)t));
        gb_key(&b, key, GGUF_VT_ARRAY);
        gb_u32(&b, (uint32_t)t);
        gb_u64(&b, 3);
        for (int j = 0; j < 3; j++) {
            uint8_t v[8] = {(uint8_t)(j + 1), 0, 0, 0, 0, 0, 0, 0};
            size_t sz = t == 0 || t == 1 || t == 7 ? 1 : t == 2 || t == 3 ? 2 : t >= 10 ? 8 : 4;
            if (t == GGUF_VT_FLOAT32) {
                float f = (float)j + 0.5f;
                memcpy(v, &f, 4);
            } else if (t == GGUF_VT_FLOAT64) {
                double d = (double)j + 0.5;
                memcpy(v, &d, 8);
            } else if (t == GGUF_VT_BOOL) {
                v[0] = (uint8_t)(j & 1);
            }
            gb_put(&b, v, sz);
        }
        n++;
    }
    gb_key(&b, "a.strings", GGUF_VT_ARRAY), gb_u32(&b, GGUF_VT_STRING), gb_u64(&b, 4);
    gb_str(&b, "alpha"), gb_str(&b, ""), gb_str(&b, "\xe2\x96\x81the"), gb_str(&b, "z"), n++;
    gb_key(&b, "a.empty", GGUF_VT_ARRAY), gb_u32(&b, GGUF_VT_INT32), gb_u64(&b, 0), n++;
    /* [[1,2,3],[4]] of i32 */
    gb_key(&b, "a.nested", GGUF_VT_ARRAY), gb_u32(&b, GGUF_VT_ARRAY), gb_u64(&b, 2);
    gb_u32(&b, GGUF_VT_INT32), gb_u64(&b, 3), gb_u32(&b, 1), gb_u32(&b, 2), gb_u32(&b, 3);
    gb_u32(&b, GGUF_VT_INT32), gb_u64(&b, 1), gb_u32(&b, 4), n++;
    /* [["a","bc"],[]] of strings, then [[[7]]] three deep */
    gb_key(&b, "a.nested_str", GGUF_VT_ARRAY), gb_u32(&b, GGUF_VT_ARRAY), gb_u64(&b, 2);
    gb_u32(&b, GGUF_VT_STRING), gb_u64(&b, 2), gb_str(&b, "a"), gb_str(&b, "bc");
    gb_u32(&b, GGUF_VT_STRING), gb_u64(&b, 0), n++;
    gb_key(&b, "a.deep", GGUF_VT_ARRAY), gb_u32(&b, GGUF_VT_ARRAY), gb_u64(&b, 1);
    gb_u32(&b, GGUF_VT_ARRAY), gb_u64(&b, 1), gb_u32(&b, GGUF_VT_UINT8), gb_u64(&b, 1);
    gb_u8(&b, 7), n++;
    gb_set_u64(&b, nkv_at, n);
    return b;
}

static void check_source_values(const gguf_file *f)
{
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f32;
    bool bv;
    TU_CHECK(gguf_get_u32(f, "t.u8", &u32) && u32 == 200, "u8 -> u32");
    TU_CHECK(gguf_get_i32(f, "t.i8", &i32) && i32 == -5, "i8 -> i32");
    TU_CHECK(!gguf_get_u32(f, "t.i8", &u32), "negative i8 must not convert to u32");
    TU_CHECK(gguf_get_u32(f, "t.u16", &u32) && u32 == 60000, "u16");
    TU_CHECK(gguf_get_i32(f, "t.i16", &i32) && i32 == -30000, "i16");
    TU_CHECK(gguf_get_u32(f, "t.u32", &u32) && u32 == 4000000000u, "u32");
    TU_CHECK(!gguf_get_i32(f, "t.u32", &i32), "4e9 must not fit i32");
    TU_CHECK(gguf_get_i32(f, "t.i32", &i32) && i32 == -2000000000, "i32");
    TU_CHECK(gguf_get_f32(f, "t.f32", &f32) && f32 == 0.25f, "f32");
    TU_CHECK(gguf_get_bool(f, "t.bool", &bv) && bv, "bool");
    TU_CHECK(!gguf_get_u32(f, "t.bool", &u32), "bool is its own type");
    size_t len;
    const char *s = gguf_get_str(f, "t.str", &len);
    TU_CHECK(s && len == 11 && !memcmp(s, "hello, gguf", 11), "str");
    s = gguf_get_str(f, "t.empty", &len);
    TU_CHECK(s && len == 0, "empty str");
    TU_CHECK(gguf_get_u64(f, "t.u64", &u64) && u64 == 0xFFFFFFFFFFFFFFF0ULL, "u64");
    TU_CHECK(!gguf_get_u32(f, "t.u64", &u32), "huge u64 must not fit u32");
    TU_CHECK(gguf_get_i32(f, "t.i64", &i32) && i32 == -7, "i64 -> i32");
    TU_CHECK(!gguf_get_u64(f, "t.i64", &u64), "negative i64 must not convert to u64");
    TU_CHECK(gguf_get_f32(f, "t.f64", &f32) && f32 == 1.5f, "f64 -> f32");
    gguf_array a, b, c;
    TU_CHECK(gguf_get_arr(f, "a.u16", &a) && a.elem_type == GGUF_VT_UINT16 && a.n == 3 &&
                 ((const uint8_t *)a.data)[2] == 2,
             "u16 array");
    TU_CHECK(gguf_get_arr(f, "a.f64", &a) && a.n == 3, "f64 array");
    TU_CHECK(gguf_get_arr(f, "a.empty", &a) && a.n == 0, "empty array");
    TU_CHECK(!gguf_get_arr(f, "t.u8", &a), "scalar is not an array");
    if (gguf_get_arr(f, "a.strings", &a)) {
        const char *want[4] = {"alpha", "", "\xe2\x96\x81the", "z"};
        for (int j = 0; j < 4; j++) {
            s = gguf_arr_str(f, &a, (uint64_t)j, &len);
            TU_CHECK(s && len == strlen(want[j]) && !memcmp(s, want[j], len), "string %d", j);
        }
        TU_CHECK(a.data == NULL, "string array data is NULL");
    } else {
        TU_CHECK(0, "a.strings missing");
    }
    if (gguf_get_arr(f, "a.nested", &a) && a.elem_type == GGUF_VT_ARRAY && a.n == 2 &&
        gguf_arr_nested(f, &a, 0, &b) && gguf_arr_nested(f, &a, 1, &c)) {
        int32_t v0[3], v1;
        TU_CHECK(b.elem_type == GGUF_VT_INT32 && b.n == 3 && c.n == 1, "nested shapes");
        memcpy(v0, b.data, 12);
        memcpy(&v1, c.data, 4);
        TU_CHECK(v0[0] == 1 && v0[1] == 2 && v0[2] == 3 && v1 == 4, "nested values");
        TU_CHECK(!gguf_arr_nested(f, &a, 2, &b), "nested index bounds");
    } else {
        TU_CHECK(0, "a.nested");
    }
    if (gguf_get_arr(f, "a.nested_str", &a) && gguf_arr_nested(f, &a, 0, &b) &&
        gguf_arr_nested(f, &a, 1, &c)) {
        s = gguf_arr_str(f, &b, 1, &len);
        TU_CHECK(b.n == 2 && s && len == 2 && !memcmp(s, "bc", 2), "nested strings");
        TU_CHECK(c.n == 0 && c.elem_type == GGUF_VT_STRING, "empty nested string array");
    } else {
        TU_CHECK(0, "a.nested_str");
    }
    if (gguf_get_arr(f, "a.deep", &a) && gguf_arr_nested(f, &a, 0, &b) &&
        gguf_arr_nested(f, &b, 0, &c)) {
        TU_CHECK(c.elem_type == GGUF_VT_UINT8 && c.n == 1 && *(const uint8_t *)c.data == 7,
                 "3-deep nesting");
    } else {
        TU_CHECK(0, "a.deep");
    }
}

typedef struct tspec {
    const char *name;
    int type;
    int n_dims;
    int64_t ne[4];
} tspec;

static const tspec tspecs[] = {
    {"t.f32", DT_F32, 2, {7, 3, 1, 1}},
    {"t.f16", DT_F16, 3, {16, 2, 2, 1}},
    {"t.q8_0", DT_Q8_0, 2, {64, 3, 1, 1}},
    {"t.q4_k", DT_Q4_K, 2, {256, 2, 1, 1}},
    {"t.bf16", DT_BF16, 4, {4, 1, 1, 3}},
    {"blk.0.attn_q.weight", DT_Q6_K, 1, {512, 1, 1, 1}},
};
#define N_TSPEC (sizeof tspecs / sizeof tspecs[0])

static void test_round_trip(void)
{
    gb src = build_all_types();
    gguf_file *sf = NULL;
    cv_err e = {0};
    cv_status s = gguf_open_memory(src.p, src.len, &sf, &e);
    TU_CHECK(s == CV_OK, "source parse: %s", e.msg);
    if (s)
        return;
    check_source_values(sf);

    const char *path = tmp_path("roundtrip.gguf");
    gguf_writer *w = NULL;
    s = gguf_writer_open(path, &w, &e);
    TU_CHECK(s == CV_OK, "writer open: %s", e.msg);
    if (s) {
        gguf_close(sf);
        return;
    }
    gguf_writer_set_u32(w, "general.alignment", 64);
    for (int64_t i = 0; i < gguf_n_kv(sf); i++)
        gguf_writer_copy_kv(w, sf, i);
    gguf_writer_set_u32(w, "w.u32", 123456789u);
    gguf_writer_set_i32(w, "w.i32", -42);
    gguf_writer_set_u64(w, "w.u64", 1ULL << 40);
    gguf_writer_set_f32(w, "w.f32", -3.75f);
    gguf_writer_set_bool(w, "w.bool", false);
    gguf_writer_set_str(w, "w.str", "llama\0x", 7); /* length-delimited, not NUL */
    const int16_t i16s[5] = {-1, 2, -3, 4, -5};
    gguf_writer_set_arr(w, "w.arr_i16", GGUF_VT_INT16, i16s, 5);
    const char *strs[3] = {"one", "two", "three"};
    gguf_writer_set_arr_str(w, "w.arr_str", strs, NULL, 3);

    uint64_t seed = 12345;
    uint8_t *data[N_TSPEC];
    size_t nb[N_TSPEC];
    for (size_t k = 0; k < N_TSPEC; k++) {
        const tspec *t = &tspecs[k];
        gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne);
        nb[k] = dtype_row_size(t->type, t->ne[0]) * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]);
        data[k] = malloc(nb[k]);
        for (size_t j = 0; j < nb[k]; j++)
            data[k][j] = (uint8_t)tu_rand_u64(&seed);
    }
    s = gguf_writer_begin(w, &e);
    TU_CHECK(s == CV_OK, "begin: %s", e.msg);
    for (size_t k = 0; k < N_TSPEC && s == CV_OK; k++) {
        s = gguf_writer_write_tensor(w, data[k], nb[k], &e);
        TU_CHECK(s == CV_OK, "write tensor %zu: %s", k, e.msg);
    }
    s = gguf_writer_close(w, &e);
    TU_CHECK(s == CV_OK, "close: %s", e.msg);

    gguf_file *f = NULL;
    s = gguf_open(path, &f, &e);
    TU_CHECK(s == CV_OK, "read back: %s", e.msg);
    if (f) {
        TU_CHECK(gguf_version(f) == 3, "version");
        TU_CHECK(gguf_alignment(f) == 64, "alignment %zu", gguf_alignment(f));
        TU_CHECK(gguf_n_kv(f) == gguf_n_kv(sf) + 9, "n_kv %lld", (long long)gguf_n_kv(f));
        TU_CHECK(gguf_data_offset(f) % 64 == 0, "data offset %zu", gguf_data_offset(f));
        check_source_values(f);
        /* every copied KV is byte-identical */
        for (int64_t i = 0; i < gguf_n_kv(sf); i++) {
            const char *key = gguf_kv_key(sf, i);
            int64_t j = gguf_find_key(f, key);
            const void *ra, *rb;
            size_t la, lb;
            TU_CHECK(j >= 0 && gguf_kv_type(f, j) == gguf_kv_type(sf, i) &&
                         gguf_kv_raw(sf, i, &ra, &la) && gguf_kv_raw(f, j, &rb, &lb) && la == lb &&
                         !memcmp(ra, rb, la),
                     "copied KV '%s' differs", key);
        }
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        float f32;
        bool bv = true;
        size_t len;
        TU_CHECK(gguf_get_u32(f, "w.u32", &u32) && u32 == 123456789u, "w.u32");
        TU_CHECK(gguf_get_i32(f, "w.i32", &i32) && i32 == -42, "w.i32");
        TU_CHECK(gguf_get_u64(f, "w.u64", &u64) && u64 == 1ULL << 40, "w.u64");
        TU_CHECK(gguf_get_f32(f, "w.f32", &f32) && f32 == -3.75f, "w.f32");
        TU_CHECK(gguf_get_bool(f, "w.bool", &bv) && !bv, "w.bool");
        const char *str = gguf_get_str(f, "w.str", &len);
        TU_CHECK(str && len == 7 && !memcmp(str, "llama\0x", 7), "w.str");
        gguf_array a;
        TU_CHECK(gguf_get_arr(f, "w.arr_i16", &a) && a.elem_type == GGUF_VT_INT16 && a.n == 5 &&
                     !memcmp(a.data, i16s, sizeof i16s),
                 "w.arr_i16");
        if (gguf_get_arr(f, "w.arr_str", &a) && a.n == 3)
            for (int j = 0; j < 3; j++) {
                str = gguf_arr_str(f, &a, (uint64_t)j, &len);
                TU_CHECK(str && len == strlen(strs[j]) && !memcmp(str, strs[j], len), "arr_str %d",
                         j);
            }
        else
            TU_CHECK(0, "w.arr_str");
        TU_CHECK(gguf_n_tensors(f) == (int64_t)N_TSPEC, "n_tensors");
        size_t end = 0;
        for (size_t k = 0; k < N_TSPEC && gguf_n_tensors(f) == (int64_t)N_TSPEC; k++) {
            const gguf_tensor_info *t = gguf_tensor(f, (int64_t)k);
            const tspec *ts = &tspecs[k];
            TU_CHECK(!strcmp(t->name, ts->name) && t->type == ts->type && t->n_dims == ts->n_dims &&
                         !memcmp(t->ne, ts->ne, sizeof t->ne),
                     "tensor %zu info", k);
            TU_CHECK(t->n_bytes == nb[k] && !memcmp(t->data, data[k], nb[k]), "tensor %zu data",
                     k);
            TU_CHECK(t->offset % 64 == 0, "tensor %zu offset %llu", k,
                     (unsigned long long)t->offset);
            end = t->offset + t->n_bytes;
        }
        /* standard layout: the last tensor is padded too */
        TU_CHECK(gguf_file_size(f) == gguf_data_offset(f) + (end + 63) / 64 * 64,
                 "file size %zu, data offset %zu, data end %zu", gguf_file_size(f),
                 gguf_data_offset(f), end);
        gguf_close(f);
    }
    for (size_t k = 0; k < N_TSPEC; k++)
        free(data[k]);
    unlink(path);
    gguf_close(sf);
    free(src.p);
}

/* Copying every KV and tensor of a converter-written file reproduces it. */
static void test_copy_model(void)
{
    gguf_file *f = NULL;
    cv_err e = {0};
    const char *model = tu_model("stories260K.gguf");
    if (gguf_open(model, &f, &e) != CV_OK) {
        TU_CHECK(0, "open %s: %s", model, e.msg);
        return;
    }
    const char *path = tmp_path("copy.gguf");
    gguf_writer *w = NULL;
    cv_status s = gguf_writer_open(path, &w, &e);
    for (int64_t i = 0; s == CV_OK && i < gguf_n_kv(f); i++)
        gguf_writer_copy_kv(w, f, i);
    for (int64_t i = 0; s == CV_OK && i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne);
    }
    if (s == CV_OK)
        s = gguf_writer_begin(w, &e);
    for (int64_t i = 0; s == CV_OK && i < gguf_n_tensors(f); i++)
        s = gguf_writer_write_tensor(w, gguf_tensor(f, i)->data, gguf_tensor(f, i)->n_bytes, &e);
    if (w) {
        cv_status s2 = gguf_writer_close(w, &e);
        s = s ? s : s2;
    }
    TU_CHECK(s == CV_OK, "copy: %s", e.msg);
    gguf_file *g = NULL;
    if (s == CV_OK && gguf_open(path, &g, &e) == CV_OK) {
        size_t n = gguf_file_size(f);
        TU_CHECK(gguf_file_size(g) == n, "copy size %zu vs %zu", gguf_file_size(g), n);
        if (gguf_file_size(g) == n) {
            size_t k = 0;
            while (k < n && gguf_base(f)[k] == gguf_base(g)[k])
                k++;
            TU_CHECK(k == n, "copy differs from the original at byte %zu", k);
        }
        gguf_close(g);
    } else {
        TU_CHECK(0, "copy does not read back: %s", e.msg);
    }
    unlink(path);
    gguf_close(f);
}

/* Misuse is an error at begin/write/close, and no partial file remains. */
static void test_writer_errors(void)
{
    static const int64_t ne_ok[2] = {32, 2}, ne_bad[2] = {33, 2}, ne_zero[2] = {0, 2};
    for (int c = 0; c < 8; c++) {
        const char *path = tmp_path("bad.gguf");
        gguf_writer *w = NULL;
        cv_err e = {0};
        if (gguf_writer_open(path, &w, &e) != CV_OK) {
            TU_CHECK(0, "writer open: %s", e.msg);
            return;
        }
        gguf_writer_set_str(w, "general.architecture", "llama", 5);
        gguf_writer_add_tensor(w, "a", DT_Q8_0, 2, ne_ok);
        switch (c) {
        case 0: gguf_writer_set_u32(w, "general.architecture", 1); break; /* duplicate key */
        case 1: gguf_writer_add_tensor(w, "b", DT_Q8_0, 2, ne_bad); break;
        case 2: gguf_writer_add_tensor(w, "b", DT_F32, 2, ne_zero); break;
        case 3: gguf_writer_add_tensor(w, "a", DT_F32, 2, ne_ok); break; /* duplicate name */
        case 4: gguf_writer_set_u32(w, "general.alignment", 3); break;
        case 5: gguf_writer_add_tensor(w, "b", 4, 2, ne_ok); break;      /* unknown type */
        case 6: gguf_writer_add_tensor(w, "b", DT_F32, 5, ne_ok); break; /* n_dims */
        default: break;
        }
        uint8_t buf[68] = {0};
        cv_status s = gguf_writer_begin(w, &e);
        if (s == CV_OK)
            s = gguf_writer_write_tensor(w, buf, c == 7 ? 67 : 68, &e); /* 7: wrong size */
        cv_status s2 = gguf_writer_close(w, &e);
        TU_CHECK(s != CV_OK || s2 != CV_OK, "writer misuse case %d was accepted", c);
        TU_CHECK(!file_exists(path), "case %d left a partial file", c);
    }
    /* fewer tensors written than added */
    const char *path = tmp_path("short.gguf");
    gguf_writer *w = NULL;
    cv_err e = {0};
    if (gguf_writer_open(path, &w, &e) == CV_OK) {
        gguf_writer_add_tensor(w, "a", DT_Q8_0, 2, ne_ok);
        gguf_writer_add_tensor(w, "b", DT_Q8_0, 2, ne_ok);
        uint8_t buf[68] = {0};
        cv_status s = gguf_writer_begin(w, &e);
        if (s == CV_OK)
            s = gguf_writer_write_tensor(w, buf, 68, &e);
        TU_CHECK(s == CV_OK, "first tensor: %s", e.msg);
        TU_CHECK(gguf_writer_close(w, &e) != CV_OK && strstr(e.msg, "1 of 2"),
                 "missing tensor data not reported: %s", e.msg);
        TU_CHECK(!file_exists(path), "short file left behind");
    }
    /* KVs only (a vocab-style file), close without begin */
    path = tmp_path("kvonly.gguf");
    if (gguf_writer_open(path, &w, &e) == CV_OK) {
        gguf_writer_set_str(w, "tokenizer.ggml.model", "llama", 5);
        TU_CHECK(gguf_writer_close(w, &e) == CV_OK, "kv-only close: %s", e.msg);
        gguf_file *f = NULL;
        TU_CHECK(gguf_open(path, &f, &e) == CV_OK && gguf_n_tensors(f) == 0 && gguf_n_kv(f) == 1,
                 "kv-only read back: %s", e.msg);
        gguf_close(f);
        unlink(path);
    }
}

int main(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/cv_gguf_write.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_writer_errors();
    test_copy_model();
    rmdir(tmpdir);
    return tu_finish("test_gguf_write");
}
