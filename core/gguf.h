/* gguf.h - GGUF v2/v3 reader (mmap, fully validated) and streaming writer.
 *
 * File layout (all little-endian):
 *   | magic "GGUF" (4) | version u32 (4) | n_tensors u64 (8) | n_kv u64 (8) |
 *   | kv[n_kv]: key gguf_str | value_type u32 | value                        |
 *   | tensor_info[n_tensors]: name gguf_str | n_dims u32 | ne[n_dims] u64 |  |
 *   |                         type u32 | offset u64 (relative to data start) |
 *   | padding to general.alignment (default 32)                              |
 *   | tensor data                                                            |
 *   gguf_str = | len u64 | bytes[len] (not NUL-terminated) |
 *   array    = | elem_type u32 | n u64 | elems... |  (arrays may nest)
 *
 * Every count, length, offset, dimension and type is checked against the
 * file size before use; a bad file gives CV_EFORMAT with the field name and
 * byte offset. Not a general ggml: only what an inference engine reads. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

typedef enum gguf_vtype {
    GGUF_VT_UINT8 = 0,
    GGUF_VT_INT8 = 1,
    GGUF_VT_UINT16 = 2,
    GGUF_VT_INT16 = 3,
    GGUF_VT_UINT32 = 4,
    GGUF_VT_INT32 = 5,
    GGUF_VT_FLOAT32 = 6,
    GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8,
    GGUF_VT_ARRAY = 9,
    GGUF_VT_UINT64 = 10,
    GGUF_VT_INT64 = 11,
    GGUF_VT_FLOAT64 = 12,
    GGUF_VT_COUNT
} gguf_vtype;

typedef struct gguf_file gguf_file; /* opaque */

typedef struct gguf_tensor_info {
    const char *name;          /* NUL-terminated copy */
    int type;                  /* ggml type id, see dtype.h; validated as known */
    int n_dims;                /* 1..4 */
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] contiguous (row length); unused dims = 1 */
    int64_t n_elements;
    uint64_t offset;           /* from the start of the data section */
    size_t n_bytes;            /* validated: offset + n_bytes within the file */
    const void *data;          /* into the mapping */
} gguf_tensor_info;

/* Open and validate a file (mmap, read-only). Error messages start with the path. */
cv_status gguf_open(const char *path, gguf_file **out, cv_err *e);
/* Parse a buffer the caller keeps alive (fuzzing, tests). */
cv_status gguf_open_memory(const void *data, size_t size, gguf_file **out, cv_err *e);
void gguf_close(gguf_file *f);

uint32_t gguf_version(const gguf_file *f);
size_t gguf_alignment(const gguf_file *f);
size_t gguf_data_offset(const gguf_file *f); /* file offset of the data section */
size_t gguf_file_size(const gguf_file *f);
const uint8_t *gguf_base(const gguf_file *f); /* start of the mapping */
/* True when gguf_open mapped a file (read-only, private): its pages may be
 * dropped (madvise) and fault back from the file; false for gguf_open_memory. */
bool gguf_is_file_mapping(const gguf_file *f);

/* Metadata. Keys are indexed 0..n_kv-1; find returns -1 when absent. */
int64_t gguf_n_kv(const gguf_file *f);
int64_t gguf_find_key(const gguf_file *f, const char *key);
const char *gguf_kv_key(const gguf_file *f, int64_t i);
gguf_vtype gguf_kv_type(const gguf_file *f, int64_t i);

/* Scalar getters: return false when the key is absent or its type does not
 * convert (any integer type converts to another when the value fits; float32
 * and float64 convert to each other; bool is its own type). */
bool gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
bool gguf_get_i32(const gguf_file *f, const char *key, int32_t *out);
bool gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out);
bool gguf_get_f32(const gguf_file *f, const char *key, float *out);
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
/* String value (not NUL-terminated in the file; *len set). NULL if absent/not a string. */
const char *gguf_get_str(const gguf_file *f, const char *key, size_t *len);

/* Arrays. gguf_get_arr returns false if the key is absent or not an array. */
typedef struct gguf_array {
    gguf_vtype elem_type; /* element type; GGUF_VT_ARRAY for nested arrays */
    uint64_t n;           /* number of elements */
    const void *data;     /* fixed-size elements: packed little-endian values in the mapping;
                             strings: NULL (use gguf_arr_str) */
    int64_t kv_index;     /* owning key (top-level arrays) */
    const void *priv;     /* reader-internal */
} gguf_array;
bool gguf_get_arr(const gguf_file *f, const char *key, gguf_array *out);
/* j-th string of a string array (O(1): offsets are indexed at open). */
const char *gguf_arr_str(const gguf_file *f, const gguf_array *a, uint64_t j, size_t *len);
/* j-th element of an array of arrays. */
bool gguf_arr_nested(const gguf_file *f, const gguf_array *a, uint64_t j, gguf_array *out);

/* Tensors. */
int64_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor_info *gguf_tensor(const gguf_file *f, int64_t i);
const gguf_tensor_info *gguf_tensor_find(const gguf_file *f, const char *name);

/* Readable dump of one KV value ("llama", "[32000 strings]", "1e-05") for inspect. */
void gguf_kv_format(const gguf_file *f, int64_t i, char *buf, size_t bufsz);
/* The value of KV i exactly as encoded in the file (after its type field):
 * *data points into the mapping, *len bytes. False for a bad index. */
bool gguf_kv_raw(const gguf_file *f, int64_t i, const void **data, size_t *len);
/* Name of a value type ("u32", "string", "array"); "?" if out of range. */
const char *gguf_vtype_name(gguf_vtype t);

/* ---- writer ----------------------------------------------------------------
 * Streaming: add all KVs and tensor infos first, then gguf_writer_begin()
 * writes the header and padding, then each tensor's bytes are written in the
 * order the infos were added with gguf_writer_write_tensor() (which pads to
 * the alignment). Used by `caravan mkmodel`; fast for multi-GB files. */
typedef struct gguf_writer gguf_writer;
cv_status gguf_writer_open(const char *path, gguf_writer **out, cv_err *e);
void gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
void gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
void gguf_writer_set_str(gguf_writer *w, const char *key, const char *s, size_t len);
/* Copy a KV (any type, arrays included) verbatim from another file. */
void gguf_writer_copy_kv(gguf_writer *w, const gguf_file *src, int64_t i);
void gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_vtype elem_type, const void *data,
                         uint64_t n); /* fixed-size element arrays */
/* Array of n strings; lens may be NULL (then each strs[j] is NUL-terminated). */
void gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                             const size_t *lens, uint64_t n);
/* Setters and add_tensor record the first error; begin/close report it.
 * A key set twice is an error; "general.alignment" (u32) sets the alignment. */
void gguf_writer_add_tensor(gguf_writer *w, const char *name, int type, int n_dims,
                            const int64_t *ne);
cv_status gguf_writer_begin(gguf_writer *w, cv_err *e);
cv_status gguf_writer_write_tensor(gguf_writer *w, const void *data, size_t n_bytes, cv_err *e);
cv_status gguf_writer_close(gguf_writer *w, cv_err *e); /* also frees */
