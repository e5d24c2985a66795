/* test_gguf_corrupt.c - the corrupt-GGUF corpus (issue 2, acceptance 6).
 *
 * Builds a small valid GGUF by hand (test_gguf_build.h) whose last tensor
 * ends exactly at the end of the file, checks it and a few valid variations
 * load, then derives corrupt variants: truncation at every byte, bad magic
 * and versions, absurd counts, string lengths past the end, unknown value
 * and tensor types, bad n_dims and dims, element-count overflow, offsets past
 * the end, misaligned and overlapping tensors, bad alignments, duplicate
 * keys and names, nesting bombs; plus truncations of stories260K.gguf at
 * every section boundary. Each must fail with CV_EFORMAT and a message that
 * names a byte offset, and never crash: each variant is parsed from an
 * exact-size heap copy (so ASan sees any over-read) and again from a file.
 * Every variant is written to the directory given as argv[1] (the fuzzer's
 * seed corpus). Runs under ASan+UBSan via the `asan` label. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/gguf.h"
#include "test_gguf_build.h"
#include "testutil.h"

static const char *corpus_dir;
static int n_variants, n_written;
static bool verbose;

/* Where the fields of the base file are. */
typedef struct base {
    gb b;
    size_t version, n_tensors, n_kv;
    size_t arch_key, arch_type, arch_len;
    size_t align_val;
    size_t tok_elem_type, tok_n, tok_str1_len;
    size_t nested_n, nested_child_type, nested_child_n;
    size_t f32arr_n;
    size_t t_name[3], t_ndims[3], t_ne[3], t_type[3], t_off[3];
    size_t kv_end[16];
    int n_kv_ends;
    size_t infos_end, data;
} base;

static void build_base(base *s)
{
    memset(s, 0, sizeof *s);
    gb *b = &s->b;
    gb_put(b, "GGUF", 4);
    s->version = gb_u32(b, 3);
    s->n_tensors = gb_u64(b, 3);
    s->n_kv = gb_u64(b, 0);
    uint64_t n = 0;
    s->arch_key = gb_key(b, "general.architecture", GGUF_VT_STRING);
    s->arch_type = s->arch_key + 8 + strlen("general.architecture");
    s->arch_len = gb_str(b, "llama");
    s->kv_end[s->n_kv_ends++] = b->len, n++;
    gb_key(b, "general.alignment", GGUF_VT_UINT32);
    s->align_val = gb_u32(b, 32);
    s->kv_end[s->n_kv_ends++] = b->len, n++;
    gb_key(b, "llama.block_count", GGUF_VT_UINT32), gb_u32(b, 1);
    s->kv_end[s->n_kv_ends++] = b->len, n++;
    gb_key(b, "t.i16", GGUF_VT_INT16), gb_u16(b, (uint16_t)-3);
    s->kv_end[s->n_kv_ends++] = b->len, n++;
    gb_key(b, "t.f64", GGUF_VT_FLOAT64), gb_f64(b, 0.5);
    s->kv_end[s->n_kv_ends++] = b->len, n++;
    gb_key(b, "t.bool", GGUF_VT_BOOL), gb_u8(b, 1);
    s->kv_end[s->n_kv_ends++] = b->len, n++;
    gb_key(b, "tokenizer.ggml.tokens", GGUF_VT_ARRAY);
    s->tok_elem_type = gb_u32(b, GGUF_VT_STRING);
    s->tok_n = gb_u64(b, 4);
    gb_str(b, "<unk>");
    s->tok_str1_len = gb_str(b, "<s>");
    gb_str(b, "</s>"), gb_str(b, "\xe2\x96\x81hi");
    s->kv_end[s->n_kv_ends++] = b->len, n++;
    gb_key(b, "a.nested", GGUF_VT_ARRAY), gb_u32(b, GGUF_VT_ARRAY);
    s->nested_n = gb_u64(b, 2);
    s->nested_child_type = gb_u32(b, GGUF_VT_INT32);
    s->nested_child_n = gb_u64(b, 2);
    gb_u32(b, 1), gb_u32(b, 2);
    gb_u32(b, GGUF_VT_INT32), gb_u64(b, 1), gb_u32(b, 3);
    s->kv_end[s->n_kv_ends++] = b->len, n++;
    gb_key(b, "a.f32", GGUF_VT_ARRAY), gb_u32(b, GGUF_VT_FLOAT32);
    s->f32arr_n = gb_u64(b, 3);
    gb_f32(b, 1), gb_f32(b, 2), gb_f32(b, 3);
    s->kv_end[s->n_kv_ends++] = b->len, n++;
    gb_set_u64(b, s->n_kv, n);

    /* tensors: F32 [8,4] 128 B @0, Q8_0 [32,2] 68 B @128, F16 [16] 32 B @224 */
    static const char *names[3] = {"token_embd.weight", "blk.0.attn_q.weight", "output_norm.weight"};
    static const int types[3] = {DT_F32, DT_Q8_0, DT_F16};
    static const int nd[3] = {2, 2, 1};
    static const uint64_t ne[3][2] = {{8, 4}, {32, 2}, {16, 1}};
    static const uint64_t off[3] = {0, 128, 224};
    for (int i = 0; i < 3; i++) {
        s->t_name[i] = gb_str(b, names[i]);
        s->t_ndims[i] = gb_u32(b, (uint32_t)nd[i]);
        s->t_ne[i] = b->len;
        for (int d = 0; d < nd[i]; d++)
            gb_u64(b, ne[i][d]);
        s->t_type[i] = gb_u32(b, (uint32_t)types[i]);
        s->t_off[i] = gb_u64(b, off[i]);
    }
    s->infos_end = b->len;
    gb_pad(b, 32);
    s->data = b->len;
    uint64_t seed = 7;
    for (int j = 0; j < 256; j++)
        gb_u8(b, (uint8_t)tu_rand_u64(&seed));
}

