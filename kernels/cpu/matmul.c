/* matmul.c - CPU matrix products y = x @ W^T for every weight type,
 * parallel over the thread pool. Scalar path: dot_row (core/dtype.c) per
 * (token, row), rows split evenly over the threads. */
#include "matmul.h"

#include <stdlib.h>

#include "../../core/dtype.h"

struct cpu_matmul {
    threadpool *tp;
    cpu_level level;
};

cpu_matmul *cpu_matmul_create(threadpool *tp, cpu_level level)
{
    cpu_matmul *mm = calloc(1, sizeof *mm);
    if (!mm)
        return NULL;
    mm->tp = tp;
    mm->level = level;
    return mm;
}

void cpu_matmul_free(cpu_matmul *mm)
{
    free(mm);
}

typedef struct mm_job {
    float *y;
    const be_weight *w;
    const float *x;
    int64_t n_tok;
} mm_job;

static void mm_scalar_worker(void *ctx, int ith, int nth)
{
    const mm_job *j = ctx;
    const be_weight *w = j->w;
    int64_t r0 = w->ne1 * ith / nth, r1 = w->ne1 * (ith + 1) / nth;
    for (int64_t t = 0; t < j->n_tok; t++) {
        const float *xt = j->x + t * w->ne0;
        float *yt = j->y + t * w->ne1;
        for (int64_t r = r0; r < r1; r++)
            yt[r] = dot_row(w->type, (const char *)w->data + r * w->row_bytes, xt, w->ne0);
    }
}

void cpu_matmul_run(cpu_matmul *mm, float *y, const be_weight *w, const float *x, int64_t n_tok)
{
    mm_job j = {y, w, x, n_tok};
    threadpool_run(mm->tp, mm_scalar_worker, &j);
}
