/* test_checkpoint.c - suite 'io': training checkpoints (bitgrad/checkpoint.h).
 *
 * 1. Exact resume: a small bitnet model (BitLinear, 2 layers) trained 10 steps straight has
 *    bit-for-bit the parameters of one trained 5 steps, saved, destroyed with its ctx,
 *    rebuilt from another seed, loaded and trained 5 more (AdamW + cosine schedule + lambda
 *    warm-up; SGD with momentum + two-stage schedule + a frozen part).
 * 2. Bad files: truncated at many offsets, single-byte corruptions of the header, keys,
 *    tensor infos and data, a checkpoint of a model with other shapes, another optimizer:
 *    each load fails with a message and the model, optimizer and RNG are unchanged.
 *    A failed save leaves the previous file intact.
 * 3. State round trip: step, lambda, RNG, schedule, user string, lr/wd scales, requires_grad
 *    flags; the indexed names of moments of long parameter names; a non-bitnet model.
 * 4. Packed base: a LoRA model whose base is packed (bg_module_pack_frozen, F16 token_embd)
 *    trained 3 steps, saved (codes as I8 or TQ2_0, exact scales), loaded into a model rebuilt packed
 *    from another seed and trained 3 more: the losses and the adapters' values and moments
 *    equal bit for bit those of 6 uninterrupted steps.
 * Run: meson test -C build --suite io --print-errorlogs */
#include <sys/stat.h>
#include <unistd.h>

#include "bitgrad.h"
#include "bitgrad/gguf.h"
#include "harness.h"

#define S(...) ((const int64_t[]){ __VA_ARGS__ })
enum { BATCH = 2, SEQ = 16, N_FIRST = 5, N_TOTAL = 10 };

static char tmp_dir[] = "/tmp/bg_test_ckpt_XXXXXX";

static void tmp_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmp_dir, name);
}

/* ---- a training run ----------------------------------------------------------------------- */

typedef struct run {
    bg_ctx *ctx;
    bg_module *model;
    bg_optim *opt;
    bg_schedule sched;
} run;

static bg_bitnet_config small_cfg(int64_t n_ff)
{
    bg_bitnet_config c = bg_bitnet_default();
    c.n_vocab = 256;
    c.n_embd = 64;
    c.n_layer = 2;
    c.n_head = 4;
    c.n_head_kv = 2;
    c.n_ff = n_ff;
    c.n_ctx = 32;
    c.bitlinear = true;
    return c;
}

/* AdamW with a cosine schedule, or SGD (momentum) with the two-stage schedule and
 * `freeze` (a pattern, may be NULL) frozen before the optimizer is built. */
static bool run_setup(run *r, bg_optim_kind kind, uint64_t seed, const char *freeze, int64_t n_ff)
{
    memset(r, 0, sizeof *r);
    if (bg_ctx_create(&r->ctx, BG_CPU) != BG_OK) return false;
    bg_ctx_seed(r->ctx, seed);
    bg_bitnet_config c = small_cfg(n_ff);
    r->model = bg_bitnet_new(r->ctx, &c);
    if (!r->model) return false;
    if (freeze) bg_module_freeze(r->model, freeze);
    bg_optim_config oc = bg_optim_default(kind);
    if (kind == BG_ADAMW) {
        oc.lr = 3e-3f;
        oc.weight_decay = 0.1f;
        r->sched = (bg_schedule){
            .kind = BG_SCHED_COSINE, .warmup = 3, .total = N_TOTAL, .min_factor = 0.1f
        };
    } else {
        oc.lr = 0.05f;
        oc.momentum = 0.9f;
        oc.weight_decay = 1e-3f;
        r->sched = (bg_schedule){ .kind = BG_SCHED_TWO_STAGE,
                                  .warmup = 2,
                                  .total = N_TOTAL,
                                  .min_factor = 0.1f,
                                  .stage2_at = 0.5f,
                                  .stage2_factor = 0.5f };
    }
    r->opt = bg_optim_new(r->ctx, &oc);
    return r->opt && bg_optim_add_module(r->opt, r->model) > 0;
}

