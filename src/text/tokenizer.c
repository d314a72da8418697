/* tokenizer.c - the public tokenizer API: accessors, encoding (user-defined tokens split out
 * first, BOS / EOS as the vocabulary says, then the kind's session), token pieces, decoding as
 * llama.cpp's detokenizer does it, and the streaming, UTF-8 safe detokenizer. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer_internal.h"

/* ---- accessors ------------------------------------------------------------------------- */

const char *bg_tokenizer_kind(const bg_tokenizer *t)
{
    if (!t) return NULL;
    return t->kind == BG_TOK_SPM ? "llama" : t->kind == BG_TOK_BPE ? "gpt2" : "bytes";
}

int64_t bg_tokenizer_n_vocab(const bg_tokenizer *t) { return t ? t->n_vocab : BG_EINVAL; }
int32_t bg_tokenizer_bos(const bg_tokenizer *t) { return t ? t->bos : -1; }
int32_t bg_tokenizer_eos(const bg_tokenizer *t) { return t ? t->eos : -1; }
int32_t bg_tokenizer_unk(const bg_tokenizer *t) { return t ? t->unk : -1; }
int32_t bg_tokenizer_pad(const bg_tokenizer *t) { return t ? t->pad : -1; }
bool bg_tokenizer_add_bos(const bg_tokenizer *t) { return t && t->add_bos && t->bos >= 0; }
bool bg_tokenizer_add_eos(const bg_tokenizer *t) { return t && t->add_eos && t->eos >= 0; }
size_t bg_tokenizer_memory(const bg_tokenizer *t) { return t ? t->mem_bytes : 0; }

/* ---- encoding ------------------------------------------------------------------------ */

/* A piece of the text to encode: raw bytes (id -1) or a user-defined token already matched. */
typedef struct fragment {
    int32_t id;
    size_t off, len;
} fragment;

typedef struct fraglist {
    fragment *v;
    size_t n, cap;
} fraglist;

static int frag_push(fraglist *f, int32_t id, size_t off, size_t len)
{
    if (id < 0 && len == 0) return 0;
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 8;
        fragment *v = realloc(f->v, cap * sizeof *v);
        if (!v) return BG_ENOMEM;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = (fragment){ id, off, len };
    return 0;
}

static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    if (m == 0 || m > n) return NULL;
    for (const char *p = hay; (p = memchr(p, needle[0], n - m + 1 - (size_t)(p - hay))); p++)
        if (memcmp(p, needle, m) == 0) return p;
    return NULL;
}

/* Splits every raw fragment of *f at the occurrences of user token u (llama.cpp's
 * tokenizer_st_partition with parse_special false: only user-defined tokens are matched). */
static int split_user_token(const bg_tokenizer *t, int32_t u, const char *text, fraglist *f)
{
    size_t tlen;
    const char *tok = bg__tok_text(t, t->user_ids[u], &tlen);
    fraglist out = { 0 };
    int rc = 0;
    for (size_t i = 0; i < f->n && !rc; i++) {
        fragment fr = f->v[i];
        if (fr.id >= 0) {
            rc = frag_push(&out, fr.id, 0, 0);
            continue;
        }
        size_t off = fr.off, end = fr.off + fr.len;
        for (;;) {
            const char *m = find_bytes(text + off, end - off, tok, tlen);
            if (!m) {
                rc = rc ? rc : frag_push(&out, -1, off, end - off);
                break;
            }
            size_t mpos = (size_t)(m - text);
            rc = rc ? rc : frag_push(&out, -1, off, mpos - off);
            rc = rc ? rc : frag_push(&out, t->user_ids[u], 0, 0);
            off = mpos + tlen;
            if (t->user_rstrip[u])
                while (off < end && isspace((unsigned char)text[off])) off++;
        }
    }
    free(f->v);
    *f = out;
    return rc;
}

