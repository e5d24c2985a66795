/* cmd_tokenize.c - `caravan tokenize -m MODEL [--no-bos] TEXT`: print the
 * token ids of TEXT as a JSON array on one line, for scripts that compare
 * tokenizers or engines. Reads only the GGUF's metadata (no weights).
 * Special-token strings in TEXT ("<|eot_id|>") become their ids unless
 * --no-parse-special is given. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/gguf.h"
#include "core/tokenizer.h"

static void tokenize_usage(FILE *out)
{
    fprintf(out,
            "usage: caravan tokenize -m MODEL [--no-bos] [--no-parse-special] TEXT\n"
            "  -m, --model PATH      GGUF file (only its tokenizer metadata is read)\n"
            "  --no-bos              do not add BOS (or EOS) even where the model asks for it\n"
            "  --no-parse-special    tokenize special-token strings as plain text\n"
            "prints the ids as a JSON array, e.g. [1, 403, 407, 261, 378]\n");
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL;
    bool add_special = true, parse_special = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tokenize_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "caravan tokenize: %s needs a value\n", a);
                return 2;
            }
            model = argv[++i];
        } else if (!strcmp(a, "--no-bos")) {
            add_special = false;
        } else if (!strcmp(a, "--no-parse-special")) {
            parse_special = false;
        } else if (!strcmp(a, "--")) {
            if (i + 2 != argc || text) {
                fprintf(stderr, "caravan tokenize: expected exactly one TEXT after --\n");
                return 2;
            }
            text = argv[++i];
        } else if (a[0] == '-' && a[1] != 0) {
            fprintf(stderr, "caravan tokenize: unknown option '%s' (try --help)\n", a);
            return 2;
        } else if (text) {
            fprintf(stderr, "caravan tokenize: more than one TEXT given ('%s'); quote the text\n",
                    a);
            return 2;
        } else {
            text = a;
        }
    }
    if (!model) {
        fprintf(stderr, "caravan tokenize: -m MODEL is required (try --help)\n");
        return 2;
    }
    if (!text) {
        fprintf(stderr, "caravan tokenize: TEXT is required (try --help)\n");
        return 2;
    }
    cv_err err = {0};
    gguf_file *f = NULL;
    if (gguf_open(model, &f, &err)) { /* the message names the file */
        fprintf(stderr, "caravan tokenize: %s\n", err.msg);
        return 1;
    }
    tokenizer *tok = NULL;
    if (tokenizer_load(f, &tok, &err)) {
        fprintf(stderr, "caravan tokenize: %s: %s\n", model, err.msg);
        gguf_close(f);
        return 1;
    }
    gguf_close(f);
    int32_t *ids = NULL;
    int64_t n = 0;
    if (tokenizer_encode_alloc(tok, text, strlen(text), add_special, parse_special, &ids, &n,
                               &err)) {
        fprintf(stderr, "caravan tokenize: %s\n", err.msg);
        tokenizer_free(tok);
        return 1;
    }
    putchar('[');
    for (int64_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
    printf("]\n");
    free(ids);
    tokenizer_free(tok);
    return fflush(stdout) == 0 ? 0 : 1;
}
