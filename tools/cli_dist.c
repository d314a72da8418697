/* cli_dist.c - what `bitgrad train` / `finetune` need to run as N processes under mpirun
 * (bitgrad/dist.h): the process group, each rank's slice of the global batch, rank 0 alone
 * printing and writing, a job-wide end on any rank's error, and Ctrl-C agreed by all ranks.
 *
 *   mpirun -np 4 bitgrad train --data corpus.txt --batch 8     (global batch 4 x 8 = 32)
 *
 * Without mpirun (or in a build without MPI) the world is one process and every helper is
 * the plain single-process behaviour. */
#include <signal.h>
#include <stdarg.h>

#include "cli.h"

static bg_dist *g_dist;

int cli_dist_begin(void)
{
    if (g_dist) return 0;
    return bg_dist_init(&g_dist, NULL, NULL) ? 1 : 0;
}

int cli_dist_end(int status)
{
    if (g_dist && bg_dist_world(g_dist) > 1 && status != 0 && status != 130)
        /* this rank failed (its own message is above): the others must not wait for it */
        bg_dist_abort(g_dist, status, "stopped with exit status %d (the error above)", status);
    bg_dist_finalize(&g_dist);
    return status;
}

bg_dist *cli_dist(void) { return g_dist; }
int cli_dist_rank(void) { return bg_dist_rank(g_dist); }
int cli_dist_world(void) { return bg_dist_world(g_dist); }
bool cli_is_root(void) { return bg_dist_is_root(g_dist); }

int cli_dist_attach(bg_ctx *ctx, bg_module *m, bg_optim *opt, int64_t batch, int64_t seq)
{
    if (cli_dist_world() > 1 &&
        (bg_dist_broadcast_module(g_dist, m) || bg_optim_set_dist(opt, g_dist)))
        return cli_fail(1, "data-parallel setup: %s", bg_ctx_error(ctx));
    if (cli_is_root())
        fprintf(stderr,
                "world size %d: %d x batch %lld = global batch %lld sequences of %lld "
                "tokens%s\n",
                cli_dist_world(), cli_dist_world(), (long long)batch,
                (long long)batch * cli_dist_world(), (long long)seq,
                cli_dist_world() > 1 ? " (rank 0 writes logs and checkpoints)" : "");
    return 0;
}

void cli_dist_slice(int64_t global_rows, int64_t *start, int64_t *count)
{
    bg_dist_slice(g_dist, global_rows, start, count);
}

double cli_dist_loss(double local_loss)
{
    return cli_dist_world() == 1 ? local_loss : bg_dist_mean(g_dist, local_loss);
}

void cli_dist_weigh(double local_tokens)
{
    if (cli_dist_world() > 1) bg_dist_set_weight(g_dist, local_tokens);
}

void cli_dist_request_stop(void) { bg_dist_request_stop(g_dist); }

bool cli_dist_stop(bool local_interrupted)
{
    return cli_dist_world() > 1 ? bg_dist_should_stop(g_dist) : local_interrupted;
}
