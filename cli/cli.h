/* cli.h - shared helpers of the caravan subcommands: option parsing of sizes
 * and numbers with one-line errors. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#define CARAVAN_VERSION_STRING "0.1.0"

/* Parse helpers: on failure print "caravan CMD: bad value 'x' for --flag: why"
 * and return false. */
bool cli_parse_int(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi,
                   int64_t *out);
bool cli_parse_float(const char *cmd, const char *flag, const char *s, double lo, double hi,
                     double *out);
/* "8G", "512M", "1.5GiB", "1000000" -> bytes */
bool cli_parse_size(const char *cmd, const char *flag, const char *s, uint64_t *out);
