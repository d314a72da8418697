/* finetune.c - the end-to-end story of bitgrad on built-in data, in four stages:
 *   1. pre-train a small full-precision model of llama.cpp's bitnet architecture on task A
 *      (addition written as text, "12+34=46\n");
 *   2. convert its projections to BitLinear and fine-tune quantization-aware, with a lambda
 *      warm-up and BitNet's two-stage schedule;
 *   3. freeze the ternary base and fine-tune LoRA adapters on task B (subtraction);
 *   4. export model.gguf (TQ2_0) and adapter.gguf for llama.cpp, and check them back.
 * Task A's operands have two digits (10..99); accuracy is greedy exact match on operand
 * pairs that training never sees. About 80 s on 2 cores (--quick: under a minute).
 * Run: ./build/examples/finetune [--out DIR] [--quick] [--data FILE] [--seed N]
 * [--steps A,B,C] (also `bitgrad finetune --demo`). Writes DIR/loss.csv, DIR/loss.svg and a
 * summary; with --quick (the e2e test) it also checks its results and exits 1 on a miss. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bitgrad.h>
#include <bitgrad/export.h>

#include "demo_tasks.h"
#include "finetune_demo.h"

/* The recipe, from short experiments on 2 cores. Most of the speed comes from the initial
 * weights, N(0, 0.06) instead of the library's 0.02, with peak lr 1e-3: at 0.02 the loss
 * sits on its plateau (before the carry is learnt) for 500 to 1000+ steps depending on the
 * seed, while at 0.06 every seed tried is at 95% exact match or more by step 450; lr
 * 2e-3 stalls on the plateau. Adam's beta2 0.95 with gradient clipping at 1 rescued the
 * 0.02 init at lr 2e-3 and does no harm here. Two layers: one did not learn the carry in
 * 1000 steps. The LoRA stage learns subtraction in a few hundred steps on this base. */
#define BATCH 64

typedef struct demo_plan {
    int n_layer, n_head, n_ff;
    int steps[3], quick_steps[3];  /* stages 1..3: default and --quick */
    float lr[3], wd[3], warmup[3]; /* peak lr, weight decay, lr warm-up (fraction) */
    float lambda_frac;             /* QAT lambda warm-up, fraction of stage 2 */
    float clip;                    /* gradient-norm clipping */
    float beta2;                   /* Adam's second-moment decay */
    float init_std;                /* initial weights N(0, init_std) */
    int lora_rank;
    float lora_alpha;
} demo_plan;

static const demo_plan PLAN = {
    .n_layer = 2, .n_head = 4, .n_ff = 512,
    .steps = { 1000, 400, 500 }, .quick_steps = { 500, 200, 250 },
    .lr = { 1e-3f, 1e-3f, 2e-3f }, .wd = { 0.01f, 0.01f, 0.0f }, .warmup = { 0.1f, 0.1f, 0.1f },
    .lambda_frac = 0.25f, .clip = 1.0f, .beta2 = 0.95f, .init_std = 0.06f,
    .lora_rank = 8, .lora_alpha = 16.0f,
};

typedef struct stage {
    const char *name;
    int steps;
    float lr, wd, warmup;
    demo_task task;
    int lambda_k;          /* lambda warm-up steps (0: none) */
    bg_sched_kind sched;
} stage;

typedef struct demo {
    demo_options opt;
    bg_ctx *ctx;
    FILE *csv;
    unsigned char *text;   /* --data contents, or NULL */
    size_t text_len;
    demo_rng rng;
    double t_stage[4];
    float *curve[3];       /* loss per step of stages 1..3, for the plot */
    int curve_n[3];
} demo;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int row_len(const demo *d) { return d->text ? DEMO_TEXT_T : DEMO_T; }

static void batch(demo *d, demo_task task, int32_t *ids, int32_t *tg)
{
    if (d->text) demo_text_batch(d->text, d->text_len, &d->rng, BATCH, DEMO_TEXT_T, ids, tg);
    else demo_batch(task, &d->rng, BATCH, ids, tg);
}

