"""The effects sensor: file and network effects of tracked processes (effects.bpf.o).

It loads beside the lineage sensor, reusing its tracked set, ring buffer and counters. The
syscall programs attach to the per-syscall tracepoints of the syscalls they look at (so that
other syscalls cost nothing to anyone), or, where tracefs cannot be had, to the raw
sys_enter/sys_exit through BTF (said as the `syscall_tracepoints` feature); a host that refuses
one of the three programs loses that part only (logged), never the daemon. On the per-syscall
tracepoints its programs also call the plain-HTTP sensor's for tracked processes (`chain`), so
that a syscall both sensors look at runs one program for the processes nobody tracks.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from pathlib import Path

from vigild.bpf.effects_events import EffectsConfigC, register_effects
from vigild.bpf.events import EventDecoder
from vigild.bpf.features import Features
from vigild.bpf.loader import BpfError, BpfObject, Map
from vigild.bpf.objects import object_path
from vigild.bpf.syscall_tracepoints import ENTER_SYSCALLS, EXIT_SYSCALLS, TracefsUnavailable, present, tracefs_root

log = logging.getLogger("vigild.effects")

# program -> what is lost without it
PROGRAMS = {
    "effects_exit": "every file and network effect",
    "effects_enter": "write/traffic sums at close, dup2 and exec (sums arrive at exit only)",
    "effects_process_exit": "write/traffic sums of fds left open at exit",
}
# the program that does a PROGRAMS entry's job on the per-syscall tracepoints, with its syscalls
PER_SYSCALL = {
    "effects_exit": ("effects_sys_exit", "exit", EXIT_SYSCALLS),
    "effects_enter": ("effects_sys_enter", "enter", ENTER_SYSCALLS),
}
# Slots of effects_chain (effects.bpf.c): another sensor's program called by the PROGRAMS entry
# for tracked processes, on the syscalls both look at (the plain-HTTP sensor's exit and close).
CHAIN_SLOTS = {"effects_exit": 0, "effects_enter": 1}
LIFECYCLE_RESERVE = 8 << 20  # what a flood of effects leaves of the ring at most to lifecycle events


def effects_queue_bytes(ring_bytes: int) -> int:
    """What effects may queue in a ring of `ring_bytes` before the kernel sheds them: all but half
    of it, or all but LIFECYCLE_RESERVE when that is less."""
    return max(ring_bytes // 2, ring_bytes - LIFECYCLE_RESERVE)


class EffectsUnsupported(RuntimeError):
    """This host cannot run the effects programs at all; the message says why, in one line."""


class EffectsSensor:
    """Reports opens, writes (summed per file), unlink/rename/mkdir/chmod, connect/accept/bind,
    per-socket traffic and DNS questions of tracked processes.

    aggregate=False makes the kernel send one record per write/send/receive call instead of one
    per fd: it exists to measure what aggregation saves. fold_opens=False sends every open as a
    record instead of counting a thread's repeated read-only opens of a file (effects_folds.bpf.h).
    chain_sock=True readies the programs to call the plain-HTTP sensor's (see `chain`)."""

    def __init__(self, shared_maps: dict[str, Map], files: bool = True, net: bool = True, dns: bool = True,
                 aggregate: bool = True, fold_opens: bool = True, wakeup_bytes: int | None = None,
                 max_queued_bytes: int | None = None, tracefs: Path | None = None, chain_sock: bool = False) -> None:
        """`tracefs`: attach through the per-syscall tracepoints it lists; None: the raw ones.
        `wakeup_bytes`: None keeps effects.bpf.c's own value (`self.config` holds what was loaded).
        Effects are shed while `max_queued_bytes` wait in the shared ring. None: all of the ring
        but a reserve for lifecycle events (exits, a session's end, TLS) of half of it, at most
        LIFECYCLE_RESERVE: in the default 16 MiB ring, 8 MiB hold a 30k-open burst whole (~220
        bytes a record), which the pipeline records in one or two seconds; a bigger ring
        (`LineageSensor(ring_bytes=)`) gives all of its growth to bursts."""
        if platform.machine() != "x86_64":
            raise EffectsUnsupported(f"effects tracing knows x86-64 syscall numbers only, not {platform.machine()}")
        self.obj = BpfObject(object_path("effects.bpf.o"))
        self.missing: dict[str, str] = {}
        self.per_syscall = tracefs is not None
        # syscalls this kernel lacks (no process can make them, so nothing is lost), logged once
        self.absent_syscalls: list[str] = []
        try:
            programs = self.obj.program_names()
            for raw, (tp_prog, _, _) in PER_SYSCALL.items():
                unused = raw if self.per_syscall else tp_prog
                if unused in programs:
                    self.obj.disable_program(unused)
            for name in ("tracked", "events", "stats"):
                self.obj.reuse_map(name, shared_maps[name])
            config = self.obj.rodata(EffectsConfigC)
            config.aggregate, config.files, config.net, config.dns = int(aggregate), int(files), int(net), int(dns)
            config.fold_opens = int(fold_opens)
            config.chain_sock = int(chain_sock and self.per_syscall)  # tp_btf programs cannot call tracepoint ones
            if wakeup_bytes is not None:
                config.wakeup_bytes = wakeup_bytes
            config.max_queued_bytes = (max_queued_bytes if max_queued_bytes is not None
                                       else effects_queue_bytes(shared_maps["events"].max_entries))
            self.obj.set_rodata(config)
            self.config = config
            try:
                self.obj.load()
            except BpfError as exc:  # the verifier's log stays on the chained exception
                raise EffectsUnsupported(f"effects programs refused by this kernel: {exc.summary}") from exc
            for prog, loss in PROGRAMS.items():
                try:
                    if tracefs is not None and prog in PER_SYSCALL:
                        self._attach_per_syscall(tracefs, prog)
                    else:
                        self.obj.attach(prog)
                except BpfError as exc:
                    self.missing[prog] = str(exc).splitlines()[0]
                    log.warning("effects: cannot attach %s (%s); lost: %s", prog, self.missing[prog], loss)
        except BaseException:
            self.obj.close()
            raise
        self.attached = [p for p in PROGRAMS if p not in self.missing]

    def _attach_per_syscall(self, tracefs: Path, prog: str) -> None:
        """One program on the tracepoint of every syscall it looks at; all or none (a partial set
        would lose effects silently)."""
        tp_prog, direction, syscalls = PER_SYSCALL[prog]
        have, absent = present(tracefs, direction, syscalls)
        self.absent_syscalls += absent
        if absent:
            log.info("effects: this kernel has no %s syscall: nothing to trace there", ", ".join(absent))
        first = len(self.obj.links)
        try:
            for name in have:
                self.obj.attach_tracepoint(tp_prog, "syscalls", f"sys_{direction}_{name}")
        except BpfError:
            for link in self.obj.links[first:]:
                link.destroy()
            del self.obj.links[first:]
            raise

    def chain(self, prog: str, prog_fd: int, syscalls: tuple[str, ...]) -> bool:
        """Have `prog` (a PROGRAMS entry) call the program `prog_fd` for tracked processes on the
        given syscalls' tracepoints, instead of that program being attached there too (so that
        processes nobody tracks run one program per call). False when it cannot (the sensor was
        not built for it, runs on the raw tracepoints, or `prog` is not attached to all of them):
        the caller attaches its program itself then."""
        direction_syscalls = PER_SYSCALL[prog][2]
        if not self.config.chain_sock or prog in self.missing or not set(syscalls) <= set(direction_syscalls):
            return False
        self.obj.map("effects_chain").update(ctypes.c_uint32(CHAIN_SLOTS[prog]), ctypes.c_uint32(prog_fd))
        return True

    def unchain(self, prog: str) -> None:
        """The slot `chain` filled is emptied (its program is let go; the call becomes a no-op)."""
        if self.attached:
            self.obj.map("effects_chain").delete(ctypes.c_uint32(CHAIN_SLOTS[prog]))

    def register(self, decoder: EventDecoder) -> None:
        register_effects(decoder)

    def close(self) -> None:
        self.obj.close()
        self.attached = []


