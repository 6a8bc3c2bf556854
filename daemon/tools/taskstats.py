"""Per-task delay accounting from the kernel's taskstats generic-netlink family.

When a task exits, the kernel sends its `struct taskstats` (CPU run-queue wait, block I/O wait,
memory-reclaim wait, thrashing wait, ...) to every listener registered for the CPU it exits on.
vigil registers for all CPUs and sums the figures of each tool call's processes.

Written directly on `socket` rather than with pyroute2 (installed here, 0.9.7): its decoder knows
one layout for version 15 and an old one for everything else, but the kernel's struct changed
twice — version 15 inserted `*_delay_max/min` fields in the middle (breaking every later offset),
and version 16 moved them to the end again. Reading exit notifications also needs nothing more
than a blocking-free recv loop, which is less code here than adapting pyroute2's async socket.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import struct
from ctypes import c_char, c_uint8, c_uint16, c_uint32, c_uint64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("vigild.taskstats")

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 0x2
TASKSTATS_CMD_GET = 1
TASKSTATS_CMD_NEW = 2
TASKSTATS_CMD_ATTR_PID = 1
TASKSTATS_CMD_ATTR_REGISTER_CPUMASK = 3
TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK = 4
TASKSTATS_TYPE_PID = 1
TASKSTATS_TYPE_STATS = 3
TASKSTATS_TYPE_AGGR_PID = 4
NLA_F_MASK = 0x3FFF
DELAYACCT_SYSCTL = Path("/proc/sys/kernel/task_delayacct")

_STABLE_FIELDS: list[tuple[str, Any]] = [
    ("version", c_uint16), ("_pad0", c_uint16), ("ac_exitcode", c_uint32), ("ac_flag", c_uint8),
    ("ac_nice", c_uint8), ("_pad1", c_uint8 * 6),
    ("cpu_count", c_uint64), ("cpu_delay_total", c_uint64),
    ("blkio_count", c_uint64), ("blkio_delay_total", c_uint64),
    ("swapin_count", c_uint64), ("swapin_delay_total", c_uint64),
    ("cpu_run_real_total", c_uint64), ("cpu_run_virtual_total", c_uint64),
    ("ac_comm", c_char * 32), ("ac_sched", c_uint8), ("ac_pad", c_uint8 * 3), ("_pad2", c_uint32),
    ("ac_uid", c_uint32), ("ac_gid", c_uint32), ("ac_pid", c_uint32), ("ac_ppid", c_uint32),
    ("ac_btime", c_uint32), ("_pad3", c_uint32),
    *[(name, c_uint64) for name in (
        "ac_etime", "ac_utime", "ac_stime", "ac_minflt", "ac_majflt", "coremem", "virtmem", "hiwater_rss",
        "hiwater_vm", "read_char", "write_char", "read_syscalls", "write_syscalls", "read_bytes", "write_bytes",
        "cancelled_write_bytes", "nvcsw", "nivcsw", "ac_utimescaled", "ac_stimescaled",
        "cpu_scaled_run_real_total", "freepages_count", "freepages_delay_total", "thrashing_count",
        "thrashing_delay_total", "ac_btime64", "compact_count", "compact_delay_total")],
    ("ac_tgid", c_uint32),
]
_V15_EXTRA_AFTER = ("cpu_delay_total", "blkio_delay_total", "swapin_delay_total", "freepages_delay_total",
                    "thrashing_delay_total", "compact_delay_total")


def _v15_fields() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name, ctype in _STABLE_FIELDS:
        out.append((name, ctype))
        if name in _V15_EXTRA_AFTER:
            stem = name.removesuffix("_total")
            out += [(f"{stem}_max", c_uint64), (f"{stem}_min", c_uint64)]
    return out


class TaskstatsC(ctypes.Structure):
    """struct taskstats up to ac_tgid (version 13), the layout of every version but 15."""

    _fields_ = _STABLE_FIELDS


class TaskstatsV15C(ctypes.Structure):
    """Version 15's layout, with delay max/min inserted after each delay total."""

    _fields_ = _v15_fields()


@dataclass(frozen=True)
class TaskDelays:
    """One exited thread's delay totals, in nanoseconds."""

    pid: int
    tgid: int
    cpu_ns: int
    blkio_ns: int
    reclaim_ns: int
    thrashing_ns: int


def parse_taskstats(payload: bytes) -> TaskDelays | None:
    """The delays in one TASKSTATS_TYPE_STATS payload, or None for a layout we cannot read."""
    if len(payload) < 2:
        return None
    (version,) = struct.unpack_from("=H", payload)
    layout: type[ctypes.Structure] = TaskstatsV15C if version == 15 else TaskstatsC
    if version < 9:  # no thrashing figures before version 9
        return None
    size = ctypes.sizeof(layout)
    raw = payload[:size].ljust(size, b"\0")
    ts = layout.from_buffer_copy(raw)
    tgid = ts.ac_tgid if version >= 10 and ts.ac_tgid else ts.ac_pid
    return TaskDelays(pid=ts.ac_pid, tgid=tgid, cpu_ns=ts.cpu_delay_total, blkio_ns=ts.blkio_delay_total,
                      reclaim_ns=ts.freepages_delay_total, thrashing_ns=ts.thrashing_delay_total)


