/* cuda_graph.cu - CUDA graphs for the decode step (on by default since the
 * H200 run of 2026-11-26: +4.7% generation on 8B-shaped Q8_0 and Q4_K,
 * correct in every check; CARAVAN_CUDA_GRAPHS=0 turns them off).
 *
 * The backend interface has no "step" call, so capture is implicit: the
 * first kernel-launching op after a synchronising call (to_host, sync) starts
 * a stream capture, and the next call that cannot be captured (to_host,
 * sync, alloc/free, weight upload, a cuBLAS GEMM, a scratch reallocation)
 * ends it and launches the captured graph before doing its own work. So a
 * decode step (~15 launches per layer) becomes one graph launch, and the
 * kernels run back to back without per-launch gaps.
 *
 * The GPU waits while a step is captured (the step before ended with a
 * synchronising to_host), so a step is cut into graphs of at most
 * CARAVAN_CUDA_GRAPH_OPS ops (default 32, about 3 layers; 0 = no cut): the
 * first piece starts running while the next is being captured.
 *
 * Each capture is turned into an executable graph by cudaGraphExecUpdate of
 * a cached executable with the same signature (node count, and every node's
 * type and kernel function in order: cheap, the usual case, as the decode
 * step has the same shape every token; an update between graphs of other
 * kernels would be refused, so it is not tried) or, when none matches or
 * the update still fails, a fresh
 * cudaGraphInstantiate (GRAPH_CACHE executables, least recently used
 * replaced). from_host copies made while capturing are taken from a pinned
 * arena (the graph's memcpy node reads it when the graph runs): the host
 * data is copied into the arena at call time, and the arena is reused only
 * after the stream has been synchronised. Any capture error turns graphs off
 * for this backend and is recorded as the backend's error (the captured work
 * did not run). */
#include "cuda_internal.cuh"

#define GRAPH_CACHE 8
#define GRAPH_ARENA_BYTES (4u << 20)

struct cuda_graphs {
    bool capturing;
    int n_ops;    /* ops in the current capture */
    int max_ops;  /* cut the capture after this many ops (0: never) */
    bool broken; /* an error happened: no more captures */
    struct {
        cudaGraphExec_t exec;
        size_t n_nodes;
        uint64_t sig; /* node types and kernel functions, in order (graph_sig) */
        uint64_t used;
    } cache[GRAPH_CACHE];
    uint64_t tick;
    uint8_t *arena; /* pinned */
    size_t arena_off;
    /* counters, logged at destroy */
    uint64_t n_launch, n_update, n_inst, n_nodes;
};

void cg_init(cuda_backend *cb)
{
    const char *g = getenv("CARAVAN_CUDA_GRAPHS");
    if (g && !strcmp(g, "0"))
        return;
    cuda_graphs *G = (cuda_graphs *)calloc(1, sizeof *G);
    if (!G)
        return;
    if (cudaMallocHost((void **)&G->arena, GRAPH_ARENA_BYTES) != cudaSuccess) {
        (void)cudaGetLastError();
        log_warn("%s: CARAVAN_CUDA_GRAPHS: no pinned arena, graphs off", cb->name);
        free(G);
        return;
    }
    G->max_ops = 32;
    const char *mo = getenv("CARAVAN_CUDA_GRAPH_OPS");
    if (mo && *mo)
        G->max_ops = atoi(mo) > 0 ? atoi(mo) : 0;
    cb->graphs = G;
    log_info("%s: CUDA graphs on (CARAVAN_CUDA_GRAPHS), up to %d ops per graph", cb->name,
             G->max_ops);
}

void cg_destroy(cuda_backend *cb)
{
    cuda_graphs *G = cb->graphs;
    if (!G)
        return;
    if (G->capturing) {
        cudaGraph_t g = NULL;
        cudaStreamEndCapture(cb->stream, &g);
        if (g)
            cudaGraphDestroy(g);
    }
    for (int i = 0; i < GRAPH_CACHE; i++)
        if (G->cache[i].exec)
            cudaGraphExecDestroy(G->cache[i].exec);
    log_info("%s: graphs: %llu launches (%llu nodes), %llu updated, %llu instantiated", cb->name,
             (unsigned long long)G->n_launch, (unsigned long long)G->n_nodes,
             (unsigned long long)G->n_update, (unsigned long long)G->n_inst);
    cudaFreeHost(G->arena);
    free(G);
    cb->graphs = NULL;
}

static void cg_break(cuda_backend *cb, cudaError_t rc, const char *what)
{
    cb->graphs->broken = true;
    cb_fail(cb, rc == cudaSuccess ? cudaErrorUnknown : rc, what, __FILE__, __LINE__);
}

void cg_begin(cuda_backend *cb)
{
    cuda_graphs *G = cb->graphs;
    if (G->capturing || G->broken || cb->err != CV_OK)
        return;
    cudaError_t rc = cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError();
        G->broken = true; /* not an error of the work: run it uncaptured */
        log_warn("%s: cudaStreamBeginCapture: %s; graphs off", cb->name, cudaGetErrorString(rc));
        return;
    }
    G->capturing = true;
    G->n_ops = 0;
}

void cg_op(cuda_backend *cb)
{
    cuda_graphs *G = cb->graphs;
    if (G->capturing && G->max_ops > 0 && ++G->n_ops > G->max_ops)
        cg_flush(cb); /* launch this piece; the GPU runs it while the next is captured */
    cg_begin(cb);
}