static void run_free(run *r)
{
    bg_optim_free(&r->opt);
    bg_module_free(&r->model);
    bg_ctx_free(&r->ctx);
}

/* Deterministic token batch of a step (independent of the library's RNG). */
static void batch_ids(int64_t step, int32_t *ids)
{
    uint64_t s = 0x1234u + (uint64_t)step * 7919u;
    for (int i = 0; i < BATCH * SEQ; i++) ids[i] = (int32_t)(harness_lcg(&s) % 256u);
}

static float lambda_at(int64_t step) { return bg_lambda_at(BG_LAMBDA_LINEAR, step + 1, 4); }

static bool train_step(run *r, int64_t step)
{
    int32_t ids[BATCH * SEQ];
    batch_ids(step, ids);
    bg_schedule_apply(&r->sched, r->opt, step);
    bg_module_set_lambda(r->model, lambda_at(step));
    bg_optim_zero_grad(r->opt);
    bg_tensor *t = bg_from_data(r->ctx, BG_I32, 2, S(BATCH, SEQ), ids);
    bg_tensor *loss = bg_bitnet_loss(r->model, t, -100);
    int rc = bg_backward(loss);
    if (rc == BG_OK) rc = bg_optim_step(r->opt);
    bg_step_end(r->ctx);
    return CHECK(rc == BG_OK, "train step %lld: %d %s", (long long)step, rc, bg_ctx_error(r->ctx));
}

/* All parameter values, then all optimizer moments (if any), concatenated. */
static float *snapshot(const run *r, int64_t *n_out)
{
    int64_t n = 0;
    int np = bg_module_n_params(r->model), no = r->opt ? bg_optim_n_params(r->opt) : 0;
    for (int i = 0; i < np; i++) n += bg_tensor_numel(bg_module_param(r->model, i));
    for (int i = 0; i < no; i++)
        for (int w = 0; w < 2; w++)
            if (bg_optim_state(r->opt, i, w)) n += bg_tensor_numel(bg_optim_state(r->opt, i, w));
    float *v = malloc((size_t)(n + 1) * sizeof *v);
    int64_t off = 0;
    for (int i = 0; v && i < np; i++) {
        bg_tensor *t = bg_module_param(r->model, i);
        bg_tensor_read(t, v + off);
        off += bg_tensor_numel(t);
    }
    for (int i = 0; v && i < no; i++)
        for (int w = 0; w < 2; w++) {
            bg_tensor *t = bg_optim_state(r->opt, i, w);
            if (!t) continue;
            bg_tensor_read(t, v + off);
            off += bg_tensor_numel(t);
        }
    *n_out = n;
    return v;
}

static int64_t n_param_values(const run *r)
{
    int64_t n = 0;
    for (int i = 0; i < bg_module_n_params(r->model); i++)
        n += bg_tensor_numel(bg_module_param(r->model, i));
    return n;
}

/* ---- 1. exact resume ---------------------------------------------------------------------- */

