/* dist_nccl.c - all-reduce of device gradients through NCCL (CUDA builds with MPI).
 *
 * libnccl is opened at run time with dlopen, as cuBLAS is (src/cuda/k_runtime.cu): a build
 * never links it, and a machine without it still trains on CPU ctxs. The few CUDA runtime
 * calls the overlap needs (a second stream, events) are looked up in the already linked
 * cudart the same way, so this file needs neither nccl.h nor cuda_runtime.h; the NCCL types
 * below are its stable C ABI (ncclUniqueId is 128 bytes, enums are ints).
 *
 * Per bucket: the gradients are copied into the bucket's device buffer on the ctx's stream,
 * an event lets NCCL's own stream start the premultiplied sum (each rank's buffer times its
 * weight, summed) as soon as the copies are done, while backward's kernels go on; at sync the
 * ctx's stream waits for the buckets' events and copies the averages back. The unique id of
 * the NCCL communicator travels over MPI from rank 0. */
#include "dist/dist_impl.h"

#if defined(BG_HAVE_MPI) && defined(BG_HAVE_CUDA)
#include <dlfcn.h>

#include "cuda/cuda_impl.h"

typedef struct {
    char internal[128];
} nccl_unique_id;
typedef void *nccl_comm;
typedef int nccl_result;
enum { NCCL_UINT8 = 1, NCCL_FLOAT32 = 7, NCCL_SCALAR_HOST_IMMEDIATE = 1 };

struct dist_nccl {
    void *lib;
    nccl_comm comm;
    void *stream; /* cudaStream_t of the reductions */
    void **ready; /* per bucket: the copies into the buffer are done (ctx stream) */
    void **done;  /* per bucket: its reduction is done (NCCL stream) */
    int n_events;
    nccl_result (*get_unique_id)(nccl_unique_id *);
    nccl_result (*comm_init_rank)(nccl_comm *, int, nccl_unique_id, int);
    nccl_result (*comm_destroy)(nccl_comm);
    nccl_result (*all_reduce)(const void *, void *, size_t, int, int, nccl_comm, void *);
    nccl_result (*broadcast)(const void *, void *, size_t, int, int, nccl_comm, void *);
    nccl_result (*premul_create)(int *, void *, int, int, nccl_comm);
    nccl_result (*op_destroy)(int, nccl_comm);
    const char *(*error_string)(nccl_result);
    int (*stream_create)(void **);
    int (*stream_destroy)(void *);
    int (*stream_sync)(void *);
    int (*stream_wait_event)(void *, void *, unsigned);
    int (*event_create)(void **, unsigned);
    int (*event_record)(void *, void *);
    int (*event_destroy)(void *);
};

static bool load_symbols(struct dist_nccl *n, char *err, size_t err_len)
{
    void *self = dlopen(NULL, RTLD_NOW);     /* the program and what it loaded: cudart */
    const char *env = getenv("BG_NCCL_LIB"); /* an explicit path first, then the loader's */
    const char *names[] = { env ? env : "libnccl.so.2", "libnccl.so.2",
                            "/usr/local/cuda/lib64/libnccl.so.2", "libnccl.so" };
    for (size_t i = 0; !n->lib && i < sizeof names / sizeof names[0]; i++)
        n->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!n->lib) {
        snprintf(err, err_len, "cannot load NCCL (libnccl.so.2): %s", dlerror());
        return false;
    }
    struct {
        void *h;
        void **slot;
        const char *name;
    } syms[] = {
        { n->lib, (void **)&n->get_unique_id, "ncclGetUniqueId" },
        { n->lib, (void **)&n->comm_init_rank, "ncclCommInitRank" },
        { n->lib, (void **)&n->comm_destroy, "ncclCommDestroy" },
        { n->lib, (void **)&n->all_reduce, "ncclAllReduce" },
        { n->lib, (void **)&n->broadcast, "ncclBroadcast" },
        { n->lib, (void **)&n->premul_create, "ncclRedOpCreatePreMulSum" },
        { n->lib, (void **)&n->op_destroy, "ncclRedOpDestroy" },
        { n->lib, (void **)&n->error_string, "ncclGetErrorString" },
        { self, (void **)&n->stream_create, "cudaStreamCreate" },
        { self, (void **)&n->stream_destroy, "cudaStreamDestroy" },
        { self, (void **)&n->stream_sync, "cudaStreamSynchronize" },
        { self, (void **)&n->stream_wait_event, "cudaStreamWaitEvent" },
        { self, (void **)&n->event_create, "cudaEventCreateWithFlags" },
        { self, (void **)&n->event_record, "cudaEventRecord" },
        { self, (void **)&n->event_destroy, "cudaEventDestroy" },
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *f = syms[i].h ? dlsym(syms[i].h, syms[i].name) : NULL;
        if (!f) {
            snprintf(err, err_len,
                     "NCCL: no %s (NCCL 2.11 or newer and the CUDA runtime are "
                     "needed)",
                     syms[i].name);
            return false;
        }
        memcpy(syms[i].slot, &f, sizeof f);
    }
    return true;
}

