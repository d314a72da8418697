/* bench_dist.c - what data-parallel training costs on this machine (run as 2 MPI ranks:
 * tests/run_mpi.sh 2 build/bench/bench_dist, or meson's `dist` benchmark). One JSON line each:
 *
 *  - "train": W2 and W3 (bitgrad bench's lm and lora workloads: the bitnet LM of 256 vocab,
 *    n_embd 256, 4 layers, n_ff 768, global batch 16 x 128, AdamW; W3 with the base frozen and
 *    LoRA r 8 on q, k, v, o) trained data-parallel, 8 rows per rank: step time, gradient
 *    bytes all-reduced per step, the all-reduce's time measured alone on the same buckets,
 *    the part of it left after backward (exposed) and so the fraction that overlapped.
 *  - "allreduce": the loopback all-reduce alone (4 MiB buckets, MPI_Iallreduce then wait, as
 *    bitgrad issues them) for the gradient sizes of W5 (LoRA r 16 on the 7 projections of the
 *    740M shape: vocab 32000, n_embd 1536, 24 layers, 16 heads, n_ff 4096) and of a full QAT
 *    of that shape; the QAT size (2.9 GB) is timed on 256 MiB and scaled (bandwidth-bound).
 * Medians over rounds; never asserts. Overlap of W5/QAT and the N-machine model are
 * projections from these figures (bench/README.md). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitgrad.h"

#define ROUNDS 5

static double now(void) { return MPI_Wtime(); }

/* The group's communicator (bg_dist_comm keeps the MPI_Comm handle in a pointer). */
static MPI_Comm comm_of(const bg_dist *d)
{
    void *p = bg_dist_comm(d);
    MPI_Comm c;
    memset(&c, 0, sizeof c);
    memcpy(&c, &p, sizeof c < sizeof p ? sizeof c : sizeof p);
    return c;
}

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Seconds to all-reduce `bytes` of floats in buckets of 4 MiB (median of ROUNDS). */
static double allreduce_time(MPI_Comm comm, int64_t bytes)
{
    const int64_t bucket = (4 << 20) / 4;
    int64_t n = bytes / 4;
    float *buf = calloc((size_t)n, sizeof *buf);
    int64_t nb = (n + bucket - 1) / bucket;
    MPI_Request *req = malloc((size_t)nb * sizeof *req);
    double t[ROUNDS];
    for (int r = 0; r < ROUNDS && buf && req; r++) {
        MPI_Barrier(comm);
        double t0 = now();
        for (int64_t b = 0; b < nb; b++) {
            int64_t off = b * bucket, cnt = n - off < bucket ? n - off : bucket;
            MPI_Iallreduce(MPI_IN_PLACE, buf + off, (int)cnt, MPI_FLOAT, MPI_SUM, comm, &req[b]);
        }
        MPI_Waitall((int)nb, req, MPI_STATUSES_IGNORE);
        t[r] = now() - t0;
    }
    free(buf);
    free(req);
    return median(t, ROUNDS);
}

