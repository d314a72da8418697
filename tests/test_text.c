/* test_text.c - the tokenizers against llama.cpp's own vocabulary tests (../shared/golden/
 * llama-vocab: 46 texts per vocabulary, the ids llama.cpp gives them, compared exactly), their
 * round trips, bitgrad's byte vocabulary (built in and as the exporter writes it), malformed and
 * unsupported metadata (small GGUFs built in memory), special tokens, and the streaming
 * detokenizer holding back partial UTF-8.
 * Run: BG_GOLDEN_DIR=../shared/golden ./test_text   (the golden part is skipped without it) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bitgrad/export.h"
#include "bitgrad/nn.h"
#include "bitgrad/text.h"
#include "harness.h"
#include "text/tokenizer_internal.h" /* bg__pretok_split: the static library exports it */

static char tmp_dir[1024];

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
    int64_t dl = -1;
    char *back = got ? decode(t, got, ng, &dl) : NULL;
    bool rt = back && (size_t)dl == tl && memcmp(back, txt, tl) == 0;
    st->roundtrip += rt;
    if (!rt)
        printf("     %s text %d: decode(encode(x)) != x (%lld vs %zu bytes)\n", name, k,
               (long long)dl, tl);
    free(back);
    /* the streaming detokenizer's pieces are llama.cpp's, without gpt2's clean_spaces: they
     * give the text back exactly, whatever the vocabulary */
    if (got) {
        bg_detokenizer d;
        bg_detokenizer_init(&d, t);
        char *acc = malloc(tl + 64 * (size_t)ng + 64);
        size_t al = 0;
        bool ok = true;
        for (int64_t i = 0; i < ng && ok; i++) {
            int64_t r = bg_detokenizer_push(&d, got[i], acc + al, 64 * (size_t)ng + 64);
            ok = r >= 0;
            al += ok ? (size_t)r : 0;
        }
        al += (size_t)bg_detokenizer_flush(&d, acc + al, 64);
        CHECK(ok && al == tl && memcmp(acc, txt, tl) == 0, "%s text %d: streamed text differs",
              name, k);
        free(acc);
    }
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
    printf("%s: %d/%d texts give llama.cpp's ids exactly, %d round-trip, memory %zu bytes\n", name,
           st.exact, st.texts, st.roundtrip, bg_tokenizer_memory(t));
done:
    free(inp);
    free(out);
    bg_tokenizer_free(&t);
}

/* SentencePiece's fast paths (word by word, and a word cache within a call) against the plain
 * algorithm over the whole text, on a long text made of all the test texts three times over
 * and some invalid UTF-8. */
static void spm_fast_paths(const char *dir, const char *name)
{
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/llama-vocab/ggml-vocab-%s.gguf", dir, name);
    bg_tokenizer *t = NULL;
    if (!CHECK(bg_tokenizer_load(path, &t, err, sizeof err) == 0, "%s: %s", name, err)) return;
    snprintf(path, sizeof path, "%s/llama-vocab/ggml-vocab-%s.gguf.inp", dir, name);
    size_t n;
    char *inp = read_file(path, &n);
    char *text = malloc(3 * n + 16);
    for (int r = 0; r < 3; r++) memcpy(text + r * n, inp, n);
    memcpy(text + 3 * n, "\xff\xe2\x96 \xc3", 5);
    size_t len = 3 * n + 5;
    int64_t n_fast, n_plain;
    CHECK(t->spm_word_split, "%s: no token has U+2581 after its start", name);
    int32_t *fast = encode(t, text, len, true, &n_fast);
    t->spm_word_split = false;
    int32_t *plain = encode(t, text, len, true, &n_plain);
    CHECK(n_fast == n_plain && memcmp(fast, plain, (size_t)n_fast * 4) == 0,
          "%s: word-by-word and cached ids == whole-text ids (%lld vs %lld ids)", name,
          (long long)n_fast, (long long)n_plain);
    free(fast);
    free(plain);
    free(text);
    free(inp);
    bg_tokenizer_free(&t);
}

/* BPE cuts long texts at safe newlines: cutting at every one of them (chunk 1) gives the ids
 * of the whole text (no cut), with both pre-tokenizers. */
