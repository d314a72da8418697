/* transfer.c - explicit copies between devices (bg_tensor_to, bg_tensor_to_device) and
 * bg_device_info. Built in every configuration; without CUDA only CPU tensors exist and
 * these are plain copies. Values never move between host and device except through these
 * functions and the tensor value API (bg_tensor_read/write/fill, bg_item). */
#include "cuda/cuda_dispatch.h"
#ifdef BG_HAVE_CUDA
#include "cuda/cuda_impl.h"
#endif

int bg_tensor_to(bg_tensor *dst, const bg_tensor *src)
{
    if (!bg__check_live(dst, "bg_tensor_to") || !bg__check_live(src, "bg_tensor_to"))
        return BG_EINVAL;
    if (!bg__same_shape(dst, src)) {
        char a[64], b[64];
        return bg__error(dst->ctx, BG_ESHAPE, "bg_tensor_to: %s into %s: shapes differ",
                         bg__shape_str(src, a, sizeof a), bg__shape_str(dst, b, sizeof b));
    }
    return bg_tensor_copy(dst, src); /* converts dtypes; device pairs go to src/cuda */
}

bg_tensor *bg_tensor_to_device(const bg_tensor *t, bg_ctx *dst_ctx)
{
    if (!dst_ctx || !bg__check_live(t, "bg_tensor_to_device")) return NULL;
    bg_tensor *c = bg_tensor_new(dst_ctx, t->dtype, t->ndim, t->shape);
    if (!c) return NULL;
    if (bg_tensor_to(c, t) != BG_OK) {
        bg_tensor_free(&c);
        return NULL;
    }
    snprintf(c->name, sizeof c->name, "%s", t->name);
    c->requires_grad = t->requires_grad && t->dtype == BG_F32;
    return c;
}

const char *bg_device_info(bg_device device)
{
    if (device == BG_CPU) return "cpu";
    if (device != BG_CUDA) return "unknown device";
#ifdef BG_HAVE_CUDA
    static _Thread_local char msg[256];
    bg__cu_probe(msg, sizeof msg);
    return msg;
#else
    return "cuda: not built (configure with -Dcuda=enabled where the CUDA toolkit is installed)";
#endif
}
