/* bitgrad/text.h - tokenizers read from a model's GGUF (tokenizer.ggml.*) and training data
 * (plain text, JSON Lines) tokenized with them. DESIGN.md section 11.
 *
 * Tokenizers reproduce llama.cpp's token ids exactly:
 *   "llama"  SentencePiece as llama.cpp runs it (score-ordered merges, the U+2581 space marker,
 *            a leading space, byte fallback <0xXX>, the unknown token)
 *   "gpt2"   byte-level BPE (merge ranks, GPT-2's bytes-to-unicode map) after the
 *            pre-tokenizer named by tokenizer.ggml.pre ("default", "gpt-2")
 *   "bytes"  bitgrad's own 256-token byte vocabulary (token id = byte value), the vocabulary of
 *            models trained from scratch without one; a bitgrad-exported byte model (gpt2 with
 *            256 byte tokens and no merges) also reads as this.
 * Anything else is refused with an error naming tokenizer.ggml.model and tokenizer.ggml.pre:
 * never a silent fall-back to bytes. */
#ifndef BITGRAD_TEXT_H
#define BITGRAD_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bitgrad/gguf.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- tokenizers ------------------------------------------------------------------------ */

typedef struct bg_tokenizer bg_tokenizer;

/* Reads the tokenizer of an open GGUF (everything is copied: g may be freed afterwards).
 * Errors: BG_ENOTFOUND (no tokenizer.ggml.model key), BG_EUNSUPPORTED (a kind or
 * pre-tokenizer bitgrad does not implement; err names both keys' values), BG_EFORMAT
 * (malformed metadata: counts that disagree, merges naming missing tokens, ids out of range). */
BG_API int bg_tokenizer_from_gguf(const bg_gguf *g, bg_tokenizer **out, char *err, size_t errlen);
/* Opens path and reads its tokenizer. */
BG_API int bg_tokenizer_load(const char *path, bg_tokenizer **out, char *err, size_t errlen);
/* bitgrad's byte vocabulary: 256 tokens, no BOS/EOS added, add_bos false. */
BG_API int bg_tokenizer_new_bytes(bg_tokenizer **out);
BG_API void bg_tokenizer_free(bg_tokenizer **t);

/* "llama", "gpt2" or "bytes". */
BG_API const char *bg_tokenizer_kind(const bg_tokenizer *t);
BG_API int64_t bg_tokenizer_n_vocab(const bg_tokenizer *t);
/* Special token ids, -1 when the vocabulary has none. */
BG_API int32_t bg_tokenizer_bos(const bg_tokenizer *t);
BG_API int32_t bg_tokenizer_eos(const bg_tokenizer *t);
BG_API int32_t bg_tokenizer_unk(const bg_tokenizer *t);
BG_API int32_t bg_tokenizer_pad(const bg_tokenizer *t);
/* tokenizer.ggml.add_bos_token / add_eos_token as the file says (llama.cpp's defaults when
 * absent: SentencePiece adds BOS, gpt2 does not). */
BG_API bool bg_tokenizer_add_bos(const bg_tokenizer *t);
BG_API bool bg_tokenizer_add_eos(const bg_tokenizer *t);
/* Bytes the tokenizer's tables occupy (everything it allocated). */
BG_API size_t bg_tokenizer_memory(const bg_tokenizer *t);

/* Encodes len bytes of text (any bytes; invalid UTF-8 is tokenized as llama.cpp does, never
 * an error). add_special: put BOS / EOS around it as add_bos / add_eos say (llama.cpp's
 * add_special; special tokens written in the text are not parsed). Writes at most cap ids and
 * returns how many the text needs (snprintf-style: call again with a larger buffer when the
 * result exceeds cap), or a negative BG_E* code. A tokenizer is read-only after loading:
 * threads may encode and decode with one tokenizer at the same time. Working memory is a few
 * bytes per byte of text (SentencePiece) or per 64 KiB stretch of it (gpt2), freed on return. */
BG_API int64_t bg_tokenizer_encode(const bg_tokenizer *t, const char *text, size_t len,
                                   bool add_special, int32_t *ids, int64_t cap);
