/* minimal.c - the smallest complete bitgrad program: a 2-layer MLP learns which quadrant a
 * 2-D point lies in, by full-batch SGD written out by hand. Exits 1 if the loss did not fall.
 * Run: ./build/examples/minimal   (README.md shows this file; keep the two in sync) */
#include <bitgrad.h>
#include <stdio.h>

enum { N = 256, HID = 16, CLS = 4, STEPS = 300 };

static bg_tensor *forward(bg_tensor *x, bg_tensor *w1, bg_tensor *b1, bg_tensor *w2, bg_tensor *b2)
{
    bg_tensor *h = bg_relu(bg_add(bg_matmul(x, bg_transpose(w1, 0, 1)), b1));
    return bg_add(bg_matmul(h, bg_transpose(w2, 0, 1)), b2); /* logits [N, CLS] */
}

int main(void)
{
    bg_ctx *ctx;
    if (bg_ctx_create(&ctx, BG_CPU)) return 1;
    bg_ctx_seed(ctx, 42);
    float xs[N][2], logits[N][CLS];
    int32_t ys[N];
    for (int i = 0; i < N; i++) { /* synthetic task: class = quadrant of (x, y) */
        xs[i][0] = 2.0f * bg_rand_uniform(ctx) - 1.0f;
        xs[i][1] = 2.0f * bg_rand_uniform(ctx) - 1.0f;
        ys[i] = (xs[i][0] < 0.0f) + 2 * (xs[i][1] < 0.0f);
    }
    bg_tensor *w1 = bg_param(ctx, "w1", 2, (int64_t[]){ HID, 2 });
    bg_tensor *b1 = bg_param(ctx, "b1", 1, (int64_t[]){ HID });
    bg_tensor *w2 = bg_param(ctx, "w2", 2, (int64_t[]){ CLS, HID });
    bg_tensor *b2 = bg_param(ctx, "b2", 1, (int64_t[]){ CLS });
    bg_tensor *params[] = { w1, b1, w2, b2 };
    bg_tensor_fill_randn(w1, 0.0f, 0.7f);
    bg_tensor_fill_randn(w2, 0.0f, 0.25f);
    bg_tensor_fill(b1, 0.0f);
    bg_tensor_fill(b2, 0.0f);

    float first = 0.0f, loss = 0.0f;
    for (int step = 0; step < STEPS; step++) {
        bg_tensor *x = bg_from_data(ctx, BG_F32, 2, (int64_t[]){ N, 2 }, xs);
        bg_tensor *y = bg_from_data(ctx, BG_I32, 1, (int64_t[]){ N }, ys);
        bg_tensor *l = bg_cross_entropy(forward(x, w1, b1, w2, b2), y, -1, 0.0f);
        bg_zero_grad(ctx);
        if (bg_backward(l)) break; /* a NULL loss carries the first error of the pass */
        loss = bg_item(l);
        if (step == 0) first = loss;
        for (int p = 0; p < 4; p++) { /* plain SGD: w -= lr * dw */
            float *w = bg_tensor_data(params[p]);
            const float *g = bg_tensor_data(bg_tensor_grad(params[p]));
            for (int64_t i = 0; i < bg_tensor_numel(params[p]); i++) w[i] -= 0.5f * g[i];
        }
        if (step % 50 == 0 || step == STEPS - 1) printf("step %3d  loss %.4f\n", step, loss);
        bg_step_end(ctx);
    }

    bg_grad_enable(ctx, false);
    bg_tensor *x = bg_from_data(ctx, BG_F32, 2, (int64_t[]){ N, 2 }, xs);
    int correct = 0;
    if (bg_tensor_read(forward(x, w1, b1, w2, b2), &logits[0][0]) == 0)
        for (int i = 0; i < N; i++) {
            int best = 0;
            for (int c = 1; c < CLS; c++) best = logits[i][c] > logits[i][best] ? c : best;
            correct += best == ys[i];
        }
    printf("accuracy %.1f%%\n", 100.0 * correct / N);
    int ok = bg_ctx_error_code(ctx) == 0 && loss < 0.5f * first;
    if (!ok) fprintf(stderr, "minimal: loss %.4f -> %.4f %s\n", first, loss, bg_ctx_error(ctx));
    bg_ctx_free(&ctx);
    return ok ? 0 : 1;
}
