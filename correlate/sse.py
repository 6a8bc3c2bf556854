"""Incremental ``text/event-stream`` decoder (WHATWG HTML "server-sent events" parsing rules).

Written by hand because the chunks come from SSL_read, not from an HTTP client library: the
available SSE packages (sseclient, httpx-sse) wrap a response iterator and split lines with
``str.splitlines``, which also breaks on U+2028/U+0085 inside JSON payloads. Here bytes can be cut
anywhere, including inside a multibyte UTF-8 character or between the ``\\r`` and ``\\n`` of a
line ending, and a capture gap must drop the half-received event instead of gluing two halves.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event: ``event`` defaults to "message" as the specification says."""

    event: str
    data: str
    id: str | None = None


class SseDecoder:
    """Feed bytes in arbitrary pieces, get complete events back in order."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial: list[str] = []  # pieces of the current, unterminated line
        self._skip_lf = False  # the previous piece ended with "\r": a leading "\n" belongs to it
        self._bom_checked = False
        self._event_type = ""
        self._data: list[str] = []
        self._has_data = False
        self._last_id: str | None = None

    def feed(self, data: bytes) -> list[SseEvent]:
        """Decode ``data`` and return the events whose terminating blank line it completed."""
        text = self._utf8.decode(data)
        return self._feed_text(text)

    def _feed_text(self, text: str) -> list[SseEvent]:
        if not text:
            return []
        if not self._bom_checked:
            self._bom_checked = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf and text:
            if text.startswith("\n"):
                text = text[1:]
            self._skip_lf = False
        events: list[SseEvent] = []
        pos = 0
        # Only the new text is scanned for line ends, so a huge line arriving in many pieces costs
        # linear time.
        for match in _EOL.finditer(text):
            piece = text[pos:match.start()]
            if self._partial:
                self._partial.append(piece)
                line = "".join(self._partial)
                self._partial = []
            else:
                line = piece
            pos = match.end()
            self._process_line(line, events)
        if pos < len(text):
            self._partial.append(text[pos:])
        elif text.endswith("\r"):
            self._skip_lf = True
        return events

    def _process_line(self, line: str, events: list[SseEvent]) -> None:
        if not line:
            if self._has_data:
                data = "".join(self._data)
                events.append(SseEvent(self._event_type or "message", data[:-1] if data.endswith("\n") else data,
                                       self._last_id))
            self._event_type = ""
            self._data = []
            self._has_data = False
            return
        if line.startswith(":"):
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data.append("\n")
            self._has_data = True
        elif name == "event":
            self._event_type = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # "retry" and unknown fields do not affect decoding.

    def reset_partial(self) -> None:
        """Forget the half-received line and event: bytes were lost, gluing would forge data."""
        self._utf8.reset()
        self._partial = []
        self._skip_lf = False
        self._event_type = ""
        self._data = []
        self._has_data = False

    def finish(self) -> list[SseEvent]:
        """End of stream: the spec discards an event without its blank line, and so do we."""
        tail = self._utf8.decode(b"", final=True)
        events = self._feed_text(tail)
        self.reset_partial()
        return events
