/* dataset.c - training data read from a file and tokenized with a model's tokenizer:
 * plain text (one document) or JSON Lines ({"text": ...} or {"prompt": ..., "completion": ...}
 * per line, parsed with cJSON), concatenated into one token stream with a per-token target
 * mask (DESIGN.md section 11, include/bitgrad/text.h).
 *
 * A prompt/completion pair is tokenized as one text, prompt + completion, so that the tokens
 * are the ones the model sees at inference (SentencePiece puts its space marker only at the
 * very start; a BPE merge may cross the join). The prompt is tokenized alone too: the
 * leading tokens both tokenizations share are the prompt (mask 0), every later token is a
 * target (mask 1), including a token that merges the prompt's last bytes with the
 * completion's first. BOS (when add_bos) goes before the prompt, EOS (when the vocabulary
 * has one) after the completion and is a target. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitgrad/text.h"

struct bg_dataset {
    int32_t *tokens;
    uint8_t *mask;
    int64_t n, cap;
    int64_t n_docs;
};

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- the token stream ------------------------------------------------------------------ */

static int reserve(bg_dataset *d, int64_t extra)
{
    if (extra < 0 || d->n > INT64_MAX / 2 - extra) return BG_ENOMEM;
    if (d->n + extra <= d->cap) return BG_OK;
    int64_t cap = d->cap ? d->cap : 1024;
    while (cap < d->n + extra) cap *= 2;
    if ((uint64_t)cap > SIZE_MAX / sizeof(int32_t)) return BG_ENOMEM;
    int32_t *t = realloc(d->tokens, (size_t)cap * sizeof *t);
    if (!t) return BG_ENOMEM;
    d->tokens = t;
    uint8_t *m = realloc(d->mask, (size_t)cap);
    if (!m) return BG_ENOMEM;
    d->mask = m;
    d->cap = cap;
    return BG_OK;
}

static int push(bg_dataset *d, int32_t id, uint8_t target)
{
    int rc = reserve(d, 1);
    if (rc) return rc;
    d->tokens[d->n] = id;
    d->mask[d->n++] = target;
    return BG_OK;
}

/* Encodes text into a new array (*ids, *n). */
static int encode(const bg_tokenizer *t, const char *text, size_t len, bool add_special,
                  int32_t **ids, int64_t *n)
{
    *ids = NULL;
    *n = 0;
    int64_t cap = (int64_t)(len < (size_t)INT64_MAX / 2 ? len : (size_t)INT64_MAX / 2) + 8;
    for (int pass = 0; pass < 2; pass++) {
        if ((uint64_t)cap > SIZE_MAX / sizeof(int32_t)) return BG_ENOMEM;
        int32_t *buf = malloc((size_t)cap * sizeof *buf);
        if (!buf) return BG_ENOMEM;
        int64_t got = bg_tokenizer_encode(t, text, len, add_special, buf, cap);
        if (got < 0) {
            free(buf);
            return (int)got;
        }
        if (got <= cap) {
            *ids = buf;
            *n = got;
            return BG_OK;
        }
        free(buf);
        cap = got;
    }
    return BG_EINVAL; /* the tokenizer asked for more room twice */
}

/* One document: its tokens with BOS / EOS as the tokenizer says, every one a target. */
static int add_text(bg_dataset *d, const bg_tokenizer *t, const char *text, size_t len)
{
    int32_t *ids;
    int64_t n;
    int rc = encode(t, text, len, true, &ids, &n);
    if (!rc) rc = reserve(d, n);
    for (int64_t i = 0; !rc && i < n; i++) rc = push(d, ids[i], 1);
    free(ids);
    if (!rc) d->n_docs++;
    return rc;
}

/* One prompt/completion pair (see the top of this file). */
static int add_pair(bg_dataset *d, const bg_tokenizer *t, const char *prompt,
                    const char *completion)
{
    size_t lp = strlen(prompt), lc = strlen(completion);
    char *both = malloc(lp + lc + 1);
    if (!both) return BG_ENOMEM;
    memcpy(both, prompt, lp);
    memcpy(both + lp, completion, lc + 1);
    int32_t *pi = NULL, *all = NULL;
    int64_t np = 0, na = 0;
    int rc = encode(t, prompt, lp, false, &pi, &np);
    if (!rc) rc = encode(t, both, lp + lc, false, &all, &na);
    free(both);
    int64_t shared = 0;
    while (!rc && shared < np && shared < na && pi[shared] == all[shared]) shared++;
    int32_t bos = bg_tokenizer_bos(t), eos = bg_tokenizer_eos(t);
    if (!rc && bg_tokenizer_add_bos(t) && bos >= 0) rc = push(d, bos, 0);
    if (!rc) rc = reserve(d, na + 1);
    for (int64_t i = 0; !rc && i < na; i++) rc = push(d, all[i], i >= shared);
    if (!rc && eos >= 0) rc = push(d, eos, 1);
    free(pi);
    free(all);
    if (!rc) d->n_docs++;
    return rc;
}

/* ---- files ----------------------------------------------------------------------------- */

