/* demo_tasks.c - arithmetic-as-text data and greedy evaluation for the fine-tune example. */
#include <stdio.h>
#include <string.h>

#include "demo_tasks.h"

uint32_t demo_rand(demo_rng *r)
{
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(r->s >> 33);
}

/* Both operands have two digits, so that every prompt has the same length and the digits
 * of a and b sit at fixed offsets from "=" (answers still have 1 to 3 digits). */
#define OPERAND_MIN 10
#define OPERAND_MAX 99

/* One operand pair in ten, chosen by a hash of the pair (not by its digits, so that every
 * digit combination stays in the training split), is held out for evaluation. */
static bool pair_held_out(int a, int b)
{
    uint32_t h = (uint32_t)(a * 100 + b) * 2654435761u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return h % 10 == 0;
}

void demo_problem(demo_task task, demo_rng *r, bool held_out, char *prompt, char *answer)
{
    const uint32_t span = OPERAND_MAX - OPERAND_MIN + 1;
    int a, b;
    do {
        a = OPERAND_MIN + (int)(demo_rand(r) % span);
        b = OPERAND_MIN + (int)(demo_rand(r) % span);
        if (task == TASK_SUB && a < b) {
            int t = a;
            a = b;
            b = t;
        }
    } while (pair_held_out(a, b) != held_out);
    snprintf(prompt, 8, "%d%c%d=", a, task == TASK_ADD ? '+' : '-', b);
    snprintf(answer, 8, "%d\n", task == TASK_ADD ? a + b : a - b);
}

void demo_batch(demo_task task, demo_rng *r, int B, int32_t *ids, int32_t *targets)
{
    for (int b = 0; b < B; b++) {
        char p[8], a[8];
        demo_problem(task, r, false, p, a);
        int lp = (int)strlen(p), la = (int)strlen(a);
        int32_t *row = ids + b * DEMO_T, *tg = targets + b * (DEMO_T - 1);
        for (int t = 0; t < DEMO_T; t++)
            row[t] = t < lp ? p[t] : (t < lp + la ? a[t - lp] : '\n');
        /* Position t predicts token t + 1: answer tokens are lp .. lp + la - 1. */
        for (int t = 0; t < DEMO_T - 1; t++)
            tg[t] = (t + 1 >= lp && t + 1 < lp + la) ? row[t + 1] : DEMO_IGNORE;
    }
}

void demo_text_batch(const unsigned char *text, size_t len, demo_rng *r, int B, int T,
                     int32_t *ids, int32_t *targets)
{
    for (int b = 0; b < B; b++) {
        size_t start = len > (size_t)T ? demo_rand(r) % (len - (size_t)T) : 0;
        for (int t = 0; t < T; t++) ids[b * T + t] = start + (size_t)t < len ? text[start + (size_t)t] : '\n';
        for (int t = 0; t < T - 1; t++) targets[b * (T - 1) + t] = ids[b * T + t + 1];
    }
}

bg_tensor *demo_loss(bg_module *model, const int32_t *ids, const int32_t *targets, int B, int T)
{
    bg_ctx *ctx = bg_tensor_ctx(bg_module_param(model, 0));
    int32_t in[64 * 512];
    if ((int64_t)B * (T - 1) > (int64_t)(sizeof in / sizeof in[0])) return NULL;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T - 1; t++) in[b * (T - 1) + t] = ids[b * T + t];
    bg_tensor *x = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ B, T - 1 }, in);
    bg_tensor *y = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ B, T - 1 }, targets);
    return bg_cross_entropy(bg_bitnet_forward(model, x), y, DEMO_IGNORE, 0.0f);
}

double demo_eval_loss(bg_module *model, const int32_t *ids, const int32_t *targets, int B, int T)
{
    bg_ctx *ctx = bg_tensor_ctx(bg_module_param(model, 0));
    bool prev = bg_grad_enable(ctx, false);
    bg_tensor *l = demo_loss(model, ids, targets, B, T);
    double v = l ? bg_item(l) : -1.0;
    bg_step_end(ctx);
    bg_grad_enable(ctx, prev);
    return v;
}

/* Greedy answers for a group of prompts of equal length lp, lock-step decoding. */
static int decode_group(bg_module *m, char (*prompts)[8], char (*answers)[8], int n, int lp)
{
    bg_ctx *ctx = bg_tensor_ctx(bg_module_param(m, 0));
    int32_t ids[256 * DEMO_T];
    char got[256][8];
    memset(got, 0, sizeof got);
    for (int i = 0; i < n; i++)
        for (int t = 0; t < lp; t++) ids[i * DEMO_T + t] = prompts[i][t];
    for (int k = 0; k < 5 && lp + k < DEMO_T; k++) {
        int len = lp + k;
        int32_t in[256 * DEMO_T];
        for (int i = 0; i < n; i++) memcpy(in + i * len, ids + i * DEMO_T, (size_t)len * sizeof(int32_t));
        bg_tensor *lg = bg_bitnet_forward(m, bg_from_data(ctx, BG_I32, 2, (int64_t[]){ n, len }, in));
        if (!lg) return -1;
        const float *v = bg_tensor_data(lg);
        for (int i = 0; i < n; i++) {
            const float *row = v + ((int64_t)i * len + len - 1) * 256;
            int best = 0;
            for (int j = 1; j < 256; j++) best = row[j] > row[best] ? j : best;
            ids[i * DEMO_T + len] = best;
            got[i][k] = (char)best;
        }
        bg_step_end(ctx);
    }
    int correct = 0;
    for (int i = 0; i < n; i++) correct += strncmp(got[i], answers[i], strlen(answers[i])) == 0;
    return correct;
}

double demo_accuracy(bg_module *model, demo_task task, uint64_t seed, int n)
{
    bg_ctx *ctx = bg_tensor_ctx(bg_module_param(model, 0));
    bool prev = bg_grad_enable(ctx, false), train = bg_module_training(model);
    bg_module_set_training(model, false);
    static char prompts[3][256][8], answers[3][256][8];
    int count[3] = { 0, 0, 0 }, correct = 0, total = 0;
    demo_rng r = { seed };
    if (n > 256) n = 256;
    for (int i = 0; i < n; i++) { /* prompt lengths are 4, 5 or 6 */
        char p[8], a[8];
        demo_problem(task, &r, true, p, a);
        int g = (int)strlen(p) - 4;
        memcpy(prompts[g][count[g]], p, 8);
        memcpy(answers[g][count[g]++], a, 8);
    }
    for (int g = 0; g < 3; g++) {
        if (count[g] == 0) continue;
        int c = decode_group(model, prompts[g], answers[g], count[g], g + 4);
        if (c < 0) break;
        correct += c;
        total += count[g];
    }
    bg_module_set_training(model, train);
    bg_grad_enable(ctx, prev);
    return total ? (double)correct / (double)total : 0.0;
}
