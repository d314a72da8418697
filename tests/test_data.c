/* test_data.c - training data (src/text/dataset.c): plain text, JSON Lines with "text" and
 * with "prompt" + "completion" (targets only on the completion and its EOS), windows with the
 * ignore index, malformed lines (the error names file:line), empty files, a huge line, and a
 * real SentencePiece vocabulary (llama.cpp's ggml-vocab-llama-spm.gguf from the golden data,
 * skipped when absent or unsupported). */
#include <bitgrad.h>
#include <bitgrad/text.h>
#include <unistd.h>

#include "harness.h"

static char dir[] = "/tmp/bg_test_data_XXXXXX";

/* Writes len bytes to dir/name; returns the path (static buffer per call site is enough). */
static const char *put(const char *name, const char *text, size_t len)
{
    static char path[8][512];
    static int slot;
    char *p = path[slot++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fwrite(text, 1, len, f);
        fclose(f);
    }
    return p;
}

static const char *puts_file(const char *name, const char *text)
{
    return put(name, text, strlen(text));
}

static void test_plain(const bg_tokenizer *bytes)
{
    bg_dataset *d = NULL;
    char err[256];
    const char *text = "hello\nworld {\"text\": 1}\n";
    int rc = bg_dataset_load(puts_file("plain.txt", text), bytes, &d, err, sizeof err);
    if (!CHECK(rc == BG_OK, "plain text: %s", err)) return;
    int64_t n = bg_dataset_n_tokens(d);
    const int32_t *t = bg_dataset_tokens(d);
    const uint8_t *mk = bg_dataset_target_mask(d);
    bool same = n == (int64_t)strlen(text), all = true;
    for (int64_t i = 0; same && i < n; i++) same = t[i] == (unsigned char)text[i];
    for (int64_t i = 0; i < n; i++) all = all && mk[i] == 1;
    CHECK(same, "plain text: tokens are the bytes (%lld tokens)", (long long)n);
    CHECK(all, "plain text: every token a target");
    CHECK(bg_dataset_n_documents(d) == 1, "plain text: one document");
    int32_t ids[4], tg[4];
    CHECK(bg_dataset_window(d, 2, 4, ids, tg, -100) == BG_OK && ids[0] == 'l' && tg[0] == 'l' &&
              tg[2] == '\n' && tg[3] == 'w',
          "window: ids and next-token targets");
    CHECK(bg_dataset_window(d, n - 5, 4, ids, tg, -100) == BG_OK, "the last window fits");
    CHECK(bg_dataset_window(d, n - 4, 4, ids, tg, -100) == BG_EINVAL, "a window past the end");
    CHECK(bg_dataset_window(d, -1, 4, ids, tg, -100) == BG_EINVAL, "a negative start");
    bg_dataset_free(&d);
    CHECK(d == NULL, "free sets NULL");
}

static void test_jsonl_text(const bg_tokenizer *bytes)
{
    bg_dataset *d = NULL;
    char err[256];
    /* blank lines, CRLF, escapes (\n, \u00e9 = c3 a9, a surrogate pair = f0 9f 98 80), extra keys */
    const char *text =
        "\n{\"text\": \"ab\\n\", \"id\": 7}\r\n   \n{\"text\":\"\\u00e9\\ud83d\\ude00\"}";
    int rc = bg_dataset_load(puts_file("t.jsonl", text), bytes, &d, err, sizeof err);
    if (!CHECK(rc == BG_OK, "jsonl text: %s", err)) return;
    static const unsigned char want[] = { 'a', 'b', '\n', 0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x80 };
    int64_t n = bg_dataset_n_tokens(d);
    bool same = n == (int64_t)sizeof want;
    for (int64_t i = 0; same && i < n; i++) same = bg_dataset_tokens(d)[i] == want[i];
    CHECK(same, "jsonl text: the decoded strings, concatenated (%lld tokens)", (long long)n);
    CHECK(bg_dataset_n_documents(d) == 2, "jsonl text: 2 documents (%lld)",
          (long long)bg_dataset_n_documents(d));
    bg_dataset_free(&d);
    /* a .txt file whose first non-blank byte is '{' is JSON Lines too */
    rc = bg_dataset_load(puts_file("t2.txt", "  \n{\"text\": \"xy\"}\n"), bytes, &d, err,
                         sizeof err);
    CHECK(rc == BG_OK && bg_dataset_n_tokens(d) == 2, "a '{' first: read as JSON Lines");
    bg_dataset_free(&d);
}

