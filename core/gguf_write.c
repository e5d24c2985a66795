/* gguf_write.c - streaming GGUF v3 writer in the standard layout that
 * llama.cpp and gguf-py read: header, KVs, tensor infos (offsets relative to
 * the data section, each aligned), zero padding to general.alignment, then
 * each tensor's bytes followed by zero padding to the alignment.
 *
 * KVs are serialized into memory as they are set (they are small next to the
 * weights); tensor data goes straight to the file in the order the infos were
 * added, so multi-GB files never sit in memory. Setters are void: the first
 * error sticks and is reported by begin/write/close. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtype.h"
#include "gguf.h"

#define GGUF_WRITER_MAX_NAME 63 /* llama.cpp's GGML_MAX_NAME is 64 incl. the NUL */

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf;

typedef struct wtensor {
    char *name;
    int type;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    size_t n_bytes;
    uint64_t offset; /* in the data section */
} wtensor;

struct gguf_writer {
    char *path;
    FILE *fp;
    cv_err err; /* first error, sticky */
    size_t alignment;

    wbuf kv; /* serialized KVs */
    int64_t n_kv;
    char **keys;
    size_t cap_keys;

    wtensor *tensors;
    int64_t n_tensors;
    size_t cap_tensors;

    bool begun;
    int64_t next_tensor; /* next tensor whose data is expected */
    uint64_t data_size;  /* data section size so far (computed at begin) */
    char *iobuf;
};

static bool w_ok(const gguf_writer *w) { return w && w->err.code == CV_OK; }

static void w_fail(gguf_writer *w, cv_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void w_fail(gguf_writer *w, cv_status code, const char *fmt, ...)
{
    if (!w || w->err.code != CV_OK)
        return;
    va_list ap;
    va_start(ap, fmt);
    w->err.code = code;
    vsnprintf(w->err.msg, sizeof w->err.msg, fmt, ap);
    va_end(ap);
}

static void wb_put(gguf_writer *w, wbuf *b, const void *data, size_t n)
{
    if (!w_ok(w))
        return;
    if (n > SIZE_MAX - b->len) {
        w_fail(w, CV_ENOMEM, "gguf writer: metadata too large");
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap = cap > SIZE_MAX / 2 ? b->len + n : cap * 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            w_fail(w, CV_ENOMEM, "gguf writer: out of memory for %zu bytes of metadata", cap);
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void wb_u32(gguf_writer *w, wbuf *b, uint32_t v) { wb_put(w, b, &v, 4); }
static void wb_u64(gguf_writer *w, wbuf *b, uint64_t v) { wb_put(w, b, &v, 8); }
static void wb_str(gguf_writer *w, wbuf *b, const char *s, size_t n)
{
    wb_u64(w, b, n);
    wb_put(w, b, s, n);
}

cv_status gguf_writer_open(const char *path, gguf_writer **out, cv_err *e)
{
    *out = NULL;
    gguf_writer *w = calloc(1, sizeof *w);
    if (!w)
        return cv_err_set(e, CV_ENOMEM, "out of memory");
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    w->path = strdup(path);
    w->fp = fopen(path, "wb");
    if (!w->path || !w->fp) {
        cv_status s = cv_err_set(e, w->path ? CV_EIO : CV_ENOMEM, "%s: cannot create: %s", path,
                                 strerror(errno));
        if (w->fp)
            fclose(w->fp);
        free(w->path);
        free(w);
        return s;
    }
    w->iobuf = malloc(1 << 20);
    if (w->iobuf)
        setvbuf(w->fp, w->iobuf, _IOFBF, 1 << 20);
    *out = w;
    return CV_OK;
}

/* Starts a KV: checks the key is new, writes key and type. */
static bool kv_begin(gguf_writer *w, const char *key, gguf_vtype type)
{
    if (!w_ok(w))
        return false;
    if (w->begun) {
        w_fail(w, CV_EINVAL, "gguf writer: KV '%s' set after gguf_writer_begin", key);
        return false;
    }
    for (int64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) {
            w_fail(w, CV_EINVAL, "gguf writer: key '%s' set twice", key);
            return false;
        }
    if ((size_t)w->n_kv == w->cap_keys) {
        size_t cap = w->cap_keys ? w->cap_keys * 2 : 32;
        char **p = realloc(w->keys, cap * sizeof *p);
        if (!p) {
            w_fail(w, CV_ENOMEM, "gguf writer: out of memory");
            return false;
        }
        w->keys = p;
        w->cap_keys = cap;
    }
    char *k = strdup(key);
    if (!k) {
        w_fail(w, CV_ENOMEM, "gguf writer: out of memory");
        return false;
    }
    w->keys[w->n_kv++] = k;
    wb_str(w, &w->kv, key, strlen(key));
    wb_u32(w, &w->kv, (uint32_t)type);
    return w_ok(w);
}

void gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v)
{
    if (!strcmp(key, "general.alignment")) {
        if (v == 0 || (v & (v - 1)) || v > (1u << 30)) {
            w_fail(w, CV_EINVAL, "gguf writer: general.alignment %" PRIu32
                                 " is not a power of two <= 2^30", v);
            return;
        }
        if (w_ok(w) && !w->begun)
            w->alignment = v;
    }
    if (kv_begin(w, key, GGUF_VT_UINT32))
        wb_u32(w, &w->kv, v);
}

void gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v)
{
    if (kv_begin(w, key, GGUF_VT_INT32))
        wb_put(w, &w->kv, &v, 4);
}

void gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v)
{
    if (kv_begin(w, key, GGUF_VT_UINT64))
        wb_u64(w, &w->kv, v);
}

