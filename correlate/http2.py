"""HTTP/2 framing of captured TLS plaintext: one connection, many concurrent streams.

Built on ``hyperframe`` (frame parsing) and ``hpack`` (header decompression), the layers under
the ``h2`` library, rather than on two mirrored ``h2.H2Connection`` objects. ``h2`` is a protocol
endpoint: it enforces flow-control windows, stream-state transitions and SETTINGS acknowledgement
from its own side's point of view, so a passive observer driving it would have to fake the
endpoint's writes (WINDOW_UPDATEs, SETTINGS ACKs, request HEADERS on the client mirror) and
would still raise on legal traffic it merely did not see acknowledged. An observer only needs to
split frames and keep each direction's HPACK table in step, which is what this module does.

HPACK state is cumulative from the first frame, so a connection captured from the middle cannot
be decoded at all; that case is reported by the caller as ``h2_no_preface`` and never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpack import Decoder
from hpack.exceptions import HPACKError
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PushPromiseFrame,
    RstStreamFrame,
)
from vigild.correlate.body import BodyBuffer
from vigild.correlate.exchange import Exchange, FramerOutput, HttpMessage
from vigild.correlate.numbers import ascii_decimal

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEADER = 9
# Frame types defined by RFC 9113; anything above is an extension frame, legal but rare.
_MAX_KNOWN_TYPE = 0x9


def looks_like_h2_frames(data: bytes) -> bool:
    """True when ``data`` starts with a plausible client HTTP/2 frame header (mid-connection)."""
    if len(data) < _FRAME_HEADER:
        return False
    length = int.from_bytes(data[0:3], "big")
    ftype = data[3]
    stream_id = int.from_bytes(data[5:9], "big")
    if stream_id & 0x80000000 or ftype > _MAX_KNOWN_TYPE or length > 1 << 24:
        return False
    if ftype in (0x0, 0x1, 0x3, 0x9):  # DATA/HEADERS/RST_STREAM/CONTINUATION: on a stream
        return stream_id != 0
    if ftype in (0x4, 0x6, 0x7):  # SETTINGS/PING/GOAWAY: connection level
        return stream_id == 0
    return True


class _H2Broken(Exception):
    """Framing or HPACK state is lost; the rest of the connection cannot be decoded."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _Block:
    """A header block split over HEADERS/PUSH_PROMISE + CONTINUATION frames."""

    stream_id: int
    fragments: bytearray
    end_stream: bool
    is_push: bool


class _Direction:
    """Frame splitter and HPACK decoder of one direction."""

    def __init__(self, expect_preface: bool) -> None:
        self.buf = bytearray()
        self.need_preface = expect_preface
        self.hpack = Decoder()
        # The endpoints negotiated the limits; an observer accepts whatever they agreed on.
        self.hpack.max_allowed_table_size = 1 << 30
        self.hpack.max_header_list_size = 1 << 24
        self.block: _Block | None = None

    def frames(self, data: bytes) -> list[Frame]:
        self.buf += data
        if self.need_preface:
            if len(self.buf) < len(PREFACE):
                if not PREFACE.startswith(bytes(self.buf)):
                    raise _H2Broken("h2_no_preface", "client bytes do not start with the HTTP/2 preface")
                return []
            if bytes(self.buf[:len(PREFACE)]) != PREFACE:
                raise _H2Broken("h2_no_preface", "client bytes do not start with the HTTP/2 preface")
            del self.buf[:len(PREFACE)]
            self.need_preface = False
        frames: list[Frame] = []
        pos = 0
        buf = self.buf
        while len(buf) - pos >= _FRAME_HEADER:
            try:
                frame, length = Frame.parse_frame_header(memoryview(buf)[pos:pos + _FRAME_HEADER], strict=False)
                if len(buf) - pos - _FRAME_HEADER < length:
                    break
                frame.parse_body(memoryview(bytes(buf[pos + _FRAME_HEADER:pos + _FRAME_HEADER + length])))
            except HyperframeError as exc:
                raise _H2Broken("h2_malformed", f"invalid frame: {exc}") from None
            pos += _FRAME_HEADER + length
            frames.append(frame)
        del buf[:pos]
        return frames

    def decode_headers(self, block: bytes) -> list[tuple[str, str]]:
        try:
            return [(str(k), str(v)) for k, v in self.hpack.decode(block, raw=False)]
        except (HPACKError, UnicodeDecodeError) as exc:
            raise _H2Broken("h2_malformed", f"HPACK decoding failed: {type(exc).__name__}") from None