static void test_resume(bg_optim_kind kind, const char *freeze)
{
    const char *what = kind == BG_ADAMW ? "AdamW + cosine" : "SGD momentum + two-stage";
    printf("exact resume, %s%s%s\n", what, freeze ? ", frozen " : "", freeze ? freeze : "");
    char path[256];
    tmp_path(path, sizeof path, kind == BG_ADAMW ? "resume_adamw.gguf" : "resume_sgd.gguf");

    run a;
    if (!CHECK(run_setup(&a, kind, 42, freeze, 128), "setup A failed")) return;
    for (int64_t s = 0; s < N_TOTAL; s++) train_step(&a, s);
    int64_t na;
    float *want = snapshot(&a, &na);
    uint64_t rng_a = bg_ctx_rng_state(a.ctx);
    int64_t np_a = n_param_values(&a);

    run b;
    CHECK(run_setup(&b, kind, 42, freeze, 128), "setup B failed");
    for (int64_t s = 0; s < N_FIRST; s++) train_step(&b, s);
    bg_checkpoint_state st = bg_checkpoint_state_default();
    st.step = N_FIRST;
    st.lambda = lambda_at(N_FIRST - 1);
    st.has_schedule = true;
    st.schedule = b.sched;
    snprintf(st.user, sizeof st.user, "resume test %s", what);
    char err[512] = "";
    int rc = bg_checkpoint_save(path, b.model, b.opt, &st, err, sizeof err);
    CHECK(rc == BG_OK, "save: %d %s", rc, err);
    run_free(&b);

    /* Rebuilt from another seed: everything must come from the file. */
    CHECK(run_setup(&b, kind, 977, freeze, 128), "setup B' failed");
    bg_checkpoint_state got;
    memset(&got, 0xab, sizeof got);
    rc = bg_checkpoint_load(path, b.model, b.opt, &got, err, sizeof err);
    CHECK(rc == BG_OK, "load: %d %s", rc, err);
    CHECK(got.step == N_FIRST && got.has_schedule && got.schedule.kind == b.sched.kind &&
              got.schedule.total == N_TOTAL && strcmp(got.user, st.user) == 0 &&
              got.lambda == st.lambda,
          "state restored: step %lld, schedule %d, user '%s', lambda %g", (long long)got.step,
          (int)got.schedule.kind, got.user, (double)got.lambda);
    CHECK(bg_optim_steps(b.opt) == N_FIRST, "optimizer steps %lld",
          (long long)bg_optim_steps(b.opt));
    for (int64_t s = got.step; s < N_TOTAL; s++) train_step(&b, s);
    int64_t nb;
    float *have = snapshot(&b, &nb);
    if (CHECK(na == nb && want && have, "snapshot sizes %lld vs %lld", (long long)na,
              (long long)nb)) {
        check_bitwise("parameters after 5 + load + 5 steps vs 10", have, want, np_a);
        check_bitwise("optimizer moments", have + np_a, want + np_a, na - np_a);
        CHECK(memcmp(have, want, (size_t)na * sizeof(float)) == 0, "memcmp of everything");
    }
    CHECK(bg_ctx_rng_state(b.ctx) == rng_a, "ctx RNG state after the resumed run");
    if (freeze) {
        int n = bg_module_n_params(b.model);
        bool same = true;
        for (int i = 0; i < n; i++)
            same = same && bg_tensor_requires_grad(bg_module_param(b.model, i)) ==
                               bg_tensor_requires_grad(bg_module_param(a.model, i));
        CHECK(same, "requires_grad flags equal after the resume");
        /* A model built without freezing gets the saved flags from the file. */
        run c;
        CHECK(run_setup(&c, kind, 5, NULL, 128), "setup C failed");
        bg_optim_free(&c.opt);
        rc = bg_checkpoint_load(path, c.model, NULL, NULL, err, sizeof err);
        int frozen = 0;
        for (int i = 0; i < n; i++) {
            bool f = !bg_tensor_requires_grad(bg_module_param(c.model, i));
            frozen += f;
            same = same && f == !bg_tensor_requires_grad(bg_module_param(a.model, i));
        }
        CHECK(rc == BG_OK && same && frozen > 0,
              "load without optimizer restores %d frozen flags (%d %s)", frozen, rc, err);
        run_free(&c);
    }
    free(want);
    free(have);
    run_free(&a);
    run_free(&b);
}

/* ---- 4. packed base ------------------------------------------------------------------------ */

static bool packed_setup(run *r, uint64_t seed, int64_t n_embd)
{
    memset(r, 0, sizeof *r);
    if (bg_ctx_create(&r->ctx, BG_CPU) != BG_OK) return false;
    bg_ctx_seed(r->ctx, seed);
    bg_bitnet_config c = small_cfg(n_embd == 64 ? 128 : 256);
    c.n_embd = n_embd;
    r->model = bg_bitnet_new(r->ctx, &c);
    if (!r->model) return false;
    static const char *const targets[] = { "blk.*" };
    bg_lora_config lc = bg_lora_default();
    lc.rank = 4;
    lc.targets = targets;
    lc.n_targets = 1;
    if (bg_lora_add(r->model, "default", &lc) <= 0) return false;
    if (!CHECK(bg_module_pack_frozen(r->model) > 0, "pack: %s", bg_ctx_error(r->ctx)))
        return false;
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    oc.lr = 1e-2f;
    r->opt = bg_optim_new(r->ctx, &oc);
    r->sched = (bg_schedule){ .kind = BG_SCHED_COSINE, .warmup = 2, .total = 6 };
    return r->opt && bg_optim_add_module(r->opt, r->model) > 0;
}

