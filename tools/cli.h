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

/* ---- data-parallel runs (cli_dist.c; bitgrad/dist.h) ---- */
/* Joins the process group when started by mpirun (a world of one otherwise); 0 or 1. */
int cli_dist_begin(void);
/* Leaves it; a failing rank (status not 0 or 130) ends the whole job. Returns status. */
int cli_dist_end(int status);
bg_dist *cli_dist(void);
int cli_dist_rank(void);
int cli_dist_world(void);
bool cli_is_root(void); /* rank 0: the one that prints and writes */
/* Rank 0's parameters to every rank, averaged gradients for opt, the banner (world size,
 * global batch). */
int cli_dist_attach(bg_ctx *ctx, bg_module *m, bg_optim *opt, int64_t batch, int64_t seq);
/* This rank's rows [*start, *start + *count) of a global batch of global_rows rows. */
void cli_dist_slice(int64_t global_rows, int64_t *start, int64_t *count);
/* Before backward: this rank's token count (the gradient average weighs ranks by it). */
void cli_dist_weigh(double local_tokens);
/* After the step (every rank, every step): the loss of the global batch. */
double cli_dist_loss(double local_loss);
void cli_dist_request_stop(void); /* from a signal handler */
/* Stop now? With several ranks only when they agreed (the same step on all). */
bool cli_dist_stop(bool local_interrupted);
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
