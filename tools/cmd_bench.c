/* cmd_bench.c - `bitgrad bench --workload mlp|lm|lora|matvec`: times the reference
 * workloads (W1 BitLinear MLP, W2 bitnet LM, W3 LoRA on a frozen W2, W4 ternary mat-vec /
 * mat-mat) and prints one JSON line: median, min and max ms per step after warm-up,
 * samples or tokens per second, peak RSS. */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"

typedef struct bench {
    bg_ctx *ctx;
    bg_module *model;
    bg_optim *opt;
    int32_t *ids, *tg;
    int B, T;
    float *x;      /* W1 inputs */
    int8_t *codes, *lx;
    float *s_x, *y;
    int64_t n, k, cols;
    bg_tmat **tw;  /* W4 packed weights, `copies` of them */
    int copies, next;
    bg_isa isa;
    double phase[3]; /* the last training step's forward, backward, optimizer seconds */
    uint64_t **probe; /* W4: `copies` buffers as large as a weight copy, for the paired read */
    size_t probe_words;
} bench;

/* CPU seconds of every thread of the process: on a shared machine the wall time of a step
 * mostly says how much of it the others left; the CPU time says what the step cost. */
static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int setup_mlp(bench *b)
{
    b->B = 256;
    bg_module *l[5] = { bg_bitlinear_new(b->ctx, "fc1", 784, 1024, false, NULL), bg_relu_new(b->ctx),
                        bg_bitlinear_new(b->ctx, "fc2", 1024, 1024, false, NULL), bg_relu_new(b->ctx),
                        bg_bitlinear_new(b->ctx, "fc3", 1024, 10, false, NULL) };
    b->model = bg_sequential_new(b->ctx, "", l, 5);
    b->x = malloc(256 * 784 * sizeof(float));
    b->tg = malloc(256 * sizeof(int32_t));
    if (!b->model || !b->x || !b->tg) return 1;
    for (int i = 0; i < 256 * 784; i++) b->x[i] = bg_rand_uniform(b->ctx);
    for (int i = 0; i < 256; i++) b->tg[i] = i % 10;
    return 0;
}

static int setup_lm(bench *b, bool lora)
{
    b->B = 16;
    b->T = 128;
    bg_bitnet_config c = bg_bitnet_default();
    b->model = bg_bitnet_new(b->ctx, &c);
    b->ids = malloc(16 * 129 * sizeof(int32_t));
    b->tg = malloc(16 * 128 * sizeof(int32_t));
    if (!b->model || !b->ids || !b->tg) return 1;
    for (int i = 0; i < 16 * 129; i++) b->ids[i] = (int32_t)(bg_rand_uniform(b->ctx) * 255.0f);
    for (int i = 0; i < 16 * 128; i++) b->tg[i] = b->ids[(i / 128) * 129 + i % 128 + 1];
    if (lora) {
        static const char *t[] = { "blk.*.attn_q", "blk.*.attn_k", "blk.*.attn_v", "blk.*.attn_output" };
        bg_lora_config lc = bg_lora_default();
        lc.targets = t;
        lc.n_targets = 4;
        if (bg_lora_add(b->model, "default", &lc) <= 0) return 1;
    }
    return 0;
}

/* A fixed pseudo-random integer of i (the data's values do not matter for timing). */
static uint32_t bench_rand(int64_t i)
{
    uint64_t z = (uint64_t)i * 0x9e3779b97f4a7c15ull;
    z ^= z >> 29;
    z *= 0xbf58476d1ce4e5b9ull;
    return (uint32_t)(z >> 32);
}

