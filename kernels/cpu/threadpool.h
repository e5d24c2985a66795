/* threadpool.h - a persistent pool of worker threads (created once per
 * backend, never per op). threadpool_run runs fn on every thread, the
 * caller being thread 0, and returns when all are done. */
#pragma once

typedef struct threadpool threadpool;

threadpool *threadpool_create(int n_threads); /* n_threads >= 1; NULL on failure */
void threadpool_free(threadpool *tp);
int threadpool_size(const threadpool *tp);
/* Run fn(ctx, ith, nth) for ith = 0..nth-1 in parallel and wait for all. */
void threadpool_run(threadpool *tp, void (*fn)(void *ctx, int ith, int nth), void *ctx);
