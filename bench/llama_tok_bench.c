/* llama_tok_bench.c - llama.cpp's tokenizer (llama_tokenize) on the text bench_text encodes,
 * for comparison with bitgrad's. Not built by Meson: it links a llama.cpp build. It loads a
 * vocab-only GGUF, encodes the text file as one call and as 1 KB pieces (no BOS, no special
 * parsing, as bench_text), best of 3 on one thread (CPU seconds of the process and wall
 * seconds), and prints one JSON line per workload with the ids' count and FNV-1a hash (ids as
 * little-endian int32), which must equal bench_text's "ids_fnv64", and the peak RSS.
 * Build and run: see bench/README.md ("llama.cpp's tokenizer"). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "llama.h"

static double now_s(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void quiet_log(enum ggml_log_level level, const char *text, void *user)
{
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return s;
}

/* Encodes s in pieces of `chunk` bytes; returns the number of ids or -1. With hash != NULL,
 * folds the ids into *hash (FNV-1a 64). */
static int64_t encode_all(const struct llama_vocab *v, const char *s, size_t len, size_t chunk,
                          llama_token *ids, int32_t cap, uint64_t *hash)
{
    int64_t total = 0;
    for (size_t off = 0; off < len; off += chunk) {
        size_t l = len - off < chunk ? len - off : chunk;
        int32_t n = llama_tokenize(v, s + off, (int32_t)l, ids, cap, false, false);
        if (n < 0) return -1;
        if (hash)
            for (int32_t i = 0; i < n; i++)
                for (int b = 0; b < 4; b++) {
                    *hash ^= ((uint32_t)ids[i] >> (8 * b)) & 0xffu;
                    *hash *= 1099511628211ull;
                }
        total += n;
    }
    return total;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: llama_tok_bench VOCAB.gguf TEXT_FILE\n");
        return 2;
    }
    size_t len;
    char *text = read_file(argv[2], &len);
    if (!text) {
        fprintf(stderr, "llama_tok_bench: cannot read %s\n", argv[2]);
        return 1;
    }
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    double l0 = now_s(CLOCK_MONOTONIC);
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    double load_s = now_s(CLOCK_MONOTONIC) - l0;
    if (!model) {
        fprintf(stderr, "llama_tok_bench: cannot load %s\n", argv[1]);
        free(text);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int32_t cap = (int32_t)len + 16;
    llama_token *ids = malloc((size_t)cap * sizeof *ids);
    size_t chunks[2] = { len, 1024 };
    int rc = 0;
    for (int c = 0; c < 2 && rc == 0; c++) {
        uint64_t h = 1469598103934665603ull;
        int64_t n_tok = encode_all(vocab, text, len, chunks[c], ids, cap, &h);
        double best = 1e30, wall = 1e30;
        for (int rep = 0; rep < 3 && n_tok >= 0; rep++) {
            double t0 = now_s(CLOCK_PROCESS_CPUTIME_ID), w0 = now_s(CLOCK_MONOTONIC);
            if (encode_all(vocab, text, len, chunks[c], ids, cap, NULL) != n_tok) n_tok = -1;
            double dt = now_s(CLOCK_PROCESS_CPUTIME_ID) - t0, dw = now_s(CLOCK_MONOTONIC) - w0;
            if (dt < best) best = dt;
            if (dw < wall) wall = dw;
        }
        if (n_tok < 0) {
            fprintf(stderr, "llama_tok_bench: llama_tokenize failed\n");
            rc = 1;
            break;
        }
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("{\"bench\":\"llama_tokenize\",\"n_vocab\":%d,\"text_bytes\":%zu,"
               "\"chunk_bytes\":%zu,\"tokens\":%lld,\"cpu_s\":%.4f,\"wall_s\":%.4f,"
               "\"mb_per_cpu_s\":%.2f,\"mb_per_wall_s\":%.2f,\"load_s\":%.4f,"
               "\"peak_rss_kib\":%ld,\"ids_fnv64\":\"%016llx\"}\n",
               llama_vocab_n_tokens(vocab), len, chunks[c], (long long)n_tok, best, wall,
               (double)len / 1e6 / best, (double)len / 1e6 / wall, load_s, ru.ru_maxrss,
               (unsigned long long)h);
        fflush(stdout);
    }
    free(ids);
    llama_model_free(model);
    llama_backend_free();
    free(text);
    return rc;
}