static int setup_matvec(bench *b, int64_t cols)
{
    b->n = 4096;
    b->k = 14336;
    b->cols = cols;
    b->codes = malloc((size_t)(b->n * b->k));
    b->lx = malloc((size_t)(cols * b->k));
    b->s_x = malloc((size_t)cols * sizeof(float));
    b->y = malloc((size_t)(cols * b->n) * sizeof(float));
    if (!b->codes || !b->lx || !b->s_x || !b->y) return 1;
    for (int64_t i = 0; i < b->n * b->k; i++) b->codes[i] = (int8_t)(bench_rand(i) % 3) - 1;
    for (int64_t i = 0; i < cols * b->k; i++) b->lx[i] = (int8_t)(bench_rand(i + 7) % 255 - 127);
    for (int64_t i = 0; i < cols; i++) b->s_x[i] = 1.0f;
    float s_w = 1.0f;
    b->tw = calloc((size_t)b->copies, sizeof *b->tw);
    for (int c = 0; b->tw && c < b->copies; c++)
        if (bg_tmat_new(b->codes, &s_w, false, b->n, b->k, &b->tw[c])) return 1;
    if (!b->tw) return 1;
    b->probe_words = bg_tmat_nbytes(b->tw[0]) / sizeof(uint64_t);
    b->probe = calloc((size_t)b->copies, sizeof *b->probe);
    for (int c = 0; b->probe && c < b->copies; c++) {
        if (!(b->probe[c] = malloc(b->probe_words * sizeof(uint64_t)))) return 1;
        for (size_t i = 0; i < b->probe_words; i++) b->probe[c][i] = i + (size_t)c;
    }
    return b->probe ? 0 : 1;
}

/* One pass of the paired read probe: a vectorised sum over probe buffer c (as many bytes as
 * one weight copy), timed; returns seconds. */
static double probe_pass(const bench *b, int c, uint64_t *sink)
{
    const uint64_t *buf = b->probe[c];
    size_t n = b->probe_words;
    uint64_t s = 0;
    double t0 = cli_now();
#pragma omp parallel for schedule(static) reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += buf[i];
    double dt = cli_now() - t0;
    *sink += s;
    return dt;
}

/* The machine's memory read rate in GB/s with the current threads: the best of 5 passes of
 * a vectorised sum over 512 MiB (far beyond any cache). The W4 1-column figure is compared
 * with it. */
static double read_bandwidth(void)
{
    size_t n = (size_t)512 << 20 >> 3;
    uint64_t *buf = malloc(n * sizeof *buf), sink = 0;
    if (!buf) return 0.0;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = i;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        uint64_t s = 0;
        double t0 = cli_now();
#pragma omp parallel for schedule(static) reduction(+ : s)
        for (size_t i = 0; i < n; i++) s += buf[i];
        double dt = cli_now() - t0;
        best = dt < best ? dt : best;
        sink += s;
    }
    free(buf);
    return sink ? (double)(n * sizeof(uint64_t)) / best / 1e9 : 0.0;
}

/* This machine's cblas_sgemm rate in GFLOP/s with the current threads: the best of 5
 * products of [1024, 1024] matrices. */
