"""conftest.py - shared fixtures for the end-to-end tests: the caravan binary,
the shared models, protobuf stubs generated from proto/*.proto at test time
(grpcio-tools), and helpers that start a coordinator and worker groups on free
ports and always stop them.

Environment (set by ctest, see tests/CMakeLists.txt): CARAVAN_BIN,
CARAVAN_MODELS, CARAVAN_SRC. Nothing here waits without a bound."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

SRC = os.environ.get("CARAVAN_SRC", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("CARAVAN_BIN", os.path.join(SRC, "build", "cli", "caravan"))
MODELS = os.environ.get("CARAVAN_MODELS", os.path.join(SRC, "..", "shared", "models"))
STORIES = os.path.join(MODELS, "stories260K.gguf")

_GEN_DIR = tempfile.mkdtemp(prefix="caravan-pb-")


def _gen_stubs():
    from grpc_tools import protoc
    import grpc_tools

    inc = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for p in ("caravan.proto", "cluster.proto"):
        rc = protoc.main(["protoc", "-I" + os.path.join(SRC, "proto"), "-I" + inc,
                          "--python_out=" + _GEN_DIR, "--grpc_python_out=" + _GEN_DIR, p])
        if rc != 0:
            raise RuntimeError("protoc failed for " + p)
    sys.path.insert(0, _GEN_DIR)


_gen_stubs()
import caravan_pb2 as pb  # noqa: E402
import caravan_pb2_grpc as pbg  # noqa: E402
import cluster_pb2 as cpb  # noqa: E402

import grpc  # noqa: E402


def need_model(path=STORIES):
    if not os.path.exists(path):
        if os.environ.get("CI") == "true":
            pytest.fail("missing test model " + path)
        pytest.skip("missing test model " + path)


class Proc:
    """A child process whose output goes to a log file; stop() always reaps it."""

    def __init__(self, args, env=None, name="proc"):
        self.log = tempfile.NamedTemporaryFile(prefix="caravan-%s-" % name, suffix=".log", delete=False)
        e = dict(os.environ)
        e.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        e.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        e.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
        if env:
            e.update(env)
        self.args = args
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, env=e,
                                  start_new_session=True)

    def alive(self):
        return self.p.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=10):
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.p.wait(timeout=timeout)
        if self.p.stdout:
            self.p.stdout.close()
        self.log.close()

    def logtext(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()


class Coordinator:
    """`caravan coordinator` on ephemeral ports (127.0.0.1)."""

    def __init__(self, model=STORIES, extra=(), http=False, env=None):
        args = [BIN, "coordinator", "-m", model, "--grpc-port", "0", "--cluster-port", "0",
                "--http-port", "0" if http else "-1", "--heartbeat-ms", "200",
                "--heartbeat-timeout-ms", "2000"] + list(extra)
        self.model = model
        self.proc = Proc(args, env=env, name="coord")
        line = self._read_line(timeout=20)
        kv = dict(t.split("=", 1) for t in line.split() if "=" in t)
        self.grpc_port = int(kv["grpc"])
        self.http_port = int(kv["http"])
        self.cluster_port = int(kv["cluster"])
        self.grpc_addr = "127.0.0.1:%d" % self.grpc_port
        self.cluster_addr = "127.0.0.1:%d" % self.cluster_port
        self.workers = []
        self._channels = []

    def _read_line(self, timeout):
        import select

        deadline = time.time() + timeout
        buf = b""
        fd = self.proc.p.stdout
        while time.time() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                ch = os.read(fd.fileno(), 1)
                if not ch:
                    break
                buf += ch
                if ch == b"\n" and b"listening" in buf:
                    return buf.decode()
            elif not self.proc.alive():
                break
        raise RuntimeError("coordinator did not start: %r\n%s" % (buf, self.proc.logtext()))

    def stub(self, metadata_key=None):
        ch = grpc.insecure_channel(self.grpc_addr)
        self._channels.append(ch)
        return pbg.CaravanStub(ch)

    def add_worker(self, extra=(), tp=1, pp=1, slots=16, token=None, wait=True):
        w = Worker(self, extra=extra, tp=tp, pp=pp, slots=slots, token=token)
        self.workers.append(w)
        if wait:
            self.wait_groups(len([x for x in self.workers if x.proc.alive()]))
        return w

    def status(self, timeout=5, metadata=None):
        return self.stub().Status(pb.StatusRequest(), timeout=timeout, metadata=metadata)

    def wait_groups(self, n, timeout=60, metadata=None):
        deadline = time.time() + timeout
        st = None
        while time.time() < deadline:
            st = self.status(metadata=metadata)
            if len(st.groups) == n:
                return st
            for w in self.workers:
                if not w.proc.alive() and w.expect_alive:
                    raise RuntimeError("worker died:\n" + w.proc.logtext())
            time.sleep(0.1)
        raise RuntimeError("expected %d groups, have %s\n%s" % (
            n, st and len(st.groups), "\n".join(w.proc.logtext() for w in self.workers)))

    def wait_idle(self, timeout=30, metadata=None):
        """Until no request is active and no slot is held."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.status(metadata=metadata)
            if st.active_requests == 0 and st.running == 0 and st.queue_depth == 0 and \
                    all(g.slots_used == 0 for g in st.groups):
                return st
            time.sleep(0.05)
        raise RuntimeError("coordinator not idle: %s" % st)

    def stop(self):
        for ch in self._channels:
            ch.close()
        for w in self.workers:
            w.stop()
        self.proc.stop()