def _attr(kind: int, data: bytes) -> bytes:
    body = struct.pack("=HH", 4 + len(data), kind) + data
    return body + b"\0" * (-len(body) % 4)


def _attrs(data: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out.append((kind & NLA_F_MASK, data[offset + 4:offset + length]))
        offset += (length + 3) & ~3
    return out


def _messages(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload after nlmsghdr) for each netlink message in one datagram."""
    out, offset = [], 0
    while offset + 16 <= len(data):
        length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            break
        out.append((kind, data[offset + 16:offset + length]))
        offset += (length + 3) & ~3
    return out


def possible_cpu_mask() -> str:
    try:
        return Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return f"0-{(os.cpu_count() or 1) - 1}"


class TaskstatsListener:
    """Exit statistics of every task on every CPU, read without blocking by `drain()`."""

    def __init__(self, rcvbuf: int = 8 << 20) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self._seq = 0
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, 0))
            self.family = self._family_id("TASKSTATS")
            self.mask = possible_cpu_mask()
            self._request(TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, self.mask.encode() + b"\0")
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self.overruns = 0

    def _send(self, family: int, cmd: int, attrs: bytes) -> int:
        self._seq += 1
        genl = struct.pack("=BBH", cmd, 1, 0)
        header = struct.pack("=IHHII", 16 + len(genl) + len(attrs), family, NLM_F_REQUEST | NLM_F_ACK, self._seq, 0)
        self.sock.send(header + genl + attrs)
        return self._seq

    def _family_id(self, name: str) -> int:
        self._send(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, _attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"))
        while True:
            for kind, payload in _messages(self.sock.recv(65536)):
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload)
                    if err:
                        raise OSError(-err, f"generic netlink family {name}: {os.strerror(-err)}")
                    continue
                for attr, data in _attrs(payload[4:]):
                    if attr == CTRL_ATTR_FAMILY_ID:
                        family_id: int = struct.unpack_from("=H", data)[0]
                        return family_id

    def _request(self, attr: int, value: bytes) -> None:
        """Send a taskstats command and wait for its acknowledgement."""
        self._send(self.family, TASKSTATS_CMD_GET, _attr(attr, value))
        while True:
            for kind, payload in _messages(self.sock.recv(65536)):
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload)
                    if err:
                        raise OSError(-err, f"taskstats: {os.strerror(-err)}")
                    return

    def drain(self) -> list[TaskDelays]:
        """Every per-thread exit record waiting on the socket (the per-process aggregates are
        skipped: they repeat the same delays summed)."""
        found: list[TaskDelays] = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return found
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the host's exits outran us; some records are gone
                    self.overruns += 1
                    continue
                raise
            for kind, payload in _messages(data):
                if kind != self.family:
                    continue
                for attr, nested in _attrs(payload[4:]):
                    if attr != TASKSTATS_TYPE_AGGR_PID:
                        continue
                    for inner, value in _attrs(nested):
                        if inner == TASKSTATS_TYPE_STATS:
                            delays = parse_taskstats(value)
                            if delays is not None:
                                found.append(delays)

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self._request(TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK, self.mask.encode() + b"\0")
        except OSError as exc:
            log.debug("taskstats deregister: %s", exc)
        self.sock.close()


class DelayAccounting:
    """Turns `kernel.task_delayacct` on for the life of a run and puts the old value back.

    The value found is also saved in `saved` while the run lasts, so a run killed before it could
    restore it (SIGKILL) does not make the next run take "on" for the host's setting."""

    def __init__(self, path: Path = DELAYACCT_SYSCTL, saved: Path = Path("/run/vigild-task_delayacct.saved")) -> None:
        self.path = path
        self.saved = saved
        self.previous: str | None = None

    def enable(self) -> bool:
        try:
            current = self.path.read_text().strip()
            try:
                self.previous = self.saved.read_text().strip() or current
            except FileNotFoundError:
                self.previous = current
                self.saved.write_text(current)
            if current != "1":
                self.path.write_text("1")
            return True
        except OSError as exc:
            log.warning("cannot enable delay accounting (%s): tool calls get no delay figures", exc)
            self.previous = None
            return False

    def restore(self) -> None:
        if self.previous is None:
            return
        try:
            if self.previous != "1":
                self.path.write_text(self.previous)
            self.saved.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot restore kernel.task_delayacct=%s: %s", self.previous, exc)
        self.previous = None
