/* log.c - stderr logger; one line per message, thread-safe by single fprintf. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_level = -1;
static char g_tag[64];

int cv_log_level(void)
{
    if (g_level < 0) {
        const char *s = getenv("CARAVAN_LOG");
        g_level = LOG_WARN;
        if (s) {
            if (!strcmp(s, "error")) g_level = LOG_ERROR;
            else if (!strcmp(s, "warn")) g_level = LOG_WARN;
            else if (!strcmp(s, "info")) g_level = LOG_INFO;
            else if (!strcmp(s, "debug")) g_level = LOG_DEBUG;
        }
    }
    return g_level;
}

void cv_log_set_level(int level) { g_level = level; }

void cv_log_set_tag(const char *tag)
{
    snprintf(g_tag, sizeof g_tag, "%s", tag ? tag : "");
}

void cv_log(int level, const char *file, int line, const char *fmt, ...)
{
    if (level > cv_log_level())
        return;
    static const char *names[] = {"error", "warn", "info", "debug"};
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%02d:%02d:%02d.%03ld caravan%s%s %s %s:%d: %s\n", tm.tm_hour, tm.tm_min,
            tm.tm_sec, ts.tv_nsec / 1000000, g_tag[0] ? " " : "", g_tag, names[level], base, line,
            msg);
}