class Worker:
    def __init__(self, coord, extra=(), tp=1, pp=1, slots=16, token=None):
        args = []
        n = tp * pp
        if n > 1:
            args = ["mpirun", "-np", str(n), "--oversubscribe"]
        args += [BIN, "worker", "--join", coord.cluster_addr, "-m", coord.model, "-t", "1",
                 "--slots", str(slots), "--timeout-ms", "5000"]
        if n > 1:
            args += ["--tp", str(tp), "--pp", str(pp)]
        args += list(extra)
        env = {"CARAVAN_CLUSTER_TOKEN": token} if token else None
        self.expect_alive = True
        self.proc = Proc(args, env=env, name="worker")

    def kill(self):
        self.expect_alive = False
        self.proc.kill()
        try:
            self.proc.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self):
        self.expect_alive = False
        self.proc.stop()


@pytest.fixture
def coordinator():
    """Factory: coordinator(extra=..., http=...) -> Coordinator, stopped at teardown."""
    need_model()
    made = []

    def make(**kw):
        c = Coordinator(**kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


_REF_CACHE = {}


def run_reference(prompt, n, temp=0.0, seed=None, ignore_eos=False, model=STORIES, extra=()):
    """Token ids and text from `caravan run --json` (the oracle)."""
    key = (prompt, n, temp, seed, ignore_eos, model, tuple(extra))
    if key in _REF_CACHE:
        return _REF_CACHE[key]
    args = [BIN, "run", "-m", model, "-p", prompt, "-n", str(n), "--temp", str(temp), "--json", "-t", "1"]
    if seed is not None:
        args += ["--seed", str(seed)]
    if ignore_eos:
        args.append("--ignore-eos")
    args += list(extra)
    out = subprocess.run(args, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    ids, text = [], ""
    for line in out.stdout.decode().splitlines():
        o = json.loads(line)
        ids.append(o["id"])
        text += o.get("text", "")
    _REF_CACHE[key] = (ids, text)
    return ids, text


# `caravan run`'s sampling defaults besides the temperature (llama.cpp's)
RUN_TOP_K, RUN_TOP_P, RUN_MIN_P = 40, 0.95, 0.05


def generate(stub, prompt, n, temp=0.0, seed=0, ignore_eos=False, timeout=120, metadata=None, **kw):
    """One streamed Generate: (ids, text, chunks, finish_reason, usage). With
    temp > 0 the other sampling parameters are `caravan run`'s defaults."""
    sp = pb.SamplingParams(temperature=temp, seed=seed)
    if temp > 0:
        sp.top_k, sp.top_p, sp.min_p = RUN_TOP_K, RUN_TOP_P, RUN_MIN_P
    req = pb.GenerateRequest(prompt=prompt, max_tokens=n, ignore_eos=ignore_eos, sampling=sp, **kw)
    ids, text, chunks, finish, usage = [], "", 0, None, None
    for r in stub.Generate(req, timeout=timeout, metadata=metadata):
        chunks += 1
        ids += list(r.token_ids)
        text += r.text
        if r.finish_reason:
            finish, usage = r.finish_reason, r.usage
    return ids, text, chunks, finish, usage


def mpi_group_works():
    """True when `mpirun -np 2 caravan worker` can be used (MPI group built in)."""
    if not shutil_which("mpirun"):
        return False
    return True


def shutil_which(x):
    import shutil

    return shutil.which(x)
