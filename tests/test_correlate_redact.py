"""Redaction: the corpus of credentials that must disappear and ordinary text that must survive,
header and structure redaction, and the guarantee that no credential reaches ``to_dict()``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.wire import (
    ANTHROPIC_KEY,
    GOOGLE_KEY,
    OPENAI_KEY,
    Capture,
    anthropic_request,
    anthropic_sse,
    http_request,
    http_response,
    openai_chat_json,
    run,
)
from vigild.correlate import REDACTED, TlsStreamDecoder, redact_headers, redact_text, redact_url, redact_value
from vigild.correlate import redact as redact_module

CORPUS = json.loads((Path(__file__).parent / "data" / "redaction_corpus.json").read_text())


@pytest.mark.parametrize("case", CORPUS["positive"], ids=[c["kind"] for c in CORPUS["positive"]])
def test_corpus_credentials_are_redacted(case: dict[str, str]) -> None:
    out = redact_text(case["text"])
    assert case["secret"] not in out
    assert REDACTED in out


@pytest.mark.parametrize("text", CORPUS["negative"])
def test_corpus_ordinary_text_is_untouched(text: str) -> None:
    assert redact_text(text) == text


def test_surrounding_text_is_kept() -> None:
    assert redact_text(f"key {OPENAI_KEY} done") == f"key {REDACTED} done"
    assert redact_text("Authorization: Bearer abcdefghijklmnopqrstu") == f"Authorization: {REDACTED}"
    assert redact_url(f"/v1beta/models/m:generateContent?alt=sse&key={GOOGLE_KEY}") == (
        f"/v1beta/models/m:generateContent?alt=sse&key={REDACTED}")


def test_headers() -> None:
    headers = [("Authorization", "Basic dXNlcjpwYXNz"), ("X-Api-Key", "opaque"), ("api-key", "azure"),
               ("x-goog-api-key", "g"), ("Cookie", "sid=1"), ("Set-Cookie", "sid=2"),
               ("Proxy-Authorization", "x"), ("User-Agent", "agent/1.0"), ("X-Debug", f"k={ANTHROPIC_KEY}")]
    out = redact_headers(headers)
    assert [v for _, v in out[:7]] == [REDACTED] * 7
    assert out[7] == ("User-Agent", "agent/1.0")
    assert out[8] == ("X-Debug", f"k={REDACTED}")


def test_nested_structures_and_sensitive_keys() -> None:
    value = {"messages": [{"role": "user", "content": [{"type": "text", "text": f"use {OPENAI_KEY}"}]}],
             "args": {"password": "hunter2", "api_key": "plain", "count": 3, "nested": ("AKIAIOSFODNN7EXAMPLE",)},
             OPENAI_KEY: "key used as a dict key"}
    out = redact_value(value)
    assert out["messages"][0]["content"][0]["text"] == f"use {REDACTED}"
    assert out["args"] == {"password": REDACTED, "api_key": REDACTED, "count": 3, "nested": [REDACTED]}
    assert REDACTED in out and OPENAI_KEY not in json.dumps(out)
    assert value["args"]["password"] == "hunter2"  # the input is not modified


def test_no_credential_reaches_any_event_dict() -> None:
    """Credentials in headers, URL, request body, response text and tool arguments, content capture on."""
    gh = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    request = anthropic_request(stream=True, content=f"deploy with {gh}")
    body = anthropic_sse([("text", f"I will use {OPENAI_KEY}"),
                          ("tool_use", "toolu_1", "bash", {"command": f"curl -H 'x-api-key: {ANTHROPIC_KEY}' x"})])
    cap = Capture().write(request).read(http_response(200, body, "text/event-stream",
                                                      headers=[("Set-Cookie", "session=s3cr3tcookie")]))
    cap.write(http_request("GET", f"/download?key={GOOGLE_KEY}&token=tok_abcdef", "example.com",
                           headers=[("Cookie", "session=s3cr3tcookie")])).read(http_response(200, b"{}"))
    cap.write(http_request("POST", "/v1/chat/completions", "api.openai.com",
                           {"model": "m", "messages": [{"role": "user", "content": gh}]},
                           [("Authorization", f"Bearer {OPENAI_KEY}")])).read(
        http_response(200, openai_chat_json(f"echo {gh}", [("c1", "f", json.dumps({"token": OPENAI_KEY}))])))
    events, _ = run(cap.chunks, TlsStreamDecoder(capture_content=True))
    assert len(events) == 3
    blob = json.dumps([e.to_dict() for e in events])
    for secret in (ANTHROPIC_KEY, OPENAI_KEY, GOOGLE_KEY, gh, "s3cr3tcookie", "tok_abcdef"):
        assert secret not in blob
    assert blob.count(REDACTED) >= 8


def _every_rule(text: str) -> str:
    """The redaction as every rule in turn would do it, with no trigger prefilter."""
    lowered = text.lower()
    for rule in redact_module._RULES:
        redacted = rule.apply(text, lowered)
        if redacted is not text:
            text, lowered = redacted, redacted.lower()
    return text


def test_the_trigger_automata_change_no_answer() -> None:
    """Only the rules whose triggers a text holds are run (one Aho-Corasick automaton finds them):
    on the corpus, on several credentials in one text, and on paths that hold no trigger at all,
    the answer is the one every rule in turn gives."""
    texts = [c["text"] for c in CORPUS["positive"]] + list(CORPUS["negative"])
    texts.append(" ".join(c["text"] for c in CORPUS["positive"]))  # every shape in one text
    texts += [f"/usr/lib/python3/dist-packages/pkg_{i}/module_{i}.py" for i in range(50)]
    texts += ["/home/u/Desktop/keyword.py", f"/home/u/.cache/tokens/{OPENAI_KEY}", f"--api-key={GOOGLE_KEY} x"]
    # text before a trigger that is not ASCII, or that lower() makes longer ("İ"): the text and its
    # lower-cased copy are searched joined, each match counted for the part it lies in
    texts += ["/home/ü/😀/x?KEY=s3cr3tvalue123456", f"İİİ {OPENAI_KEY}", f"İİ?Token=abcdef123456 {GOOGLE_KEY}"]
    redacted = 0
    for text in texts:
        assert redact_module._redact(text) == _every_rule(text), text
        redacted += REDACTED in _every_rule(text)
    assert redacted >= len(CORPUS["positive"])
    assert redact_module._rules_for("/usr/lib/x.py", "/usr/lib/x.py") == redact_module._UNTRIGGERED
