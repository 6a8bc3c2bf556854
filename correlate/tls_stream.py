"""Reassemble TLS plaintext chunks into per-connection HTTP streams and emit decoded events.

The uprobes on SSL_write/SSL_read deliver one chunk per call. Chunks are keyed by
(pid, SSL* pointer), never by thread: an agent runs concurrent streaming requests on several
connections from one thread pool, and one connection can be used by several threads in turn.
The first write of a connection decides the protocol (HTTP/2 preface or an HTTP/1 request line);
a capture that starts mid-connection is resynchronised where HTTP/1 allows it and otherwise
reported as a counted ParseFailure, never guessed.

Every public method returns the events it produced and never raises: a decoder bug or hostile
bytes must cost one ``internal_error`` failure, not the daemon's event loop.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from vigild.correlate.exchange import Exchange, FramerOutput
from vigild.correlate.exchange_events import ConnIdentity, events_for_exchange
from vigild.correlate.http1 import Http1Connection, could_become_request_start, looks_like_request_start
from vigild.correlate.http2 import PREFACE, Http2Connection, looks_like_h2_frames
from vigild.correlate.intent import Event, ParseFailure
from vigild.correlate.redact import redact_text

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT_NS = 300 * 1_000_000_000
DEFAULT_MAX_CONNECTIONS = 4096
# Server bytes seen before the connection's first write are kept only to replay HTTP/2 SETTINGS.
_MAX_EARLY_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class TlsChunk:
    """One SSL_write/SSL_read(_ex) result as delivered by the uprobes."""

    ts_ns: int  # wall-clock ns since epoch when the SSL call returned
    pid: int  # tgid
    tid: int
    comm: str
    conn_id: int  # the SSL* pointer (connection identity; NOT the thread)
    direction: str  # "write" (client→server plaintext) or "read" (server→client)
    data: bytes
    lost_bytes: int = 0  # >0 when the kernel could not deliver part of the payload (gap before this chunk)
    source: str = "tls"  # "tls": plaintext at the TLS library; "http": a plain TCP socket (conn_id: its inode)


@dataclass
class _Conn:
    pid: int
    conn_id: int
    comm: str
    last_ts: int
    framer: Http1Connection | Http2Connection | None = None
    ignored: bool = False  # undecodable (HTTP/2 without preface): drop everything until close
    sniff: list[TlsChunk] = field(default_factory=list)  # first writes, shorter than the HTTP/2 preface
    early_reads: list[TlsChunk] = field(default_factory=list)
    early_bytes: int = 0
    source: str = "tls"


class TlsStreamDecoder:
    """Turns TLS plaintext chunks into ``LlmCall`` / ``HttpsRequest`` / ``ParseFailure`` events.

    ``capture_content`` adds (redacted) request messages and headers to events; it is off by
    default because prompts are the most sensitive data an agent handles. ``max_body_bytes`` caps
    each decoded body (beyond it events are marked ``truncated``). Connections idle longer than
    ``idle_timeout_ns`` are finished by :meth:`expire`; at most ``max_connections`` are tracked,
    the least recently used being finished first, so lost close events cannot leak memory.
    """

    def __init__(self, *, capture_content: bool = False, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 idle_timeout_ns: int = DEFAULT_IDLE_TIMEOUT_NS,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.capture_content = capture_content
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_ns = idle_timeout_ns
        self.max_connections = max_connections
        self.failures: Counter[str] = Counter()
        self._conns: OrderedDict[tuple[int, int], _Conn] = OrderedDict()

    @property
    def open_connections(self) -> int:
        """Number of connections with decoder state (for a gauge metric)."""
        return len(self._conns)

    # -- public API ----------------------------------------------------------------------------

    def feed(self, chunk: TlsChunk) -> list[Event]:
        """Consume one chunk; return the events it completed."""
        key = (chunk.pid, chunk.conn_id)
        events: list[Event] = []
        try:
            conn = self._conns.get(key)
            if conn is None:
                conn = _Conn(chunk.pid, chunk.conn_id, chunk.comm, chunk.ts_ns, source=chunk.source)
                self._conns[key] = conn
                events += self._evict(chunk.ts_ns)
            else:
                self._conns.move_to_end(key)
            conn.comm = chunk.comm
            conn.last_ts = max(conn.last_ts, chunk.ts_ns)
            if chunk.direction not in ("write", "read"):
                events.append(self._failure(conn, chunk.ts_ns, "invalid_chunk",
                                            f"unknown direction {chunk.direction!r}"))
            elif not conn.ignored:
                events += self._feed(conn, chunk)
        except Exception as exc:  # noqa: BLE001 - the event loop must survive any decoder bug
            self._conns.pop(key, None)
            events.append(self._internal_error(chunk.pid, chunk.conn_id, chunk.comm, chunk.ts_ns, exc))
        return self._counted(events)

    def close(self, pid: int, conn_id: int, ts_ns: int) -> list[Event]:
        """The SSL object was freed: finish its exchanges (read-until-close bodies end here)."""
        conn = self._conns.pop((pid, conn_id), None)
        if conn is None:
            return []
        return self._counted(self._finish(conn, ts_ns))

    def close_process(self, pid: int) -> list[Event]:
        """The process exited: finish all of its connections at their last activity."""
        events: list[Event] = []
        for key in [k for k in self._conns if k[0] == pid]:
            conn = self._conns.pop(key)
            events += self._finish(conn, conn.last_ts)
        return self._counted(events)

    def expire(self, now_ns: int) -> list[Event]:
        """Finish connections idle for longer than ``idle_timeout_ns``.

        HTTP/2 connections keep their HPACK state (dropping it would make the rest of a
        long-lived connection undecodable); only their open streams are emitted as truncated.
        """
        events: list[Event] = []
        for key, conn in list(self._conns.items()):
            if now_ns - conn.last_ts <= self.idle_timeout_ns:
                continue
            if isinstance(conn.framer, Http2Connection):
                events += self._guard(conn, now_ns, partial(conn.framer.expire, conn.last_ts))
            else:
                del self._conns[key]
                events += self._finish(conn, conn.last_ts)
        return self._counted(events)

    def flush(self) -> list[Event]:
        """Finish every connection (daemon shutdown): everything pending is emitted."""
        events: list[Event] = []
        while self._conns:
            _, conn = self._conns.popitem(last=False)
            events += self._finish(conn, conn.last_ts)
        return self._counted(events)

    # -- internals -----------------------------------------------------------------------------

    def _evict(self, ts_ns: int) -> list[Event]:
        events: list[Event] = []
        while len(self._conns) > self.max_connections:
            _, conn = self._conns.popitem(last=False)
            events += self._finish(conn, conn.last_ts)
            events.append(self._failure(conn, ts_ns, "evicted",
                                        f"more than {self.max_connections} connections tracked; oldest finished"))
        return events

    def _feed(self, conn: _Conn, chunk: TlsChunk) -> list[Event]:
        is_write = chunk.direction == "write"
        if conn.framer is None:
            if not is_write:
                if conn.early_bytes + len(chunk.data) <= _MAX_EARLY_READ_BYTES:
                    conn.early_reads.append(chunk)
                conn.early_bytes += len(chunk.data) + chunk.lost_bytes
                return []
            return self._sniff(conn, chunk)
        framer = conn.framer
        return self._guard(conn, chunk.ts_ns, partial(framer.feed, is_write, chunk.data, chunk.ts_ns, chunk.tid,
                                                      chunk.lost_bytes))

    def _sniff(self, conn: _Conn, chunk: TlsChunk) -> list[Event]:
        """Decide the protocol from the connection's first write(s)."""
        events: list[Event] = []
        conn.sniff.append(chunk)
        data = b"".join(c.data for c in conn.sniff)
        lost = conn.sniff[0].lost_bytes
        if not lost and ((len(data) < len(PREFACE) and PREFACE.startswith(data)) or could_become_request_start(data)):
            return events  # the preface or a request line was split across writes: wait for more
        writes, conn.sniff = conn.sniff, []
        if not lost and data.startswith(PREFACE):
            h2 = Http2Connection(self.max_body_bytes)
            conn.framer = h2
            for c in writes + conn.early_reads:
                events += self._guard(conn, c.ts_ns, partial(h2.feed, c.direction == "write", c.data, c.ts_ns,
                                                             c.tid, c.lost_bytes))
            conn.early_reads.clear()
            return events
        synced = looks_like_request_start(data)
        if not synced and looks_like_h2_frames(data):
            conn.ignored = True
            conn.early_reads.clear()
            return [self._failure(conn, chunk.ts_ns, "h2_no_preface",
                                  "HTTP/2 frames without the connection preface: HPACK state is unknown, "
                                  "headers and bodies of this connection cannot be decoded")]
        if lost:
            events.append(self._failure(conn, chunk.ts_ns, "mid_stream_start",
                                        f"{lost} bytes lost before the first captured write"))
        elif not synced:
            events.append(self._failure(conn, chunk.ts_ns, "mid_stream_start",
                                        "first captured write is not a request line or HTTP/2 preface; "
                                        "skipping to the next write that starts a request"))
        elif conn.early_reads:
            events.append(self._failure(conn, chunk.ts_ns, "mid_stream_start",
                                        f"{conn.early_bytes} response bytes captured before any request; ignored"))
        h1 = Http1Connection(self.max_body_bytes, request_synced=synced,
                             response_synced=synced and not lost and not conn.early_reads)
        conn.framer = h1
        conn.early_reads.clear()
        for c in writes:
            events += self._guard(conn, c.ts_ns, partial(h1.feed, True, c.data, c.ts_ns, c.tid))
        return events

    def _finish(self, conn: _Conn, ts_ns: int) -> list[Event]:
        if conn.framer is not None:
            framer = conn.framer
            return self._guard(conn, ts_ns, partial(framer.close, ts_ns))
        if conn.ignored:
            return []
        if conn.sniff or conn.early_reads:
            return [self._failure(conn, ts_ns, "mid_stream_start",
                                  "connection closed before a request line or HTTP/2 preface was captured")]
        return []

    def _guard(self, conn: _Conn, ts_ns: int, step: Callable[[], FramerOutput]) -> list[Event]:
        """Run a framer step and convert its output to events; a bug ends only this connection."""
        try:
            output = step()
            return self._convert(conn, output)
        except Exception as exc:  # noqa: BLE001 - see module docstring
            conn.framer = None
            conn.ignored = True
            return [self._internal_error(conn.pid, conn.conn_id, conn.comm, ts_ns, exc)]

    def _convert(self, conn: _Conn, output: FramerOutput) -> list[Event]:
        events: list[Event] = []
        ident = ConnIdentity(conn.pid, conn.comm, conn.conn_id, conn.source)
        for item in output.items:
            if isinstance(item, Exchange):
                try:
                    events += events_for_exchange(item, ident, capture_content=self.capture_content)
                except Exception as exc:  # noqa: BLE001 - one undecodable call must not end the connection
                    events.append(self._internal_error(conn.pid, conn.conn_id, conn.comm, item.request.start_ts,
                                                       exc))
            else:
                events.append(ParseFailure(item.ts_ns, conn.pid, conn.conn_id, conn.comm, item.reason,
                                           redact_text(item.detail)))
        return events

    @staticmethod
    def _failure(conn: _Conn, ts_ns: int, reason: str, detail: str) -> ParseFailure:
        return ParseFailure(ts_ns, conn.pid, conn.conn_id, conn.comm, reason, detail)

    @staticmethod
    def _internal_error(pid: int, conn_id: int, comm: str, ts_ns: int, exc: Exception) -> ParseFailure:
        return ParseFailure(ts_ns, pid, conn_id, comm, "internal_error",
                            redact_text(f"decoder error {type(exc).__name__}: {exc}"))

    def _counted(self, events: list[Event]) -> list[Event]:
        for event in events:
            if isinstance(event, ParseFailure):
                self.failures[event.reason] += 1
        return events