static void write_corpus(const char *name, const uint8_t *p, size_t n)
{
    if (!corpus_dir)
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gguf", corpus_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        TU_CHECK(0, "cannot write %s: %s", path, strerror(errno));
        return;
    }
    n_written++;
}

/* Parse from an exact-size heap copy and from a file; expect `want`. */
static void expect(const char *name, const uint8_t *p, size_t n, cv_status want, bool save)
{
    n_variants++;
    uint8_t *copy = malloc(n ? n : 1);
    if (n)
        memcpy(copy, p, n);
    gguf_file *f = NULL;
    cv_err e = {0};
    cv_status s = gguf_open_memory(n ? copy : NULL, n, &f, &e);
    if (want == CV_OK) {
        TU_CHECK(s == CV_OK, "%s: valid file refused: %s", name, e.msg);
    } else {
        TU_CHECK(s == want, "%s: got %s, want %s (%s)", name, cv_status_name(s),
                 cv_status_name(want), s ? e.msg : "accepted");
        TU_CHECK(s == CV_OK || strstr(e.msg, "offset") != NULL,
                 "%s: message names no byte offset: %s", name, e.msg);
        TU_CHECK(f == NULL, "%s: file handle set on error", name);
        if (verbose && s)
            fprintf(stderr, "  %-28s %s\n", name, e.msg);
    }
    gguf_close(f);
    free(copy);
    if (save) {
        write_corpus(name, p, n);
        if (corpus_dir) {
            /* the same through gguf_open (mmap path) */
            char path[4096];
            snprintf(path, sizeof path, "%s/%s.gguf", corpus_dir, name);
            f = NULL;
            cv_status s2 = gguf_open(path, &f, &e);
            bool same = n < 24 ? s2 != CV_OK : s2 == s;
            TU_CHECK(same, "%s: gguf_open gives %s, open_memory gave %s (%s)", name,
                     cv_status_name(s2), cv_status_name(s), e.msg);
            gguf_close(f);
        }
    }
}

/* A patched copy of the base. */
typedef struct var {
    gb b;
} var;

static var v_new(const base *s)
{
    var v = {{0}};
    gb_put(&v.b, s->b.p, s->b.len);
    return v;
}

static void v_u32(var *v, size_t at, uint32_t x) { gb_set_u32(&v->b, at, x); }
static void v_u64(var *v, size_t at, uint64_t x) { gb_set_u64(&v->b, at, x); }

static void v_expect(var *v, const char *name)
{
    expect(name, v->b.p, v->b.len, CV_EFORMAT, true);
    free(v->b.p);
}

