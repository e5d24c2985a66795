/* status.c - error message helpers for status.h. */
#include "status.h"

#include <stdio.h>
#include <string.h>

cv_status cv_err_set(cv_err *e, cv_status code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        e->code = code;
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

cv_status cv_err_prefix(cv_err *e, const char *fmt, ...)
{
    if (!e)
        return CV_OK;
    char old[CV_ERR_MSG_MAX], pre[CV_ERR_MSG_MAX];
    memcpy(old, e->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    snprintf(e->msg, sizeof e->msg, "%s: %s", pre, old);
    return e->code;
}

void cv_err_clear(cv_err *e)
{
    if (e) {
        e->code = CV_OK;
        e->msg[0] = '\0';
    }
}

const char *cv_status_name(cv_status s)
{
    switch (s) {
    case CV_OK: return "OK";
    case CV_EIO: return "EIO";
    case CV_EFORMAT: return "EFORMAT";
    case CV_EINVAL: return "EINVAL";
    case CV_ENOMEM: return "ENOMEM";
    case CV_EUNSUPPORTED: return "EUNSUPPORTED";
    case CV_ECOMM: return "ECOMM";
    case CV_EDEVICE: return "EDEVICE";
    case CV_ERANGE: return "ERANGE";
    case CV_EINTERNAL: return "EINTERNAL";
    }
    return "UNKNOWN";
}
