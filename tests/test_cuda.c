/* test_cuda.c - suite 'cuda': the CUDA backend against the CPU.
 *
 *   1. memory and values: reads, writes and fills in every dtype, strided views, explicit
 *      copies between devices (bg_tensor_to, bg_tensor_to_device), seeded initialisation
 *      equal to the CPU's, errors (bad ids, mixed devices);
 *   2. the op table: every op of src/autograd/ops.def (iterated from the library, so an op
 *      without a case fails the suite) runs on the CPU and on the GPU from the same inputs;
 *      forward values and the gradients of every input (backward seeded with the same R)
 *      must agree to a normalised mean squared error per case;
 *   3. gradient checks on the device: central differences against CUDA backward rules;
 *   4. optimizers (SGD, Adam, AdamW, clipping, the NaN refusal) against the CPU;
 *   5. models: the bitnet transformer's loss and gradients; the W1 model (BitLinear
 *      784-1024-1024-10, batch 256, AdamW) trains 20 steps on the GPU following the CPU's
 *      loss curve, with no allocation after the first step.
 * Exits 77 (a Meson skip) when bg_ctx_create(BG_CUDA) reports BG_ENODEV.
 * Run: meson test -C build --suite cuda -v */
#include "bitgrad/nn.h"
#include "bitgrad/optim.h"
#include "harness.h"

#define S(...) ((const int64_t[]){ __VA_ARGS__ })

static bg_ctx *g_cpu, *g_gpu;
static uint64_t g_rng = 0xc0dau;

/* ---- helpers --------------------------------------------------------------------------- */

static float *rand_vals(int64_t n, float lo, float hi)
{
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = harness_uniform(&g_rng, lo, hi);
    return v;
}

