"""HTTP/1.1 framing of captured TLS plaintext, one connection, both directions.

Parsed by hand rather than with ``h11``: h11 is a protocol *participant*. It enforces one role
and a strict state machine, raises on the first deviation and has no way to skip bytes the kernel
failed to deliver or to resynchronise on the next request line when the capture began in the
middle of a connection. A passive observer must do all of that, must keep the two directions
independent (a response can finish before its request body), and must never raise, so the
framing rules (RFC 9112: request/status line, Content-Length, chunked coding, read-until-close)
are implemented directly; they are small.
"""

from __future__ import annotations

import re
from collections import deque
from enum import Enum, auto

from vigild.correlate.body import BodyBuffer
from vigild.correlate.exchange import Exchange, FramerOutput, HttpMessage
from vigild.correlate.numbers import ascii_decimal, ascii_hex

MAX_HEAD_BYTES = 64 * 1024
_MAX_CHUNK_LINE = 4096

_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) +(\S+) +HTTP/1\.[01]")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] +(\d{3})(?: .*)?")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
# Where a capture can safely pick a connection up again: the start of a write that begins with a
# request line of a well-known method (an arbitrary token would match body text too easily).
_PLAUSIBLE_REQUEST = re.compile(
    rb"(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|TRACE) (?:/|\*|https?://)|CONNECT [A-Za-z0-9.\-\[\]:]+:\d"
)
_METHODS = (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS", b"TRACE", b"CONNECT")
_PLAUSIBLE_RESPONSE = re.compile(rb"HTTP/1\.[01] \d{3}")


def looks_like_request_start(data: bytes) -> bool:
    """True when ``data`` starts like an HTTP/1 request line."""
    return _PLAUSIBLE_REQUEST.match(data) is not None


def could_become_request_start(data: bytes) -> bool:
    """True when ``data`` is too short to tell but could grow into a plausible request line."""
    for method in _METHODS:
        prefix = method + b" "
        if prefix.startswith(data):
            return True
    return False


def looks_like_response_start(data: bytes) -> bool:
    """True when ``data`` starts like an HTTP/1 status line."""
    return _PLAUSIBLE_RESPONSE.match(data) is not None


class _State(Enum):
    HEAD = auto()
    BODY = auto()
    CHUNK_SIZE = auto()
    CHUNK_DATA = auto()
    CHUNK_CRLF = auto()
    TRAILERS = auto()
    UNTIL_CLOSE = auto()
    DESYNC = auto()
    OPAQUE = auto()


def _parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for raw in lines:
        line = raw.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and headers:
            # obsolete line folding: continuation of the previous value
            prev_name, prev_value = headers[-1]
            headers[-1] = (prev_name, prev_value + " " + line.strip().decode("latin-1"))
            continue
        raw_name, sep, raw_value = line.partition(b":")
        if not sep:
            continue
        headers.append((raw_name.strip().decode("latin-1"), raw_value.strip().decode("latin-1")))
    return headers


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _is_chunked(headers: list[tuple[str, str]]) -> bool:
    te = ",".join(v for k, v in headers if k.lower() == "transfer-encoding")
    codings = [c.strip().lower() for c in te.split(",") if c.strip()]
    return bool(codings) and codings[-1] == "chunked"


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    """Content-Length, or -1 when present but invalid (conflicting or non-numeric)."""
    values = {v.strip() for k, v in headers if k.lower() == "content-length"}
    values = {part.strip() for v in values for part in v.split(",")}
    if not values:
        return None
    if len(values) != 1:
        return -1
    value = values.pop()
    number = ascii_decimal(value)
    return -1 if number is None else number


class _Side:
    """Framing state of one direction."""

    def __init__(self, is_request: bool, synced: bool) -> None:
        self.is_request = is_request
        self.state = _State.HEAD if synced else _State.DESYNC
        self.buf = bytearray()
        self.scan_from = 0
        self.remaining = 0
        self.msg: HttpMessage | None = None
        self.exchange: Exchange | None = None
        self.head_ts: int | None = None

    @property
    def name(self) -> str:
        return "request" if self.is_request else "response"


class Http1Connection:
    """Pairs HTTP/1.x requests (client writes) with responses (client reads), in order.

    ``feed`` returns exchanges when their response completes, plus problems. Requests wait in a
    FIFO so keep-alive and pipelined requests pair with their responses by position.
    """

    def __init__(self, body_cap: int, *, request_synced: bool = True, response_synced: bool = True) -> None:
        self._cap = body_cap
        self._req = _Side(True, request_synced)
        self._resp = _Side(False, response_synced)
        self._pending: deque[Exchange] = deque()

    def feed(self, is_write: bool, data: bytes, ts_ns: int, tid: int, lost: int = 0) -> FramerOutput:
        """Consume one captured chunk of one direction."""
        out = FramerOutput()
        side = self._req if is_write else self._resp
        if lost > 0:
            self._gap(side, lost, ts_ns, out)
        if is_write and side.state is _State.HEAD and not side.buf and looks_like_request_start(data):
            self._client_moved_on(ts_ns, out)
        if side.state is _State.OPAQUE:
            return out
        if side.state is _State.DESYNC:
            starts = looks_like_request_start(data) if side.is_request else looks_like_response_start(data)
            if not starts:
                return out
            side.state = _State.HEAD
            side.buf.clear()
            side.scan_from = 0
        side.buf += data
        self._run(side, ts_ns, tid, out)
        return out

    def close(self, ts_ns: int) -> FramerOutput:
        """The connection is gone: finish what can be finished, emit the rest as truncated."""
        out = FramerOutput()
        resp = self._resp
        if resp.state is _State.UNTIL_CLOSE and resp.msg is not None:
            self._end_message(resp, ts_ns, out)
        elif resp.msg is not None and not resp.msg.complete and resp.exchange is not None:
            resp.msg.finish(ts_ns, truncated=True)
            self._emit_response(resp, out)
        req = self._req
        if req.msg is not None and not req.msg.complete:
            req.msg.finish(ts_ns, truncated=True)
        if req.state is _State.HEAD and req.buf.strip():
            out.problem("incomplete", f"connection closed inside a request head ({len(req.buf)} bytes)", ts_ns)
        while self._pending:
            out.exchange(self._pending.popleft())
        req.state = resp.state = _State.OPAQUE
        return out

    # -- framing -------------------------------------------------------------------------------

    def _run(self, side: _Side, ts_ns: int, tid: int, out: FramerOutput) -> None:
        buf = side.buf
        pos = 0
        while pos < len(buf):
            state = side.state
            if state is _State.HEAD:
                while pos < len(buf) and buf[pos] in (0x0D, 0x0A):
                    pos += 1  # RFC 9112 2.2: tolerate empty lines before a start line
                if pos == len(buf):
                    break
                if not side.is_request and len(buf) - pos >= 5 and not buf.startswith(b"HTTP/", pos):
                    # Bytes a lying peer sent past its declared body end: skip to the next status line.
                    status_at = buf.find(b"HTTP/1.", pos)
                    if status_at > pos:
                        out.problem("http_malformed", f"{status_at - pos} stray response bytes before a status line",
                                    ts_ns)
                        pos = status_at
                if side.head_ts is None:
                    side.head_ts = ts_ns  # a message starts when its first byte was captured
                match = _HEAD_END.search(buf, max(pos, side.scan_from))
                if match is None:
                    if len(buf) - pos > MAX_HEAD_BYTES:
                        out.problem("http_malformed", f"{side.name} head exceeds {MAX_HEAD_BYTES} bytes", ts_ns)
                        self._desync(side)
                        return
                    side.scan_from = max(pos, len(buf) - 3)
                    break
                head = bytes(buf[pos:match.start()])
                pos = match.end()
                side.scan_from = 0
                start_ts = side.head_ts if side.head_ts is not None else ts_ns
                side.head_ts = None
                if not self._on_head(side, head, start_ts, ts_ns, tid, out):
                    return
            elif state in (_State.BODY, _State.CHUNK_DATA):
                take = min(side.remaining, len(buf) - pos)
                assert side.msg is not None
                side.msg.body.add(bytes(buf[pos:pos + take]), ts_ns)
                pos += take
                side.remaining -= take
                if side.remaining == 0:
                    if state is _State.BODY:
                        self._end_message(side, ts_ns, out)
                    else:
                        side.state = _State.CHUNK_CRLF
            elif state is _State.CHUNK_SIZE:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if len(buf) - pos > _MAX_CHUNK_LINE:
                        self._malformed(side, "chunk-size line too long", ts_ns, out)
                        return
                    break
                line = bytes(buf[pos:nl]).strip().split(b";", 1)[0].strip()
                pos = nl + 1
                size = ascii_hex(line)
                if size is None:
                    self._malformed(side, f"invalid chunk size {line[:40]!r}", ts_ns, out)
                    return
                if size == 0:
                    side.state = _State.TRAILERS
                else:
                    side.remaining = size
                    side.state = _State.CHUNK_DATA
            elif state is _State.CHUNK_CRLF:
                if buf[pos:pos + 2] == b"\r\n":
                    pos += 2
                elif buf[pos:pos + 1] == b"\n":
                    pos += 1
                elif len(buf) - pos < 2 and buf[pos:pos + 1] == b"\r":
                    break
                else:
                    self._malformed(side, "missing CRLF after chunk data", ts_ns, out)
                    return
                side.state = _State.CHUNK_SIZE
            elif state is _State.TRAILERS:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if len(buf) - pos > MAX_HEAD_BYTES:
                        self._malformed(side, "trailer section too long", ts_ns, out)
                        return
                    break
                line = bytes(buf[pos:nl]).rstrip(b"\r")
                pos = nl + 1
                if not line:
                    self._end_message(side, ts_ns, out)
            elif state is _State.UNTIL_CLOSE:
                assert side.msg is not None
                side.msg.body.add(bytes(buf[pos:]), ts_ns)
                pos = len(buf)
            else:  # DESYNC or OPAQUE after a state change inside this chunk
                pos = len(buf)
        del buf[:pos]
        if side.state is _State.HEAD:
            side.scan_from = max(0, side.scan_from - pos) if side.scan_from else 0

    def _on_head(self, side: _Side, head: bytes, start_ts: int, ts_ns: int, tid: int, out: FramerOutput) -> bool:
        """Start a message from its head; False when the head was unusable (side desynced)."""
        lines = head.split(b"\n")
        start = lines[0].rstrip(b"\r")
        headers = _parse_headers(lines[1:])
        if side.is_request:
            match = _REQUEST_LINE.fullmatch(start)
            if match is None:
                out.problem("http_malformed", f"not an HTTP/1.x request line: {start[:60]!r}", ts_ns)
                self._desync(side)
                return False
            msg = HttpMessage(start_ts=start_ts, tid=tid, headers=headers,
                              body=BodyBuffer(_header(headers, "content-encoding"), self._cap),
                              method=match.group(1).decode("latin-1"), target=match.group(2).decode("latin-1"))
            exchange = Exchange(request=msg, http_version="1.1", host=_header(headers, "host") or "")
            self._pending.append(exchange)
            side.msg, side.exchange = msg, exchange
            return self._start_body(side, headers, ts_ns, out, until_close_allowed=False)
        match = _STATUS_LINE.fullmatch(start)
        if match is None:
            out.problem("http_malformed", f"not an HTTP/1.x status line: {start[:60]!r}", ts_ns)
            self._desync(side)
            return False
        status = int(match.group(1))
        if 100 <= status < 200 and status != 101:
            return True  # interim response (100 Continue, 103 Early Hints): the final one follows
        exchange = next((ex for ex in self._pending if ex.response is None), None)
        if exchange is None:
            out.problem("mid_stream_start", f"HTTP {status} response without a captured request", ts_ns)
            self._desync(side)
            return False
        msg = HttpMessage(start_ts=start_ts, tid=tid, headers=headers,
                          body=BodyBuffer(_header(headers, "content-encoding"), self._cap), status=status)
        exchange.response = msg
        side.msg, side.exchange = msg, exchange
        method = exchange.request.method
        if method == "HEAD" or status in (204, 304) or status == 101 or (method == "CONNECT" and status < 300):
            self._end_message(side, ts_ns, out)
            if status == 101 or method == "CONNECT":
                # The connection now carries another protocol (WebSocket, a tunnel): stop framing.
                self._req.state = self._resp.state = _State.OPAQUE
                self._req.buf.clear()
                self._resp.buf.clear()
                return False
            return True
        return self._start_body(side, headers, ts_ns, out, until_close_allowed=True)

    def _start_body(self, side: _Side, headers: list[tuple[str, str]], ts_ns: int, out: FramerOutput, *,
                    until_close_allowed: bool) -> bool:
        if _is_chunked(headers):
            side.state = _State.CHUNK_SIZE
            return True
        length = _content_length(headers)
        if length == -1:
            self._malformed(side, "invalid Content-Length", ts_ns, out)
            return False
        if length is None:
            if until_close_allowed:
                side.state = _State.UNTIL_CLOSE
                return True
            length = 0
        if length == 0:
            self._end_message(side, ts_ns, out)
            return True
        side.remaining = length
        side.state = _State.BODY
        return True

    def _end_message(self, side: _Side, ts_ns: int, out: FramerOutput, *, truncated: bool = False) -> None:
        assert side.msg is not None
        side.msg.finish(ts_ns, truncated=truncated)
        if not side.is_request:
            self._emit_response(side, out)
        side.msg = None
        side.exchange = None
        if side.state is not _State.DESYNC:
            side.state = _State.HEAD

    def _emit_response(self, side: _Side, out: FramerOutput) -> None:
        exchange = side.exchange
        if exchange is not None and exchange in self._pending:
            self._pending.remove(exchange)
            out.exchange(exchange)

    def _malformed(self, side: _Side, detail: str, ts_ns: int, out: FramerOutput) -> None:
        out.problem("http_malformed", f"{side.name}: {detail}", ts_ns)
        if side.msg is not None:
            side.state = _State.DESYNC
            self._end_message(side, ts_ns, out, truncated=True)
        self._desync(side)

    def _desync(self, side: _Side) -> None:
        side.state = _State.DESYNC
        side.head_ts = None
        side.msg = None
        side.exchange = None
        side.buf.clear()
        side.scan_from = 0
        side.remaining = 0

    def _client_moved_on(self, ts_ns: int, out: FramerOutput) -> None:
        """A new request while the only open response still expects body bytes: end that response.

        Clients of model APIs do not pipeline, so a client that sends its next request has read
        the previous response to the end by its own framing. When ours disagrees (a lying
        Content-Length or chunk size from the peer), trusting ours would swallow the next response
        as body bytes and blind the rest of the connection; the client's word wins, and the
        disagreement is reported.
        """
        resp = self._resp
        if len(self._pending) != 1 or resp.msg is None or resp.exchange is not self._pending[0]:
            return
        if resp.state not in (_State.BODY, _State.CHUNK_SIZE, _State.CHUNK_DATA, _State.CHUNK_CRLF,
                              _State.UNTIL_CLOSE):
            return
        out.problem("framing_mismatch", "the client sent a new request before the response ended by its "
                    "declared length", ts_ns)
        resp.state = _State.DESYNC
        self._end_message(resp, ts_ns, out, truncated=True)
        self._desync(resp)

    def _gap(self, side: _Side, lost: int, ts_ns: int, out: FramerOutput) -> None:
        """Bytes were lost before the next chunk: skip them inside a sized body, else resync."""
        state = side.state
        msg = side.msg
        if msg is not None and state in (_State.BODY, _State.CHUNK_DATA) and lost <= side.remaining \
                and not side.buf:
            msg.body.gap(lost, ts_ns)
            side.remaining -= lost
            if side.remaining == 0:
                if state is _State.BODY:
                    self._end_message(side, ts_ns, out)
                else:
                    side.state = _State.CHUNK_CRLF
            return
        if msg is not None and state is _State.UNTIL_CLOSE:
            msg.body.gap(lost, ts_ns)
            return
        if state in (_State.DESYNC, _State.OPAQUE):
            return
        out.problem("gap", f"{lost} {side.name} bytes lost by the capture; waiting for the next message start",
                    ts_ns)
        if msg is not None:
            side.state = _State.DESYNC
            msg.body.gap(lost, ts_ns)
            self._end_message(side, ts_ns, out, truncated=True)
        self._desync(side)
