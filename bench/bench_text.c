/* bench_text.c - tokenizer throughput: MB/s encoding English-like text (about 4 MB, made
 * deterministically from common words, punctuation and line breaks) on llama.cpp's llama-spm
 * (SentencePiece) and gpt-2 (byte-level BPE) vocabularies, as one call and as 1 KB
 * paragraphs, and the bytes each tokenizer's tables occupy. One JSON line per workload; the
 * figures are the best of 3 runs, on one thread: MB per CPU second of the process (what one
 * core does, also on a busy machine) and MB per wall second.
 * Each line also carries the token ids' count and FNV-1a hash (ids as little-endian int32),
 * which bench/llama_tok_bench.c prints for llama.cpp's tokenizer on the same bytes.
 * Run: BG_GOLDEN_DIR=../shared/golden ./bench_text   (exits 77 without the golden files)
 *      ./bench_text --dump-text FILE   writes the text to FILE and exits */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bitgrad/text.h>

static double now_s(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* clang-format off */
static const char *const words[] = {
    "the", "of", "and", "to", "in", "is", "was", "that", "for", "it", "with", "as", "on", "be",
    "at", "by", "this", "had", "not", "are", "but", "from", "or", "have", "an", "they", "which",
    "one", "you", "were", "her", "all", "she", "there", "would", "their", "we", "him", "been",
    "has", "when", "who", "will", "more", "no", "if", "out", "so", "said", "what", "up", "its",
    "about", "into", "than", "them", "can", "only", "other", "new", "some", "could", "time",
    "these", "two", "may", "then", "do", "first", "any", "my", "now", "such", "like", "our",
    "over", "man", "me", "even", "most", "made", "after", "also", "did", "many", "before",
    "must", "through", "years", "where", "much", "your", "way", "well", "down", "should",
    "because", "each", "just", "those", "people", "how", "too", "little", "state", "good",
    "very", "make", "world", "still", "own", "see", "men", "work", "long", "get", "here",
    "between", "both", "life", "being", "under", "never", "day", "same", "another", "know",
    "while", "last", "might", "us", "great", "old", "year", "off", "come", "since", "against",
    "go", "came", "right", "used", "take", "three", "training", "model", "weights", "ternary",
    "language", "network", "gradient", "tokenizer", "quantization", "experiment", "results",
    "performance", "understanding", "government", "development", "information", "important",
};
/* clang-format on */
#define N_WORDS (sizeof words / sizeof words[0])

static char *make_text(size_t target, size_t *len)
{
    char *s = malloc(target + 64);
    uint64_t st = 12345;
    size_t n = 0;
    int in_sentence = 0;
    while (n < target) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (uint32_t)(st >> 33);
        const char *w = words[r % N_WORDS];
        size_t wl = strlen(w);
        memcpy(s + n, w, wl);
        if (in_sentence == 0 && s[n] >= 'a') s[n] = (char)(s[n] - 32);
        n += wl;
        in_sentence++;
        unsigned p = (r >> 12) % 64;
        if (in_sentence > 6 && p < 6) {
            s[n++] = p < 4 ? '.' : p < 5 ? '?' : '!';
            in_sentence = 0;
            if ((r >> 20) % 8 == 0) s[n++] = '\n';
            else
                s[n++] = ' ';
        } else if (p < 9) {
            s[n++] = ',';
            s[n++] = ' ';
        } else if (p == 9) {
            n += (size_t)sprintf(s + n, " %u ", (r >> 3) % 2000);
        } else {
            s[n++] = ' ';
        }
    }
    *len = n;
    return s;
}

/* FNV-1a 64 over the ids (as little-endian int32) of encoding s in pieces of `chunk` bytes,
 * untimed; *count gets the number of ids. */