static int64_t numel_of(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* Normalised MSE sum (got - want)^2 / sum want^2 (plain sum of squares when want is all
 * zero); a non-finite value where want is finite fails. Counts one check. */
static bool check_nmse(const char *what, const float *got, const float *want, int64_t n, double tol)
{
    double num = 0.0, den = 0.0;
    bool finite = true;
    for (int64_t i = 0; i < n; i++) {
        if (isfinite(want[i]) && !isfinite(got[i])) finite = false;
        double d = (double)got[i] - (double)want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    double nmse = den > 1e-30 ? num / den : num;
    bool ok = finite && nmse <= tol;
    printf("  %-52s nmse %.3e (tol %.0e)%s %s\n", what, nmse, tol, finite ? "" : " non-finite",
           ok ? "ok" : "FAIL");
    harness_count(ok);
    return ok;
}

/* ---- 1. memory and values ------------------------------------------------------------------- */

static void test_roundtrip_dtypes(void)
{
    static const bg_dtype dts[] = { BG_F32, BG_F16, BG_BF16, BG_I8, BG_I32 };
    float *v = rand_vals(24, -100.0f, 100.0f);
    for (int k = 0; k < 5; k++) {
        bg_tensor *c = bg_tensor_new(g_cpu, dts[k], 2, S(4, 6));
        bg_tensor *g = bg_tensor_new(g_gpu, dts[k], 2, S(4, 6));
        float a[24], b[24], tc[24], tg[24];
        bg_tensor_write(c, v);
        bg_tensor_write(g, v);
        bg_tensor_read(c, a);
        bg_tensor_read(g, b);
        char name[64];
        snprintf(name, sizeof name, "write/read %s", bg_dtype_name(dts[k]));
        check_bitwise(name, b, a, 24);
        /* transposed (strided) reads */
        bg_tensor_read(bg_transpose(c, 0, 1), tc);
        bg_tensor_read(bg_transpose(g, 0, 1), tg);
        snprintf(name, sizeof name, "strided read %s", bg_dtype_name(dts[k]));
        check_bitwise(name, tg, tc, 24);
        /* a strided write lands where the CPU's does */
        bg_tensor_write(bg_transpose(c, 0, 1), v);
        bg_tensor_write(bg_transpose(g, 0, 1), v);
        bg_tensor_read(c, a);
        bg_tensor_read(g, b);
        snprintf(name, sizeof name, "strided write %s", bg_dtype_name(dts[k]));
        check_bitwise(name, b, a, 24);
        bg_step_end(g_cpu);
        bg_step_end(g_gpu);
        bg_tensor_free(&c);
        bg_tensor_free(&g);
    }
    free(v);
}

static void test_transfers(void)
{
    float *v = rand_vals(30, -3.0f, 3.0f), back[30], want[30];
    bg_tensor *c = bg_tensor_new(g_cpu, BG_F32, 2, S(5, 6));
    bg_tensor_write(c, v);
    /* CPU f32 -> GPU f16 -> CPU f32 equals the CPU's own f16 round trip */
    bg_tensor *g16 = bg_tensor_new(g_gpu, BG_F16, 2, S(5, 6));
    bg_tensor *c16 = bg_tensor_new(g_cpu, BG_F16, 2, S(5, 6));
    bg_tensor *c32 = bg_tensor_new(g_cpu, BG_F32, 2, S(5, 6));
    CHECK(bg_tensor_to(g16, c) == BG_OK && bg_tensor_to(c32, g16) == BG_OK, "to: %s",
          bg_ctx_error(g_gpu));
    bg_tensor_copy(c16, c);
    bg_tensor_read(c32, back);
    bg_tensor_read(c16, want);
    check_bitwise("cpu f32 -> gpu f16 -> cpu f32", back, want, 30);
    /* a persistent copy on the device keeps name and requires_grad; and back */
    bg_tensor *p = bg_param(g_cpu, "w.test", 2, S(5, 6));
    bg_tensor_write(p, v);
    bg_tensor *pg = bg_tensor_to_device(p, g_gpu), *pc = bg_tensor_to_device(pg, g_cpu);
    CHECK(pg && bg_tensor_device(pg) == BG_CUDA && bg_tensor_requires_grad(pg) &&
              strcmp(bg_tensor_name(pg), "w.test") == 0,
          "bg_tensor_to_device keeps device, name, requires_grad");
    if (pc) bg_tensor_read(pc, back);
    check_bitwise("cpu -> gpu -> cpu (to_device)", back, v, 30);
    /* device to device, across two CUDA contexts, through a transposed view */
    bg_ctx *g2 = NULL;
    if (bg_ctx_create(&g2, BG_CUDA) == BG_OK) {
        bg_tensor *q = bg_tensor_new(g2, BG_F32, 2, S(6, 5));
        CHECK(bg_tensor_to(q, bg_transpose(pg, 0, 1)) == BG_OK, "gpu -> gpu: %s", bg_ctx_error(g2));
        bg_tensor_read(q, back);
        bg_tensor_read(bg_transpose(c, 0, 1), want);
        check_bitwise("gpu view -> other gpu ctx", back, want, 30);
        bg_ctx_free(&g2);
    }
    CHECK(bg_tensor_to(g16, bg_transpose(c, 0, 1)) == BG_ESHAPE,
          "bg_tensor_to refuses other shapes");
    bg_ctx_clear_error(g_gpu);
    bg_step_end(g_cpu);
    bg_step_end(g_gpu);
    bg_tensor *all[] = { c, g16, c16, c32, p, pg, pc };
    for (int i = 0; i < 7; i++) bg_tensor_free(&all[i]);
    free(v);
}

static void test_creation(void)
{
    float a[60], b[60];
    bg_ctx_seed(g_cpu, 99);
    bg_ctx_seed(g_gpu, 99);
    bg_tensor_read(bg_randn(g_cpu, 2, S(6, 10), 0.5f, 2.0f), a);
    bg_tensor_read(bg_randn(g_gpu, 2, S(6, 10), 0.5f, 2.0f), b);
    check_bitwise("bg_randn with one seed: cpu == gpu", b, a, 60);
    bg_tensor *pc = bg_tensor_new(g_cpu, BG_F32, 1, S(60)),
              *pg = bg_tensor_new(g_gpu, BG_F32, 1, S(60));
    bg_tensor_fill_uniform(pc, -2.0f, 3.0f);
    bg_tensor_fill_uniform(pg, -2.0f, 3.0f);
    bg_tensor_read(pc, a);
    bg_tensor_read(pg, b);
    check_bitwise("fill_uniform with one seed: cpu == gpu", b, a, 60);
    bg_tensor *k = bg_tensor_keep(bg_mul_scalar(pg, 2.0f));
    bg_tensor_read(k, b);
    for (int i = 0; i < 60; i++) a[i] *= 2.0f;
    check_bitwise("bg_tensor_keep of a gpu op result", b, a, 60);
    bg_tensor *z = bg_zeros(g_gpu, BG_F32, 2, S(3, 4)), *f = bg_full(g_gpu, 2, S(3, 4), 2.5f);
    bg_tensor_read(bg_add(z, f), b);
    bool full_ok = true;
    for (int i = 0; i < 12; i++) full_ok = full_ok && b[i] == 2.5f;
    CHECK(full_ok, "bg_zeros + bg_full on the gpu");
    int32_t ids[4] = { 3, -1, 7, 2 };
    bg_tensor *t = bg_from_data(g_gpu, BG_I32, 1, S(4), ids);
    bg_tensor_read(t, b);
    CHECK(b[1] == -1.0f && b[2] == 7.0f, "bg_from_data i32 on the gpu");
    CHECK(bg_item(bg_sum(f, BG_AXIS_ALL, false)) == 30.0f, "bg_item of a gpu sum");
    bg_step_end(g_gpu);
    bg_step_end(g_cpu);
    bg_tensor_free(&pc);
    bg_tensor_free(&pg);
    bg_tensor_free(&k);
}

static void test_errors(void)
{
    bg_tensor *w = bg_tensor_new(g_gpu, BG_F32, 2, S(5, 3));
    bg_tensor *ids = bg_from_data(g_gpu, BG_I32, 1, S(3), (int32_t[]){ 1, 5, 0 });
    CHECK(bg_embedding(w, ids) == NULL && bg_ctx_error_code(g_gpu) == BG_EINVAL,
          "embedding with id 5 of 5: an error, not a wild read");
    printf("  message: %s\n", bg_ctx_error(g_gpu));
    bg_ctx_clear_error(g_gpu);
    bg_tensor *lg = bg_zeros(g_gpu, BG_F32, 2, S(3, 4));
    bg_tensor *tg = bg_from_data(g_gpu, BG_I32, 1, S(3), (int32_t[]){ 1, -100, 4 });
    CHECK(bg_cross_entropy(lg, tg, -100, 0.0f) == NULL && bg_ctx_error_code(g_gpu) == BG_EINVAL,
          "cross_entropy with target 4 of 4: an error");
    printf("  message: %s\n", bg_ctx_error(g_gpu));
    bg_ctx_clear_error(g_gpu);
    bg_tensor *c = bg_tensor_new(g_cpu, BG_F32, 2, S(5, 3));
    CHECK(bg_add(c, w) == NULL, "an op on a cpu and a gpu tensor fails");
    printf("  message: %s\n", bg_ctx_error(g_cpu));
    bg_ctx_clear_error(g_cpu);
    bg_step_end(g_gpu);
    bg_tensor_free(&w);
    bg_tensor_free(&c);
}

/* ---- 2. the op table: CPU vs GPU ------------------------------------------------------------ */

/* clang-format off */
enum kind {
    K_ADD, K_SUB, K_MUL, K_DIV, K_UNARY, K_SUM, K_MEAN, K_MAX, K_MATMUL, K_RESHAPE, K_PERMUTE,
    K_TRANSPOSE, K_SLICE, K_CONCAT, K_CONTIGUOUS, K_EMBEDDING, K_SOFTMAX, K_LOG_SOFTMAX,
    K_CROSS_ENTROPY, K_MSE, K_RMSNORM, K_LAYERNORM, K_ROPE, K_ATTENTION, K_DROPOUT,
    K_WEIGHT_QUANT, K_ACT_QUANT, K_BITLINEAR, K_SWIGLU, K_CUSTOM,
};
/* clang-format on */

typedef struct opcase {
    const char *op;   /* its ops.def name */
    const char *what; /* the variant */
    int kind;
    int n_in;
    int ndim[3];
    int64_t shape[3][4];
    float lo, hi;          /* input values uniform in [lo, hi) */
    bool trans_a, trans_b; /* transpose the last two dims of input 0 / 1 first */
    int axis;
    bool flag; /* keepdim, per_tensor, per_row */
    float f0, f1;
    int64_t i0, i1;
    int perm[4];
    const int32_t *ids;
    int64_t n_ids, ids_shape[3];
    int ids_ndim;
    double tol; /* nmse; 0 means 1e-8 */
} opcase;

static const int32_t k_ids[6] = { 3, 0, 7, 3, 9, 3 };
static const int32_t k_targets[6] = { 4, -100, 0, 2, 2, 1 };

/* clang-format off */
static const opcase k_cases[] = {
    { "add", "[3,4] + [4]", K_ADD, .n_in = 2, .ndim = { 2, 1 }, .shape = { { 3, 4 }, { 4 } }, .lo = -2, .hi = 2 },
    { "add", "[2,3,4] + [2,1,4]", K_ADD, .n_in = 2, .ndim = { 3, 3 }, .shape = { { 2, 3, 4 }, { 2, 1, 4 } }, .lo = -2, .hi = 2 },
    { "sub", "[3,4] - [3,1]", K_SUB, .n_in = 2, .ndim = { 2, 2 }, .shape = { { 3, 4 }, { 3, 1 } }, .lo = -2, .hi = 2 },
    { "swiglu", "[3,70] (composed on the device)", K_SWIGLU, .n_in = 2, .ndim = { 2, 2 }, .shape = { { 3, 70 }, { 3, 70 } }, .lo = -4, .hi = 4 },
    /* custom nodes (the fused output projection + cross-entropy, recomputed bitnet blocks) are
     * CPU only: bitnet.c takes the unfused path on a device */
    { "custom", "CPU only", K_CUSTOM, .n_in = 0 },
    { "mul", "[2,3,4] * [4], a transposed", K_MUL, .n_in = 2, .ndim = { 3, 1 }, .shape = { { 2, 4, 3 }, { 4 } }, .lo = -2, .hi = 2, .trans_a = true },
    { "div", "[3,4] / [3,4]", K_DIV, .n_in = 2, .ndim = { 2, 2 }, .shape = { { 3, 4 }, { 3, 4 } }, .lo = 0.5f, .hi = 2 },
    { "add_scalar", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = -2, .hi = 2, .f0 = 0.75f },
    { "mul_scalar", "on a transposed view", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = -2, .hi = 2, .trans_a = true, .f0 = -1.5f },
    { "neg", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = -2, .hi = 2 },
    { "exp", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = -2, .hi = 2 },
    { "log", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = 0.5f, .hi = 3 },
    { "sqrt", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = 0.5f, .hi = 3 },
    { "rsqrt", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = 0.5f, .hi = 3 },
    { "pow", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = 0.5f, .hi = 3, .f0 = 1.7f },
    { "abs", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = -2, .hi = 2 },
    { "clamp", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = -2, .hi = 2, .f0 = -0.5f, .f1 = 0.5f },
    { "relu", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = -2, .hi = 2 },
    { "silu", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = -3, .hi = 3 },
    { "gelu", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = -3, .hi = 3 },
    { "sigmoid", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = -3, .hi = 3 },
    { "tanh", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 5, 7 } }, .lo = -3, .hi = 3 },
    { "sum", "axis 1, keepdim", K_SUM, .n_in = 1, .ndim = { 3 }, .shape = { { 3, 5, 4 } }, .lo = -2, .hi = 2, .axis = 1, .flag = true },
    { "sum", "everything", K_SUM, .n_in = 1, .ndim = { 2 }, .shape = { { 33, 70 } }, .lo = -2, .hi = 2, .axis = BG_AXIS_ALL },
    { "mean", "axis -1", K_MEAN, .n_in = 1, .ndim = { 2 }, .shape = { { 6, 300 } }, .lo = -2, .hi = 2, .axis = -1 },
    { "max", "axis 0", K_MAX, .n_in = 1, .ndim = { 2 }, .shape = { { 7, 5 } }, .lo = -2, .hi = 2, .axis = 0 },
    { "max", "axis -1", K_MAX, .n_in = 1, .ndim = { 3 }, .shape = { { 2, 3, 9 } }, .lo = -2, .hi = 2, .axis = -1 },
    { "matmul", "[5,7] x [7,3]", K_MATMUL, .n_in = 2, .ndim = { 2, 2 }, .shape = { { 5, 7 }, { 7, 3 } }, .lo = -1, .hi = 1 },
    { "matmul", "[5,7] x [3,7]^T", K_MATMUL, .n_in = 2, .ndim = { 2, 2 }, .shape = { { 5, 7 }, { 3, 7 } }, .lo = -1, .hi = 1, .trans_b = true },
    { "matmul", "[7,5]^T x [7,3]", K_MATMUL, .n_in = 2, .ndim = { 2, 2 }, .shape = { { 7, 5 }, { 7, 3 } }, .lo = -1, .hi = 1, .trans_a = true },
    { "matmul", "[2,5,7] x [2,7,3]", K_MATMUL, .n_in = 2, .ndim = { 3, 3 }, .shape = { { 2, 5, 7 }, { 2, 7, 3 } }, .lo = -1, .hi = 1 },
    { "matmul", "[2,5,7] x [7,3]", K_MATMUL, .n_in = 2, .ndim = { 3, 2 }, .shape = { { 2, 5, 7 }, { 7, 3 } }, .lo = -1, .hi = 1 },
    { "matmul", "[2,7,5]^T x [7,3]", K_MATMUL, .n_in = 2, .ndim = { 3, 2 }, .shape = { { 2, 7, 5 }, { 7, 3 } }, .lo = -1, .hi = 1, .trans_a = true },
    { "matmul", "[5,7] x [2,7,3]", K_MATMUL, .n_in = 2, .ndim = { 2, 3 }, .shape = { { 5, 7 }, { 2, 7, 3 } }, .lo = -1, .hi = 1 },
    { "matmul", "[2,3,4,6] x [2,3,5,6]^T", K_MATMUL, .n_in = 2, .ndim = { 4, 4 }, .shape = { { 2, 3, 4, 6 }, { 2, 3, 5, 6 } }, .lo = -1, .hi = 1, .trans_b = true },
    { "reshape", "of a transposed view", K_RESHAPE, .n_in = 1, .ndim = { 2 }, .shape = { { 4, 6 } }, .lo = -2, .hi = 2, .trans_a = true },
    { "permute", "", K_PERMUTE, .n_in = 1, .ndim = { 3 }, .shape = { { 2, 3, 4 } }, .lo = -2, .hi = 2, .perm = { 2, 0, 1 } },
    { "transpose", "", K_TRANSPOSE, .n_in = 1, .ndim = { 3 }, .shape = { { 2, 3, 4 } }, .lo = -2, .hi = 2, .i0 = 0, .i1 = 2 },
    { "slice", "", K_SLICE, .n_in = 1, .ndim = { 3 }, .shape = { { 2, 6, 4 } }, .lo = -2, .hi = 2, .axis = 1, .i0 = 1, .i1 = 4 },
    { "concat", "3 inputs along axis 1", K_CONCAT, .n_in = 3, .ndim = { 2, 2, 2 },
      .shape = { { 3, 2 }, { 3, 4 }, { 3, 1 } }, .lo = -2, .hi = 2, .axis = 1 },
    { "contiguous", "", K_CONTIGUOUS, .n_in = 1, .ndim = { 3 }, .shape = { { 2, 3, 5 } }, .lo = -2, .hi = 2 },
    { "embedding", "ids [2,3] with repeats", K_EMBEDDING, .n_in = 1, .ndim = { 2 }, .shape = { { 10, 6 } }, .lo = -1, .hi = 1, .ids = k_ids,
      .n_ids = 6, .ids_ndim = 2, .ids_shape = { 2, 3 } },
    { "softmax", "", K_SOFTMAX, .n_in = 1, .ndim = { 2 }, .shape = { { 4, 300 } }, .lo = -3, .hi = 3 },
    { "log_softmax", "", K_LOG_SOFTMAX, .n_in = 1, .ndim = { 3 }, .shape = { { 2, 3, 9 } }, .lo = -3, .hi = 3 },
    { "cross_entropy", "ignore -100, smoothing 0.1", K_CROSS_ENTROPY, .n_in = 1, .ndim = { 2 }, .shape = { { 6, 5 } }, .lo = -2, .hi = 2,
      .f0 = 0.1f, .i0 = -100, .ids = k_targets, .n_ids = 6, .ids_ndim = 1, .ids_shape = { 6 } },
    { "mse", "", K_MSE, .n_in = 2, .ndim = { 2, 2 }, .shape = { { 3, 4 }, { 3, 4 } }, .lo = -2, .hi = 2 },
    { "rmsnorm", "with weight", K_RMSNORM, .n_in = 2, .ndim = { 2, 1 }, .shape = { { 4, 300 }, { 300 } }, .lo = -2, .hi = 2, .f0 = 1e-5f },
    { "rmsnorm", "no weight, 3-D", K_RMSNORM, .n_in = 1, .ndim = { 3 }, .shape = { { 2, 3, 16 } }, .lo = -2, .hi = 2, .f0 = 1e-5f },
    { "layernorm", "weight and bias", K_LAYERNORM, .n_in = 3, .ndim = { 2, 1, 1 },
      .shape = { { 70, 16 }, { 16 }, { 16 } }, .lo = -2, .hi = 2, .f0 = 1e-5f },
    { "rope", "[2,5,3,8], pos0 3", K_ROPE, .n_in = 1, .ndim = { 4 }, .shape = { { 2, 5, 3, 8 } }, .lo = -1, .hi = 1, .i0 = 8, .i1 = 3, .f0 = 10000 },
    { "rope", "partial n_rot 4", K_ROPE, .n_in = 1, .ndim = { 3 }, .shape = { { 5, 2, 8 } }, .lo = -1, .hi = 1, .i0 = 4, .f0 = 100 },
    { "attention", "GQA: 4 heads on 2 kv heads", K_ATTENTION, .n_in = 3, .ndim = { 4, 4, 4 },
      .shape = { { 2, 6, 4, 8 }, { 2, 6, 2, 8 }, { 2, 6, 2, 8 } }, .lo = -1, .hi = 1 },
    { "dropout", "p 0.3 (a mask of its own)", K_DROPOUT, .n_in = 1, .ndim = { 2 }, .shape = { { 40, 50 } }, .lo = -1, .hi = 1, .f0 = 0.3f },
    { "weight_quant", "per tensor", K_WEIGHT_QUANT, .n_in = 1, .ndim = { 2 }, .shape = { { 6, 8 } }, .lo = -1, .hi = 1, .i0 = 0, .f0 = 1 },
    { "weight_quant", "per row, lambda 0.5", K_WEIGHT_QUANT, .n_in = 1, .ndim = { 2 }, .shape = { { 6, 8 } }, .lo = -1, .hi = 1, .i0 = 1, .f0 = 0.5f },
    { "weight_quant", "per group of 3", K_WEIGHT_QUANT, .n_in = 1, .ndim = { 2 }, .shape = { { 6, 8 } }, .lo = -1, .hi = 1, .i0 = 2, .i1 = 3, .f0 = 1 },
    { "act_quant", "8 bits per token", K_ACT_QUANT, .n_in = 1, .ndim = { 3 }, .shape = { { 2, 4, 8 } }, .lo = -3, .hi = 3, .i0 = 8, .f0 = 1 },
    { "act_quant", "4 bits per tensor, lambda 0.7", K_ACT_QUANT, .n_in = 1, .ndim = { 2 }, .shape = { { 4, 8 } }, .lo = -3, .hi = 3, .i0 = 4,
      .flag = true, .f0 = 0.7f },
    { "bitlinear", "per tensor", K_BITLINEAR, .n_in = 2, .ndim = { 3, 2 }, .shape = { { 2, 3, 40 }, { 9, 40 } }, .lo = -1, .hi = 1, .i0 = 8 },
    { "bitlinear", "per row, 4 bits", K_BITLINEAR, .n_in = 2, .ndim = { 2, 2 }, .shape = { { 5, 300 }, { 7, 300 } }, .lo = -1, .hi = 1,
      .i0 = 4, .flag = true },
};
/* clang-format on */

