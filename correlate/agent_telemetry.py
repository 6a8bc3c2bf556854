"""The agents' own telemetry as a second source of intent, merged with what TLS decoded.

An agent's OpenTelemetry log events describe its model calls from the inside. Where vigil read
the same call at the TLS boundary, the two are compared field by field (a `telemetry_check`);
where TLS saw nothing (a TLS stack vigil cannot hook), the telemetry becomes the `llm_call`,
marked `source: "telemetry"`. Records are grouped by the sending process (attributed by the
kernel, not by the payload) and the agent's conversation id.

Codex (0.16x, `[otel]` in config.toml; pinned in the tests because field names change): one
model call is `codex.api_request` (status, endpoint, duration), then `codex.sse_event` records,
the `response.completed` one carrying the token counts, then for each tool call the model asked
for `codex.tool_decision` (call id, tool name) and `codex.tool_result` (arguments, outcome). The
next `codex.api_request` or `codex.user_prompt` closes the call; so does a quiet spell or the end.
A request the API refused is a `codex.api_request` with its status and `error.message` ("http
500"), one per attempt.

Claude Code (2.1.332, resource `service.name` "claude-code", events named without a prefix:
`api_request`, `tool_decision`, `tool_result`): `api_request` is logged once a response has
ended (only successful ones: HTTP 200) with model, tokens, `cost_usd`, `duration_ms` and the
response's `request_id`; its tools, run while the response still streams, are logged before and
after it under the same `request_id` (`tool_use_id`, `tool_name`, `success`, `duration_ms`). One
call is one `request_id`; a quiet spell closes it. The TLS twin carries the same `request-id`.
A request that failed for good (Claude Code retries 5xx, 429 and even 400 silently) is one
`api_error` (model, error, status_code, duration_ms, attempt, request_id).

Gemini CLI (0.61.0, `gemini_cli.` events): `api_request` opens a call, `api_response` gives its
status, model, tokens and duration, the `gen_ai.client.inference.operation.details` record after
it the response id (the TLS twin's too), and `tool_call` records (name, success, duration; no
call id) the tools the response asked for. The next `api_request` of the prompt closes the call.
Each refused attempt is a `gemini_cli.api_error` in place of the `api_response` (status_code, the
provider's error body as `error`, duration_ms).

An API error becomes what TLS makes of an error response: an `llm_call` with the HTTP status and
the provider's message in `error`, no tokens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vigild.correlate.intent import LlmCall, TelemetryCheck
from vigild.correlate.llm_common import error_message
from vigild.correlate.redact import redact_text

QUIET_NS = 2 * 1_000_000_000  # a call with no new record for this long is complete
# A complete call waits this long for its TLS twin before standing alone: the TLS decode of the
# same call can trail its telemetry by seconds when the pipeline is busy (a late twin would
# otherwise make one call two).
GRACE_NS = 5 * 1_000_000_000
# A call whose tool-call ids no TLS call of its (TLS-read) process carries yet waits up to this
# long for the one that does: Codex may read a response's end only after its next call has
# ended, and pairing by time alone would then set each call against the other.
TWIN_WAIT_NS = 30 * 1_000_000_000
MATCH_WINDOW_NS = 10 * 1_000_000_000  # how far apart TLS and telemetry may date one call
# fields compared when both sources have the call
COMPARED = ("status", "model", "input_tokens", "output_tokens", "cache_read_input_tokens", "tool_call_ids",
            "tool_names")
CLAUDE_EVENTS = frozenset({"api_request", "api_error", "tool_decision", "tool_result"})
GEMINI_DETAILS = "gen_ai.client.inference.operation.details"


@dataclass(frozen=True)
class TelemetryRecord:
    """One OTLP log record, flattened: the event name, its attributes and its resource's."""

    ts_ns: int
    pid: int | None  # the sending process, from the kernel's socket table; None if not found
    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Call:
    agent: str
    pid: int
    ts_ns: int
    last_ns: int
    endpoint: str
    status: int
    duration_ms: float | None
    model: str | None
    provider: str = "openai"
    conversation: str = ""  # the agent's conversation id (Codex)
    request_id: str | None = None  # the response's request-id header (Claude Code)
    response_id: str | None = None  # the response's own id (Gemini CLI)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cost_usd: float | None = None
    finish_reason: str | None = None
    error: str | None = None  # the API's refusal, as TLS would read it from the error body
    completed: bool = False
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tools_running(self) -> bool:
        """A tool the model asked for has no result yet: the call is not quiet, its tool is."""
        return any("success" not in t for t in self.tool_calls)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error(value: Any) -> str | None:
    """An API error as TLS reads it from the error body: the provider's message when the agent
    passed the body on (Gemini CLI), else its own words ("http 500"); redacted like all text."""
    if value in (None, ""):
        return None
    text = str(value)
    try:
        message = error_message(json.loads(text))
    except ValueError:
        message = None
    return redact_text(message or text)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class TelemetryMerger:
    """Feed it telemetry records and the TLS-decoded LLM calls of the same processes; expire()
    and flush() return `telemetry_check` events and telemetry-sourced `llm_call`s.

    `comm_of(pid)` names a process for the events; `clock` is wall-clock ns."""

    def __init__(self, comm_of: Callable[[int], str] = lambda pid: "",
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.comm_of = comm_of
        self.clock = clock  # quiet spells count from when records arrive: agents send in batches
        self._open: dict[tuple[int, str], _Call] = {}
        self._ready: list[tuple[int, _Call]] = []  # (when complete, call): waiting for TLS
        self._tls: dict[int, list[LlmCall]] = {}  # pid -> TLS-decoded calls not yet matched
        self.ignored = 0  # records of no call (startup phases, unattributed senders, ...)

    # ---- inputs ----
    def observe_tls(self, call: LlmCall) -> None:
        if call.source != "telemetry":
            self._tls.setdefault(call.pid, []).append(call)

    def feed(self, record: TelemetryRecord) -> None:
        """Take one record; what it completes comes out of expire() or flush()."""
        if record.pid is None:
            self.ignored += 1
        elif record.name.startswith("codex."):
            self._codex(record, record.pid)
        elif record.resource.get("service.name") == "claude-code" or record.name.startswith("claude_code."):
            self._claude(record, record.pid)
        elif record.name.startswith("gemini_cli.") or record.name == GEMINI_DETAILS:
            self._gemini(record, record.pid)
        else:
            self.ignored += 1

    def expire(self) -> list[LlmCall | TelemetryCheck]:
        """Complete calls quiet for QUIET_NS; resolve those complete for GRACE_NS (the TLS
        decoder may report the same call a little later than the agent's batch arrives)."""
        now_ns = self.clock()
        for key in [k for k, c in self._open.items() if now_ns - c.last_ns >= QUIET_NS and not c.tools_running]:
            self._close(self._open.pop(key))
        due = [c for t, c in self._ready if now_ns - t >= GRACE_NS and not self._awaits_twin(c, now_ns - t)]
        self._ready = [(t, c) for t, c in self._ready if all(c is not d for d in due)]
        return [e for call in due for e in self._resolve(call)]

    def flush(self) -> list[LlmCall | TelemetryCheck]:
        """Resolve everything now (the end: TLS has said all it will)."""
        for key in list(self._open):
            self._close(self._open.pop(key))
        due, self._ready = [c for _, c in self._ready], []
        return [e for call in due for e in self._resolve(call)]

    # ---- Codex ----
    def _codex(self, record: TelemetryRecord, pid: int) -> None:
        a = record.attributes
        key = (pid, str(a.get("conversation.id") or ""))
        call = self._open.get(key)
        if record.name in ("codex.api_request", "codex.user_prompt") and call is not None:
            self._close(self._open.pop(key))
            call = None
        if record.name == "codex.api_request":
            duration = _float(a.get("duration_ms"))
            self._open[key] = _Call(
                agent="codex", pid=pid, ts_ns=record.ts_ns - int((duration or 0) * 1e6), last_ns=self.clock(),
                endpoint=str(a.get("endpoint") or ""), status=_int(a.get("http.response.status_code")) or 0,
                duration_ms=duration, model=a.get("model"), error=_error(a.get("error.message")),
                conversation=key[1])
            return
        if record.name == "codex.tool_result":
            # the call that asked for this tool, even when the next request has begun
            candidates = [*self._open.values(), *(c for _, c in self._ready)]
            call = next((c for c in candidates if c.pid == pid and
                         any(t["id"] == a.get("call_id") for t in c.tool_calls)), call)
        elif record.name == "codex.tool_decision" and call is None:
            # its call went quiet before this batch came (a slow or busy machine): the latest
            # call of the conversation, while it waits for its TLS twin
            waiting = [c for _, c in self._ready if c.agent == "codex" and c.pid == pid and c.conversation == key[1]]
            call = max(waiting, key=lambda c: c.ts_ns, default=None)
        if call is None:
            self.ignored += 1
            return
        call.last_ns = self.clock()
        if record.name == "codex.sse_event" and a.get("event.kind") == "response.completed" \
                and "input_token_count" in a:
            call.completed = True
            call.input_tokens = _int(a.get("input_token_count"))
            call.output_tokens = _int(a.get("output_token_count"))
            call.cache_read_input_tokens = _int(a.get("cached_token_count"))
            call.reasoning_tokens = _int(a.get("reasoning_token_count"))
        elif record.name == "codex.tool_decision":
            call.tool_calls.append({"id": a.get("call_id"), "name": a.get("tool_name"),
                                    "decision": a.get("decision")})
        elif record.name == "codex.tool_result":
            self._tool_result(call, a)

    @staticmethod
    def _tool_result(call: _Call, a: dict[str, Any]) -> None:
        tool = next((t for t in call.tool_calls if t["id"] == a.get("call_id")), None)
        if tool is None:
            tool = {"id": a.get("call_id"), "name": a.get("tool_name")}
            call.tool_calls.append(tool)
        raw = a.get("arguments")
        try:
            tool["arguments"] = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            tool["arguments_raw"], tool["error"] = raw, "invalid_json"
        tool["success"] = str(a.get("success")).lower() == "true"
        tool["duration_ms"] = _float(a.get("duration_ms"))

    # ---- Claude Code ----
    def _claude(self, record: TelemetryRecord, pid: int) -> None:
        a = record.attributes
        name = record.name.removeprefix("claude_code.")
        request_id = a.get("request_id")
        if name not in CLAUDE_EVENTS or not (request_id or name == "api_error"):
            self.ignored += 1
            return
        # an error with no response has no request id: it is a call of its own
        key = (pid, f"claude:{request_id}" if request_id else f"claude-error@{record.ts_ns}")
        call = self._open.get(key)
        if call is None:
            call = self._open[key] = _Call(agent="claude", pid=pid, ts_ns=record.ts_ns, last_ns=self.clock(),
                                           endpoint="", status=0, duration_ms=None, model=None,
                                           provider="anthropic", request_id=str(request_id) if request_id else None)
        call.last_ns = self.clock()
        if name == "api_error":
            duration = _float(a.get("duration_ms"))
            call.ts_ns = record.ts_ns - int((duration or 0) * 1e6)
            call.status, call.duration_ms = _int(a.get("status_code")) or 0, duration
            call.model, call.error = a.get("model"), _error(a.get("error"))
            return
        if name == "api_request":
            duration = _float(a.get("duration_ms"))
            call.ts_ns = record.ts_ns - int((duration or 0) * 1e6)
            call.completed, call.status, call.duration_ms = True, 200, duration
            call.model = a.get("model")
            call.input_tokens = _int(a.get("input_tokens"))
            call.output_tokens = _int(a.get("output_tokens"))
            call.cache_read_input_tokens = _int(a.get("cache_read_tokens"))
            call.cache_creation_input_tokens = _int(a.get("cache_creation_tokens"))
            call.cost_usd = _float(a.get("cost_usd"))
            return
        tool_id = a.get("tool_use_id")
        tool = next((t for t in call.tool_calls if t["id"] == tool_id), None)
        if tool is None:
            tool = {"id": tool_id, "name": a.get("tool_name")}
            call.tool_calls.append(tool)
        if name == "tool_decision":
            tool["decision"] = a.get("decision")
            if a.get("decision") == "reject":  # it will not run: no result is coming
                tool["success"] = False
        else:
            tool["success"] = str(a.get("success")).lower() == "true"
            tool["duration_ms"] = _float(a.get("duration_ms"))

    # ---- Gemini CLI ----
    def _gemini(self, record: TelemetryRecord, pid: int) -> None:
        a = record.attributes
        key = (pid, f"gemini:{a.get('prompt_id') or ''}")
        if record.name == "gemini_cli.api_request":
            if key in self._open:
                self._close(self._open.pop(key))
            self._open[key] = _Call(agent="gemini", pid=pid, ts_ns=record.ts_ns, last_ns=self.clock(),
                                    endpoint="", status=0, duration_ms=None, model=a.get("model"),
                                    provider="gemini")
            return
        # the details record carries no prompt id: it follows its api_response in the same process
        call = self._open.get(key) if record.name != GEMINI_DETAILS else \
            next((c for k, c in self._open.items() if k[0] == pid and c.agent == "gemini"), None)
        if call is None:
            self.ignored += 1
            return
        call.last_ns = self.clock()
        if record.name == "gemini_cli.api_response":
            call.completed = True
            call.status = _int(a.get("status_code")) or 0
            call.model = a.get("model") or call.model
            call.duration_ms = _float(a.get("duration_ms"))
            call.input_tokens = _int(a.get("input_token_count"))
            call.output_tokens = _int(a.get("output_token_count"))
            call.cache_read_input_tokens = _int(a.get("cached_content_token_count"))
            call.reasoning_tokens = _int(a.get("thoughts_token_count"))
            reasons = a.get("finish_reasons")
            call.finish_reason = str(reasons[0]) if isinstance(reasons, list) and reasons else None
        elif record.name == "gemini_cli.api_error":
            call.status = _int(a.get("status_code")) or 0
            call.model = a.get("model") or call.model
            call.duration_ms = _float(a.get("duration_ms"))
            call.error = _error(a.get("error.message") or a.get("error"))
        elif record.name == GEMINI_DETAILS and call.completed and a.get("gen_ai.response.id"):
            call.response_id = str(a["gen_ai.response.id"])
        elif record.name == "gemini_cli.tool_call":
            call.tool_calls.append({"id": None, "name": a.get("function_name"), "decision": a.get("decision"),
                                    "success": bool(a.get("success")), "duration_ms": _float(a.get("duration_ms"))})

    # ---- closing: compare with TLS, or stand in for it ----
    def _close(self, call: _Call) -> None:
        self._ready.append((self.clock(), call))

    def _resolve(self, call: _Call) -> list[LlmCall | TelemetryCheck]:
        tls = self._match(call)
        if tls is not None:
            return [self._check(call, tls)]
        return [LlmCall(
            ts_ns=call.ts_ns, pid=call.pid, tid=0, comm=self.comm_of(call.pid), conn_id=0,
            provider=call.provider, endpoint=call.endpoint, host="", model=call.model, stream=True,
            status=call.status, http_version="", input_tokens=call.input_tokens,
            output_tokens=call.output_tokens, cache_read_input_tokens=call.cache_read_input_tokens,
            cache_creation_input_tokens=call.cache_creation_input_tokens, duration_ms=call.duration_ms,
            finish_reason=call.finish_reason or ("completed" if call.completed else None),
            tool_calls=[{k: v for k, v in t.items() if k != "decision"} for t in call.tool_calls],
            response_id=call.response_id, request_id=call.request_id, cost_usd=call.cost_usd,
            error=call.error, source="telemetry")]

    @staticmethod
    def _tool_ids(tool_calls: list[dict[str, Any]]) -> frozenset[str] | None:
        """The call's tool-call ids, an identity it shares with its TLS twin (None: none to go by)."""
        ids = [t.get("id") for t in tool_calls]
        return frozenset(str(i) for i in ids) if ids and all(ids) else None

    def _awaits_twin(self, call: _Call, waited_ns: int) -> bool:
        ids = self._tool_ids(call.tool_calls)
        pending = self._tls.get(call.pid, [])
        return (ids is not None and bool(pending) and waited_ns < TWIN_WAIT_NS
                and not any(self._tool_ids(c.tool_calls) == ids for c in pending))

    def _match(self, call: _Call) -> LlmCall | None:
        """The TLS call of the same process with the same request or response id, else with the
        same tool-call ids, else the one nearest in time (within MATCH_WINDOW_NS); taken once."""
        pending = self._tls.get(call.pid, [])
        same = next((c for c in pending if (call.request_id and c.request_id == call.request_id)
                     or (call.response_id and c.response_id == call.response_id)), None)
        if same is not None:
            pending.remove(same)
            return same
        near = [c for c in pending if abs(c.ts_ns - call.ts_ns) <= MATCH_WINDOW_NS]
        if not near:
            return None
        ids = self._tool_ids(call.tool_calls)
        best = min(near, key=lambda c: (ids is None or self._tool_ids(c.tool_calls) != ids, abs(c.ts_ns - call.ts_ns)))
        pending.remove(best)
        return best

    def _check(self, call: _Call, tls: LlmCall) -> TelemetryCheck:
        values = {
            "status": (tls.status, call.status),
            "model": (tls.model, call.model),
            "input_tokens": (tls.input_tokens, call.input_tokens),
            "output_tokens": (tls.output_tokens, call.output_tokens),
            "cache_read_input_tokens": (tls.cache_read_input_tokens, call.cache_read_input_tokens),
            "tool_call_ids": (sorted(str(t.get("id")) for t in tls.tool_calls),
                              sorted(str(t.get("id")) for t in call.tool_calls)),
            "tool_names": (sorted(str(t.get("name")) for t in tls.tool_calls),
                           sorted(str(t.get("name")) for t in call.tool_calls)),
        }
        # Gemini CLI's tool records carry no call id: its tools are compared by name instead
        values.pop("tool_call_ids" if call.agent == "gemini" else "tool_names")
        compared = [name for name in COMPARED
                    if name in values and values[name][0] is not None and values[name][1] is not None]
        mismatches = [{"field": name, "tls": values[name][0], "telemetry": values[name][1]}
                      for name in compared if values[name][0] != values[name][1]]
        return TelemetryCheck(ts_ns=call.ts_ns, pid=call.pid, comm=self.comm_of(call.pid), agent=call.agent,
                              response_id=tls.response_id, compared=compared, agree=not mismatches,
                              mismatches=mismatches)
