/* bitgrad/autograd.h - differentiable ops and the backward pass.
 *
 * Every op returns a step tensor in the ctx of its inputs, or NULL with a sticky error on
 * the ctx (an op handed NULL returns NULL), so a forward pass needs one check at the end.
 * When grad mode is on and an input requires grad, the op is recorded on the tape and
 * bg_backward walks the tape backwards. See DESIGN.md section 3. */
#ifndef BITGRAD_AUTOGRAD_H
#define BITGRAD_AUTOGRAD_H

#include "bitgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Reduce over every dimension (for bg_sum / bg_mean / bg_max). */
#define BG_AXIS_ALL 127

/* ---- backward ------------------------------------------------------------ */
/* Backward from a one-element loss (seed 1). Consumes the tape. */
BG_API int bg_backward(bg_tensor *loss);
/* Backward from any tensor with an explicit seed gradient of the same shape. */
BG_API int bg_backward_seed(bg_tensor *out, const bg_tensor *seed);
/* Zeroes the gradients of every persistent tensor of the ctx. */
BG_API void bg_zero_grad(bg_ctx *ctx);
BG_API void bg_tensor_zero_grad(bg_tensor *t);
/* Hook for data-parallel training: during bg_backward, fn(user, p) is called once for each
 * persistent tensor p that requires grad, as soon as p's gradient is final for this backward
 * (the walk passed the earliest recorded op reading p), and fn(user, NULL) when the walk
 * completed. Called on the calling thread, outside parallel regions. NULL fn removes it. */
BG_API void bg_ctx_set_grad_ready(bg_ctx *ctx, bg_grad_ready_fn fn, void *user);

/* ---- elementwise, with NumPy broadcasting ---------------------------------- */
BG_API bg_tensor *bg_add(bg_tensor *a, bg_tensor *b);
BG_API bg_tensor *bg_sub(bg_tensor *a, bg_tensor *b);
BG_API bg_tensor *bg_mul(bg_tensor *a, bg_tensor *b);
BG_API bg_tensor *bg_div(bg_tensor *a, bg_tensor *b);
BG_API bg_tensor *bg_add_scalar(bg_tensor *a, float s);
BG_API bg_tensor *bg_mul_scalar(bg_tensor *a, float s);
BG_API bg_tensor *bg_neg(bg_tensor *a);
BG_API bg_tensor *bg_exp(bg_tensor *a);
BG_API bg_tensor *bg_log(bg_tensor *a);
BG_API bg_tensor *bg_sqrt(bg_tensor *a);
BG_API bg_tensor *bg_rsqrt(bg_tensor *a);
BG_API bg_tensor *bg_pow(bg_tensor *a, float p);
BG_API bg_tensor *bg_abs(bg_tensor *a);
BG_API bg_tensor *bg_clamp(bg_tensor *a, float lo, float hi);
BG_API bg_tensor *bg_relu(bg_tensor *a);
BG_API bg_tensor *bg_silu(bg_tensor *a);
BG_API bg_tensor *bg_gelu(bg_tensor *a); /* exact (erf) form, as torch's default */
BG_API bg_tensor *bg_sigmoid(bg_tensor *a);
BG_API bg_tensor *bg_tanh(bg_tensor *a);
/* silu(gate) * up (the gated FFN of llama-style models), same shapes. Equal bit for bit to
 * bg_mul(bg_silu(gate), up), but backward recomputes silu(gate) instead of keeping it. */
BG_API bg_tensor *bg_swiglu(bg_tensor *gate, bg_tensor *up);

/* ---- reductions along one axis (or BG_AXIS_ALL) ---------------------------- */
BG_API bg_tensor *bg_sum(bg_tensor *a, int axis, bool keepdim);
BG_API bg_tensor *bg_mean(bg_tensor *a, int axis, bool keepdim);
BG_API bg_tensor *bg_max(bg_tensor *a, int axis, bool keepdim);

/* ---- matmul: [.., M, K] x [.., K, N]; 2-D, batched, or N-D x 2-D ----------- */
/* Transposed operands (bg_transpose views) go to BLAS as transposes, never copied. */
BG_API bg_tensor *bg_matmul(bg_tensor *a, bg_tensor *b);