static bg_tensor *last2_t(bg_tensor *t)
{
    return t ? bg_transpose(t, bg_tensor_ndim(t) - 2, bg_tensor_ndim(t) - 1) : NULL;
}

static int unary_op(const char *name)
{
    for (int op = 0; op < bg_op_count(); op++)
        if (strcmp(bg_op_name(op), name) == 0) return op;
    return -1;
}

static bg_tensor *build_unary(const opcase *c, bg_tensor *a)
{
    const char *n = c->op;
    if (!strcmp(n, "add_scalar")) return bg_add_scalar(a, c->f0);
    if (!strcmp(n, "mul_scalar")) return bg_mul_scalar(a, c->f0);
    if (!strcmp(n, "neg")) return bg_neg(a);
    if (!strcmp(n, "exp")) return bg_exp(a);
    if (!strcmp(n, "log")) return bg_log(a);
    if (!strcmp(n, "sqrt")) return bg_sqrt(a);
    if (!strcmp(n, "rsqrt")) return bg_rsqrt(a);
    if (!strcmp(n, "pow")) return bg_pow(a, c->f0);
    if (!strcmp(n, "abs")) return bg_abs(a);
    if (!strcmp(n, "clamp")) return bg_clamp(a, c->f0, c->f1);
    if (!strcmp(n, "relu")) return bg_relu(a);
    if (!strcmp(n, "silu")) return bg_silu(a);
    if (!strcmp(n, "gelu")) return bg_gelu(a);
    if (!strcmp(n, "sigmoid")) return bg_sigmoid(a);
    return bg_tanh(a);
}

