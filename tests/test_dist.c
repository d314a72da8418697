/* test_dist.c - data-parallel training against one process (run by tests/run_mpi.sh under
 * `mpirun -np 2`; as a plain process it exits 77).
 *
 * (a) Every rank trains the one-process reference itself (the whole global batch of B rows,
 *     no group), then the same 10 AdamW steps data-parallel (each rank B/2 rows, gradients
 *     averaged in buckets during backward). The first step's loss must agree within 1e-6
 *     relative and its averaged gradients within 1e-5 of the largest: that is what the global
 *     batch means, and they differ only by the summation order (one GEMM over B rows vs two
 *     over B/2). Over the 10 steps the group is compared exactly, against one process that
 *     runs the ranks' arithmetic itself (both slices as micro-batches, gradients weighted and
 *     added in rank order): it must give those bits. Against the one-batch run the later
 *     steps are printed, not asserted: AdamW's normalised update turns the order difference
 *     into ~1e-5 of the parameters, and once an activation lands on the other side of an int8
 *     rounding boundary the trajectories part (with the data here the LoRA run's loss
 *     difference jumps from 3e-8 to 3e-6 at step 3 and reaches 1.2e-4; a different order of
 *     the same sums in BitLinear's dX was enough to move that step).
 * (b) Two data-parallel runs write byte-identical checkpoints.
 * (c) A checkpoint of a 2-rank run, resumed by one process, continues the one-process run.
 * (d) A NaN gradient, or a backward that never ran, on one rank: every rank skips the step.
 * The model is W2's (the bitnet graph, BitLinear projections, AdamW) on a smaller shape;
 * the LoRA run wraps q, k, v, o of it. Targets of the first positions of each row are
 * ignored, unequally per rank, so the token weighting of the average is exercised. */
#include <unistd.h>

#include "bitgrad.h"
#include "harness.h"

#define STEPS 10
#define GLOBAL_B 4
#define SEQ 24
#define IGNORE (-1)

static bg_dist *g_dist;

typedef struct run {
    bg_ctx *ctx;
    bg_module *m;
    bg_optim *o;
    float *grad0; /* the first step's gradients, as the optimizer used them */
    int64_t ng;
} run;

typedef struct trace {
    double loss[STEPS];
    float *params, *grad0;
    int64_t n, ng;
} trace;

static bg_bitnet_config w2_small(void)
{
    bg_bitnet_config c = bg_bitnet_default();
    c.n_vocab = 256;
    c.n_embd = 64;
    c.n_layer = 2;
    c.n_head = c.n_head_kv = 4;
    c.n_ff = 192;
    c.n_ctx = SEQ;
    c.bitlinear = true;
    return c;
}

static const char *const QKVO[] = { "blk.*.attn_q", "blk.*.attn_k", "blk.*.attn_v",
                                    "blk.*.attn_output" };

/* A model and AdamW; with d, its ranks start from different seeds and rank 0's parameters
 * are broadcast (so the test also shows the broadcast works). */
static bool run_new(run *r, bool lora, bg_dist *d)
{
    memset(r, 0, sizeof *r);
    if (bg_ctx_create(&r->ctx, BG_CPU)) return false;
    bg_ctx_seed(r->ctx, 1234 + (uint64_t)bg_dist_rank(d) * 77);
    bg_bitnet_config c = w2_small();
    r->m = bg_bitnet_new(r->ctx, &c);
    if (!r->m) return false;
    bg_bitnet_init(r->m, 0.05f);
    if (lora) {
        bg_lora_config lc = bg_lora_default();
        lc.rank = 4;
        lc.alpha = 8.0f;
        lc.targets = QKVO;
        lc.n_targets = 4;
        if (bg_lora_add(r->m, "default", &lc) <= 0) return false;
        /* B starts at zero; give it values so every adapter tensor gets a gradient at once */
        bg_tensor *ab[32];
        int n = bg_lora_params(r->m, "default", ab, 32);
        for (int i = 0; i < n; i++) {
            float *p = bg_tensor_data(ab[i]);
            for (int64_t k = 0; k < bg_tensor_numel(ab[i]); k++)
                if (p[k] == 0.0f) p[k] = 0.01f * (float)((k * 7 + i) % 11 - 5);
        }
    }
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    oc.lr = 1e-3f; /* AdamW's default (torch's), and bitgrad train's */
    r->o = bg_optim_new(r->ctx, &oc);
    if (!r->o || bg_optim_add_module(r->o, r->m) <= 0) return false;
    if (d && (bg_dist_broadcast_module(d, r->m) || bg_optim_set_dist(r->o, d))) return false;
    return true;
}

