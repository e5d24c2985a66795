"""test_openai_basic.py - issue 5 acceptance 1 (HTTP part): the official
`openai` Python package against the coordinator's /v1 gets, for
stories260K, exactly what `caravan run --temp 0 --json` produces - text and
number of tokens, completions and chat completions, streaming and not - plus
seeded sampling, token-id prompts, stop strings, usage, logprob shapes and
/v1/models.

Chat references: stories260K has no tokenizer.chat_template, so the
coordinator uses the Llama 2 format (core/chat.h); its rendering of a
conversation is written out here and given to `caravan run` as the prompt
(which, like the chat endpoint, parses special tokens)."""
import json
import urllib.request

import openai
import pytest

from conftest import RUN_MIN_P, RUN_TOP_K, RUN_TOP_P, pb, run_reference

PROMPTS = ["", "Once upon a time", "The little dog", "Lily and Ben went to the park"]


def client(c, key="none"):
    return openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % c.http_port, api_key=key,
                         timeout=60, max_retries=0)


def completion(cl, prompt, n, stream=False, **kw):
    """(text, completion_tokens, finish_reason, n_chunks)."""
    if not stream:
        r = cl.completions.create(model="stories260K.gguf", prompt=prompt, max_tokens=n, **kw)
        assert r.object == "text_completion" and len(r.choices) == 1
        return r.choices[0].text, r.usage.completion_tokens, r.choices[0].finish_reason, 1, r
    text, finish, chunks, usage = "", None, 0, None
    for ch in cl.completions.create(model="stories260K.gguf", prompt=prompt, max_tokens=n,
                                    stream=True, stream_options={"include_usage": True}, **kw):
        chunks += 1
        if ch.usage is not None:
            usage = ch.usage
            assert ch.choices == []
            continue
        assert len(ch.choices) == 1
        text += ch.choices[0].text
        if ch.choices[0].finish_reason:
            finish = ch.choices[0].finish_reason
    assert usage is not None, "stream_options.include_usage gave no usage chunk"
    return text, usage.completion_tokens, finish, chunks, None


def chat(cl, messages, n, stream=False, **kw):
    if not stream:
        r = cl.chat.completions.create(model="stories260K.gguf", messages=messages, max_tokens=n, **kw)
        assert r.object == "chat.completion"
        m = r.choices[0].message
        assert m.role == "assistant"
        return m.content, r.usage.completion_tokens, r.choices[0].finish_reason, 1, r
    text, finish, chunks, usage, role = "", None, 0, None, None
    for ch in cl.chat.completions.create(model="stories260K.gguf", messages=messages, max_tokens=n,
                                         stream=True, stream_options={"include_usage": True}, **kw):
        chunks += 1
        if ch.usage is not None:
            usage = ch.usage
            continue
        d = ch.choices[0].delta
        if d.role:
            role = d.role
        text += d.content or ""
        if ch.choices[0].finish_reason:
            finish = ch.choices[0].finish_reason
    assert role == "assistant" and usage is not None
    return text, usage.completion_tokens, finish, chunks, None


def expected_finish(ref_ids, n):
    return "length" if len(ref_ids) == n else "stop"


def test_completions_greedy_equal_caravan_run(coordinator):
    c = coordinator(http=True)
    c.add_worker()
    cl = client(c)
    for p in PROMPTS:
        ref_ids, ref_text = run_reference(p, 64)
        for stream in (False, True):
            text, n_tok, finish, chunks, _ = completion(cl, p, 64, stream=stream, temperature=0)
            assert text == ref_text, "prompt %r stream=%s:\n http %r\n run  %r" % (p, stream, text, ref_text)
            # completion_tokens counts the end-of-sequence token as `caravan run` lists it
            assert n_tok == len(ref_ids), (p, stream, n_tok, len(ref_ids))
            assert finish == expected_finish(ref_ids, 64)
            if stream:
                assert chunks >= min(len(ref_ids), 8), "not streamed: %d chunks" % chunks


def test_completion_logprob_tokens_are_the_reference_tokens(coordinator):
    """Token by token: the legacy logprobs list the same tokens as caravan run."""
    c = coordinator(http=True)
    c.add_worker()
    cl = client(c)
    ref_ids, ref_text = run_reference("Once upon a time", 48)
    _, _, _, _, r = completion(cl, "Once upon a time", 48, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    n_eos = 1 if len(ref_ids) < 48 else 0
    assert len(lp.tokens) == len(ref_ids) - n_eos
    assert "".join(lp.tokens) == ref_text
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    for tok, tlp, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert tlp <= 0 and len(top) == 3
        # greedy: the chosen token is the most likely one
        best = max(top.items(), key=lambda kv: kv[1])
        assert best[0] == tok and abs(best[1] - tlp) < 1e-5


def test_token_id_prompt_equals_text_prompt(coordinator):
    c = coordinator(http=True)
    c.add_worker()
    cl = client(c)
    ids = list(c.stub().Tokenize(pb.TokenizeRequest(text="Once upon a time"), timeout=10).ids)
    assert ids[0] == 1
    ref_ids, ref_text = run_reference("Once upon a time", 40)
    text, n_tok, _, _, r = completion(cl, ids, 40, temperature=0)
    assert (text, n_tok) == (ref_text, len(ref_ids))
    assert r.usage.prompt_tokens == len(ids)


def test_chat_greedy_equal_caravan_run(coordinator):
    c = coordinator(http=True)
    c.add_worker()
    cl = client(c)
    cases = [
        ([{"role": "user", "content": "Once upon a time"}], "[INST] Once upon a time [/INST]"),
        ([{"role": "system", "content": "You tell stories."},
          {"role": "user", "content": "Tell me about a dog."}],
         "[INST] <<SYS>>\nYou tell stories.\n<</SYS>>\n\nTell me about a dog. [/INST]"),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."},
          {"role": "user", "content": [{"type": "text", "text": "A story"}, {"type": "text", "text": ", please"}]}],
         "[INST] Hi [/INST] Hello there. </s><s>[INST] A story, please [/INST]"),
    ]
    for msgs, rendered in cases:
        ref_ids, ref_text = run_reference(rendered, 48)
        for stream in (False, True):
            text, n_tok, finish, chunks, _ = chat(cl, msgs, 48, stream=stream, temperature=0)
            assert text == ref_text, "%r stream=%s:\n http %r\n run  %r" % (rendered, stream, text, ref_text)
            assert n_tok == len(ref_ids)
            assert finish == expected_finish(ref_ids, 48)