static void test_prompt_completion(const bg_tokenizer *bytes)
{
    bg_dataset *d = NULL;
    char err[256];
    const char *text = "{\"prompt\": \"Q:1+1=\", \"completion\": \"2\"}\n"
                       "{\"text\": \"zz\"}\n"
                       "{\"completion\": \"ab\", \"prompt\": \"\"}\n";
    int rc = bg_dataset_load(puts_file("pc.jsonl", text), bytes, &d, err, sizeof err);
    if (!CHECK(rc == BG_OK, "prompt/completion: %s", err)) return;
    const char *stream = "Q:1+1=2zzab";
    const char *mask = "00000011111"; /* bytes: no BOS, no EOS */
    int64_t n = bg_dataset_n_tokens(d);
    bool ok = n == (int64_t)strlen(stream);
    for (int64_t i = 0; ok && i < n; i++)
        ok = bg_dataset_tokens(d)[i] == stream[i] && bg_dataset_target_mask(d)[i] == mask[i] - '0';
    CHECK(ok, "prompt tokens are not targets, completion and text tokens are");
    CHECK(bg_dataset_n_documents(d) == 3, "3 documents");
    int32_t ids[6], tg[6];
    CHECK(bg_dataset_window(d, 0, 6, ids, tg, -100) == BG_OK, "window");
    CHECK(tg[0] == -100 && tg[4] == -100 && tg[5] == '2' && ids[5] == '=',
          "window targets: the ignore index on the prompt, '2' after '='");
    bg_dataset_free(&d);
}

/* Each malformed file must fail with "<path>:<line>:" in the message. */
static void test_malformed(const bg_tokenizer *bytes)
{
    static const struct {
        const char *text;
        int line;
        const char *what;
    } cases[] = {
        { "{\"text\": \"a\"}\n{\"text\": \"b\"\n", 2, "unterminated object" },
        { "{\"text\": \"a\"}\n\n[1, 2]\n", 3, "an array" },
        { "{\"text\": 5}\n", 1, "a number as text" },
        { "{\"prompt\": \"p\"}\n", 1, "a prompt without completion" },
        { "{\"text\": \"a\", \"prompt\": \"p\", \"completion\": \"c\"}\n", 1, "text and a pair" },
        { "{\"text\": \"a\"} trailing\n", 1, "text after the object" },
        { "{\"text\": \"a\"}\n{\"text\": \"a\"}\n{\"txt\": \"a\"}\n", 3, "no known key" },
        { "{\"text\": \"a\"}\n{\"text\": \"\\x\"}\n", 2, "a bad escape" },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[32], want[600];
        snprintf(name, sizeof name, "bad%zu.jsonl", k);
        const char *path = puts_file(name, cases[k].text);
        snprintf(want, sizeof want, "%s:%d:", path, cases[k].line);
        bg_dataset *d = (bg_dataset *)1;
        char err[512] = "";
        int rc = bg_dataset_load(path, bytes, &d, err, sizeof err);
        CHECK(rc == BG_EFORMAT && d == NULL && strstr(err, want),
              "%s: rc %d, message '%s' should contain '%s'", cases[k].what, rc, err, want);
    }
}

static void test_empty_and_missing(const bg_tokenizer *bytes)
{
    bg_dataset *d = NULL;
    char err[512] = "";
    const char *p = puts_file("empty.txt", "");
    CHECK(bg_dataset_load(p, bytes, &d, err, sizeof err) == BG_EFORMAT && !d && strstr(err, p),
          "empty file refused: '%s'", err);
    p = puts_file("blank.jsonl", "\n  \n\n");
    CHECK(bg_dataset_load(p, bytes, &d, err, sizeof err) == BG_EFORMAT && !d && strstr(err, p),
          "JSON Lines of blank lines refused: '%s'", err);
    p = puts_file("emptytext.jsonl", "{\"text\": \"\"}\n");
    CHECK(bg_dataset_load(p, bytes, &d, err, sizeof err) == BG_EFORMAT && !d,
          "records without tokens refused: '%s'", err);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no_such_file.txt", dir);
    CHECK(bg_dataset_load(missing, bytes, &d, err, sizeof err) == BG_EIO && strstr(err, missing),
          "a missing file: '%s'", err);
    CHECK(bg_dataset_load(dir, bytes, &d, err, sizeof err) < 0 && !d, "a directory: '%s'", err);
    CHECK(bg_dataset_load(NULL, bytes, &d, err, sizeof err) == BG_EINVAL, "NULL path");
}

