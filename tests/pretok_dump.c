/* pretok_dump.c - helper of test_pretok_regex.py: reads length-prefixed
 * strings (u32 little-endian length + bytes) from a file and prints, per
 * string, the end byte offsets of the words a BPE pre-tokenizer splits it
 * into, so the script can compare them with the reference regexes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/tok_internal.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: pretok_dump PRE_TYPE FILE\n");
        return 2;
    }
    int pre = atoi(argv[1]);
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    uint32_t len;
    while (fread(&len, 4, 1, f) == 1) {
        char *b = malloc((size_t)len + 1);
        if (!b || fread(b, 1, len, f) != len) {
            fprintf(stderr, "pretok_dump: truncated input\n");
            return 1;
        }
        tok_span *w;
        size_t n;
        if (!tok_pretokenize((tok_pre_type)pre, b, len, &w, &n)) {
            fprintf(stderr, "pretok_dump: out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < n; i++) printf("%zu ", w[i].end);
        printf("\n");
        free(w);
        free(b);
    }
    fclose(f);
    return 0;
}