def test_seeded_sampling_equals_caravan_run(coordinator):
    c = coordinator(http=True)
    c.add_worker()
    cl = client(c)
    for seed in (1, 42):
        ref_ids, ref_text = run_reference("Once upon a time", 48, temp=0.8, seed=seed)
        for stream in (False, True):
            text, n_tok, _, _, _ = completion(cl, "Once upon a time", 48, stream=stream, temperature=0.8,
                                              seed=seed, top_p=RUN_TOP_P,
                                              extra_body={"top_k": RUN_TOP_K, "min_p": RUN_MIN_P})
            assert (text, n_tok) == (ref_text, len(ref_ids)), "seed %d stream=%s" % (seed, stream)


def test_stop_strings_usage_and_chat_logprobs(coordinator):
    c = coordinator(http=True)
    c.add_worker()
    cl = client(c)
    ref_ids, ref_text = run_reference("Once upon a time", 64)
    cut = ref_text.index("Lily")
    for stream in (False, True):
        text, _, finish, _, _ = completion(cl, "Once upon a time", 64, stream=stream, temperature=0,
                                           stop=["Lily", "zzzq"])
        assert text == ref_text[:cut] and finish == "stop", (stream, text)
        text, _, finish, _, _ = completion(cl, "Once upon a time", 64, stream=stream, temperature=0,
                                           stop="zzzq")
        assert text == ref_text
    _, _, _, _, r = completion(cl, "Once upon a time", 10, temperature=0)
    assert r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 10 and r.usage.total_tokens == 15
    assert r.id.startswith("cmpl-") and r.model == "stories260K.gguf"
    # max_tokens defaults to 16 for /v1/completions (OpenAI's default)
    _, n_tok, _, _, _ = completion(cl, "Once upon a time", None, temperature=0, extra_body={"ignore_eos": True})
    assert n_tok == 16
    # echo: the prompt text first
    text, _, _, _, _ = completion(cl, "Once upon a time", 8, temperature=0, echo=True)
    assert text == "Once upon a time" + run_reference("Once upon a time", 8)[1]
    # chat logprobs: content entries with token, logprob, bytes and top_logprobs
    msgs = [{"role": "user", "content": "Once upon a time"}]
    r = cl.chat.completions.create(model="m", messages=msgs, max_tokens=12, temperature=0,
                                   logprobs=True, top_logprobs=4)
    content = r.choices[0].logprobs.content
    assert "".join(e.token for e in content) == r.choices[0].message.content
    for e in content:
        assert len(e.top_logprobs) == 4 and bytes(e.bytes).decode() == e.token
        lps = [t.logprob for t in e.top_logprobs]
        assert lps == sorted(lps, reverse=True) and e.top_logprobs[0].token == e.token
    # streamed chat logprobs ride with their tokens
    got = []
    for ch in cl.chat.completions.create(model="m", messages=msgs, max_tokens=12, temperature=0,
                                         logprobs=True, top_logprobs=2, stream=True):
        if ch.choices and ch.choices[0].logprobs and ch.choices[0].logprobs.content:
            got += [e.token for e in ch.choices[0].logprobs.content]
    assert got == [e.token for e in content]


def test_models_endpoint(coordinator):
    c = coordinator(http=True)
    c.add_worker()
    ms = client(c).models.list()
    ids = [m.id for m in ms.data]
    assert ids == ["stories260K.gguf"]
    raw = json.loads(urllib.request.urlopen("http://127.0.0.1:%d/v1/models" % c.http_port, timeout=10).read())
    assert raw["object"] == "list" and raw["data"][0]["context_length"] > 0
    m = client(c).models.retrieve("stories260K.gguf")
    assert m.id == "stories260K.gguf" and m.owned_by == "caravan"
    with pytest.raises(openai.NotFoundError):
        client(c).models.retrieve("gpt-4")


def test_openai_errors_raise_the_right_exceptions(coordinator):
    c = coordinator(http=True)
    c.add_worker()
    cl = client(c)
    with pytest.raises(openai.BadRequestError) as ei:
        cl.completions.create(model="m", prompt="x", max_tokens=4, temperature=-3)
    assert ei.value.status_code == 400 and "temperature" in str(ei.value)
    with pytest.raises(openai.BadRequestError):
        cl.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], n=5)
    # still serving
    ref_ids, ref_text = run_reference("The little dog", 24)
    assert completion(cl, "The little dog", 24, temperature=0)[0] == ref_text
