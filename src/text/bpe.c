/* bpe.c - byte-level BPE ("gpt2") encoding as llama.cpp runs it: the text is read as code
 * points (invalid UTF-8 becomes U+FFFD, as in llama.cpp), split into words by the
 * pre-tokenizer, and each word's UTF-8 bytes are spelled with GPT-2's bytes_to_unicode map.
 * Within a word, adjacent symbols merge by merge rank (lowest first, ties leftmost) through a
 * priority queue, skipping pairs made stale by an earlier merge. A final symbol that is not a
 * token falls back to the tokens of its single bytes. */
#include <stdlib.h>
#include <string.h>

#include "text/pair_heap.h"
#include "text/tokenizer_internal.h"

typedef struct symbol {
    uint32_t start, n; /* bytes of the spelled word; n = 0 once merged */
    int32_t prev, next;
    int32_t id; /* token of this symbol's text, -1 if none */
} symbol;

typedef struct session {
    const bg_tokenizer *t;
    char *word; /* the spelled word */
    size_t word_cap;
    symbol *sym;
    size_t sym_cap;
    bg__pair_heap heap;
    bool oom;
} session;

static void try_pair(session *s, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return;
    const bg_tokenizer *t = s->t;
    int32_t a = s->sym[left].id, b = s->sym[right].id;
    if (a < 0 || b < 0) return;
    uint32_t rank;
    int32_t id;
    if (!bg__merge_find(t, a, b, &rank, &id)) return;
    bg__pair p = { rank, left, right, s->sym[left].n + s->sym[right].n, id };
    if (!bg__pair_heap_push(&s->heap, p)) s->oom = true;
}

/* Spells the UTF-8 of cps[0..n) with bytes_to_unicode into s->word; returns its length. */
static size_t spell_word(session *s, const uint32_t *cps, size_t n)
{
    size_t need = 8 * n; /* <= 4 bytes per code point, <= 2 bytes per spelled byte */
    if (need > s->word_cap) {
        free(s->word);
        s->word = malloc(need);
        s->word_cap = s->word ? need : 0;
        if (!s->word) {
            s->oom = true;
            return 0;
        }
    }
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        char u[4];
        int k = bg__utf8_encode(cps[i], u);
        for (int j = 0; j < k; j++)
            len += (size_t)bg__utf8_encode(bg__byte_to_cp((uint8_t)u[j]), s->word + len);
    }
    return len;
}

static void emit(session *s, const symbol *sym, bg_idvec *out)
{
    if (sym->id >= 0) {
        bg__idvec_push(out, sym->id);
        return;
    }
    for (uint32_t j = 0; j < sym->n; j++) { /* llama.cpp: each byte as a one-byte token */
        int32_t id = bg__tok_find(s->t, s->word + sym->start + j, 1);
        if (id >= 0) bg__idvec_push(out, id);
    }
}

static void encode_word(session *s, const uint32_t *cps, size_t n_cps, bg_idvec *out)
{
    size_t len = spell_word(s, cps, n_cps);
    if (s->oom || len == 0) return;
    if (len > s->sym_cap) {
        free(s->sym);
        s->sym = malloc(len * sizeof *s->sym);
        s->sym_cap = s->sym ? len : 0;
        if (!s->sym) {
            s->oom = true;
            return;
        }
    }
    int32_t n = 0;
    for (size_t off = 0; off < len; n++) {
        size_t l = bg__utf8_len((unsigned char)s->word[off]);
        if (l > len - off) l = len - off;
        int32_t id = bg__tok_find(s->t, s->word + off, l);
        s->sym[n] = (symbol){ (uint32_t)off, (uint32_t)l, n - 1, off + l == len ? -1 : n + 1, id };
        off += l;
    }
    s->heap.n = 0;
    for (int32_t i = 1; i < n; i++) try_pair(s, i - 1, i);
    while (s->heap.n && !s->oom) {
        bg__pair b = bg__pair_heap_pop(&s->heap);
        symbol *l = &s->sym[b.left], *r = &s->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        l->id = b.id;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->sym[r->next].prev = b.left;
        try_pair(s, l->prev, b.left);
        try_pair(s, b.left, l->next);
    }
    for (int32_t i = 0; i != -1; i = s->sym[i].next) emit(s, &s->sym[i], out);
}

/* Encodes one stretch of text: code points, words, BPE per word. */
static int encode_chunk(session *s, const char *text, size_t len, bg_idvec *out)
{
    uint32_t *cps = malloc(len * sizeof *cps);
    size_t *lens = malloc(len * sizeof *lens), *tmp = malloc(len * sizeof *tmp);
    int rc = cps && lens && tmp ? 0 : BG_ENOMEM;
    size_t n = 0;
    for (size_t off = 0; !rc && off < len; n++) {
        size_t l;
        cps[n] = bg__utf8_decode((const unsigned char *)text + off, len - off, &l);
        off += l;
    }
    size_t n_words = rc ? 0 : bg__pretok_split(s->t->pre, cps, n, lens, tmp);
    size_t start = 0;
    for (size_t w = 0; w < n_words && !s->oom; w++) {
        encode_word(s, cps + start, lens[w], out);
        start += lens[w];
    }
    free(cps);
    free(lens);
    free(tmp);
    return rc ? rc : s->oom ? BG_ENOMEM : 0;
}

/* A place p >= from where the text may be cut without changing any word: "X\nY" with X an
 * ASCII non-space byte before the newline and Y a non-space code point after it. Both
 * pre-tokenizers end a word before and after such a newline, and look only forward, so the
 * parts split as the whole does. Returns len when there is none. */
static size_t safe_cut(const char *text, size_t len, size_t from)
{
    for (size_t p = from < 2 ? 2 : from; p < len; p++) {
        if (text[p - 1] != '\n') continue;
        unsigned char x = (unsigned char)text[p - 2];
        if (x >= 0x80 || (bg__unicode_flags(x) & BG_UC_SPACE)) continue;
        size_t l;
        uint32_t y = bg__utf8_decode((const unsigned char *)text + p, len - p, &l);
        if (!(bg__unicode_flags(y) & BG_UC_SPACE)) return p;
    }
    return len;
}

/* Long texts go in stretches of about t->bpe_chunk bytes (64 KiB) cut at safe places: memory stays at about
 * 20 bytes per byte of a stretch, not of the whole text. */
int bg__bpe_encode(const bg_tokenizer *t, const char *text, size_t len, bg_idvec *out)
{
    session s = { .t = t };
    int rc = 0;
    for (size_t start = 0; start < len && !rc;) {
        size_t end = len - start > t->bpe_chunk ? safe_cut(text, len, start + t->bpe_chunk) : len;
        rc = encode_chunk(&s, text + start, end - start, out);
        start = end;
    }
    free(s.word);
    free(s.sym);
    bg__pair_heap_free(&s.heap);
    return rc;
}