static void run_free(run *r)
{
    free(r->grad0);
    bg_optim_free(&r->o);
    bg_module_free(&r->m);
    bg_ctx_free(&r->ctx);
}

/* Global batch of step s: GLOBAL_B rows of SEQ + 1 tokens. Targets of a few positions are
 * ignored, more in the first rows, so the ranks hold different numbers of tokens. */
static void global_batch(int64_t s, int32_t *in, int32_t *tg)
{
    uint64_t x = 0x9e3779b97f4a7c15ull ^ (uint64_t)s * 1000003u;
    for (int b = 0; b < GLOBAL_B; b++)
        for (int t = 0; t < SEQ; t++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            in[b * SEQ + t] = (int32_t)((x >> 33) % 97 + (uint64_t)(b * 13 % 50));
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            tg[b * SEQ + t] = (int32_t)((x >> 33) % 97 + (uint64_t)t % 7);
            if (t < 5 - b) tg[b * SEQ + t] = IGNORE;
        }
}

/* The gradients the optimizer just stepped on, in its parameter order. */
static void keep_grads(run *r)
{
    int np = bg_optim_n_params(r->o);
    int64_t n = 0;
    for (int i = 0; i < np; i++) n += bg_tensor_numel(bg_optim_param(r->o, i));
    free(r->grad0);
    r->grad0 = calloc((size_t)n, sizeof(float));
    r->ng = n;
    for (int i = 0, off = 0; r->grad0 && i < np; i++) {
        bg_tensor *p = bg_optim_param(r->o, i);
        bg_tensor *g = bg_tensor_grad(p);
        if (g) memcpy(r->grad0 + off, bg_tensor_data(g), (size_t)bg_tensor_numel(p) * sizeof(float));
        off += (int)bg_tensor_numel(p);
    }
}

/* One step on this rank's slice (all of it without d). Returns the global mean loss, or NAN
 * when the step refused; *rc gets the optimizer's code. */
static double train_step(run *r, bg_dist *d, int64_t s, int *rc)
{
    int32_t in[GLOBAL_B * SEQ], tg[GLOBAL_B * SEQ];
    global_batch(s, in, tg);
    int64_t b0, nb;
    bg_dist_slice(d, GLOBAL_B, &b0, &nb);
    int64_t counted = 0;
    for (int64_t k = b0 * SEQ; k < (b0 + nb) * SEQ; k++) counted += tg[k] != IGNORE;
    if (d) bg_dist_set_weight(d, (double)counted);
    int64_t shape[2] = { nb, SEQ };
    bg_tensor *x = bg_from_data(r->ctx, BG_I32, 2, shape, in + b0 * SEQ);
    bg_tensor *y = bg_from_data(r->ctx, BG_I32, 2, shape, tg + b0 * SEQ);
    bg_tensor *loss = bg_cross_entropy(bg_bitnet_forward(r->m, x), y, IGNORE, 0.0f);
    double lv = loss ? bg_item(loss) : NAN;
    int brc = loss ? bg_backward(loss) : BG_EINVAL;
    *rc = bg_optim_step(r->o);
    if (!*rc && brc) *rc = brc;
    if (s == 0) keep_grads(r);
    bg_optim_zero_grad(r->o);
    bg_step_end(r->ctx);
    return d ? bg_dist_mean(d, lv) : lv;
}

/* One process doing what two ranks do: each rank's slice as a micro-batch, its gradients
 * times its weight / the total (rounded to float, as the ranks pack them) and added in rank
 * order, the loss averaged with the same weights. */
