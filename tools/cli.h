/* cli.h - shared pieces of the bitgrad command-line tool: argument parsing helpers and the
 * entry points of each subcommand. */
#ifndef BG_CLI_H
#define BG_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <bitgrad.h>
#include <bitgrad/text.h>

/* Subcommands: argc/argv start at the subcommand's name. Return the exit status. */
int cmd_info(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);

/* Prints "bitgrad: <msg>" to stderr; returns 1 (or 2 for usage errors). */
int cli_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True if argv[*i] is `name`; then *val is the next argument (error if missing). */
bool cli_opt(int argc, char **argv, int *i, const char *name, const char **val, int *bad);
bool cli_flag(char **argv, int i, const char *name);
/* Parses an integer / float with range checks; false (and a message) on bad input. */
bool cli_int(const char *opt, const char *s, long long lo, long long hi, long long *out);
bool cli_float(const char *opt, const char *s, double *out);
/* Parses "1,2,3" into ids (at most max), each in [0, limit). Returns the count or -1. */
int cli_ids(const char *s, int32_t *ids, int max, int64_t limit);
/* Writes the ANSI-free progress line (step, loss, tokens/s, ETA) to stderr. */
void cli_progress(int64_t step, int64_t total, double loss, double tokens_per_s, double eta_s,
                  bool tty);
double cli_now(void);

/* ---- models, tokenizers and output paths (cli_model.c) ---------------------------------- */
/* 0 when path can be written (not a directory, its folder writable: checked by creating and
 * removing PATH.tmp, the name atomic writers use); else prints why ("<what> PATH ...") and
 * returns 1. NULL path: 0. */
int cli_check_output(const char *path, const char *what);
/* The tokenizer of the model file path (n_vocab: the model's, or 0 when unknown): its
 * tokenizer.* keys, or bitgrad's byte vocabulary for a 256-token model without any. Any
 * other model without a tokenizer, or an unsupported one, is an error (printed; returns 1). */
int cli_model_tokenizer(const char *path, int64_t n_vocab, bg_tokenizer **out);
/* Opens a bitnet GGUF (a clear error for a file that is not one) and, if tok is not NULL,
 * its tokenizer. 0, or 1 after printing the error (*m and *tok NULL). */
int cli_open_model(bg_ctx *ctx, const char *path, bg_module **m, bg_tokenizer **tok);
/* cli_open_model, plus an adapter (lora may be NULL), in inference mode without grad. */
bg_module *cli_load_inference(bg_ctx *ctx, const char *path, const char *lora, bool llama,
                              bg_tokenizer **tok);
/* Encodes text into a malloc'd *ids; returns the count, or -1 after printing an error. */
int64_t cli_encode(const bg_tokenizer *t, const char *text, bool add_special, int32_t **ids);

#endif
