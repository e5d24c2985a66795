/* threadpool.c - persistent worker threads for the CPU backend.
 *
 * Threads are created once (threadpool_create) and parked between ops.
 * threadpool_run publishes (fn, ctx) by bumping a generation counter that
 * shares one atomic word with the run's free "seats" (one per worker); a
 * worker runs fn only after taking a seat of the current generation. The
 * caller runs share 0 itself and spins until the seated workers report done;
 * threadpool_run_shared first closes the remaining seats, so workers that
 * had not started are not waited for (see threadpool.h).
 * Workers spin on the counter for a short while after each op (decode issues
 * ~100 small matmuls per token, so the next op usually arrives within
 * microseconds) and then sleep on a condition variable, so an idle engine
 * does not burn the cores. Not thread-safe: one caller thread per pool. */
#define _GNU_SOURCE
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define tp_relax() _mm_pause()
#else
#define tp_relax() ((void)0)
#endif

/* How long an idle worker spins before sleeping (microseconds); the
 * CARAVAN_SPIN_US environment variable overrides it (0 = sleep at once). */
#define TP_SPIN_US_DEFAULT 1000

typedef struct tp_worker {
    struct threadpool *tp;
    int ith;
    pthread_t th;
} tp_worker;

struct threadpool {
    int n_threads;
    tp_worker *workers; /* n_threads - 1 of them (thread 0 is the caller) */
    void (*fn)(void *ctx, int ith, int nth);
    void *ctx;
    int64_t spin_ns;
    /* Each on its own cache line: written by different threads. */
    _Alignas(64) atomic_uint_fast64_t state; /* generation << 16 | free seats (bumped once per run) */
    _Alignas(64) atomic_int n_done;        /* workers finished with the current gen */
    _Alignas(64) atomic_int n_sleeping;    /* workers blocked on cv */
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static int64_t tp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#define TP_GEN(st) ((st) >> 16)
#define TP_SEATS(st) ((st) & 0xffff)

static void *tp_worker_main(void *arg)
{
    tp_worker *w = arg;
    threadpool *tp = w->tp;
    uint_fast64_t seen = 0;
    for (;;) {
        uint_fast64_t g = TP_GEN(atomic_load_explicit(&tp->state, memory_order_acquire));
        if (g == seen) {
            /* spin a while, then sleep */
            int64_t t0 = tp_now_ns();
            unsigned k = 0;
            while ((g = TP_GEN(atomic_load_explicit(&tp->state, memory_order_acquire))) == seen) {
                if ((++k & 63) == 0) {
                    int64_t dt = tp_now_ns() - t0;
                    if (dt > tp->spin_ns)
                        break;
                    if (dt > 50000) /* oversubscribed or idle: let others run */
                        sched_yield();
                }
                tp_relax();
            }
            if (g == seen) {
                pthread_mutex_lock(&tp->mu);
                atomic_fetch_add(&tp->n_sleeping, 1); /* seq_cst: pairs with run() */
                while ((g = TP_GEN(atomic_load(&tp->state))) == seen && !atomic_load(&tp->stop))
                    pthread_cond_wait(&tp->cv, &tp->mu);
                atomic_fetch_sub(&tp->n_sleeping, 1);
                pthread_mutex_unlock(&tp->mu);
            }
        }
        if (atomic_load(&tp->stop))
            return NULL;
        /* take a seat of the newest generation; none left: skip it */
        uint_fast64_t st = atomic_load(&tp->state);
        int seated = 0;
        while (TP_SEATS(st) > 0) {
            if (atomic_compare_exchange_weak(&tp->state, &st, st - 1)) {
                seated = 1;
                break;
            }
        }
        seen = TP_GEN(st);
        if (!seated)
            continue;
        /* fn and ctx belong to this generation: the caller waits for our
         * n_done before it can publish the next one */
        tp->fn(tp->ctx, w->ith, tp->n_threads);
        atomic_fetch_add_explicit(&tp->n_done, 1, memory_order_release);
    }
}

threadpool *threadpool_create(int n_threads)
{
    if (n_threads < 1)
        return NULL;
    threadpool *tp = calloc(1, sizeof *tp);
    if (!tp)
        return NULL;
    tp->n_threads = n_threads;
    tp->spin_ns = (int64_t)TP_SPIN_US_DEFAULT * 1000;
    const char *s = getenv("CARAVAN_SPIN_US");
    if (s && *s)
        tp->spin_ns = (int64_t)atol(s) * 1000;
    atomic_init(&tp->state, 0);
    atomic_init(&tp->n_done, 0);
    atomic_init(&tp->n_sleeping, 0);
    atomic_init(&tp->stop, 0);
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, NULL);
    if (n_threads > 1) {
        tp->workers = calloc((size_t)n_threads - 1, sizeof *tp->workers);
        if (!tp->workers)
            goto err;
        for (int i = 1; i < n_threads; i++) {
            tp_worker *w = &tp->workers[i - 1];
            w->tp = tp;
            w->ith = i;
            if (pthread_create(&w->th, NULL, tp_worker_main, w) != 0) {
                tp->n_threads = i; /* join only the ones started */
                threadpool_free(tp);
                return NULL;
            }
        }
    }
    return tp;
err:
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv);
    free(tp);
    return NULL;
}

void threadpool_free(threadpool *tp)
{
    if (!tp)
        return;
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->stop, 1);
    atomic_store(&tp->state, (TP_GEN(atomic_load(&tp->state)) + 1) << 16); /* no seats */
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n_threads; i++)
        pthread_join(tp->workers[i - 1].th, NULL);
    free(tp->workers);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv);
    free(tp);
}

int threadpool_size(const threadpool *tp)
{
    return tp->n_threads;
}

static void tp_run(threadpool *tp, void (*fn)(void *ctx, int ith, int nth), void *ctx, int shared)
{
    int nth = tp->n_threads;
    if (nth == 1) {
        fn(ctx, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->ctx = ctx;
    atomic_store_explicit(&tp->n_done, 0, memory_order_relaxed);
    uint_fast64_t g = TP_GEN(atomic_load_explicit(&tp->state, memory_order_relaxed)) + 1;
    /* seq_cst: publishes fn/ctx, ordered before the n_sleeping load below */
    atomic_store(&tp->state, g << 16 | (uint_fast64_t)(nth - 1));
    if (atomic_load(&tp->n_sleeping) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->cv);
        pthread_mutex_unlock(&tp->mu);
    }
    fn(ctx, 0, nth);
    int seated = nth - 1;
    if (shared) /* close the seats nobody took: those workers skip this run */
        seated -= (int)TP_SEATS(atomic_exchange(&tp->state, g << 16));
    /* Spin briefly, then yield: with more threads than cores a worker may be
     * waiting for this core. */
    unsigned k = 0;
    while (atomic_load_explicit(&tp->n_done, memory_order_acquire) < seated) {
        if (++k > 2048)
            sched_yield();
        else
            tp_relax();
    }
}

void threadpool_run(threadpool *tp, void (*fn)(void *ctx, int ith, int nth), void *ctx)
{
    tp_run(tp, fn, ctx, 0);
}

void threadpool_run_shared(threadpool *tp, void (*fn)(void *ctx, int ith, int nth), void *ctx)
{
    tp_run(tp, fn, ctx, 1);
}
