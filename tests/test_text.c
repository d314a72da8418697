/* test_text.c - the tokenizers against llama.cpp's own vocabulary tests (../shared/golden/
 * llama-vocab: 46 texts per vocabulary, the ids llama.cpp gives them, compared exactly), their
 * round trips, bitgrad's byte vocabulary (built in and as the exporter writes it), malformed and
 * unsupported metadata (small GGUFs built in memory), special tokens, and the streaming
 * detokenizer holding back partial UTF-8.
 * Run: BG_GOLDEN_DIR=../shared/golden ./test_text   (the golden part is skipped without it) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitgrad/text.h"
#include "harness.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = 0;
    *size = (size_t)n;
    return buf;
}

/* Encodes with the two-call snprintf protocol; returns a malloc'd array and its count. */
static int32_t *encode(const bg_tokenizer *t, const char *s, size_t len, bool special, int64_t *n)
{
    *n = bg_tokenizer_encode(t, s, len, special, NULL, 0);
    if (*n < 0) return NULL;
    int32_t *ids = malloc((size_t)(*n ? *n : 1) * sizeof *ids);
    int64_t n2 = bg_tokenizer_encode(t, s, len, special, ids, *n);
    CHECK(n2 == *n, "encode: second call gives %lld ids, first said %lld", (long long)n2,
          (long long)*n);
    return ids;
}

static char *decode(const bg_tokenizer *t, const int32_t *ids, int64_t n, int64_t *len)
{
    *len = bg_tokenizer_decode(t, ids, n, NULL, 0);
    if (*len < 0) return NULL;
    char *s = malloc((size_t)*len + 1);
    int64_t l2 = bg_tokenizer_decode(t, ids, n, s, (size_t)*len);
    CHECK(l2 == *len, "decode: second call gives %lld bytes, first said %lld", (long long)l2,
          (long long)*len);
    s[*len] = 0;
    return s;
}

/* ---- llama.cpp's vocabulary tests -------------------------------------------------------- */

static const char *SEP = "\n__ggml_vocab_test__\n";

/* Parses one line of space-separated ids. */
static int64_t parse_ids(const char *line, const char *end, int32_t *ids, int64_t cap)
{
    int64_t n = 0;
    const char *p = line;
    while (p < end) {
        while (p < end && *p == ' ') p++;
        if (p >= end) break;
        char *q;
        long v = strtol(p, &q, 10);
        if (q == p) return -1;
        if (n < cap) ids[n] = (int32_t)v;
        n++;
        p = q;
    }
    return n;
}

typedef struct golden_stats {
    int texts, exact, roundtrip;
} golden_stats;

static void check_text(const bg_tokenizer *t, const char *name, int k, const char *txt, size_t tl,
                       const char *line, const char *lend, golden_stats *st)
{
    int32_t want[4096];
    int64_t nw = parse_ids(line, lend, want, 4096);
    int64_t ng;
    int32_t *got = encode(t, txt, tl, false, &ng);
    st->texts++;
    bool same = got && nw == ng && memcmp(got, want, (size_t)ng * sizeof *got) == 0;
    st->exact += same;
    if (!CHECK(same, "%s text %d: %lld ids, llama.cpp %lld", name, k, (long long)ng,
               (long long)nw)) {
        for (int64_t i = 0; i < ng && i < nw; i++)
            if (got[i] != want[i]) {
                printf("     first difference at %lld: %d vs %d\n", (long long)i, got[i], want[i]);
                break;
            }
    }
    int64_t dl;
    char *back = got ? decode(t, got, ng, &dl) : NULL;
    bool rt = back && (size_t)dl == tl && memcmp(back, txt, tl) == 0;
    st->roundtrip += rt;
    if (!rt) printf("     %s text %d: decode(encode(x)) != x: '%.60s' vs '%.60s'\n", name, k,
                    back ? back : "", txt);
    free(back);
    free(got);
}

