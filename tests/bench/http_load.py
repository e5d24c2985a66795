#!/usr/bin/env python3
"""http_load.py - throughput of the OpenAI-compatible HTTP front end.

Starts `caravan coordinator` and one `caravan worker` (one rank, --threads T)
on free ports, then for each client count C (default 1, 8, 32) runs C
threads, each with its own keep-alive HTTP connection, sending
/v1/completions requests back to back (greedy, ignore_eos, max_tokens N) for
a fixed number of requests per client. Prints one grep-able line per C:

  http_load clients=C requests=R wall_s=.. req_s=.. tok_s=.. lat_p50_ms=.. lat_max_ms=.. errors=E

then the single-stream comparison: one streamed request of N tokens through
the coordinator (tokens after the first / time from first to last token)
against `caravan run`'s gen_tok_s for the same prompt and length, median of
--reps runs each:

  http_single coord_tok_s=.. run_tok_s=.. ratio=..

Every result is also checked: all greedy completions of one prompt must be
identical (the same tokens whatever the concurrency); a mismatch is counted
in errors and makes the exit status non-zero. Standard library only."""
import argparse
import http.client
import json
import os
import re
import select
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben went to the park", "One day, a cat"]


def start(args):
    cmd = [args.caravan, "coordinator", "-m", args.model, "--grpc-port", "-1", "--http-port", "0",
           "--cluster-port", "0", "--max-queue", "1024"]
    coord = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    line, deadline = b"", time.time() + 30
    while b"\n" not in line:
        if time.time() > deadline or coord.poll() is not None:
            coord.kill()
            sys.exit("coordinator did not start: %r" % line)
        if select.select([coord.stdout], [], [], 0.2)[0]:
            line += os.read(coord.stdout.fileno(), 4096)
    kv = dict(t.split("=", 1) for t in line.decode().split() if "=" in t)
    port, cluster = int(kv["http"]), int(kv["cluster"])
    worker = subprocess.Popen([args.caravan, "worker", "--join", "127.0.0.1:%d" % cluster, "-m", args.model,
                               "-t", str(args.threads), "--slots", str(args.slots)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                c.close()
                break
            c.close()
        except OSError:
            pass
        if time.time() > deadline or worker.poll() is not None:
            stop([coord, worker])
            sys.exit("worker did not join")
        time.sleep(0.1)
    return port, [coord, worker]


def stop(procs):
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def body(prompt, n, stream=False):
    b = {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True, "stream": stream}
    if stream:
        b["stream_options"] = {"include_usage": True}
    return json.dumps(b)


def client_loop(port, idx, n_req, n_tok, out):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    for k in range(n_req):
        prompt = PROMPTS[(idx + k) % len(PROMPTS)]
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/completions", body=body(prompt, n_tok),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            j = json.loads(r.read())
            dt = time.perf_counter() - t0
            if r.status != 200:
                out.append((prompt, None, 0, dt, "status %d %s" % (r.status, j)))
                continue
            out.append((prompt, j["choices"][0]["text"], j["usage"]["completion_tokens"], dt, None))
        except Exception as e:  # counted as an error
            out.append((prompt, None, 0, time.perf_counter() - t0, repr(e)))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.close()


def run_level(port, clients, n_req, n_tok, ref):
    out = []
    ths = [threading.Thread(target=client_loop, args=(port, i, n_req, n_tok, out)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    wall = time.perf_counter() - t0
    errors = 0
    for prompt, text, _, _, err in out:
        if err:
            errors += 1
            print("  error:", prompt, err, file=sys.stderr)
        elif ref.setdefault(prompt, text) != text:
            errors += 1
            print("  mismatch for %r" % prompt, file=sys.stderr)
    toks = sum(o[2] for o in out)
    lats = sorted(o[3] for o in out)
    print("http_load clients=%d requests=%d max_tokens=%d wall_s=%.3f req_s=%.2f tok_s=%.1f "
          "lat_p50_ms=%.1f lat_max_ms=%.1f errors=%d" % (
              clients, len(out), n_tok, wall, len(out) / wall, toks / wall,
              1000 * statistics.median(lats), 1000 * lats[-1], errors), flush=True)
    return errors


def single_stream(port, n_tok):
    """tok/s of one streamed request: tokens after the first over first->last time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/completions", body=body(PROMPTS[0], n_tok, stream=True),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    times, buf, n_gen = [], b"", None
    while True:
        d = r.read1(65536)
        if not d:
            break
        now = time.perf_counter()
        buf += d
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if ev.startswith(b"data: {"):
                j = json.loads(ev[6:])
                if j.get("usage"):
                    n_gen = j["usage"]["completion_tokens"]
                elif j["choices"] and j["choices"][0]["text"]:
                    times.append(now)
    conn.close()
    # the first event carries the first token; n_gen - 1 tokens follow it
    return (n_gen - 1) / (times[-1] - times[0])


def run_tok_s(args, n_tok):
    out = subprocess.run([args.caravan, "run", "-m", args.model, "-p", PROMPTS[0], "-n", str(n_tok),
                          "--temp", "0", "--ignore-eos", "-t", str(args.threads)],
                         capture_output=True, timeout=600)
    m = re.search(r"gen_tok_s=([0-9.]+)", out.stderr.decode())
    if not m:
        sys.exit("no gen_tok_s in caravan run's output: %s" % out.stderr.decode())
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--caravan", default=os.environ.get("CARAVAN_BIN", os.path.join(SRC, "build", "cli", "caravan")))
    ap.add_argument("--model", default=os.path.join(os.environ.get("CARAVAN_MODELS", os.path.join(SRC, "..", "shared", "models")),
                                                    "stories260K.gguf"))
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests", type=int, default=8, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--single-tokens", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1, help="worker and caravan run threads")
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    port, procs = start(args)
    errors = 0
    try:
        ref = {}
        run_level(port, 1, 1, args.max_tokens, ref)  # warm-up, also the reference texts
        for c in [int(x) for x in args.clients.split(",")]:
            errors += run_level(port, c, args.requests, args.max_tokens, ref)
        co, ru = [], []
        for _ in range(args.reps):  # interleaved, so both see the same machine load
            co.append(single_stream(port, args.single_tokens))
            ru.append(run_tok_s(args, args.single_tokens))
        c_med, r_med = statistics.median(co), statistics.median(ru)
        print("http_single tokens=%d threads=%d coord_tok_s=%.1f run_tok_s=%.1f ratio=%.3f "
              "coord_runs=%s run_runs=%s" % (args.single_tokens, args.threads, c_med, r_med, c_med / r_med,
                                             ",".join("%.0f" % x for x in co), ",".join("%.0f" % x for x in ru)))
    finally:
        stop(procs)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