static double emulated_step(run *r, int64_t s, int *rc)
{
    int32_t in[GLOBAL_B * SEQ], tg[GLOBAL_B * SEQ];
    global_batch(s, in, tg);
    int np = bg_optim_n_params(r->o);
    float **acc = calloc((size_t)np, sizeof *acc);
    double counted[2] = { 0, 0 }, loss[2] = { 0, 0 };
    for (int k = 0; k < GLOBAL_B * SEQ; k++) counted[k / (GLOBAL_B / 2 * SEQ)] += tg[k] != IGNORE;
    double total = counted[0] + counted[1];
    for (int rank = 0; rank < 2; rank++) {
        int64_t b0 = rank * (GLOBAL_B / 2), shape[2] = { GLOBAL_B / 2, SEQ };
        bg_tensor *x = bg_from_data(r->ctx, BG_I32, 2, shape, in + b0 * SEQ);
        bg_tensor *y = bg_from_data(r->ctx, BG_I32, 2, shape, tg + b0 * SEQ);
        bg_tensor *l = bg_cross_entropy(bg_bitnet_forward(r->m, x), y, IGNORE, 0.0f);
        loss[rank] = l ? bg_item(l) : NAN;
        if (l) bg_backward(l);
        float w = (float)(counted[rank] / total);
        for (int i = 0; i < np; i++) {
            bg_tensor *p = bg_optim_param(r->o, i);
            int64_t n = bg_tensor_numel(p);
            const float *g = bg_tensor_data(bg_tensor_grad(p));
            if (!acc[i]) acc[i] = calloc((size_t)n, sizeof(float));
            for (int64_t e = 0; e < n; e++) {
                float v = w == 1.0f ? g[e] : g[e] * w;
                acc[i][e] = rank == 0 ? v : acc[i][e] + v;
            }
        }
        bg_optim_zero_grad(r->o);
        bg_step_end(r->ctx);
    }
    for (int i = 0; i < np; i++) {
        bg_tensor *p = bg_optim_param(r->o, i);
        memcpy(bg_tensor_data(bg_tensor_grad(p)), acc[i],
               (size_t)bg_tensor_numel(p) * sizeof(float));
        free(acc[i]);
    }
    free(acc);
    *rc = bg_optim_step(r->o);
    bg_optim_zero_grad(r->o);
    return counted[0] / total * loss[0] + counted[1] / total * loss[1];
}

static float *all_params(bg_module *m, int64_t *n_out)
{
    int np = bg_module_n_params(m);
    int64_t n = 0;
    for (int i = 0; i < np; i++) n += bg_tensor_numel(bg_module_param(m, i));
    float *out = malloc((size_t)n * sizeof *out);
    int64_t off = 0;
    for (int i = 0; i < np; i++) {
        bg_tensor *t = bg_module_param(m, i);
        memcpy(out + off, bg_tensor_data(t), (size_t)bg_tensor_numel(t) * sizeof *out);
        off += bg_tensor_numel(t);
    }
    *n_out = n;
    return out;
}

/* Trains steps [from, to) of r, recording the losses (emulate: emulated_step). */
static bool train_as(run *r, bg_dist *d, bool emulate, int64_t from, int64_t to, trace *tr)
{
    for (int64_t s = from; s < to; s++) {
        int rc = 0;
        tr->loss[s] = emulate ? emulated_step(r, s, &rc) : train_step(r, d, s, &rc);
        if (!CHECK(rc == 0, "step %lld: %s", (long long)s, bg_ctx_error(r->ctx))) return false;
    }
    tr->params = all_params(r->m, &tr->n);
    if (from == 0) {
        tr->grad0 = r->grad0;
        tr->ng = r->ng;
        r->grad0 = NULL;
    }
    return true;
}

static bool train(run *r, bg_dist *d, int64_t from, int64_t to, trace *tr)
{
    return train_as(r, d, false, from, to, tr);
}

/* Loss at every step within 1e-5 relative and the parameters within param_tol (< 0: only
 * printed); or, with first_only, the first step's loss within 1e-6 and its gradients within
 * 1e-5 of the largest, the later steps printed (see (a) above). */