static void bpe_chunks(const char *dir)
{
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/llama-vocab/ggml-vocab-gpt-2.gguf", dir);
    bg_tokenizer *t = NULL;
    if (!CHECK(bg_tokenizer_load(path, &t, err, sizeof err) == 0, "gpt-2: %s", err)) return;
    const char *names[3] = { "gpt-2", "llama-spm", "phi-3" };
    size_t len = 0, n;
    char *text = NULL;
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/llama-vocab/ggml-vocab-%s.gguf.inp", dir, names[k]);
        char *inp = read_file(path, &n);
        text = realloc(text, len + n + 64);
        memcpy(text + len, inp, n);
        len += n;
        free(inp);
    }
    const char extra[] = "a\n\xc2\x85"
                         "b\nc\n d\n\te\n\xe3\x80\x80"
                         "f\nx\n\xff\ny";
    memcpy(text + len, extra, sizeof extra - 1);
    len += sizeof extra - 1;
    for (int pre = BG_PRE_DEFAULT; pre <= BG_PRE_GPT2; pre++) {
        t->pre = pre;
        int64_t n_cut, n_whole;
        t->bpe_chunk = 1;
        int32_t *cut = encode(t, text, len, false, &n_cut);
        t->bpe_chunk = SIZE_MAX;
        int32_t *whole = encode(t, text, len, false, &n_whole);
        CHECK(n_cut == n_whole && memcmp(cut, whole, (size_t)n_cut * 4) == 0,
              "pre %d: text cut at every safe newline gives the whole text's ids (%lld vs %lld)",
              pre, (long long)n_cut, (long long)n_whole);
        free(cut);
        free(whole);
    }
    free(text);
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

/* ---- bitgrad's exporter: a byte model reads as the byte vocabulary ---------------------------- */

static void test_exported_byte_model(void)
{
    bg_ctx *ctx = NULL;
    if (!CHECK(bg_ctx_create(&ctx, BG_CPU) == 0, "ctx")) return;
    bg_bitnet_config c = bg_bitnet_default();
    c.n_vocab = 256;
    c.n_embd = 256;
    c.n_layer = 1;
    c.n_head = 4;
    c.n_head_kv = 4;
    c.n_ff = 256;
    c.n_ctx = 16;
    bg_module *m = bg_bitnet_new(ctx, &c);
    char path[1200], err[512] = "";
    snprintf(path, sizeof path, "%s/byte_model.gguf", tmp_dir);
    bg_export_options o = bg_export_default();
    int rc = m ? bg_bitnet_export(m, path, &o, err, sizeof err) : -1;
    if (CHECK(rc == 0, "export a byte model: %s", err)) {
        bg_tokenizer *t = NULL;
        rc = bg_tokenizer_load(path, &t, err, sizeof err);
        CHECK(rc == 0, "load the exported tokenizer: %s", err);
        if (t) {
            CHECK(strcmp(bg_tokenizer_kind(t), "bytes") == 0, "exported gpt2 bytes read as '%s'",
                  bg_tokenizer_kind(t));
            CHECK(bg_tokenizer_n_vocab(t) == 256, "256 tokens");
            CHECK(bg_tokenizer_bos(t) == o.bos_id && bg_tokenizer_eos(t) == o.eos_id,
                  "bos/eos from the file (%d %d)", bg_tokenizer_bos(t), bg_tokenizer_eos(t));
            CHECK(!bg_tokenizer_add_bos(t), "add_bos false as written");
            const char s[] = "Hi \xf0\x9f\x9a\x80\n\x01";
            int64_t n;
            int32_t *ids = encode(t, s, sizeof s - 1, true, &n);
            bool ok = n == (int64_t)sizeof s - 1;
            for (int64_t i = 0; ok && i < n; i++) ok = ids[i] == (unsigned char)s[i];
            CHECK(ok, "exported byte vocabulary: id = byte");
            int64_t dl;
            char *back = decode(t, ids, n, &dl);
            CHECK(back && dl == n && memcmp(back, s, (size_t)n) == 0, "and back");
            free(back);
            free(ids);
        }
        bg_tokenizer_free(&t);
    }
    bg_module_free(&m);
    bg_ctx_free(&ctx);
}