/* One stage of AdamW training; logs every step to the CSV and the curve. */
static int train_stage(demo *d, bg_module *m, const stage *s, int idx)
{
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    oc.lr = s->lr;
    oc.weight_decay = s->wd;
    oc.beta2 = PLAN.beta2;
    bg_optim *o = bg_optim_new(d->ctx, &oc);
    if (!o || bg_optim_add_module(o, m) <= 0) return -1;
    bg_schedule sc = { .kind = s->sched, .warmup = (int64_t)(s->warmup * (float)s->steps),
                       .total = s->steps, .min_factor = 0.1f, .stage2_at = 0.5f,
                       .stage2_factor = 0.5f };
    d->curve[idx] = calloc((size_t)s->steps, sizeof(float));
    int32_t ids[BATCH * DEMO_TEXT_T], tg[BATCH * DEMO_TEXT_T];
    double t0 = now();
    int rc = 0;
    for (int step = 0; step < s->steps && !rc; step++) {
        if (s->lambda_k > 0) bg_module_set_lambda(m, bg_lambda_at(BG_LAMBDA_LINEAR, step, s->lambda_k));
        bg_schedule_apply(&sc, o, step);
        batch(d, s->task, ids, tg);
        bg_tensor *loss = demo_loss(m, ids, tg, BATCH, row_len(d));
        float lv = loss ? bg_item(loss) : 0.0f;
        rc = loss ? bg_backward(loss) : -1;
        if (!rc) bg_clip_grad_norm(o, PLAN.clip);
        if (!rc) rc = bg_optim_step(o);
        bg_optim_zero_grad(o);
        bg_step_end(d->ctx);
        d->curve[idx][step] = lv;
        d->curve_n[idx] = step + 1;
        fprintf(d->csv, "%s,%d,%.6f\n", s->name, step, (double)lv);
        if (step % 100 == 0 || step == s->steps - 1)
            printf("  [%s] step %4d/%d  loss %.4f  %.1f ms/step\n", s->name, step, s->steps,
                   (double)lv, 1e3 * (now() - t0) / (step + 1));
    }
    if (rc) fprintf(stderr, "finetune: %s: %s\n", s->name, bg_ctx_error(d->ctx));
    d->t_stage[idx] = now() - t0;
    bg_optim_free(&o);
    return rc;
}

static double report_acc(demo *d, bg_module *m, demo_task task, const char *what)
{
    if (d->text) {
        int32_t ids[BATCH * DEMO_TEXT_T], tg[BATCH * DEMO_TEXT_T];
        demo_rng r = { 12345 };
        demo_text_batch(d->text, d->text_len, &r, BATCH, DEMO_TEXT_T, ids, tg);
        double l = demo_eval_loss(m, ids, tg, BATCH, DEMO_TEXT_T);
        printf("  %-44s held-out loss %.4f\n", what, l);
        return l;
    }
    double a = demo_accuracy(m, task, 777 + (uint64_t)task, 200);
    printf("  %-44s exact match %.1f%%\n", what, 100.0 * a);
    return a;
}

static int load_text(demo *d, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "finetune: cannot open %s\n", path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    d->text = n > 0 ? malloc((size_t)n) : NULL;
    d->text_len = d->text ? fread(d->text, 1, (size_t)n, f) : 0;
    fclose(f);
    if (d->text_len < 2 * DEMO_TEXT_T) {
        fprintf(stderr, "finetune: %s is too short (need %d bytes)\n", path, 2 * DEMO_TEXT_T);
        return 1;
    }
    return 0;
}

/* The loss curves as an SVG picture: one polyline per stage, log-scaled loss. */
static void write_svg(const demo *d)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/loss.svg", d->opt.out_dir);
    FILE *f = fopen(path, "w");
    if (!f) return;
    static const char *colors[3] = { "#1f77b4", "#d62728", "#2ca02c" };
    static const char *names[3] = { "1 pre-train (fp32)", "2 QAT (ternary)", "3 LoRA (task B)" };
    int total = d->curve_n[0] + d->curve_n[1] + d->curve_n[2];
    double W = 800, H = 400, lo = 1e-3, hi = 10.0;
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%g' height='%g'>\n"
               "<rect width='100%%' height='100%%' fill='white'/>\n"
               "<text x='10' y='20' font-family='sans-serif' font-size='14'>bitgrad fine-tune "
               "demo: training loss (log scale) per step</text>\n", W, H + 40);
    int x0 = 0;
    for (int s = 0; s < 3; s++) {
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='1' points='", colors[s]);
        for (int i = 0; i < d->curve_n[s]; i++) {
            double v = d->curve[s][i] < lo ? lo : (d->curve[s][i] > hi ? hi : d->curve[s][i]);
            double x = 40 + (W - 60) * (x0 + i) / (total > 1 ? total - 1 : 1);
            double y = 30 + (H - 20) * (log10(hi) - log10(v)) / (log10(hi) - log10(lo));
            fprintf(f, "%.1f,%.1f ", x, y);
        }
        fprintf(f, "'/>\n<text x='%g' y='%g' fill='%s' font-family='sans-serif' "
                   "font-size='12'>%s</text>\n", 60 + 250.0 * s, H + 30, colors[s], names[s]);
        x0 += d->curve_n[s];
    }
    for (int e = -3; e <= 1; e++)
        fprintf(f, "<text x='2' y='%g' font-family='sans-serif' font-size='10'>1e%d</text>\n",
                34 + (H - 20) * (1.0 - e) / 4.0, e);
    fprintf(f, "</svg>\n");
    fclose(f);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* model.gguf (and adapter.gguf when not NULL) loaded back for inference: ternary codes,
 * int8 activations, as llama.cpp runs them. NULL (and a message) on failure. */