static void train(bg_dist *d, bool lora, int steps)
{
    bg_ctx *ctx;
    bg_ctx_create(&ctx, BG_CPU);
    bg_ctx_seed(ctx, 7);
    bg_bitnet_config c = bg_bitnet_default();
    bg_module *m = bg_bitnet_new(ctx, &c);
    if (lora) {
        static const char *t[] = { "blk.*.attn_q", "blk.*.attn_k", "blk.*.attn_v",
                                   "blk.*.attn_output" };
        bg_lora_config lc = bg_lora_default();
        lc.targets = t;
        lc.n_targets = 4;
        bg_lora_add(m, "default", &lc);
    }
    bg_optim_config oc = bg_optim_default(BG_ADAMW);
    bg_optim *o = bg_optim_new(ctx, &oc);
    bg_optim_add_module(o, m);
    bg_dist_broadcast_module(d, m);
    bg_optim_set_dist(o, d);
    const int B = 16, T = 128;
    int64_t b0, nb;
    bg_dist_slice(d, B, &b0, &nb);
    int32_t *ids = malloc((size_t)B * T * sizeof *ids), *tg = malloc((size_t)B * T * sizeof *tg);
    for (int i = 0; i < B * T; i++) {
        ids[i] = (int32_t)((i * 2654435761u) >> 24);
        tg[i] = (int32_t)((i * 40503u + 11) % 256);
    }
    double t[64];
    bg_dist_stats s0 = { 0 };
    for (int s = 0; s < steps + 2; s++) {
        if (s == 2) s0 = bg_dist_get_stats(d); /* two warm-up steps */
        MPI_Barrier(comm_of(d));
        double t0 = now();
        bg_tensor *x = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ nb, T }, ids + b0 * T);
        bg_tensor *y = bg_from_data(ctx, BG_I32, 2, (int64_t[]){ nb, T }, tg + b0 * T);
        bg_tensor *loss = bg_cross_entropy(bg_bitnet_forward(m, x), y, -1, 0.0f);
        bg_backward(loss);
        bg_optim_step(o);
        bg_optim_zero_grad(o);
        bg_step_end(ctx);
        if (s >= 2) t[s - 2] = now() - t0;
    }
    bg_dist_stats s1 = bg_dist_get_stats(d);
    double step = median(t, steps);
    double wait = (s1.wait_s - s0.wait_s) / steps, launch = (s1.launch_s - s0.launch_s) / steps;
    double alone = allreduce_time(comm_of(d), s1.bytes_per_step);
    double overlap = alone > 0 ? 1.0 - wait / alone : 0.0;
    if (overlap < 0) overlap = 0;
    if (bg_dist_is_root(d))
        printf(
            "{\"bench\": \"train\", \"workload\": \"%s\", \"ranks\": %d, \"rows_per_rank\": %lld, "
            "\"step_ms\": %.1f, \"bytes_per_step\": %lld, \"buckets\": %lld, "
            "\"allreduce_alone_ms\": %.2f, \"exposed_wait_ms\": %.2f, \"pack_launch_ms\": %.2f, "
            "\"overlapped_fraction\": %.2f, \"buckets_started_in_backward\": %.2f, "
            "\"bytes_reduced_before_sync\": %.2f, \"progress_thread\": %s}\n",
            lora ? "W3" : "W2", bg_dist_world(d), (long long)nb, 1e3 * step,
            (long long)s1.bytes_per_step, (long long)s1.buckets, 1e3 * alone, 1e3 * wait,
            1e3 * launch, overlap,
            (double)(s1.early_buckets - s0.early_buckets) / (double)(steps * s1.buckets),
            (double)(s1.done_early_bytes - s0.done_early_bytes) /
                (double)(steps * s1.bytes_per_step),
            s1.progress_thread ? "true" : "false");
    free(ids);
    free(tg);
    bg_optim_free(&o);
    bg_module_free(&m);
    bg_ctx_free(&ctx);
}

/* Trainable parameters of the 740M shape: LoRA r on all 7 projections, or everything. */
static int64_t params_740m(int lora_r)
{
    const int64_t V = 32000, D = 1536, L = 24, F = 4096;
    if (lora_r) return L * lora_r * (4 * (D + D) + 2 * (D + F) + (F + D));
    return V * D + D + L * (4 * D * D + 3 * D * F + 3 * D + F);
}

int main(int argc, char **argv)
{
    bg_dist *d;
    if (bg_dist_init(&d, &argc, &argv) || bg_dist_world(d) < 2) {
        printf("SKIP: run as 2 or more MPI ranks (tests/run_mpi.sh 2 %s)\n", argv[0]);
        bg_dist_finalize(&d);
        return 77;
    }
    train(d, false, 10);
    train(d, true, 10);
    MPI_Comm comm = comm_of(d);
    struct {
        const char *name;
        int64_t bytes, timed;
    } w[] = {
        { "W5 (LoRA r16, 7 projections, 740M shape)", 4 * params_740m(16), 4 * params_740m(16) },
        { "QAT 740M (all parameters)", 4 * params_740m(0), (int64_t)256 << 20 },
    };
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        double t = allreduce_time(comm, w[i].timed) * (double)w[i].bytes / (double)w[i].timed;
        if (bg_dist_is_root(d))
            printf("{\"bench\": \"allreduce\", \"workload\": \"%s\", \"ranks\": %d, "
                   "\"bytes_per_step\": %lld, \"timed_bytes\": %lld, \"allreduce_ms\": %.1f, "
                   "\"algbw_GBps\": %.2f}\n",
                   w[i].name, bg_dist_world(d), (long long)w[i].bytes, (long long)w[i].timed,
                   1e3 * t, (double)w[i].bytes / t / 1e9);
    }
    bg_dist_finalize(&d);
    return 0;
}
