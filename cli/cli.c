/* cli.c - option value parsing shared by the subcommands. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool cli_parse_int(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi,
                   int64_t *out)
{
    if (!s) {
        fprintf(stderr, "caravan %s: %s needs a value\n", cmd, flag);
        return false;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) {
        fprintf(stderr, "caravan %s: bad value '%s' for %s: not an integer\n", cmd, s, flag);
        return false;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "caravan %s: bad value '%s' for %s: must be in [%lld, %lld]\n", cmd, s,
                flag, (long long)lo, (long long)hi);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_float(const char *cmd, const char *flag, const char *s, double lo, double hi,
                     double *out)
{
    if (!s) {
        fprintf(stderr, "caravan %s: %s needs a value\n", cmd, flag);
        return false;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || isnan(v)) {
        fprintf(stderr, "caravan %s: bad value '%s' for %s: not a number\n", cmd, s, flag);
        return false;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "caravan %s: bad value '%s' for %s: must be in [%g, %g]\n", cmd, s, flag,
                lo, hi);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_size(const char *cmd, const char *flag, const char *s, uint64_t *out)
{
    if (!s) {
        fprintf(stderr, "caravan %s: %s needs a value\n", cmd, flag);
        return false;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0 || isnan(v)) {
        fprintf(stderr, "caravan %s: bad size '%s' for %s\n", cmd, s, flag);
        return false;
    }
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 0: break;
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default:
        fprintf(stderr, "caravan %s: bad size '%s' for %s (use e.g. 8G, 512M)\n", cmd, s, flag);
        return false;
    }
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) {
        fprintf(stderr, "caravan %s: bad size '%s' for %s (use e.g. 8G, 512M)\n", cmd, s, flag);
        return false;
    }
    *out = (uint64_t)(v * mul);
    return true;
}