static bg_module *load_back(demo *d, const char *model, const char *adapter)
{
    char err[512];
    bg_module *m = NULL;
    if (bg_bitnet_import(d->ctx, model, &m, err, sizeof err) ||
        (adapter && bg_lora_import(m, adapter, "default", err, sizeof err)) ||
        bg_module_set_inference(m, true)) {
        fprintf(stderr, "finetune: loading %s%s%s back: %s\n", model, adapter ? " + " : "",
                adapter ? adapter : "", err);
        bg_module_free(&m);
        return NULL;
    }
    bg_module_set_training(m, false);
    return m;
}

/* Greedy continuation of prompt, up to the newline. */
static void generate(demo *d, bg_module *m, const char *prompt, char *out, size_t outlen)
{
    bool prev = bg_grad_enable(d->ctx, false);
    int32_t ids[DEMO_T];
    int n = 0;
    for (; prompt[n] && n < DEMO_T; n++) ids[n] = (unsigned char)prompt[n];
    size_t k = 0;
    while (n < DEMO_T && k + 1 < outlen) {
        bg_tensor *lg = bg_bitnet_forward(m, bg_from_data(d->ctx, BG_I32, 2, (int64_t[]){ 1, n }, ids));
        if (!lg) break;
        const float *v = (const float *)bg_tensor_data(lg) + (n - 1) * 256;
        int best = 0;
        for (int j = 1; j < 256; j++) best = v[j] > v[best] ? j : best;
        bg_step_end(d->ctx);
        if (best == '\n') break;
        out[k++] = (char)best;
        ids[n++] = best;
    }
    out[k] = 0;
    bg_grad_enable(d->ctx, prev);
}

typedef struct results {
    double acc_a_fp, acc_a_ptq, acc_a_qat, acc_b_before, acc_b_after, acc_a_disabled;
    double acc_a_file, acc_b_file; /* the same, by the models loaded back from the files */
    int loaded_back;               /* files that loaded back: model, model + adapter */
    int64_t params, trainable_lora;
    long model_bytes, adapter_bytes;
    int64_t flips;
    char gen_a[32], gen_b[32];
} results;

static void summary(const demo *d, const results *r, const bg_module *m)
{
    const char *metric = d->text ? "held-out loss" : "exact match";
    double proj = 0;
    for (int i = 0; i < bg_module_n_params(m); i++) {
        const bg_tensor *t = bg_module_param(m, i);
        const char *n = bg_tensor_name(t);
        if (strstr(n, "attn_") || strstr(n, "ffn_"))
            if (!strstr(n, "norm") && !strstr(n, "lora")) proj += (double)bg_tensor_numel(t);
    }
    printf("\n== summary ==========================================================\n");
    printf("%-46s %s\n", "stage", metric);
    printf("%-46s %.3f\n", "1 pre-trained fp32, task A", r->acc_a_fp);
    printf("%-46s %.3f\n", "2 ternary before QAT (rounded only), task A", r->acc_a_ptq);
    printf("%-46s %.3f\n", "2 ternary (QAT, lambda 1), task A", r->acc_a_qat);
    printf("%-46s %.3f\n", "3 ternary base before LoRA, task B", r->acc_b_before);
    printf("%-46s %.3f\n", "3 ternary base + LoRA, task B", r->acc_b_after);
    printf("%-46s %.3f\n", "3 adapter disabled, task A", r->acc_a_disabled);
    printf("%-46s %.3f\n", "4 model.gguf read back, task A", r->acc_a_file);
    printf("%-46s %.3f\n", "4 model.gguf + adapter.gguf read back, task B", r->acc_b_file);
    printf("parameters: %lld total, %lld trainable with LoRA (%.2f%%)\n", (long long)r->params,
           (long long)r->trainable_lora, 100.0 * (double)r->trainable_lora / (double)r->params);
    printf("files: model.gguf %ld bytes, adapter.gguf %ld bytes\n", r->model_bytes, r->adapter_bytes);
    printf("projection weights: %.0f f32 bytes -> %.0f TQ2_0 bytes (%.1fx smaller)\n", proj * 4,
           proj * 66.0 / 256.0, 4.0 * 256.0 / 66.0);
    printf("ternary codes flipped by merging the adapter: %lld\n", (long long)r->flips);
    printf("time: pre-train %.1fs, QAT %.1fs, LoRA %.1fs, export+checks %.1fs\n", d->t_stage[0],
           d->t_stage[1], d->t_stage[2], d->t_stage[3]);
    if (!d->text)
        printf("generate from model.gguf: \"12+34=\" -> \"%s\"; with adapter.gguf: \"56-23=\" -> "
               "\"%s\"\n", r->gen_a, r->gen_b);
    printf("loss curves: %s/loss.csv and %s/loss.svg\n", d->opt.out_dir, d->opt.out_dir);
}

