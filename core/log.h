/* log.h - leveled logging to stderr; level from CARAVAN_LOG (error|warn|info|debug). */
#pragma once

enum { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void cv_log(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int cv_log_level(void);
void cv_log_set_level(int level);
/* A tag printed in every line, e.g. "rank 3" or "coord". */
void cv_log_set_tag(const char *tag);

#define log_error(...) cv_log(LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)
#define log_warn(...) cv_log(LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define log_info(...) cv_log(LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define log_debug(...) cv_log(LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
