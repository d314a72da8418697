/* tests/fuzz_text.c - libFuzzer target for the tokenizers. The first input byte picks the
 * work: encode the rest with llama.cpp's llama-spm (SentencePiece) or gpt-2 (byte-level BPE)
 * vocabulary, with or without special tokens, then decode it, piece by piece and streamed; or
 * read the rest as a GGUF file and load its tokenizer (malformed metadata must be refused with
 * a message, never crash). Checks: ids in range, the snprintf protocol's two calls agree, the
 * streamed bytes are the pieces' bytes. Build and run with .ci/fuzz_text.sh, which points
 * BG_GOLDEN_DIR at ../shared/golden. */
#include <bitgrad/text.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bg_tokenizer *vocab[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("BG_GOLDEN_DIR");
    const char *names[2] = { "llama-spm", "gpt-2" };
    for (int i = 0; i < 2; i++) {
        char path[4096], err[512];
        snprintf(path, sizeof path, "%s/llama-vocab/ggml-vocab-%s.gguf",
                 dir ? dir : "../shared/golden", names[i]);
        if (bg_tokenizer_load(path, &vocab[i], err, sizeof err) != 0) {
            fprintf(stderr, "fuzz_text: %s: %s (set BG_GOLDEN_DIR)\n", path, err);
            exit(1);
        }
    }
    return 0;
}

static void check_decode(const bg_tokenizer *t, const int32_t *ids, int64_t n)
{
    int64_t len = bg_tokenizer_decode(t, ids, n, NULL, 0);
    if (len < 0) abort();
    char *s = malloc((size_t)len + 1);
    if (bg_tokenizer_decode(t, ids, n, s, (size_t)len) != len) abort();
    /* streamed: the pieces' bytes, all of them, whatever the UTF-8 */
    bg_detokenizer d;
    bg_detokenizer_init(&d, t);
    char out[4096];
    int64_t streamed = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = bg_detokenizer_push(&d, ids[i], out, sizeof out);
        if (r < 0) abort();
        streamed += r;
    }
    streamed += bg_detokenizer_flush(&d, out, sizeof out);
    int64_t pieces = 0;
    for (int64_t i = 0; i < n; i++) pieces += bg_tokenizer_piece(t, ids[i], NULL, 0);
    /* SentencePiece drops at most one leading space at the start */
    if (streamed > pieces || streamed < pieces - 1) abort();
    free(s);
}

static void fuzz_encode(const bg_tokenizer *t, const char *text, size_t len, bool special)
{
    int64_t n = bg_tokenizer_encode(t, text, len, special, NULL, 0);
    if (n < 0) abort();
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    if (bg_tokenizer_encode(t, text, len, special, ids, n) != n) abort();
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= bg_tokenizer_n_vocab(t)) abort();
    check_decode(t, ids, n);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int mode = data[0] % 5;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (mode < 4) {
        fuzz_encode(vocab[mode & 1], text, len, mode >= 2);
        return 0;
    }
    bg_gguf *g = NULL;
    char err[512] = "";
    if (bg_gguf_open_memory(&g, text, len, err, sizeof err) != 0) return 0;
    bg_tokenizer *t = NULL;
    int rc = bg_tokenizer_from_gguf(g, &t, err, sizeof err);
    if (rc != 0 && (t != NULL || err[0] == 0)) abort(); /* refused: with a message, nothing out */
    if (t) fuzz_encode(t, "Hello world, \xc3\xa9t\xc3\xa9 \xff 123!", 22, true);
    bg_tokenizer_free(&t);
    bg_gguf_free(&g);
    return 0;
}
