"""test_cluster_bad_input.py - issue 5 acceptance 5, cluster side: garbage
bytes, an invalid protobuf frame, an oversized frame (refused from its
header), a wrong protocol version (the Error names both versions), a wrong or
missing cluster token, messages out of order, and a group that joins then
goes silent: each peer gets an Error and/or its connection closed, and the
coordinator keeps serving with its real group."""
import os
import socket
import struct
import subprocess
import time

from conftest import BIN, STORIES, cpb, generate, run_reference

VERSION = 1


def frame(env):
    b = env.SerializeToString()
    return struct.pack("<I", len(b)) + b


def read_frame(s, timeout=10):
    s.settimeout(timeout)
    hdr = b""
    while len(hdr) < 4:
        b = s.recv(4 - len(hdr))
        if not b:
            return None
        hdr += b
    n = struct.unpack("<I", hdr)[0]
    body = b""
    while len(body) < n:
        b = s.recv(n - len(body))
        if not b:
            return None
        body += b
    env = cpb.Envelope()
    env.ParseFromString(body)
    return env


def expect_error_and_close(s, words=()):
    """The peer gets an Error envelope (any heartbeats before it are skipped), then EOF."""
    err = None
    for _ in range(50):
        env = read_frame(s)
        if env is None:
            break
        if env.WhichOneof("msg") == "error":
            err = env.error
            break
    assert err is not None, "no Error frame before the close"
    for w in words:
        assert w in err.message, (w, err.message)
    s.settimeout(10)
    rest = b""
    while True:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            break
        if not b:
            break
        rest += b
    return err


def hello(version=VERSION, token="", slots=4):
    return cpb.Envelope(hello=cpb.Hello(version=version, token=token, ranks=1, n_slots=slots, n_ctx=256,
                                        stages=1, tp=1, model="fake", software="test"))


def connect(c):
    return socket.create_connection(("127.0.0.1", c.cluster_port), timeout=10)


def still_serving(c, n_groups=1):
    st = c.status()
    assert len(st.groups) == n_groups, st
    ids, _, _, _, _ = generate(c.stub(), "Once upon a time", 12)
    assert ids == run_reference("Once upon a time", 12)[0]


def test_garbage_invalid_oversized(coordinator):
    c = coordinator(extra=["--max-frame", "4096"])
    c.add_worker()
    # garbage: a plausible length then junk that is not protobuf
    s = connect(c)
    s.sendall(struct.pack("<I", 16) + b"\xff" * 16)
    expect_error_and_close(s, ["invalid protobuf"])
    s.close()
    still_serving(c)
    # random bytes (the length is huge): refused from the header
    s = connect(c)
    s.sendall(os.urandom(3) + b"\x7f" + os.urandom(200))
    expect_error_and_close(s, ["over the maximum"])
    s.close()
    # oversized frame: 1 GiB announced, nothing allocated, refused at once
    s = connect(c)
    s.sendall(struct.pack("<I", 1 << 30))
    expect_error_and_close(s, ["1073741824", "4096"])
    s.close()
    # just over the configured maximum, body sent in full
    s = connect(c)
    s.sendall(struct.pack("<I", 4097) + b"\x00" * 4097)
    expect_error_and_close(s, ["over the maximum"])
    s.close()
    # an empty frame, then a truncated frame and a vanished peer
    s = connect(c)
    s.sendall(struct.pack("<I", 0))
    expect_error_and_close(s)
    s.close()
    s = connect(c)
    s.sendall(struct.pack("<I", 100) + b"\x0a\x02")
    s.close()
    still_serving(c)


def test_version_token_order(coordinator):
    c = coordinator(extra=["--cluster-token", "t0ken"])
    # wrong version: the Error names both versions
    s = connect(c)
    s.sendall(frame(hello(version=999, token="t0ken")))
    err = expect_error_and_close(s, ["999", "version %d" % VERSION, "mismatch"])
    s.close()
    # wrong / missing token
    for tok in ("wrong", ""):
        s = connect(c)
        s.sendall(frame(hello(token=tok)))
        expect_error_and_close(s, ["token"])
        s.close()
    # a Step before Hello
    s = connect(c)
    s.sendall(frame(cpb.Envelope(step=cpb.Step(id=1))))
    expect_error_and_close(s, ["unexpected"])
    s.close()
    # a real worker with the wrong token is refused (exit status 3) and says why
    bad = subprocess.run([BIN, "worker", "--join", c.cluster_addr, "-m", STORIES, "-t", "1",
                          "--cluster-token", "nope"], capture_output=True, timeout=60)
    assert bad.returncode == 3, bad.stderr
    assert b"token" in bad.stderr
    assert len(c.status().groups) == 0
    # the right token joins and serves
    c.add_worker(token="t0ken")
    still_serving(c)


def test_silent_group_is_dropped(coordinator):
    """A fake group that says Hello and Ready, takes a step and then never answers
    is dropped after the heartbeat timeout; its request is replayed on the real
    group and completes with the undisturbed tokens."""
    c = coordinator()
    s = connect(c)
    s.sendall(frame(hello(slots=4)))
    env = read_frame(s)
    assert env.WhichOneof("msg") == "assign"
    s.sendall(frame(cpb.Envelope(ready=cpb.Ready(n_slots=4, n_ctx=2048, stages=1, plan="fake"))))
    c.wait_groups(1)
    # a request lands on the fake group (the only one)
    it = c.stub().Generate(__import__("caravan_pb2").GenerateRequest(prompt="Once upon a time", max_tokens=40),
                           timeout=120)
    got_step = False
    for _ in range(50):
        env = read_frame(s)
        if env is not None and env.WhichOneof("msg") == "step":
            got_step = True
            break
    assert got_step
    # the real group joins; the fake one goes silent (no results, no heartbeats)
    c.add_worker(wait=False)
    ids = [i for r in it for i in r.token_ids]
    assert ids == run_reference("Once upon a time", 40)[0]
    st = c.wait_groups(1)
    assert st.groups[0].name != ""
    s.close()
    still_serving(c)
