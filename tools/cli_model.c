/* cli_model.c - what several subcommands share about models, tokenizers and output files:
 * opening a model GGUF with a clear error (never a crash on a file that is not one), its
 * tokenizer, loading it for inference, and checking output paths before any work starts. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bitgrad/export.h>

#include "cli.h"
#include "train.h"

int cli_check_output(const char *path, const char *what)
{
    if (!path) return 0;
    if (!*path) return cli_fail(2, "%s: empty path", what);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return cli_fail(1, "%s %s is a directory; name a file", what, path);
    /* Files are written as PATH.tmp and renamed: that name must be creatable in the folder. */
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return cli_fail(2, "%s: path too long", what);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
        return 0;
    }
    if (errno == EEXIST) { /* a stale PATH.tmp: the folder itself must be writable */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
        if (access(slash ? dir : ".", W_OK) == 0) return 0;
    }
    return cli_fail(1, "%s %s cannot be written: %s", what, path, strerror(errno));
}

int cli_model_tokenizer(const char *path, int64_t n_vocab, bg_tokenizer **out)
{
    char err[512];
    bg_gguf *g = NULL;
    *out = NULL;
    if (bg_gguf_open(&g, path, err, sizeof err))
        return cli_fail(1, "%s: not a GGUF model file: %s", path, err);
    int rc = bg_tokenizer_from_gguf(g, out, err, sizeof err);
    int64_t te = bg_gguf_find_tensor(g, "token_embd.weight");
    if (n_vocab <= 0 && te >= 0) n_vocab = bg_gguf_tensor_ne(g, te)[1];
    bg_gguf_free(&g);
    if (rc == BG_ENOTFOUND && n_vocab == 256) /* a bitgrad byte model (e.g. a checkpoint) */
        return bg_tokenizer_new_bytes(out) ? cli_fail(1, "out of memory") : 0;
    if (rc == BG_ENOTFOUND)
        return cli_fail(1,
                        "%s: the model has no tokenizer (no tokenizer.ggml.model key) and "
                        "%lld tokens, not bitgrad's 256 bytes",
                        path, (long long)n_vocab);
    if (rc) return cli_fail(1, "%s: tokenizer: %s", path, err);
    if (n_vocab > 0 && bg_tokenizer_n_vocab(*out) > n_vocab) {
        cli_fail(1, "%s: the tokenizer has %lld tokens but the model only %lld", path,
                 (long long)bg_tokenizer_n_vocab(*out), (long long)n_vocab);
        bg_tokenizer_free(out);
        return 1;
    }
    return 0;
}

int cli_open_model(bg_ctx *ctx, const char *path, bg_module **m, bg_tokenizer **tok)
{
    char err[512];
    bg_gguf *g = NULL;
    *m = NULL;
    if (tok) *tok = NULL;
    if (bg_gguf_open(&g, path, err, sizeof err))
        return cli_fail(1, "%s: not a GGUF model file: %s", path, err);
    bg_gguf_free(&g);
    if (bg_bitnet_import(ctx, path, m, err, sizeof err)) return cli_fail(1, "%s: %s", path, err);
    if (tok && cli_model_tokenizer(path, bg_bitnet_get_config(*m)->n_vocab, tok)) {
        bg_module_free(m);
        return 1;
    }
    return 0;
}

bg_module *cli_load_inference(bg_ctx *ctx, const char *path, const char *lora, bool llama,
                              bg_tokenizer **tok)
{
    char err[512];
    bg_module *m = NULL;
    /* A TQ1_0 / TQ2_0 base loads packed (codes from the mapped file, an F16 token_embd kept
     * F16): the packed BitLinear forward is the int8 inference kernel. llama.cpp emulation
     * (--llama) reads latent weights, and BITGRAD_NO_PACK=1 asks for them too. */
    bool packed = !llama && !getenv("BITGRAD_NO_PACK") && cli_file_is_ternary(path);
    if (packed ? cli_open_model_packed(ctx, path, &m, tok) : cli_open_model(ctx, path, &m, tok))
        return NULL;
    if (lora && bg_lora_import(m, lora, "default", err, sizeof err)) {
        cli_fail(1, "%s: %s", lora, err);
    } else {
        bg_module_set_training(m, false);
        if (!bg_module_set_inference(m, true)) {
            bg_module_set_llama_emulation(m, llama);
            bg_grad_enable(ctx, false);
            return m;
        }
        cli_fail(1, "%s: %s", path, bg_ctx_error(ctx));
    }
    bg_module_free(&m);
    if (tok) bg_tokenizer_free(tok);
    return NULL;
}

int64_t cli_encode(const bg_tokenizer *t, const char *text, bool add_special, int32_t **ids)
{
    size_t len = strlen(text);
    int64_t cap = (int64_t)len + 8;
    for (int pass = 0; pass < 2; pass++) {
        *ids = malloc((size_t)cap * sizeof **ids);
        if (!*ids) return cli_fail(1, "out of memory"), -1;
        int64_t n = bg_tokenizer_encode(t, text, len, add_special, *ids, cap);
        if (n >= 0 && n <= cap) return n;
        free(*ids);
        *ids = NULL;
        if (n < 0) return cli_fail(1, "tokenizer: %s", bg_strerror((int)n)), -1;
        cap = n;
    }
    return cli_fail(1, "tokenizer: inconsistent lengths"), -1;
}
