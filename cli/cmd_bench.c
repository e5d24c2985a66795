/* cmd_bench.c - `caravan bench`: prompt-processing and generation speed of a
 * model against this machine's measured memory read bandwidth.
 *
 *   caravan bench -m MODEL [-t THREADS] [-p 512] [-n 128] [-r 5]
 *                 [--cpu-level scalar|avx2|avx512] [-d cpu|cuda:N]
 *
 * Order: open the model, warm up, run a streaming-read probe (a buffer far
 * larger than the caches, read by all cores and by the bench's thread count)
 * right before the model runs so both see the same machine state, then pp (one forward of p tokens) and tg
 * (n single-token decode steps) r times each after one warm-up run.
 * Prints one grep-able key=value line per result:
 *   test=pp512|tg128 type= threads= tok_s= (median) tok_s_min= tok_s_max=
 *   weight_bytes= gb_s= read_bw_gb_s= bw_pct= read_bw_all_gb_s= bw_pct_all= gflop_s=
 *   logits_hash=
 * read_bw_gb_s is the probe run with the bench's own thread count and bw_pct
 * gb_s against it: on the CPU a short probe runs right before each timed
 * repetition, bw_pct is the median over repetitions of the repetition's GB/s
 * over its own probe, read_bw_gb_s the median probe (a shared machine's
 * bandwidth drifts within seconds). read_bw_all_gb_s is the probe on all
 * online cores before the tests, bw_pct_all the median GB/s against it.
 * Bytes per token count every weight tensor except token_embd, of which one
 * row is read (all of it when it doubles as the output matrix).
 * gflop_s = 2 x matmul weight elements x tok/s (attention not counted). */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cli/cli.h"
#include "core/dtype.h"
#include "core/gguf.h"
#ifdef CARAVAN_HAVE_CUDA
#include "kernels/cuda/backend_cuda.h"
#endif
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/threadpool.h"
#include "worker/engine.h"
#include "worker/forward.h"

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bench_cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- streaming-read probe ---------------------------------------------- */

/* The probe must be the best streaming read this machine does, so that
 * bw_pct cannot flatter the kernels: the buffer is asked for 2 MiB pages
 * (as the weights get), and each pass is timed in several access patterns
 * whose best median counts: one sequential stream per thread, with plain
 * loads (hardware prefetch only) and with software prefetch ahead of the
 * loads; and 4 and 8 interleaved streams per thread (below), which this
 * Zen 3 VM serves 1.3-1.6x faster than one stream, as it does the 4-row
 * decode kernels' 4 row streams. */
#define PROBE_PF_BYTES 4096
#define PROBE_PATTERNS 4 /* 1 stream, 1 stream + prefetch, 4 streams, 8 streams */

typedef struct probe_job {
    const uint8_t *buf;
    size_t n;          /* bytes, multiple of 1024 * threads */
    int pattern;       /* 0..PROBE_PATTERNS-1, see above */
    uint64_t sink[64]; /* per thread, defeats dead-code elimination */
} probe_job;

#if defined(__x86_64__)
/* Multi-stream patterns: the thread's share is read in blocks of
 * PROBE_BLOCK bytes, each as ns streams (its ns parts, one 64-byte line of
 * each in turn), as the 4-row decode kernels read the quarters of a row
 * chunk a few MiB long; a tail shorter than a block is read as one stream.
 * (Streams hundreds of MiB apart read slower than one stream here: DRAM
 * placement, not what the kernels do.) ns is a constant after inlining. */
#define PROBE_BLOCK ((size_t)4 << 20)
__attribute__((target("avx2"), always_inline)) static inline __m256i
probe_streams_avx2(const uint8_t *p, size_t n, const int ns)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0;
    const size_t len = PROBE_BLOCK / (size_t)ns;
    size_t b = 0;
    for (; b + PROBE_BLOCK <= n; b += PROBE_BLOCK)
        for (size_t o = 0; o < len; o += 64)
            for (int s = 0; s < ns; s++) {
                const uint8_t *q = p + b + (size_t)s * len + o;
                a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)q));
                a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(q + 32)));
            }
    for (; b < n; b += 64) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + b)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + b + 32)));
    }
    return _mm256_add_epi64(a0, a1);
}

