"""test_http_health_metrics.py - /metrics is valid Prometheus text (parsed
by the official prometheus_client parser) whose counters follow the
requests actually made, and /health follows the worker groups: 503 with no
group, 200 once one joins, 503 when the only group is killed, 200 again when
a new one joins (and its next request equals `caravan run`)."""
import http.client
import json
import time

from prometheus_client.parser import text_string_to_metric_families

from conftest import run_reference


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    ctype = r.getheader("Content-Type")
    conn.close()
    return r.status, body, ctype


def post(port, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    out = json.loads(r.read())
    conn.close()
    return r.status, out


def scrape(port):
    """{family name: {(sample name, sorted labels): value}}, types {family: type}."""
    st, body, ctype = get(port, "/metrics")
    assert st == 200 and ctype.startswith("text/plain; version=0.0.4"), (st, ctype)
    fams, types = {}, {}
    for f in text_string_to_metric_families(body.decode()):
        types[f.name] = f.type
        d = fams.setdefault(f.name, {})
        for s in f.samples:
            d[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return fams, types


def value(fams, fam, sample=None, **labels):
    return fams[fam][(sample or fam, tuple(sorted(labels.items())))]


def wait_health(port, want, timeout=20):
    deadline = time.time() + timeout
    while True:
        st, body, _ = get(port, "/health")
        if st == want:
            return json.loads(body)
        assert time.time() < deadline, "health stayed %d: %s" % (st, body)
        time.sleep(0.05)


def test_metrics_parse_and_count(coordinator):
    c = coordinator(http=True)
    c.add_worker(slots=4)
    p = c.http_port
    f0, types = scrape(p)
    want = {
        "caravan_http_requests": "counter", "caravan_http_client_disconnects": "counter",
        "caravan_requests": "counter", "caravan_requests_rejected": "counter",
        "caravan_queue_depth": "gauge", "caravan_running_sequences": "gauge",
        "caravan_prompt_tokens": "counter", "caravan_generation_tokens": "counter",
        "caravan_groups_up": "gauge", "caravan_group_slots": "gauge",
        "caravan_group_step_latency_seconds": "summary",
    }
    for name, t in want.items():
        assert types.get(name) == t, (name, types.get(name))
    assert value(f0, "caravan_groups_up") == 1
    assert value(f0, "caravan_queue_depth") == 0 and value(f0, "caravan_running_sequences") == 0
    gid = [k for k in f0["caravan_group_slots"]][0][1]
    assert f0["caravan_group_slots"][("caravan_group_slots", gid)] == 4

    total = 0
    for prompt in ("Once upon a time", "The little dog"):
        st, j = post(p, "/v1/completions", {"prompt": prompt, "max_tokens": 30, "temperature": 0})
        assert st == 200 and j["choices"][0]["text"] == run_reference(prompt, 30)[1]
        total += j["usage"]["completion_tokens"]
        prompt_total = j["usage"]["prompt_tokens"]
    st, _ = post(p, "/v1/completions", {"prompt": "x", "temperature": -3})
    assert st == 400
    f1, _ = scrape(p)
    assert value(f1, "caravan_generation_tokens", "caravan_generation_tokens_total") - \
        value(f0, "caravan_generation_tokens", "caravan_generation_tokens_total") == total
    assert value(f1, "caravan_prompt_tokens", "caravan_prompt_tokens_total") >= prompt_total
    assert value(f1, "caravan_http_requests", "caravan_http_requests_total",
                 endpoint="/v1/completions", code="200") == 2
    assert value(f1, "caravan_http_requests", "caravan_http_requests_total",
                 endpoint="/v1/completions", code="400") == 1
    assert value(f1, "caravan_requests", "caravan_requests_total") == 2
    lat_count = f1["caravan_group_step_latency_seconds"][("caravan_group_step_latency_seconds_count", gid)]
    lat_sum = f1["caravan_group_step_latency_seconds"][("caravan_group_step_latency_seconds_sum", gid)]
    assert lat_count >= total / 2 and lat_sum > 0  # at least one step per token of each request


def test_health_follows_the_groups(coordinator):
    c = coordinator(http=True)
    p = c.http_port
    h = wait_health(p, 503)
    assert h["status"] == "unavailable" and h["groups_ready"] == 0
    w = c.add_worker()
    h = wait_health(p, 200)
    assert h["status"] == "ok" and h["groups_ready"] == 1
    # two long requests in flight when the only group dies: both end with a
    # clear 503 / UNAVAILABLE error, the stream with an error event
    n_ctx = json.loads(get(p, "/v1/models")[1])["data"][0]["context_length"]
    long_req = {"prompt": "Once upon a time", "max_tokens": n_ctx - 64, "ignore_eos": True}
    streamed = http.client.HTTPConnection("127.0.0.1", p, timeout=60)
    streamed.request("POST", "/v1/completions", body=json.dumps(dict(long_req, stream=True)))
    sr = streamed.getresponse()
    assert sr.status == 200 and sr.read1(65536).startswith(b"data: ")
    plain = http.client.HTTPConnection("127.0.0.1", p, timeout=60)
    plain.request("POST", "/v1/completions", body=json.dumps(long_req))
    w.kill()  # the only group dies
    rest = sr.read().decode()
    events = [json.loads(e[6:]) for e in rest.split("\n\n") if e.startswith("data: {")]
    assert events and "error" in events[-1], rest[-500:]
    assert events[-1]["error"]["code"] == "no_worker_group", events[-1]
    pr = plain.getresponse()
    assert pr.status == 503 and json.loads(pr.read())["error"]["code"] == "no_worker_group"
    streamed.close()
    plain.close()
    wait_health(p, 503)
    st, j = post(p, "/v1/completions", {"prompt": "x", "max_tokens": 2})
    assert st == 503 and j["error"]["code"] == "no_worker_group"
    f, _ = scrape(p)
    assert value(f, "caravan_groups_up") == 0
    assert value(f, "caravan_groups_lost", "caravan_groups_lost_total") == 1
    c.add_worker()  # a new group joins
    wait_health(p, 200)
    st, j = post(p, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0})
    assert st == 200 and j["choices"][0]["text"] == run_reference("Once upon a time", 24)[1]
