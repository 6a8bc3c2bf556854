"""TLS gap arithmetic: the kernel's per-call plaintext chunks as a byte stream per connection and
direction, with what is missing measured (pure; the pipeline feeds it the TlsData records)."""

from __future__ import annotations

from vigild.bpf.events import SOCK_LIB_PLAIN, TLS_DIR_WRITE, TlsData
from vigild.correlate.tls_stream import TlsChunk


class TlsGaps:
    """Turns the kernel's per-call chunks into a byte stream per connection and direction, and
    measures what is missing: chunks lost to a full ring buffer show as skipped offsets, a capped
    call as a call that stops short of its length."""

    def __init__(self) -> None:
        # (pid, conn, direction) -> (call_id, next expected offset, call length)
        self._progress: dict[tuple[int, int, int], tuple[int, int, int]] = {}

    def chunk(self, ev: TlsData) -> TlsChunk:
        key = (ev.pid, ev.conn_id, ev.direction)
        lost = 0
        prev = self._progress.get(key)
        if prev is not None and prev[0] == ev.call_id:
            lost = max(0, ev.offset - prev[1])
        else:
            if prev is not None:
                lost += max(0, prev[2] - prev[1])  # the previous call's missing tail
            lost += ev.offset  # this call's missing head
        self._progress[key] = (ev.call_id, ev.offset + len(ev.data), ev.call_len)
        return TlsChunk(ts_ns=ev.ts_ns, pid=ev.pid, tid=ev.tid, comm=ev.comm, conn_id=ev.conn_id,
                        direction="write" if ev.direction == TLS_DIR_WRITE else "read", data=ev.data,
                        lost_bytes=lost, source="http" if ev.lib == SOCK_LIB_PLAIN else "tls")

    def forget(self, pid: int, conn_id: int | None = None) -> None:
        for key in [k for k in self._progress if k[0] == pid and (conn_id is None or k[1] == conn_id)]:
            del self._progress[key]