/* ---- small vocabularies written with bitgrad's GGUF writer ---------------------------------- */

/* A tiny SentencePiece vocabulary: specials, byte tokens for 'a' 'b' '\n' and 0xC3 0xA9, a few
 * pieces. Mutation `bad` breaks one thing (see test_malformed). */
enum {
    OK_SPM,
    BAD_SCORES_COUNT,
    BAD_TYPES_COUNT,
    BAD_TOKENS_TYPE,
    BAD_MODEL_TYPE,
    BAD_BOS_RANGE,
    BAD_BOS_TYPE,
    BAD_ADD_BOS_TYPE,
    BAD_DUP_TOKEN,
    BAD_NO_TOKENS,
    BAD_SCORES_TYPE,
    NO_MODEL,
    BAD_TYPES_TYPE,
    N_SPM_CASES
};
static const char *const spm_case_names[] = {
    "ok",
    "scores count",
    "token_type count",
    "tokens not strings",
    "model not a string",
    "bos out of range",
    "bos not u32",
    "add_bos not bool",
    "duplicate token",
    "no tokens",
    "scores as strings",
    "no model key",
    "token_type as f32",
};

static const char *spm_tokens[] = { "<unk>",
                                    "<s>",
                                    "</s>",
                                    "<0x0A>",
                                    "<0x61>",
                                    "<0x62>",
                                    "<0xC3>",
                                    "<0xA9>",
                                    "\xe2\x96\x81",
                                    "a",
                                    "b",
                                    "\xe2\x96\x81"
                                    "a",
                                    "ab",
                                    "\xe2\x96\x81"
                                    "ab",
                                    "<user>" };
#define N_SPM (int)(sizeof spm_tokens / sizeof spm_tokens[0])

static const char *spm_general_name; /* general.name to write, if not NULL */
static bool spm_no_space_prefix;     /* write tokenizer.ggml.add_space_prefix = false */

static int write_spm(const char *path, int bad, const char *model)
{
    bg_gguf_writer *w = NULL;
    if (bg_gguf_writer_create(&w)) return -1;
    float scores[N_SPM];
    int32_t types[N_SPM];
    for (int i = 0; i < N_SPM; i++) {
        scores[i] = i >= 8 ? -(float)(20 - i) : 0.0f; /* longer pieces score higher */
        types[i] = i == 0 ? 2 : i <= 2 ? 3 : i <= 7 ? 6 : i == N_SPM - 1 ? 4 : 1;
    }
    const char *toks[N_SPM + 1];
    memcpy(toks, spm_tokens, sizeof spm_tokens);
    if (bad == BAD_DUP_TOKEN) toks[10] = "a";
    int rc = 0;
    if (bad == BAD_MODEL_TYPE) rc |= bg_gguf_writer_set_u32(w, "tokenizer.ggml.model", 1);
    else if (bad != NO_MODEL)
        rc |= bg_gguf_writer_set_str(w, "tokenizer.ggml.model", model);
    if (bad == BAD_TOKENS_TYPE)
        rc |= bg_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", BG_GGUF_I32, types, N_SPM);
    else if (bad != BAD_NO_TOKENS)
        rc |= bg_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", BG_GGUF_STRING, toks, N_SPM);
    if (bad == BAD_SCORES_TYPE)
        rc |= bg_gguf_writer_set_arr(w, "tokenizer.ggml.scores", BG_GGUF_STRING, toks, N_SPM);
    else
        rc |= bg_gguf_writer_set_arr(w, "tokenizer.ggml.scores", BG_GGUF_F32, scores,
                                     N_SPM - (bad == BAD_SCORES_COUNT));
    if (bad == BAD_TYPES_TYPE)
        rc |= bg_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", BG_GGUF_F32, scores, N_SPM);
    else
        rc |= bg_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", BG_GGUF_I32, types,
                                     N_SPM + (bad == BAD_TYPES_COUNT ? -3 : 0));
    if (bad == BAD_BOS_TYPE) rc |= bg_gguf_writer_set_i32(w, "tokenizer.ggml.bos_token_id", 1);
    else
        rc |= bg_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id",
                                     bad == BAD_BOS_RANGE ? N_SPM : 1);
    rc |= bg_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    if (bad == BAD_ADD_BOS_TYPE) rc |= bg_gguf_writer_set_u8(w, "tokenizer.ggml.add_bos_token", 1);
    rc |= bg_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", true);
    if (spm_general_name) rc |= bg_gguf_writer_set_str(w, "general.name", spm_general_name);
    if (spm_no_space_prefix)
        rc |= bg_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", false);
    char err[256];
    rc |= bg_gguf_writer_write(w, path, err, sizeof err);
    bg_gguf_writer_free(&w);
    return rc;
}

