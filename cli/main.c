/* main.c - the `caravan` command: dispatches to one subcommand per file
 * (cmd_run.c, cmd_inspect.c, ...). Subcommands that need parts not built
 * in this configuration (e.g. serve in an engine-only build) are absent and
 * say so. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

/* Weak so that an engine-only build links without the network commands. */
#define CMD(name) int name(int argc, char **argv) __attribute__((weak));
CMD(cmd_run)
CMD(cmd_tokenize)
CMD(cmd_inspect)
CMD(cmd_mkmodel)
CMD(cmd_bench)
CMD(cmd_plan)
CMD(cmd_serve)
CMD(cmd_coordinator)
CMD(cmd_worker)
CMD(cmd_generate)
CMD(cmd_batch)
#undef CMD

static const struct {
    const char *name;
    const char *help;
} commands[] = {
    {"run", "generate text from a prompt (one process, or a group under mpirun)"},
    {"tokenize", "print the token ids of a text as a JSON array"},
    {"inspect", "print a GGUF's architecture, hyperparameters, tokenizer and tensors"},
    {"mkmodel", "write a random-weight GGUF of any Llama/Qwen2 shape and type"},
    {"bench", "prompt-processing and generation speed vs measured memory bandwidth"},
    {"plan", "print the pipeline x tensor-parallel layout of a model over ranks"},
    {"serve", "start a coordinator and local worker groups (one command)"},
    {"coordinator", "start a coordinator alone; groups join it with `caravan worker`"},
    {"worker", "run a worker group (under mpirun/srun) that joins a coordinator"},
    {"generate", "gRPC client: generate text from a running coordinator"},
    {"batch", "run a JSONL batch of prompts, resumable, each result written once"},
};

static int (*lookup(const char *name))(int, char **)
{
    if (!strcmp(name, "run")) return cmd_run;
    if (!strcmp(name, "tokenize")) return cmd_tokenize;
    if (!strcmp(name, "inspect")) return cmd_inspect;
    if (!strcmp(name, "mkmodel")) return cmd_mkmodel;
    if (!strcmp(name, "bench")) return cmd_bench;
    if (!strcmp(name, "plan")) return cmd_plan;
    if (!strcmp(name, "serve")) return cmd_serve;
    if (!strcmp(name, "coordinator")) return cmd_coordinator;
    if (!strcmp(name, "worker")) return cmd_worker;
    if (!strcmp(name, "generate")) return cmd_generate;
    if (!strcmp(name, "batch")) return cmd_batch;
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: caravan COMMAND [options]   (caravan COMMAND --help for its options)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        int known = lookup(commands[i].name) != NULL;
        fprintf(out, "  %-12s %s%s\n", commands[i].name, commands[i].help,
                known ? "" : " [not in this build]");
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("caravan %s\n", CARAVAN_VERSION_STRING);
        return 0;
    }
    int (*fn)(int, char **) = lookup(argv[1]);
    if (!fn) {
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
            if (!strcmp(commands[i].name, argv[1])) {
                fprintf(stderr, "caravan: '%s' is not in this build (configured without the "
                                "libraries it needs)\n", argv[1]);
                return 2;
            }
        fprintf(stderr, "caravan: unknown command '%s' (try caravan --help)\n", argv[1]);
        return 2;
    }
    return fn(argc - 1, argv + 1);
}