/* Task accuracy (or loss) and one generation by the files loaded back. */
static void check_file(demo *d, const char *model, const char *adapter, demo_task task,
                       const char *prompt, double *acc, char *gen, size_t genlen, results *r)
{
    bg_module *m = load_back(d, model, adapter);
    snprintf(gen, genlen, "(load failed)");
    if (!m) return;
    r->loaded_back++;
    *acc = report_acc(d, m, task, adapter ? "model.gguf + adapter.gguf read back, task B"
                                          : "model.gguf read back, task A");
    if (!d->text) generate(d, m, prompt, gen, genlen);
    bg_module_free(&m);
}

static int export_and_check(demo *d, bg_module *m, results *r)
{
    double t0 = now();
    char model[4096], adapter[4096], err[512];
    snprintf(model, sizeof model, "%s/model.gguf", d->opt.out_dir);
    snprintf(adapter, sizeof adapter, "%s/adapter.gguf", d->opt.out_dir);
    bg_export_options eo = bg_export_default();
    eo.name = "bitgrad-finetune-demo";
    if (bg_bitnet_export(m, model, &eo, err, sizeof err) ||
        bg_lora_export(m, "default", adapter, err, sizeof err)) {
        fprintf(stderr, "finetune: export: %s\n", err);
        return 1;
    }
    r->model_bytes = file_size(model);
    r->adapter_bytes = file_size(adapter);
    printf("stage 4: wrote %s and %s, loading them back\n", model, adapter);
    check_file(d, model, NULL, TASK_ADD, "12+34=", &r->acc_a_file, r->gen_a, sizeof r->gen_a, r);
    check_file(d, model, adapter, TASK_SUB, "56-23=", &r->acc_b_file, r->gen_b, sizeof r->gen_b, r);
    d->t_stage[3] = now() - t0;
    return 0;
}

static int stage_steps(const demo_options *o, int i)
{
    return o->steps[i] ? o->steps[i] : (o->quick ? PLAN.quick_steps[i] : PLAN.steps[i]);
}

static stage make_stage(const demo_options *o, int i, const char *name, demo_task task,
                        bg_sched_kind sched)
{
    stage s = { name, stage_steps(o, i), PLAN.lr[i], PLAN.wd[i], PLAN.warmup[i], task, 0,
                sched };
    return s;
}

static bg_module *new_model(demo *d)
{
    bg_bitnet_config c = bg_bitnet_default();
    c.n_embd = 256;
    c.n_layer = PLAN.n_layer;
    c.n_head = PLAN.n_head;
    c.n_head_kv = PLAN.n_head;
    c.n_ff = PLAN.n_ff;
    c.n_ctx = DEMO_TEXT_T; /* the files' context_length, room for llama.cpp's prompt + 4 */
    c.bitlinear = false;
    bg_module *m = bg_bitnet_new(d->ctx, &c);
    if (m) bg_bitnet_init(m, PLAN.init_std);
    if (m)
        printf("model: bitnet, %lld parameters (n_embd %lld, %lld layers, %lld heads, n_ff %lld), "
               "batch %d\n", (long long)bg_module_count(m, false), (long long)c.n_embd,
               (long long)c.n_layer, (long long)c.n_head, (long long)c.n_ff, BATCH);
    return m;
}

