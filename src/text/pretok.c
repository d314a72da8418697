/* pretok.c - the pre-tokenizers of byte-level BPE, on code points, as llama.cpp splits text:
 *   "gpt-2"    one regex, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *              (a hand-written matcher following llama.cpp's unicode_regex_split_custom_gpt2)
 *   "default"  four regexes in turn, each splitting the pieces of the one before:
 *              [\p{P}\$\+<=>\^~\|]+, then the GPT-2 regex, then \p{N}+, then [0-9][0-9][0-9];
 *              text a regex does not match stays as pieces of its own.
 * A split writes piece lengths in code points; pieces are never empty. */
#include "text/tokenizer_internal.h"

#define IN_RANGE 0x100u /* flags of a position inside the piece: never zero */

typedef struct piece_out {
    size_t *lens;
    size_t n;
    size_t prev_end;
} piece_out;

static void add_piece(piece_out *o, size_t end)
{
    if (end > o->prev_end) o->lens[o->n++] = end - o->prev_end;
    o->prev_end = end;
}

/* ---- the GPT-2 regex ---------------------------------------------------------------- */

static unsigned flags_at(const uint32_t *cps, size_t end, size_t p)
{
    return p < end ? bg__unicode_flags(cps[p]) | IN_RANGE : 0;
}

static bool is_other(unsigned f) /* [^\s\p{L}\p{N}] inside the piece */
{
    return f && !(f & (BG_UC_SPACE | BG_UC_LETTER | BG_UC_NUMBER));
}

/* Length of a contraction ('s 't 'm 'd 're 've 'll) at pos, or 0. */
static size_t contraction(const uint32_t *cps, size_t end, size_t pos)
{
    if (cps[pos] != '\'' || pos + 1 >= end) return 0;
    uint32_t a = cps[pos + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= end) return 0;
    uint32_t b = cps[pos + 2];
    return (a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l') ? 3 : 0;
}

static void split_gpt2_piece(const uint32_t *cps, size_t ini, size_t end, piece_out *o)
{
    o->prev_end = ini;
    size_t pos = ini;
    while (pos < end) {
        uint32_t cpt = cps[pos];
        size_t c = contraction(cps, end, pos);
        if (c) {
            add_piece(o, pos += c);
            continue;
        }
        unsigned f2 = cpt == ' ' ? flags_at(cps, end, pos + 1) : flags_at(cps, end, pos);
        unsigned cls = f2 & BG_UC_LETTER ? BG_UC_LETTER : f2 & BG_UC_NUMBER ? BG_UC_NUMBER : 0;
        if (cls) { /* ' ?\p{L}+' or ' ?\p{N}+' */
            pos += cpt == ' ';
            while (f2 & cls) f2 = flags_at(cps, end, ++pos);
            add_piece(o, pos);
            continue;
        }
        if (is_other(f2)) { /* ' ?[^\s\p{L}\p{N}]+' */
            pos += cpt == ' ';
            while (is_other(f2)) f2 = flags_at(cps, end, ++pos);
            add_piece(o, pos);
            continue;
        }
        size_t nws = 0;
        while (flags_at(cps, end, pos + nws) & BG_UC_SPACE) nws++;
        if (nws > 1 && pos + nws < end) { /* '\s+(?!\S)': leave the last space to the word */
            add_piece(o, pos += nws - 1);
            continue;
        }
        if (nws > 0) { /* '\s+' */
            add_piece(o, pos += nws);
            continue;
        }
        add_piece(o, ++pos);
    }
}

/* ---- the other regexes of "default" ------------------------------------------------- */

/* [\p{P}\$\+<=>\^~\|]: llama.cpp matches ASCII with its own class list (no '`') and other
 * code points by category, whitespace excluded. */
static bool is_punct_run(uint32_t cp)
{
    if (cp < 128)
        return (cp >= 0x21 && cp <= 0x23) || (cp >= 0x25 && cp <= 0x2a) ||
               (cp >= 0x2c && cp <= 0x2f) || cp == 0x3a || cp == 0x3b || cp == 0x3f || cp == 0x40 ||
               (cp >= 0x5b && cp <= 0x5d) || cp == 0x5f || cp == 0x7b || cp == 0x7d || cp == '$' ||
               cp == '+' || cp == '<' || cp == '=' || cp == '>' || cp == '^' || cp == '~' ||
               cp == '|';
    unsigned f = bg__unicode_flags(cp);
    return (f & BG_UC_PUNCT) && !(f & BG_UC_SPACE);
}

static bool is_number_run(uint32_t cp) /* \p{N} */
{
    if (cp < 128) return cp >= '0' && cp <= '9';
    unsigned f = bg__unicode_flags(cp);
    return (f & BG_UC_NUMBER) && !(f & BG_UC_SPACE);
}

/* A regex X+ over one class: maximal runs of the class and the gaps between them. */
static void split_runs(const uint32_t *cps, size_t ini, size_t end, bool (*cls)(uint32_t),
                       piece_out *o)
{
    o->prev_end = ini;
    for (size_t i = ini; i < end;) {
        bool in = cls(cps[i]);
        size_t j = i + 1;
        while (j < end && cls(cps[j]) == in) j++;
        add_piece(o, j);
        i = j;
    }
}

static bool ascii_digit(uint32_t cp) { return cp >= '0' && cp <= '9'; }

/* [0-9][0-9][0-9]: successive non-overlapping triples, left to right. */
static void split_triples(const uint32_t *cps, size_t ini, size_t end, piece_out *o)
{
    o->prev_end = ini;
    for (size_t i = ini; i + 3 <= end;) {
        if (ascii_digit(cps[i]) && ascii_digit(cps[i + 1]) && ascii_digit(cps[i + 2])) {
            add_piece(o, i);
            add_piece(o, i + 3);
            i += 3;
        } else {
            i++;
        }
    }
    add_piece(o, end);
}

enum stage { ST_GPT2, ST_PUNCT, ST_NUMBER, ST_TRIPLES };

static size_t run_stage(int st, const uint32_t *cps, const size_t *in, size_t n_in, size_t *out)
{
    piece_out o = { out, 0, 0 };
    size_t start = 0;
    for (size_t k = 0; k < n_in; k++) {
        size_t end = start + in[k];
        if (st == ST_GPT2) split_gpt2_piece(cps, start, end, &o);
        else if (st == ST_PUNCT)
            split_runs(cps, start, end, is_punct_run, &o);
        else if (st == ST_NUMBER)
            split_runs(cps, start, end, is_number_run, &o);
        else
            split_triples(cps, start, end, &o);
        start = end;
    }
    return o.n;
}

size_t bg__pretok_split(int pre, const uint32_t *cps, size_t n, size_t *lens, size_t *tmp)
{
    if (n == 0) return 0;
    tmp[0] = n;
    if (pre == BG_PRE_GPT2) return run_stage(ST_GPT2, cps, tmp, 1, lens);
    size_t k = run_stage(ST_PUNCT, cps, tmp, 1, lens);
    k = run_stage(ST_GPT2, cps, lens, k, tmp);
    k = run_stage(ST_NUMBER, cps, tmp, k, lens);
    k = run_stage(ST_TRIPLES, cps, lens, k, tmp);
    for (size_t i = 0; i < k; i++) lens[i] = tmp[i];
    return k;
}