static double sgemm_gflops(void)
{
    const int n = 1024;
    float *a = malloc((size_t)n * n * sizeof(float)), *b = malloc((size_t)n * n * sizeof(float));
    float *c = malloc((size_t)n * n * sizeof(float));
    double best = 1e30;
    for (int i = 0; a && b && c && i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.25f;
    for (int r = 0; a && b && c && r < 6; r++) {
        double t0 = cli_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = cli_now() - t0;
        if (r > 0 && dt < best) best = dt; /* the first run warms up */
    }
    free(a);
    free(b);
    free(c);
    return best < 1e30 ? 2.0 * n * n * n / best / 1e9 : 0.0;
}

/* W5 (lora-large) and its 3B-shaped sibling (lora-3b): the bitnet model at
 * bitnet_b1_58-large's (or -3B's) shape, a random ternary base held packed and frozen (never
 * any latent weights), LoRA r 16 alpha 32 on the 7 projections of every layer, batch 1 x T
 * random ids. */
static int setup_lora_large(bench *b, bool shape3b, int T, bool recompute, int layers)
{
    b->B = 1;
    b->T = T;
    bg_bitnet_config c = bg_bitnet_default();
    c.n_vocab = 32000;
    c.n_embd = shape3b ? 3200 : 1536;
    c.n_layer = layers > 0 ? layers : (shape3b ? 26 : 24);
    c.n_head = c.n_head_kv = shape3b ? 32 : 16;
    c.n_ff = shape3b ? 8640 : 4096;
    c.n_ctx = T;
    c.packed_base = true;
    c.recompute = recompute;
    b->model = bg_bitnet_new(b->ctx, &c);
    b->ids = malloc((size_t)(T + 1) * sizeof(int32_t));
    if (!b->model || !b->ids) return 1;
    int64_t seed = 0;
    for (int i = 0; i < bg_module_n_children(b->model); i++) {
        bg_module *p = bg_module_child(b->model, i);
        if (!bg_linear_is_packed(p)) continue;
        bg_tensor *w = bg_linear_weight(p);
        int64_t n = bg_tensor_numel(w);
        int8_t *codes = malloc((size_t)n);
        float s = 0.02f;
        for (int64_t j = 0; codes && j < n; j++) codes[j] = (int8_t)(bench_rand(seed + j) % 3) - 1;
        int rc = codes ? bg_bitlinear_set_packed(p, codes, &s) : 1;
        free(codes);
        if (rc) return 1;
        seed += n;
    }
    for (int i = 0; i <= T; i++) b->ids[i] = (int32_t)(bench_rand(i + 99) % 32000);
    static const char *t[] = { "blk.*.attn_q", "blk.*.attn_k",   "blk.*.attn_v", "blk.*.attn_output",
                               "blk.*.ffn_gate", "blk.*.ffn_up", "blk.*.ffn_down" };
    bg_lora_config lc = bg_lora_default();
    lc.rank = 16;
    lc.alpha = 32.0f;
    lc.targets = t;
    lc.n_targets = 7;
    if (bg_lora_add(b->model, "default", &lc) != 7 * c.n_layer) return 1;
    /* token_embd as a bitnet GGUF has it (F16 values): frozen, it is then held as F16 */
    bg_tensor *e = bg_module_find_param(b->model, "token_embd.weight");
    float *ev = bg_tensor_data(e);
    for (int64_t i = 0; i < bg_tensor_numel(e); i++) ev[i] = bg_fp16_to_fp32(bg_fp32_to_fp16(ev[i]));
    return bg_module_pack_frozen(b->model) == 1 ? 0 : 1;
}

/* One training step (or one product for matvec). */
static int step(bench *b, const char *w)
{
    if (strcmp(w, "matvec") == 0 || strcmp(w, "matmat") == 0) {
        b->next = (b->next + 1) % b->copies;
        return bg_tmat_matmul_isa(b->tw[b->next], b->isa, b->lx, b->s_x, b->cols, b->y);
    }
    bg_tensor *loss;
    double t0 = cli_now();
    if (strncmp(w, "lora-", 5) == 0) {
        bg_tensor *ids = bg_from_data(b->ctx, BG_I32, 2, (int64_t[]){ 1, b->T + 1 }, b->ids);
        loss = bg_bitnet_loss(b->model, ids, -100);
    } else if (strcmp(w, "mlp") == 0) {
        bg_tensor *x = bg_from_data(b->ctx, BG_F32, 2, (int64_t[]){ 256, 784 }, b->x);
        bg_tensor *y = bg_from_data(b->ctx, BG_I32, 1, (int64_t[]){ 256 }, b->tg);
        loss = bg_cross_entropy(bg_module_forward(b->model, x), y, -1, 0.0f);
    } else {
        int32_t in[16 * 128];
        for (int i = 0; i < 16 * 128; i++) in[i] = b->ids[(i / 128) * 129 + i % 128];
        bg_tensor *x = bg_from_data(b->ctx, BG_I32, 2, (int64_t[]){ 16, 128 }, in);
        bg_tensor *y = bg_from_data(b->ctx, BG_I32, 2, (int64_t[]){ 16, 128 }, b->tg);
        loss = bg_cross_entropy(bg_bitnet_forward(b->model, x), y, -1, 0.0f);
    }
    double t1 = cli_now();
    int rc = loss ? bg_backward(loss) : 1;
    double t2 = cli_now();
    if (!rc) rc = bg_optim_step(b->opt);
    bg_optim_zero_grad(b->opt);
    bg_step_end(b->ctx);
    b->phase[0] = t1 - t0; /* forward: inputs, model, loss */
    b->phase[1] = t2 - t1; /* backward */
    b->phase[2] = cli_now() - t2; /* optimizer step, zero_grad, step end */
    return rc;
}

static int bench_usage(int status)
{
    printf("usage: bitgrad bench --workload mlp|lm|lora|matvec|matmat [--steps 20] [--threads N]\n"
           "                     [--isa best|scalar|avx2|avx512bw|avx512vnni] [--copies N]\n"
           "  mlp: W1 BitLinear 784-1024-1024-10, batch 256, AdamW\n"
           "  lm: W2 bitnet LM (256 vocab, n_embd 256, 4 layers, n_ff 768), batch 16x128, AdamW\n"
           "  lora: W3 = W2 frozen, LoRA r 8 alpha 16 on q, k, v, o\n"
           "  lora-large: W5 bitnet_b1_58-large's shape (vocab 32000, n_embd 1536, 24 layers,\n"
           "              16 heads, n_ff 4096), random ternary base packed and frozen, LoRA r 16\n"
           "              alpha 32 on all 7 projections, batch 1 x --seq (512) tokens, AdamW;\n"
           "              --recompute: activation recomputation per block\n"
           "  lora-3b: the same at bitnet_b1_58-3B's shape (3200, 26 layers, 32 heads, n_ff 8640)\n"
           "           lora-*: --layers N overrides the depth, --warmup N the untimed steps (1)\n"
           "  matvec / matmat: W4 ternary 4096x14336 (2-bit packed) times int8, 1 / 512 columns;\n"
           "                   --isa picks the kernel (default: the best this CPU has); --copies N\n"
           "                   cycles N weight copies (default 8 for matvec: weights come from DRAM,\n"
           "                   not L3); also prints the weight bytes/s against a measured read rate\n");
    return status;
}

int cmd_bench(int argc, char **argv)
{
    const char *w = NULL, *ss = "20", *ts = NULL, *is = "best", *cs = NULL, *qs = "512", *ls = NULL,
               *ws = NULL;
    int bad = 0;
    bool recompute = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag(argv, i, "--help")) return bench_usage(0);
        if (cli_flag(argv, i, "--recompute")) {
            recompute = true;
            continue;
        }
        if (!cli_opt(argc, argv, &i, "--workload", &w, &bad) && !cli_opt(argc, argv, &i, "--steps", &ss, &bad) &&
            !cli_opt(argc, argv, &i, "--threads", &ts, &bad) && !cli_opt(argc, argv, &i, "--isa", &is, &bad) &&
            !cli_opt(argc, argv, &i, "--copies", &cs, &bad) && !cli_opt(argc, argv, &i, "--seq", &qs, &bad) &&
            !cli_opt(argc, argv, &i, "--layers", &ls, &bad) && !cli_opt(argc, argv, &i, "--warmup", &ws, &bad))
            return cli_fail(2, "bench: unknown argument %s", argv[i]);
    }
    long long steps, threads = 0, copies = 0, seq = 512, layers = 0, warmup = -1;
    if (bad || !w) return bench_usage(2);
    if (!cli_int("--steps", ss, 1, 100000, &steps) || (ts && !cli_int("--threads", ts, 1, 1024, &threads)) ||
        (cs && !cli_int("--copies", cs, 1, 64, &copies)) || !cli_int("--seq", qs, 2, 1 << 16, &seq) ||
        (ls && !cli_int("--layers", ls, 1, 1000, &layers)) || (ws && !cli_int("--warmup", ws, 0, 100, &warmup)))
        return 2;
    if (threads) omp_set_num_threads((int)threads);
    bench b = { .isa = BG_ISA_COUNT };
    for (int i = BG_ISA_BEST; i < BG_ISA_COUNT; i++)
        if (strcmp(is, bg_isa_name((bg_isa)i)) == 0) b.isa = (bg_isa)i;
    if (b.isa == BG_ISA_COUNT) return cli_fail(2, "bench: unknown --isa '%s'", is);
    if (!bg_isa_supported(b.isa)) return cli_fail(1, "bench: this CPU cannot run %s", is);
    if (b.isa == BG_ISA_BEST) b.isa = bg_isa_best();
    b.copies = copies ? (int)copies : (strcmp(w, "matvec") == 0 ? 8 : 1);
    if (bg_ctx_create(&b.ctx, BG_CPU)) return cli_fail(1, "out of memory");
    bg_ctx_seed(b.ctx, 1);
    int rc;
    if (strcmp(w, "mlp") == 0) rc = setup_mlp(&b);
    else if (strcmp(w, "lm") == 0 || strcmp(w, "lora") == 0) rc = setup_lm(&b, strcmp(w, "lora") == 0);
    else if (strcmp(w, "lora-large") == 0 || strcmp(w, "lora-3b") == 0)
        rc = setup_lora_large(&b, strcmp(w, "lora-3b") == 0, (int)seq, recompute, (int)layers);
    else if (strcmp(w, "matvec") == 0 || strcmp(w, "matmat") == 0) rc = setup_matvec(&b, strcmp(w, "matvec") == 0 ? 1 : 512);
    else rc = cli_fail(2, "bench: unknown workload '%s'", w);
    if (!rc && b.model) {
        bg_optim_config oc = bg_optim_default(BG_ADAMW);
        b.opt = bg_optim_new(b.ctx, &oc);
        rc = b.opt && bg_optim_add_module(b.opt, b.model) > 0 ? 0 : 1;
    }
    double *ms = malloc((size_t)(5 * steps) * sizeof(double)), *ph = ms ? ms + steps : NULL;
    double *cpu = ms ? ms + 4 * steps : NULL;
    if (!ms) rc = cli_fail(1, "out of memory");
    int warm = warmup >= 0 ? (int)warmup : (strncmp(w, "lora-", 5) == 0 ? 1 : 3);
    double t_setup = cli_now();
    for (int i = 0; !rc && i < warm; i++) rc = step(&b, w); /* warm-up */
    t_setup = cli_now() - t_setup;
    bg_ctx_stats st0, st1;
    uint64_t sink = 0;
    bg_ctx_stats_get(b.ctx, &st0);
    for (long long i = 0; !rc && i < steps; i++) {
        double t0 = cli_now(), c0 = cpu_now();
        rc = step(&b, w);
        ms[i] = 1e3 * (cli_now() - t0);
        cpu[i] = 1e3 * (cpu_now() - c0);
        for (int k = 0; k < 3; k++) ph[k * steps + i] = 1e3 * b.phase[k];
        /* W4: a read of the same size right after each product, so both see the same machine
         * (this VM's read rate drifts by a third from minute to minute) */
        if (b.probe) ph[i] = 1e3 * probe_pass(&b, (b.next + b.copies / 2) % b.copies, &sink);
    }
    struct rusage ru; /* peak RSS of the workload, before the rate probes below allocate */
    getrusage(RUSAGE_SELF, &ru);
    if (!rc) {
        qsort(ms, (size_t)steps, sizeof(double), cmp_double);
        double med = ms[steps / 2], per = strcmp(w, "mlp") == 0 ? 256 : (b.model ? 16 * 128 : (double)b.cols);
        if (strncmp(w, "lora-", 5) == 0) per = (double)b.T;
        char w4[640] = "";
        bg_ctx_stats_get(b.ctx, &st1);
        if (b.model) { /* the GEMM floor: this step's matmul FLOPs at the sgemm rate */
            for (int k = 0; k < 3; k++) qsort(ph + k * steps, (size_t)steps, sizeof(double), cmp_double);
            double gf = (double)(st1.matmul_flops - st0.matmul_flops) / (double)steps / 1e9;
            double rate = sgemm_gflops(), floor_ms = rate > 0 ? 1e3 * gf / rate : 0.0;
            double mib = 1024.0 * 1024.0;
            snprintf(w4, sizeof w4, ", \"forward_ms\": %.3f, \"backward_ms\": %.3f, \"optimizer_ms\": %.3f, "
                     "\"gemm_gflop_per_step\": %.3f, \"sgemm_gflops\": %.1f, "
                     "\"gemm_floor_ms\": %.3f, \"gemm_floor_fraction\": %.3f, \"persistent_mib\": %.1f, "
                     "\"pool_mib\": %.1f, \"arena_high_water_mib\": %.1f", ph[steps / 2],
                     ph[steps + steps / 2], ph[2 * steps + steps / 2], gf, rate, floor_ms,
                     floor_ms / med, (double)st1.persistent_bytes / mib, (double)st1.pool_bytes / mib,
                     (double)st1.arena_high_water / mib);
        }
        if (strncmp(w, "lora-", 5) == 0) {
            size_t len = strlen(w4);
            qsort(cpu, (size_t)steps, sizeof(double), cmp_double);
            snprintf(w4 + len, sizeof w4 - len, ", \"cpu_ms\": %.1f, \"seq\": %d, \"layers\": %lld, \"recompute\": %s, "
                     "\"warmup_ms\": %.1f, \"pool_high_water_mib\": %.1f", cpu[steps / 2], b.T,
                     (long long)bg_bitnet_get_config(b.model)->n_layer, recompute ? "true" : "false",
                     1e3 * t_setup, (double)st1.pool_high_water / 1048576.0);
        }
        if (b.tw) {
            qsort(ph, (size_t)steps, sizeof(double), cmp_double);
            double bytes = (double)bg_tmat_nbytes(b.tw[0]), gbs = bytes / (med / 1e3) / 1e9;
            double rd = sink ? bytes / (ph[steps / 2] / 1e3) / 1e9 : 0.0, rd_best = read_bandwidth();
            snprintf(w4, sizeof w4, ", \"isa\": \"%s\", \"copies\": %d, \"weight_gb_per_s\": %.2f, "
                     "\"read_gb_per_s\": %.2f, \"bandwidth_fraction\": %.3f, \"read_512mib_best_gb_per_s\": %.2f",
                     bg_isa_name(b.isa), b.copies, gbs, rd, rd > 0 ? gbs / rd : 0.0, rd_best);
        }
        printf("{\"workload\": \"%s\", \"steps\": %lld, \"threads\": %d, \"median_ms\": %.3f, "
               "\"min_ms\": %.3f, \"max_ms\": %.3f, \"%s_per_s\": %.1f, \"peak_rss_mib\": %.1f%s}\n",
               w, steps, omp_get_max_threads(), med, ms[0], ms[steps - 1],
               strcmp(w, "mlp") == 0 ? "samples" : (b.model ? "tokens" : "columns"), per / (med / 1e3),
               (double)ru.ru_maxrss / 1024.0, w4);
    } else if (b.ctx) {
        cli_fail(1, "bench: %s", bg_ctx_error(b.ctx));
    }
    free(ms);
    free(b.x);
    free(b.ids);
    free(b.tg);
    free(b.codes);
    free(b.lx);
    free(b.s_x);
    free(b.y);
    for (int c = 0; b.tw && c < b.copies; c++) bg_tmat_free(&b.tw[c]);
    for (int c = 0; b.probe && c < b.copies; c++) free(b.probe[c]);
    free(b.probe);
    free(b.tw);
    bg_optim_free(&b.opt);
    bg_module_free(&b.model);
    bg_ctx_free(&b.ctx);
    return rc ? 1 : 0;
}