static bg_tensor *build_case(void *user, bg_tensor *const *in)
{
    const opcase *c = user;
    bg_tensor *a = c->trans_a ? last2_t(in[0]) : in[0], *b = c->n_in > 1 ? in[1] : NULL;
    if (c->trans_b) b = last2_t(b);
    bg_ctx *ctx = bg_tensor_ctx(in[0]);
    bg_tensor *ids = c->ids ? bg_from_data(ctx, BG_I32, c->ids_ndim, c->ids_shape, c->ids) : NULL;
    switch (c->kind) {
    case K_ADD: return bg_add(a, b);
    case K_SUB: return bg_sub(a, b);
    case K_MUL: return bg_mul(a, b);
    case K_SWIGLU: return bg_swiglu(a, b);
    case K_DIV: return bg_div(a, b);
    case K_UNARY: return build_unary(c, a);
    case K_SUM: return bg_sum(a, c->axis, c->flag);
    case K_MEAN: return bg_mean(a, c->axis, c->flag);
    case K_MAX: return bg_max(a, c->axis, c->flag);
    case K_MATMUL: return bg_matmul(a, b);
    case K_RESHAPE: return bg_reshape(a, 3, S(2, 3, -1));
    case K_PERMUTE: return bg_permute(a, c->perm);
    case K_TRANSPOSE: return bg_transpose(a, (int)c->i0, (int)c->i1);
    case K_SLICE: return bg_slice(a, c->axis, c->i0, c->i1);
    case K_CONCAT: return bg_concat(in, c->n_in, c->axis);
    case K_CONTIGUOUS: return bg_contiguous(last2_t(a));
    case K_EMBEDDING: return bg_embedding(a, ids);
    case K_SOFTMAX: return bg_softmax(a);
    case K_LOG_SOFTMAX: return bg_log_softmax(a);
    case K_CROSS_ENTROPY: return bg_cross_entropy(a, ids, (int)c->i0, c->f0);
    case K_MSE: return bg_mse(a, b);
    case K_RMSNORM: return bg_rmsnorm(a, b, c->f0);
    case K_LAYERNORM: return bg_layernorm(a, b, in[2], c->f0);
    case K_ROPE: return bg_rope(a, (int)c->i0, c->f0, c->i1);
    case K_ATTENTION: return bg_attention(a, b, in[2]);
    case K_DROPOUT:
        bg_ctx_seed(ctx, 0xd509u); /* the same mask at every evaluation */
        return bg_dropout(a, c->f0);
    case K_WEIGHT_QUANT: return bg_weight_quant(a, (int)c->i0, c->i1, c->f0);
    case K_ACT_QUANT: return bg_act_quant(a, (int)c->i0, c->flag, c->f0);
    case K_BITLINEAR: return bg_bitlinear(a, b, (int)c->i0, c->flag);
    }
    return NULL;
}

