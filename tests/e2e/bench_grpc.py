"""bench_grpc.py - coordinator throughput (issue 5 acceptance 6), not a test:

  python tests/e2e/bench_grpc.py [--model M] [--groups G] [--threads T] [--tokens N] [--reps R]

1. single stream: generation tok/s of one gRPC stream through the coordinator
   (one single-rank group) vs `caravan run` on the same model and threads
   (median of R runs each, first token excluded on both sides);
2. 1, 8 and 32 concurrent clients, each sending requests back to back:
   requests/s and generated tokens/s over the whole run.
Prints one grep-able line per measurement."""
import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import BIN, STORIES, Coordinator, pb  # noqa: E402


def run_tok_s(model, n, threads):
    out = subprocess.run([BIN, "run", "-m", model, "-n", str(n), "--temp", "0", "--ignore-eos", "-t", str(threads)],
                         capture_output=True, timeout=600)
    m = re.search(r"gen_tok_s=([0-9.]+)", out.stderr.decode())
    return float(m.group(1))


def stream_tok_s(stub, n):
    req = pb.GenerateRequest(prompt="", max_tokens=n, ignore_eos=True)
    t_first = t_last = None
    count = 0
    for r in stub.Generate(req, timeout=600):
        if r.token_ids:
            now = time.perf_counter()
            if t_first is None:
                t_first = now
            t_last = now
            count += len(r.token_ids)
    return (count - 1) / (t_last - t_first)


def load(c, clients, n, per_client):
    done = [0] * clients
    toks = [0] * clients

    def worker(i):
        stub = c.stub()
        for k in range(per_client):
            req = pb.GenerateRequest(prompt="Once upon a time", max_tokens=n, ignore_eos=True,
                                     sampling=pb.SamplingParams(temperature=0.8, seed=i * 1000 + k))
            for r in stub.Generate(req, timeout=600):
                toks[i] += len(r.token_ids)
            done[i] += 1

    ths = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    dt = time.perf_counter() - t0
    return sum(done) / dt, sum(toks) / dt, sum(done), dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=STORIES)
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--slots", type=int, default=32)
    a = ap.parse_args()
    name = os.path.basename(a.model)
    c = Coordinator(model=a.model)
    try:
        for _ in range(a.groups):
            c.add_worker(slots=a.slots, extra=["-t", str(a.threads)])
        stub = c.stub()
        stream_tok_s(stub, 16)  # warm-up
        run_tok_s(a.model, 16, a.threads)
        rs = [run_tok_s(a.model, a.tokens, a.threads) for _ in range(a.reps)]
        cs = [stream_tok_s(stub, a.tokens) for _ in range(a.reps)]
        r, s = statistics.median(rs), statistics.median(cs)
        print("bench_grpc single_stream model=%s threads=%d tokens=%d run_tok_s=%.1f coord_tok_s=%.1f ratio=%.3f"
              % (name, a.threads, a.tokens, r, s, s / r), flush=True)
        for clients in (1, 8, 32):
            per = max(2, 64 // clients)
            rps, tps, nreq, dt = load(c, clients, a.tokens // 2, per)
            print("bench_grpc concurrent model=%s groups=%d threads=%d clients=%d requests=%d tokens_per_req=%d "
                  "wall_s=%.2f req_s=%.2f tok_s=%.1f" % (name, a.groups, a.threads, clients, nreq, a.tokens // 2,
                                                        dt, rps, tps), flush=True)
    finally:
        c.stop()


if __name__ == "__main__":
    main()
