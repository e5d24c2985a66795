"""test_http_concurrent.py - many HTTP clients at once (issue 5 acceptance 2,
HTTP side): 32 concurrent requests - completions and chat, streamed and
not, greedy and seeded - over two worker groups each equal their sequential
`caravan run` result, and keep-alive connections carry several requests."""
import http.client
import json
import threading

from conftest import RUN_MIN_P, RUN_TOP_K, RUN_TOP_P, run_reference

PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben went to the park", "One day, a cat",
           "Tom had a red ball", "The sun was hot"]


def request(conn, path, body):
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    if not body.get("stream"):
        j = json.loads(r.read())
        assert r.status == 200, j
        c = j["choices"][0]
        text = c["message"]["content"] if "message" in c else c["text"]
        return text, j["usage"]["completion_tokens"]
    assert r.status == 200
    text, usage = "", None
    for line in r.read().decode().split("\n\n"):
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        j = json.loads(line[6:])
        if j.get("usage"):
            usage = j["usage"]["completion_tokens"]
        for c in j["choices"]:
            text += c["delta"].get("content", "") if "delta" in c else c["text"]
    return text, usage


def test_32_concurrent_requests_equal_sequential(coordinator):
    c = coordinator(http=True)
    c.add_worker(slots=16)
    c.add_worker(slots=16)
    jobs = []
    for i in range(32):
        prompt = PROMPTS[i % len(PROMPTS)]
        n = 24 + 8 * (i % 5)
        seeded = i % 4 == 3
        body = {"max_tokens": n, "temperature": 0.8 if seeded else 0, "seed": 100 + i, "stream": i % 2 == 0,
                "stream_options": {"include_usage": True} if i % 2 == 0 else None}
        if seeded:
            body.update(top_k=RUN_TOP_K, top_p=RUN_TOP_P, min_p=RUN_MIN_P)
        if i % 3 == 2:
            path, ref_prompt = "/v1/chat/completions", "[INST] %s [/INST]" % prompt
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            path, ref_prompt = "/v1/completions", prompt
            body["prompt"] = prompt
        ref = run_reference(ref_prompt, n, temp=0.8 if seeded else 0.0, seed=100 + i if seeded else None)
        jobs.append((path, body, ref))

    results = [None] * 8
    per_client = 4  # 8 keep-alive connections x 4 requests, all in flight together per round

    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=120)
        out = []
        try:
            for j in range(per_client):
                path, body, _ = jobs[k * per_client + j]
                out.append(request(conn, path, body))
        except Exception as e:  # reported below
            out.append(e)
        conn.close()
        results[k] = out

    # 32 connections at once: one request each
    flat = [None] * 32

    def single(i):
        conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=120)
        try:
            flat[i] = request(conn, jobs[i][0], jobs[i][1])
        except Exception as e:
            flat[i] = e
        conn.close()

    ts = [threading.Thread(target=single, args=(i,)) for i in range(32)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
    for i, (path, body, (ref_ids, ref_text)) in enumerate(jobs):
        got = flat[i]
        assert not isinstance(got, Exception), (i, got)
        assert got == (ref_text, len(ref_ids)), "request %d %s %s:\n http %r\n run  %r" % (
            i, path, body.get("prompt") or body.get("messages"), got, (ref_text, len(ref_ids)))

    # then 8 keep-alive connections, 4 requests each in sequence
    ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
    for k in range(8):
        for j, got in enumerate(results[k]):
            assert not isinstance(got, Exception), got
            _, _, (ref_ids, ref_text) = jobs[k * per_client + j]
            assert got == (ref_text, len(ref_ids))
    st = c.status()
    assert all(g.steps_done > 0 for g in st.groups), "both groups should have served: %s" % st