static float packed_step(run *r, int64_t step)
{
    int32_t ids[BATCH * SEQ];
    batch_ids(step, ids);
    bg_schedule_apply(&r->sched, r->opt, step);
    bg_optim_zero_grad(r->opt);
    bg_tensor *t = bg_from_data(r->ctx, BG_I32, 2, S(BATCH, SEQ), ids);
    bg_tensor *loss = bg_bitnet_loss(r->model, t, -100);
    float lv = loss ? bg_item(loss) : NAN;
    int rc = loss ? bg_backward(loss) : BG_EINVAL;
    if (rc == BG_OK) rc = bg_optim_step(r->opt);
    bg_step_end(r->ctx);
    CHECK(rc == BG_OK, "packed step %lld: %d %s", (long long)step, rc, bg_ctx_error(r->ctx));
    return lv;
}

/* The optimizer's parameters and moments (the packed base has no readable values). */
static float *trainable_snapshot(const run *r, int64_t *n_out)
{
    int64_t n = 0;
    for (int i = 0; i < bg_optim_n_params(r->opt); i++)
        for (int w = -1; w < 2; w++) {
            bg_tensor *t = w < 0 ? bg_optim_param(r->opt, i) : bg_optim_state(r->opt, i, w);
            if (t) n += bg_tensor_numel(t);
        }
    float *v = malloc((size_t)(n + 1) * sizeof *v);
    int64_t off = 0;
    for (int i = 0; v && i < bg_optim_n_params(r->opt); i++)
        for (int w = -1; w < 2; w++) {
            bg_tensor *t = w < 0 ? bg_optim_param(r->opt, i) : bg_optim_state(r->opt, i, w);
            if (!t) continue;
            bg_tensor_read(t, v + off);
            off += bg_tensor_numel(t);
        }
    *n_out = n;
    return v;
}

/* n_embd 64: codes stored as I8; 256 (whole TQ2_0 blocks): as TQ2_0 with d = 1. */
static void test_resume_packed(int64_t n_embd)
{
    int want_type = n_embd % 256 ? BG_GGML_I8 : BG_GGML_TQ2_0;
    printf("exact resume with a packed base + LoRA, n_embd %lld (%s codes)\n", (long long)n_embd,
           bg_ggml_type_name(want_type));
    char path[256], err[512] = "";
    tmp_path(path, sizeof path, n_embd == 64 ? "resume_pk64.gguf" : "resume_pk256.gguf");
    run a, b;
    float la[6], lb[6];
    if (!CHECK(packed_setup(&a, 42, n_embd), "setup A: %s", a.ctx ? bg_ctx_error(a.ctx) : "")) return;
    for (int s = 0; s < 6; s++) la[s] = packed_step(&a, s);
    int64_t na, nb;
    float *want = trainable_snapshot(&a, &na);
    CHECK(packed_setup(&b, 42, n_embd), "setup B");
    for (int s = 0; s < 3; s++) lb[s] = packed_step(&b, s);
    int rc = bg_checkpoint_save(path, b.model, b.opt, NULL, err, sizeof err);
    CHECK(rc == BG_OK, "save of a packed model: %d %s", rc, err);
    run_free(&b);
    bg_gguf *g = NULL;
    if (CHECK(bg_gguf_open(&g, path, err, sizeof err) == BG_OK, "open: %s", err)) {
        int64_t ti = bg_gguf_find_tensor(g, "blk.0.attn_q.weight");
        int64_t si = bg_gguf_find_tensor(g, "blk.0.attn_q.weight.packed_scale");
        int64_t ei = bg_gguf_find_tensor(g, "token_embd.weight");
        CHECK(ti >= 0 && si >= 0 && ei >= 0 && bg_gguf_tensor_type(g, ti) == want_type &&
                  bg_gguf_tensor_type(g, si) == BG_GGML_F32,
              "the base is stored as %s codes + f32 scale (token_embd %s)", bg_ggml_type_name(want_type),
              ei >= 0 ? bg_ggml_type_name(bg_gguf_tensor_type(g, ei)) : "missing");
        bg_gguf_free(&g);
    }
    CHECK(packed_setup(&b, 977, n_embd), "setup B'");
    rc = bg_checkpoint_load(path, b.model, b.opt, NULL, err, sizeof err);
    CHECK(rc == BG_OK, "load into a packed model: %d %s", rc, err);
    CHECK(bg_module_find_packed(b.model) != NULL, "still packed after the load");
    for (int s = 3; s < 6; s++) lb[s] = packed_step(&b, s);
    for (int s = 0; s < 6; s++)
        CHECK(memcmp(&la[s], &lb[s], sizeof(float)) == 0, "loss %d: %.9g vs %.9g", s,
              (double)la[s], (double)lb[s]);
    float *have = trainable_snapshot(&b, &nb);
    if (CHECK(na == nb && want && have, "snapshot sizes %lld vs %lld", (long long)na,
              (long long)nb))
        CHECK(memcmp(have, want, (size_t)na * sizeof(float)) == 0,
              "adapters and moments bitwise after 3 + load + 3 steps vs 6");
    if (n_embd == 64) { /* an unpacked model refuses the packed checkpoint with a message */
        run c;
        CHECK(run_setup(&c, BG_ADAMW, 5, NULL, 128), "setup C");
        static const char *const targets[] = { "blk.*" };
        bg_lora_config lc = bg_lora_default();
        lc.rank = 4;
        lc.targets = targets;
        lc.n_targets = 1;
        bg_lora_add(c.model, "default", &lc);
        rc = bg_checkpoint_load(path, c.model, NULL, NULL, err, sizeof err);
        CHECK(rc != BG_OK && strstr(err, "model holds it as f32"), "unpacked model refuses: %d %s",
              rc, err);
        run_free(&c);
    }
    free(want);
    free(have);
    run_free(&a);
    run_free(&b);
}

