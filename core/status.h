/* status.h - status codes and the bounded, caller-owned error message.
 *
 * Every fallible library function returns a cv_status and, when it fails,
 * writes a one-line message naming what was wrong (field, offset, expected
 * vs actual) into a cv_err the caller owns. `e` may be NULL when the caller
 * does not care about the text. No library code calls exit()/abort(). */
#pragma once
#include <stdarg.h>
#include <stddef.h>

typedef enum cv_status {
    CV_OK = 0,
    CV_EIO,          /* open/read/mmap/write failed */
    CV_EFORMAT,      /* a file or wire message is malformed */
    CV_EINVAL,       /* a bad argument or request from a caller/user */
    CV_ENOMEM,       /* allocation failed */
    CV_EUNSUPPORTED, /* valid but not supported (architecture, type, ...) */
    CV_ECOMM,        /* a peer or rank failed, MPI/NCCL/socket error */
    CV_EDEVICE,      /* CUDA or other device error */
    CV_ERANGE,       /* over a limit: context length, queue, frame size */
    CV_EINTERNAL,    /* a bug: an invariant did not hold */
} cv_status;

#define CV_ERR_MSG_MAX 512

typedef struct cv_err {
    cv_status code;
    char msg[CV_ERR_MSG_MAX];
} cv_err;

/* Set code and printf-style message (if e != NULL); returns code so that
 * `return cv_err_set(e, CV_EFORMAT, "...")` reads naturally. */
cv_status cv_err_set(cv_err *e, cv_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message with context: "loading layer 3: <old msg>". */
cv_status cv_err_prefix(cv_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void cv_err_clear(cv_err *e);

/* Short name of a status ("EFORMAT"). */
const char *cv_status_name(cv_status s);