static void compare(const char *what, const trace *ref, const trace *got, int64_t from,
                    double param_tol, bool first_only)
{
    double worst = 0.0;
    for (int s = (int)from; s < STEPS; s++) {
        double rel = fabs(got->loss[s] - ref->loss[s]) / fabs(ref->loss[s]);
        if (rel > worst) worst = rel;
        if (!first_only || s == from)
            CHECK(rel <= (first_only ? 1e-6 : 1e-5), "%s: step %d loss %.9g vs one process %.9g "
                  "(rel %.3g)", what, s, got->loss[s], ref->loss[s], rel);
    }
    double maxd = 0.0, maxref = 0.0, gd = 0.0, gref = 0.0;
    for (int64_t i = 0; i < ref->n; i++) {
        double dd = fabs((double)got->params[i] - ref->params[i]);
        if (dd > maxd) maxd = dd;
        if (fabs(ref->params[i]) > maxref) maxref = fabs(ref->params[i]);
    }
    bool grads = first_only && ref->grad0 && got->grad0 && ref->ng == got->ng;
    for (int64_t i = 0; grads && i < ref->ng; i++) {
        double dd = fabs((double)got->grad0[i] - ref->grad0[i]);
        if (dd > gd) gd = dd;
        if (fabs(ref->grad0[i]) > gref) gref = fabs(ref->grad0[i]);
    }
    if (bg_dist_is_root(g_dist))
        printf("  %s: max loss rel diff %.3g over steps %lld..%d; params max |diff| %.3g "
               "(max |param| %.3g)\n",
               what, worst, (long long)from, STEPS - 1, maxd, maxref);
    CHECK(got->n == ref->n, "%s: parameter counts differ", what);
    if (param_tol >= 0.0) CHECK(maxd <= param_tol, "%s: final params differ by %.3g", what, maxd);
    if (first_only) {
        if (bg_dist_is_root(g_dist))
            printf("  %s: first step: loss rel diff %.3g, averaged gradients max |diff| %.3g "
                   "(max |grad| %.3g)\n", what,
                   fabs(got->loss[from] - ref->loss[from]) / fabs(ref->loss[from]), gd, gref);
        CHECK(grads && gd <= 1e-5 * gref,
              "%s: first step's averaged gradients differ by %.3g (max %.3g)", what, gd, gref);
    }
}

static bool bitwise_same(const trace *a, const trace *b)
{
    return a->n == b->n && memcmp(a->loss, b->loss, sizeof a->loss) == 0 &&
           memcmp(a->params, b->params, (size_t)a->n * sizeof(float)) == 0;
}

static void test_equivalence(bool lora)
{
    const char *what = lora ? "LoRA r4 on q,k,v,o" : "W2 (small) full QAT";
    run r1, r2;
    trace ref = { 0 }, emu = { 0 }, got = { 0 };
    if (!CHECK(run_new(&r1, lora, NULL), "reference setup")) return;
    train(&r1, NULL, 0, STEPS, &ref);
    run_free(&r1);
    if (!CHECK(run_new(&r1, lora, NULL), "emulation setup")) return;
    train_as(&r1, NULL, true, 0, STEPS, &emu);
    run_free(&r1);
    if (!CHECK(run_new(&r2, lora, g_dist), "dist setup")) return;
    if (train(&r2, g_dist, 0, STEPS, &got)) {
        compare(what, &ref, &got, 0, -1.0, true);
        bool same = bitwise_same(&emu, &got);
        CHECK(same, "%s: 2 ranks differ from one process running both slices", what);
        if (bg_dist_is_root(g_dist))
            printf("  %s: 2 ranks vs one process running both slices as micro-batches: %s\n", what,
                   same ? "bit-identical losses and parameters" : "DIFFERENT");
    }
    bg_dist_stats st = bg_dist_get_stats(g_dist);
    if (bg_dist_is_root(g_dist))
        printf("  %s: %lld buckets, %lld bytes all-reduced per step, %lld of %lld buckets "
               "started during backward\n",
               what, (long long)st.buckets, (long long)st.bytes_per_step,
               (long long)st.early_buckets, (long long)(st.buckets * st.steps));
    CHECK(st.early_buckets > 0, "some buckets started during backward");
    run_free(&r2);
    free(ref.params);
    free(emu.params);
    free(got.params);
    free(ref.grad0);
    free(emu.grad0);
    free(got.grad0);
}

static char g_dir[256];

static bool file_bytes(const char *path, unsigned char **buf, long *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = malloc((size_t)*n + 1);
    bool ok = *buf && fread(*buf, 1, (size_t)*n, f) == (size_t)*n;
    fclose(f);
    return ok;
}

/* Trains `steps` data-parallel steps and has rank 0 write a checkpoint. */
static bool dist_checkpoint(const char *path, int64_t steps)
{
    run r;
    trace tr = { 0 };
    bool ok = run_new(&r, false, g_dist) && train(&r, g_dist, 0, steps, &tr);
    char err[256] = "";
    if (ok && bg_dist_is_root(g_dist))
        ok = CHECK(bg_checkpoint_save(path, r.m, r.o, NULL, err, sizeof err) == 0, "save: %s", err);
    free(tr.params);
    free(tr.grad0);
    run_free(&r);
    ok = bg_dist_sum(g_dist, ok ? 0.0 : 1.0) == 0.0; /* also a barrier: the file is complete */
    return ok;
}