/* ---- 2. bad files -------------------------------------------------------------------------- */

static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return b;
}

static bool write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* The target of every failing load: its values, moments, steps and RNG must not change. */
typedef struct victim {
    run r;
    float *before;
    int64_t n;
    uint64_t rng;
    int64_t steps;
} victim;

static void expect_rejected(victim *v, const char *label, const char *path, int want_rc)
{
    char err[512] = "";
    int rc = bg_checkpoint_load(path, v->r.model, v->r.opt, NULL, err, sizeof err);
    int64_t n;
    float *now = snapshot(&v->r, &n);
    bool same = now && n == v->n && memcmp(now, v->before, (size_t)n * sizeof(float)) == 0;
    same = same && bg_ctx_rng_state(v->r.ctx) == v->rng && bg_optim_steps(v->r.opt) == v->steps;
    bool rc_ok = want_rc ? rc == want_rc : rc < 0;
    CHECK(rc_ok && err[0] && same, "%s: rc %d (%s), message '%s', model unchanged %d", label, rc,
          bg_strerror(rc), err, same);
    printf("  %-40s -> %s\n", label, err);
    free(now);
}

static void corrupt_and_load(victim *v, const unsigned char *good, size_t n, size_t off,
                             unsigned char value, const char *label)
{
    char path[256];
    tmp_path(path, sizeof path, "corrupt.gguf");
    unsigned char *b = malloc(n);
    memcpy(b, good, n);
    b[off] = value;
    write_file(path, b, n);
    free(b);
    char l[128];
    snprintf(l, sizeof l, "%s (byte %zu)", label, off);
    expect_rejected(v, l, path, 0);
}

/* Offset of the first occurrence of k bytes s in the file, or 0. */
static size_t find_mem(const unsigned char *b, size_t n, const void *s, size_t k)
{
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(b + i, s, k) == 0) return i;
    return 0;
}

static size_t find_bytes(const unsigned char *b, size_t n, const char *s)
{
    return find_mem(b, n, s, strlen(s));
}

/* Offset of the name in the tensor info of a 2-D tensor (the name followed by n_dims = 2;
 * the same text earlier in the string arrays is followed by a string length instead). */