/* A tiny gpt2 vocabulary: the 256 byte tokens, then merged ones; merges as given. */
static int write_gpt2(const char *path, const char *pre, const char **merges, int n_merges)
{
    static char texts[256][4];
    const char *toks[260];
    for (int b = 0; b < 256; b++) {
        bg_byte_token_text(b, texts[b]);
        toks[b] = texts[b];
    }
    toks[256] = "he";
    toks[257] = "ll";
    toks[258] = "hell";
    toks[259] = "\xc4\xa0"
                "w"; /* " w" */
    bg_gguf_writer *w = NULL;
    if (bg_gguf_writer_create(&w)) return -1;
    int rc = bg_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    if (pre) rc |= bg_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    rc |= bg_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", BG_GGUF_STRING, toks, 260);
    if (merges)
        rc |= bg_gguf_writer_set_arr(w, "tokenizer.ggml.merges", BG_GGUF_STRING, merges,
                                     (size_t)n_merges);
    char err[256];
    rc |= bg_gguf_writer_write(w, path, err, sizeof err);
    bg_gguf_writer_free(&w);
    return rc;
}

static int try_load(const char *path, bg_tokenizer **t, char *err, size_t errlen)
{
    *t = (bg_tokenizer *)(uintptr_t)1; /* must come back NULL on failure */
    int rc = bg_tokenizer_load(path, t, err, errlen);
    if (rc != 0) CHECK(*t == NULL, "a failed load leaves *out NULL");
    if (rc != 0 && *t) *t = NULL;
    return rc;
}

static void test_malformed(void)
{
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/spm.gguf", tmp_dir);
    for (int c = 0; c < N_SPM_CASES; c++) {
        if (!CHECK(write_spm(path, c, "llama") == 0, "write case %s", spm_case_names[c])) continue;
        bg_tokenizer *t;
        err[0] = 0;
        int rc = try_load(path, &t, err, sizeof err);
        int want = c == OK_SPM ? 0 : c == NO_MODEL ? BG_ENOTFOUND : BG_EFORMAT;
        CHECK(rc == want, "case '%s': rc %d, expected %d (%s)", spm_case_names[c], rc, want, err);
        if (rc)
            CHECK(strncmp(err, "tokenizer: ", 11) == 0 && strlen(err) > 20,
                  "case '%s': the error says what: '%s'", spm_case_names[c], err);
        bg_tokenizer_free(&t);
    }
    /* gpt2 merges: naming a missing token, without a space, absent altogether */
    const char *good[] = { "h e", "l l", "he ll", "\xc4\xa0 w" };
    const char *missing[] = { "h e", "x yz" };
    const char *nospace[] = { "he" };
    struct {
        const char **m;
        int n;
        int want;
        const char *what;
    } mc[] = {
        { good, 4, 0, "good merges" },
        { missing, 2, BG_EFORMAT, "merge naming a missing token" },
        { nospace, 1, BG_EFORMAT, "merge without a space" },
        { NULL, 0, BG_EFORMAT, "no merges" },
    };
    snprintf(path, sizeof path, "%s/gpt2.gguf", tmp_dir);
    for (size_t i = 0; i < sizeof mc / sizeof mc[0]; i++) {
        if (!CHECK(write_gpt2(path, "gpt-2", mc[i].m, mc[i].n) == 0, "write %s", mc[i].what))
            continue;
        bg_tokenizer *t;
        err[0] = 0;
        int rc = try_load(path, &t, err, sizeof err);
        CHECK(rc == mc[i].want, "%s: rc %d (%s)", mc[i].what, rc, err);
        if (t) { /* "hello world": he+ll -> hell, then o; " w" merges; the rest are bytes */
            int64_t n;
            int32_t *ids = encode(t, "hello world", 11, true, &n);
            int32_t want[] = { 258, 'o', 259, 'o', 'r', 'l', 'd' };
            CHECK(n == 7 && memcmp(ids, want, sizeof want) == 0, "gpt2 merges applied by rank");
            CHECK(bg_tokenizer_bos(t) == 11 && !bg_tokenizer_add_bos(t),
                  "gpt2 defaults: bos 11 (llama.cpp's), not added");
            free(ids);
        }
        bg_tokenizer_free(&t);
    }
}