static void test_determinism(void)
{
    char a[300], b[300];
    snprintf(a, sizeof a, "%s/run_a.gguf", g_dir);
    snprintf(b, sizeof b, "%s/run_b.gguf", g_dir);
    if (!CHECK(dist_checkpoint(a, STEPS) && dist_checkpoint(b, STEPS), "two 2-rank runs")) return;
    if (!bg_dist_is_root(g_dist)) return;
    unsigned char *x = NULL, *y = NULL;
    long nx = 0, ny = 0;
    bool same = file_bytes(a, &x, &nx) && file_bytes(b, &y, &ny) && nx == ny &&
                memcmp(x, y, (size_t)nx) == 0;
    CHECK(same, "two 2-rank runs wrote different checkpoints (%ld vs %ld bytes)", nx, ny);
    printf("  two 2-rank runs: checkpoints of %ld bytes, %s\n", nx,
           same ? "identical" : "DIFFERENT");
    free(x);
    free(y);
}

/* A 2-rank checkpoint at step 5 continued by one process is the one-process run. */
static void test_resume(void)
{
    char path[300];
    snprintf(path, sizeof path, "%s/half.gguf", g_dir);
    if (!CHECK(dist_checkpoint(path, STEPS / 2), "2-rank run to step 5")) return;
    run ref_run, one;
    trace ref = { 0 }, got = { 0 };
    if (!CHECK(run_new(&ref_run, false, NULL), "reference")) return;
    train(&ref_run, NULL, 0, STEPS, &ref);
    run_free(&ref_run);
    if (CHECK(run_new(&one, false, NULL), "one process")) {
        char err[256] = "";
        bg_checkpoint_state st;
        if (CHECK(bg_checkpoint_load(path, one.m, one.o, &st, err, sizeof err) == 0, "load: %s",
                  err) &&
            CHECK(st.step == STEPS / 2, "checkpoint at step %lld", (long long)st.step) &&
            train(&one, NULL, st.step, STEPS, &got))
            compare("2-rank checkpoint resumed by 1 process", &ref, &got, STEPS / 2, -1.0, false);
    }
    run_free(&one);
    free(ref.params);
    free(got.params);
    free(ref.grad0);
    free(got.grad0);
}

/* A NaN in one rank's gradient, or a rank whose backward failed: every rank refuses. */
static void test_nonfinite(void)
{
    run r;
    if (!CHECK(run_new(&r, false, g_dist), "setup")) return;
    int rc = 0;
    train_step(&r, g_dist, 0, &rc); /* gradients exist from here */
    CHECK(rc == 0, "first step: %s", bg_ctx_error(r.ctx));
    int64_t n0;
    float *before = all_params(r.m, &n0);
    for (int mode = 0; mode < 2; mode++) {
        int32_t in[GLOBAL_B * SEQ], tg[GLOBAL_B * SEQ];
        global_batch(1, in, tg);
        int64_t b0, nb;
        bg_dist_slice(g_dist, GLOBAL_B, &b0, &nb);
        bg_tensor *x = bg_from_data(r.ctx, BG_I32, 2, (int64_t[]){ nb, SEQ }, in + b0 * SEQ);
        bg_tensor *y = bg_from_data(r.ctx, BG_I32, 2, (int64_t[]){ nb, SEQ }, tg + b0 * SEQ);
        bg_tensor *loss = bg_cross_entropy(bg_bitnet_forward(r.m, x), y, IGNORE, 0.0f);
        bool odd = bg_dist_rank(g_dist) == 1;
        if (odd && mode == 0) { /* a NaN already in one gradient element of rank 1 */
            bg_tensor *p = bg_module_param(r.m, 3);
            ((float *)bg_tensor_data(bg_tensor_grad(p)))[1] = NAN;
        }
        if (!(odd && mode == 1)) bg_backward(loss); /* mode 1: rank 1 never ran backward */
        rc = bg_optim_step(r.o);
        CHECK(rc == BG_ENONFINITE, "mode %d rank %d: step returned %d, not BG_ENONFINITE", mode,
              bg_dist_rank(g_dist), rc);
        bg_ctx_clear_error(r.ctx);
        bg_optim_zero_grad(r.o);
        bg_step_end(r.ctx);
        int64_t n1;
        float *after = all_params(r.m, &n1);
        CHECK(n1 == n0 && memcmp(before, after, (size_t)n0 * sizeof *after) == 0,
              "mode %d: a parameter changed on rank %d", mode, bg_dist_rank(g_dist));
        free(after);
    }
    train_step(&r, g_dist, 2, &rc);
    CHECK(rc == 0, "a finite step after the refused ones: %s", bg_ctx_error(r.ctx));
    free(before);
    run_free(&r);
}