void gguf_writer_set_f32(gguf_writer *w, const char *key, float v)
{
    if (kv_begin(w, key, GGUF_VT_FLOAT32))
        wb_put(w, &w->kv, &v, 4);
}

void gguf_writer_set_bool(gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    if (kv_begin(w, key, GGUF_VT_BOOL))
        wb_put(w, &w->kv, &b, 1);
}

void gguf_writer_set_str(gguf_writer *w, const char *key, const char *s, size_t len)
{
    if (kv_begin(w, key, GGUF_VT_STRING))
        wb_str(w, &w->kv, s, len);
}

static size_t fixed_size(gguf_vtype t)
{
    switch (t) {
    case GGUF_VT_UINT8:
    case GGUF_VT_INT8:
    case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16:
    case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32:
    case GGUF_VT_INT32:
    case GGUF_VT_FLOAT32: return 4;
    case GGUF_VT_UINT64:
    case GGUF_VT_INT64:
    case GGUF_VT_FLOAT64: return 8;
    default: return 0;
    }
}

void gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype elem_type, const void *data,
                         uint64_t n)
{
    size_t esz = fixed_size(elem_type);
    if (!esz) {
        w_fail(w, CV_EINVAL, "gguf writer: '%s': gguf_writer_set_arr takes fixed-size elements, "
                             "not %s", key, gguf_vtype_name(elem_type));
        return;
    }
    if (n > SIZE_MAX / esz) {
        w_fail(w, CV_EINVAL, "gguf writer: '%s': %" PRIu64 " elements is too many", key, n);
        return;
    }
    if (kv_begin(w, key, GGUF_VT_ARRAY)) {
        wb_u32(w, &w->kv, (uint32_t)elem_type);
        wb_u64(w, &w->kv, n);
        wb_put(w, &w->kv, data, (size_t)n * esz);
    }
}

void gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                             const size_t *lens, uint64_t n)
{
    if (kv_begin(w, key, GGUF_VT_ARRAY)) {
        wb_u32(w, &w->kv, GGUF_VT_STRING);
        wb_u64(w, &w->kv, n);
        for (uint64_t j = 0; j < n && w_ok(w); j++)
            wb_str(w, &w->kv, strs[j], lens ? lens[j] : strlen(strs[j]));
    }
}