static void test_unsupported(void)
{
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/unsup.gguf", tmp_dir);
    bg_tokenizer *t;
    CHECK(write_spm(path, OK_SPM, "bert") == 0, "write bert");
    int rc = try_load(path, &t, err, sizeof err);
    CHECK(rc == BG_EUNSUPPORTED && strstr(err, "tokenizer.ggml.model = 'bert'") &&
              strstr(err, "tokenizer.ggml.pre = '(absent)'"),
          "bert refused naming the kind and pre: rc %d '%s'", rc, err);
    const char *merges[] = { "h e" };
    CHECK(write_gpt2(path, "llama-bpe", merges, 1) == 0, "write llama-bpe");
    rc = try_load(path, &t, err, sizeof err);
    CHECK(rc == BG_EUNSUPPORTED && strstr(err, "'gpt2'") && strstr(err, "'llama-bpe'"),
          "gpt2 with pre llama-bpe refused naming both: rc %d '%s'", rc, err);
    bg_gguf_writer *w = NULL;
    bg_gguf_writer_create(&w);
    bg_gguf_writer_set_str(w, "general.name", "no tokenizer");
    bg_gguf_writer_write(w, path, err, sizeof err);
    bg_gguf_writer_free(&w);
    rc = try_load(path, &t, err, sizeof err);
    CHECK(rc == BG_ENOTFOUND, "no tokenizer.ggml.model: BG_ENOTFOUND (%d, %s)", rc, err);
}

/* Encoding on the tiny SentencePiece vocabulary: merges by score, the leading space, byte
 * fallback, the unknown token, user-defined tokens split out, control text not parsed. */