/* A group of one (BG_DIST=off: no MPI even under mpirun) finalized before its optimizer:
 * the optimizer forgets it and steps alone (ASan: nothing freed is touched). */
static void test_finalize_first(void)
{
    setenv("BG_DIST", "off", 1);
    bg_dist *d = NULL;
    run r;
    if (CHECK(bg_dist_init(&d, NULL, NULL) == 0 && bg_dist_world(d) == 1, "a world of one") &&
        CHECK(run_new(&r, false, d), "setup")) {
        int rc = 0;
        train_step(&r, d, 0, &rc);
        CHECK(rc == 0, "a step in a world of one: %s", bg_ctx_error(r.ctx));
        bg_dist_finalize(&d);
        train_step(&r, NULL, 1, &rc);
        CHECK(rc == 0, "a step after the group was finalized: %s", bg_ctx_error(r.ctx));
        run_free(&r);
    }
    unsetenv("BG_DIST");
}

/* A build without MPI: one process works as before, a launcher of several is refused. */
static int test_without_mpi(void)
{
    bg_dist *d = NULL;
    CHECK(bg_dist_init(&d, NULL, NULL) == 0 && bg_dist_world(d) == 1 && bg_dist_rank(d) == 0,
          "a world of one without MPI");
    int64_t s0, n;
    bg_dist_slice(d, 7, &s0, &n);
    CHECK(s0 == 0 && n == 7, "the whole batch");
    CHECK(bg_dist_mean(d, 2.5) == 2.5 && bg_dist_sum(d, 2.5) == 2.5, "means of one");
    bg_dist_finalize(&d);
    test_finalize_first();
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    CHECK(bg_dist_init(&d, NULL, NULL) == BG_EUNSUPPORTED && d == NULL,
          "under a launcher of 2 a build without MPI refuses");
    unsetenv("OMPI_COMM_WORLD_SIZE");
    return harness_summary();
}

int main(int argc, char **argv)
{
    if (!bg_dist_available()) return test_without_mpi();
    test_finalize_first();
    if (bg_dist_init(&g_dist, &argc, &argv)) return 1;
    if (bg_dist_world(g_dist) != 2) {
        printf("SKIP: run under mpirun -np 2 (tests/run_mpi.sh); world is %d\n",
               bg_dist_world(g_dist));
        bg_dist_finalize(&g_dist);
        return HARNESS_SKIP;
    }
    bg_dist_set_bucket_bytes(g_dist, 64 << 10); /* several buckets even on this small model */
    if (bg_dist_is_root(g_dist)) {
        snprintf(g_dir, sizeof g_dir, "%s/bg_dist_XXXXXX",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(g_dir)) g_dir[0] = 0;
    }
    if (bg_dist_is_root(g_dist))
        printf("(a) equivalence: 2 ranks x batch %d vs 1 process x %d, %d AdamW steps\n",
               GLOBAL_B / 2, GLOBAL_B, STEPS);
    test_equivalence(false);
    test_equivalence(true);
    if (bg_dist_is_root(g_dist)) printf("(b) determinism\n");
    test_determinism();
    if (bg_dist_is_root(g_dist)) printf("(c) resume a 2-rank checkpoint in one process\n");
    /* every rank needs the path: rank 1 reads rank 0's file after the barrier */
    {
        char tmp[256];
        memcpy(tmp, g_dir, sizeof tmp);
        if (bg_dist_rank(g_dist) != 0) memset(tmp, 0, sizeof tmp);
        for (size_t i = 0; i < sizeof tmp; i++) tmp[i] = (char)bg_dist_sum(g_dist, (double)tmp[i]);
        memcpy(g_dir, tmp, sizeof tmp);
    }
    test_resume();
    if (bg_dist_is_root(g_dist)) printf("(d) NaN on one rank / a failed backward: all skip\n");
    test_nonfinite();
    long fails = (long)bg_dist_sum(g_dist, (double)harness_failures());
    if (bg_dist_is_root(g_dist)) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (g_dir[0] && system(cmd)) printf("could not remove %s\n", g_dir);
    }
    int rc = harness_summary();
    bg_dist_finalize(&g_dist);
    return fails ? 1 : rc;
}
