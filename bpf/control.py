"""The control sensor: control.bpf.o's memory-spike and OOM-victim programs, and their events.

It reuses lineage's maps (tracked set, ring buffer, counters), so it only sees processes that
belong to a tool call (tracked_info.call_id set by lineage at the call's first exec).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from vigild.bpf.events import (
    ControlConfigC,
    EventDecoder,
    Header,
    Kind,
    MemSpikeEventC,
    OomKillEventC,
    ProcessEvent,
    fixed_part,
)
from vigild.bpf.features import Features
from vigild.bpf.loader import BpfError, BpfObject, Map, load_leaving_out_refused
from vigild.bpf.objects import object_path

# feature -> the programs it needs; a kernel that refuses one loses that feature only
FEATURE_PROGRAMS = {
    "memory_spikes": ("on_rss_stat", "on_call_exit"),
    "oom_kills": ("on_mark_victim",),
}
PROGRAMS = tuple(prog for progs in FEATURE_PROGRAMS.values() for prog in progs)
DEFAULT_SPIKE_BYTES = 100 << 20
DEFAULT_SPIKE_WINDOW_NS = 1_000_000_000


@dataclass
class MemSpike(ProcessEvent):
    """A tool call's resident memory grew by `growth_bytes` within `window_ms` (kernel-measured,
    on the RSS counter change that crossed the threshold). The pid is the process that grew."""

    type: ClassVar[str] = "mem_spike"
    growth_bytes: int = 0
    call_rss_bytes: int = 0
    rss_bytes: int = 0
    window_ms: float = 0.0


@dataclass
class OomKill(ProcessEvent):
    """The kernel's OOM killer chose this tracked process (oom:mark_victim): the fact, not a guess
    from an exit status of 137."""

    type: ClassVar[str] = "oom_kill"
    rss_bytes: int = 0
    total_vm_bytes: int = 0


def _decode_spike(hdr: Header, raw: bytes, common: dict[str, Any]) -> MemSpike:
    ev = fixed_part(raw, MemSpikeEventC)
    common["tool_call"] = ev.call_id  # the call whose total grew, which its owner names
    return MemSpike(**common, growth_bytes=ev.growth_bytes, call_rss_bytes=ev.call_rss_bytes,
                    rss_bytes=ev.rss_bytes, window_ms=ev.window_ns / 1e6)


def _decode_oom(hdr: Header, raw: bytes, common: dict[str, Any]) -> OomKill:
    ev = fixed_part(raw, OomKillEventC)
    common["tool_call"] = ev.call_id
    return OomKill(**common, rss_bytes=ev.rss_bytes, total_vm_bytes=ev.total_vm_bytes)


class ControlSensor:
    """Loads control.bpf.o against lineage's shared maps and attaches its programs.

    A program this kernel refuses (at load or attach) is left out: `refused` says which and why,
    and `report` turns that into the memory_spikes and oom_kills features."""

    def __init__(self, shared_maps: dict[str, Map], spike_bytes: int = DEFAULT_SPIKE_BYTES,
                 spike_window_ns: int = DEFAULT_SPIKE_WINDOW_NS) -> None:
        page_shift = (os.sysconf("SC_PAGE_SIZE") - 1).bit_length()

        def configure(obj: BpfObject) -> None:
            for name in ("tracked", "events", "stats"):
                obj.reuse_map(name, shared_maps[name])
            # Spikes and OOM kills are rare and someone waits on them: wake the consumer at once.
            obj.set_rodata(ControlConfigC(spike_bytes=spike_bytes, spike_window_ns=spike_window_ns,
                                          wakeup_bytes=0, page_shift=page_shift))

        self.obj, self.refused = load_leaving_out_refused(object_path("control.bpf.o"), configure, PROGRAMS)
        try:
            self.call_mem: Map = self.obj.map("call_mem")
            self.proc_mem: Map = self.obj.map("proc_mem")
            for prog in PROGRAMS:
                if prog in self.refused:
                    continue
                try:
                    self.obj.attach(prog)
                except BpfError as exc:
                    self.refused[prog] = str(exc).splitlines()[0]
        except BaseException:
            self.obj.close()
            raise

    def report(self, features: Features) -> None:
        """Each feature is available when all its programs run; else the first refusal says why."""
        for feature, progs in FEATURE_PROGRAMS.items():
            refusals = [f"{prog}: {self.refused[prog]}" for prog in progs if prog in self.refused]
            if refusals:
                features.unavailable(feature, f"control.bpf.o {refusals[0]}")
            else:
                features.available(feature)

    def register(self, decoder: EventDecoder) -> None:
        decoder.register(Kind.MEM_SPIKE, _decode_spike)
        decoder.register(Kind.OOM_KILL, _decode_oom)

    def forget_call(self, call_id: int) -> None:
        """Drop the kernel's memory state of a call that ended (its processes' entries go at exit)."""
        self.call_mem.delete(ctypes.c_uint32(call_id))

    def forget_process(self, pid: int) -> None:
        """Drop the call a process was counted in: it turned out not to be a tool call (the
        agent's relaunch or housekeeping), so its memory is no call's."""
        self.proc_mem.delete(ctypes.c_uint32(pid))

    def close(self) -> None:
        self.obj.close()