static uint64_t ids_hash(const bg_tokenizer *t, const char *s, size_t len, size_t chunk,
                         int32_t *ids, int64_t cap, int64_t *count)
{
    uint64_t h = 1469598103934665603ull;
    *count = 0;
    for (size_t off = 0; off < len; off += chunk) {
        size_t l = len - off < chunk ? len - off : chunk;
        int64_t n = bg_tokenizer_encode(t, s + off, l, false, ids, cap);
        if (n < 0 || n > cap) return 0;
        for (int64_t i = 0; i < n; i++)
            for (int b = 0; b < 4; b++) {
                h ^= ((uint32_t)ids[i] >> (8 * b)) & 0xffu;
                h *= 1099511628211ull;
            }
        *count += n;
    }
    return h;
}

static int dump_text(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "bench_text: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

/* Best of 3: CPU seconds of this process (what one core spends, whatever else runs on the
 * machine) and wall seconds. */
static double encode_time(const bg_tokenizer *t, const char *s, size_t len, size_t chunk,
                          int32_t *ids, int64_t cap, int64_t *n_tokens, double *wall)
{
    double best = 1e30;
    *wall = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s(CLOCK_PROCESS_CPUTIME_ID), w0 = now_s(CLOCK_MONOTONIC);
        int64_t total = 0;
        for (size_t off = 0; off < len; off += chunk) {
            size_t l = len - off < chunk ? len - off : chunk;
            int64_t n = bg_tokenizer_encode(t, s + off, l, false, ids, cap);
            if (n < 0 || n > cap) return -1;
            total += n;
        }
        double dt = now_s(CLOCK_PROCESS_CPUTIME_ID) - t0, dw = now_s(CLOCK_MONOTONIC) - w0;
        if (dt < best) best = dt;
        if (dw < *wall) *wall = dw;
        *n_tokens = total;
    }
    return best;
}

int main(int argc, char **argv)
{
    const char *dir = getenv("BG_GOLDEN_DIR");
    const char *names[2] = { "llama-spm", "gpt-2" };
    size_t len;
    char *text = make_text((size_t)4 << 20, &len);
    if (argc == 3 && strcmp(argv[1], "--dump-text") == 0) {
        int rc = dump_text(argv[2], text, len);
        free(text);
        return rc;
    }
    int64_t cap = (int64_t)len + 16;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    for (int v = 0; v < 2; v++) {
        char path[4096], err[512];
        snprintf(path, sizeof path, "%s/llama-vocab/ggml-vocab-%s.gguf",
                 dir ? dir : "../shared/golden", names[v]);
        bg_tokenizer *t = NULL;
        if (bg_tokenizer_load(path, &t, err, sizeof err) != 0) {
            fprintf(stderr, "bench_text: %s (set BG_GOLDEN_DIR)\n", err);
            free(text);
            free(ids);
            return 77;
        }
        size_t chunks[2] = { len, 1024 };
        for (int c = 0; c < 2; c++) {
            int64_t n_tok = 0, n_hashed = 0;
            uint64_t h = ids_hash(t, text, len, chunks[c], ids, cap, &n_hashed);
            double wall, dt = encode_time(t, text, len, chunks[c], ids, cap, &n_tok, &wall);
            if (dt < 0 || n_hashed != n_tok) {
                fprintf(stderr, "bench_text: encoding failed\n");
                bg_tokenizer_free(&t);
                free(text);
                free(ids);
                return 1;
            }
            printf("{\"bench\":\"tokenize\",\"vocab\":\"%s\",\"n_vocab\":%lld,\"text_bytes\":%zu,"
                   "\"chunk_bytes\":%zu,\"tokens\":%lld,\"cpu_s\":%.4f,\"wall_s\":%.4f,"
                   "\"mb_per_cpu_s\":%.2f,\"mb_per_wall_s\":%.2f,\"tokenizer_bytes\":%zu,"
                   "\"ids_fnv64\":\"%016llx\"}\n",
                   names[v], (long long)bg_tokenizer_n_vocab(t), len, chunks[c], (long long)n_tok,
                   dt, wall, dt > 0 ? (double)len / 1e6 / dt : 0.0,
                   wall > 0 ? (double)len / 1e6 / wall : 0.0, bg_tokenizer_memory(t),
                   (unsigned long long)h);
            fflush(stdout);
        }
        bg_tokenizer_free(&t);
    }
    free(text);
    free(ids);
    return 0;
}