static void test_spm_specials(void)
{
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/spm.gguf", tmp_dir);
    bg_tokenizer *t = NULL;
    if (write_spm(path, OK_SPM, "llama") || bg_tokenizer_load(path, &t, err, sizeof err)) {
        CHECK(0, "tiny spm: %s", err);
        return;
    }
    struct {
        const char *text;
        bool special;
        int n;
        int32_t ids[12];
    } cs[] = {
        { "ab", false, 1, { 13 } },      /* "▁ab" */
        { "ab", true, 3, { 1, 13, 2 } }, /* BOS, EOS as the file says */
        { "", true, 2, { 1, 2 } },
        { "b a", false, 3, { 8, 10, 11 } },           /* "▁", "b", "▁a" */
        { "a\n\xc3\xa9", false, 4, { 11, 3, 6, 7 } }, /* byte fallback */
        { "ax", false, 2, { 11, 0 } },                /* no byte token for 'x': the unknown token */
        { "a<user>b", false, 3, { 11, 14, 8 } },      /* user-defined split out; "▁b"... */
        { "<s>", false, 5, { 8, 0, 0, 0, 0 } },       /* control text is just text */
    };
    cs[6].n = 4; /* after a user token the text gets the leading space again: ▁ b */
    cs[6].ids[2] = 8;
    cs[6].ids[3] = 10;
    cs[7].n = 4; /* "▁", '<' unk, 's' unk, '>' unk */
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        int64_t n;
        int32_t *ids = encode(t, cs[i].text, strlen(cs[i].text), cs[i].special, &n);
        bool ok = n == cs[i].n && memcmp(ids, cs[i].ids, (size_t)n * 4) == 0;
        if (!CHECK(ok, "tiny spm '%s' (special %d): %lld ids", cs[i].text, cs[i].special,
                   (long long)n))
            for (int64_t k = 0; k < n; k++) printf("     id %d\n", ids[k]);
        free(ids);
    }
    /* after a user-defined token the spaces stay (they are text)... */
    int64_t n;
    int32_t *ids = encode(t, "a<user>  b", 10, false, &n);
    int32_t want_keep[] = { 11, 14, 8, 8, 8, 10 };
    CHECK(n == 6 && memcmp(ids, want_keep, sizeof want_keep) == 0, "spaces after <user> kept");
    free(ids);
    bg_tokenizer_free(&t);
    /* ...but a Phi-3 file strips them, as llama.cpp does by general.name */
    spm_general_name = "Phi-3-mini";
    int rc = write_spm(path, OK_SPM, "llama") || bg_tokenizer_load(path, &t, err, sizeof err);
    spm_general_name = NULL;
    if (!CHECK(rc == 0, "phi-3 named spm: %s", err)) return;
    ids = encode(t, "a<user>  b", 10, false, &n);
    int32_t want_strip[] = { 11, 14, 8, 10 };
    CHECK(n == 4 && memcmp(ids, want_strip, sizeof want_strip) == 0,
          "phi-3: spaces after <user> stripped");
    free(ids);
    int32_t with_bos[] = { 1, 13, 8, 9, 2 };
    int64_t dl;
    char *s = decode(t, with_bos, 5, &dl);
    CHECK(s && strcmp(s, "ab a") == 0, "decode after BOS drops the leading space: '%s'", s);
    free(s);
    char pc[16];
    CHECK(bg_tokenizer_piece(t, 11, pc, sizeof pc) == 2 && memcmp(pc, " a", 2) == 0, "piece ▁a");
    CHECK(bg_tokenizer_piece(t, 1, pc, sizeof pc) == 0, "piece of BOS is empty");
    CHECK(bg_tokenizer_piece(t, 6, pc, sizeof pc) == 1 && (unsigned char)pc[0] == 0xc3,
          "piece <0xC3>");
    bg_tokenizer_free(&t);
}

/* tokenizer.ggml.add_space_prefix = false: no leading space added, none removed. */
static void test_spm_no_space_prefix(void)
{
    char path[1200], err[512] = "";
    snprintf(path, sizeof path, "%s/spm.gguf", tmp_dir);
    bg_tokenizer *t = NULL;
    int64_t n;
    int32_t *ids;
    int rc;
    spm_no_space_prefix = true;
    rc = write_spm(path, OK_SPM, "llama") || bg_tokenizer_load(path, &t, err, sizeof err);
    spm_no_space_prefix = false;
    if (!CHECK(rc == 0, "spm without space prefix: %s", err)) return;
    ids = encode(t, "ab", 2, false, &n);
    CHECK(n == 1 && ids[0] == 12, "no space prefix: 'ab' is token 12 ('ab'), got %d", ids[0]);
    free(ids);
    int32_t spaced[] = { 11 };
    int64_t sl;
    char *sp = decode(t, spaced, 1, &sl);
    CHECK(sp && strcmp(sp, " a") == 0, "no space prefix: decode keeps the leading space");
    free(sp);
    bg_tokenizer_free(&t);
    bg_tokenizer_free(&t);
}