void gguf_writer_copy_kv(gguf_writer *w, const gguf_file *src, int64_t i)
{
    const void *raw;
    size_t len;
    const char *key = gguf_kv_key(src, i);
    if (!key || !gguf_kv_raw(src, i, &raw, &len)) {
        w_fail(w, CV_EINVAL, "gguf writer: copy of KV %" PRId64 ": no such KV in the source", i);
        return;
    }
    gguf_vtype t = gguf_kv_type(src, i);
    if (!strcmp(key, "general.alignment")) {
        uint32_t a;
        if (!gguf_get_u32(src, key, &a) || a == 0 || (a & (a - 1)) || a > (1u << 30)) {
            w_fail(w, CV_EINVAL, "gguf writer: copied general.alignment is not a power of two");
            return;
        }
        if (w_ok(w) && !w->begun)
            w->alignment = a;
    }
    if (kv_begin(w, key, t))
        wb_put(w, &w->kv, raw, len);
}

void gguf_writer_add_tensor(gguf_writer *w, const char *name, int type, int n_dims,
                            const int64_t *ne)
{
    if (!w_ok(w))
        return;
    if (w->begun) {
        w_fail(w, CV_EINVAL, "gguf writer: tensor '%s' added after gguf_writer_begin", name);
        return;
    }
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > GGUF_WRITER_MAX_NAME) {
        w_fail(w, CV_EINVAL, "gguf writer: tensor name '%s' must be 1..%d bytes", name,
               GGUF_WRITER_MAX_NAME);
        return;
    }
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) {
        w_fail(w, CV_EINVAL, "gguf writer: tensor '%s': n_dims %d, expected 1..%d", name, n_dims,
               GGUF_MAX_DIMS);
        return;
    }
    const dtype_traits *tr = dtype_get(type);
    if (!tr->known) {
        w_fail(w, CV_EINVAL, "gguf writer: tensor '%s': unknown type %d", name, type);
        return;
    }
    int64_t nel = 1;
    for (int d = 0; d < n_dims; d++)
        if (ne[d] <= 0 || __builtin_mul_overflow(nel, ne[d], &nel)) {
            w_fail(w, CV_EINVAL, "gguf writer: tensor '%s': bad ne[%d] = %" PRId64, name, d,
                   ne[d]);
            return;
        }
    if (ne[0] % tr->block_size) {
        w_fail(w, CV_EINVAL, "gguf writer: tensor '%s': ne[0] = %" PRId64
                             " is not a multiple of the %s block size %" PRId64,
               name, ne[0], tr->name, tr->block_size);
        return;
    }
    size_t row = dtype_row_size(type, ne[0]), nb;
    if (__builtin_mul_overflow(row, (size_t)(nel / ne[0]), &nb)) {
        w_fail(w, CV_EINVAL, "gguf writer: tensor '%s': byte size overflows", name);
        return;
    }
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name)) {
            w_fail(w, CV_EINVAL, "gguf writer: tensor '%s' added twice", name);
            return;
        }
    if ((size_t)w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
        wtensor *p = realloc(w->tensors, cap * sizeof *p);
        if (!p) {
            w_fail(w, CV_ENOMEM, "gguf writer: out of memory");
            return;
        }
        w->tensors = p;
        w->cap_tensors = cap;
    }
    wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) {
        w_fail(w, CV_ENOMEM, "gguf writer: out of memory");
        return;
    }
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->n_bytes = nb;
    w->n_tensors++;
}

static uint64_t align_up(uint64_t x, size_t a) { return (x + a - 1) / a * a; }

static cv_status w_report(gguf_writer *w, cv_err *e)
{
    return cv_err_set(e, w->err.code, "%s: %s", w->path, w->err.msg);
}

