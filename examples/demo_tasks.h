/* demo_tasks.h - the built-in data of the fine-tune example: arithmetic on two-digit numbers
 * written as text ("12+34=46\n"), batches of next-token training rows whose loss covers the
 * answer only, byte windows of a text file (--data), and greedy exact-match evaluation on
 * problems that training never sees (a fixed tenth of all operand pairs is held out). */
#ifndef BG_DEMO_TASKS_H
#define BG_DEMO_TASKS_H

#include <bitgrad.h>

#define DEMO_T 10          /* tokens per row: "99+99=198\n" fills it exactly */
#define DEMO_TEXT_T 16     /* tokens per row of --data text */
#define DEMO_IGNORE (-1)   /* target of positions outside the answer */

typedef enum demo_task { TASK_ADD = 0, TASK_SUB = 1 } demo_task;

typedef struct demo_rng {
    uint64_t s;
} demo_rng;

uint32_t demo_rand(demo_rng *r);
/* Writes "a+b=" (or "a-b=", a >= b) into prompt and the answer "c\n" into answer, for
 * operands a, b in [10, 99] from the training split, or from the held-out split. */
void demo_problem(demo_task task, demo_rng *r, bool held_out, char *prompt, char *answer);
/* Fills ids [B, DEMO_T] and targets [B, DEMO_T - 1] (next token on answer positions,
 * DEMO_IGNORE elsewhere) with problems of the training split. */
void demo_batch(demo_task task, demo_rng *r, int B, int32_t *ids, int32_t *targets);
/* Random windows of text: ids [B, T] and targets [B, T-1] = ids shifted by one. */
void demo_text_batch(const unsigned char *text, size_t len, demo_rng *r, int B, int T,
                     int32_t *ids, int32_t *targets);
/* Greedy exact-match accuracy over n problems of the held-out split drawn from seed. */
double demo_accuracy(bg_module *model, demo_task task, uint64_t seed, int n);
/* Mean loss of one batch, grad off. */
double demo_eval_loss(bg_module *model, const int32_t *ids, const int32_t *targets, int B, int T);
/* Loss tensor of a batch (forward on ids[:, :-1]). */
bg_tensor *demo_loss(bg_module *model, const int32_t *ids, const int32_t *targets, int B, int T);

#endif
