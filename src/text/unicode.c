/* unicode.c - the Unicode pieces the tokenizers need: UTF-8 decoding exactly as llama.cpp
 * does it (an invalid sequence is one byte read as U+FFFD), GPT-2's bytes_to_unicode map and
 * its inverse, and letter / number / punctuation / White_Space classes from the generated
 * range table (unicode_table.inc, Unicode 15.1 like llama.cpp's). */
#include "text/tokenizer_internal.h"

#include "text/unicode_table.inc"

static bool byte_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

/* Printable bytes stand for themselves; the other 68 (0x00-0x20, 0x7f-0xa0, 0xad) for
 * U+0100 + their rank among them. */
uint32_t bg__byte_to_cp(uint8_t b)
{
    if (byte_printable(b)) return b;
    if (b <= 0x20) return 256u + b;
    if (b >= 0x7f && b <= 0xa0) return 256u + 33u + (b - 0x7fu);
    return 256u + 67u; /* 0xad */
}

int bg__cp_to_byte(uint32_t cp)
{
    if (cp < 256) return byte_printable(cp) ? (int)cp : -1;
    uint32_t r = cp - 256;
    if (r < 33) return (int)r;
    if (r < 67) return (int)(0x7f + r - 33);
    return r == 67 ? 0xad : -1;
}

uint32_t bg__utf8_decode(const unsigned char *s, size_t n, size_t *len)
{
    unsigned c = s[0];
    *len = 1;
    if (c < 0x80) return c;
    size_t need;
    uint32_t cp;
    if (!(c & 0x40)) return 0xFFFD; /* a lone continuation byte */
    if (!(c & 0x20)) need = 2, cp = c & 0x1f;
    else if (!(c & 0x10))
        need = 3, cp = c & 0x0f;
    else if (!(c & 0x08))
        need = 4, cp = c & 0x07;
    else
        return 0xFFFD;
    if (need > n) return 0xFFFD;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0xFFFD;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    *len = need; /* like llama.cpp: overlong forms and surrogates are taken as they are */
    return cp;
}

int bg__utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | ((cp >> 18) & 0x07));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

unsigned bg__unicode_flags(uint32_t cp)
{
    if (cp < 128) return bg_unicode_ascii_flags[cp];
    if (cp >= 0x110000) return BG_UC_ASSIGNED; /* llama.cpp: beyond the table is "undefined" */
    size_t lo = 0, hi = BG_UNICODE_N_RANGES;   /* last start <= cp */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (bg_unicode_range_start[mid] <= cp) lo = mid;
        else
            hi = mid;
    }
    return bg_unicode_range_flags[lo];
}
