/* gguf.c - GGUF v2/v3 reader: maps a file read-only (or takes a caller
 * buffer), walks header, metadata and tensor infos once, validating every
 * count, length, offset, dimension and type against the file size, and
 * builds the indexes the accessors need (key and tensor-name hash tables,
 * string-array element offsets, nested-array nodes). Nothing here trusts a
 * number read from the file before checking it; after gguf_open succeeds the
 * accessors never read outside the mapping. Not a writer: see gguf_write.c. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

/* Arrays nested deeper than this are refused (real files nest at most 2). */
#define GGUF_MAX_NESTING 8
/* Arrays of arrays in one file (each costs an index node; real files have a
 * handful), so a corrupt count cannot make the index outgrow the file. */
#define GGUF_MAX_ARRAY_NODES (1 << 22)

/* Smallest encodings, used to refuse counts the file cannot possibly hold. */
#define MIN_KV_BYTES 13     /* key len (8) + type (4) + 1-byte value */
#define MIN_TENSOR_BYTES 32 /* name len (8) + n_dims (4) + ne[0] (8) + type (4) + offset (8) */
#define MIN_NESTED_BYTES 12 /* elem type (4) + n (8) */

/* One array value: a top-level KV value or an element of an array of arrays. */
typedef struct arr_node {
    gguf_vtype elem_type;
    uint64_t n;
    size_t data_off; /* file offset of the first element */
    size_t first;    /* strings: index into str_offs; arrays: index into nodes */
} arr_node;

typedef struct kv_entry {
    char *key; /* NUL-terminated copy */
    gguf_vtype type;
    size_t val_off; /* file offset of the value (the length field for strings) */
    size_t val_end; /* one past its last byte */
    int64_t node;   /* arrays: index into nodes; else -1 */
} kv_entry;

struct gguf_file {
    const uint8_t *base;
    size_t size;
    void *map; /* non-NULL when we own an mmap */
    size_t map_size;
    uint32_t version;
    size_t alignment;
    size_t data_offset;

    int64_t n_kv;
    kv_entry *kvs;
    size_t cap_kvs;
    int64_t *kv_hash; /* open addressing, -1 = empty; kv_hash_cap slots, at most half full */
    size_t kv_hash_cap;

    arr_node *nodes;
    size_t n_nodes, cap_nodes;
    size_t *str_offs; /* file offset of each string's length field */
    size_t n_strs, cap_strs;

    int64_t n_tensors;       /* parsed so far, while parsing */
    int64_t claimed_tensors; /* n_tensors field of the header */
    gguf_tensor_info *tensors;
    size_t cap_tensors;
    int64_t *t_hash;
    size_t t_hash_cap;
};

typedef struct rd {
    const uint8_t *p;
    size_t size;
    size_t pos;
} rd;

static const char *vtype_names[GGUF_VT_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

static size_t vtype_size(gguf_vtype t)
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
    default: return 0; /* string, array: variable */
    }
}

