/* dist_buckets.c - gradient averaging in buckets that overlap backward.
 *
 * The optimizer's trainable parameters, last first (backward finishes the last layers
 * first), are packed into buckets of about bucket_bytes. Backward's grad-ready hook marks a
 * parameter final; a bucket whose parameters are all final is packed (each gradient times
 * this rank's weight / the sum of weights) and its MPI_Iallreduce (sum) started, strictly in
 * bucket order so that every rank issues the same collectives in the same order. At sync the
 * rest are started, all are waited for and unpacked, and one small all-reduce agrees on
 * whether every rank finished its backward and whether a stop was requested. */
#include <limits.h>
#include <math.h>
#include <time.h>

#include "autograd/tape.h"
#include "dist/dist_impl.h"

/* ---- the progress thread ----------------------------------------------------------------
 * Open MPI advances a nonblocking collective only inside MPI calls. With MPI_THREAD_MULTIPLE a
 * thread tests the started buckets every 50 us while any is outstanding (and sleeps on a
 * condition otherwise), so their reductions run while backward computes. d->mu guards the
 * requests: the training thread starts buckets and waits for them holding it. */
static void *progress_main(void *arg)
{
    bg_dist *d = arg;
    pthread_mutex_lock(&d->mu);
    while (!d->progress_stop) {
        bool pending = false;
#ifdef BG_HAVE_MPI
        for (int b = 0; b < d->next_launch; b++) {
            dist_bucket *k = &d->buckets[b];
            if (k->launched && !k->done) {
                int flag = 0;
                MPI_Test(&k->req, &flag, MPI_STATUS_IGNORE);
                k->done = flag != 0;
                pending = pending || !k->done;
            }
        }
#endif
        if (!pending) {
            pthread_cond_wait(&d->cv, &d->mu);
            continue;
        }
        pthread_mutex_unlock(&d->mu);
        nanosleep(&(struct timespec){ .tv_sec = 0, .tv_nsec = 50000 }, NULL);
        pthread_mutex_lock(&d->mu);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

static void progress_start(bg_dist *d)
{
    if (!d->thread_multiple || d->ctx->device != BG_CPU) return;
    d->progress_stop = false;
    if (pthread_mutex_init(&d->mu, NULL)) return;
    if (pthread_cond_init(&d->cv, NULL)) {
        pthread_mutex_destroy(&d->mu);
        return;
    }
    if (pthread_create(&d->progress, NULL, progress_main, d)) {
        pthread_cond_destroy(&d->cv);
        pthread_mutex_destroy(&d->mu);
        return;
    }
    d->progress_on = true;
}

static void progress_end(bg_dist *d)
{
    if (!d->progress_on) return;
    pthread_mutex_lock(&d->mu);
    d->progress_stop = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->progress, NULL);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    d->progress_on = false;
}

static void lock(bg_dist *d)
{
    if (d->progress_on) pthread_mutex_lock(&d->mu);
}

static void unlock(bg_dist *d)
{
    if (d->progress_on) pthread_mutex_unlock(&d->mu);
}

void bg__dist_unbind(bg_dist *d)
{
    if (!d) return;
    progress_end(d);
    bool dev = d->ctx && d->ctx->device != BG_CPU;
#ifdef BG_HAVE_MPI
    for (int b = 0; b < d->n_buckets && !dev; b++)
        if (d->buckets[b].launched && !d->buckets[b].done)
            MPI_Wait(&d->buckets[b].req, MPI_STATUS_IGNORE);
#endif
    if (dev && d->nccl) bg__nccl_wait(d->nccl);
    if (d->ctx && d->ctx->grad_ready_user == d) bg_ctx_set_grad_ready(d->ctx, NULL, NULL);
    for (int b = 0; b < d->n_buckets; b++) {
        if (dev) bg__nccl_free(d->buckets[b].buf);
        else
            free(d->buckets[b].buf);
    }
    free(d->buckets);
    free(d->params);
    free(d->lookup);
    free(d->lookup_idx);
    d->buckets = NULL;
    d->params = NULL;
    d->lookup = NULL;
    d->lookup_idx = NULL;
    d->n_buckets = d->n_params = 0;
    d->ctx = NULL;
    if (d->owner) bg__optim_drop_dist(d->owner);
    d->owner = NULL;
}

void bg__dist_release(bg_dist *d, struct bg_optim *owner)
{
    if (d && d->owner == owner) {
        d->owner = NULL; /* it is letting go itself */
        bg__dist_unbind(d);
    }
}

static int find_param(const bg_dist *d, const bg_tensor *t)
{
    int lo = 0, hi = d->n_params - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (d->lookup[mid] == t) return d->lookup_idx[mid];
        if ((uintptr_t)d->lookup[mid] < (uintptr_t)t) lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static void reset_step(bg_dist *d)
{
    lock(d);
    for (int i = 0; i < d->n_params; i++) d->params[i].ready = false;
    for (int b = 0; b < d->n_buckets; b++) {
        d->buckets[b].pending = d->buckets[b].count;
        d->buckets[b].launched = d->buckets[b].done = false;
    }
    d->next_launch = 0;
    d->backward_done = false;
    d->synced = false;
    d->sync_rc = 0;
    unlock(d);
}

/* Device gradients: copies into the bucket and NCCL's premultiplied sum (dist_nccl.c). */
static void launch_device(bg_dist *d, int b)
{
    dist_bucket *k = &d->buckets[b];
    for (int i = k->first; i < k->first + k->count; i++) {
        const bg_tensor *p = d->params[i].p;
        size_t bytes = (size_t)bg__numel(p->ndim, p->shape) * sizeof(float);
        bg__nccl_copy(d->ctx, k->buf + d->params[i].offset, p->grad ? p->grad->data : NULL, bytes);
    }
    bg__nccl_launch(d->nccl, d->ctx, b, k->buf, k->numel, (float)d->scale);
    k->launched = true;
    d->next_launch = b + 1;
}

/* Pack and start bucket b. */
static void launch(bg_dist *d, int b)
{
    dist_bucket *k = &d->buckets[b];
    double t0 = bg__dist_now();
    if (d->nccl && d->ctx->device != BG_CPU) {
        launch_device(d, b);
        d->stats.launch_s += bg__dist_now() - t0;
        return;
    }
    float s = (float)d->scale;
    for (int i = k->first; i < k->first + k->count; i++) {
        const bg_tensor *p = d->params[i].p;
        float *dst = k->buf + d->params[i].offset;
        int64_t n = bg__numel(p->ndim, p->shape);
        const float *g = p->grad ? (const float *)p->grad->data : NULL;
        if (!g) memset(dst, 0, (size_t)n * sizeof *dst);
        else if (s == 1.0f)
            memcpy(dst, g, (size_t)n * sizeof *dst);
        else
#pragma omp parallel for schedule(static) if (n > 262144)
            for (int64_t e = 0; e < n; e++) dst[e] = g[e] * s;
    }
    lock(d);
#ifdef BG_HAVE_MPI
    MPI_Iallreduce(MPI_IN_PLACE, k->buf, (int)k->numel, MPI_FLOAT, MPI_SUM, d->comm, &k->req);
#endif
    k->launched = true;
    d->next_launch = b + 1;
    if (d->progress_on) pthread_cond_signal(&d->cv);
    unlock(d);
    d->stats.launch_s += bg__dist_now() - t0;
}

/* Nonblocking collectives advance inside MPI calls: poke the started ones. */
static void progress(bg_dist *d)
{
#ifdef BG_HAVE_MPI
    if (d->ctx->device != BG_CPU || d->progress_on) return; /* NCCL, the thread: on their own */
    for (int b = 0; b < d->next_launch; b++) {
        dist_bucket *k = &d->buckets[b];
        if (!k->done) {
            int flag = 0;
            MPI_Test(&k->req, &flag, MPI_STATUS_IGNORE);
            k->done = flag != 0;
        }
    }
#else
    (void)d;
#endif
}

static void on_grad_ready(void *user, bg_tensor *p)
{
    bg_dist *d = user;
    if (!p) {
        d->backward_done = true;
        return;
    }
    if (d->no_sync || d->synced) return;
    int i = find_param(d, p);
    if (i < 0 || d->params[i].ready) return;
    d->params[i].ready = true;
    d->buckets[d->params[i].bucket].pending--;
    bool started = false;
    while (d->next_launch < d->n_buckets && d->buckets[d->next_launch].pending == 0) {
        launch(d, d->next_launch);
        d->stats.early_buckets++;
        started = true;
    }
    if (!started) progress(d);
}

static int cmp_lookup(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const bg_tensor *const *)a,
              y = (uintptr_t) * (const bg_tensor *const *)b;
    return x < y ? -1 : x > y;
}

static int make_buckets(bg_dist *d)
{
    int cap = d->n_params ? d->n_params : 1;
    d->buckets = calloc((size_t)cap, sizeof *d->buckets);
    if (!d->buckets) return BG_ENOMEM;
    size_t limit = d->bucket_bytes / sizeof(float);
    for (int i = 0; i < d->n_params; i++) {
        int64_t n = bg__numel(d->params[i].p->ndim, d->params[i].p->shape);
        dist_bucket *k = d->n_buckets ? &d->buckets[d->n_buckets - 1] : NULL;
        if (!k || (size_t)(k->numel + n) > limit || k->numel + n > INT_MAX) {
            k = &d->buckets[d->n_buckets++];
            k->first = i;
        }
        d->params[i].bucket = (int)(k - d->buckets);
        d->params[i].offset = k->numel;
        k->count++;
        k->numel += n;
        d->stats.bytes_per_step += n * (int64_t)sizeof(float);
    }
    bool dev = d->ctx->device != BG_CPU;
    for (int b = 0; b < d->n_buckets; b++) {
        if (d->buckets[b].numel > INT_MAX) return BG_EUNSUPPORTED;
        size_t bytes = (size_t)d->buckets[b].numel * sizeof(float);
        d->buckets[b].buf = dev ? bg__nccl_alloc(d->ctx, bytes) : bg__aligned_alloc(d->ctx, bytes);
        if (!d->buckets[b].buf) return BG_ENOMEM;
    }
    d->stats.buckets = d->n_buckets;
    return dev ? bg__nccl_buckets(d->nccl, d->n_buckets) : BG_OK;
}

int bg__dist_bind(bg_dist *d, struct bg_optim *owner, bg_ctx *ctx, bg_tensor *const *params, int n)
{
    bg__dist_unbind(d);
    d->owner = owner;
    if (!d->mpi_active) return BG_OK; /* a world of one: nothing to average */
    if (ctx->device != BG_CPU && !d->nccl) {
        char err[256];
        if (!(d->nccl = bg__nccl_open(d, err, sizeof err)))
            return bg__error(ctx, BG_EUNSUPPORTED, "dist: device gradients are reduced by NCCL: %s",
                             err);
    }
    d->ctx = ctx;
    d->n_params = n;
    d->params = calloc((size_t)(n ? n : 1), sizeof *d->params);
    d->lookup = calloc((size_t)(n ? n : 1), sizeof *d->lookup);
    d->lookup_idx = calloc((size_t)(n ? n : 1), sizeof *d->lookup_idx);
    if (!d->params || !d->lookup || !d->lookup_idx) goto oom;
    for (int i = 0; i < n; i++) {
        d->params[i].p = params[n - 1 - i];
        if (params[n - 1 - i]->dtype != BG_F32) {
            bg__dist_unbind(d);
            return bg__error(ctx, BG_EINVAL, "dist: parameter '%s' is not f32",
                             params[n - 1 - i]->name);
        }
        d->lookup[i] = d->params[i].p;
    }
    qsort(d->lookup, (size_t)n, sizeof *d->lookup, cmp_lookup);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (d->lookup[i] == d->params[j].p) d->lookup_idx[i] = j;
    memset(&d->stats, 0, sizeof d->stats);
    int rc = make_buckets(d);
    if (rc == BG_ENOMEM) goto oom;
    if (rc) {
        bg__dist_unbind(d);
        return bg__error(ctx, rc, "dist: a parameter of more than 2^31 elements");
    }
    reset_step(d);
    progress_start(d);
    bg_ctx_set_grad_ready(ctx, on_grad_ready, d);
    return BG_OK;
oom:
    bg__dist_unbind(d);
    return bg__error(ctx, BG_ENOMEM, "dist: out of memory for the gradient buckets");
}

static void unpack(bg_dist *d)
{
    bool dev = d->ctx->device != BG_CPU;
    for (int i = 0; i < d->n_params; i++) {
        bg_tensor *p = d->params[i].p;
        const float *src = d->buckets[d->params[i].bucket].buf + d->params[i].offset;
        float *g = p->grad ? (float *)p->grad->data : bg__grad_of(p);
        size_t bytes = (size_t)bg__numel(p->ndim, p->shape) * sizeof *g;
        if (g && dev) bg__nccl_copy(d->ctx, g, src, bytes);
        else if (g)
            memcpy(g, src, bytes);
    }
}

void bg_dist_no_sync(bg_dist *d, bool on)
{
    if (d) d->no_sync = on;
}

int bg_dist_sync_grads(bg_dist *d)
{
    if (!d) return BG_EINVAL;
    if (!d->mpi_active) return BG_OK;
    if (d->synced) return d->sync_rc;
    if (!d->ctx) {
        fprintf(stderr, "bitgrad: rank %d: bg_dist_sync_grads before bg_optim_set_dist\n", d->rank);
        return BG_ESTATE;
    }
    progress(d);
    lock(d);
    for (int b = 0; b < d->next_launch; b++)
        if (d->buckets[b].done)
            d->stats.done_early_bytes += d->buckets[b].numel * (int64_t)sizeof(float);
    unlock(d);
    while (d->next_launch < d->n_buckets) launch(d, d->next_launch);
    double t0 = bg__dist_now();
#ifdef BG_HAVE_MPI
    if (d->ctx->device != BG_CPU) bg__nccl_join(d->nccl, d->ctx, d->n_buckets);
    lock(d);
    for (int b = 0; b < d->n_buckets && d->ctx->device == BG_CPU; b++)
        if (!d->buckets[b].done) MPI_Wait(&d->buckets[b].req, MPI_STATUS_IGNORE);
    for (int b = 0; b < d->n_buckets; b++) d->buckets[b].done = true;
    unlock(d);
    int mine[2] = { d->backward_done ? 0 : 1, d->stop_requested ? 1 : 0 }, all[2] = { 0, 0 };
    MPI_Allreduce(mine, all, 2, MPI_INT, MPI_MAX, d->comm);
#else
    int all[2] = { 0, 0 };
#endif
    d->stats.wait_s += bg__dist_now() - t0;
    d->stats.steps++;
    unpack(d);
    if (all[1]) d->stop_agreed = true;
    d->synced = true;
    d->sync_rc = all[0] ? BG_ENONFINITE : BG_OK;
    return d->sync_rc;
}

int bg__dist_sync_for(bg_dist *d, bg_ctx *ctx)
{
    int rc = bg_dist_sync_grads(d);
    if (rc == BG_ENONFINITE)
        return bg__error(ctx, rc,
                         "dist: a rank did not finish its backward (a NaN/Inf loss or a "
                         "failed op); every rank skipped the step and no parameter changed");
    if (rc) return bg__error(ctx, rc, "dist: gradient averaging failed");
    return BG_OK;
}

void bg__dist_step_done(bg_dist *d)
{
    if (d && d->mpi_active && d->ctx) reset_step(d);
}
