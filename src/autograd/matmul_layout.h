/* matmul_layout.h - how a tensor's last two dimensions are handed to BLAS (CPU cblas and
 * cuBLAS alike): row-major, or a transposed view passed as a transpose with its own leading
 * dimension, never copied; other layouts are packed first. Shared by src/autograd/op_matmul.c
 * and src/cuda/ops_matmul.c. */
#ifndef BG_MATMUL_LAYOUT_H
#define BG_MATMUL_LAYOUT_H

#include "tensor/tensor_impl.h"

/* A matrix operand: logical rows x cols at p, stored row-major (trans = false, element
 * (r, c) at p[r*ld + c]) or transposed (element (r, c) at p[c*ld + r]). */
typedef struct mat {
    const float *p;
    int64_t rows, cols, ld;
    bool trans;
    int64_t bstride[2]; /* strides of up to two batch dims (0 when broadcast) */
} mat;

static inline bool mat_from(mat *m, const bg_tensor *t, const float *data)
{
    int n = t->ndim;
    m->p = data;
    m->rows = t->shape[n - 2];
    m->cols = t->shape[n - 1];
    int64_t s_r = t->stride[n - 2], s_c = t->stride[n - 1];
    if ((s_c == 1 || m->cols == 1) && (s_r >= m->cols || m->rows == 1)) {
        m->trans = false;
        m->ld = m->rows == 1 ? (m->cols > 0 ? m->cols : 1) : s_r;
    } else if ((s_r == 1 || m->rows == 1) && (s_c >= m->rows || m->cols == 1)) {
        m->trans = true;
        m->ld = m->cols == 1 ? (m->rows > 0 ? m->rows : 1) : s_c;
    } else {
        return false;
    }
    if (m->ld < 1) m->ld = 1;
    for (int i = 0; i < 2; i++) {
        int d = n - 3 - i; /* batch dims from innermost */
        m->bstride[i] = d >= 0 ? t->stride[d] : 0;
    }
    return true;
}

/* As mat_from for p, t's values packed contiguously (by the caller's backend) because t's
 * own layout is not one BLAS takes; false when p is NULL (the packing failed). */
static inline bool mat_from_packed(mat *m, const bg_tensor *t, const float *p)
{
    if (!p) return false;
    bg_tensor tmp = *t;
    bg__contig_strides(t->ndim, t->shape, tmp.stride);
    return mat_from(m, &tmp, p);
}

static inline mat mat_t(mat m)
{
    mat r = m;
    r.rows = m.cols;
    r.cols = m.rows;
    r.trans = !m.trans;
    return r;
}

#endif