static int encode_spm(const bg_tokenizer *t, const char *text, const fraglist *f, bg_idvec *out)
{
    bool prev_special = true; /* the first text gets the leading space */
    char *buf = NULL;
    size_t buf_cap = 0;
    int rc = 0;
    for (size_t i = 0; i < f->n && !rc; i++) {
        if (f->v[i].id >= 0) {
            bg__idvec_push(out, f->v[i].id);
            prev_special = true;
            continue;
        }
        /* the text with the space prefix and every ' ' as U+2581 (3 bytes) */
        size_t need = 3 * (f->v[i].len + 1);
        if (need > buf_cap) {
            free(buf);
            buf = malloc(need);
            buf_cap = buf ? need : 0;
            if (!buf) return BG_ENOMEM;
        }
        size_t n = 0;
        const char *s = text + f->v[i].off;
        if (t->add_space_prefix && prev_special) memcpy(buf + n, "\xe2\x96\x81", 3), n += 3;
        for (size_t j = 0; j < f->v[i].len; j++) {
            if (s[j] == ' ') memcpy(buf + n, "\xe2\x96\x81", 3), n += 3;
            else
                buf[n++] = s[j];
        }
        rc = bg__spm_encode(t, buf, n, out);
        prev_special = false;
    }
    free(buf);
    return rc;
}

static int encode_all(const bg_tokenizer *t, const char *text, size_t len, bool add_special,
                      bg_idvec *out)
{
    if (add_special && bg_tokenizer_add_bos(t)) bg__idvec_push(out, t->bos);
    int rc = 0;
    if (t->kind == BG_TOK_BYTES) {
        for (size_t i = 0; i < len; i++) bg__idvec_push(out, (unsigned char)text[i]);
    } else if (len) {
        fraglist f = { 0 };
        rc = frag_push(&f, -1, 0, len);
        for (int32_t u = 0; u < t->n_user && !rc; u++) rc = split_user_token(t, u, text, &f);
        if (!rc && t->kind == BG_TOK_SPM) rc = encode_spm(t, text, &f, out);
        for (size_t i = 0; i < f.n && !rc && t->kind == BG_TOK_BPE; i++) {
            if (f.v[i].id >= 0) bg__idvec_push(out, f.v[i].id);
            else
                rc = bg__bpe_encode(t, text + f.v[i].off, f.v[i].len, out);
        }
        free(f.v);
    }
    if (add_special && bg_tokenizer_add_eos(t)) bg__idvec_push(out, t->eos);
    return rc ? rc : out->oom ? BG_ENOMEM : 0;
}

int64_t bg_tokenizer_encode(const bg_tokenizer *t, const char *text, size_t len, bool add_special,
                            int32_t *ids, int64_t cap)
{
    if (!t || (!text && len) || cap < 0 || (!ids && cap)) return BG_EINVAL;
    bg_idvec out = { 0 };
    int rc = encode_all(t, text, len, add_special, &out);
    if (rc) {
        free(out.v);
        return rc;
    }
    if (out.n && cap) memcpy(ids, out.v, (size_t)(out.n < cap ? out.n : cap) * sizeof *ids);
    int64_t n = out.n;
    free(out.v);
    return n;
}

/* ---- pieces and decoding -------------------------------------------------------------- */

/* A bounded output: writes what fits, counts everything. */
typedef struct sink {
    char *buf;
    size_t cap, n;
} sink;

static void sink_put(sink *s, const char *p, size_t n)
{
    if (s->n < s->cap) memcpy(s->buf + s->n, p, n < s->cap - s->n ? n : s->cap - s->n);
    s->n += n;
}

static void piece_byte_token(const char *txt, size_t len, bool lstrip, sink *s)
{
    if (len != 6 || memcmp(txt, "<0x", 3) != 0 || txt[5] != '>' ||
        !isxdigit((unsigned char)txt[3]) || !isxdigit((unsigned char)txt[4]))
        return;
    char hex[3] = { txt[3], txt[4], 0 };
    char b = (char)strtol(hex, NULL, 16);
    if (!(lstrip && b == ' ')) sink_put(s, &b, 1);
}

