#!/usr/bin/env python3
"""Writes tests/data/pretok_ref.txt: how llama.cpp's "gpt-2" and "default" pre-tokenizers split
texts, computed with the `regex` package (an independent regex engine with Unicode classes) by
llama.cpp's rule: each regex in turn splits every piece of the one before into its matches and
the unmatched text between them (src/unicode.cpp, unicode_regex_split). test_text compares
bitgrad's hand-written matchers with it.

    pip install regex
    python3 tests/ref/make_pretok_ref.py ../shared/golden/llama-vocab > tests/data/pretok_ref.txt

Texts: the 46 of each llama.cpp vocabulary test (.inp files) plus the crafted ones below. Texts
with U+001C..U+001F are left out: Python's \\s matches them, llama.cpp's does not.
Output lines: PRESET <TAB> hex of the UTF-8 text <TAB> piece lengths in code points."""
import glob
import sys

import regex

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PRESETS = {
    "gpt-2": [GPT2],
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
}

CRAFTED = [
    "Hello, world!!! 1234567 $100+200=300 a^b~c|d `x` <tag> {x}",
    "\u00bfQu\u00e9? \u00abquote\u00bb 1,000.50 \u0663\u0664\u0665\u0666 \u2460\u2461\u2462 x'S y'll z've",
    "tabs\tand\u00a0nbsp\u3000ideographic\u2028line  two   spaces    \n\n end ",
    "\u2014dash\u2026ellipsis \u201cquotes\u201d \u00a7 \u20ac5 \u00b9\u00b2 12\u00bd",
    "code: if (a<=b) { return x->y[0] || z; } // 3.14159e-10",
    "CamelCaseWords and_snake_case 0x1F 0b1010 1e9 9999999999",
    "\u4f60\u597d\u4e16\u754c\uff01\u3053\u3093\u306b\u3061\u306f\u3002\ud55c\uad6d\uc5b4 \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "emoji \U0001F600\U0001F680 \u2764\ufe0f flags \U0001F1EB\U0001F1F7 zwj \U0001F468\u200d\U0001F469",
    "   leading and trailing   ",
    "'s 't 're 've 'm 'll 'd 'x '",
    "\u0301combining e\u0301 \u0915\u094d\u0937 \u0e01\u0e34",
    "...!!!???,,,;;;:::---___///\\\\\\",
]


def split(text, exprs):
    pieces = [text]
    for expr in exprs:
        rx = regex.compile(expr)
        out = []
        for p in pieces:
            pos = 0
            for m in rx.finditer(p):
                if m.start() > pos:
                    out.append(p[pos:m.start()])
                out.append(m.group())
                pos = m.end()
            if pos < len(p):
                out.append(p[pos:])
        pieces = out
    return pieces


def main():
    texts = []
    for f in sorted(glob.glob(sys.argv[1] + "/*.inp")):
        raw = open(f, "rb").read().decode("utf-8")
        texts += raw.split("\n__ggml_vocab_test__\n")[:-1]
    texts += CRAFTED
    seen = set()
    for t in texts:
        if t in seen or not t or any(0x1c <= ord(c) <= 0x1f for c in t):
            continue
        seen.add(t)
        for name, exprs in PRESETS.items():
            lens = [len(p) for p in split(t, exprs)]
            assert sum(lens) == len(t)
            print("%s\t%s\t%s" % (name, t.encode("utf-8").hex(), " ".join(map(str, lens))))


if __name__ == "__main__":
    main()