__attribute__((target("avx2"))) static uint64_t probe_read_avx2(const uint8_t *p, size_t n,
                                                                int pattern)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    if (pattern == 1) {
        for (size_t o = 0; o < n; o += 128) {
            _mm_prefetch((const char *)p + o + PROBE_PF_BYTES, _MM_HINT_T0);
            _mm_prefetch((const char *)p + o + PROBE_PF_BYTES + 64, _MM_HINT_T0);
            a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + o)));
            a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + o + 32)));
            a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + o + 64)));
            a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + o + 96)));
        }
    } else if (pattern == 2) {
        a0 = probe_streams_avx2(p, n, 4);
    } else if (pattern == 3) {
        a0 = probe_streams_avx2(p, n, 8);
    } else {
        for (size_t o = 0; o < n; o += 128) {
            a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + o)));
            a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + o + 32)));
            a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + o + 64)));
            a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + o + 96)));
        }
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t v[4];
    _mm256_storeu_si256((__m256i *)v, a0);
    return v[0] + v[1] + v[2] + v[3];
}
#endif

/* scalar: patterns 2 and 3 read as 4 interleaved streams */
static uint64_t probe_read_scalar(const uint8_t *p, size_t n, int pattern)
{
    const uint64_t *q = (const uint64_t *)p;
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    if (pattern >= 2) {
        const size_t len = PROBE_BLOCK / 32; /* words per stream */
        size_t b = 0;
        for (; b + PROBE_BLOCK / 8 <= n / 8; b += PROBE_BLOCK / 8)
            for (size_t i = 0; i < len; i++)
                a0 += q[b + i], a1 += q[b + len + i], a2 += q[b + 2 * len + i], a3 += q[b + 3 * len + i];
        for (; b < n / 8; b++)
            a0 += q[b];
        return a0 + a1 + a2 + a3;
    }
    for (size_t i = 0; i < n / 8; i += 4) {
        if (pattern == 1 && i % 8 == 0)
            __builtin_prefetch(p + 8 * i + PROBE_PF_BYTES);
        a0 += q[i], a1 += q[i + 1], a2 += q[i + 2], a3 += q[i + 3];
    }
    return a0 + a1 + a2 + a3;
}

static void probe_worker(void *ctx, int ith, int nth)
{
    probe_job *j = ctx;
    size_t per = j->n / (size_t)nth;
    const uint8_t *p = j->buf + per * (size_t)ith;
#if defined(__x86_64__)
    if (cpu_level_detect() >= CPU_AVX2) {
        j->sink[ith % 64] += probe_read_avx2(p, per, j->pattern);
        return;
    }
#endif
    j->sink[ith % 64] += probe_read_scalar(p, per, j->pattern);
}

static double probe_median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof t[0], bench_cmp_d);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* The probe's 1 GiB buffer (allocated and touched once: clearing 1 GiB of
 * fresh pages takes longer than reading it) and one pool per thread count. */
typedef struct probe {
    uint8_t *buf;
    size_t n;
    threadpool *tp_all, *tp_t; /* all cores; the bench's thread count (may be tp_all) */
    int n_all, n_t;
} probe;

static void probe_free(probe *p)
{
    if (p->tp_t && p->tp_t != p->tp_all)
        threadpool_free(p->tp_t);
    threadpool_free(p->tp_all);
    if (p->buf)
        munmap(p->buf, p->n);
    memset(p, 0, sizeof *p);
}

static int probe_init(probe *p, int n_all, int n_t)
{
    memset(p, 0, sizeof *p);
    p->n = (size_t)1 << 30;
    p->buf = mmap(NULL, p->n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p->buf == MAP_FAILED) {
        p->buf = NULL;
        return -1;
    }
#ifdef MADV_HUGEPAGE
    madvise(p->buf, p->n, MADV_HUGEPAGE); /* advisory: 4 KiB pages where THP is off */
#endif
    for (size_t i = 0; i < p->n; i += 8) /* touch every page, non-trivial content */
        *(uint64_t *)(p->buf + i) = i * 0x9E3779B97F4A7C15ull;
    p->n_all = n_all, p->n_t = n_t;
    p->tp_all = threadpool_create(n_all);
    p->tp_t = n_t == n_all ? p->tp_all : threadpool_create(n_t);
    if (!p->tp_all || !p->tp_t) {
        probe_free(p);
        return -1;
    }
    return 0;
}

/* Read bandwidth (GB/s) of the pool's threads streaming over the buffer: the
 * best of the medians of `reps` passes in each access pattern (the patterns
 * alternate within a repetition, after one warm-up pass of each). */