/* gpt2 token text: each code point back to its byte (llama.cpp's llama_decode_text, including
 * its marker for a code point outside the map). */
static void piece_bpe_normal(const char *txt, size_t len, sink *s)
{
    size_t i = 0;
    while (i < len) {
        size_t l;
        uint32_t cp = bg__utf8_decode((const unsigned char *)txt + i, len - i, &l);
        int b = bg__cp_to_byte(cp);
        if (b >= 0) {
            char c = (char)b;
            sink_put(s, &c, 1);
        } else {
            char u[4], hex[16];
            int n = bg__utf8_encode(cp, u);
            sink_put(s, "[UNK_BYTE_0x", 12);
            for (int k = 0; k < n; k++) {
                snprintf(hex, sizeof hex, "%02x", (unsigned char)u[k]);
                sink_put(s, hex, 2);
            }
            sink_put(s, txt, len);
            sink_put(s, "]", 1);
        }
        i += l;
    }
}

/* llama.cpp's token_to_piece with special = false; lstrip drops one leading space of the
 * piece (a U+2581, a space, or a <0x20> byte token). */
static void piece(const bg_tokenizer *t, int32_t id, bool lstrip, sink *s)
{
    if (t->kind == BG_TOK_BYTES) {
        char c = (char)id;
        sink_put(s, &c, 1);
        return;
    }
    size_t len;
    const char *txt = bg__tok_text(t, id, &len);
    int ty = t->types[id];
    if (ty == BG_TT_CONTROL || ty == BG_TT_UNKNOWN) return;
    if (ty == BG_TT_USER_DEFINED) {
        if (lstrip && len && txt[0] == ' ') txt++, len--;
        sink_put(s, txt, len);
    } else if (ty == BG_TT_BYTE) {
        piece_byte_token(txt, len, lstrip, s);
    } else if (ty == BG_TT_NORMAL && t->kind == BG_TOK_BPE) {
        piece_bpe_normal(txt, len, s);
    } else if (ty == BG_TT_NORMAL) { /* SentencePiece: U+2581 is a space */
        bool first = true;
        for (size_t i = 0; i < len;) {
            if (len - i >= 3 && memcmp(txt + i, "\xe2\x96\x81", 3) == 0) {
                if (!(first && lstrip)) sink_put(s, " ", 1);
                i += 3;
            } else {
                if (!(first && lstrip && txt[i] == ' ')) sink_put(s, txt + i, 1);
                i++;
            }
            first = false;
        }
    }
}

int64_t bg_tokenizer_piece(const bg_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    if (!t || id < 0 || id >= t->n_vocab || (!buf && cap)) return BG_EINVAL;
    sink s = { buf, cap, 0 };
    piece(t, id, false, &s);
    return (int64_t)s.n;
}

/* llama.cpp's clean_spaces passes (gpt2): " ?" " !" " ." " ," lose the space, " ' " loses
 * both, " 's" " 'm" " 're" " 've" lose it. In place; returns the new length. */
static size_t clean_spaces(char *p, size_t n)
{
    size_t k = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = p[i];
        if (p[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) k--;
        p[k++] = x;
    }
    n = k;
    k = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = p[i];
        if (x == '\'' && i + 1 < n && p[i - 1] == ' ' && p[i + 1] == ' ') {
            k--;
            p[++i] = '\0';
        }
        p[k++] = x;
    }
    n = k;
    k = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        char x = p[i];
        if (p[i - 1] == ' ' && x == '\'' && i + 1 < n) {
            char x1 = p[i + 1], x2 = i + 2 < n ? p[i + 2] : 0;
            if (x1 == 's' || x1 == 'm' ||
                (i + 2 < n && ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e'))))
                k--;
        }
        p[k++] = x;
    }
    return k;
}

