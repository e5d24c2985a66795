"""test_http_bad_input.py - issue 5 acceptance 5 (HTTP part): garbage bytes,
malformed HTTP, invalid JSON, a prompt over the context, negative or absurd
parameters, oversized bodies, wrong methods/paths, a wrong API key, a full
queue and no worker group - each answered with the right status and an
OpenAI-shaped error, and the coordinator still serving afterwards (its next
request equals `caravan run`)."""
import http.client
import json
import os
import random
import socket
import time

from conftest import run_reference


def post(port, path, body, headers=None, raw=False, method="POST"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)  # a loaded machine
    data = body if raw else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    out = r.read()
    conn.close()
    try:
        j = json.loads(out)
    except ValueError:
        j = None
    return r.status, j, out


def get(port, path, headers=None):
    return post(port, path, None, headers=headers, raw=True, method="GET")


def assert_error(status, j, want_status, param=None, code=None):
    assert status == want_status, (status, j)
    assert isinstance(j, dict) and set(j) == {"error"}, j
    e = j["error"]
    assert set(e) == {"message", "type", "param", "code"}, e
    assert isinstance(e["message"], str) and e["message"]
    if param is not None:
        assert e["param"] == param, e
    if code is not None:
        assert e["code"] == code, e
    return e


def still_serving(c, headers=None):
    ref = run_reference("Once upon a time", 24)[1]
    st, j, _ = post(c.http_port, "/v1/completions",
                    {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}, headers=headers)
    assert st == 200 and j["choices"][0]["text"] == ref, (st, j)


def test_garbage_and_malformed_http(coordinator):
    c = coordinator(http=True)
    c.add_worker()
    rng = random.Random(5)
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", c.http_port), timeout=10)
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        if i % 3 == 0:
            junk += b"\r\n\r\n"
        try:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                reply += d
        except (ConnectionResetError, BrokenPipeError):
            reply = b""
        s.close()
        # either a 4xx status line or a closed connection, never a 2xx or a hang
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4") or reply.startswith(b"HTTP/1.0 4"), reply[:200]
    # a request line with a bad version, a header block over the limit, a bad chunked body
    for req in [b"POST /v1/completions HTTP/7.3\r\n\r\n",
                b"GET /health HTTP/1.1\r\nX: " + b"a" * (80 << 10) + b"\r\n\r\n",
                b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]:
        s = socket.create_connection(("127.0.0.1", c.http_port), timeout=10)
        try:
            s.sendall(req)
            reply = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            reply = b""
        s.close()
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply[:200]
    still_serving(c)


