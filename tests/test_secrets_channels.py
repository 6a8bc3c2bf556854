"""The credential corpus through every channel vigil writes to: an agent puts each secret in its
command lines, file names, request headers, URL and messages, and the model answers with them in
its text, its tool-call arguments and its model name. None may be found, byte for byte, in what
`vigil trace` prints, in the store file, in `vigil show -o json`, in the OTLP export, or on the
metrics page built from the same events."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from fakellm import FakeLLMServer, Reply, Scenario, ToolCallSpec, client_env
from support.helpers import vigil, vigil_trace
from support.otlp_receiver import OtlpReceiver
from vigild.correlate.redact import redact_text
from vigild.daemon.sinks.metrics import build_registry
from vigild.daemon.store import Store

pytestmark = pytest.mark.usefixtures("root")

CORPUS = json.loads((Path(__file__).parent / "data" / "redaction_corpus.json").read_text())["positive"]
SECRETS = [case["secret"] for case in CORPUS]
TEXTS = [case["text"] for case in CORPUS]
# Secrets with a shape of their own (a token prefix, a PEM header...), recognisable without the
# words around them: these also go into file names. "hunter2" alone is nobody's credential.
SHAPED = [secret for secret in SECRETS if redact_text(secret) != secret]
assert len(SHAPED) >= 40, len(SHAPED)

AGENT = r'''
import json, os, subprocess, sys
import anthropic, httpx2
texts = json.loads(sys.argv[1]); secrets = json.loads(sys.argv[2]); workdir = sys.argv[3]
for text in texts:                                   # argv
    subprocess.run(["/bin/true", text], check=True)
for secret in secrets:                               # file names (shaped secrets)
    if "/" not in secret and "\n" not in secret and len(secret) < 200:
        open(os.path.join(workdir, "cache-" + secret), "w").close()
client = anthropic.Anthropic(base_url=os.environ["FAKELLM_URL"], default_query={"token": secrets[0]},
                             api_key=os.environ["FAKELLM_ANTHROPIC_KEY"],
                             http_client=httpx2.Client(verify=os.environ["FAKELLM_CA"]),
                             default_headers={"x-debug-note": texts[1][:200]})
client.messages.create(model="claude-x", max_tokens=64,
                       messages=[{"role": "user", "content": "\n".join(texts)}],
                       tools=[{"name": "bash", "description": "sh", "input_schema": {"type": "object"}}])
'''


def _found(haystack: str) -> list[str]:
    return [secret for secret in SECRETS if secret in haystack]


def test_no_secret_of_the_corpus_reaches_any_channel(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    answer = Scenario("secrets", default_reply=Reply(
        text="Here you go: " + " | ".join(TEXTS),
        tool_calls=(ToolCallSpec("bash", {"command": "deploy " + " ".join(TEXTS[:30]), "env": TEXTS[30:]}),),
        model="ft:claude-x:" + SECRETS[0]))
    db = tmp_path / "vigil.db"
    with FakeLLMServer(default_scenario=answer) as srv:
        result = vigil_trace(["--db", str(db), "--capture-content", "-o", "json", "--",
                              sys.executable, str(agent), json.dumps(TEXTS), json.dumps(SHAPED), str(workdir)],
                             env=client_env(srv), timeout=180)
        assert result.returncode == 0, result.stderr
        assert srv.errors == [] and len(srv.exchanges.llm()) == 1
    events = result.events
    assert any(e["type"] == "llm_call" and e["tool_calls"] for e in events)
    assert sum(1 for e in events if e["type"] == "exec" and e["argv"][:1] == ["/bin/true"]) == len(TEXTS)
    assert any(e["type"] == "file_open" and "/cache-" in e["path"] for e in events)

    leaked = _found(json.dumps(events))
    assert leaked == [], [(s, [k for k, v in _where(events, s)]) for s in leaked][:5]
    assert _found(result.stderr) == [], "stderr"
    assert _found(db.read_bytes().decode("latin-1")) == [], "store file"
    for suffix in ("-wal", "-shm"):
        side = Path(str(db) + suffix)
        if side.exists():
            assert _found(side.read_bytes().decode("latin-1")) == [], f"store {suffix}"

    session_id = events[0]["session_id"]
    shown = vigil(["show", str(session_id), "--db", str(db), "-o", "json"])
    assert shown.returncode == 0, shown.stderr
    assert _found(shown.stdout) == [], "vigil show"

    receiver = OtlpReceiver()
    try:
        out = vigil(["export", str(session_id), "--otlp-endpoint", receiver.url, "--db", str(db),
                     "--capture-content"], env={**os.environ, "OTEL_EXPORTER_OTLP_COMPRESSION": "none"})
        assert out.returncode == 0, out.stderr
        payload = b"".join(r.raw for r in receiver.received).decode("latin-1")
    finally:
        receiver.close()
    assert payload and _found(payload) == [], "OTLP"

    registry, sink = build_registry(lambda: {})

    class Stored:
        def __init__(self, data: dict) -> None:
            self.data, self.type = data, data["type"]

        def to_dict(self) -> dict:
            return self.data

    for event in Store(db).events(session_id):
        sink.handle(event := Stored(event), event.to_dict())
    page = generate_latest(registry).decode()
    assert "vigil_llm_calls_total" in page
    assert _found(page) == [], "metrics"


def _where(events: list[dict], secret: str) -> list[tuple[str, str]]:
    """(event type, field) pairs holding `secret`: what a failure message needs to be useful."""
    return [(f"{e['type']}.{k}", "") for e in events for k, v in e.items() if secret in json.dumps(v)]
