/* bitgrad/dist.h - data-parallel training over MPI (CPU processes and machines) and NCCL
 * (GPUs), DESIGN.md section 8.
 *
 * One bg_dist says who this process is (rank, world size, the communicator). Every rank
 * holds the whole model; rank 0 broadcasts the parameters at start, each rank runs forward
 * and backward on its own slice of the global batch, and the gradients of every trainable
 * parameter are averaged across ranks before the optimizer steps. The averaging is packed
 * into buckets of parameters; a bucket's all-reduce starts (MPI_Iallreduce) as soon as
 * backward has finished every gradient in it, so communication overlaps the rest of
 * backward. A C training loop becomes data-parallel with two added calls:
 *
 *     bg_dist *d;  bg_dist_init(&d, &argc, &argv);     // once, before anything else
 *     ...build model and optimizer as usual...
 *     bg_dist_broadcast_module(d, model);               // ranks start identical
 *     bg_optim_set_dist(opt, d);                        // steps use averaged gradients
 *     ...each step: forward and backward on rank r's slice (bg_dist_slice), then
 *        bg_optim_step as before...
 *     bg_dist_finalize(&d);
 *
 * When MPI provides MPI_THREAD_MULTIPLE a progress thread advances the started reductions
 * while backward computes (BG_DIST_PROGRESS_THREAD=0 in the environment turns it off).
 *
 * Launched without mpirun (or in a build without MPI) bg_dist_init gives a world of one and
 * every call below is a no-op, so the same program runs on one process unchanged.
 * Only bg_dist_init fails in a build without MPI when asked for more (BG_EUNSUPPORTED). */
#ifndef BITGRAD_DIST_H
#define BITGRAD_DIST_H

#include "bitgrad/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bg_dist bg_dist;

/* True when this build of bitgrad has MPI (the `mpi` Meson option found it). */
BG_API bool bg_dist_available(void);

/* Sets up this process's place in the job. Under a launcher (mpirun / mpiexec: Open MPI's,
 * MPICH's or a PMI environment) this initialises MPI and joins MPI_COMM_WORLD; otherwise, or
 * with BG_DIST=off in the environment, it gives a world of one without touching MPI.
 * A build without MPI started under a launcher of more than one process fails with
 * BG_EUNSUPPORTED (and *out NULL) rather than running N copies that do not talk.
 * argc/argv may be NULL. Errors are printed to stderr naming the rank. */
BG_API int bg_dist_init(bg_dist **out, int *argc, char ***argv);
/* Waits for outstanding reductions, finalises MPI if bg_dist_init initialised it, frees
 * *d and sets it to NULL. */
BG_API void bg_dist_finalize(bg_dist **d);

BG_API int bg_dist_rank(const bg_dist *d);  /* 0 for NULL */
BG_API int bg_dist_world(const bg_dist *d); /* 1 for NULL */
BG_API bool bg_dist_is_root(const bg_dist *d);
/* The MPI communicator (an MPI_Comm stored in the pointer-sized slot, as mpi.h's handle is)
 * for a caller's own collectives; NULL without MPI or in a world of one. */
BG_API void *bg_dist_comm(const bg_dist *d);

/* Rank 0's values of these persistent f32 tensors (CPU or CUDA) overwrite every rank's. */
BG_API int bg_dist_broadcast(bg_dist *d, bg_tensor *const *ts, int n);
/* Every parameter of m, trainable or frozen (frozen packed ternary bases are read from the
 * same file by every rank and skipped). */
BG_API int bg_dist_broadcast_module(bg_dist *d, bg_module *m);

/* This rank's share [*start, *start + *count) of n items split over the world in rank
 * order: the first n % world ranks take one more. Concatenated in rank order the shares
 * are 0..n-1, so a global batch of n rows is the same batch whatever the world size. */
BG_API void bg_dist_slice(const bg_dist *d, int64_t n, int64_t *start, int64_t *count);

/* The weight of this rank's gradient in the average (e.g. the number of tokens of its
 * slice that count in the loss). Gradients are averaged as sum_r (w_r / sum w) g_r, so a
 * loss that is a mean over the rank's own tokens gives exactly the gradient of the mean
 * over all tokens of the global batch, even when the ranks hold different numbers of
 * tokens. Call before backward of each step (one small blocking all-reduce); without it
 * every rank weighs 1 (the plain mean, exact when the counts are equal). */
BG_API int bg_dist_set_weight(bg_dist *d, double weight);
/* sum_r (w_r / sum w) v_r with the weights above: the global mean of a rank-local mean
 * (the loss to print). A blocking all-reduce; returns v in a world of one. */
BG_API double bg_dist_mean(bg_dist *d, double v);
/* Sum over ranks of v (blocking). */
BG_API double bg_dist_sum(bg_dist *d, double v);

/* Gradient accumulation: while on, backward's gradients are not reduced (the micro-batches
 * before the last one); switch it off before the last backward of the step. */
BG_API void bg_dist_no_sync(bg_dist *d, bool on);
/* Completes the averaging of this step's gradients: starts the buckets backward has not
 * started, waits for all, and agrees across ranks on whether to step. Returns 0, or
 * BG_ENONFINITE on every rank when any rank's gradient holds NaN or Inf or any rank did
 * not finish its backward (its loss was NaN, an op failed): then no rank steps. Called by
 * bg_optim_step / bg_clip_grad_norm of an optimizer given this group; once per step. */
BG_API int bg_dist_sync_grads(bg_dist *d);

/* Stop requests (Ctrl-C): async-signal-safe; the next bg_dist_sync_grads shares it, and
 * from then bg_dist_should_stop is true on every rank after the same step. */
BG_API void bg_dist_request_stop(bg_dist *d);
BG_API bool bg_dist_should_stop(const bg_dist *d);

/* A fault that must end the whole job: prints "bitgrad: rank R of N: <message>" to stderr
 * and aborts every rank (MPI_Abort), so no rank waits for one that will never answer. In a
 * world of one it prints and returns code (the caller exits). */
BG_API int bg_dist_abort(bg_dist *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Bucket size in bytes (default 4 MiB, or BG_DIST_BUCKET_MB from the environment); takes
 * effect at the next bg_optim_set_dist. */
BG_API void bg_dist_set_bucket_bytes(bg_dist *d, size_t bytes);

/* What the reductions cost so far (for benchmarks and logs). */
typedef struct bg_dist_stats {
    int64_t steps;            /* bg_dist_sync_grads calls that reduced gradients */
    int64_t buckets;          /* buckets per step */
    int64_t bytes_per_step;   /* gradient bytes all-reduced per step */
    double launch_s;          /* seconds packing and starting buckets (inside backward) */
    double wait_s;            /* seconds in bg_dist_sync_grads waiting for reductions */
    int64_t early_buckets;    /* buckets started during backward (the rest at sync) */
    int64_t done_early_bytes; /* bytes whose reduction had completed when sync began (CPU) */
    bool progress_thread;     /* a thread advances the reductions (MPI_THREAD_MULTIPLE) */
} bg_dist_stats;
BG_API bg_dist_stats bg_dist_get_stats(const bg_dist *d);

#ifdef __cplusplus
}
#endif
#endif