static uint64_t hash_bytes(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* Name -> index hash tables grow with what was actually parsed, never with
 * a count read from the file (a corrupt count must not cost memory). */
typedef const char *(*name_fn)(const gguf_file *f, int64_t i);

static int64_t index_find(const int64_t *slot, size_t cap, const gguf_file *f, name_fn name_of,
                          const char *name)
{
    if (!slot)
        return -1;
    size_t mask = cap - 1, h = (size_t)hash_bytes(name) & mask;
    while (slot[h] >= 0) {
        if (!strcmp(name_of(f, slot[h]), name))
            return slot[h];
        h = (h + 1) & mask;
    }
    return -1;
}

static void index_put(int64_t *slot, size_t cap, const char *name, int64_t i)
{
    size_t mask = cap - 1, h = (size_t)hash_bytes(name) & mask;
    while (slot[h] >= 0)
        h = (h + 1) & mask;
    slot[h] = i;
}

/* Adds entry i (0..n-1 are in the table) growing it to keep it half empty. */
static cv_status index_add(int64_t **slot, size_t *cap, const gguf_file *f, name_fn name_of,
                           int64_t i, cv_err *e)
{
    if ((size_t)(i + 1) * 2 > *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        int64_t *ns = malloc(nc * sizeof *ns);
        if (!ns)
            return cv_err_set(e, CV_ENOMEM, "out of memory for a %zu-slot name index", nc);
        memset(ns, 0xff, nc * sizeof *ns);
        for (int64_t j = 0; j < i; j++)
            index_put(ns, nc, name_of(f, j), j);
        free(*slot);
        *slot = ns;
        *cap = nc;
    }
    index_put(*slot, *cap, name_of(f, i), i);
    return CV_OK;
}

static const char *kv_name(const gguf_file *f, int64_t i) { return f->kvs[i].key; }
static const char *tensor_name(const gguf_file *f, int64_t i) { return f->tensors[i].name; }

/* Makes room for element `n` of a growable array of `elem` bytes. */
static cv_status grow(void **arr, size_t *cap, size_t n, size_t elem, cv_err *e)
{
    if (n < *cap)
        return CV_OK;
    size_t nc = *cap ? *cap * 2 : 32;
    void *p = realloc(*arr, nc * elem);
    if (!p)
        return cv_err_set(e, CV_ENOMEM, "out of memory growing an index to %zu entries", nc);
    memset((uint8_t *)p + *cap * elem, 0, (nc - *cap) * elem);
    *arr = p;
    *cap = nc;
    return CV_OK;
}

/* ---- cursor ------------------------------------------------------------- */

static cv_status rd_need(rd *r, size_t n, const char *what, cv_err *e)
{
    if (n > r->size - r->pos)
        return cv_err_set(e, CV_EFORMAT,
                          "%s at offset %zu: needs %zu bytes, only %zu left (file size %zu)", what,
                          r->pos, n, r->size - r->pos, r->size);
    return CV_OK;
}

static cv_status rd_u32(rd *r, uint32_t *v, const char *what, cv_err *e)
{
    cv_status s = rd_need(r, 4, what, e);
    if (s)
        return s;
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return CV_OK;
}

static cv_status rd_u64(rd *r, uint64_t *v, const char *what, cv_err *e)
{
    cv_status s = rd_need(r, 8, what, e);
    if (s)
        return s;
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return CV_OK;
}

/* A gguf_str: sets *off to the first byte and *len; advances past it. */
static cv_status rd_str(rd *r, size_t *off, uint64_t *len, const char *what, cv_err *e)
{
    size_t at = r->pos;
    cv_status s = rd_u64(r, len, what, e);
    if (s)
        return s;
    if (*len > r->size - r->pos)
        return cv_err_set(e, CV_EFORMAT,
                          "%s at offset %zu: string length %" PRIu64
                          " runs past end of file (size %zu)",
                          what, at, *len, r->size);
    *off = r->pos;
    r->pos += (size_t)*len;
    return CV_OK;
}

/* NUL-terminated copy of a name; refuses embedded NULs (unfindable names). */
static cv_status copy_name(const rd *r, size_t off, uint64_t len, char **out, const char *what,
                           cv_err *e)
{
    if (memchr(r->p + off, 0, (size_t)len))
        return cv_err_set(e, CV_EFORMAT, "%s at offset %zu contains a NUL byte", what, off - 8);
    char *s = malloc((size_t)len + 1);
    if (!s)
        return cv_err_set(e, CV_ENOMEM, "out of memory copying %s", what);
    memcpy(s, r->p + off, (size_t)len);
    s[len] = '\0';
    *out = s;
    return CV_OK;
}

/* ---- growable index arrays ---------------------------------------------- */

static cv_status reserve_nodes(gguf_file *f, size_t n, size_t *first, cv_err *e)
{
    if (f->n_nodes + n > f->cap_nodes) {
        size_t cap = f->cap_nodes ? f->cap_nodes : 64;
        while (cap < f->n_nodes + n)
            cap *= 2;
        arr_node *p = realloc(f->nodes, cap * sizeof *p);
        if (!p)
            return cv_err_set(e, CV_ENOMEM, "out of memory indexing arrays (%zu)", cap);
        f->nodes = p;
        f->cap_nodes = cap;
    }
    *first = f->n_nodes;
    f->n_nodes += n;
    return CV_OK;
}

static cv_status reserve_strs(gguf_file *f, size_t n, size_t *first, cv_err *e)
{
    if (f->n_strs + n > f->cap_strs) {
        size_t cap = f->cap_strs ? f->cap_strs : 256;
        while (cap < f->n_strs + n)
            cap *= 2;
        size_t *p = realloc(f->str_offs, cap * sizeof *p);
        if (!p)
            return cv_err_set(e, CV_ENOMEM, "out of memory indexing strings (%zu)", cap);
        f->str_offs = p;
        f->cap_strs = cap;
    }
    *first = f->n_strs;
    f->n_strs += n;
    return CV_OK;
}

/* ---- metadata values ---------------------------------------------------- */

static cv_status parse_value(gguf_file *f, rd *r, gguf_vtype type, int depth, int64_t *node_out,
                             cv_err *e);

/* Array body after its elem_type/n header was read; fills node `ni`. */
static cv_status parse_array(gguf_file *f, rd *r, int depth, size_t ni, cv_err *e)
{
    size_t hdr = r->pos;
    uint32_t et;
    uint64_t n;
    cv_status s = rd_u32(r, &et, "array element type", e);
    if (s)
        return s;
    if (et >= GGUF_VT_COUNT)
        return cv_err_set(e, CV_EFORMAT, "array element type %" PRIu32 " at offset %zu is unknown",
                          et, hdr);
    if ((s = rd_u64(r, &n, "array length", e)))
        return s;
    size_t left = r->size - r->pos;
    size_t esz = vtype_size((gguf_vtype)et);
    size_t min_el = esz ? esz : (et == GGUF_VT_STRING ? 8 : MIN_NESTED_BYTES);
    if (n > left / min_el)
        return cv_err_set(e, CV_EFORMAT,
                          "array of %" PRIu64 " %s at offset %zu cannot fit in the %zu bytes left "
                          "(file size %zu)",
                          n, vtype_names[et], hdr, left, r->size);
    if (et == GGUF_VT_ARRAY &&
        (f->n_nodes > GGUF_MAX_ARRAY_NODES || n > GGUF_MAX_ARRAY_NODES - f->n_nodes))
        return cv_err_set(e, CV_EFORMAT,
                          "array of %" PRIu64 " arrays at offset %zu: more than %d nested arrays in "
                          "the file",
                          n, hdr, GGUF_MAX_ARRAY_NODES);
    if (et == GGUF_VT_ARRAY && depth + 1 > GGUF_MAX_NESTING)
        return cv_err_set(e, CV_EFORMAT, "array at offset %zu nests deeper than %d levels", hdr,
                          GGUF_MAX_NESTING);
    f->nodes[ni].elem_type = (gguf_vtype)et;
    f->nodes[ni].n = n;
    f->nodes[ni].data_off = r->pos;
    f->nodes[ni].first = 0;
    if (esz) {
        r->pos += (size_t)n * esz; /* checked above */
        return CV_OK;
    }
    if (et == GGUF_VT_STRING) {
        size_t first = 0;
        if ((s = reserve_strs(f, (size_t)n, &first, e)))
            return s;
        f->nodes[ni].first = first;
        for (uint64_t j = 0; j < n; j++) {
            size_t off;
            uint64_t len;
            f->str_offs[first + j] = r->pos;
            if ((s = rd_str(r, &off, &len, "string", e)))
                return cv_err_prefix(e, "array element %" PRIu64 " of %" PRIu64, j, n);
        }
        return CV_OK;
    }
    /* array of arrays: reserve the children contiguously, then fill each */
    size_t first = 0;
    if ((s = reserve_nodes(f, (size_t)n, &first, e)))
        return s;
    f->nodes[ni].first = first;
    for (uint64_t j = 0; j < n; j++)
        if ((s = parse_array(f, r, depth + 1, first + (size_t)j, e)))
            return cv_err_prefix(e, "array element %" PRIu64 " of %" PRIu64, j, n);
    return CV_OK;
}

static cv_status parse_value(gguf_file *f, rd *r, gguf_vtype type, int depth, int64_t *node_out,
                             cv_err *e)
{
    *node_out = -1;
    size_t esz = vtype_size(type);
    if (esz) {
        cv_status s = rd_need(r, esz, vtype_names[type], e);
        if (s)
            return s;
        r->pos += esz;
        return CV_OK;
    }
    if (type == GGUF_VT_STRING) {
        size_t off;
        uint64_t len;
        return rd_str(r, &off, &len, "string value", e);
    }
    size_t ni = 0;
    cv_status s = reserve_nodes(f, 1, &ni, e);
    if (s)
        return s;
    *node_out = (int64_t)ni;
    return parse_array(f, r, depth, ni, e);
}

/* ---- integer reading for getters ---------------------------------------- */

static bool vtype_is_int(gguf_vtype t)
{
    return t == GGUF_VT_UINT8 || t == GGUF_VT_INT8 || t == GGUF_VT_UINT16 ||
           t == GGUF_VT_INT16 || t == GGUF_VT_UINT32 || t == GGUF_VT_INT32 ||
           t == GGUF_VT_UINT64 || t == GGUF_VT_INT64;
}

/* Integer at p of type t as (negative?, magnitude-or-value). */
static void read_int(const uint8_t *p, gguf_vtype t, bool *neg, uint64_t *u, int64_t *i)
{
    uint8_t u8;
    int8_t i8;
    uint16_t u16;
    int16_t i16;
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    switch (t) {
    case GGUF_VT_UINT8: memcpy(&u8, p, 1); u64 = u8; goto unsig;
    case GGUF_VT_UINT16: memcpy(&u16, p, 2); u64 = u16; goto unsig;
    case GGUF_VT_UINT32: memcpy(&u32, p, 4); u64 = u32; goto unsig;
    case GGUF_VT_UINT64: memcpy(&u64, p, 8); goto unsig;
    case GGUF_VT_INT8: memcpy(&i8, p, 1); i64 = i8; goto sig;
    case GGUF_VT_INT16: memcpy(&i16, p, 2); i64 = i16; goto sig;
    case GGUF_VT_INT32: memcpy(&i32, p, 4); i64 = i32; goto sig;
    case GGUF_VT_INT64: memcpy(&i64, p, 8); goto sig;
    default: *neg = false; *u = 0; *i = 0; return;
    }
unsig:
    *neg = false;
    *u = u64;
    *i = u64 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u64;
    return;
sig:
    *neg = i64 < 0;
    *i = i64;
    *u = i64 < 0 ? 0 : (uint64_t)i64;
}

static const kv_entry *kv_lookup(const gguf_file *f, const char *key)
{
    int64_t i = gguf_find_key(f, key);
    return i < 0 ? NULL : &f->kvs[i];
}

static bool get_int(const gguf_file *f, const char *key, bool *neg, uint64_t *u, int64_t *i)
{
    const kv_entry *kv = kv_lookup(f, key);
    if (!kv || !vtype_is_int(kv->type))
        return false;
    read_int(f->base + kv->val_off, kv->type, neg, u, i);
    return true;
}

/* ---- open --------------------------------------------------------------- */

static cv_status parse_header_and_kvs(gguf_file *f, rd *r, cv_err *e)
{
    cv_status s;
    if (r->size < 4 || memcmp(r->p, "GGUF", 4) != 0) {
        if (r->size >= 4 && memcmp(r->p, "FUGG", 4) == 0)
            return cv_err_set(e, CV_EFORMAT, "magic at offset 0 is 'FUGG': a big-endian GGUF, "
                                             "which is not supported");
        return cv_err_set(e, CV_EFORMAT,
                          "not a GGUF file: magic at offset 0 is not 'GGUF' (file size %zu)",
                          r->size);
    }
    r->pos = 4;
    uint32_t ver;
    if ((s = rd_u32(r, &ver, "version", e)))
        return s;
    if (ver == 1)
        return cv_err_set(e, CV_EFORMAT,
                          "version at offset 4 is 1: GGUF v1 is not supported (re-convert the "
                          "model to v2 or v3)");
    if (ver != 2 && ver != 3) {
        uint32_t sw = __builtin_bswap32(ver);
        if (sw >= 1 && sw <= 3)
            return cv_err_set(e, CV_EFORMAT,
                              "version at offset 4 reads %" PRIu32 " (byte-swapped %" PRIu32
                              "): a big-endian GGUF, which is not supported",
                              ver, sw);
        return cv_err_set(e, CV_EFORMAT,
                          "version at offset 4 is %" PRIu32 ": only GGUF v2 and v3 are supported",
                          ver);
    }
    f->version = ver;
    uint64_t n_tensors, n_kv;
    if ((s = rd_u64(r, &n_tensors, "n_tensors", e)) || (s = rd_u64(r, &n_kv, "n_kv", e)))
        return s;
    size_t left = r->size - r->pos;
    if (n_kv > left / MIN_KV_BYTES)
        return cv_err_set(e, CV_EFORMAT,
                          "n_kv at offset 16 is %" PRIu64 ": more than the %zu bytes after the "
                          "header could hold (file size %zu)",
                          n_kv, left, r->size);
    if (n_tensors > left / MIN_TENSOR_BYTES)
        return cv_err_set(e, CV_EFORMAT,
                          "n_tensors at offset 8 is %" PRIu64 ": more than the %zu bytes after "
                          "the header could hold (file size %zu)",
                          n_tensors, left, r->size);
    f->claimed_tensors = (int64_t)n_tensors;

    for (uint64_t i = 0; i < n_kv; i++) {
        if ((s = grow((void **)&f->kvs, &f->cap_kvs, (size_t)i, sizeof *f->kvs, e)))
            return s;
        kv_entry *kv = &f->kvs[i];
        size_t at = r->pos, off;
        uint64_t len;
        kv->node = -1;
        if ((s = rd_str(r, &off, &len, "key", e)))
            return cv_err_prefix(e, "kv %" PRIu64 " of %" PRIu64, i, n_kv);
        if ((s = copy_name(r, off, len, &kv->key, "key", e)))
            return cv_err_prefix(e, "kv %" PRIu64, i);
        f->n_kv = (int64_t)i + 1; /* owns kv->key for cleanup */
        int64_t first = index_find(f->kv_hash, f->kv_hash_cap, f, kv_name, kv->key);
        if (first >= 0)
            return cv_err_set(e, CV_EFORMAT,
                              "kv %" PRIu64 " ('%s') at offset %zu: duplicate key (first is kv "
                              "%" PRId64 ")",
                              i, kv->key, at, first);
        if ((s = index_add(&f->kv_hash, &f->kv_hash_cap, f, kv_name, (int64_t)i, e)))
            return s;
        uint32_t t;
        size_t tat = r->pos;
        if ((s = rd_u32(r, &t, "value type", e)))
            return cv_err_prefix(e, "kv %" PRIu64 " ('%s')", i, kv->key);
        if (t >= GGUF_VT_COUNT)
            return cv_err_set(e, CV_EFORMAT,
                              "kv %" PRIu64 " ('%s'): value type %" PRIu32 " at offset %zu is unknown",
                              i, kv->key, t, tat);
        kv->type = (gguf_vtype)t;
        kv->val_off = r->pos;
        if ((s = parse_value(f, r, kv->type, 0, &kv->node, e)))
            return cv_err_prefix(e, "kv %" PRIu64 " ('%s')", i, kv->key);
        kv->val_end = r->pos;
    }
    f->n_kv = (int64_t)n_kv;

    /* general.alignment */
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = gguf_find_key(f, "general.alignment");
    if (ai >= 0) {
        const kv_entry *kv = &f->kvs[ai];
        if (!vtype_is_int(kv->type))
            return cv_err_set(e, CV_EFORMAT,
                              "general.alignment at offset %zu has type %s, expected an integer",
                              kv->val_off, vtype_names[kv->type]);
        bool neg;
        uint64_t u;
        int64_t iv;
        read_int(f->base + kv->val_off, kv->type, &neg, &u, &iv);
        if (neg || u == 0 || (u & (u - 1)) || u > ((uint64_t)1 << 30))
            return cv_err_set(e, CV_EFORMAT,
                              "general.alignment at offset %zu is %" PRId64
                              ": must be a power of two between 1 and 2^30",
                              kv->val_off, iv);
        f->alignment = (size_t)u;
    }
    return CV_OK;
}

typedef struct off_idx {
    uint64_t offset;
    int64_t i;
} off_idx;

static int cmp_by_offset(const void *a, const void *b)
{
    const off_idx *x = a, *y = b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static cv_status parse_tensors(gguf_file *f, rd *r, cv_err *e)
{
    cv_status s;
    int64_t n = f->claimed_tensors;

    for (int64_t i = 0; i < n; i++) {
        if ((s = grow((void **)&f->tensors, &f->cap_tensors, (size_t)i, sizeof *f->tensors, e)))
            return s;
        gguf_tensor_info *t = &f->tensors[i];
        size_t at = r->pos, off;
        uint64_t len;
        if ((s = rd_str(r, &off, &len, "name", e)))
            goto fail_i;
        char *name;
        if ((s = copy_name(r, off, len, &name, "name", e)))
            goto fail_i;
        t->name = name;
        f->n_tensors = i + 1; /* owns the name for cleanup */
        int64_t first = index_find(f->t_hash, f->t_hash_cap, f, tensor_name, t->name);
        if (first >= 0) {
            s = cv_err_set(e, CV_EFORMAT,
                           "tensor %" PRId64 " ('%s') at offset %zu: duplicate tensor name "
                           "(first is tensor %" PRId64 ")",
                           i, t->name, at, first);
            goto out;
        }
        if ((s = index_add(&f->t_hash, &f->t_hash_cap, f, tensor_name, i, e)))
            goto out;

        uint32_t nd;
        size_t nd_at = r->pos;
        if ((s = rd_u32(r, &nd, "n_dims", e)))
            goto fail_named;
        if (nd < 1 || nd > GGUF_MAX_DIMS) {
            s = cv_err_set(e, CV_EFORMAT,
                           "tensor %" PRId64 " ('%s'): n_dims at offset %zu is %" PRIu32
                           ", expected 1..%d",
                           i, t->name, nd_at, nd, GGUF_MAX_DIMS);
            goto out;
        }
        t->n_dims = (int)nd;
        size_t ne0_at = r->pos;
        int64_t nel = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v;
            size_t ne_at = r->pos;
            if ((s = rd_u64(r, &v, "ne", e)))
                goto fail_named;
            if (v == 0 || v > (uint64_t)INT64_MAX) {
                s = cv_err_set(e, CV_EFORMAT,
                               "tensor %" PRId64 " ('%s'): ne[%" PRIu32 "] at offset %zu is %" PRId64
                               ", must be positive",
                               i, t->name, d, ne_at, (int64_t)v);
                goto out;
            }
            if (__builtin_mul_overflow(nel, (int64_t)v, &nel)) {
                s = cv_err_set(e, CV_EFORMAT,
                               "tensor %" PRId64 " ('%s'): element count overflows at ne[%" PRIu32
                               "] (offset %zu, value %" PRIu64 ")",
                               i, t->name, d, ne_at, v);
                goto out;
            }
            t->ne[d] = (int64_t)v;
        }
        t->n_elements = nel;
        uint32_t type;
        size_t ty_at = r->pos;
        if ((s = rd_u32(r, &type, "type", e)))
            goto fail_named;
        const dtype_traits *tr = dtype_get((int)(type > INT32_MAX ? -1 : (int)type));
        if (type > INT32_MAX || !tr->known) {
            s = cv_err_set(e, CV_EFORMAT,
                           "tensor %" PRId64 " ('%s'): type %" PRIu32 " at offset %zu is not a "
                           "known ggml type",
                           i, t->name, type, ty_at);
            goto out;
        }
        t->type = (int)type;
        if (t->ne[0] % tr->block_size) {
            s = cv_err_set(e, CV_EFORMAT,
                           "tensor %" PRId64 " ('%s'): ne[0] = %" PRId64 " at offset %zu is not a "
                           "multiple of the %s block size %" PRId64,
                           i, t->name, t->ne[0], ne0_at, tr->name, tr->block_size);
            goto out;
        }
        size_t row = dtype_row_size(t->type, t->ne[0]);
        uint64_t rows = (uint64_t)(nel / t->ne[0]);
        uint64_t nb;
        if (row == 0 || __builtin_mul_overflow((uint64_t)row, rows, &nb) || nb > SIZE_MAX) {
            s = cv_err_set(e, CV_EFORMAT,
                           "tensor %" PRId64 " ('%s'): byte size of %" PRId64 " %s elements "
                           "(shape at offset %zu) overflows",
                           i, t->name, nel, tr->name, ne0_at);
            goto out;
        }
        t->n_bytes = (size_t)nb;
        size_t off_at = r->pos;
        if ((s = rd_u64(r, &t->offset, "offset", e)))
            goto fail_named;
        if (t->offset % f->alignment) {
            s = cv_err_set(e, CV_EFORMAT,
                           "tensor %" PRId64 " ('%s'): data offset %" PRIu64 " (field at offset "
                           "%zu) is not a multiple of the alignment %zu",
                           i, t->name, t->offset, off_at, f->alignment);
            goto out;
        }
        continue;
    fail_i:
        s = cv_err_prefix(e, "tensor %" PRId64 " of %" PRId64, i, n);
        goto out;
    fail_named:
        s = cv_err_prefix(e, "tensor %" PRId64 " ('%s')", i, t->name);
        goto out;
    }

    /* data section: after the infos, padded to the alignment */
    size_t end = r->pos, pad = (f->alignment - end % f->alignment) % f->alignment;
    if (end > SIZE_MAX - pad)
        return cv_err_set(e, CV_EFORMAT, "data offset overflows (tensor infos end at offset %zu)",
                          end);
    f->data_offset = end + pad;
    if (n == 0)
        return CV_OK; /* vocab-only files need not be padded */
    if (f->data_offset > f->size)
        return cv_err_set(e, CV_EFORMAT,
                          "data section starts at offset %zu (tensor infos end at %zu, alignment "
                          "%zu), past end of file (size %zu)",
                          f->data_offset, end, f->alignment, f->size);
    size_t data_size = f->size - f->data_offset;
    for (int64_t i = 0; i < n; i++) {
        gguf_tensor_info *t = &f->tensors[i];
        if (t->offset > data_size || t->n_bytes > data_size - t->offset)
            return cv_err_set(e, CV_EFORMAT,
                              "tensor %" PRId64 " ('%s'): data [offset %" PRIu64 ", %zu bytes] "
                              "runs past end of file (data section %zu bytes at offset %zu, file "
                              "size %zu)",
                              i, t->name, t->offset, t->n_bytes, data_size, f->data_offset,
                              f->size);
        t->data = f->base + f->data_offset + t->offset;
    }
    /* overlap: sort by offset, neighbours must not intersect */
    off_idx *ord = malloc((size_t)n * sizeof *ord);
    if (!ord)
        return cv_err_set(e, CV_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++)
        ord[i] = (off_idx){f->tensors[i].offset, i};
    qsort(ord, (size_t)n, sizeof *ord, cmp_by_offset);
    for (int64_t k = 0; k + 1 < n; k++) {
        const gguf_tensor_info *a = &f->tensors[ord[k].i], *b = &f->tensors[ord[k + 1].i];
        if (a->offset + a->n_bytes > b->offset) {
            s = cv_err_set(e, CV_EFORMAT,
                           "tensor %" PRId64 " ('%s') data [offset %" PRIu64 ", %zu bytes] "
                           "overlaps tensor %" PRId64 " ('%s') at offset %" PRIu64,
                           ord[k].i, a->name, a->offset, a->n_bytes, ord[k + 1].i, b->name,
                           b->offset);
            free(ord);
            return s;
        }
    }
    free(ord);
    return CV_OK;
out:
    return s;
}

static void file_free(gguf_file *f)
{
    if (!f)
        return;
    for (int64_t i = 0; i < f->n_kv; i++)
        free(f->kvs[i].key);
    free(f->kvs);
    free(f->kv_hash);
    for (int64_t i = 0; i < f->n_tensors; i++)
        free((char *)f->tensors[i].name);
    free(f->tensors);
    free(f->t_hash);
    free(f->nodes);
    free(f->str_offs);
    if (f->map)
        munmap(f->map, f->map_size);
    free(f);
}

static cv_status parse(gguf_file *f, cv_err *e)
{
    rd r = {.p = f->base, .size = f->size, .pos = 0};
    cv_status s = parse_header_and_kvs(f, &r, e);
    if (s)
        return s;
    return parse_tensors(f, &r, e);
}

cv_status gguf_open_memory(const void *data, size_t size, gguf_file **out, cv_err *e)
{
    *out = NULL;
    if (!data && size)
        return cv_err_set(e, CV_EINVAL, "gguf_open_memory: NULL buffer");
    gguf_file *f = calloc(1, sizeof *f);
    if (!f)
        return cv_err_set(e, CV_ENOMEM, "out of memory");
    f->base = data ? data : (const uint8_t *)"";
    f->size = size;
    cv_status s = parse(f, e);
    if (s) {
        file_free(f);
        return s;
    }
    *out = f;
    return CV_OK;
}

cv_status gguf_open(const char *path, gguf_file **out, cv_err *e)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cv_err_set(e, CV_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        cv_status s = cv_err_set(e, CV_EIO, "%s: fstat: %s", path, strerror(errno));
        close(fd);
        return s;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return cv_err_set(e, CV_EIO, "%s: not a regular file", path);
    }
    if (st.st_size < 24) {
        close(fd);
        return cv_err_set(e, CV_EFORMAT,
                          "%s: not a GGUF file: %lld bytes is shorter than the 24-byte header",
                          path, (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return cv_err_set(e, CV_EIO, "%s: mmap of %zu bytes failed: %s", path, size,
                          strerror(errno));
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        munmap(map, size);
        return cv_err_set(e, CV_ENOMEM, "out of memory");
    }
    f->base = map;
    f->size = size;
    f->map = map;
    f->map_size = size;
    cv_status s = parse(f, e);
    if (s) {
        cv_err_prefix(e, "%s", path);
        file_free(f);
        return s;
    }
    *out = f;
    return CV_OK;
}

void gguf_close(gguf_file *f) { file_free(f); }

/* ---- accessors ---------------------------------------------------------- */

uint32_t gguf_version(const gguf_file *f) { return f->version; }
size_t gguf_alignment(const gguf_file *f) { return f->alignment; }
size_t gguf_data_offset(const gguf_file *f) { return f->data_offset; }
size_t gguf_file_size(const gguf_file *f) { return f->size; }
const uint8_t *gguf_base(const gguf_file *f) { return f->base; }
bool gguf_is_file_mapping(const gguf_file *f) { return f->map != NULL; }
int64_t gguf_n_kv(const gguf_file *f) { return f->n_kv; }

int64_t gguf_find_key(const gguf_file *f, const char *key)
{
    if (!f || !key)
        return -1;
    return index_find(f->kv_hash, f->kv_hash_cap, f, kv_name, key);
}

const char *gguf_kv_key(const gguf_file *f, int64_t i)
{
    return i >= 0 && i < f->n_kv ? f->kvs[i].key : NULL;
}

gguf_vtype gguf_kv_type(const gguf_file *f, int64_t i)
{
    return i >= 0 && i < f->n_kv ? f->kvs[i].type : GGUF_VT_COUNT;
}

bool gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out)
{
    bool neg;
    uint64_t u;
    int64_t i;
    if (!get_int(f, key, &neg, &u, &i) || neg || u > UINT32_MAX)
        return false;
    *out = (uint32_t)u;
    return true;
}

bool gguf_get_i32(const gguf_file *f, const char *key, int32_t *out)
{
    bool neg;
    uint64_t u;
    int64_t i;
    if (!get_int(f, key, &neg, &u, &i))
        return false;
    if (neg ? i < INT32_MIN : u > INT32_MAX)
        return false;
    *out = (int32_t)i;
    return true;
}

bool gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out)
{
    bool neg;
    uint64_t u;
    int64_t i;
    if (!get_int(f, key, &neg, &u, &i) || neg)
        return false;
    *out = u;
    return true;
}