static size_t find_tensor_info(const unsigned char *b, size_t n, const char *name)
{
    unsigned char pat[BG_NAME_MAX + 4];
    size_t k = strlen(name);
    memcpy(pat, name, k);
    memcpy(pat + k, "\x02\0\0\0", 4);
    return find_mem(b, n, pat, k + 4);
}

static void test_truncations(victim *v, const unsigned char *good, size_t n, const char *good_path)
{
    bg_gguf *g = NULL;
    if (!CHECK(bg_gguf_open(&g, good_path, NULL, 0) == BG_OK, "reopen the good file")) return;
    int64_t last = bg_gguf_n_tensors(g) - 1;
    size_t data_end = (size_t)(bg_gguf_data_offset(g) + bg_gguf_tensor_offset(g, last) +
                               bg_gguf_tensor_nbytes(g, last));
    size_t data_off = (size_t)bg_gguf_data_offset(g);
    bg_gguf_free(&g);
    size_t cuts[] = {
        0,           3, 8, 23, 100, data_off / 2, data_off - 1, data_off + 7, n / 2, data_end - 4,
        data_end - 1
    };
    char path[256];
    tmp_path(path, sizeof path, "truncated.gguf");
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_file(path, good, cuts[i]);
        char l[64];
        snprintf(l, sizeof l, "truncated to %zu of %zu bytes", cuts[i], n);
        expect_rejected(v, l, path, 0);
    }
}

static void test_corruptions(victim *v, const unsigned char *good, size_t n, const char *good_path)
{
    corrupt_and_load(v, good, n, 0, 'X', "magic");
    corrupt_and_load(v, good, n, 4, 2, "version 2");
    corrupt_and_load(v, good, n, 15, 0x40, "tensor count");
    corrupt_and_load(v, good, n, 23, 0x40, "key count");
    size_t k = find_bytes(good, n, "bitgrad.step");
    corrupt_and_load(v, good, n, k, 'c', "key name bitgrad.step");
    /* The i32 type id after the key: I64 (11) -> U64 (10), same size, wrong type. */
    corrupt_and_load(v, good, n, k + strlen("bitgrad.step"), 10, "type of bitgrad.step");
    k = find_bytes(good, n, "bitgrad.tensor_checksums");
    corrupt_and_load(v, good, n, k + 3, 'X', "key name of the checksums");
    k = find_tensor_info(good, n, "blk.1.ffn_up.weight");
    CHECK(k > 0, "tensor info of blk.1.ffn_up.weight found");
    corrupt_and_load(v, good, n, k + 4, '7', "a tensor name");
    /* ne[0] of that tensor (after the name and the u32 n_dims): 64 -> 32. */
    corrupt_and_load(v, good, n, k + strlen("blk.1.ffn_up.weight") + 4, 32, "a tensor dimension");
    bg_gguf *g = NULL;
    if (bg_gguf_open(&g, good_path, NULL, 0) == BG_OK) {
        int64_t ti = bg_gguf_find_tensor(g, "blk.0.attn_v.weight");
        size_t off = (size_t)(bg_gguf_data_offset(g) + bg_gguf_tensor_offset(g, ti)) + 101;
        corrupt_and_load(v, good, n, off, (unsigned char)(good[off] ^ 0x01), "one data bit");
        ti = bg_gguf_n_tensors(g) - 1;
        off = (size_t)(bg_gguf_data_offset(g) + bg_gguf_tensor_offset(g, ti));
        corrupt_and_load(v, good, n, off, (unsigned char)(good[off] ^ 0x80), "a moment's sign");
        bg_gguf_free(&g);
    }
}

/* Failed saves report an error, and an existing checkpoint keeps its previous bytes. */
static void test_failed_saves(run *src, const unsigned char *good, size_t n, const char *good_path)
{
    char path[256], err[512];
    tmp_path(path, sizeof path, "no_such_dir/ckpt.gguf");
    int rc = bg_checkpoint_save(path, src->model, src->opt, NULL, err, sizeof err);
    CHECK(rc == BG_EIO && err[0] && access(path, F_OK) != 0,
          "save into a missing directory: %d '%s'", rc, err);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", good_path);
    mkdir(tmp, 0700); /* PATH.tmp cannot be created as a file */
    train_step(src, 2);
    rc = bg_checkpoint_save(good_path, src->model, src->opt, NULL, err, sizeof err);
    size_t n2 = 0;
    unsigned char *after = read_file(good_path, &n2);
    CHECK(rc == BG_EIO && after && n2 == n && memcmp(after, good, n) == 0,
          "failed save over an existing checkpoint leaves it intact: %d '%s'", rc, err);
    rmdir(tmp);
    free(after);
}

