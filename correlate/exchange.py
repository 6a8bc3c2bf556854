"""Protocol-neutral HTTP messages and request/response pairs.

HTTP/1.1 and HTTP/2 framing differ, but what the intent decoders need is the same: method, path,
headers, decoded body with arrival times, and timing. Both framers produce these objects so the
LLM decoders never care which protocol carried a call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vigild.correlate.body import BodyBuffer


@dataclass
class HttpMessage:
    """One request or response as far as it was captured."""

    start_ts: int
    tid: int
    headers: list[tuple[str, str]]
    body: BodyBuffer
    method: str = ""
    target: str = ""
    status: int = 0
    end_ts: int | None = None
    complete: bool = False
    truncated: bool = False

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def finish(self, ts_ns: int, *, truncated: bool = False) -> None:
        """Mark the message ended at ``ts_ns``; ``truncated`` when it ended before its framing said."""
        if self.complete:
            return
        self.end_ts = ts_ns
        self.complete = True
        self.truncated = self.truncated or truncated
        self.body.finish()

    @property
    def is_truncated(self) -> bool:
        return self.truncated or self.body.truncated


@dataclass
class Exchange:
    """A request and (when one arrived) its response on one connection."""

    request: HttpMessage
    http_version: str
    host: str = ""
    response: HttpMessage | None = None

    @property
    def truncated(self) -> bool:
        if self.request.is_truncated or not self.request.complete:
            return True
        return self.response is None or self.response.is_truncated or not self.response.complete


@dataclass(frozen=True)
class Problem:
    """Something a framer could not decode; becomes a ParseFailure event with connection identity."""

    reason: str
    detail: str
    ts_ns: int


@dataclass
class FramerOutput:
    """What a framer produced while consuming input: finished exchanges and problems, in order."""

    items: list[Exchange | Problem] = field(default_factory=list)

    def exchange(self, exchange: Exchange) -> None:
        self.items.append(exchange)

    def problem(self, reason: str, detail: str, ts_ns: int) -> None:
        self.items.append(Problem(reason, detail, ts_ns))
