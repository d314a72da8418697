/* dist_impl.h - private layout of bg_dist: who this process is, and the gradient buckets
 * that backward's grad-ready hook starts reducing (dist_buckets.c). */
#ifndef BG_DIST_IMPL_H
#define BG_DIST_IMPL_H

#include <pthread.h>
#include <signal.h>

#include "bitgrad/dist.h"
#include "tensor/tensor_impl.h"

#ifdef BG_HAVE_MPI
#include <mpi.h>
#endif

typedef struct dist_param {
    bg_tensor *p;
    int bucket;
    int64_t offset; /* first element in the bucket's buffer */
    bool ready;     /* gradient final in this step's backward */
} dist_param;

typedef struct dist_bucket {
    int first, count; /* dist params [first, first + count) */
    int64_t numel;
    int pending; /* params not yet final this step */
    bool launched, done;
    float *buf; /* host buffer (CPU), or device buffer (NCCL) */
#ifdef BG_HAVE_MPI
    MPI_Request req;
#endif
} dist_bucket;

struct bg_dist {
    int rank, world;
    bool mpi_owned;  /* bg_dist_init called MPI_Init: finalize calls MPI_Finalize */
    bool mpi_active; /* collectives go through comm (world > 1) */
#ifdef BG_HAVE_MPI
    MPI_Comm comm;
#endif
    bg_ctx *ctx;            /* bound by bg_optim_set_dist */
    struct bg_optim *owner; /* the optimizer bound to this group, or NULL */
    bool thread_multiple;   /* MPI gives MPI_THREAD_MULTIPLE: a progress thread may run */
    bool progress_on;       /* the progress thread runs (dist_buckets.c) */
    bool progress_stop;
    pthread_t progress;
    pthread_mutex_t mu; /* guards the buckets' requests against the progress thread */
    pthread_cond_t cv;
    dist_param *params; /* in bucket order: the optimizer's, last first */
    int n_params;
    const bg_tensor **lookup; /* params sorted by address, for the hook */
    int *lookup_idx;
    dist_bucket *buckets;
    int n_buckets, next_launch;
    size_t bucket_bytes;
    double weight, scale; /* this rank's weight and weight / sum of weights */
    bool no_sync, backward_done, synced;
    int sync_rc;
    volatile sig_atomic_t stop_requested;
    bool stop_agreed;
    bg_dist_stats stats;
    struct dist_nccl *nccl; /* device reductions (dist_nccl.c), or NULL */
};

/* Builds the buckets over params (trainable, in the optimizer's order) and installs the
 * grad-ready hook on ctx, for optimizer owner (an optimizer bound before is detached).
 * Called by bg_optim_set_dist. */
BG_INTERNAL int bg__dist_bind(bg_dist *d, struct bg_optim *owner, bg_ctx *ctx,
                              bg_tensor *const *params, int n);
BG_INTERNAL void bg__dist_unbind(bg_dist *d);
/* owner lets go of d (bg_optim_set_dist(NULL), bg_optim_free): unbinds if still its. */
BG_INTERNAL void bg__dist_release(bg_dist *d, struct bg_optim *owner);
/* optim.c: o forgets its group (the group was finalized or bound to another optimizer). */
BG_INTERNAL void bg__optim_drop_dist(struct bg_optim *o);
/* bg_dist_sync_grads once per step (a second call returns the first's result) with the error
 * recorded on ctx; bg__dist_step_done ends the step. */
BG_INTERNAL int bg__dist_sync_for(bg_dist *d, bg_ctx *ctx);
BG_INTERNAL void bg__dist_step_done(bg_dist *d);
BG_INTERNAL double bg__dist_now(void);

/* ---- NCCL (dist_nccl.c): device gradients of a CUDA ctx, when libnccl opens ---- */
struct dist_nccl;
/* Opens libnccl and makes the communicator (its unique id broadcast over MPI); collective.
 * NULL with the reason in err when NCCL is missing or unusable on any rank. */
BG_INTERNAL struct dist_nccl *bg__nccl_open(bg_dist *d, char *err, size_t err_len);
BG_INTERNAL void bg__nccl_close(struct dist_nccl **n);
BG_INTERNAL int bg__nccl_buckets(struct dist_nccl *n, int n_buckets); /* per-bucket events */
/* Starts bucket b: the sum over ranks of scale * buf, in place, once the ctx's stream has
 * finished the copies into buf; the ctx's stream goes on meanwhile. */
BG_INTERNAL int bg__nccl_launch(struct dist_nccl *n, bg_ctx *ctx, int b, float *buf, int64_t count,
                                float scale);
/* The ctx's stream waits for the first n_buckets reductions. */
BG_INTERNAL int bg__nccl_join(struct dist_nccl *n, bg_ctx *ctx, int n_buckets);
BG_INTERNAL int bg__nccl_broadcast(struct dist_nccl *n, bg_ctx *ctx, void *dev_buf, size_t bytes);
BG_INTERNAL int bg__nccl_wait(struct dist_nccl *n);
BG_INTERNAL void *bg__nccl_alloc(bg_ctx *ctx, size_t bytes);
BG_INTERNAL void bg__nccl_free(void *p);
/* dst = src (device, on the ctx's stream), or zeros when src is NULL. */
BG_INTERNAL int bg__nccl_copy(bg_ctx *ctx, void *dst, const void *src, size_t bytes);

#endif
