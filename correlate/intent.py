"""Events the correlator emits: what an agent asked a model, other HTTPS calls, and decode failures.

Every ``to_dict()`` runs the whole dict through :func:`redact_value` as the last step. Decoders
redact what they know to be sensitive earlier, but this final pass is what guarantees that no
credential reaches a sink, whichever field it hid in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from vigild.correlate.redact import redact_value


@dataclass(frozen=True)
class _Event:
    type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, redacted form; ``type`` names the event kind."""
        data = asdict(self)
        data["type"] = self.type
        result: dict[str, Any] = redact_value(data)
        return result


@dataclass(frozen=True)
class LlmCall(_Event):
    """One model invocation, decoded from the request and the (possibly streamed) response.

    ``ts_ns`` is when the request's first byte was written (wall clock, ns). ``tool_calls`` items
    are ``{"id", "name", "arguments"}`` with parsed JSON arguments, or ``{"id", "name",
    "arguments_raw", "error"}`` when the model produced invalid JSON. ``request_messages`` and the
    header lists are only filled when the decoder was built with ``capture_content=True``.
    """

    type: ClassVar[str] = "llm_call"

    ts_ns: int
    pid: int
    tid: int
    comm: str
    conn_id: int
    provider: str
    endpoint: str
    host: str
    model: str | None
    stream: bool
    status: int
    http_version: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    duration_ms: float | None = None
    ttft_ms: float | None = None
    finish_reason: str | None = None
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    request_tools: list[str] = field(default_factory=list)
    request_messages: list[Any] | None = None
    response_id: str | None = None
    request_id: str | None = None
    error: str | None = None
    truncated: bool = False
    cost_usd: float | None = None  # what the agent says the call cost (its telemetry only)
    request_headers: list[tuple[str, str]] | None = None
    response_headers: list[tuple[str, str]] | None = None
    # "tls": read at the TLS library; "http": plain TCP (bpf/sockdata); "telemetry": reported by
    # the agent itself, neither saw this call
    source: str = "tls"


@dataclass(frozen=True)
class HttpsRequest(_Event):
    """Any HTTPS exchange that is not a recognised model call."""

    type: ClassVar[str] = "https_request"

    ts_ns: int
    pid: int
    tid: int
    comm: str
    conn_id: int
    method: str
    host: str
    path: str
    status: int
    http_version: str
    request_bytes: int
    response_bytes: int
    duration_ms: float | None
    content_type: str | None = None
    truncated: bool = False
    request_headers: list[tuple[str, str]] | None = None
    response_headers: list[tuple[str, str]] | None = None


@dataclass(frozen=True)
class ParseFailure(_Event):
    """Captured bytes that could not be decoded; ``reason`` is a stable slug for metric labels."""

    type: ClassVar[str] = "parse_failure"

    ts_ns: int
    pid: int
    conn_id: int
    comm: str
    reason: str
    detail: str


@dataclass(frozen=True)
class TelemetryCheck(_Event):
    """An LLM call the agent reported in its own telemetry, set against the one TLS decoded:
    ``agree`` when every field both carry is equal, else ``mismatches`` lists
    ``{field, tls, telemetry}``."""

    type: ClassVar[str] = "telemetry_check"

    ts_ns: int
    pid: int
    comm: str
    agent: str
    response_id: str | None
    compared: list[str]
    agree: bool
    mismatches: list[dict[str, Any]] = field(default_factory=list)


Event = LlmCall | HttpsRequest | ParseFailure | TelemetryCheck