bool gguf_get_f32(const gguf_file *f, const char *key, float *out)
{
    const kv_entry *kv = kv_lookup(f, key);
    if (!kv)
        return false;
    if (kv->type == GGUF_VT_FLOAT32) {
        memcpy(out, f->base + kv->val_off, 4);
        return true;
    }
    if (kv->type == GGUF_VT_FLOAT64) {
        double d;
        memcpy(&d, f->base + kv->val_off, 8);
        *out = (float)d;
        return true;
    }
    return false;
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out)
{
    const kv_entry *kv = kv_lookup(f, key);
    if (!kv || kv->type != GGUF_VT_BOOL)
        return false;
    *out = f->base[kv->val_off] != 0;
    return true;
}

const char *gguf_get_str(const gguf_file *f, const char *key, size_t *len)
{
    const kv_entry *kv = kv_lookup(f, key);
    if (!kv || kv->type != GGUF_VT_STRING)
        return NULL;
    uint64_t n;
    memcpy(&n, f->base + kv->val_off, 8);
    if (len)
        *len = (size_t)n;
    return (const char *)f->base + kv->val_off + 8;
}

static void node_to_array(const gguf_file *f, size_t ni, int64_t kv_index, gguf_array *out)
{
    const arr_node *nd = &f->nodes[ni];
    out->elem_type = nd->elem_type;
    out->n = nd->n;
    out->data = vtype_size(nd->elem_type) ? f->base + nd->data_off : NULL;
    out->kv_index = kv_index;
    out->priv = nd;
}