/* Stages 1 and 2: pre-train in full precision, then BitLinear + QAT. */
static int pretrain_and_qat(demo *d, bg_module *m, results *r)
{
    printf("stage 1: pre-train full precision on task A (%s)\n", d->text ? "text file" : "a+b=c");
    stage st1 = make_stage(&d->opt, 0, "pretrain", TASK_ADD, BG_SCHED_COSINE);
    int rc = train_stage(d, m, &st1, 0);
    if (!rc) r->acc_a_fp = report_acc(d, m, TASK_ADD, "fp32 model, task A");
    printf("stage 2: convert to BitLinear, QAT with lambda warm-up and two-stage schedule\n");
    if (!rc) rc = bg_module_to_bitlinear(m, NULL, NULL, 0) > 0 ? 0 : 1;
    bg_module_set_lambda(m, 1.0f);
    if (!rc) r->acc_a_ptq = report_acc(d, m, TASK_ADD, "ternary before QAT, task A");
    stage st2 = make_stage(&d->opt, 1, "qat", TASK_ADD, BG_SCHED_TWO_STAGE);
    st2.lambda_k = (int)(PLAN.lambda_frac * (float)st2.steps);
    if (!rc) rc = train_stage(d, m, &st2, 1);
    bg_module_set_lambda(m, 1.0f);
    if (!rc) r->acc_a_qat = report_acc(d, m, TASK_ADD, "ternary model, task A");
    return rc;
}

/* Stage 3: freeze the ternary base, LoRA on task B; task A with the adapter disabled. */
static int lora_stage(demo *d, bg_module *m, results *r)
{
    printf("stage 3: freeze the ternary base, LoRA (r %d, alpha %g) on task B (a-b=c)\n",
           PLAN.lora_rank, (double)PLAN.lora_alpha);
    r->acc_b_before = report_acc(d, m, TASK_SUB, "ternary base, task B");
    static const char *targets[] = { "blk.*.attn_*", "blk.*.ffn_*" };
    bg_lora_config lc = bg_lora_default();
    lc.rank = PLAN.lora_rank;
    lc.alpha = PLAN.lora_alpha;
    lc.targets = targets;
    lc.n_targets = 2;
    if (bg_lora_add(m, "default", &lc) <= 0) return 1;
    r->trainable_lora = bg_module_count(m, true);
    bg_module_print_trainable(m, stdout);
    stage st3 = make_stage(&d->opt, 2, "lora", TASK_SUB, BG_SCHED_COSINE);
    int rc = train_stage(d, m, &st3, 2);
    if (!rc) r->acc_b_after = report_acc(d, m, TASK_SUB, "ternary base + LoRA, task B");
    bg_lora_set_active(m, NULL);
    if (!rc) r->acc_a_disabled = report_acc(d, m, TASK_ADD, "adapter disabled, task A");
    bg_lora_set_active(m, "default");
    return rc;
}

static int run_stages(demo *d, results *r)
{
    bg_module *m = new_model(d);
    if (!m) return 1;
    r->params = bg_module_count(m, false);
    int rc = pretrain_and_qat(d, m, r);
    if (!rc) rc = lora_stage(d, m, r);
    if (!rc) rc = export_and_check(d, m, r);
    if (!rc) {
        bg_lora_merge(m, &r->flips);
        bg_lora_unmerge(m);
        write_svg(d);
        summary(d, r, m);
    }
    bg_module_free(&m);
    return rc;
}

/* --quick is the e2e test (examples/meson.build). Besides finishing, its run must reach
 * these exact-match accuracies on held-out problems (seeds 1, 2 and 3 reach at least 0.97
 * on task A and 0.93 on task B, the same in release and ASan builds), write every file,
 * and load model.gguf and adapter.gguf back. */
#define QUICK_MIN_A 0.80        /* task A: fp32, ternary, adapter disabled, model.gguf */
#define QUICK_MIN_B 0.70        /* task B: ternary + LoRA, model.gguf + adapter.gguf */
#define QUICK_MAX_DRIFT 0.01    /* |adapter disabled - ternary| on task A */

static int check_files(const demo *d)
{
    static const char *names[] = { "model.gguf", "adapter.gguf", "loss.csv", "loss.svg" };
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", d->opt.out_dir, names[i]);
        long n = file_size(path);
        printf("  %-4s %-52s %ld bytes\n", n > 0 ? "ok" : "FAIL", path, n);
        bad += n <= 0;
    }
    return bad;
}

