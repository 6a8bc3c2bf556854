"""The process-lineage sensor: lineage.bpf.o loaded, attached, and driven from Python.

It owns the maps every other sensor shares (tracked processes, the event ring buffer, per-kind
counters); later sensors reuse them through `shared_maps`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Iterable

import psutil

from vigild.bpf.events import (
    EVENT_KIND_MAX,
    TASK_COMM_LEN,
    ExeKeyC,
    KindStatsC,
    LineageConfigC,
    TrackedInfoC,
    kind_name,
)
from vigild.bpf.loader import BpfError, BpfObject, Map, check_host, possible_cpus, raise_memlock_limit, ring_size_error
from vigild.bpf.objects import object_path

log = logging.getLogger("vigild.bpf")

PROGRAMS = ("on_fork", "on_exec", "on_exit")


class LineageSensor:
    """Tracks process trees in the kernel and reports their fork/exec/exit."""

    def __init__(self, root_comms: Iterable[str] = (), wakeup_bytes: int = 256 * 1024, root_flags: int = 0,
                 hold_new_exe: bool = False, ring_bytes: int | None = None) -> None:
        """hold_new_exe: a tracked process that execs an executable not yet marked with
        `mark_exe_seen` is stopped (SIGSTOP, `held`) until user space lets it go, so TLS hooks
        for what that executable carries are in place before it runs.

        ring_bytes: the size of the event ring every sensor shares (None: common.bpf.h's 16 MiB).
        The kernel allocates all of it when the ring is made, whether used or not; it is what a
        burst can queue while the pipeline catches up (effects take all but a reserve of it,
        bpf/effects.py)."""
        if ring_bytes is not None and (error := ring_size_error(ring_bytes)) is not None:
            raise ValueError(error)
        check_host()
        raise_memlock_limit()
        comms = list(root_comms)
        self.obj = BpfObject(object_path("lineage.bpf.o"))
        try:
            self.obj.set_rodata(LineageConfigC(session_base=time.time_ns() // 1000, wakeup_bytes=wakeup_bytes,
                                               match_comm=1 if comms else 0,
                                               hold_new_exe=1 if hold_new_exe else 0))
            self.obj.set_max_entries("exec_scratch", possible_cpus())
            if ring_bytes is not None:
                self.obj.set_max_entries("events", ring_bytes)
            self.obj.load()
            self.tracked: Map = self.obj.map("tracked")
            self.events: Map = self.obj.map("events")
            self.stats_map: Map = self.obj.map("stats")
            self.root_comms: Map = self.obj.map("root_comms")
            self.held: Map = self.obj.map("held")
            self.held_events: Map = self.obj.map("held_events")
            self.exe_seen: Map = self.obj.map("exe_seen")
            self._exe_seen_full = False
            for comm in comms:
                self.add_root_comm(comm, root_flags)
            for prog in PROGRAMS:
                self.obj.attach(prog)
        except BaseException:
            self.obj.close()
            raise
        self.attached = list(PROGRAMS)

    @property
    def shared_maps(self) -> dict[str, Map]:
        return {"tracked": self.tracked, "events": self.events, "stats": self.stats_map, "held": self.held}

    def add_root_comm(self, comm: str, flags: int = 0) -> None:
        """Processes that exec a program with this name (as /proc/PID/comm shows it, at most 15
        bytes) become roots of new sessions; flags (TRACK_CONTROLLED) are the roots' from birth."""
        raw = comm.encode()[: TASK_COMM_LEN - 1]
        key = (ctypes.c_char * TASK_COMM_LEN)(*raw)
        self.root_comms.update(key, ctypes.c_uint32(flags))

    def remove_root_comm(self, comm: str) -> bool:
        """Stop making new roots of this name (a config reload dropped it); sessions already
        open keep running. False when the name was not there."""
        raw = comm.encode()[: TASK_COMM_LEN - 1]
        return self.root_comms.delete((ctypes.c_char * TASK_COMM_LEN)(*raw))

    def track(self, pid: int, session_id: int, root_pid: int | None = None, depth: int = 0, flags: int = 0) -> None:
        """flags: TRACK_CONTROLLED makes the first exec of each child of this root start a tool
        call, stopped in the kernel until `release_held`."""
        info = TrackedInfoC(session_id=session_id, root_pid=root_pid or pid, depth=depth, flags=flags)
        self.tracked.update(ctypes.c_uint32(pid), info)

    def mark_exe_seen(self, st_dev: int, st_ino: int) -> None:
        """The executable (as os.stat names it) has been examined: execs of it are not held."""
        # the kernel's s_dev is MKDEV(major, minor) = major << 20 | minor, not stat's encoding
        key = ExeKeyC(ino=st_ino, dev=(os.major(st_dev) << 20) | os.minor(st_dev))
        try:
            self.exe_seen.update(key, ctypes.c_uint8(1))
        except BpfError as exc:  # full (65536 executables): their execs are held briefly each time
            if not self._exe_seen_full:
                log.warning("cannot remember more examined executables (%s): new execs of unremembered "
                            "ones are held until examined again", exc)
            self._exe_seen_full = True

    def release_held(self, pid: int, keep_gil: bool = False) -> bool:
        """Forget that the kernel stopped pid at its call's first exec (the caller sends SIGCONT).
        keep_gil: see libbpf.lib_keeping_gil."""
        return self.held.delete(ctypes.c_uint32(pid), keep_gil=keep_gil)

    def is_held(self, pid: int, keep_gil: bool = False) -> bool:
        """Whether the kernel still holds pid (nobody has let it go yet)."""
        return self.held.lookup(ctypes.c_uint32(pid), keep_gil=keep_gil) is not None

    def held_pids(self) -> dict[int, int]:
        """pid -> CLOCK_BOOTTIME ns at which the kernel stopped it, for every process still held."""
        found = {}
        for key in list(self.held.keys()):
            raw = self.held.lookup(ctypes.create_string_buffer(key, len(key)))
            if raw is not None:
                found[ctypes.c_uint32.from_buffer_copy(key).value] = ctypes.c_uint64.from_buffer_copy(raw).value
        return found

    def untrack(self, pid: int) -> bool:
        return self.tracked.delete(ctypes.c_uint32(pid))

    def tracked_info(self, pid: int) -> TrackedInfoC | None:
        raw = self.tracked.lookup(ctypes.c_uint32(pid))
        return TrackedInfoC.from_buffer_copy(raw) if raw else None

    def track_tree(self, root_pid: int, session_id: int, flags: int = 0) -> list[psutil.Process]:
        """Track a running process and every descendant it already has.

        The root goes in first, so anything it forks from then on is tracked by the kernel; the
        descendants are listed twice so a child forked by a not-yet-tracked child while we walk
        is caught on the second pass."""
        root = psutil.Process(root_pid)
        self.track(root_pid, session_id, flags=flags)
        found: dict[int, psutil.Process] = {root_pid: root}
        for _ in range(2):
            for child in root.children(recursive=True):
                if child.pid in found:
                    continue
                try:
                    depth = _depth_below(child, root_pid)
                except psutil.Error:
                    continue
                self.track(child.pid, session_id, root_pid, depth)
                found[child.pid] = child
        return list(found.values())

    def stats(self) -> dict[str, tuple[int, int]]:
        """(emitted, dropped) per event kind, summed over CPUs."""
        result: dict[str, tuple[int, int]] = {}
        for kind in range(EVENT_KIND_MAX):
            per_cpu = self.stats_map.lookup_percpu(ctypes.c_uint32(kind))
            emitted = dropped = 0
            for raw in per_cpu:
                s = KindStatsC.from_buffer_copy(raw)
                emitted += s.emitted
                dropped += s.dropped
            if emitted or dropped:
                result[kind_name(kind)] = (emitted, dropped)
        return result

    def close(self) -> None:
        self.obj.close()
        self.attached = []


def _depth_below(proc: psutil.Process, root_pid: int) -> int:
    depth = 0
    current: psutil.Process | None = proc
    while current is not None and current.pid != root_pid:
        depth += 1
        current = current.parent()
    return depth