bool gguf_get_arr(const gguf_file *f, const char *key, gguf_array *out)
{
    int64_t i = gguf_find_key(f, key);
    if (i < 0 || f->kvs[i].type != GGUF_VT_ARRAY)
        return false;
    node_to_array(f, (size_t)f->kvs[i].node, i, out);
    return true;
}

/* The node behind an array handed out by this file, or NULL. */
static const arr_node *array_node(const gguf_file *f, const gguf_array *a)
{
    const arr_node *nd = a ? a->priv : NULL;
    if (!nd || nd < f->nodes || nd >= f->nodes + f->n_nodes)
        return NULL;
    return nd;
}

const char *gguf_arr_str(const gguf_file *f, const gguf_array *a, uint64_t j, size_t *len)
{
    const arr_node *nd = array_node(f, a);
    if (!nd || nd->elem_type != GGUF_VT_STRING || j >= nd->n)
        return NULL;
    size_t off = f->str_offs[nd->first + (size_t)j];
    uint64_t n;
    memcpy(&n, f->base + off, 8);
    if (len)
        *len = (size_t)n;
    return (const char *)f->base + off + 8;
}

bool gguf_arr_nested(const gguf_file *f, const gguf_array *a, uint64_t j, gguf_array *out)
{
    const arr_node *nd = array_node(f, a);
    if (!nd || nd->elem_type != GGUF_VT_ARRAY || j >= nd->n)
        return false;
    node_to_array(f, nd->first + (size_t)j, a->kv_index, out);
    return true;
}

