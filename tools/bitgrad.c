/* bitgrad.c - the command-line tool: train, finetune, export, info, eval, generate, tokenize, bench.
 *   bitgrad info model.gguf
 *   bitgrad eval model.gguf --ids 1,2,3 [--all] [--lora adapter.gguf] [--out logits.f32]
 *   bitgrad generate model.gguf --prompt TEXT [--n 64] [--stop-at-eos]
 *   bitgrad train --data FILE [--vocab-from vocab.gguf] ; bitgrad finetune model.gguf --data FILE
 *   bitgrad finetune --demo        (the end-to-end example of examples/finetune.c)
 * Every subcommand takes --help. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../examples/finetune_demo.h"
#include "cli.h"

int cli_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bitgrad: ");
    if (cli_dist_world() > 1) fprintf(stderr, "rank %d of %d: ", cli_dist_rank(), cli_dist_world());
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return status;
}

bool cli_flag(char **argv, int i, const char *name) { return strcmp(argv[i], name) == 0; }

bool cli_opt(int argc, char **argv, int *i, const char *name, const char **val, int *bad)
{
    if (strcmp(argv[*i], name) != 0) return false;
    if (*i + 1 >= argc) {
        cli_fail(2, "option %s needs a value", name);
        *bad = 1;
        return true;
    }
    *val = argv[++*i];
    return true;
}

bool cli_int(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        cli_fail(2, "%s: '%s' is not an integer in [%lld, %lld]", opt, s, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

bool cli_float(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) {
        cli_fail(2, "%s: '%s' is not a number", opt, s);
        return false;
    }
    *out = v;
    return true;
}

int cli_ids(const char *s, int32_t *ids, int max, int64_t limit)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v >= limit || n == max) return -1;
        ids[n++] = (int32_t)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    return n;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress(int64_t step, int64_t total, double loss, double tps, double eta, bool tty)
{
    if (tty)
        fprintf(stderr, "\rstep %lld/%lld  loss %.4f  %.0f tok/s  ETA %.0fs   ", (long long)step,
                (long long)total, loss, tps, eta);
    else
        fprintf(stderr, "step %lld/%lld loss %.4f tok/s %.0f eta_s %.0f\n", (long long)step,
                (long long)total, loss, tps, eta);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bitgrad <command> [options]   (bitgrad <command> --help for details)\n"
               "commands:\n"
               "  train      train a bitnet model on a text or JSON Lines file\n"
               "  finetune   the end-to-end demo (--demo), or LoRA/QAT fine-tuning of a model\n"
               "  export     turn a checkpoint into a llama.cpp GGUF model / adapter\n"
               "  info       describe any GGUF file: keys, tensors, ternary statistics\n"
               "  eval       logits of a GGUF model for token ids or a text\n"
               "  generate   sample text from a GGUF model (KV cache, the model's tokenizer)\n"
               "  tokenize   token ids of a text under a model's tokenizer\n"
               "  bench      time the reference workloads\n");
}

int main(int argc, char **argv)
{
    demo_short_omp_spin(argv);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = { { "info", cmd_info },         { "eval", cmd_eval },   { "generate", cmd_generate },
                 { "export", cmd_export },     { "train", cmd_train }, { "finetune", cmd_finetune },
                 { "bench", cmd_bench },       { "tokenize", cmd_tokenize } };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(argv[1], cmds[i].name) == 0) /* under mpirun: one rank of the job */
            return cli_dist_end(cli_dist_begin() ? 1 : cmds[i].fn(argc - 1, argv + 1));
    usage(stderr);
    return cli_fail(2, "unknown command '%s'", argv[1]);
}
