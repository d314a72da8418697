/* cli.h - shared pieces of the bitgrad command-line tool: argument parsing helpers and the
 * entry points of each subcommand. */
#ifndef BG_CLI_H
#define BG_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <bitgrad.h>

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
int cli_ids(const char *s, int32_t *ids, int max, int limit);
/* Writes the ANSI-free progress line (step, loss, tokens/s, ETA) to stderr. */
void cli_progress(int64_t step, int64_t total, double loss, double tokens_per_s, double eta_s,
                  bool tty);
double cli_now(void);

#endif