typedef struct side_result {
    float *out, *grads[3];
} side_result;

/* The size of the case's output (a forward without grad), or -1 after a failed check. */
static int64_t case_out_numel(const opcase *c, bg_tensor *const *in)
{
    bg_ctx *ctx = bg_tensor_ctx(in[0]);
    bool prev = bg_grad_enable(ctx, false);
    bg_tensor *out = build_case((void *)c, in);
    int64_t n = out ? bg_tensor_numel(out) : -1;
    if (!out) CHECK(false, "%s %s: forward failed: %s", c->op, c->what, bg_ctx_error(ctx));
    bg_ctx_clear_error(ctx);
    bg_step_end(ctx);
    bg_grad_enable(ctx, prev);
    return n;
}

/* Forward, then backward seeded with r (n_r values): output and input gradients. */
static bool run_side(const opcase *c, bg_tensor *const *in, const float *r, int64_t n_r,
                     side_result *res)
{
    bg_ctx *ctx = bg_tensor_ctx(in[0]);
    const char *dev = ctx == g_gpu ? "gpu" : "cpu";
    for (int i = 0; i < c->n_in; i++) bg_tensor_zero_grad(in[i]);
    bg_step_end(ctx);
    bg_tensor *out = build_case((void *)c, in);
    if (!out || bg_tensor_numel(out) != n_r) {
        CHECK(false, "%s %s on %s: forward failed: %s", c->op, c->what, dev, bg_ctx_error(ctx));
        bg_ctx_clear_error(ctx);
        bg_step_end(ctx);
        return false;
    }
    res->out = harness_read(out);
    bg_tensor *seed = bg_from_data(ctx, BG_F32, bg_tensor_ndim(out), bg_tensor_shape(out), r);
    int rc = bg_backward_seed(out, seed);
    for (int i = 0; i < c->n_in; i++) {
        bg_tensor *g = bg_tensor_grad(in[i]);
        res->grads[i] = g ? harness_read(g) : calloc((size_t)bg_tensor_numel(in[i]), sizeof(float));
    }
    bool ok =
        CHECK(rc == BG_OK, "%s %s on %s: backward: %s", c->op, c->what, dev, bg_ctx_error(ctx));
    bg_ctx_clear_error(ctx);
    bg_step_end(ctx);
    return ok;
}

static void compare_sides(const opcase *c, const side_result *rg, const side_result *rc,
                          int64_t n_out)
{
    char name[160];
    double tol = c->tol > 0 ? c->tol : 1e-8;
    snprintf(name, sizeof name, "%s %s: forward", c->op, c->what);
    check_nmse(name, rg->out, rc->out, n_out, tol);
    for (int i = 0; i < c->n_in; i++) {
        snprintf(name, sizeof name, "%s %s: d input %d", c->op, c->what, i);
        check_nmse(name, rg->grads[i], rc->grads[i], numel_of(c->ndim[i], c->shape[i]), tol);
    }
}

static void run_case(const opcase *c)
{
    bg_tensor *cin[3] = { 0 }, *gin[3] = { 0 };
    for (int i = 0; i < c->n_in; i++) {
        int64_t n = numel_of(c->ndim[i], c->shape[i]);
        float *v = rand_vals(n, c->lo, c->hi);
        if (c->kind == K_MAX) /* distinct values: no ties for the max */
            for (int64_t j = 0; j < n; j++) v[j] = (float)((j * 37) % n) * 0.1f - 1.0f;
        cin[i] = bg_param(g_cpu, NULL, c->ndim[i], c->shape[i]);
        bg_tensor_write(cin[i], v);
        gin[i] = bg_tensor_to_device(cin[i], g_gpu);
        free(v);
    }
    side_result rc = { 0 }, rg = { 0 };
    int64_t n_out = case_out_numel(c, cin);
    float *r = n_out >= 0 ? rand_vals(n_out, -1.0f, 1.0f) : NULL;
    if (r && run_side(c, cin, r, n_out, &rc) && run_side(c, gin, r, n_out, &rg))
        compare_sides(c, &rg, &rc, n_out);
    free(r);
    side_result *sides[2] = { &rc, &rg };
    for (int s = 0; s < 2; s++) {
        free(sides[s]->out);
        for (int i = 0; i < 3; i++) free(sides[s]->grads[i]);
    }
    for (int i = 0; i < c->n_in; i++) {
        bg_tensor_free(&cin[i]);
        bg_tensor_free(&gin[i]);
    }
}

static void test_op_table(void)
{
    int n_cases = (int)(sizeof k_cases / sizeof k_cases[0]);
    for (int op = 0; op < bg_op_count(); op++) {
        bool covered = false;
        for (int k = 0; k < n_cases; k++)
            covered = covered || !strcmp(k_cases[k].op, bg_op_name(op));
        CHECK(covered, "op '%s' has no case in test_cuda.c's table", bg_op_name(op));
    }
    for (int k = 0; k < n_cases; k++) {
        if (k_cases[k].kind == K_DROPOUT) continue; /* its own mask: checked in test_dropout */
        if (k_cases[k].kind == K_CUSTOM) continue;  /* CPU only */
        if (k_cases[k].kind == K_UNARY && unary_op(k_cases[k].op) < 0) continue;
        run_case(&k_cases[k]);
    }
}

/* ---- 3. gradient checks on the device --------------------------------------------------------- */