class Http2Connection:
    """Turns the two byte streams of an HTTP/2 connection into one Exchange per stream."""

    def __init__(self, body_cap: int) -> None:
        self._cap = body_cap
        self._client = _Direction(expect_preface=True)
        self._server = _Direction(expect_preface=False)
        self._streams: dict[int, Exchange] = {}
        self._broken = False

    def feed(self, is_write: bool, data: bytes, ts_ns: int, tid: int, lost: int = 0) -> FramerOutput:
        """Consume one captured chunk; client writes carry requests, reads carry responses."""
        out = FramerOutput()
        if self._broken:
            return out
        direction = self._client if is_write else self._server
        try:
            if lost > 0:
                raise _H2Broken("gap", f"{lost} bytes lost by the capture; HTTP/2 framing and HPACK state are gone")
            for frame in direction.frames(data):
                self._frame(is_write, direction, frame, ts_ns, tid, out)
        except _H2Broken as exc:
            out.problem(exc.reason, exc.detail, ts_ns)
            self._abandon(ts_ns, out)
        return out

    def close(self, ts_ns: int) -> FramerOutput:
        """Connection freed: streams still open are emitted as truncated."""
        out = FramerOutput()
        self._abandon(ts_ns, out)
        return out

    def expire(self, ts_ns: int) -> FramerOutput:
        """Emit streams still open as truncated but keep decoding: HPACK state stays valid."""
        out = FramerOutput()
        self._emit_open(ts_ns, out)
        return out

    def _abandon(self, ts_ns: int, out: FramerOutput) -> None:
        self._broken = True
        self._emit_open(ts_ns, out)

    def _emit_open(self, ts_ns: int, out: FramerOutput) -> None:
        for exchange in self._streams.values():
            exchange.request.finish(ts_ns, truncated=True)
            if exchange.response is not None:
                exchange.response.finish(ts_ns, truncated=True)
            out.exchange(exchange)
        self._streams.clear()

    def _frame(self, is_write: bool, direction: _Direction, frame: Frame, ts_ns: int, tid: int,
               out: FramerOutput) -> None:
        if direction.block is not None and not isinstance(frame, ContinuationFrame):
            raise _H2Broken("h2_malformed", "header block interrupted by a non-CONTINUATION frame")
        if isinstance(frame, (HeadersFrame, PushPromiseFrame)):
            if frame.stream_id == 0:
                raise _H2Broken("h2_malformed", "header block on stream 0")
            direction.block = _Block(frame.stream_id, bytearray(frame.data), "END_STREAM" in frame.flags,
                                     isinstance(frame, PushPromiseFrame))
            if "END_HEADERS" in frame.flags:
                self._header_block(is_write, direction, ts_ns, tid, out)
        elif isinstance(frame, ContinuationFrame):
            if direction.block is None or direction.block.stream_id != frame.stream_id:
                raise _H2Broken("h2_malformed", "CONTINUATION without a header block")
            direction.block.fragments += frame.data
            if "END_HEADERS" in frame.flags:
                self._header_block(is_write, direction, ts_ns, tid, out)
        elif isinstance(frame, DataFrame):
            exchange = self._streams.get(frame.stream_id)
            if exchange is None:
                return
            msg = exchange.request if is_write else exchange.response
            if msg is None or msg.complete:
                return
            msg.body.add(bytes(frame.data), ts_ns)
            if "END_STREAM" in frame.flags:
                self._end(is_write, frame.stream_id, ts_ns, out)
        elif isinstance(frame, RstStreamFrame):
            exchange = self._streams.pop(frame.stream_id, None)
            if exchange is not None:
                exchange.request.finish(ts_ns, truncated=True)
                if exchange.response is not None:
                    exchange.response.finish(ts_ns, truncated=True)
                out.exchange(exchange)

    def _header_block(self, is_write: bool, direction: _Direction, ts_ns: int, tid: int, out: FramerOutput) -> None:
        block = direction.block
        assert block is not None
        direction.block = None
        # Always decode, even for streams we ignore: skipping a block desynchronises HPACK.
        headers = direction.decode_headers(bytes(block.fragments))
        if block.is_push:
            return
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        regular = [(k, v) for k, v in headers if not k.startswith(":")]
        exchange = self._streams.get(block.stream_id)
        if is_write:
            if exchange is None:
                request = HttpMessage(start_ts=ts_ns, tid=tid, headers=regular,
                                      body=BodyBuffer(_first(regular, "content-encoding"), self._cap),
                                      method=pseudo.get(":method", ""), target=pseudo.get(":path", ""))
                host = pseudo.get(":authority") or _first(regular, "host") or ""
                exchange = Exchange(request=request, http_version="2", host=host)
                self._streams[block.stream_id] = exchange
            if block.end_stream:
                exchange.request.finish(ts_ns)
            return
        if exchange is None:
            return  # server push or a stream whose request was not captured
        if exchange.response is None:
            status_text = pseudo.get(":status", "")
            status = ascii_decimal(status_text) or 0
            if 100 <= status < 200:
                return  # interim response
            exchange.response = HttpMessage(start_ts=ts_ns, tid=tid, headers=regular,
                                            body=BodyBuffer(_first(regular, "content-encoding"), self._cap),
                                            status=status)
        if block.end_stream:
            self._end(False, block.stream_id, ts_ns, out)

    def _end(self, is_write: bool, stream_id: int, ts_ns: int, out: FramerOutput) -> None:
        exchange = self._streams[stream_id]
        if is_write:
            exchange.request.finish(ts_ns)
            return
        assert exchange.response is not None
        exchange.response.finish(ts_ns)
        del self._streams[stream_id]
        out.exchange(exchange)


def _first(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