static void test_bad_files(void)
{
    printf("bad checkpoints are rejected and change nothing\n");
    char good_path[256], path[256], err[512];
    tmp_path(good_path, sizeof good_path, "good.gguf");
    run src;
    CHECK(run_setup(&src, BG_ADAMW, 3, NULL, 128), "setup source");
    for (int64_t s = 0; s < 2; s++) train_step(&src, s);
    int rc = bg_checkpoint_save(good_path, src.model, src.opt, NULL, err, sizeof err);
    CHECK(rc == BG_OK, "save good: %s", err);
    size_t n = 0;
    unsigned char *good = read_file(good_path, &n);
    if (!CHECK(good && n > 1000, "read back %zu bytes", n)) return;

    victim v;
    CHECK(run_setup(&v.r, BG_ADAMW, 11, NULL, 128), "setup victim");
    train_step(&v.r, 0);
    v.before = snapshot(&v.r, &v.n);
    v.rng = bg_ctx_rng_state(v.r.ctx);
    v.steps = bg_optim_steps(v.r.opt);

    test_truncations(&v, good, n, good_path);
    test_corruptions(&v, good, n, good_path);

    /* A checkpoint of a model with another n_ff. */
    run other;
    CHECK(run_setup(&other, BG_ADAMW, 3, NULL, 256), "setup other");
    tmp_path(path, sizeof path, "other_shape.gguf");
    CHECK(bg_checkpoint_save(path, other.model, other.opt, NULL, err, sizeof err) == BG_OK,
          "save other");
    expect_rejected(&v, "model with n_ff 256", path, BG_ESHAPE);
    run_free(&other);
    /* Another optimizer kind. */
    CHECK(run_setup(&other, BG_SGD, 3, NULL, 128), "setup sgd");
    train_step(&other, 0);
    tmp_path(path, sizeof path, "sgd.gguf");
    CHECK(bg_checkpoint_save(path, other.model, other.opt, NULL, err, sizeof err) == BG_OK,
          "save sgd");
    expect_rejected(&v, "SGD checkpoint into AdamW", path, BG_EINVAL);
    /* Saved without an optimizer, loaded with one. */
    CHECK(bg_checkpoint_save(path, other.model, NULL, NULL, err, sizeof err) == BG_OK, "save bare");
    expect_rejected(&v, "no optimizer in the file", path, BG_EINVAL);
    run_free(&other);
    /* A file that is not a checkpoint at all. */
    tmp_path(path, sizeof path, "empty.gguf");
    bg_gguf_writer *w = NULL;
    bg_gguf_writer_create(&w);
    bg_gguf_writer_set_str(w, "general.architecture", "bitnet");
    bg_gguf_writer_write(w, path, NULL, 0);
    bg_gguf_writer_free(&w);
    expect_rejected(&v, "a GGUF that is no checkpoint", path, BG_EFORMAT);
    tmp_path(path, sizeof path, "does_not_exist.gguf");
    expect_rejected(&v, "missing file", path, 0);

    /* Loading in the middle of a step (tape recorded) is refused. */
    int32_t ids[BATCH * SEQ];
    batch_ids(0, ids);
    bg_tensor *loss =
        bg_bitnet_loss(v.r.model, bg_from_data(v.r.ctx, BG_I32, 2, S(BATCH, SEQ), ids), -100);
    CHECK(loss != NULL, "forward");
    expect_rejected(&v, "during a step", good_path, BG_ESTATE);
    bg_step_end(v.r.ctx);
    /* And the good file does load. */
    rc = bg_checkpoint_load(good_path, v.r.model, v.r.opt, NULL, err, sizeof err);
    CHECK(rc == BG_OK && bg_optim_steps(v.r.opt) == 2, "the good file loads: %d %s", rc, err);
    free(v.before);
    run_free(&v.r);
    test_failed_saves(&src, good, n, good_path);
    free(good);
    run_free(&src);
}

