"""What the fake LLM server answers: provider-neutral replies grouped into named scenarios.

A test picks a scenario per request with the ``x-fake-scenario`` header, or for every request by
setting ``FakeLLMServer.default_scenario``.  A scenario carries both *content* (text, tool calls,
usage, stop reason, optionally per provider) and *delivery* (piece size, delays, gzip, chunking),
because the tracer has to be checked against awkward deliveries as much as awkward content.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

PROVIDERS: Final = ("anthropic", "openai_chat", "openai_responses", "gemini")
"""Wire dialects the server speaks; also the ``provider`` value of an exchange record."""

SCENARIO_HEADER: Final = "x-fake-scenario"
"""Request header naming the scenario for that one request."""

DELAY_HEADER: Final = "x-fake-delay-ms"
"""Request header overriding the scenario's delay between stream events (milliseconds)."""

DEFAULT_TEXT: Final = "Let me look: héllo wörld ✓ — I'll run two tools."
"""Contains 2-, 3- and 3-byte UTF-8 sequences so that split writes land inside a character."""


@dataclass(frozen=True)
class ToolCallSpec:
    """A tool call the fake model makes.  ``id=None`` means "generate a realistic random id"."""

    name: str
    arguments: Mapping[str, Any]
    id: str | None = None


DEFAULT_TOOL_CALLS: Final = (
    ToolCallSpec("bash", {"command": "ls -la"}),
    ToolCallSpec("read_file", {"path": "/etc/hostname"}),
)


@dataclass(frozen=True)
class Reply:
    """One model turn, independent of the wire dialect that will carry it.

    ``finish_reason=None`` lets each dialect pick its natural value (``tool_use`` / ``end_turn``
    for Anthropic, ``tool_calls`` / ``stop`` for OpenAI chat, ``STOP`` for Gemini, ``completed``
    status for Responses); set it to force e.g. ``max_tokens``.  ``model=None`` echoes the model
    the request asked for, as the real APIs (roughly) do.
    """

    text: str = DEFAULT_TEXT
    tool_calls: tuple[ToolCallSpec, ...] = DEFAULT_TOOL_CALLS
    input_tokens: int = 412
    output_tokens: int = 87
    finish_reason: str | None = None
    model: str | None = None
    response_id: str | None = None  # OpenAI chat: this id instead of a fresh one (servers that reuse one)


@dataclass(frozen=True)
class Scenario:
    """A named reply plus how to deliver it.

    * ``piece_chars`` – size of text / JSON-argument pieces in stream deltas; small on purpose so
      ``partial_json`` pieces split mid-token.
    * ``first_event_delay`` / ``event_delay`` – seconds before the first stream event and between
      the following ones (time-to-first-token and inter-token latency measurements).
    * ``split_utf8`` – write every event or body containing a multibyte character in two
      writes, the cut falling inside that character (two TLS records / chunks / DATA frames).
    * ``gzip`` – ``Content-Encoding: gzip`` when the client accepts it (streams are flushed per
      event, so they stay incremental).
    * ``chunked`` – HTTP/1.1 non-streaming bodies use chunked framing instead of Content-Length
      (streams are always chunked, like the real APIs).
    * ``error_status`` – answer with this HTTP status and the provider's error JSON instead.
    * ``split_events`` – write every stream event in two writes cut in its middle (an SSE event
      spread over two TLS records, as busy real servers send them).
    * ``respond`` – ``(provider, request JSON) -> Reply``: a reply that depends on the request
      (agent-driving, :mod:`fakellm.driving`); replaces ``default_reply``/``replies``.
    """

    name: str
    default_reply: Reply = field(default_factory=Reply)
    replies: Mapping[str, Reply] = field(default_factory=dict)
    piece_chars: int = 4
    first_event_delay: float = 0.0
    event_delay: float = 0.0
    split_utf8: bool = True
    gzip: bool = False
    chunked: bool = False
    error_status: int | None = None
    split_events: bool = False
    respond: Callable[[str, Any], Reply] | None = None

    def reply_for(self, provider: str, request: Any = None) -> Reply:
        """The reply for ``provider`` (one of :data:`PROVIDERS`) to ``request``."""
        if self.respond is not None:
            return self.respond(provider, request)
        return self.replies.get(provider, self.default_reply)


def split_pieces(text: str, size: int) -> list[str]:
    """Cut ``text`` into pieces of ``size`` characters (at least one piece, possibly empty).

    Used for text deltas and for JSON arguments, where fixed-size cuts land mid-token
    (``{"comm`` + ``and": `` …) just like the real token-by-token streams.
    """
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


SCENARIOS: Final[dict[str, Scenario]] = {
    s.name: s
    for s in (
        Scenario("default"),
        Scenario(
            "text_only",
            default_reply=Reply(text="Plain answer: héllo wörld ✓", tool_calls=(), output_tokens=9),
        ),
        Scenario(
            "tools_only",
            default_reply=Reply(text="", output_tokens=41),
        ),
        Scenario("slow", first_event_delay=0.3, event_delay=0.02),
        Scenario("gzip_chunked", gzip=True, chunked=True),
        Scenario(
            "large",
            default_reply=Reply(
                text="".join(f"line {i:05d}: héllo wörld ✓\n" for i in range(3000)),
                tool_calls=(ToolCallSpec("write_file", {"path": "/tmp/x", "content": "ü" * 5000}),),
                output_tokens=30000,
            ),
            piece_chars=512,
        ),
        Scenario(
            "max_tokens",
            default_reply=Reply(text="Truncated héllo", tool_calls=()),
            replies={
                "anthropic": Reply(text="Truncated héllo", tool_calls=(), finish_reason="max_tokens"),
                "openai_chat": Reply(text="Truncated héllo", tool_calls=(), finish_reason="length"),
                "openai_responses": Reply(text="Truncated héllo", tool_calls=(), finish_reason="incomplete"),
                "gemini": Reply(text="Truncated héllo", tool_calls=(), finish_reason="MAX_TOKENS"),
            },
        ),
        Scenario("overloaded", error_status=529),
        Scenario("rate_limited", error_status=429),
    )
}
"""Built-in scenarios.  ``default`` is one text block plus two tool calls."""