struct dist_nccl *bg__nccl_open(bg_dist *d, char *err, size_t err_len)
{
    struct dist_nccl *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    /* Every rank must agree on whether NCCL is usable before any rank waits in its init. */
    int ok = load_symbols(n, err, err_len) && n->stream_create(&n->stream) == 0, all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, d->comm);
    nccl_unique_id id;
    memset(&id, 0, sizeof id);
    if (all && d->rank == 0 && n->get_unique_id(&id) != 0) all = 0;
    MPI_Bcast(&all, 1, MPI_INT, 0, d->comm);
    if (all) MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, d->comm);
    nccl_result r = all ? n->comm_init_rank(&n->comm, d->world, id, d->rank) : 0;
    if (!all || r != 0) {
        if (ok && all) snprintf(err, err_len, "ncclCommInitRank: %s", n->error_string(r));
        else if (ok)
            snprintf(err, err_len, "NCCL is not usable on every rank");
        n->comm = NULL;
        bg__nccl_close(&n);
        return NULL;
    }
    return n;
}

void bg__nccl_close(struct dist_nccl **pn)
{
    if (!pn || !*pn) return;
    struct dist_nccl *n = *pn;
    for (int i = 0; i < n->n_events; i++) {
        if (n->ready && n->ready[i]) n->event_destroy(n->ready[i]);
        if (n->done && n->done[i]) n->event_destroy(n->done[i]);
    }
    free(n->ready);
    free(n->done);
    if (n->comm) n->comm_destroy(n->comm);
    if (n->stream) n->stream_destroy(n->stream);
    if (n->lib) dlclose(n->lib);
    free(n);
    *pn = NULL;
}

int bg__nccl_buckets(struct dist_nccl *n, int n_buckets)
{
    for (int i = 0; i < n->n_events; i++) {
        if (n->ready[i]) n->event_destroy(n->ready[i]);
        if (n->done[i]) n->event_destroy(n->done[i]);
    }
    free(n->ready);
    free(n->done);
    n->n_events = 0;
    n->ready = calloc((size_t)(n_buckets ? n_buckets : 1), sizeof *n->ready);
    n->done = calloc((size_t)(n_buckets ? n_buckets : 1), sizeof *n->done);
    if (!n->ready || !n->done) return BG_ENOMEM;
    for (int i = 0; i < n_buckets; i++, n->n_events++)
        if (n->event_create(&n->ready[i], 2 /* cudaEventDisableTiming */) ||
            n->event_create(&n->done[i], 2))
            return BG_ENODEV;
    return BG_OK;
}