def test_invalid_json_and_parameters(coordinator):
    c = coordinator(http=True)
    c.add_worker()
    p = c.http_port
    st, j, _ = post(p, "/v1/completions", b'{"prompt": "x", "max_tokens": ', raw=True)
    assert_error(st, j, 400, code="invalid_json")
    st, j, _ = post(p, "/v1/completions", b"\xff\xfe garbage", raw=True)
    assert_error(st, j, 400, code="invalid_json")
    st, j, _ = post(p, "/v1/chat/completions", b"", raw=True)
    assert_error(st, j, 400)
    st, j, _ = post(p, "/v1/completions", [1, 2, 3])
    assert_error(st, j, 400)
    base = {"prompt": "Once upon a time", "max_tokens": 8}
    bad = [
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 1 << 40}, "max_tokens"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"temperature": -3}, "temperature"),
        ({"temperature": 1e308 * 10}, None),  # json.dumps gives Infinity: invalid JSON
        ({"top_p": 7}, "top_p"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -5}, "top_k"),
        ({"top_k": 10 ** 12}, "top_k"),
        ({"min_p": 2}, "min_p"),
        ({"frequency_penalty": 99}, "frequency_penalty"),
        ({"presence_penalty": -9}, "presence_penalty"),
        ({"repetition_penalty": -1}, "repetition_penalty"),
        ({"n": 5}, "n"),
        ({"n": 0}, "n"),
        ({"best_of": 3}, "best_of"),
        ({"logprobs": 1000}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"logprobs": True}, "logprobs"),
        ({"seed": "abc"}, "seed"),
        ({"stop": ["s%d" % i for i in range(50)]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"stream": "yes"}, "stream"),
        ({"prompt": None}, "prompt"),
        ({"prompt": {"a": 1}}, "prompt"),
        ({"prompt": [1, "x"]}, "prompt"),
        ({"prompt": [1, 99999]}, "prompt"),
        ({"prompt": [1, -4]}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"logit_bias": {"5": 100}}, "logit_bias"),
        ({"echo": True, "logprobs": 2}, "echo"),
    ]
    for extra, param in bad:
        body = dict(base)
        body.update(extra)
        st, j, raw = post(p, "/v1/completions", body)
        if param is None:
            assert st == 400, (extra, st, raw)
            continue
        e = assert_error(st, j, 400, param=param)
        assert e["type"] == "invalid_request_error"
    missing = dict(base)
    del missing["prompt"]
    assert_error(*post(p, "/v1/completions", missing)[:2], 400, param="prompt")
    chat_bad = [
        {"messages": []},
        {"messages": "hi"},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        {"messages": [{"content": "no role"}]},
        {"messages": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
        {"messages": [{"role": "user", "content": "x"}], "n": 2},
        {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3},
        {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 500},
        {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -2},
        {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
    ]
    for body in chat_bad:
        st, j, _ = post(p, "/v1/chat/completions", body)
        assert_error(st, j, 400)
    still_serving(c)


def test_prompt_over_the_context(coordinator):
    c = coordinator(http=True)
    c.add_worker()
    p = c.http_port
    n_ctx = json.loads(get(p, "/v1/models")[2])["data"][0]["context_length"]
    st, j, _ = post(p, "/v1/completions", {"prompt": [1] + [300] * n_ctx, "max_tokens": 4})
    assert_error(st, j, 400, param="prompt", code="context_length_exceeded")
    st, j, _ = post(p, "/v1/completions", {"prompt": "Once upon a time " * (n_ctx // 2), "max_tokens": 4})
    assert_error(st, j, 400, param="prompt", code="context_length_exceeded")
    st, j, _ = post(p, "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": "the dog " * n_ctx}], "max_tokens": 4})
    assert_error(st, j, 400, param="messages", code="context_length_exceeded")
    # exactly at the limit minus one position: accepted, one token generated
    st, j, _ = post(p, "/v1/completions", {"prompt": [1] + [300] * (n_ctx - 2), "max_tokens": 50,
                                           "temperature": 0, "ignore_eos": True})
    assert st == 200 and j["usage"]["completion_tokens"] == 1 and j["choices"][0]["finish_reason"] == "length"
    still_serving(c)


def test_size_method_and_path_errors(coordinator):
    c = coordinator(http=True)
    c.add_worker()
    p = c.http_port
    # a body announced over the 8 MiB limit is refused before it is read
    s = socket.create_connection(("127.0.0.1", p), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % (9 << 20) + b'{"prompt": "' + b"a" * 4096)
    reply = s.recv(65536)
    s.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # a chunked body that grows over the limit
    s = socket.create_connection(("127.0.0.1", p), timeout=30)
    reply = b""
    try:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(9):
            s.sendall(b"%x\r\n" % (1 << 20) + b"a" * (1 << 20) + b"\r\n")
        reply = s.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        pass  # closed after the 413 while we were still writing
    s.close()
    assert reply == b"" or reply.startswith(b"HTTP/1.1 413"), reply[:200]
    st, j, _ = get(p, "/v1/completions")
    assert_error(st, j, 405)
    st, j, _ = post(p, "/health", {})
    assert_error(st, j, 405)
    st, j, _ = get(p, "/v1/nothing")
    assert_error(st, j, 404)
    st, j, _ = post(p, "/v1/completions", {"prompt": "x"}, method="DELETE")
    assert_error(st, j, 405)
    still_serving(c)


def test_api_key(coordinator):
    c = coordinator(http=True, extra=["--api-key", "sekrit-key"])
    c.add_worker(wait=False)
    c.wait_groups(1, metadata=[("authorization", "Bearer sekrit-key")])
    p = c.http_port
    body = {"prompt": "Once upon a time", "max_tokens": 4}
    for hdr in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekrit-key"},
                {"Authorization": "Bearer sekrit-key2"}, {"Authorization": "Bearer "}]:
        st, j, _ = post(p, "/v1/completions", body, headers=hdr)
        assert_error(st, j, 401, code="invalid_api_key")
        st, j, _ = post(p, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, headers=hdr)
        assert_error(st, j, 401)
        st, j, _ = get(p, "/v1/models", headers=hdr)
        assert_error(st, j, 401)
    import openai
    cl = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % p, api_key="wrong", max_retries=0, timeout=30)
    try:
        cl.completions.create(model="m", prompt="x", max_tokens=2)
        raise AssertionError("no error for a wrong key")
    except openai.AuthenticationError as e:
        assert e.status_code == 401
    # health and metrics need no key (probes, scrapers)
    assert get(p, "/health")[0] == 200 and get(p, "/metrics")[0] == 200
    still_serving(c, headers={"Authorization": "Bearer sekrit-key"})


def test_queue_full_is_429_and_no_group_is_503(coordinator):
    c = coordinator(http=True, extra=["--max-queue", "1"])
    p = c.http_port
    # no group yet: 503
    st, j, _ = post(p, "/v1/completions", {"prompt": "x", "max_tokens": 2})
    assert_error(st, j, 503, code="no_worker_group")
    assert get(p, "/health")[0] == 503
    c.add_worker(slots=1)
    n_ctx = json.loads(get(p, "/v1/models")[2])["data"][0]["context_length"]
    long_req = json.dumps({"prompt": "x", "max_tokens": n_ctx - 16, "ignore_eos": True,
                           "stream": True}).encode()

    def metric(name):
        for line in get(p, "/metrics")[2].decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    socks = []
    try:
        for want in ("caravan_running_sequences", "caravan_queue_depth"):
            s = socket.create_connection(("127.0.0.1", p), timeout=10)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                      % len(long_req) + long_req)
            socks.append(s)
            deadline = time.time() + 15
            while metric(want) < 1:
                assert time.time() < deadline, want
                time.sleep(0.01)
        st, j, _ = post(p, "/v1/completions", {"prompt": "x", "max_tokens": 2})
        assert_error(st, j, 429, code="queue_full")
    finally:
        for s in socks:
            s.close()
    deadline = time.time() + 15
    while metric("caravan_running_sequences") + metric("caravan_queue_depth") > 0:
        assert time.time() < deadline
        time.sleep(0.02)
    still_serving(c)