static int check_min(const char *what, double got, double min)
{
    printf("  %-4s %-52s %.3f >= %.3f\n", got >= min ? "ok" : "FAIL", what, got, min);
    return got >= min ? 0 : 1;
}

/* Returns 0 when every check passes, else 1 (after printing each check). */
static int quick_checks(const demo *d, const results *r)
{
    printf("\n== --quick checks (the e2e test) ==================================\n");
    int bad = check_files(d);
    printf("  %-4s %-52s %d of 2\n", r->loaded_back == 2 ? "ok" : "FAIL",
           "files loaded back (model, model + adapter)", r->loaded_back);
    bad += r->loaded_back != 2;
    if (!d->text) {
        bad += check_min("1 pre-trained fp32, task A", r->acc_a_fp, QUICK_MIN_A);
        bad += check_min("2 ternary (QAT), task A", r->acc_a_qat, QUICK_MIN_A);
        bad += check_min("3 ternary base + LoRA, task B", r->acc_b_after, QUICK_MIN_B);
        bad += check_min("3 adapter disabled, task A", r->acc_a_disabled, QUICK_MIN_A);
        bad += check_min("4 model.gguf read back, task A", r->acc_a_file, QUICK_MIN_A);
        bad += check_min("4 model.gguf + adapter.gguf read back, task B", r->acc_b_file,
                         QUICK_MIN_B);
        double drift = fabs(r->acc_a_disabled - r->acc_a_qat);
        printf("  %-4s %-52s %.3f <= %.3f\n", drift <= QUICK_MAX_DRIFT ? "ok" : "FAIL",
               "|adapter disabled - ternary|, task A", drift, QUICK_MAX_DRIFT);
        bad += drift > QUICK_MAX_DRIFT;
    }
    if (bad) printf("FAILED: %d check%s\n", bad, bad > 1 ? "s" : "");
    else printf("all checks passed\n");
    return bad ? 1 : 0;
}

demo_options demo_default_options(void)
{
    return (demo_options){ .out_dir = "out", .seed = 1 };
}

int demo_parse_args(int argc, char **argv, demo_options *o)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) {
            o->quick = true;
        } else if (strcmp(a, "--out") == 0 && v) {
            o->out_dir = v;
            i++;
        } else if (strcmp(a, "--data") == 0 && v) {
            o->data_path = v;
            i++;
        } else if (strcmp(a, "--seed") == 0 && v) {
            o->seed = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--steps") == 0 && v &&
                   sscanf(v, "%d,%d,%d", &o->steps[0], &o->steps[1], &o->steps[2]) == 3 &&
                   o->steps[0] > 0 && o->steps[1] > 0 && o->steps[2] > 0) {
            i++;
        } else {
            fprintf(stderr, "usage: finetune [--out DIR] [--data FILE] [--quick] [--seed N] "
                            "[--steps A,B,C]\n  bad argument: %s\n", a);
            return 2;
        }
    }
    return 0;
}


int bg_finetune_demo(const demo_options *opt)
{
    demo d = { .opt = *opt, .rng = { opt->seed } };
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows up at once in logs and pipes too */
    mkdir(opt->out_dir, 0755);
    char path[4096];
    snprintf(path, sizeof path, "%s/loss.csv", opt->out_dir);
    if (opt->data_path && load_text(&d, opt->data_path)) return 1;
    if (bg_ctx_create(&d.ctx, BG_CPU) || !(d.csv = fopen(path, "w"))) {
        fprintf(stderr, "finetune: cannot create %s\n", path);
        return 1;
    }
    bg_ctx_seed(d.ctx, opt->seed);
    fprintf(d.csv, "stage,step,loss\n");
    results r = { 0 };
    int rc = run_stages(&d, &r);
    fclose(d.csv);
    if (!rc && opt->quick) rc = quick_checks(&d, &r);
    for (int i = 0; i < 3; i++) free(d.curve[i]);
    free(d.text);
    bg_ctx_free(&d.ctx);
    return rc;
}

void demo_short_omp_spin(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    setenv("GOMP_SPINCOUNT", "10000", 1);
    execv("/proc/self/exe", argv); /* returns only on failure: then carry on as we are */
}

#ifndef FINETUNE_NO_MAIN
int main(int argc, char **argv)
{
    demo_short_omp_spin(argv);
    demo_options o = demo_default_options();
    if (demo_parse_args(argc - 1, argv + 1, &o)) return 2;
    return bg_finetune_demo(&o);
}
#endif
