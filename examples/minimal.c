/* minimal.c - a whole bitgrad training program: a BitLinear MLP (ternary weights, int8
 * activations, straight-through estimators) learns which quadrant a 2-D point lies in.
 * Run: ./build/examples/minimal   (README.md shows this file; CI checks the two agree) */
#include <bitgrad.h>
#include <stdio.h>

enum { N = 256, STEPS = 300 };

int main(void)
{
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) return 1;
    bg_ctx_seed(ctx, 42);
    float xs[N][2];
    int32_t ys[N];
    for (int i = 0; i < N; i++) { /* the task: class = quadrant of (x, y) */
        xs[i][0] = 2.0f * bg_rand_uniform(ctx) - 1.0f;
        xs[i][1] = 2.0f * bg_rand_uniform(ctx) - 1.0f;
        ys[i] = (xs[i][0] < 0.0f) + 2 * (xs[i][1] < 0.0f);
    }
    bg_module *layers[] = { bg_bitlinear_new(ctx, "fc1", 2, 64, true, NULL), bg_relu_new(ctx),
                            bg_bitlinear_new(ctx, "fc2", 64, 4, true, NULL) };
    bg_module *model = bg_sequential_new(ctx, "", layers, 3);
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    oc.lr = 0.02f;
    bg_optim *opt = bg_optim_new(ctx, &oc);
    if (!model || !opt || bg_optim_add_module(opt, model) <= 0) return 1;

    float first = 0.0f, loss = 0.0f;
    for (int step = 0; step < STEPS; step++) {
        bg_tensor *x = bg_from_data(ctx, BG_F32, 2, (int64_t[]){ N, 2 }, xs);
        bg_tensor *y = bg_from_data(ctx, BG_I32, 1, (int64_t[]){ N }, ys);
        bg_tensor *l = bg_cross_entropy(bg_module_forward(model, x), y, -1, 0.0f);
        if (bg_backward(l) || bg_optim_step(opt)) break; /* NULL l carries the first error */
        loss = bg_item(l);
        if (step == 0) first = loss;
        if (step % 100 == 0) printf("step %3d  loss %.4f\n", step, loss);
        bg_optim_zero_grad(opt);
        bg_step_end(ctx); /* frees every temporary of the step at once */
    }
    printf("loss %.4f -> %.4f  %s\n", first, loss, bg_ctx_error(ctx));
    bg_optim_free(&opt);
    bg_module_free(&model);
    bg_ctx_free(&ctx);
    return loss < 0.5f * first ? 0 : 1;
}