int64_t gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }

const gguf_tensor_info *gguf_tensor(const gguf_file *f, int64_t i)
{
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_tensor_info *gguf_tensor_find(const gguf_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    int64_t i = index_find(f->t_hash, f->t_hash_cap, f, tensor_name, name);
    return i >= 0 ? &f->tensors[i] : NULL;
}

bool gguf_kv_raw(const gguf_file *f, int64_t i, const void **data, size_t *len)
{
    if (!f || i < 0 || i >= f->n_kv)
        return false;
    *data = f->base + f->kvs[i].val_off;
    *len = f->kvs[i].val_end - f->kvs[i].val_off;
    return true;
}

const char *gguf_vtype_name(gguf_vtype t)
{
    return (unsigned)t < GGUF_VT_COUNT ? vtype_names[t] : "?";
}

/* ---- formatting --------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t cap, len;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->len + 1 >= b->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len = b->len + (size_t)n < b->cap ? b->len + (size_t)n : b->cap - 1;
}

/* Quoted, escaped, at most `max` bytes of the string. */
static void sb_str(sbuf *b, const uint8_t *s, size_t n, size_t max)
{
    sb_printf(b, "\"");
    for (size_t i = 0; i < n && i < max; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\')
            sb_printf(b, "\\%c", c);
        else if (c == '\n')
            sb_printf(b, "\\n");
        else if (c < 0x20 || c == 0x7f)
            sb_printf(b, "\\x%02x", c);
        else
            sb_printf(b, "%c", c);
    }
    sb_printf(b, n > max ? "\"..." : "\"");
}

static void sb_scalar(sbuf *b, const uint8_t *p, gguf_vtype t)
{
    if (vtype_is_int(t)) {
        bool neg;
        uint64_t u;
        int64_t i;
        read_int(p, t, &neg, &u, &i);
        if (neg)
            sb_printf(b, "%" PRId64, i);
        else
            sb_printf(b, "%" PRIu64, u);
    } else if (t == GGUF_VT_FLOAT32) {
        float v;
        memcpy(&v, p, 4);
        sb_printf(b, "%g", v);
    } else if (t == GGUF_VT_FLOAT64) {
        double v;
        memcpy(&v, p, 8);
        sb_printf(b, "%g", v);
    } else if (t == GGUF_VT_BOOL) {
        sb_printf(b, "%s", *p ? "true" : "false");
    }
}

#define FMT_SHOW_ELEMS 8

static void sb_array(const gguf_file *f, sbuf *b, const gguf_array *a, int depth)
{
    size_t esz = vtype_size(a->elem_type);
    if (a->n > FMT_SHOW_ELEMS)
        sb_printf(b, "[%" PRIu64 " %s: ", a->n, vtype_names[a->elem_type]);
    else
        sb_printf(b, "[");
    uint64_t show = a->n < FMT_SHOW_ELEMS ? a->n : (a->n > FMT_SHOW_ELEMS ? 3 : a->n);
    for (uint64_t j = 0; j < show; j++) {
        if (j)
            sb_printf(b, ", ");
        if (esz) {
            sb_scalar(b, (const uint8_t *)a->data + j * esz, a->elem_type);
        } else if (a->elem_type == GGUF_VT_STRING) {
            size_t len;
            const char *s = gguf_arr_str(f, a, j, &len);
            sb_str(b, (const uint8_t *)s, len, 32);
        } else {
            gguf_array sub;
            if (depth < 2 && gguf_arr_nested(f, a, j, &sub))
                sb_array(f, b, &sub, depth + 1);
            else
                sb_printf(b, "[...]");
        }
    }
    sb_printf(b, a->n > show ? ", ...]" : "]");
}

void gguf_kv_format(const gguf_file *f, int64_t i, char *buf, size_t bufsz)
{
    if (!buf || bufsz == 0)
        return;
    buf[0] = '\0';
    if (i < 0 || i >= f->n_kv)
        return;
    sbuf b = {.p = buf, .cap = bufsz, .len = 0};
    const kv_entry *kv = &f->kvs[i];
    if (kv->type == GGUF_VT_STRING) {
        uint64_t n;
        memcpy(&n, f->base + kv->val_off, 8);
        sb_str(&b, f->base + kv->val_off + 8, (size_t)n, 200);
    } else if (kv->type == GGUF_VT_ARRAY) {
        gguf_array a;
        node_to_array(f, (size_t)kv->node, i, &a);
        sb_array(f, &b, &a, 0);
    } else {
        sb_scalar(&b, f->base + kv->val_off, kv->type);
    }
}