int bg__nccl_launch(struct dist_nccl *n, bg_ctx *ctx, int b, float *buf, int64_t count, float scale)
{
    void *cstream = ((bg_cuda_state *)ctx->device_state)->stream;
    int op = 0;
    if (n->event_record(n->ready[b], cstream) || n->stream_wait_event(n->stream, n->ready[b], 0))
        return bg__error(ctx, BG_ENODEV, "dist: CUDA event for bucket %d failed", b);
    nccl_result r =
        n->premul_create(&op, &scale, NCCL_FLOAT32, NCCL_SCALAR_HOST_IMMEDIATE, n->comm);
    if (!r) r = n->all_reduce(buf, buf, (size_t)count, NCCL_FLOAT32, op, n->comm, n->stream);
    if (!r) r = n->op_destroy(op, n->comm);
    if (r) return bg__error(ctx, BG_EIO, "dist: ncclAllReduce: %s", n->error_string(r));
    if (n->event_record(n->done[b], n->stream))
        return bg__error(ctx, BG_ENODEV, "dist: CUDA event for bucket %d failed", b);
    return BG_OK;
}

int bg__nccl_join(struct dist_nccl *n, bg_ctx *ctx, int n_buckets)
{
    void *cstream = ((bg_cuda_state *)ctx->device_state)->stream;
    for (int b = 0; b < n_buckets; b++)
        if (n->stream_wait_event(cstream, n->done[b], 0))
            return bg__error(ctx, BG_ENODEV, "dist: CUDA stream wait failed");
    return BG_OK;
}

int bg__nccl_broadcast(struct dist_nccl *n, bg_ctx *ctx, void *dev_buf, size_t bytes)
{
    if (bg__cu_sync(ctx)) return BG_ENODEV; /* the values were written on the ctx's stream */
    nccl_result r = n->broadcast(dev_buf, dev_buf, bytes, NCCL_UINT8, 0, n->comm, n->stream);
    if (r) {
        fprintf(stderr, "bitgrad: ncclBroadcast: %s\n", n->error_string(r));
        return BG_EIO;
    }
    return BG_OK;
}

int bg__nccl_wait(struct dist_nccl *n) { return n->stream_sync(n->stream) ? BG_ENODEV : BG_OK; }

void *bg__nccl_alloc(bg_ctx *ctx, size_t bytes) { return bg__cu_malloc(ctx, bytes); }
void bg__nccl_free(void *p) { bg__cu_free(p); }

int bg__nccl_copy(bg_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    if (!src) {
        bg__cu_memset(ctx, dst, 0, bytes);
        return ctx->err_code;
    }
    return bg__cu_copy(ctx, dst, src, bytes, BG_CU_D2D);
}

#else /* no CUDA or no MPI: the CPU path only */
struct dist_nccl *bg__nccl_open(bg_dist *d, char *err, size_t err_len)
{
    (void)d;
    snprintf(err, err_len, "device gradients need a CUDA build of bitgrad with MPI (NCCL)");
    return NULL;
}
void bg__nccl_close(struct dist_nccl **n)
{
    if (n) *n = NULL;
}
int bg__nccl_buckets(struct dist_nccl *n, int n_buckets)
{
    (void)n, (void)n_buckets;
    return BG_EUNSUPPORTED;
}
int bg__nccl_launch(struct dist_nccl *n, bg_ctx *ctx, int b, float *buf, int64_t count, float scale)
{
    (void)n, (void)ctx, (void)b, (void)buf, (void)count, (void)scale;
    return BG_EUNSUPPORTED;
}
int bg__nccl_join(struct dist_nccl *n, bg_ctx *ctx, int n_buckets)
{
    (void)n, (void)ctx, (void)n_buckets;
    return BG_EUNSUPPORTED;
}
int bg__nccl_broadcast(struct dist_nccl *n, bg_ctx *ctx, void *dev_buf, size_t bytes)
{
    (void)n, (void)ctx, (void)dev_buf, (void)bytes;
    return BG_EUNSUPPORTED;
}
void *bg__nccl_alloc(bg_ctx *ctx, size_t bytes)
{
    (void)ctx, (void)bytes;
    return NULL;
}
void bg__nccl_free(void *p) { (void)p; }
int bg__nccl_copy(bg_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx, (void)dst, (void)src, (void)bytes;
    return BG_EUNSUPPORTED;
}
int bg__nccl_wait(struct dist_nccl *n)
{
    (void)n;
    return BG_EUNSUPPORTED;
}
#endif
