"""test_grpc_concurrent.py - issue 5 acceptance 2: 32 concurrent gRPC streams
over 2 worker groups, one TP2 and one PP2 (each `mpirun -np 2 caravan
worker`), and every stream equals its sequential result (`caravan run` with
the same prompt and sampling parameters, one process, one sequence)."""
import threading

import grpc

from conftest import generate, run_reference

WORDS = ["Once upon a time", "The little dog", "Lily and Ben", "One day", "The sun was", "Tom had",
         "A cat sat", "There was a big tree", "Mom said", "The bird"]


def cases():
    out = []
    for i in range(32):
        p = WORDS[i % len(WORDS)] + ("" if i < len(WORDS) else " and" * (i // len(WORDS)))
        temp = 0.0 if i % 3 == 0 else 0.8
        out.append((p, 40 + (i % 5) * 12, temp, 1000 + i))
    return out


def test_32_streams_over_tp2_and_pp2(coordinator):
    c = coordinator()
    c.add_worker(tp=2, slots=16)
    c.add_worker(pp=2, slots=16)
    st = c.status()
    assert sorted((g.tp, g.pp, g.ranks) for g in st.groups) == [(1, 2, 2), (2, 1, 2)], st
    cs = cases()
    refs = [run_reference(p, n, temp=t, seed=s) for p, n, t, s in cs]
    out, errs = {}, {}

    def one(i):
        p, n, t, s = cs[i]
        try:
            out[i] = generate(c.stub(), p, n, temp=t, seed=s, timeout=300)
        except grpc.RpcError as e:
            errs[i] = (e.code(), e.details())

    ths = [threading.Thread(target=one, args=(i,)) for i in range(len(cs))]
    for t in ths:
        t.start()
    for t in ths:
        t.join(timeout=600)
    assert not errs, errs
    bad = [i for i in range(len(cs)) if (out[i][0], out[i][1]) != refs[i]]
    for i in bad[:5]:
        print("case %d %r:\n got %s\n ref %s" % (i, cs[i], out[i][0], refs[i][0]))
    assert not bad, "%d of %d streams differ from their sequential result" % (len(bad), len(cs))
    st = c.wait_idle()
    assert all(g.steps_done > 0 for g in st.groups), "both groups should have served: %s" % st
    assert st.requests_total == len(cs)
