#!/usr/bin/env python3
"""test_pretok_regex.py - the hand-written BPE pre-tokenizers (core/tok_pretok.c)
against the reference regexes run by Python's `regex` module (which has \\p{..}),
on seeded random strings over a pool of tricky code points (Unicode spaces,
marks, digits of other scripts, apostrophe contractions, CJK, emoji).

usage: test_pretok_regex.py PRETOK_DUMP_BINARY
Exits 77 (skipped) when the `regex` module is not installed."""
import os
import random
import struct
import subprocess
import sys
import tempfile

try:
    import regex
except ImportError:
    print("SKIP: python module 'regex' not installed (apt-get install python3-regex)")
    sys.exit(77)

# values of tok_pre_type in core/tok_internal.h
PRE_LLAMA3, PRE_GPT2, PRE_QWEN2, PRE_DS_LLM, PRE_DS_CODER = 1, 2, 3, 4, 5

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
DS_LLM = [
    "[\r\n]",
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293"
    "\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c"
    "\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5"
    "\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
    "\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59"
    "\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc"
    "\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
    "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee"
    "\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e"
    "\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f"
    "\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
    "\U000118a0-\U000118df\U0001e900-\U0001e943]+",
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "\\s+$",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
    "\\p{N}+",
]
DS_CODER = ["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
            "\\p{N}"]


def ends_of(pieces):
    out, pos = [], 0
    for p in pieces:
        pos += len(p.encode())
        out.append(pos)
    return out


def split_alternation(text, rx):
    pieces, pos = [], 0
    for m in regex.finditer(rx, text):
        if m.start() > pos:  # the C code makes an unmatched character its own word
            pieces.extend(text[pos:m.start()])
        pieces.append(m.group())
        pos = m.end()
    pieces.extend(text[pos:])
    return ends_of(pieces)


def split_sequence(text, rxs):
    """HF Split(behavior=Isolated) pre-tokenizers applied in turn."""
    pieces = [text] if text else []
    for rx in rxs:
        out = []
        for p in pieces:
            last = 0
            for m in regex.finditer(rx, p):
                if m.start() > last:
                    out.append(p[last:m.start()])
                out.append(m.group())
                last = m.end()
            if last < len(p):
                out.append(p[last:])
        pieces = out
    return ends_of(pieces)


POOL = (list(" \t\n\r\x0b\x0c\x85\xa0\u2000\u3000\u3001\u1680") +
        list("aZsStTdDmMlLrReEvVK'0123456789") +
        list("!?.,-_<|>@#$\u00e9\u4e2d\uac00\u0416\u0301\u0915\u093f\u00b2\u2167\u00bd\u0660"
             "\u1f7d\u212a\u2126\uff01\u2018\u2581\U0001F999\U0001F600"))


def main():
    dump = sys.argv[1]
    rng = random.Random(20261126)
    tests = ["".join(rng.choice(POOL) for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    fd, path = tempfile.mkstemp(suffix=".bin")
    with os.fdopen(fd, "wb") as f:
        for t in tests:
            b = t.encode()
            f.write(struct.pack("<I", len(b)) + b)
    failed = 0
    try:
        for name, pre, ref in (
                ("llama-bpe", PRE_LLAMA3, lambda t: split_alternation(t, LLAMA3)),
                ("gpt-2", PRE_GPT2, lambda t: split_alternation(t, GPT2)),
                ("qwen2", PRE_QWEN2, lambda t: split_alternation(t, QWEN2)),
                ("deepseek-llm", PRE_DS_LLM, lambda t: split_sequence(t, DS_LLM)),
                ("deepseek-coder", PRE_DS_CODER, lambda t: split_sequence(t, DS_CODER))):
            res = subprocess.run([dump, str(pre), path], capture_output=True, text=True)
            if res.returncode != 0:
                print(f"FAIL {name}: pretok_dump exited {res.returncode}: {res.stderr.strip()}")
                failed += 1
                continue
            lines = res.stdout.split("\n")
            bad = 0
            for t, line in zip(tests, lines):
                want, got = ref(t), [int(x) for x in line.split()]
                if want != got:
                    bad += 1
                    if bad <= 3:
                        print(f"MISMATCH {name}: {t!r}\n    expected ends {want}\n    got           {got}")
            print(f"{'ok  ' if bad == 0 else 'FAIL'} {name}: {len(tests) - bad}/{len(tests)} "
                  f"random strings split as the reference regex")
            failed += bad != 0
    finally:
        os.unlink(path)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