static int read_all(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, errlen, BG_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = cap < SIZE_MAX / 4 ? realloc(buf, 2 * cap + 1) : NULL;
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!buf) return fail(err, errlen, BG_ENOMEM, "%s: out of memory reading the file", path);
    if (bad) {
        free(buf);
        return fail(err, errlen, BG_EIO, "%s: read error (is it a directory?)", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return BG_OK;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static bool looks_jsonl(const char *path, const char *text, size_t len)
{
    size_t lp = strlen(path);
    if ((lp >= 6 && strcmp(path + lp - 6, ".jsonl") == 0) ||
        (lp >= 5 && strcmp(path + lp - 5, ".json") == 0))
        return true;
    size_t i = 0;
    while (i < len && is_space(text[i])) i++;
    return i < len && text[i] == '{';
}

static const char *str_field(const cJSON *o, const char *key, bool *wrong_type)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (v && !cJSON_IsString(v)) *wrong_type = true;
    return v && cJSON_IsString(v) ? v->valuestring : NULL;
}

/* One non-blank JSON Lines line: an object with "text", or "prompt" and "completion". */
static int add_json_line(bg_dataset *d, const bg_tokenizer *t, const char *path, int64_t lineno,
                         const char *line, size_t len, char *err, size_t errlen)
{
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(line, len, &end, false);
    if (!o) {
        size_t at = end && end >= line && end <= line + len ? (size_t)(end - line) : 0;
        return fail(err, errlen, BG_EFORMAT, "%s:%lld: malformed JSON near column %zu", path,
                    (long long)lineno, at + 1);
    }
    while (end && end < line + len && is_space(*end)) end++;
    int rc = BG_OK;
    bool wrong = false;
    const char *text = str_field(o, "text", &wrong), *prompt = str_field(o, "prompt", &wrong);
    const char *completion = str_field(o, "completion", &wrong);
    if (end && end < line + len)
        rc = fail(err, errlen, BG_EFORMAT, "%s:%lld: text after the JSON object (column %zu)", path,
                  (long long)lineno, (size_t)(end - line) + 1);
    else if (!cJSON_IsObject(o))
        rc = fail(err, errlen, BG_EFORMAT, "%s:%lld: expected a JSON object", path,
                  (long long)lineno);
    else if (wrong)
        rc = fail(err, errlen, BG_EFORMAT,
                  "%s:%lld: \"text\", \"prompt\" and \"completion\" must be strings", path,
                  (long long)lineno);
    else if (!(text && !prompt && !completion) && !(!text && prompt && completion))
        rc = fail(err, errlen, BG_EFORMAT,
                  "%s:%lld: expected {\"text\": ...} or {\"prompt\": ..., \"completion\": ...}",
                  path, (long long)lineno);
    else if ((rc = text ? add_text(d, t, text, strlen(text)) : add_pair(d, t, prompt, completion)))
        fail(err, errlen, rc, "%s:%lld: %s", path, (long long)lineno,
             rc == BG_ENOMEM ? "out of memory" : "the tokenizer failed");
    cJSON_Delete(o);
    return rc;
}

static int load_jsonl(bg_dataset *d, const bg_tokenizer *t, const char *path, const char *text,
                      size_t len, char *err, size_t errlen)
{
    int64_t lineno = 0;
    for (size_t pos = 0; pos < len;) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl != NULL);
        lineno++;
        size_t k = 0;
        while (k < n && is_space(line[k])) k++;
        if (k == n) continue; /* blank */
        int rc = add_json_line(d, t, path, lineno, line, n, err, errlen);
        if (rc) return rc;
    }
    return BG_OK;
}

int bg_dataset_load(const char *path, const bg_tokenizer *t, bg_dataset **out, char *err,
                    size_t errlen)
{
    if (out) *out = NULL;
    if (!path || !t || !out) return fail(err, errlen, BG_EINVAL, "dataset: NULL argument");
    char *text = NULL;
    size_t len = 0;
    int rc = read_all(path, &text, &len, err, errlen);
    if (rc) return rc;
    bg_dataset *d = calloc(1, sizeof *d);
    if (!d) {
        free(text);
        return fail(err, errlen, BG_ENOMEM, "%s: out of memory", path);
    }
    bool jsonl = looks_jsonl(path, text, len);
    if (len == 0) rc = fail(err, errlen, BG_EFORMAT, "%s: the file is empty", path);
    else if (jsonl)
        rc = load_jsonl(d, t, path, text, len, err, errlen);
    else if ((rc = add_text(d, t, text, len)) != BG_OK)
        fail(err, errlen, rc, "%s: tokenizing failed: %s", path, bg_strerror(rc));
    if (!rc && d->n == 0)
        rc = fail(err, errlen, BG_EFORMAT, "%s: no %s to train on", path,
                  jsonl ? "JSON Lines records" : "tokens");
    free(text);
    if (rc) {
        bg_dataset_free(&d);
        return rc;
    }
    *out = d;
    return BG_OK;
}

void bg_dataset_free(bg_dataset **d)
{
    if (!d || !*d) return;
    free((*d)->tokens);
    free((*d)->mask);
    free(*d);
    *d = NULL;
}

int64_t bg_dataset_n_tokens(const bg_dataset *d) { return d ? d->n : 0; }
const int32_t *bg_dataset_tokens(const bg_dataset *d) { return d ? d->tokens : NULL; }
const uint8_t *bg_dataset_target_mask(const bg_dataset *d) { return d ? d->mask : NULL; }
int64_t bg_dataset_n_documents(const bg_dataset *d) { return d ? d->n_docs : 0; }

int bg_dataset_window(const bg_dataset *d, int64_t start, int64_t T, int32_t *ids, int32_t *targets,
                      int32_t ignore_index)
{
    if (!d || !ids || !targets || T < 1 || start < 0 || start > d->n - T - 1) return BG_EINVAL;
    for (int64_t t = 0; t < T; t++) {
        ids[t] = d->tokens[start + t];
        targets[t] = d->mask[start + t + 1] ? d->tokens[start + t + 1] : ignore_index;
    }
    return BG_OK;
}
