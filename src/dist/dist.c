/* dist.c - the process group: initialisation under a launcher (or a world of one), rank and
 * world size, broadcast from rank 0, batch slices, weighted means, stop requests and aborts.
 * The gradient buckets are in dist_buckets.c. Without MPI every call works for a world of
 * one and asking for more is BG_EUNSUPPORTED. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "dist/dist_impl.h"

bool bg_dist_available(void)
{
#ifdef BG_HAVE_MPI
    return true;
#else
    return false;
#endif
}

double bg__dist_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The world size a launcher announced in the environment (Open MPI, MPICH/Hydra, PMI), or 0
 * when none did. */
static long launcher_world(void)
{
    const char *vars[] = { "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS" };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return strtol(v, NULL, 10);
    }
    return 0;
}

static size_t default_bucket_bytes(void)
{
    const char *v = getenv("BG_DIST_BUCKET_MB");
    double mb = v ? strtod(v, NULL) : 4.0;
    if (!(mb > 0.0) || mb > 2048.0) mb = 4.0;
    return (size_t)(mb * 1048576.0);
}

#ifdef BG_HAVE_MPI
/* An MPI failure ends the whole job with a message naming the rank, instead of a hang. */
static void on_mpi_error(MPI_Comm *comm, int *code, ...)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0, rank = -1, world = 0;
    MPI_Error_string(*code, msg, &len);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    fprintf(stderr, "bitgrad: rank %d of %d: MPI error: %.*s; ending the job\n", rank, world, len,
            msg);
    fflush(stderr);
    MPI_Abort(*comm, 1);
}

static int mpi_setup(bg_dist *d, int *argc, char ***argv)
{
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        /* MULTIPLE lets a progress thread advance the reductions during backward */
        if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
            fprintf(stderr, "bitgrad: MPI_Init failed\n");
            return BG_EIO;
        }
        d->mpi_owned = true;
    } else {
        MPI_Query_thread(&provided);
    }
    const char *pt = getenv("BG_DIST_PROGRESS_THREAD");
    d->thread_multiple = provided >= MPI_THREAD_MULTIPLE && !(pt && strcmp(pt, "0") == 0);
    MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
    MPI_Errhandler eh;
    MPI_Comm_create_errhandler(on_mpi_error, &eh);
    MPI_Comm_set_errhandler(d->comm, eh);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, eh);
    MPI_Errhandler_free(&eh);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->world);
    d->mpi_active = d->world > 1;
    return BG_OK;
}
#endif

int bg_dist_init(bg_dist **out, int *argc, char ***argv)
{
    if (!out) return BG_EINVAL;
    *out = NULL;
    bg_dist *d = calloc(1, sizeof *d);
    if (!d) return BG_ENOMEM;
    d->world = 1;
    d->weight = 1.0;
    d->scale = 1.0;
    d->bucket_bytes = default_bucket_bytes();
    long launched = launcher_world();
    const char *off = getenv("BG_DIST");
    bool want = launched > 1 && !(off && strcmp(off, "off") == 0);
#ifdef BG_HAVE_MPI
    if (want) {
        int rc = mpi_setup(d, argc, argv);
        if (rc) {
            free(d);
            return rc;
        }
        d->scale = 1.0 / d->world;
    }
#else
    (void)argc;
    (void)argv;
    if (want) {
        fprintf(stderr,
                "bitgrad: started by a launcher as one of %ld processes, but this "
                "build has no MPI (rebuild with libopenmpi-dev installed, meson -Dmpi=enabled); "
                "each process would train alone\n",
                launched);
        free(d);
        return BG_EUNSUPPORTED;
    }
#endif
    *out = d;
    return BG_OK;
}

void bg_dist_finalize(bg_dist **pd)
{
    if (!pd || !*pd) return;
    bg_dist *d = *pd;
    bg__dist_unbind(d);
    bg__nccl_close(&d->nccl);
#ifdef BG_HAVE_MPI
    if (d->world > 1 || d->mpi_owned) {
        MPI_Comm_free(&d->comm);
        if (d->mpi_owned) MPI_Finalize();
    }
#endif
    free(d);
    *pd = NULL;
}

int bg_dist_rank(const bg_dist *d) { return d ? d->rank : 0; }
int bg_dist_world(const bg_dist *d) { return d ? d->world : 1; }
bool bg_dist_is_root(const bg_dist *d) { return !d || d->rank == 0; }

void *bg_dist_comm(const bg_dist *d)
{
#ifdef BG_HAVE_MPI
    if (d && d->mpi_active) {
        void *p = NULL;
        memcpy(&p, &d->comm, sizeof d->comm < sizeof p ? sizeof d->comm : sizeof p);
        return p;
    }
#else
    (void)d;
#endif
    return NULL;
}

void bg_dist_set_bucket_bytes(bg_dist *d, size_t bytes)
{
    if (d && bytes >= 4096) d->bucket_bytes = bytes;
}