static void golden_vocab(const char *dir, const char *name, int want_roundtrip_fail)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/llama-vocab/ggml-vocab-%s.gguf", dir, name);
    bg_tokenizer *t = NULL;
    char err[512];
    int rc = bg_tokenizer_load(path, &t, err, sizeof err);
    if (!CHECK(rc == 0, "%s: load: %s", name, err)) return;
    size_t ni, no;
    snprintf(path, sizeof path, "%s/llama-vocab/ggml-vocab-%s.gguf.inp", dir, name);
    char *inp = read_file(path, &ni);
    snprintf(path, sizeof path, "%s/llama-vocab/ggml-vocab-%s.gguf.out", dir, name);
    char *out = read_file(path, &no);
    if (!CHECK(inp && out, "%s: reading .inp / .out", name)) goto done;
    golden_stats st = { 0 };
    const char *p = inp, *line = out;
    for (int k = 0;; k++) {
        const char *e = strstr(p, SEP);
        if (!e) break;
        const char *lend = strchr(line, '\n');
        if (!CHECK(lend, "%s: .out has fewer lines than texts", name)) break;
        check_text(t, name, k, p, (size_t)(e - p), line, lend, &st);
        p = e + strlen(SEP);
        line = lend + 1;
    }
    CHECK(st.texts == 46, "%s: %d texts (46 expected)", name, st.texts);
    CHECK(st.texts - st.roundtrip == want_roundtrip_fail,
          "%s: %d texts do not round-trip (%d expected)", name, st.texts - st.roundtrip,
          want_roundtrip_fail);
    printf("%s: %d/%d texts give llama.cpp's ids exactly, %d round-trip, memory %zu bytes\n",
           name, st.exact, st.texts, st.roundtrip, bg_tokenizer_memory(t));
done:
    free(inp);
    free(out);
    bg_tokenizer_free(&t);
}

/* ---- the byte vocabulary ------------------------------------------------------------------- */

static void test_bytes(void)
{
    bg_tokenizer *t = NULL;
    CHECK(bg_tokenizer_new_bytes(&t) == 0, "new_bytes");
    CHECK(strcmp(bg_tokenizer_kind(t), "bytes") == 0, "kind bytes");
    CHECK(bg_tokenizer_n_vocab(t) == 256, "256 tokens");
    CHECK(bg_tokenizer_bos(t) == -1 && bg_tokenizer_eos(t) == -1 && !bg_tokenizer_add_bos(t),
          "no BOS/EOS");
    const char s[] = "h\xc3\xa9\x00\xff!";
    int64_t n;
    int32_t *ids = encode(t, s, sizeof s - 1, true, &n);
    bool ok = n == (int64_t)sizeof s - 1;
    for (int64_t i = 0; ok && i < n; i++) ok = ids[i] == (unsigned char)s[i];
    CHECK(ok, "bytes: id = byte value");
    int64_t dl;
    char *back = decode(t, ids, n, &dl);
    CHECK(dl == n && memcmp(back, s, (size_t)n) == 0, "bytes: decode inverts encode");
    char pc[4];
    CHECK(bg_tokenizer_piece(t, 0xc3, pc, sizeof pc) == 1 && (unsigned char)pc[0] == 0xc3,
          "bytes: piece");
    CHECK(bg_tokenizer_piece(t, 256, pc, sizeof pc) == BG_EINVAL, "bytes: piece out of range");
    int32_t bad = 300;
    CHECK(bg_tokenizer_decode(t, &bad, 1, back, 1) == BG_EINVAL, "bytes: decode out of range");
    /* snprintf protocol: a short buffer gets the prefix, the result is the full count */
    int32_t two[2] = { -7, -7 };
    CHECK(bg_tokenizer_encode(t, "abc", 3, false, two, 2) == 3 && two[0] == 'a' && two[1] == 'b',
          "encode: short buffer");
    free(back);
    free(ids);
    bg_tokenizer_free(&t);
    CHECK(t == NULL, "free sets NULL");
    bg_tokenizer_free(&t);
}

int main(void)
{
    test_bytes();
    const char *dir = getenv("BG_GOLDEN_DIR");
    if (dir) {
        golden_vocab(dir, "llama-spm", 0);
        golden_vocab(dir, "phi-3", 0);
        golden_vocab(dir, "gpt-2", 2);
    } else {
        printf("BG_GOLDEN_DIR unset: llama.cpp's vocabulary tests skipped\n");
    }
    return harness_summary();
}
