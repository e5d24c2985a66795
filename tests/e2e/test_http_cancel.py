"""test_http_cancel.py - issue 5 acceptance 3 (HTTP part): an HTTP client
that disconnects - mid-stream, or while waiting for a non-streamed answer -
has its sequence freed at once (visible in /metrics and in gRPC Status),
while other clients' requests, running at the same time, complete with
exactly `caravan run`'s output."""
import http.client
import json
import re
import socket
import threading
import time

import openai

from conftest import run_reference


def metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    body = r.read().decode()
    conn.close()
    assert r.status == 200
    out = {}
    for line in body.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def context_length(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v1/models")
    n = json.loads(conn.getresponse().read())["data"][0]["context_length"]
    conn.close()
    return n


def raw_request(port, path, body):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % (path.encode(), len(data)) + data)
    return s


def read_events(s, n, timeout=30):
    """Read from the socket until n SSE 'data:' events have arrived."""
    buf = b""
    deadline = time.time() + timeout
    while buf.count(b"data: ") < n:
        assert time.time() < deadline, "no stream: %r" % buf[:300]
        chunk = s.recv(65536)
        assert chunk, "server closed the stream early: %r" % buf[:300]
        buf += chunk
    return buf


def wait_freed(c, before, n_disconnects, timeout=15):
    deadline = time.time() + timeout
    m = None
    while time.time() < deadline:
        m = metrics(c.http_port)
        if m.get("caravan_http_client_disconnects_total", 0) >= n_disconnects and \
                m["caravan_running_sequences"] == 0 and m["caravan_requests_active"] == 0 and \
                m["caravan_queue_depth"] == 0:
            return m
        time.sleep(0.05)
    raise AssertionError("sequence not freed after the client left: %s" % m)


def background_clients(c, results):
    """Two ordinary clients (streamed and not) running while others disconnect."""
    cl = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % c.http_port, api_key="x", timeout=120,
                       max_retries=0)

    def one(prompt, stream):
        try:
            if stream:
                text = "".join(ch.choices[0].text for ch in cl.completions.create(
                    model="m", prompt=prompt, max_tokens=200, temperature=0, stream=True) if ch.choices)
            else:
                text = cl.completions.create(model="m", prompt=prompt, max_tokens=200,
                                             temperature=0).choices[0].text
            results.append((prompt, text))
        except Exception as e:  # reported by the main thread
            results.append((prompt, e))

    ts = [threading.Thread(target=one, args=("Lily and Ben went to the park", True)),
          threading.Thread(target=one, args=("The little dog", False))]
    for t in ts:
        t.start()
    return ts


def test_disconnect_mid_stream_frees_the_sequence(coordinator):
    c = coordinator(http=True)
    c.add_worker(slots=4)
    n_ctx = context_length(c.http_port)
    long_req = {"prompt": "Once upon a time", "max_tokens": n_ctx - 64, "temperature": 0,
                "ignore_eos": True, "stream": True}
    before = metrics(c.http_port)
    results = []
    threads = background_clients(c, results)

    s = raw_request(c.http_port, "/v1/completions", long_req)
    head = read_events(s, 3)
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    s.close()  # the client goes away mid-stream
    deadline = time.time() + 15
    while metrics(c.http_port).get("caravan_http_client_disconnects_total", 0) < 1:
        assert time.time() < deadline, "disconnect not noticed"
        time.sleep(0.02)
    # the others continue and finish unchanged
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    assert len(results) == 2
    for prompt, text in results:
        assert not isinstance(text, Exception), text
        assert text == run_reference(prompt, 200)[1], prompt
    # nothing is left holding a slot, and the long request stopped early: its
    # tokens plus the two others' (<= 400) are far fewer than it asked for
    m = wait_freed(c, before, 1)
    generated = m["caravan_generation_tokens_total"] - before["caravan_generation_tokens_total"]
    assert generated < 400 + long_req["max_tokens"] // 4, generated
    st = c.status()
    assert st.running == 0 and st.active_requests == 0 and all(g.slots_used == 0 for g in st.groups)


def test_disconnect_while_waiting_non_streamed(coordinator):
    c = coordinator(http=True)
    c.add_worker(slots=4)
    n_ctx = context_length(c.http_port)
    before = metrics(c.http_port)
    s = raw_request(c.http_port, "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": "Tell me a story"}],
                     "max_tokens": n_ctx - 64, "temperature": 0, "ignore_eos": True})
    # wait until it runs, then leave without reading the answer
    deadline = time.time() + 15
    while metrics(c.http_port)["caravan_running_sequences"] == 0:
        assert time.time() < deadline
        time.sleep(0.01)
    s.close()
    m = wait_freed(c, before, 1)
    generated = m["caravan_generation_tokens_total"] - before["caravan_generation_tokens_total"]
    assert generated < (n_ctx - 64) // 2, generated
    # many clients that vanish at once: all freed, the coordinator keeps serving
    socks = [raw_request(c.http_port, "/v1/completions", {"prompt": "The little dog",
                                                          "max_tokens": n_ctx - 64, "ignore_eos": True,
                                                          "temperature": 0, "stream": i % 2 == 0})
             for i in range(8)]
    deadline = time.time() + 15  # 4 running (4 slots) and 4 queued
    while True:
        m = metrics(c.http_port)
        if m["caravan_running_sequences"] + m["caravan_queue_depth"] == 8:
            break
        assert time.time() < deadline, m
        time.sleep(0.01)
    for s in socks:
        s.close()
    wait_freed(c, before, 9)
    ref = run_reference("Once upon a time", 32)[1]
    cl = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % c.http_port, api_key="x", timeout=60,
                       max_retries=0)
    assert cl.completions.create(model="m", prompt="Once upon a time", max_tokens=32,
                                 temperature=0).choices[0].text == ref