/* clang-format off */
static const opcase k_gc_cases[] = {
    { "mul", "[3,4] * [4]", K_MUL, .n_in = 2, .ndim = { 2, 1 }, .shape = { { 3, 4 }, { 4 } }, .lo = -2, .hi = 2 },
    { "div", "[3,1] / [4]", K_DIV, .n_in = 2, .ndim = { 2, 1 }, .shape = { { 3, 1 }, { 4 } }, .lo = 0.5f, .hi = 2 },
    { "matmul", "[2,3,4] x [2,5,4]^T", K_MATMUL, .n_in = 2, .ndim = { 3, 3 }, .shape = { { 2, 3, 4 }, { 2, 5, 4 } }, .lo = -1, .hi = 1, .trans_b = true },
    { "matmul", "[4,3]^T x [2,4,2]", K_MATMUL, .n_in = 2, .ndim = { 2, 3 }, .shape = { { 4, 3 }, { 2, 4, 2 } }, .lo = -1, .hi = 1, .trans_a = true },
    { "max", "axis 1", K_MAX, .n_in = 1, .ndim = { 2 }, .shape = { { 4, 5 } }, .lo = -1, .hi = 1, .axis = 1 },
    { "mean", "everything", K_MEAN, .n_in = 1, .ndim = { 2 }, .shape = { { 4, 5 } }, .lo = -1, .hi = 1, .axis = BG_AXIS_ALL },
    { "softmax", "", K_SOFTMAX, .n_in = 1, .ndim = { 2 }, .shape = { { 3, 6 } }, .lo = -2, .hi = 2 },
    { "log_softmax", "", K_LOG_SOFTMAX, .n_in = 1, .ndim = { 2 }, .shape = { { 3, 6 } }, .lo = -2, .hi = 2 },
    { "cross_entropy", "", K_CROSS_ENTROPY, .n_in = 1, .ndim = { 2 }, .shape = { { 6, 5 } }, .lo = -2, .hi = 2, .f0 = 0.1f, .i0 = -100,
      .ids = k_targets, .n_ids = 6, .ids_ndim = 1, .ids_shape = { 6 } },
    { "rmsnorm", "", K_RMSNORM, .n_in = 2, .ndim = { 2, 1 }, .shape = { { 3, 8 }, { 8 } }, .lo = -2, .hi = 2, .f0 = 1e-5f },
    { "layernorm", "", K_LAYERNORM, .n_in = 3, .ndim = { 2, 1, 1 }, .shape = { { 4, 6 }, { 6 }, { 6 } }, .lo = -2, .hi = 2, .f0 = 1e-5f },
    { "rope", "", K_ROPE, .n_in = 1, .ndim = { 4 }, .shape = { { 1, 3, 2, 6 } }, .lo = -1, .hi = 1, .i0 = 4, .i1 = 2, .f0 = 100 },
    { "attention", "GQA", K_ATTENTION, .n_in = 3, .ndim = { 4, 4, 4 },
      .shape = { { 1, 4, 2, 4 }, { 1, 4, 1, 4 }, { 1, 4, 1, 4 } }, .lo = -1, .hi = 1 },
    { "embedding", "", K_EMBEDDING, .n_in = 1, .ndim = { 2 }, .shape = { { 10, 3 } }, .lo = -1, .hi = 1, .ids = k_ids, .n_ids = 6, .ids_ndim = 2,
      .ids_shape = { 2, 3 } },
    { "concat", "", K_CONCAT, .n_in = 2, .ndim = { 2, 2 }, .shape = { { 2, 3 }, { 1, 3 } }, .lo = -1, .hi = 1,
      .axis = 0 },
    { "slice", "of a permute", K_SLICE, .n_in = 1, .ndim = { 3 }, .shape = { { 2, 4, 3 } }, .lo = -1, .hi = 1, .axis = 1, .i0 = 1, .i1 = 3 },
    { "dropout", "", K_DROPOUT, .n_in = 1, .ndim = { 2 }, .shape = { { 6, 7 } }, .lo = -1, .hi = 1, .f0 = 0.3f },
    { "gelu", "", K_UNARY, .n_in = 1, .ndim = { 2 }, .shape = { { 3, 4 } }, .lo = -2, .hi = 2 },
};
/* clang-format on */

static void test_gradchecks(void)
{
    int n = (int)(sizeof k_gc_cases / sizeof k_gc_cases[0]);
    for (int k = 0; k < n; k++) {
        const opcase *c = &k_gc_cases[k];
        bg_tensor *in[3] = { 0 };
        for (int i = 0; i < c->n_in; i++) {
            int64_t m = numel_of(c->ndim[i], c->shape[i]);
            float *v = rand_vals(m, c->lo, c->hi);
            if (c->kind == K_MAX)
                for (int64_t j = 0; j < m; j++) v[j] = (float)((j * 7) % m) * 0.1f - 1.0f;
            in[i] = bg_param(g_gpu, NULL, c->ndim[i], c->shape[i]);
            bg_tensor_write(in[i], v);
            free(v);
        }
        char name[96];
        snprintf(name, sizeof name, "gpu gradcheck %s %s", c->op, c->what);
        gc_opts o = { .name = name };
        gradcheck(g_gpu, build_case, (void *)c, in, c->n_in, &o);
        for (int i = 0; i < c->n_in; i++) bg_tensor_free(&in[i]);
    }
}

/* Dropout draws its own mask on the device: check what it must satisfy. */
static void test_dropout(void)
{
    int64_t n = 4000;
    float *v = rand_vals(n, 0.5f, 1.5f), *y1 = malloc((size_t)n * sizeof *y1);
    float *y2 = malloc((size_t)n * sizeof *y2);
    bg_tensor *x = bg_tensor_new(g_gpu, BG_F32, 1, S(n));
    bg_tensor_write(x, v);
    bg_ctx_seed(g_gpu, 5);
    bg_tensor_read(bg_dropout(x, 0.25f), y1);
    bg_ctx_seed(g_gpu, 5);
    bg_tensor_read(bg_dropout(x, 0.25f), y2);
    int64_t dropped = 0;
    bool values_ok = true;
    for (int64_t i = 0; i < n; i++) {
        if (y1[i] == 0.0f) dropped++;
        else
            values_ok = values_ok && fabsf(y1[i] - v[i] / 0.75f) <= 1e-6f * fabsf(y1[i]);
    }
    CHECK(values_ok, "dropout keeps x / (1 - p) where it keeps");
    CHECK(labs((long)dropped - 1000) < 120, "dropout drops %lld of 4000 at p 0.25",
          (long long)dropped);
    check_bitwise("dropout: one seed, one mask", y2, y1, n);
    bg_ctx_set_training(g_gpu, false);
    CHECK(bg_dropout(x, 0.25f) == x, "dropout is the identity when not training");
    bg_ctx_set_training(g_gpu, true);
    bg_step_end(g_gpu);
    bg_tensor_free(&x);
    free(v), free(y1), free(y2);
}

/* ---- 4. optimizers --------------------------------------------------------------------------- */