def open_effects(shared_maps: dict[str, Map], features: Features, fold_opens: bool = True,
                 chain_sock: bool = False) -> EffectsSensor | None:
    """The effects sensor, or None when this host cannot run it (said once through `features`):
    a kernel that refuses it costs the effects, not the trace. The per-syscall tracepoints are
    tried first; where they cannot be had the raw ones serve, said as `syscall_tracepoints`.
    `chain_sock`: the plain-HTTP sensor will be opened after it and chained (EffectsSensor.chain)."""
    sensor, per_syscall_refused = None, None
    try:
        tracefs: Path | None = tracefs_root()
    except TracefsUnavailable as exc:
        tracefs, per_syscall_refused = None, str(exc)
    if tracefs is not None:
        try:
            sensor = EffectsSensor(shared_maps, tracefs=tracefs, fold_opens=fold_opens, chain_sock=chain_sock)
        except (EffectsUnsupported, BpfError) as exc:
            per_syscall_refused = exc.summary if isinstance(exc, BpfError) else str(exc).splitlines()[0]
        else:
            if "effects_exit" in sensor.missing:
                per_syscall_refused = f"effects_sys_exit: {sensor.missing['effects_exit']}"
                sensor.close()
                sensor = None
    try:
        sensor = sensor or EffectsSensor(shared_maps, fold_opens=fold_opens)
    except (EffectsUnsupported, BpfError) as exc:
        reason = exc.summary if isinstance(exc, BpfError) else str(exc).splitlines()[0]
        features.unavailable("effects", reason)  # the effects are lost: their way in is moot
        return None
    if "effects_exit" in sensor.missing:
        sensor.close()
        features.unavailable("effects", f"effects_exit: {sensor.missing['effects_exit']}")
        return None
    if per_syscall_refused is None:
        features.available("syscall_tracepoints")
    else:
        features.unavailable("syscall_tracepoints", per_syscall_refused)
    features.available("effects")
    return sensor
