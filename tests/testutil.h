/* testutil.h - helpers shared by the C tests: model paths, comparisons, seeded RNG. */
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Path of a file in the shared models folder (CARAVAN_MODELS). When the file
 * is missing: exit 77 (ctest "skipped") on a developer machine, but exit 1
 * under CI=true, so a missing model can never pass silently in CI. */
static inline const char *tu_model(const char *rel)
{
    static char buf[8][4096];
    static int k;
    const char *dir = getenv("CARAVAN_MODELS");
    if (!dir)
        dir = "../shared/models";
    char *p = buf[k++ % 8];
    snprintf(p, 4096, "%s/%s", dir, rel);
    FILE *f = fopen(p, "rb");
    if (!f) {
        const char *ci = getenv("CI");
        int in_ci = ci && (!strcmp(ci, "true") || !strcmp(ci, "1"));
        fprintf(stderr, "%s: test model missing: %s (set CARAVAN_MODELS)\n",
                in_ci ? "FAIL" : "SKIP", p);
        exit(in_ci ? 1 : 77);
    }
    fclose(f);
    return p;
}

/* The integer array after "key": [ ... ] in a small JSON file (the golden
 * token files). Returns the count, or -1 when the file, the key or a number
 * is missing, or there are more than max. */
static inline int tu_json_ids(const char *path, const char *key, int32_t *ids, int max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    char *p = strstr(buf, pat);
    if (!p || !(p = strchr(p + strlen(pat), '[')))
        return -1;
    p++;
    int cnt = 0;
    for (;;) {
        while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t' || *p == ',')
            p++;
        if (*p == ']')
            break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || cnt >= max)
            return -1;
        ids[cnt++] = (int32_t)v;
        p = end;
    }
    return cnt;
}

/* xorshift64*: seeded, reproducible test data */
static inline uint64_t tu_rand_u64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}
/* uniform in [-1, 1) */
static inline float tu_rand_f(uint64_t *s)
{
    return (float)((tu_rand_u64(s) >> 40) * (1.0 / 8388608.0) - 1.0);
}

static int tu_failures;
#define TU_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            tu_failures++;                                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)
/* Call at the end of main: prints the summary line and returns the exit code. */
static inline int tu_finish(const char *name)
{
    if (tu_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, tu_failures);
        return 1;
    }
    fprintf(stderr, "%s: all checks passed\n", name);
    return 0;
}