static double probe_read_bw(probe *p, int all, int reps, double *per_pattern)
{
    threadpool *tp = all ? p->tp_all : p->tp_t;
    int nth = all ? p->n_all : p->n_t;
    probe_job j;
    memset(&j, 0, sizeof j);
    j.buf = p->buf;
    j.n = p->n - p->n % (1024 * (size_t)nth);
    double t[PROBE_PATTERNS][16];
    if (reps > 16)
        reps = 16;
    for (int pt = 0; pt < PROBE_PATTERNS; pt++) { /* warm-up */
        j.pattern = pt;
        threadpool_run(tp, probe_worker, &j);
    }
    for (int r = 0; r < reps; r++) {
        for (int pt = 0; pt < PROBE_PATTERNS; pt++) {
            j.pattern = pt;
            double t0 = bench_now();
            threadpool_run(tp, probe_worker, &j);
            t[pt][r] = bench_now() - t0;
        }
    }
    double best = 0;
    for (int pt = 0; pt < PROBE_PATTERNS; pt++) {
        double bw = (double)j.n / probe_median(t[pt], reps) / 1e9;
        if (per_pattern)
            per_pattern[pt] = bw;
        if (bw > best)
            best = bw;
    }
    uint64_t s = 0;
    for (int i = 0; i < 64; i++)
        s += j.sink[i];
    if (s == 42) /* practically never; keeps the sums alive */
        fprintf(stderr, " ");
    return best;
}

/* ---- model accounting ------------------------------------------------------ */

typedef struct model_bytes {
    double bytes_per_token;  /* weights read by one decode step */
    double matmul_elements;  /* elements of the weight matrices used in matmuls */
    int main_type;           /* type holding the most matmul weight bytes */
} model_bytes;

static model_bytes bench_count_bytes(const gguf_file *g)
{
    model_bytes mb = {0, 0, -1};
    const gguf_tensor_info *emb = gguf_tensor_find(g, "token_embd.weight");
    int tied = gguf_tensor_find(g, "output.weight") == NULL;
    double type_bytes[DT_COUNT] = {0};
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_info *t = gguf_tensor(g, i);
        int is_emb = t == emb;
        if (is_emb && !tied)
            mb.bytes_per_token += (double)t->n_bytes / (double)(t->ne[1] > 0 ? t->ne[1] : 1);
        else
            mb.bytes_per_token += (double)t->n_bytes;
        if (t->n_dims >= 2 && (!is_emb || tied)) {
            mb.matmul_elements += (double)t->n_elements;
            if (t->type >= 0 && t->type < DT_COUNT)
                type_bytes[t->type] += (double)t->n_bytes;
        }
    }
    double best = -1;
    for (int k = 0; k < DT_COUNT; k++)
        if (type_bytes[k] > best)
            best = type_bytes[k], mb.main_type = k;
    return mb;
}

static uint64_t fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void bench_usage(FILE *out)
{
    fprintf(out,
            "usage: caravan bench -m MODEL [-t THREADS] [-p 512] [-n 128] [-r 5]\n"
            "                     [--cpu-level scalar|avx2|avx512] [-d cpu|cuda:N] [--mmap]\n"
            "  -t  cpu threads (default: all online cores)\n"
            "  -p  prompt tokens of the pp test (0 = skip)\n"
            "  -n  generated tokens of the tg test (0 = skip)\n"
            "  -r  repetitions after one warm-up (median and min/max reported)\n"
            "  --mmap  compute from the file mapping (default: the weights copied into\n"
            "          huge-page memory, as caravan run does)\n");
}

