"""Message bodies: content-encoding removal, a size cap, and the arrival time of every piece.

Bodies are decoded as they arrive (not at the end) for two reasons: streaming decoders need to
know *when* each decoded byte was received to measure time-to-first-token, and decompressing
incrementally with an output limit is what keeps a compression bomb or a 100 MB download from
growing the daemon past the per-body cap.
"""

from __future__ import annotations

import time
import zlib
from typing import Protocol

import brotli


class _Decoder(Protocol):
    def decompress(self, data: bytes, limit: int) -> bytes: ...

    def finished(self) -> bool: ...


class _Gzip:
    """gzip, including multi-member streams (concatenated gzip files are valid bodies)."""

    def __init__(self) -> None:
        self._obj = zlib.decompressobj(zlib.MAX_WBITS | 16)

    def decompress(self, data: bytes, limit: int) -> bytes:
        out = bytearray()
        pending = data
        while len(out) < limit:
            if self._obj.eof:
                rest = self._obj.unused_data + pending
                if not rest.startswith(b"\x1f\x8b"):
                    break  # nothing, or trailing padding after the last member: not body data
                self._obj = zlib.decompressobj(zlib.MAX_WBITS | 16)
                pending = rest
            tail = self._obj.unconsumed_tail
            if not pending and not tail:
                break
            out += self._obj.decompress(tail + pending, limit - len(out))
            pending = b""
        return bytes(out)

    def finished(self) -> bool:
        return self._obj.eof


class _Deflate:
    """HTTP "deflate" is zlib-wrapped by the RFC, but some servers send raw deflate: sniff it."""

    def __init__(self) -> None:
        self._obj: zlib._Decompress | None = None
        self._head = b""  # the two bytes that tell zlib-wrapped from raw may arrive split

    def decompress(self, data: bytes, limit: int) -> bytes:
        if self._obj is None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            zlib_header = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        return self._obj.decompress(self._obj.unconsumed_tail + data, max(1, limit))

    def finished(self) -> bool:
        return self._obj is not None and self._obj.eof


class _Brotli:
    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def decompress(self, data: bytes, limit: int) -> bytes:
        return self._obj.process(data, output_buffer_limit=max(1, limit))

    def finished(self) -> bool:
        return self._obj.is_finished()


_DECODERS: dict[str, type[_Gzip] | type[_Deflate] | type[_Brotli]] = {
    "gzip": _Gzip, "x-gzip": _Gzip, "deflate": _Deflate, "br": _Brotli,
}


# A body may inflate to this many times its wire size (past a floor that any real response fits
# in). One deflate layer cannot exceed ~1032:1, so only stacked codings or brotli get past it:
# the shapes of compression bombs, not of repetitive JSON (which reaches a few hundred to one).
# And decompressing one body may take this much CPU time in all, so a bomb crafted for a slow
# path cannot stall the pipeline thread; the body cap bounds the rest.
MAX_RATIO = 1100
RATIO_FLOOR_BYTES = 1 << 20
MAX_DECOMPRESS_S = 0.25


class BodyBuffer:
    """Decoded body of one HTTP message, kept as ``(ts_ns, bytes)`` segments.

    A segment of ``None`` marks bytes lost in the capture, so consumers can drop a half-received
    SSE event instead of splicing two unrelated halves together. ``truncated`` is set whenever
    bytes are missing for any reason (capture gap, size cap, undecodable compression); ``error``
    explains a decompression failure.
    """

    def __init__(self, content_encoding: str | None, cap: int) -> None:
        self.cap = cap
        self.segments: list[tuple[int, bytes | None]] = []
        self.wire_bytes = 0
        self.stored_bytes = 0
        self.truncated = False
        self.error: str | None = None
        self.limit: str | None = None
        self.unsupported_encoding: str | None = None
        self._decompress_s = 0.0
        self._full = False
        self._broken = False
        self._decoders: list[_Decoder] = []
        codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
        # Codings are listed in the order they were applied, so they are removed in reverse.
        for coding in reversed(codings):
            if coding == "identity":
                continue
            factory = _DECODERS.get(coding)
            if factory is None:
                self.unsupported_encoding = coding
                self.truncated = True
                self._broken = True
                self._decoders = []
                break
            self._decoders.append(factory())

    @property
    def compressed(self) -> bool:
        return bool(self._decoders)

    def add(self, data: bytes, ts_ns: int) -> None:
        """Append wire bytes received at ``ts_ns`` (already de-chunked)."""
        self.wire_bytes += len(data)
        if self._broken or self._full or not data:
            return
        room = self.cap - self.stored_bytes
        out = data
        if self._decoders:
            room = min(room, max(RATIO_FLOOR_BYTES, MAX_RATIO * self.wire_bytes) - self.stored_bytes)
            started = time.process_time()
            try:
                for decoder in self._decoders:
                    out = decoder.decompress(out, max(0, room) + 1)
            except (zlib.error, brotli.error) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                self.truncated = True
                self._broken = True
                return
            self._decompress_s += time.process_time() - started
            if len(out) > room and self.stored_bytes + room < self.cap:
                self._stop(f"inflates more than {MAX_RATIO}:1 (a compression bomb?)")
                out = out[:max(0, room)]
            elif self._decompress_s > MAX_DECOMPRESS_S:
                self._stop(f"took more than {MAX_DECOMPRESS_S} s of CPU to decompress")
        self._store(out, ts_ns)

    def _stop(self, why: str) -> None:
        """Decoding of this body ends here: what was decoded is kept, the rest is counted as cut."""
        self.limit = why
        self.truncated = True
        self._broken = True

    def _store(self, out: bytes, ts_ns: int) -> None:
        room = self.cap - self.stored_bytes
        if len(out) > room:
            out = out[:room]
            self.truncated = True
            self._full = True
        if out:
            self.segments.append((ts_ns, out))
            self.stored_bytes += len(out)

    def gap(self, lost: int, ts_ns: int) -> None:
        """``lost`` wire bytes of this body were never captured."""
        self.wire_bytes += lost
        self.truncated = True
        if self._decoders:
            # A compressed stream cannot be resumed after missing bytes; stop decoding it.
            self._broken = True
        elif not self._broken and not self._full:
            self.segments.append((ts_ns, None))

    def finish(self) -> None:
        """The message ended: an unfinished compressed stream means the body was cut short."""
        if (self._decoders and not self._broken and not self._full and self.wire_bytes
                and not all(decoder.finished() for decoder in self._decoders)):
            self.truncated = True

    def content(self) -> bytes:
        """All decoded bytes that were captured, gaps simply skipped."""
        return b"".join(seg for _, seg in self.segments if seg)