/* Header + one KV "deep" of `levels` nested arrays (innermost: empty u8). */
static gb build_deep(int levels)
{
    gb b = {0};
    gb_put(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    gb_u64(&b, 1);
    gb_key(&b, "deep", GGUF_VT_ARRAY);
    for (int i = 0; i < levels - 1; i++)
        gb_u32(&b, GGUF_VT_ARRAY), gb_u64(&b, 1);
    gb_u32(&b, GGUF_VT_UINT8), gb_u64(&b, 0);
    return b;
}

static void test_valid(const base *s)
{
    expect("valid_base", s->b.p, s->b.len, CV_OK, true);
    var v = v_new(s);
    v_u32(&v, s->version, 2);
    expect("valid_v2", v.b.p, v.b.len, CV_OK, true);
    free(v.b.p);
    /* vocab-only: 0 tensors, no padding, data offset past the end */
    v = v_new(s);
    v_u64(&v, s->n_tensors, 0);
    expect("valid_vocab_only", v.b.p, s->kv_end[s->n_kv_ends - 1], CV_OK, true);
    free(v.b.p);
    gb d = build_deep(GGUF_MAX_DIMS);
    expect("valid_nested4", d.p, d.len, CV_OK, true);
    free(d.p);
    /* the parsed base is what was built */
    gguf_file *f = NULL;
    cv_err e = {0};
    if (gguf_open_memory(s->b.p, s->b.len, &f, &e) == CV_OK) {
        TU_CHECK(gguf_n_kv(f) == 9 && gguf_n_tensors(f) == 3 && gguf_data_offset(f) == s->data,
                 "base: kv %lld tensors %lld data %zu", (long long)gguf_n_kv(f),
                 (long long)gguf_n_tensors(f), gguf_data_offset(f));
        const gguf_tensor_info *t = gguf_tensor(f, 2);
        TU_CHECK(t && t->offset + t->n_bytes + s->data == s->b.len, "base: last tensor ends at EOF");
        gguf_close(f);
    }
}

static void test_truncations(const base *s)
{
    char name[64];
    for (size_t n = 0; n < s->b.len; n++) {
        bool boundary = n == 4 || n == 8 || n == 16 || n == 24 || n == s->infos_end ||
                        n == s->data || n == s->data + 128 || n == s->data + 224;
        for (int k = 0; k < s->n_kv_ends; k++)
            boundary |= n == s->kv_end[k];
        for (int k = 0; k < 3; k++)
            boundary |= n == s->t_name[k] || n == s->t_type[k] || n == s->t_off[k];
        snprintf(name, sizeof name, "trunc_%05zu", n);
        expect(name, s->b.p, n, CV_EFORMAT, boundary || n % 16 == 0);
    }
}

static void test_header(const base *s)
{
    static const char *magics[] = {"GGUE", "FUGG", "\0\0\0\0", "gguf"};
    for (int k = 0; k < 4; k++) {
        var v = v_new(s);
        memcpy(v.b.p, magics[k], 4);
        char name[32];
        snprintf(name, sizeof name, "bad_magic_%d", k);
        v_expect(&v, name);
    }
    static const uint32_t versions[] = {0, 1, 4, 0xFFFFFFFFu, 0x03000000u, 0x02000000u};
    for (int k = 0; k < 6; k++) {
        var v = v_new(s);
        v_u32(&v, s->version, versions[k]);
        char name[32];
        snprintf(name, sizeof name, "bad_version_%08x", versions[k]);
        v_expect(&v, name);
    }
    static const uint64_t counts[] = {UINT64_MAX, 1ULL << 40, 1ULL << 20, 1000};
    for (int k = 0; k < 4; k++) {
        char name[32];
        var v = v_new(s);
        v_u64(&v, s->n_kv, counts[k]);
        snprintf(name, sizeof name, "absurd_n_kv_%d", k);
        v_expect(&v, name);
        v = v_new(s);
        v_u64(&v, s->n_tensors, counts[k]);
        snprintf(name, sizeof name, "absurd_n_tensors_%d", k);
        v_expect(&v, name);
    }
    var v = v_new(s);
    v_u64(&v, s->n_kv, 10); /* one more KV than there is: eats the tensor infos */
    v_expect(&v, "n_kv_plus_one");
    v = v_new(s);
    v_u64(&v, s->n_tensors, 4);
    v_expect(&v, "n_tensors_plus_one");
}

static void test_strings_and_types(const base *s)
{
    static const uint64_t lens[] = {UINT64_MAX, UINT64_MAX - 7, 1ULL << 62, 100000};
    for (int k = 0; k < 4; k++) {
        char name[40];
        var v = v_new(s);
        v_u64(&v, s->arch_key, lens[k]);
        snprintf(name, sizeof name, "key_len_%d", k);
        v_expect(&v, name);
        v = v_new(s);
        v_u64(&v, s->arch_len, lens[k]);
        snprintf(name, sizeof name, "str_len_%d", k);
        v_expect(&v, name);
        v = v_new(s);
        v_u64(&v, s->tok_str1_len, lens[k]);
        snprintf(name, sizeof name, "arr_str_len_%d", k);
        v_expect(&v, name);
        v = v_new(s);
        v_u64(&v, s->t_name[1], lens[k]);
        snprintf(name, sizeof name, "tensor_name_len_%d", k);
        v_expect(&v, name);
    }
    var v = v_new(s);
    v_u64(&v, s->arch_len, s->b.len - s->arch_len - 8 + 1); /* one byte past the end */
    v_expect(&v, "str_len_eof_plus_1");
    static const uint32_t vtypes[] = {13, 14, 0x7FFFFFFFu, 0xFFFFFFFFu};
    for (int k = 0; k < 4; k++) {
        char name[40];
        v = v_new(s);
        v_u32(&v, s->arch_type, vtypes[k]);
        snprintf(name, sizeof name, "bad_value_type_%d", k);
        v_expect(&v, name);
        v = v_new(s);
        v_u32(&v, s->tok_elem_type, vtypes[k]);
        snprintf(name, sizeof name, "bad_elem_type_%d", k);
        v_expect(&v, name);
        v = v_new(s);
        v_u32(&v, s->nested_child_type, vtypes[k]);
        snprintf(name, sizeof name, "bad_nested_type_%d", k);
        v_expect(&v, name);
    }
    /* a string array read as u64s, i32s read as strings */
    v = v_new(s);
    v_u32(&v, s->nested_child_type, GGUF_VT_STRING);
    v_u64(&v, s->nested_child_n, 3);
    v_expect(&v, "nested_retyped_string");
    static const uint64_t arr_n[] = {UINT64_MAX, 1ULL << 61, 1ULL << 32, 5000};
    for (int k = 0; k < 4; k++) {
        char name[40];
        v = v_new(s);
        v_u64(&v, s->tok_n, arr_n[k]);
        snprintf(name, sizeof name, "absurd_str_array_%d", k);
        v_expect(&v, name);
        v = v_new(s);
        v_u64(&v, s->nested_n, arr_n[k]);
        snprintf(name, sizeof name, "absurd_nested_array_%d", k);
        v_expect(&v, name);
        v = v_new(s);
        v_u64(&v, s->f32arr_n, arr_n[k]);
        snprintf(name, sizeof name, "absurd_f32_array_%d", k);
        v_expect(&v, name);
    }
    /* duplicate key; a key with an embedded NUL */
    {
        gb b = {0};
        gb_put(&b, "GGUF", 4), gb_u32(&b, 3), gb_u64(&b, 0), gb_u64(&b, 2);
        gb_key(&b, "general.name", GGUF_VT_STRING), gb_str(&b, "a");
        gb_key(&b, "general.name", GGUF_VT_UINT32), gb_u32(&b, 1);
        expect("duplicate_key", b.p, b.len, CV_EFORMAT, true);
        free(b.p);
        b = (gb){0};
        gb_put(&b, "GGUF", 4), gb_u32(&b, 3), gb_u64(&b, 0), gb_u64(&b, 1);
        gb_u64(&b, 5), gb_put(&b, "ab\0cd", 5), gb_u32(&b, GGUF_VT_UINT8), gb_u8(&b, 1);
        expect("key_with_nul", b.p, b.len, CV_EFORMAT, true);
        free(b.p);
    }
}

static void test_alignment(const base *s)
{
    static const uint32_t aligns[] = {0, 3, 48, 1u << 31, 0xFFFFFFFFu};
    for (int k = 0; k < 5; k++) {
        var v = v_new(s);
        v_u32(&v, s->align_val, aligns[k]);
        char name[32];
        snprintf(name, sizeof name, "bad_alignment_%u", aligns[k]);
        v_expect(&v, name);
    }
    /* alignment 64: tensor 2 at 224 is misaligned */
    var v = v_new(s);
    v_u32(&v, s->align_val, 64);
    v_expect(&v, "alignment_64_misaligned");
    /* alignment stored as an f32 */
    v = v_new(s);
    v_u32(&v, s->align_val - 4, GGUF_VT_FLOAT32);
    v_expect(&v, "alignment_f32");
}

static void test_tensors(const base *s)
{
    char name[48];
    static const uint32_t types[] = {4, 5, 31, 36, 40, 1000, 0x80000000u, 0xFFFFFFFFu};
    for (int k = 0; k < 8; k++) {
        var v = v_new(s);
        v_u32(&v, s->t_type[0], types[k]);
        snprintf(name, sizeof name, "bad_tensor_type_%u", types[k]);
        v_expect(&v, name);
    }
    static const uint32_t ndims[] = {0, 5, 0xFFFFFFFFu};
    for (int k = 0; k < 3; k++) {
        var v = v_new(s);
        v_u32(&v, s->t_ndims[1], ndims[k]);
        snprintf(name, sizeof name, "bad_n_dims_%u", ndims[k]);
        v_expect(&v, name);
    }
    static const uint64_t dims[] = {0, UINT64_MAX, 1ULL << 63, 1ULL << 62, 1ULL << 40, 9, 1000};
    for (int k = 0; k < 7; k++) {
        var v = v_new(s);
        v_u64(&v, s->t_ne[0] + 8, dims[k]); /* ne[1] of the F32 tensor */
        snprintf(name, sizeof name, "bad_ne1_%d", k);
        v_expect(&v, name);
        v = v_new(s);
        v_u64(&v, s->t_ne[0], dims[k]);
        snprintf(name, sizeof name, "bad_ne0_%d", k);
        v_expect(&v, name);
    }
    /* ne[0] not a multiple of the Q8_0 block */
    var v = v_new(s);
    v_u64(&v, s->t_ne[1], 33);
    v_expect(&v, "q8_0_ne0_33");
    v = v_new(s);
    v_u64(&v, s->t_ne[1], 16);
    v_expect(&v, "q8_0_ne0_16");
    /* element-count overflow: 2^32 * 2^32 */
    v = v_new(s);
    v_u64(&v, s->t_ne[0], 1ULL << 32);
    v_u64(&v, s->t_ne[0] + 8, 1ULL << 32);
    v_expect(&v, "nel_overflow");
    /* no element overflow but a byte-count overflow: 2^62 F32 elements = 2^64 bytes */
    v = v_new(s);
    v_u64(&v, s->t_ne[0], 1ULL << 31);
    v_u64(&v, s->t_ne[0] + 8, 1ULL << 31);
    v_expect(&v, "bytes_overflow");
    /* 2^61 F32 elements: 2^63 bytes, no overflow, past the end */
    v = v_new(s);
    v_u64(&v, s->t_ne[0], 1ULL << 31);
    v_u64(&v, s->t_ne[0] + 8, 1ULL << 30);
    v_expect(&v, "bytes_2p63");
    /* offsets */
    static const uint64_t offs[] = {256, 4096, 1ULL << 40, UINT64_MAX - 31, 96, 32};
    for (int k = 0; k < 6; k++) {
        v = v_new(s);
        v_u64(&v, s->t_off[2], offs[k]); /* 96 and 32 overlap tensor 0 */
        snprintf(name, sizeof name, "bad_offset_%d", k);
        v_expect(&v, name);
    }
    v = v_new(s);
    v_u64(&v, s->t_off[1], 129);
    v_expect(&v, "misaligned_offset_1");
    v = v_new(s);
    v_u64(&v, s->t_off[1], 144);
    v_expect(&v, "misaligned_offset_16");
    v = v_new(s);
    v_u64(&v, s->t_off[1], 0); /* same start as tensor 0 */
    v_expect(&v, "overlap_same_start");
    v = v_new(s);
    v_u64(&v, s->t_off[2], 160); /* inside tensor 1 [128, 196) */
    v_expect(&v, "overlap_inside");
    /* duplicate tensor name: tensor 2's name -> tensor 0's (same length) */
    {
        gb b = {0};
        gb_put(&b, "GGUF", 4), gb_u32(&b, 3), gb_u64(&b, 2), gb_u64(&b, 0);
        for (int i = 0; i < 2; i++) {
            gb_str(&b, "w"), gb_u32(&b, 1), gb_u64(&b, 8), gb_u32(&b, DT_F32);
            gb_u64(&b, (uint64_t)i * 32);
        }
        gb_pad(&b, 32);
        for (int j = 0; j < 64; j++)
            gb_u8(&b, 0);
        expect("duplicate_tensor_name", b.p, b.len, CV_EFORMAT, true);
        free(b.p);
    }
    /* tensors present but the data section starts past the end */
    v = v_new(s);
    expect("data_section_missing", v.b.p, s->infos_end, CV_EFORMAT, true);
    free(v.b.p);
}

static void test_nesting(void)
{
    static const int levels[] = {GGUF_MAX_DIMS * 3, 100, 100000};
    for (int k = 0; k < 3; k++) {
        gb d = build_deep(levels[k]);
        char name[32];
        snprintf(name, sizeof name, "deep_nesting_%d", levels[k]);
        expect(name, d.p, d.len, CV_EFORMAT, levels[k] < 1000);
        free(d.p);
    }
}

/* Truncations of a real converter-written file at every section boundary. */
static void test_model_truncations(void)
{
    const char *dir = getenv("CARAVAN_MODELS");
    char path[4096];
    snprintf(path, sizeof path, "%s/stories260K.gguf", dir ? dir : "../shared/models");
    gguf_file *f = NULL;
    cv_err e = {0};
    if (gguf_open(path, &f, &e) != CV_OK) {
        const char *ci = getenv("CI");
        bool in_ci = ci && (!strcmp(ci, "true") || !strcmp(ci, "1"));
        fprintf(stderr, "%s: %s: %s\n", in_ci ? "FAIL" : "SKIP (model part)", path, e.msg);
        if (in_ci)
            tu_failures++;
        return;
    }
    const uint8_t *p = gguf_base(f);
    size_t data_end = 0;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        size_t end = gguf_data_offset(f) + t->offset + t->n_bytes;
        data_end = end > data_end ? end : data_end;
    }
    size_t cuts[4096];
    int nc = 0;
    size_t kv_end = 24;
    cuts[nc++] = 0, cuts[nc++] = 4, cuts[nc++] = 8, cuts[nc++] = 16, cuts[nc++] = 23;
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const void *raw;
        size_t len;
        gguf_kv_raw(f, i, &raw, &len);
        size_t vo = (size_t)((const uint8_t *)raw - p);
        kv_end = vo + len;
        cuts[nc++] = vo - 4; /* type field */
        cuts[nc++] = vo;
        cuts[nc++] = vo + len / 2;
        cuts[nc++] = kv_end - 1;
    }
    size_t pos = kv_end;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_info *t = gguf_tensor(f, i);
        cuts[nc++] = pos;
        cuts[nc++] = pos + 8 + strlen(t->name); /* n_dims */
        pos += 8 + strlen(t->name) + 4 + 8 * (size_t)t->n_dims + 4 + 8;
        cuts[nc++] = pos - 8; /* offset field */
        size_t ds = gguf_data_offset(f) + t->offset;
        cuts[nc++] = ds;
        cuts[nc++] = ds + t->n_bytes - 1;
    }
    cuts[nc++] = pos;
    cuts[nc++] = gguf_data_offset(f) - 1;
    cuts[nc++] = data_end - 1;
    int tested = 0;
    for (int k = 0; k < nc; k++) {
        if (cuts[k] >= data_end)
            continue;
        char name[48];
        snprintf(name, sizeof name, "stories_trunc_%zu", cuts[k]);
        /* header-region cuts are kept as fuzz seeds (small); data cuts are not */
        expect(name, p, cuts[k], CV_EFORMAT, false);
        tested++;
    }
    TU_CHECK(tested > 200, "only %d stories truncations", tested);
    fprintf(stderr, "stories260K: %d truncations at section boundaries refused\n", tested);
    gguf_close(f);
}

int main(int argc, char **argv)
{
    verbose = getenv("GGUF_CORRUPT_VERBOSE") != NULL;
    if (argc > 1) {
        corpus_dir = argv[1];
        if (mkdir(corpus_dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "cannot create %s: %s\n", corpus_dir, strerror(errno));
            return 1;
        }
    }
    base s;
    build_base(&s);
    test_valid(&s);
    test_truncations(&s);
    test_header(&s);
    test_strings_and_types(&s);
    test_alignment(&s);
    test_tensors(&s);
    test_nesting();
    test_model_truncations();
    free(s.b.p);
    fprintf(stderr, "%d variants checked, %d corpus files written to %s\n", n_variants, n_written,
            corpus_dir ? corpus_dir : "(none)");
    return tu_finish("test_gguf_corrupt");
}