/* The bytes token id stands for in decoded text ("▁" becomes a space, <0x41> the byte 0x41,
 * gpt2's unicode spelling its bytes; control tokens such as BOS give nothing). Writes at most
 * cap bytes, returns the full length, or BG_EINVAL for an id out of range. */
BG_API int64_t bg_tokenizer_piece(const bg_tokenizer *t, int32_t id, char *buf, size_t cap);
/* Decodes n ids to text as llama.cpp's llama_detokenize (remove_special, no unparse_special):
 * the pieces concatenated, control tokens giving nothing; SentencePiece drops the one leading
 * space its encoder added (at the very start, and also after a leading BOS, where llama.cpp
 * keeps it); gpt2 applies llama.cpp's clean_spaces (" ," -> ",", " 's" -> "'s", ...), so that
 * decode(encode(x)) differs from x where x has such spaces. snprintf-style: writes at most cap
 * bytes plus no terminator, returns the full length or a negative code (BG_EINVAL for an id
 * out of range). */
BG_API int64_t bg_tokenizer_decode(const bg_tokenizer *t, const int32_t *ids, int64_t n,
                                   char *out, size_t cap);

/* Streaming, UTF-8 safe decoding for generation: feed ids one at a time; bytes that end
 * inside a multi-byte character are held back until the character is complete (or shown
 * as they are once it cannot complete). */
typedef struct bg_detokenizer {
    const bg_tokenizer *tok;
    int64_t n_fed;        /* ids fed so far */
    unsigned char held[8];
    int n_held;
    bool at_start; /* no text shown yet: SentencePiece drops the first piece's leading space */
} bg_detokenizer;

BG_API void bg_detokenizer_init(bg_detokenizer *d, const bg_tokenizer *t);
/* Writes the text of id that is complete now to out (at most cap bytes) and returns the byte
 * count, or a negative code. The pieces are bg_tokenizer_piece's (gpt2's clean_spaces is not
 * applied, as llama.cpp does not when it streams). When the text does not fit in cap, returns
 * BG_EINVAL and consumes nothing: cap >= 64 suffices unless bg_tokenizer_piece(id) is longer
 * than 60 bytes. */
BG_API int64_t bg_detokenizer_push(bg_detokenizer *d, int32_t id, char *out, size_t cap);
/* The bytes still held (an incomplete character at the end), as they are. */
BG_API int64_t bg_detokenizer_flush(bg_detokenizer *d, char *out, size_t cap);

/* ---- datasets -------------------------------------------------------------------------- */

typedef struct bg_dataset bg_dataset;

/* Reads a training file and tokenizes it with t:
 *   plain text  the whole file is one document
 *   JSON Lines  (a .jsonl / .json name, or a first non-blank byte '{') one object per line,
 *               {"text": ...} or {"prompt": ..., "completion": ...}; blank lines skipped. A
 *               prompt/completion pair is tokenized as prompt then completion and only the
 *               completion's tokens (and the EOS after it) are training targets.
 * Each document gets BOS / EOS as the tokenizer's add_bos / add_eos say (an EOS is always put
 * after a completion when the vocabulary has one), and documents are concatenated in file
 * order. A malformed line is an error naming the file and the line number. */
BG_API int bg_dataset_load(const char *path, const bg_tokenizer *t, bg_dataset **out, char *err,
                           size_t errlen);
BG_API void bg_dataset_free(bg_dataset **d);
BG_API int64_t bg_dataset_n_tokens(const bg_dataset *d);
BG_API const int32_t *bg_dataset_tokens(const bg_dataset *d);
/* One byte per token: 1 when predicting that token trains (it is a target), 0 when it is part
 * of a prompt. Every token of plain text and {"text"} lines is a target. */
BG_API const uint8_t *bg_dataset_target_mask(const bg_dataset *d);
BG_API int64_t bg_dataset_n_documents(const bg_dataset *d);

/* Fills one window of T + 1 tokens starting at token `start` (0 <= start, start + T + 1 <=
 * n_tokens): ids[0..T) are the inputs, targets[0..T) the next tokens, with ignore_index where
 * the mask says the token does not train. */
BG_API int bg_dataset_window(const bg_dataset *d, int64_t start, int64_t T, int32_t *ids,
                             int32_t *targets, int32_t ignore_index);

#ifdef __cplusplus
}
#endif
#endif