/* ---- shape ops (views share storage) ---------------------------------------- */
/* One entry of shape may be -1 (inferred). Copies only if a is not contiguous. */
BG_API bg_tensor *bg_reshape(bg_tensor *a, int ndim, const int64_t *shape);
BG_API bg_tensor *bg_permute(bg_tensor *a, const int *perm);
BG_API bg_tensor *bg_transpose(bg_tensor *a, int d0, int d1);
/* Elements start..end-1 along axis (a view). */
BG_API bg_tensor *bg_slice(bg_tensor *a, int axis, int64_t start, int64_t end);
BG_API bg_tensor *bg_concat(bg_tensor *const *ts, int n, int axis);
BG_API bg_tensor *bg_contiguous(bg_tensor *a);

/* ---- nn ops -------------------------------------------------------------- */
/* weight [V, D] gathered by ids (I32, any shape) -> [ids..., D]; scatter-add backward. */
BG_API bg_tensor *bg_embedding(bg_tensor *weight, bg_tensor *ids);
/* Along the last axis. */
BG_API bg_tensor *bg_softmax(bg_tensor *a);
BG_API bg_tensor *bg_log_softmax(bg_tensor *a);
/* Mean cross-entropy of logits [.., V] against I32 targets [..]; rows whose target is
 * ignore_index do not count. label_smoothing in [0, 1). */
/* Mean cross-entropy of logits = h . w^T (h [.., d], w [V, d] f32, or f16 when it does not
 * train) against targets (i32, one per row of h; ignore_index skipped), computed in chunks of
 * rows: the [rows, V] logits are never held whole. CPU. */
BG_API bg_tensor *bg_linear_cross_entropy(bg_tensor *h, bg_tensor *w, bg_tensor *targets,
                                          int ignore_index);
BG_API bg_tensor *bg_cross_entropy(bg_tensor *logits, bg_tensor *targets, int ignore_index,
                                   float label_smoothing);
BG_API bg_tensor *bg_mse(bg_tensor *a, bg_tensor *b);
/* x / sqrt(mean(x^2) + eps) * weight over the last axis; weight may be NULL. */
BG_API bg_tensor *bg_rmsnorm(bg_tensor *x, bg_tensor *weight, float eps);
/* (x - mean) / sqrt(var + eps) * weight + bias over the last axis; weight, bias may be NULL. */
BG_API bg_tensor *bg_layernorm(bg_tensor *x, bg_tensor *weight, bg_tensor *bias, float eps);
/* NEOX rotary embedding on x [.., T, H, D]: dims i and i + n_rot/2 rotate by
 * (pos0 + t) * base^(-2i/n_rot); dims >= n_rot pass through. */
BG_API bg_tensor *bg_rope(bg_tensor *x, int n_rot, float base, int64_t pos0);
/* Causal scaled-dot-product attention. q [B, T, H, D], k and v [B, T, Hkv, D] with
 * H % Hkv == 0 (head h reads kv head h / (H / Hkv)); scale 1/sqrt(D). -> [B, T, H, D]. */
BG_API bg_tensor *bg_attention(bg_tensor *q, bg_tensor *k, bg_tensor *v);
/* Inverted dropout with probability p, active only while the ctx is training. */
BG_API bg_tensor *bg_dropout(bg_tensor *a, float p);

/* ---- BitNet b1.58 straight-through quantizers (DESIGN.md section 5) --------------
 * Forward: x + lambda * (Q(x) - x); backward: the identity. */
/* Absmean ternary weights over the last axis as rows: mode is a bg_wq_mode
 * (0 per tensor, 1 per row, 2 per group of `group` weights of a row). */
BG_API bg_tensor *bg_weight_quant(bg_tensor *w, int mode, int64_t group, float lambda);
/* Absmax activations with `bits` (2..8): per token (each row of the last axis) or per tensor. */
BG_API bg_tensor *bg_act_quant(bg_tensor *x, int bits, bool per_tensor, float lambda);

/* Fused BitLinear at full quantization (lambda 1): y = ActQ(x) . WQ(w)^T computed as in
 * inference, y = (acc * s_w) / s_x with acc the exact integer product of activation levels
 * and ternary codes, so the result does not depend on summation order. x [.., in],
 * w [out, in]; per-token activations of act_bits; per-tensor (per_row false) or per-row
 * weight scales. Backward: dX = dY W_q, dW = dY^T x_q (the straight-through estimator). */
BG_API bg_tensor *bg_bitlinear(bg_tensor *x, bg_tensor *w, int act_bits, bool per_row);

/* ---- op table introspection (tests iterate it) ------------------------------ */
BG_API int bg_op_count(void);
BG_API const char *bg_op_name(int op);

#ifdef __cplusplus
}
#endif
#endif