/* Three steps of loss = sum(w * w * c) on both devices; parameters and moments must agree. */
static void optim_case(const char *name, bg_optim_config cfg, float clip_norm, float clip_value)
{
    float *wv = rand_vals(64 * 33, -1.0f, 1.0f), *cv = rand_vals(64 * 33, 0.5f, 2.0f);
    bg_ctx *ctxs[2] = { g_cpu, g_gpu };
    bg_tensor *w[2], *c[2];
    bg_optim *o[2];
    float norms[2][3] = { { 0 } };
    for (int d = 0; d < 2; d++) {
        w[d] = bg_param(ctxs[d], "w", 2, S(64, 33));
        c[d] = bg_tensor_new(ctxs[d], BG_F32, 2, S(64, 33));
        bg_tensor_write(w[d], wv);
        bg_tensor_write(c[d], cv);
        o[d] = bg_optim_new(ctxs[d], &cfg);
        bg_optim_add_group(o[d], &w[d], 1, cfg.lr, cfg.weight_decay);
        for (int s = 0; s < 3; s++) {
            bg_tensor *loss = bg_sum(bg_mul(bg_mul(w[d], w[d]), c[d]), BG_AXIS_ALL, false);
            bg_backward(loss);
            if (clip_norm > 0) norms[d][s] = bg_clip_grad_norm(o[d], clip_norm);
            if (clip_value > 0) bg_clip_grad_value(o[d], clip_value);
            CHECK(bg_optim_step(o[d]) == BG_OK, "%s: step: %s", name, bg_ctx_error(ctxs[d]));
            bg_optim_zero_grad(o[d]);
            bg_step_end(ctxs[d]);
        }
    }
    float *a = harness_read(w[0]), *b = harness_read(w[1]);
    char what[96];
    snprintf(what, sizeof what, "%s: parameters after 3 steps", name);
    check_nmse(what, b, a, 64 * 33, 1e-11);
    free(a), free(b);
    for (int k = 0; k < 2 && bg_optim_state(o[0], 0, k); k++) {
        a = harness_read(bg_optim_state(o[0], 0, k));
        b = harness_read(bg_optim_state(o[1], 0, k));
        snprintf(what, sizeof what, "%s: optimizer state %d", name, k);
        check_nmse(what, b, a, 64 * 33, 1e-10);
        free(a), free(b);
    }
    if (clip_norm > 0)
        CHECK(fabsf(norms[1][2] - norms[0][2]) <= 1e-5f * norms[0][2], "%s: norm %g vs cpu %g",
              name, (double)norms[1][2], (double)norms[0][2]);
    for (int d = 0; d < 2; d++) {
        bg_optim_free(&o[d]);
        bg_tensor_free(&w[d]);
        bg_tensor_free(&c[d]);
    }
    free(wv), free(cv);
}

static void test_optim(void)
{
    bg_optim_config sgd = bg_optim_default(BG_SGD);
    optim_case("sgd", sgd, 0, 0);
    sgd.momentum = 0.9f;
    sgd.nesterov = true;
    sgd.weight_decay = 0.01f;
    optim_case("sgd nesterov, decay, clip value", sgd, 0, 0.5f);
    bg_optim_config adam = bg_optim_default(BG_ADAM);
    adam.weight_decay = 0.01f;
    optim_case("adam, L2", adam, 0, 0);
    optim_case("adamw, clip norm", bg_optim_default(BG_ADAMW), 1.0f, 0);

    /* an infinite gradient: the step is refused and nothing changes */
    bg_tensor *w = bg_param(g_gpu, "w", 1, S(4));
    bg_tensor_write(w, (float[]){ 0.0f, 1.0f, 2.0f, 3.0f });
    bg_optim_config cfg = bg_optim_default(BG_ADAMW);
    bg_optim *o = bg_optim_new(g_gpu, &cfg);
    bg_optim_add_group(o, &w, 1, cfg.lr, cfg.weight_decay);
    bg_backward(bg_sum(bg_sqrt(w), BG_AXIS_ALL, false)); /* d sqrt(0) = inf */
    CHECK(bg_optim_step(o) == BG_ENONFINITE, "an infinite gpu gradient is refused");
    float after[4];
    bg_tensor_read(w, after);
    CHECK(after[0] == 0.0f && after[3] == 3.0f, "no parameter changed");
    bg_ctx_clear_error(g_gpu);
    bg_step_end(g_gpu);
    bg_optim_free(&o);
    bg_tensor_free(&w);
}

/* ---- 5. the W1 model ----------------------------------------------------------------------------- */

enum { W1_BATCH = 256, W1_IN = 784, W1_HID = 1024, W1_OUT = 10, W1_STEPS = 20 };

static bg_module *w1_model(bg_ctx *ctx)
{
    bg_ctx_seed(ctx, 7);
    bg_module *mods[5] = {
        bg_bitlinear_new(ctx, "fc1", W1_IN, W1_HID, false, NULL),  bg_relu_new(ctx),
        bg_bitlinear_new(ctx, "fc2", W1_HID, W1_HID, false, NULL), bg_relu_new(ctx),
        bg_bitlinear_new(ctx, "fc3", W1_HID, W1_OUT, false, NULL),
    };
    return bg_sequential_new(ctx, "w1", mods, 5);
}

/* A fixed batch labelled by a random linear teacher (learnable, deterministic). */
static void w1_data(float *x, int32_t *y)
{
    uint64_t rs = 0x1234567u;
    for (int64_t i = 0; i < (int64_t)W1_BATCH * W1_IN; i++)
        x[i] = harness_uniform(&rs, -1.0f, 1.0f);
    float *teacher = malloc((size_t)W1_IN * W1_OUT * sizeof *teacher);
    for (int64_t i = 0; i < (int64_t)W1_IN * W1_OUT; i++)
        teacher[i] = harness_uniform(&rs, -1.0f, 1.0f);
    for (int r = 0; r < W1_BATCH; r++) {
        double best = -INFINITY;
        for (int j = 0; j < W1_OUT; j++) {
            double s = 0.0;
            for (int i = 0; i < W1_IN; i++) s += (double)x[r * W1_IN + i] * teacher[i * W1_OUT + j];
            if (s > best) best = s, y[r] = j;
        }
    }
    free(teacher);
}

