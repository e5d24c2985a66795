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
/* The same for a work-sharing fn (threads take work items from a shared
 * counter, so any subset of the threads, the caller alone included, does the
 * whole job): workers that have not started by the time the caller has run
 * out of work are not waited for and do not run fn at all. A worker that is
 * descheduled or asleep (busy machine) then costs nothing instead of
 * stalling the op until the OS runs it. ith stays unique per thread. */
void threadpool_run_shared(threadpool *tp, void (*fn)(void *ctx, int ith, int nth), void *ctx);