/* The streaming detokenizer holds back a character split across tokens. */
static void test_detokenizer(void)
{
    bg_tokenizer *t = NULL;
    bg_tokenizer_new_bytes(&t);
    bg_detokenizer d;
    bg_detokenizer_init(&d, t);
    char out[64];
    const unsigned char s[] = { 'x', 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x81, 0xc3, 'y', 0xe2 };
    int64_t want[] = { 1, 0, 0, 3, 0, 0, 0, 4, 0, 2, 0 };
    bool ok = true;
    size_t total = 0;
    char acc[64];
    for (size_t i = 0; i < sizeof s; i++) {
        int64_t r = bg_detokenizer_push(&d, s[i], out, sizeof out);
        ok &= CHECK(r == want[i], "push byte %zu: %lld bytes out, expected %lld", i, (long long)r,
                    (long long)want[i]);
        if (r > 0) memcpy(acc + total, out, (size_t)r), total += (size_t)r;
    }
    int64_t r = bg_detokenizer_flush(&d, out, sizeof out);
    CHECK(r == 1 && (unsigned char)out[0] == 0xe2, "flush gives the held lead byte as it is");
    memcpy(acc + total, out, 1);
    CHECK(total + 1 == sizeof s && memcmp(acc, s, sizeof s) == 0, "all bytes out, in order");
    CHECK(d.n_fed == (int64_t)sizeof s, "n_fed counts ids");
    CHECK(bg_detokenizer_push(&d, 999, out, sizeof out) == BG_EINVAL, "id out of range");
    bg_tokenizer_free(&t);
}

/* ---- pre-tokenizers against the regex package (tests/ref/make_pretok_ref.py) ---------------- */

static int hexval(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

static void test_pretok(void)
{
    const char *data = getenv("BG_TEST_DATA");
    char path[1200];
    snprintf(path, sizeof path, "%s/pretok_ref.txt", data ? data : "tests/data");
    size_t size;
    char *all = read_file(path, &size);
    if (!CHECK(all, "read %s (set BG_TEST_DATA)", path)) return;
    int cases = 0, same = 0;
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n")) {
        char *hex = strchr(line, '\t'), *lens_s = hex ? strchr(hex + 1, '\t') : NULL;
        if (!CHECK(lens_s, "pretok_ref line format")) break;
        *hex++ = 0;
        *lens_s++ = 0;
        size_t nb = strlen(hex) / 2, n = 0;
        unsigned char *txt = malloc(nb + 1);
        for (size_t i = 0; i < nb; i++)
            txt[i] = (unsigned char)(hexval(hex[2 * i]) * 16 + hexval(hex[2 * i + 1]));
        uint32_t *cps = malloc((nb + 1) * sizeof *cps);
        for (size_t off = 0, l; off < nb; off += l)
            cps[n++] = bg__utf8_decode(txt + off, nb - off, &l);
        size_t *lens = malloc((n + 1) * sizeof *lens), *tmp = malloc((n + 1) * sizeof *tmp);
        int pre = strcmp(line, "gpt-2") == 0 ? BG_PRE_GPT2 : BG_PRE_DEFAULT;
        size_t k = bg__pretok_split(pre, cps, n, lens, tmp);
        char got[4096] = "";
        size_t gl = 0;
        for (size_t i = 0; i < k && gl < sizeof got - 24; i++)
            gl += (size_t)snprintf(got + gl, sizeof got - gl, i ? " %zu" : "%zu", lens[i]);
        cases++;
        bool ok = strcmp(got, lens_s) == 0;
        same += ok;
        CHECK(ok, "pre-tokenizer %s on %.40s: pieces %s, regex %s", line, hex, got, lens_s);
        free(txt);
        free(cps);
        free(lens);
        free(tmp);
    }
    printf("pre-tokenizers: %d/%d splits as the regex package gives them\n", same, cases);
    CHECK(cases >= 100, "%d pre-tokenizer cases", cases);
    free(all);
}

int main(void)
{
    const char *b = getenv("BG_BUILD_DIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/text_test", b ? b : ".");
    mkdir(tmp_dir, 0755);
    test_bytes();
    test_exported_byte_model();
    test_malformed();
    test_unsupported();
    test_spm_specials();
    test_spm_no_space_prefix();
    test_detokenizer();
    test_pretok();
    const char *dir = getenv("BG_GOLDEN_DIR");
    if (dir) {
        golden_vocab(dir, "llama-spm", 0);
        golden_vocab(dir, "phi-3", 0);
        golden_vocab(dir, "gpt-2", 2);
        spm_fast_paths(dir, "llama-spm");
        spm_fast_paths(dir, "phi-3");
        bpe_chunks(dir);
    } else {
        printf("BG_GOLDEN_DIR unset: llama.cpp's vocabulary tests skipped\n");
    }
    return harness_summary();
}
