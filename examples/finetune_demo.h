/* finetune_demo.h - entry point of the fine-tune example, shared by examples/finetune.c's
 * main and `bitgrad finetune --demo`. */
#ifndef BG_FINETUNE_DEMO_H
#define BG_FINETUNE_DEMO_H

#include <stdbool.h>
#include <stdint.h>

typedef struct demo_options {
    const char *out_dir;    /* where model.gguf, adapter.gguf, loss.csv, loss.svg go */
    const char *data_path;  /* --data FILE: byte-level text instead of the built-in tasks */
    bool quick;             /* shortened run that checks its results (the e2e test) */
    uint64_t seed;
    int steps[3];           /* steps of stages 1..3 (0: the default) */
} demo_options;

demo_options demo_default_options(void);
/* Parses --out, --data, --quick, --seed, --steps A,B,C. Returns 0 or prints usage and 2. */
int demo_parse_args(int argc, char **argv, demo_options *o);
/* Runs the demo; 0, or 1 on an error or (with quick) a failed check of the results. */
int bg_finetune_demo(const demo_options *opt);
/* OpenMP reads its wait policy once, at start-up. When neither OMP_WAIT_POLICY nor
 * GOMP_SPINCOUNT is set, set GOMP_SPINCOUNT=10000 and re-execute the program: an idle worker
 * spins briefly - long enough to catch the next parallel region of the same step - then
 * sleeps. libgomp's default spins ~30x longer, which on a 2-core laptop steals the cores from
 * other programs; passive (no spin) pays a wake-up per parallel region, 15% of a W2 step. */
void demo_short_omp_spin(char **argv);

#endif