int cmd_bench(int argc, char **argv)
{
    const char *model_path = NULL, *level = NULL, *device = "cpu";
    int64_t n_threads = sysconf(_SC_NPROCESSORS_ONLN), n_pp = 512, n_tg = 128, reps = 5;
    int keep_map = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench_usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && v) {
            model_path = v, i++;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!cli_parse_int("bench", a, v, 1, 1024, &n_threads))
                return 2;
            i++;
        } else if (!strcmp(a, "-p")) {
            if (!cli_parse_int("bench", a, v, 0, 1 << 20, &n_pp))
                return 2;
            i++;
        } else if (!strcmp(a, "-n")) {
            if (!cli_parse_int("bench", a, v, 0, 1 << 20, &n_tg))
                return 2;
            i++;
        } else if (!strcmp(a, "-r")) {
            if (!cli_parse_int("bench", a, v, 1, 1000, &reps))
                return 2;
            i++;
        } else if (!strcmp(a, "--mmap")) {
            keep_map = 1;
        } else if (!strcmp(a, "--cpu-level") && v) {
            level = v, i++;
        } else if ((!strcmp(a, "-d") || !strcmp(a, "--device")) && v) {
            device = v, i++;
        } else {
            fprintf(stderr, "caravan bench: unknown or incomplete option '%s'\n", a);
            bench_usage(stderr);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "caravan bench: -m MODEL is required\n");
        bench_usage(stderr);
        return 2;
    }
    engine_config cfg = {0};
    cfg.model_path = model_path;
    cfg.be.device = device;
    cfg.be.n_threads = (int)n_threads;
    cfg.be.cpu_level = level;
    cfg.params.n_slots = 1;
    cfg.params.n_ctx = (n_pp > n_tg ? n_pp : n_tg) + 8;
    cfg.params.kv_type = DT_F32;
    cfg.params.max_batch = n_pp > 0 ? n_pp : 1;
    cfg.params.weights_mmap = keep_map;
    engine *eng = NULL;
    cv_err e = {0};
    if (engine_create(&cfg, &eng, &e)) {
        fprintf(stderr, "caravan bench: %s\n", e.msg);
        return 1;
    }
    const model_config *mc = engine_model_config(eng);
    model_bytes mb = bench_count_bytes(engine_gguf(eng));
    int64_t n_vocab = mc->n_vocab;
    int64_t n_max = n_pp > n_tg ? n_pp : n_tg;
    if (n_max < 1)
        n_max = 1;
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)n_max);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n_max);
    int32_t *slot = calloc((size_t)n_max, sizeof(int32_t));
    float *logits = malloc(sizeof(float) * (size_t)n_vocab);
    double *times = malloc(sizeof(double) * (size_t)(reps + 1));
    double *rep_bw = malloc(sizeof(double) * (size_t)(reps + 1));
    double *rep_pct = malloc(sizeof(double) * (size_t)(reps + 1));
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < n_max; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        tokens[i] = (int32_t)(rng % (uint64_t)n_vocab);
        pos[i] = (int32_t)i;
    }
    const char *tname = mb.main_type >= 0 ? dtype_name(mb.main_type) : "?";
    const char *base = strrchr(model_path, '/') ? strrchr(model_path, '/') + 1 : model_path;
    int64_t n_cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench: model=%s type=%s weight_bytes_per_token=%.0f matmul_params=%.0f threads=%lld "
           "device=%s\n",
           base, tname, mb.bytes_per_token, mb.matmul_elements, (long long)n_threads, device);
    fflush(stdout);
    /* One untimed decode step so that first-touch costs stay out of the probe's neighbourhood. */
    {
        int32_t out0 = 0;
        fwd_batch b = {.n_tok = 1, .tokens = tokens, .pos = pos, .slot = slot, .n_out = 1, .out_idx = &out0};
        if (engine_forward_logits(eng, &b, logits, &e)) {
            fprintf(stderr, "caravan bench: forward: %s\n", e.msg);
            return 1;
        }
    }
    double bw_all = 0, bw_t = 0;
#ifdef CARAVAN_HAVE_CUDA
    if (!strncmp(device, "cuda", 4)) {
        /* A GPU rank's ceiling is its device memory: the reference is the
         * measured device-to-device copy bandwidth (bytes read + written). */
        int dev_idx = device[4] == ':' ? atoi(device + 5) : 0;
        double bps = 0;
        if (backend_cuda_copy_bandwidth(dev_idx, (size_t)1 << 30, 5, &bps, &e) != CV_OK) {
            fprintf(stderr, "caravan bench: %s\n", e.msg);
            return 1;
        }
        bw_all = bw_t = bps / 1e9;
        printf("bench: read_bw_gb_s=%.2f is the device-to-device copy bandwidth of %s (bytes read "
               "+ written), 1 GiB copies, median of 5\n",
               bw_all, device);
    }