static void w1_train(bg_ctx *ctx, const float *x, const int32_t *y, float *losses, uint64_t *allocs)
{
    bg_module *m = w1_model(ctx);
    bg_optim_config cfg = bg_optim_default(BG_ADAMW);
    bg_optim *o = bg_optim_new(ctx, &cfg);
    bg_optim_add_module(o, m);
    for (int s = 0; s < W1_STEPS; s++) {
        bg_tensor *xb = bg_from_data(ctx, BG_F32, 2, S(W1_BATCH, W1_IN), x);
        bg_tensor *yb = bg_from_data(ctx, BG_I32, 1, S(W1_BATCH), y);
        bg_tensor *loss = bg_cross_entropy(bg_module_forward(m, xb), yb, -100, 0.0f);
        losses[s] = bg_item(loss);
        if (bg_backward(loss) != BG_OK || bg_optim_step(o) != BG_OK) {
            CHECK(false, "W1 step %d on %s: %s", s, ctx == g_gpu ? "gpu" : "cpu",
                  bg_ctx_error(ctx));
            break;
        }
        bg_optim_zero_grad(o);
        bg_step_end(ctx);
        bg_ctx_stats st;
        bg_ctx_stats_get(ctx, &st);
        if (s == 1) allocs[0] = st.heap_allocs;
        if (s == W1_STEPS - 1) allocs[1] = st.heap_allocs;
    }
    bg_optim_free(&o);
    bg_module_free(&m);
}

static void test_w1(void)
{
    float *x = malloc((size_t)W1_BATCH * W1_IN * sizeof *x), lc[W1_STEPS], lg[W1_STEPS];
    int32_t y[W1_BATCH];
    uint64_t ac[2] = { 0 }, ag[2] = { 0 };
    w1_data(x, y);
    w1_train(g_cpu, x, y, lc, ac);
    w1_train(g_gpu, x, y, lg, ag);
    bool follows = true;
    printf("  W1 (BitLinear 784-1024-1024-10, batch 256, AdamW): loss cpu / gpu\n");
    for (int s = 0; s < W1_STEPS; s++) {
        double tol = s == 0 ? 1e-5 * lc[0] : 0.02 * lc[s] + 0.01;
        bool ok = fabs((double)lg[s] - lc[s]) <= tol;
        follows = follows && ok;
        printf("    step %2d  %.6f  %.6f%s\n", s, (double)lc[s], (double)lg[s],
               ok ? "" : "  <-- off");
    }
    CHECK(follows, "W1 on the gpu follows the cpu's loss curve");
    CHECK(lg[W1_STEPS - 1] < 0.8f * lg[0], "W1 on the gpu learns: %g -> %g", (double)lg[0],
          (double)lg[W1_STEPS - 1]);
    CHECK(ag[1] == ag[0], "no allocation after the first gpu steps (%llu then %llu)",
          (unsigned long long)ag[0], (unsigned long long)ag[1]);
    free(x);
}

/* The bitnet transformer (W2's architecture, short context) on both devices: the loss and
 * every parameter's gradient after one backward. */
static void test_bitnet(void)
{
    enum { B = 2, T = 16 };
    bg_bitnet_config cfg = bg_bitnet_default();
    cfg.n_layer = 2;
    cfg.n_head_kv = 2; /* grouped-query attention */
    cfg.n_ctx = T;
    int32_t in[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) {
        in[i] = (int32_t)(harness_lcg(&g_rng) % 256);
        tg[i] = i % 7 == 3 ? -1 : (int32_t)(harness_lcg(&g_rng) % 256);
    }
    bg_module *m[2];
    float loss[2];
    bg_ctx *ctxs[2] = { g_cpu, g_gpu };
    for (int d = 0; d < 2; d++) {
        bg_ctx_seed(ctxs[d], 11);
        m[d] = bg_bitnet_new(ctxs[d], &cfg);
        bg_tensor *x = bg_from_data(ctxs[d], BG_I32, 2, S(B, T), in);
        bg_tensor *y = bg_from_data(ctxs[d], BG_I32, 2, S(B, T), tg);
        bg_tensor *l = bg_cross_entropy(bg_bitnet_forward(m[d], x), y, -1, 0.0f);
        loss[d] = bg_item(l);
        CHECK(bg_backward(l) == BG_OK, "bitnet backward on %s: %s", d ? "gpu" : "cpu",
              bg_ctx_error(ctxs[d]));
        bg_step_end(ctxs[d]);
    }
    CHECK(fabsf(loss[1] - loss[0]) <= 1e-4f * loss[0], "bitnet loss: gpu %.7f, cpu %.7f",
          (double)loss[1], (double)loss[0]);
    int n = bg_module_n_params(m[0]);
    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < n; i++) {
        bg_tensor *pc = bg_module_param(m[0], i), *pg = bg_module_param(m[1], i);
        float *a = harness_read(bg_tensor_grad(pc)), *b = harness_read(bg_tensor_grad(pg));
        double num = 0.0, den = 0.0;
        for (int64_t j = 0; a && b && j < bg_tensor_numel(pc); j++) {
            num += ((double)b[j] - a[j]) * ((double)b[j] - a[j]);
            den += (double)a[j] * a[j];
        }
        double nmse = a && b ? num / (den > 1e-30 ? den : 1e-30) : INFINITY;
        if (!(nmse <= worst)) worst = nmse, worst_name = bg_tensor_name(pc);
        free(a), free(b);
    }
    CHECK(worst <= 1e-6, "bitnet gradients of all %d parameters: worst nmse %.3e (%s)", n, worst,
          worst_name);
    printf("  bitnet (2 layers, GQA, [2,16]): loss %.6f / %.6f, worst gradient nmse %.3e (%s)\n",
           (double)loss[0], (double)loss[1], worst, worst_name);
    bg_module_free(&m[0]);
    bg_module_free(&m[1]);
}

/* ---------------------------------------------------------------------------------------------- */

/* The backend opens cuBLAS with dlopen at the first CUDA ctx (src/cuda/k_runtime.cu); this
 * opens it without a GPU too, so a build machine checks the loader finds the library and
 * every function it needs. (Internal: libbitgrad.a resolves it.) */
int bg__cu_blas_available(char *msg, size_t n);

int main(void)
{
    char why[512] = "";
    if (!CHECK(bg__cu_blas_available(why, sizeof why), "cuBLAS opens with dlopen: %s", why))
        return harness_summary();
    printf("cuBLAS: loaded with dlopen, every function found\n");
    int rc = bg_ctx_create(&g_gpu, BG_CUDA);
    if (rc == BG_ENODEV) {
        printf("skip: %s\n", bg_device_info(BG_CUDA));
        return HARNESS_SKIP;
    }
    if (!CHECK(rc == BG_OK, "bg_ctx_create(BG_CUDA): %s", bg_strerror(rc)))
        return harness_summary();
    printf("%s\n", bg_device_info(BG_CUDA));
    if (bg_ctx_create(&g_cpu, BG_CPU) != BG_OK) return 1;
    printf("-- memory and values\n");
    test_roundtrip_dtypes();
    test_transfers();
    test_creation();
    test_errors();
    printf("-- ops: gpu against cpu\n");
    test_op_table();
    printf("-- gradient checks on the gpu\n");
    test_gradchecks();
    test_dropout();
    printf("-- optimizers\n");
    test_optim();
    printf("-- models\n");
    test_bitnet();
    test_w1();
    bg_ctx_free(&g_cpu);
    bg_ctx_free(&g_gpu);
    return harness_summary();
}