static void w_write(gguf_writer *w, const void *p, size_t n)
{
    if (w_ok(w) && n && fwrite(p, 1, n, w->fp) != n)
        w_fail(w, CV_EIO, "write failed: %s", strerror(errno));
}

static void w_pad(gguf_writer *w, uint64_t pos)
{
    static const uint8_t zeros[4096];
    size_t pad = (size_t)(align_up(pos, w->alignment) - pos);
    while (pad && w_ok(w)) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        w_write(w, zeros, k);
        pad -= k;
    }
}

cv_status gguf_writer_begin(gguf_writer *w, cv_err *e)
{
    if (!w_ok(w))
        return w_report(w, e);
    if (w->begun)
        return cv_err_set(e, CV_EINVAL, "%s: gguf_writer_begin called twice", w->path);
    wbuf hdr = {0};
    wb_put(w, &hdr, "GGUF", 4);
    wb_u32(w, &hdr, 3);
    wb_u64(w, &hdr, (uint64_t)w->n_tensors);
    wb_u64(w, &hdr, (uint64_t)w->n_kv);
    wb_put(w, &hdr, w->kv.p, w->kv.len);
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_tensors; i++) {
        wtensor *t = &w->tensors[i];
        t->offset = off;
        off = align_up(off + t->n_bytes, w->alignment);
        wb_str(w, &hdr, t->name, strlen(t->name));
        wb_u32(w, &hdr, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            wb_u64(w, &hdr, (uint64_t)t->ne[d]);
        wb_u32(w, &hdr, (uint32_t)t->type);
        wb_u64(w, &hdr, t->offset);
    }
    w->data_size = off;
    w_write(w, hdr.p, hdr.len);
    w_pad(w, hdr.len);
    free(hdr.p);
    w->begun = true;
    return w_ok(w) ? CV_OK : w_report(w, e);
}

cv_status gguf_writer_write_tensor(gguf_writer *w, const void *data, size_t n_bytes, cv_err *e)
{
    if (!w_ok(w))
        return w_report(w, e);
    if (!w->begun)
        return cv_err_set(e, CV_EINVAL, "%s: tensor data written before gguf_writer_begin",
                          w->path);
    if (w->next_tensor >= w->n_tensors)
        return cv_err_set(e, CV_EINVAL, "%s: more tensor data than the %" PRId64 " tensors added",
                          w->path, w->n_tensors);
    const wtensor *t = &w->tensors[w->next_tensor];
    if (n_bytes != t->n_bytes)
        return cv_err_set(e, CV_EINVAL,
                          "%s: tensor %" PRId64 " ('%s'): %zu bytes written, its %s shape needs "
                          "%zu",
                          w->path, w->next_tensor, t->name, n_bytes, dtype_name(t->type),
                          t->n_bytes);
    w_write(w, data, n_bytes);
    w_pad(w, t->offset + n_bytes);
    w->next_tensor++;
    return w_ok(w) ? CV_OK : w_report(w, e);
}

static void writer_free(gguf_writer *w)
{
    for (int64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    free(w->keys);
    for (int64_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    free(w->kv.p);
    free(w->path);
    free(w);
}

cv_status gguf_writer_close(gguf_writer *w, cv_err *e)
{
    if (!w)
        return CV_OK;
    if (w_ok(w) && !w->begun) {
        cv_err tmp;
        gguf_writer_begin(w, &tmp);
    }
    if (w_ok(w) && w->next_tensor != w->n_tensors)
        w_fail(w, CV_EINVAL, "only %" PRId64 " of %" PRId64 " tensors' data written",
               w->next_tensor, w->n_tensors);
    if (fclose(w->fp) != 0)
        w_fail(w, CV_EIO, "close failed: %s", strerror(errno));
    free(w->iobuf);
    cv_status s = CV_OK;
    if (!w_ok(w)) {
        s = w_report(w, e);
        unlink(w->path); /* never leave a half-written model behind */
    }
    writer_free(w);
    return s;
}
