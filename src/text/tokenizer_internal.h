/* tokenizer_internal.h - the tokenizer object shared by the files of src/text: the vocabulary
 * (token texts in one blob, scores, types, a text -> id hash), the BPE merge table, special
 * ids and flags, and the helpers the SentencePiece and BPE sessions use. */
#ifndef BG_TEXT_TOKENIZER_INTERNAL_H
#define BG_TEXT_TOKENIZER_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitgrad/text.h"

enum bg_tok_kind { BG_TOK_BYTES, BG_TOK_SPM, BG_TOK_BPE };
enum bg_tok_pre { BG_PRE_NONE, BG_PRE_DEFAULT, BG_PRE_GPT2 };

/* llama.cpp's token types (tokenizer.ggml.token_type). */
enum bg_tok_type {
    BG_TT_UNDEFINED = 0,
    BG_TT_NORMAL = 1,
    BG_TT_UNKNOWN = 2,
    BG_TT_CONTROL = 3,
    BG_TT_USER_DEFINED = 4,
    BG_TT_UNUSED = 5,
    BG_TT_BYTE = 6
};

struct bg_tokenizer {
    int kind; /* enum bg_tok_kind */
    int pre;  /* enum bg_tok_pre (BPE only) */
    int32_t n_vocab;
    char *blob;     /* every token's text, each followed by a NUL */
    uint32_t *off;  /* n_vocab + 1 offsets into blob (off[i + 1] - off[i] - 1 = length) */
    float *scores;  /* n_vocab (0 where the file has none) */
    uint8_t *types; /* n_vocab, enum bg_tok_type */
    uint64_t *hash; /* open addressing: text hash << 32 | (id + 1), 0 = empty */
    uint32_t hash_mask;
    /* BPE merges: key (left id << 32 | right id) -> rank and the merged token's id (-1 when
     * the concatenation is not a token). */
    uint64_t *merge_key;
    uint32_t *merge_rank;
    int32_t *merge_id;
    uint32_t merge_mask; /* 0 when there are no merges */
    int64_t n_merges;
    int32_t
        byte_id[256];  /* SPM: <0xXX> (or the 1-byte token); BPE: the byte's unicode spelling; -1 */
    int32_t *user_ids; /* user-defined tokens, longest text first */
    uint8_t *user_rstrip; /* per user_ids entry: strip whitespace after a match (phi-3) */
    int32_t n_user;
    int32_t bos, eos, unk, pad;
    bool add_bos, add_eos, add_space_prefix, clean_spaces;
    /* SentencePiece: no token has U+2581 after its leading run of them, so no merge can
     * cross the start of a word ("x|▁y"): words are encoded one at a time (spm.c). */
    bool spm_word_split;
    size_t bpe_chunk; /* BPE: bytes per stretch of a long text (bpe.c; tests change it) */
    size_t mem_bytes; /* bytes this object allocated */
};

/* A growable list of ids (the encoders' output). */
typedef struct bg_idvec {
    int32_t *v;
    int64_t n, cap;
    bool oom;
} bg_idvec;

void bg__idvec_push(bg_idvec *iv, int32_t id);

/* The text of token id and its length (no checks). */
static inline const char *bg__tok_text(const bg_tokenizer *t, int32_t id, size_t *len)
{
    *len = t->off[id + 1] - t->off[id] - 1;
    return t->blob + t->off[id];
}

uint32_t bg__hash_bytes(const char *s, size_t n);
/* Token id of exactly these bytes, or -1. */
int32_t bg__tok_find(const bg_tokenizer *t, const char *s, size_t n);

/* Formats "tokenizer: ..." into err (may be NULL) and returns code. */
int bg__tok_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Loading: the vocabulary arrays and the hash (tokenizer_vocab.c). */
int bg__tok_alloc_vocab(bg_tokenizer *t, int32_t n_vocab, size_t blob_bytes);
int bg__tok_build_hash(bg_tokenizer *t, char *err, size_t errlen);
void *bg__tok_calloc(bg_tokenizer *t, size_t n, size_t size);
int bg__tok_read_merges(bg_tokenizer *t, const bg_gguf *g, int64_t key, char *err, size_t errlen);

/* The merge of tokens (a, b): its rank and the merged token's id (-1 if not a token). */
bool bg__merge_find(const bg_tokenizer *t, int32_t a, int32_t b, uint32_t *rank, int32_t *id);

/* GPT-2's bytes_to_unicode: the code point standing for byte b (unicode.c). */
uint32_t bg__byte_to_cp(uint8_t b);
/* Inverse: the byte of code point cp, or -1. */
int bg__cp_to_byte(uint32_t cp);
/* Decodes one UTF-8 character at s[0..n) as llama.cpp does: *len gets the bytes used (1 for
 * an invalid sequence, whose code point is U+FFFD). */
uint32_t bg__utf8_decode(const unsigned char *s, size_t n, size_t *len);
/* Writes cp as UTF-8 (1..4 bytes) and returns the length. */
int bg__utf8_encode(uint32_t cp, char out[4]);
/* llama.cpp's unicode_len_utf8: the length its lead byte announces (1 for continuation bytes). */
static inline size_t bg__utf8_len(unsigned char c)
{
    static const uint8_t lookup[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
    return lookup[c >> 4];
}

/* Unicode classes of a code point (unicode.c, from unicode_table.inc). */
enum { BG_UC_LETTER = 1, BG_UC_NUMBER = 2, BG_UC_PUNCT = 4, BG_UC_SPACE = 8, BG_UC_ASSIGNED = 16 };
unsigned bg__unicode_flags(uint32_t cp);

/* Pre-tokenizers on code points (pretok.c): split cps[0..n) into words, writing word lengths
 * (in code points) to lens and returning their count (at most n). */
size_t bg__pretok_split(int pre, const uint32_t *cps, size_t n, size_t *lens, size_t *tmp);

/* Sessions: append the ids of one raw-text fragment. 0 or BG_ENOMEM. */
int bg__spm_encode(const bg_tokenizer *t, const char *text, size_t len, bg_idvec *out);
int bg__bpe_encode(const bg_tokenizer *t, const char *text, size_t len, bg_idvec *out);

#endif