int64_t bg_tokenizer_decode(const bg_tokenizer *t, const int32_t *ids, int64_t n, char *out,
                            size_t cap)
{
    if (!t || n < 0 || (!ids && n) || (!out && cap)) return BG_EINVAL;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_vocab) return BG_EINVAL;
    int64_t i0 = n > 0 && t->bos >= 0 && ids[0] == t->bos && t->kind != BG_TOK_BYTES ? 1 : 0;
    bool lstrip = t->add_space_prefix; /* the space the encoder put before the text */
    if (!t->clean_spaces) {            /* straight to out */
        sink w = { out, cap, 0 };
        for (int64_t i = i0; i < n; i++, lstrip = false) piece(t, ids[i], lstrip, &w);
        return (int64_t)w.n;
    }
    sink s = { NULL, 0, 0 }; /* gpt2: measure, write, clean up, copy */
    for (int64_t i = i0; i < n; i++) piece(t, ids[i], false, &s);
    char *tmp = malloc(s.n ? s.n : 1);
    if (!tmp) return BG_ENOMEM;
    sink w = { tmp, s.n, 0 };
    for (int64_t i = i0; i < n; i++) piece(t, ids[i], false, &w);
    size_t len = clean_spaces(tmp, w.n);
    if (len && cap) memcpy(out, tmp, len < cap ? len : cap);
    free(tmp);
    return (int64_t)len;
}

/* ---- streaming ------------------------------------------------------------------------ */

void bg_detokenizer_init(bg_detokenizer *d, const bg_tokenizer *t)
{
    if (!d) return;
    memset(d, 0, sizeof *d);
    d->tok = t;
    d->at_start = true;
}

/* Length of the complete prefix of p[0..n): what can be shown now. A sequence that can no
 * longer complete (a bad continuation) is shown as it is. */
static size_t utf8_complete_prefix(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t need = bg__utf8_len(p[i]);
        if (p[i] < 0xc0 || p[i] >= 0xf8) need = 1;
        size_t k = 1;
        while (k < need && i + k < n && (p[i + k] & 0xc0) == 0x80) k++;
        if (k == need) i += need;
        else if (i + k == n)
            return i; /* ends inside a character that may still complete */
        else
            i += 1; /* broken: show the lead byte as it is */
    }
    return n;
}

int64_t bg_detokenizer_push(bg_detokenizer *d, int32_t id, char *out, size_t cap)
{
    if (!d || !d->tok || id < 0 || id >= d->tok->n_vocab || (!out && cap)) return BG_EINVAL;
    const bg_tokenizer *t = d->tok;
    bool leading_bos = d->n_fed == 0 && id == t->bos && t->kind != BG_TOK_BYTES;
    bool lstrip = d->at_start && t->add_space_prefix && !leading_bos;
    sink s = { NULL, 0, 0 };
    piece(t, id, lstrip, &s);
    size_t total = (size_t)d->n_held + s.n;
    unsigned char *buf = malloc(total ? total : 1);
    if (!buf) return BG_ENOMEM;
    memcpy(buf, d->held, (size_t)d->n_held);
    sink w = { (char *)buf + d->n_held, s.n, 0 };
    piece(t, id, lstrip, &w);
    size_t show = utf8_complete_prefix(buf, total);
    if (show > cap || total - show > sizeof d->held) {
        free(buf);
        return BG_EINVAL; /* nothing consumed: call again with a larger buffer */
    }
    if (show) memcpy(out, buf, show);
    d->n_held = (int)(total - show);
    memcpy(d->held, buf + show, (size_t)d->n_held);
    free(buf);
    d->n_fed++;
    if (!leading_bos) d->at_start = false;
    return (int64_t)show;
}

int64_t bg_detokenizer_flush(bg_detokenizer *d, char *out, size_t cap)
{
    if (!d || (!out && cap)) return BG_EINVAL;
    if ((size_t)d->n_held > cap) return BG_EINVAL;
    if (d->n_held) memcpy(out, d->held, (size_t)d->n_held);
    int64_t n = d->n_held;
    d->n_held = 0;
    return n;
}