#endif
    probe pr;
    memset(&pr, 0, sizeof pr);
    int paired = 0; /* CPU: a probe of the bench's thread count before each timed repetition */
    if (bw_all == 0) {
        if (probe_init(&pr, (int)n_cores, (int)n_threads)) {
            fprintf(stderr, "caravan bench: cannot allocate the 1 GiB read-probe buffer\n");
            return 1;
        }
        paired = 1;
        double pat_all[PROBE_PATTERNS], pat_t[PROBE_PATTERNS];
        bw_all = probe_read_bw(&pr, 1, 5, pat_all);
        if (n_threads == n_cores) {
            bw_t = bw_all;
            memcpy(pat_t, pat_all, sizeof pat_t);
        } else {
            bw_t = probe_read_bw(&pr, 0, 5, pat_t);
        }
        printf("bench: read_bw_all_gb_s=%.2f (all %lld cores) read_bw_gb_s=%.2f (%lld threads), "
               "1 GiB streaming read (2 MiB pages asked), best of 1 stream per thread (plain, "
               "software prefetch) and 4 or 8 interleaved streams per thread, median of 5; "
               "again before each timed repetition\n",
               bw_all, (long long)n_cores, bw_t, (long long)n_threads);
        printf("bench: probe GB/s by pattern (1 stream, 1 stream + prefetch, 4 streams, 8 streams "
               "per thread): all cores %.2f %.2f %.2f %.2f; %lld threads %.2f %.2f %.2f %.2f\n",
               pat_all[0], pat_all[1], pat_all[2], pat_all[3], (long long)n_threads, pat_t[0], pat_t[1],
               pat_t[2], pat_t[3]);
    }
    fflush(stdout);
    int rc = 0;
    for (int test = 0; test < 2 && !rc; test++) {
        int64_t n = test == 0 ? n_pp : n_tg;
        if (n <= 0)
            continue;
        uint64_t hash = 0;
        for (int64_t r = 0; r <= reps && !rc; r++) {
            if (paired && r > 0)
                rep_bw[r - 1] = probe_read_bw(&pr, 0, 2, NULL);
            double t0 = bench_now();
            if (test == 0) {
                int32_t last = (int32_t)(n - 1);
                fwd_batch b = {.n_tok = n, .tokens = tokens, .pos = pos, .slot = slot, .n_out = 1,
                               .out_idx = &last};
                rc = engine_forward_logits(eng, &b, logits, &e) != CV_OK;
            } else {
                for (int64_t i = 0; i < n && !rc; i++) {
                    int32_t out0 = 0;
                    fwd_batch b = {.n_tok = 1, .tokens = tokens + i, .pos = pos + i, .slot = slot,
                                   .n_out = 1, .out_idx = &out0};
                    rc = engine_forward_logits(eng, &b, logits, &e) != CV_OK;
                }
            }
            double dt = bench_now() - t0;
            if (r > 0) /* r == 0 is the warm-up */
                times[r - 1] = dt;
            uint64_t h = fnv1a(logits, sizeof(float) * (size_t)n_vocab);
            if (r > 0 && hash && h != hash) {
                fprintf(stderr, "caravan bench: logits differ between repetitions (%016llx vs "
                        "%016llx): non-deterministic kernels\n",
                        (unsigned long long)h, (unsigned long long)hash);
                rc = 1;
            }
            hash = h;
        }
        if (rc) {
            if (e.msg[0])
                fprintf(stderr, "caravan bench: forward: %s\n", e.msg);
            break;
        }
        /* bw_pct: median over repetitions of the repetition's GB/s against the
         * probe run right before it (the machine's state drifts when shared) */
        double bpt = test == 0 ? mb.bytes_per_token : mb.bytes_per_token * (double)n;
        for (int64_t r = 0; r < reps; r++) {
            rep_pct[r] = paired ? 100.0 * bpt / times[r] / 1e9 / rep_bw[r] : 100.0 * bpt / times[r] / 1e9 / bw_t;
            if (!paired)
                rep_bw[r] = bw_t;
        }
        double pct_med = probe_median(rep_pct, (int)reps), bw_med = probe_median(rep_bw, (int)reps);
        qsort(times, (size_t)reps, sizeof times[0], bench_cmp_d);
        /* median (mean of the middle two for an even count) */
        double t_med = reps % 2 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
        double tok_s = (double)n / t_med, tok_min = (double)n / times[reps - 1],
               tok_max = (double)n / times[0];
        /* pp reads the weights once per forward; tg once per token */
        double bytes_s = test == 0 ? mb.bytes_per_token / t_med : mb.bytes_per_token * tok_s;
        double gflop_s = 2.0 * mb.matmul_elements * tok_s / 1e9;
        printf("test=%s%lld model=%s type=%s threads=%lld reps=%lld tok_s=%.2f tok_s_min=%.2f "
               "tok_s_max=%.2f ms_per_tok=%.3f weight_bytes=%.0f gb_s=%.2f read_bw_gb_s=%.2f "
               "bw_pct=%.1f read_bw_all_gb_s=%.2f bw_pct_all=%.1f gflop_s=%.1f logits_hash=%016llx\n",
               test == 0 ? "pp" : "tg", (long long)n, base, tname, (long long)n_threads,
               (long long)reps, tok_s, tok_min, tok_max, 1e3 / tok_s, mb.bytes_per_token,
               bytes_s / 1e9, bw_med, pct_med, bw_all,
               100.0 * bytes_s / 1e9 / bw_all, gflop_s, (unsigned long long)hash);
        fflush(stdout);
    }
    free(tokens), free(pos), free(slot), free(logits), free(times), free(rep_bw), free(rep_pct);
    probe_free(&pr);
    engine_free(eng);
    return rc;
}
