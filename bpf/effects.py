"""The effects sensor: file and network effects of tracked processes (effects.bpf.o).

It loads beside the lineage sensor, reusing its tracked set, ring buffer and counters. The
syscall programs attach to the raw sys_enter/sys_exit tracepoints through BTF; a host that
refuses one of the three programs loses that part only (logged), never the daemon.
"""

from __future__ import annotations

import logging
import platform

from vigild.bpf.effects_events import EffectsConfigC, register_effects
from vigild.bpf.events import EventDecoder
from vigild.bpf.features import Features
from vigild.bpf.loader import BpfError, BpfObject, Map
from vigild.bpf.objects import object_path

log = logging.getLogger("vigild.effects")

# program -> what is lost without it
PROGRAMS = {
    "effects_exit": "every file and network effect",
    "effects_enter": "write/traffic sums at close, dup2 and exec (sums arrive at exit only)",
    "effects_process_exit": "write/traffic sums of fds left open at exit",
}


class EffectsUnsupported(RuntimeError):
    """This host cannot run the effects programs at all; the message says why, in one line."""


class EffectsSensor:
    """Reports opens, writes (summed per file), unlink/rename/mkdir/chmod, connect/accept/bind,
    per-socket traffic and DNS questions of tracked processes.

    aggregate=False makes the kernel send one record per write/send/receive call instead of one
    per fd: it exists to measure what aggregation saves."""

    def __init__(self, shared_maps: dict[str, Map], files: bool = True, net: bool = True, dns: bool = True,
                 aggregate: bool = True, wakeup_bytes: int = 256 * 1024,
                 max_queued_bytes: int = 1024 * 1024) -> None:
        if platform.machine() != "x86_64":
            raise EffectsUnsupported(f"effects tracing knows x86-64 syscall numbers only, not {platform.machine()}")
        self.obj = BpfObject(object_path("effects.bpf.o"))
        self.missing: dict[str, str] = {}
        try:
            for name in ("tracked", "events", "stats"):
                self.obj.reuse_map(name, shared_maps[name])
            self.obj.set_rodata(EffectsConfigC(wakeup_bytes=wakeup_bytes, aggregate=int(aggregate), files=int(files),
                                               net=int(net), dns=int(dns), max_queued_bytes=max_queued_bytes))
            try:
                self.obj.load()
            except BpfError as exc:  # the verifier's log stays on the chained exception
                raise EffectsUnsupported(f"effects programs refused by this kernel: {exc.summary}") from exc
            for prog, loss in PROGRAMS.items():
                try:
                    self.obj.attach(prog)
                except BpfError as exc:
                    self.missing[prog] = str(exc).splitlines()[0]
                    log.warning("effects: cannot attach %s (%s); lost: %s", prog, self.missing[prog], loss)
        except BaseException:
            self.obj.close()
            raise
        self.attached = [p for p in PROGRAMS if p not in self.missing]

    def register(self, decoder: EventDecoder) -> None:
        register_effects(decoder)

    def close(self) -> None:
        self.obj.close()
        self.attached = []


def open_effects(shared_maps: dict[str, Map], features: Features) -> EffectsSensor | None:
    """The effects sensor, or None when this host cannot run it (said once through `features`):
    a kernel that refuses it costs the effects, not the trace."""
    try:
        sensor = EffectsSensor(shared_maps)
    except (EffectsUnsupported, BpfError) as exc:
        reason = exc.summary if isinstance(exc, BpfError) else str(exc).splitlines()[0]
        features.unavailable("effects", reason)
        return None
    if "effects_exit" in sensor.missing:
        sensor.close()
        features.unavailable("effects", f"effects_exit: {sensor.missing['effects_exit']}")
        return None
    features.available("effects")
    return sensor
