/* dist_nccl.c - all-reduce of device gradients through NCCL (CUDA builds with MPI).
 * libnccl is opened at run time with dlopen, as cuBLAS is (src/cuda/k_runtime.cu), so that a
 * build never links it and a machine without it still runs (on the CPU path). */
#include "dist/dist_impl.h"

#if defined(BG_HAVE_MPI) && defined(BG_HAVE_CUDA)
#include "dist/dist_nccl_impl.h"
#else
struct dist_nccl *bg__nccl_open(bg_dist *d, char *err, size_t err_len)
{
    (void)d;
    snprintf(err, err_len, "NCCL needs a CUDA build of bitgrad with MPI");
    return NULL;
}
void bg__nccl_close(struct dist_nccl **n)
{
    if (n) *n = NULL;
}
int bg__nccl_allreduce(struct dist_nccl *n, float *dev_buf, int64_t count, float scale)
{
    (void)n, (void)dev_buf, (void)count, (void)scale;
    return BG_EUNSUPPORTED;
}
int bg__nccl_broadcast(struct dist_nccl *n, void *dev_buf, size_t bytes)
{
    (void)n, (void)dev_buf, (void)bytes;
    return BG_EUNSUPPORTED;
}
int bg__nccl_wait(struct dist_nccl *n)
{
    (void)n;
    return BG_EUNSUPPORTED;
}
#endif