/* ---- 3. state details ----------------------------------------------------------------------- */

/* A Sequential of Linear layers with a long name: moments get indexed names. */
static void test_generic_model(void)
{
    printf("non-bitnet model, Adam, long parameter names\n");
    bg_ctx *ctx = NULL;
    bg_ctx_create(&ctx, BG_CPU);
    const char *longname = "an_unusually_long_module_name_for_checkpoint_tests";
    bg_module *mods[3] = { bg_linear_new(ctx, longname, 8, 16, true), bg_relu_new(ctx),
                           bg_bitlinear_new(ctx, "head", 16, 4, false, NULL) };
    bg_module *m = bg_sequential_new(ctx, "", mods, 3);
    bg_optim_config oc = bg_optim_default(BG_ADAM);
    bg_optim *o = bg_optim_new(ctx, &oc);
    bg_optim_add_module(o, m);
    float xv[4 * 8];
    uint64_t s = 99;
    for (int i = 0; i < 32; i++) xv[i] = harness_uniform(&s, -1, 1);
    bg_tensor *y = bg_module_forward(m, bg_from_data(ctx, BG_F32, 2, S(4, 8), xv));
    bg_backward(bg_mean(bg_mul(y, y), BG_AXIS_ALL, false));
    bg_optim_step(o);
    bg_step_end(ctx);
    bg_module_set_lambda(m, 0.25f);
    bg_optim_set_lr_scale(o, 0.5f);
    bg_optim_set_wd_scale(o, 0.0f);
    char path[256], err[512];
    tmp_path(path, sizeof path, "generic.gguf");
    int rc = bg_checkpoint_save(path, m, o, NULL, err, sizeof err);
    CHECK(rc == BG_OK, "save: %s", err);
    bg_gguf *g = NULL;
    if (CHECK(bg_gguf_open(&g, path, NULL, 0) == BG_OK, "open")) {
        CHECK(bg_gguf_find_tensor(g, "optim.0.exp_avg_sq") >= 0 &&
                  bg_gguf_find_tensor(g, "optim.0.exp_avg") >= 0 &&
                  bg_gguf_find_tensor(g, "head.weight.exp_avg_sq") >= 0,
              "moment names: indexed for the long name, '<param>.exp_avg_sq' otherwise");
        bg_gguf_free(&g);
    }
    int64_t n = 0;
    run r = { .ctx = ctx, .model = m, .opt = o };
    float *want = snapshot(&r, &n);
    uint64_t rng = bg_ctx_rng_state(ctx);
    bg_module_init_normal(m, 0.5f); /* scramble, then restore */
    bg_module_set_lambda(m, 1.0f);
    bg_optim_set_lr_scale(o, 1.0f);
    bg_optim_set_steps(o, 7);
    bg_checkpoint_state st;
    rc = bg_checkpoint_load(path, m, o, &st, err, sizeof err);
    float *have = snapshot(&r, &n);
    CHECK(rc == BG_OK, "load: %s", err);
    check_bitwise("generic model parameters and moments", have, want, n);
    CHECK(st.step == 1 && st.lambda == 0.25f && !st.has_schedule && st.rng == rng &&
              bg_ctx_rng_state(ctx) == rng && bg_optim_steps(o) == 1 &&
              bg_linear_config(mods[2]).lambda == 0.25f && bg_optim_lr_scale(o) == 0.5f &&
              bg_optim_wd_scale(o) == 0.0f,
          "defaults: step %lld from the optimizer, lambda %g from the model, scales restored",
          (long long)st.step, (double)st.lambda);
    free(want);
    free(have);
    bg_optim_free(&o);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_resume(BG_ADAMW, NULL);
    test_resume(BG_SGD, "blk.0.attn_*");
    test_bad_files();
    test_generic_model();
    test_resume_packed(64);
    test_resume_packed(256);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) printf("could not remove %s\n", tmp_dir);
    return harness_summary();
}