bg_dist_stats bg_dist_get_stats(const bg_dist *d)
{
    bg_dist_stats s = { 0 };
    if (!d) return s;
    s = d->stats;
    s.progress_thread = d->progress_on;
    return s;
}

void bg_dist_slice(const bg_dist *d, int64_t n, int64_t *start, int64_t *count)
{
    int64_t w = bg_dist_world(d), r = bg_dist_rank(d);
    if (n < 0) n = 0;
    int64_t base = n / w, extra = n % w;
    if (start) *start = r * base + (r < extra ? r : extra);
    if (count) *count = base + (r < extra ? 1 : 0);
}

/* ---- broadcast from rank 0 ---------------------------------------------------------------- */
static int bcast_bytes(bg_dist *d, void *data, size_t bytes)
{
#ifdef BG_HAVE_MPI
    for (size_t off = 0; off < bytes;) {
        size_t n = bytes - off > (size_t)INT_MAX ? (size_t)INT_MAX : bytes - off;
        MPI_Bcast((char *)data + off, (int)n, MPI_BYTE, 0, d->comm);
        off += n;
    }
    return BG_OK;
#else
    (void)d;
    (void)data;
    (void)bytes;
    return BG_EUNSUPPORTED;
#endif
}

int bg_dist_broadcast(bg_dist *d, bg_tensor *const *ts, int n)
{
    if (!d || (n > 0 && !ts) || n < 0) return BG_EINVAL;
    if (!d->mpi_active) return BG_OK;
    for (int i = 0; i < n; i++) {
        bg_tensor *t = ts[i];
        if (!t || !t->persistent || !bg_tensor_is_contiguous(t)) {
            fprintf(stderr,
                    "bitgrad: rank %d: bg_dist_broadcast: tensor %d is not a persistent "
                    "contiguous tensor\n",
                    d->rank, i);
            return BG_EINVAL;
        }
        size_t bytes = (size_t)bg__numel(t->ndim, t->shape) * bg_dtype_size(t->dtype);
        int rc;
        if (t->device != BG_CPU) {
            char err[256];
            if (!d->nccl && !(d->nccl = bg__nccl_open(d, err, sizeof err))) {
                fprintf(stderr, "bitgrad: rank %d: broadcast of a device tensor: %s\n", d->rank,
                        err);
                return BG_EUNSUPPORTED;
            }
            rc = bg__nccl_broadcast(d->nccl, t->ctx, t->data, bytes);
        } else {
            rc = bcast_bytes(d, t->data, bytes);
        }
        if (rc) return rc;
    }
    if (d->nccl) return bg__nccl_wait(d->nccl);
    return BG_OK;
}

int bg_dist_broadcast_module(bg_dist *d, bg_module *m)
{
    if (!d || !m) return BG_EINVAL;
    if (!d->mpi_active) return BG_OK;
    int n = bg_module_n_params(m);
    for (int i = 0; i < n; i++) {
        bg_tensor *t = bg_module_param(m, i);
        if (!t || !t->persistent || !t->data) continue; /* packed frozen bases: same file */
        int rc = bg_dist_broadcast(d, &t, 1);
        if (rc) return rc;
    }
    return BG_OK;
}

/* ---- weights and means -------------------------------------------------------------------- */
double bg_dist_sum(bg_dist *d, double v)
{
#ifdef BG_HAVE_MPI
    if (d && d->mpi_active) {
        double s = 0.0;
        MPI_Allreduce(&v, &s, 1, MPI_DOUBLE, MPI_SUM, d->comm);
        return s;
    }
#else
    (void)d;
#endif
    return v;
}

int bg_dist_set_weight(bg_dist *d, double weight)
{
    if (!d || !(weight >= 0.0) || !isfinite(weight)) return BG_EINVAL;
    double total = bg_dist_sum(d, weight);
    d->weight = weight;
    d->scale = total > 0.0 ? weight / total : 0.0;
    return BG_OK;
}

double bg_dist_mean(bg_dist *d, double v)
{
    if (!d || !d->mpi_active) return v;
    return bg_dist_sum(d, d->scale * v);
}

/* ---- stops and faults --------------------------------------------------------------------- */
void bg_dist_request_stop(bg_dist *d)
{
    if (d) d->stop_requested = 1;
}

bool bg_dist_should_stop(const bg_dist *d)
{
    if (!d) return false;
    return d->mpi_active ? d->stop_agreed : (d->stop_requested != 0);
}

int bg_dist_abort(bg_dist *d, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "bitgrad: rank %d of %d: %s%s\n", bg_dist_rank(d), bg_dist_world(d), msg,
            d && d->mpi_active ? "; ending the job" : "");
    fflush(stderr);
#ifdef BG_HAVE_MPI
    if (d && d->mpi_active) MPI_Abort(d->comm, code ? code : 1);
#endif
    return code;
}
