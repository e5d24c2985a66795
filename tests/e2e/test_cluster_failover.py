"""test_cluster_failover.py - issue 5 acceptance 4: kill one of two groups
mid-generation and every request still completes with exactly the tokens of
an undisturbed run (replayed from its token history on the other group); kill
the only group and requests fail with a clear UNAVAILABLE; start a new group
and the next request succeeds. Also `caravan serve` restarting a dead group."""
import subprocess
import threading
import time

import grpc
import pytest

from conftest import BIN, STORIES, Proc, generate, pb, pbg, run_reference

PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben", "One day", "The sun was",
           "Tom had a red ball", "A cat sat", "There was a big tree"]
N = 600


def test_kill_one_of_two_groups(coordinator):
    c = coordinator()
    w0 = c.add_worker(slots=4)
    w1 = c.add_worker(slots=4)
    refs = [run_reference(p, N, ignore_eos=True, temp=(0.8 if i % 2 else 0.0), seed=7 + i)[0]
            for i, p in enumerate(PROMPTS)]
    out, errs = {}, {}
    # all eight at once (greedy and seeded sampling alternate)
    def one(i, p):
        try:
            out[i] = generate(c.stub(), p, N, ignore_eos=True, temp=(0.8 if i % 2 else 0.0), seed=7 + i)[0]
        except grpc.RpcError as e:
            errs[i] = (e.code(), e.details())

    ths = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(PROMPTS)]
    for t in ths:
        t.start()
    # both groups busy, generation under way: kill one
    deadline = time.time() + 60
    while time.time() < deadline:
        st = c.status()
        if len(st.groups) == 2 and all(g.slots_used > 0 for g in st.groups) and st.tokens_generated >= 16:
            break
        time.sleep(0.01)
    assert all(g.slots_used > 0 for g in st.groups), st
    assert st.tokens_generated < len(PROMPTS) * N, "too late to kill mid-generation"
    w1.kill()
    for t in ths:
        t.join(timeout=300)
    assert not errs, errs
    for i in range(len(PROMPTS)):
        assert out[i] == refs[i], "prompt %d differs after failover:\n got %s\n ref %s" % (i, out[i], refs[i])
    st = c.wait_groups(1)
    assert st.groups[0].slots_used == 0

    # kill the only group: a running request and new ones get UNAVAILABLE
    it = c.stub().Generate(pb.GenerateRequest(prompt="", max_tokens=2000, ignore_eos=True), timeout=120)
    next(it)
    w0.kill()
    with pytest.raises(grpc.RpcError) as ei:
        for _ in it:
            pass
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
    c.wait_groups(0)
    with pytest.raises(grpc.RpcError) as ei:
        generate(c.stub(), "Once upon a time", 8)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE and "worker group" in ei.value.details()

    # a new group joins: service resumes
    c.add_worker()
    ids, _, _, _, _ = generate(c.stub(), "Once upon a time", 40)
    assert ids == run_reference("Once upon a time", 40)[0]


def test_serve_restarts_dead_group():
    from conftest import need_model

    need_model()
    p = Proc([BIN, "serve", "-m", STORIES, "--grpc-port", "0", "--http-port", "-1", "--cluster-port", "0",
              "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "2000", "-t", "1", "--slots", "4"],
             name="serve")
    try:
        import select
        import os

        buf = b""
        deadline = time.time() + 30
        while b"\n" not in buf and time.time() < deadline:
            r, _, _ = select.select([p.p.stdout], [], [], 0.2)
            if r:
                buf += os.read(p.p.stdout.fileno(), 256)
        kv = dict(t.split("=", 1) for t in buf.decode().split() if "=" in t)
        ch = grpc.insecure_channel("127.0.0.1:" + kv["grpc"])
        stub = pbg.CaravanStub(ch)

        def groups():
            return stub.Status(pb.StatusRequest(), timeout=5).groups

        deadline = time.time() + 60
        while len(groups()) != 1 and time.time() < deadline:
            time.sleep(0.1)
        assert len(groups()) == 1
        first = groups()[0].name
        kids = subprocess.run(["pgrep", "-P", str(p.p.pid)], capture_output=True).stdout.split()
        assert len(kids) == 1
        subprocess.run(["kill", "-9", kids[0].decode()])
        deadline = time.time() + 60
        while time.time() < deadline:
            g = groups()
            if len(g) == 1 and g[0].name != first:
                break
            time.sleep(0.1)
        g = groups()
        assert len(g) == 1 and g[0].name != first, "group not restarted:\n" + p.logtext()
        ids, _, _, _, _ = generate(stub, "Once upon a time", 20)
        assert ids == run_reference("Once upon a time", 20)[0]
        ch.close()
    finally:
        p.stop()
    assert "restarting" in p.logtext()


def test_worker_leaves_when_coordinator_goes(coordinator):
    """The group's leader notices a coordinator that went away and exits non-zero
    (so a supervisor or `caravan serve` restarts it) instead of hanging."""
    c = coordinator()
    w = c.add_worker()
    c.proc.kill()  # SIGKILL: no goodbye
    w.proc.p.wait(timeout=60)
    assert w.proc.p.returncode not in (0, None)
    assert "leaving" in w.proc.logtext() or "closed" in w.proc.logtext()