/* FNV-1a over the nodes' types and kernel functions, in the order
 * cudaGraphGetNodes lists them (capture order): graphs with the same
 * signature differ only in kernel arguments, launch shapes and copy
 * addresses, which cudaGraphExecUpdate can change */
static uint64_t graph_sig(cudaGraph_t g, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    cudaGraphNode_t nodes[512];
    size_t m = n < 512 ? n : 512;
    if (cudaGraphGetNodes(g, nodes, &m) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    for (size_t i = 0; i < m; i++) {
        cudaGraphNodeType t;
        uint64_t v = 0;
        if (cudaGraphNodeGetType(nodes[i], &t) == cudaSuccess) {
            v = (uint64_t)t + 1;
            cudaKernelNodeParams kp;
            if (t == cudaGraphNodeTypeKernel && cudaGraphKernelNodeGetParams(nodes[i], &kp) == cudaSuccess)
                v ^= (uint64_t)(uintptr_t)kp.func << 8;
        }
        (void)cudaGetLastError();
        h = (h ^ v) * 1099511628211ull;
    }
    return h ^ n;
}

/* end the capture (if any) and launch what it recorded */
void cg_flush(cuda_backend *cb)
{
    cuda_graphs *G = cb->graphs;
    if (!G || !G->capturing)
        return;
    G->capturing = false;
    cudaGraph_t g = NULL;
    cudaError_t rc = cudaStreamEndCapture(cb->stream, &g);
    if (rc != cudaSuccess || !g) {
        cg_break(cb, rc, "cudaStreamEndCapture (CARAVAN_CUDA_GRAPHS)");
        return;
    }
    size_t n = 0;
    cudaGraphGetNodes(g, NULL, &n);
    if (n == 0) { /* nothing was captured */
        cudaGraphDestroy(g);
        return;
    }
    const uint64_t sig = graph_sig(g, n);
    int slot = -1, lru = 0;
    for (int i = 0; i < GRAPH_CACHE; i++) {
        /* not the executable launched last: it may still be running, and
         * consecutive pieces of a step then alternate between two */
        if (G->cache[i].exec && G->cache[i].n_nodes == n && G->cache[i].sig == sig &&
            G->cache[i].used != G->tick) {
#if CUDART_VERSION >= 12000
            cudaGraphExecUpdateResultInfo info;
            rc = cudaGraphExecUpdate(G->cache[i].exec, g, &info);
#else
            cudaGraphNode_t bad;
            cudaGraphExecUpdateResult res;
            rc = cudaGraphExecUpdate(G->cache[i].exec, g, &bad, &res);
#endif
            if (rc == cudaSuccess) {
                slot = i;
                G->n_update++;
                break;
            }
            (void)cudaGetLastError(); /* a failed update is not an error of the work */
        }
        if (G->cache[i].used < G->cache[lru].used)
            lru = i;
    }
    if (slot < 0) {
        for (int i = 0; i < GRAPH_CACHE; i++)
            if (!G->cache[i].exec) {
                lru = i;
                break;
            }
        if (G->cache[lru].exec)
            cudaGraphExecDestroy(G->cache[lru].exec);
        G->cache[lru].exec = NULL;
        rc = cudaGraphInstantiate(&G->cache[lru].exec, g, 0);
        if (rc != cudaSuccess) {
            G->cache[lru].exec = NULL;
            cudaGraphDestroy(g);
            cg_break(cb, rc, "cudaGraphInstantiate (CARAVAN_CUDA_GRAPHS)");
            return;
        }
        G->cache[lru].n_nodes = n;
        G->cache[lru].sig = sig;
        slot = lru;
        G->n_inst++;
    }
    cudaGraphDestroy(g);
    G->cache[slot].used = ++G->tick;
    rc = cudaGraphLaunch(G->cache[slot].exec, cb->stream);
    if (rc != cudaSuccess) {
        cg_break(cb, rc, "cudaGraphLaunch (CARAVAN_CUDA_GRAPHS)");
        return;
    }
    G->n_launch++;
    G->n_nodes += n;
}

/* the stream has been synchronised: the arena's contents have been read */
void cg_synced(cuda_backend *cb)
{
    if (cb->graphs && !cb->graphs->capturing)
        cb->graphs->arena_off = 0;
}

/* from_host while graphs are on: true when done here (captured from the arena) */
bool cg_from_host(cuda_backend *cb, void *dst, const void *src, size_t n)
{
    cuda_graphs *G = cb->graphs;
    if (G->broken)
        return false;
    size_t need = (n + 15) & ~(size_t)15;
    if (need > GRAPH_ARENA_BYTES / 4)
        return false; /* large: a plain copy after flushing */
    if (G->arena_off + need > GRAPH_ARENA_BYTES) {
        cg_flush(cb);
        if (CB_CHECK(cb, cudaStreamSynchronize(cb->stream)))
            return true;
        G->arena_off = 0;
    }
    cg_begin(cb);
    if (!G->capturing)
        return false;
    uint8_t *a = G->arena + G->arena_off;
    memcpy(a, src, n);
    G->arena_off += need;
    CB_CHECK(cb, cudaMemcpyAsync(dst, a, n, cudaMemcpyHostToDevice, cb->stream));
    return true;
}