static void test_huge_line(const bg_tokenizer *bytes)
{
    size_t n = (size_t)6 << 20; /* 6 MiB of text on one JSON line, and as plain text */
    char *buf = malloc(n + 32);
    if (!CHECK(buf, "malloc")) return;
    memcpy(buf, "{\"text\": \"", 10);
    for (size_t i = 0; i < n; i++) buf[10 + i] = (char)('a' + i % 26);
    memcpy(buf + 10 + n, "\"}\n", 3);
    bg_dataset *d = NULL;
    char err[256];
    int rc = bg_dataset_load(put("huge.jsonl", buf, n + 13), bytes, &d, err, sizeof err);
    CHECK(rc == BG_OK && bg_dataset_n_tokens(d) == (int64_t)n &&
              bg_dataset_tokens(d)[n - 1] == (int32_t)('a' + (n - 1) % 26),
          "a %zu-byte JSON line: %s", n, rc ? err : "ok");
    bg_dataset_free(&d);
    rc = bg_dataset_load(put("huge.txt", buf + 10, n), bytes, &d, err, sizeof err);
    CHECK(rc == BG_OK && bg_dataset_n_tokens(d) == (int64_t)n, "a %zu-byte plain line", n);
    bg_dataset_free(&d);
    free(buf);
}

/* A real vocabulary: prompt + completion tokenized as one text; the prompt's own tokens that
 * begin it are not targets; BOS first (SentencePiece adds it), EOS last and a target. */
static void test_spm(void)
{
    const char *gd = getenv("BG_GOLDEN_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/llama-vocab/ggml-vocab-llama-spm.gguf",
             gd ? gd : "../shared/golden");
    bg_tokenizer *t = NULL;
    char err[512];
    int rc = bg_tokenizer_load(path, &t, err, sizeof err);
    if (rc) {
        printf("SKIP SentencePiece part: %s\n", err);
        return;
    }
    const char *prompt = "Question: what is the capital of France? Answer:";
    const char *completion = " Paris";
    char line[512], both[512];
    snprintf(line, sizeof line, "{\"prompt\": \"%s\", \"completion\": \"%s\"}\n", prompt,
             completion);
    snprintf(both, sizeof both, "%s%s", prompt, completion);
    int32_t all[256], pr[256];
    int64_t na = bg_tokenizer_encode(t, both, strlen(both), false, all, 256);
    int64_t np = bg_tokenizer_encode(t, prompt, strlen(prompt), false, pr, 256);
    bg_dataset *d = NULL;
    rc = bg_dataset_load(puts_file("spm.jsonl", line), t, &d, err, sizeof err);
    if (CHECK(rc == BG_OK && na > 0 && np > 0 && np < na, "spm dataset: %s", rc ? err : "")) {
        int32_t bos = bg_tokenizer_bos(t), eos = bg_tokenizer_eos(t);
        int64_t n = bg_dataset_n_tokens(d), off = bg_tokenizer_add_bos(t) ? 1 : 0;
        const int32_t *tk = bg_dataset_tokens(d);
        const uint8_t *mk = bg_dataset_target_mask(d);
        CHECK(n == off + na + 1, "BOS + %lld tokens + EOS (got %lld)", (long long)na, (long long)n);
        CHECK(!off || (tk[0] == bos && mk[0] == 0), "BOS first, not a target");
        bool ok = n == off + na + 1;
        for (int64_t i = 0; ok && i < na; i++)
            ok = tk[off + i] == all[i] && mk[off + i] == (i >= np);
        CHECK(ok, "the joint tokens; the prompt's %lld not targets, the completion's are",
              (long long)np);
        CHECK(n > 0 && tk[n - 1] == eos && mk[n - 1] == 1, "EOS last, a target");
    }
    bg_dataset_free(&d);
    bg_tokenizer_free(&t);
}

static void cleanup(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        printf("cannot create a temporary folder\n");
        return 1;
    }
    bg_tokenizer *bytes = NULL;
    if (!CHECK(bg_tokenizer_new_bytes(&bytes) == BG_OK, "bytes tokenizer")) return 1;
    test_plain(bytes);
    test_jsonl_text(bytes);
    test_prompt_completion(bytes);
    test_malformed(bytes);
    test_empty_and_missing(bytes);
    test_huge_line(bytes);
    test_spm();
    bg_tokenizer_free(&bytes);
    cleanup();
    return harness_summary();
}
