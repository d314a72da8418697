/* cmd_tokenize.c - `bitgrad tokenize MODEL.gguf (--text TEXT | --file FILE) [--no-bos]`: the
 * token ids of a text with the model's own tokenizer, printed as llama.cpp's
 * `llama-tokenize --ids` prints them ("[1, 15043, 3186]"). Special tokens are added as
 * llama-tokenize adds them: BOS (and EOS where the file asks for it) when the vocabulary adds
 * BOS, nothing with --no-bos. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: bitgrad tokenize MODEL.gguf (--text TEXT | --file FILE) [--no-bos]\n"
               "  prints the token ids as llama-tokenize --ids does: [1, 15043, 3186]\n"
               "  --no-bos   do not add the BOS / EOS tokens the vocabulary asks for\n");
}

/* Reads a whole file; NULL (message printed) on failure. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_fail(1, "%s: cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *b2 = realloc(buf, cap *= 2);
        if (!b2) free(buf);
        buf = b2;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        cli_fail(1, "%s: %s", path, bad ? "read error" : "out of memory");
        return NULL;
    }
    *len = n;
    return buf;
}

static int print_ids(const bg_tokenizer *t, const char *text, size_t len, bool special)
{
    int64_t n = bg_tokenizer_encode(t, text, len, special, NULL, 0);
    int32_t *ids = n >= 0 ? malloc((size_t)(n ? n : 1) * sizeof *ids) : NULL;
    if (!ids) return cli_fail(1, "tokenize: %s", n < 0 ? "encoding failed" : "out of memory");
    bg_tokenizer_encode(t, text, len, special, ids, n);
    printf("[");
    for (int64_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
    printf("]\n");
    free(ids);
    return 0;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *file = NULL;
    bool no_bos = false;
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag(argv, i, "--help")) {
            usage(stdout);
            return 0;
        }
        if (cli_opt(argc, argv, &i, "--text", &text, &bad) ||
            cli_opt(argc, argv, &i, "--file", &file, &bad))
            continue;
        if (cli_flag(argv, i, "--no-bos")) no_bos = true;
        else if (argv[i][0] == '-' || model)
            return usage(stderr), cli_fail(2, "tokenize: unexpected argument '%s'", argv[i]);
        else
            model = argv[i];
    }
    if (bad) return 2;
    if (!model || (!text) == (!file)) {
        usage(stderr);
        return cli_fail(2, "tokenize: give a model and one of --text or --file");
    }
    char err[512];
    bg_tokenizer *t = NULL;
    if (bg_tokenizer_load(model, &t, err, sizeof err) != 0)
        return cli_fail(1, "%s: %s", model, err);
    size_t len = 0;
    char *buf = NULL;
    if (file && !(buf = slurp(file, &len))) {
        bg_tokenizer_free(&t);
        return 1;
    }
    /* llama-tokenize passes add_special = the vocabulary's add_bos and not --no-bos */
    bool special = !no_bos && bg_tokenizer_add_bos(t);
    int rc = print_ids(t, file ? buf : text, file ? len : strlen(text), special);
    free(buf);
    bg_tokenizer_free(&t);
    return rc;
}
