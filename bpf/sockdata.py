"""The plain-HTTP sensor: payload of tracked processes' TCP connections that speak HTTP without
TLS (local models: Ollama, vLLM, llama.cpp's server, gateways such as LiteLLM), read at the
send/receive syscalls (sockdata.bpf.o).

Its records have the TLS sensor's data and close layouts under kinds of their own, decoded here
into the same `TlsData`/`TlsClose` events with `lib == SOCK_LIB_PLAIN`, so the pipeline feeds
them to the same reassembly and decoders; `conn_id` is the socket's inode (the `sock_id` of the
effects sensor's network events). TLS connections are never captured here: their first write is
a TLS record, not a request line, so the kernel ignores the connection (see sockdata.bpf.c).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import platform
from ctypes import c_uint16, c_uint32, c_uint64
from typing import TYPE_CHECKING

from vigild.bpf.events import EventDecoder, Kind
from vigild.bpf.syscall_tracepoints import TracefsUnavailable, tracefs_root
from vigild.bpf.tls import RUSTLS_LINK_MAPS
# The records have the TLS layouts, so the TLS decoders read them (lib says which sensor).
from vigild.bpf.events import _decode_tls_close as decode_sock_close
from vigild.bpf.events import _decode_tls_data as decode_sock_data
from vigild.bpf.features import Features
from vigild.bpf.loader import BpfError, BpfObject, Link, Map
from vigild.bpf.objects import object_path

if TYPE_CHECKING:
    from vigild.bpf.effects import EffectsSensor

log = logging.getLogger("vigild.sockdata")

MAX_PORTS = 8
# The syscalls whose exit sock_exit handles (one program for all: it reads their arguments from
# the registers saved at entry; no entry program) and the one whose entry sock_close handles.
EXIT_SYSCALLS = ("write", "sendto", "writev", "sendmsg", "read", "recvfrom", "readv", "recvmsg")
CLOSE_SYSCALLS = ("close",)
# program -> (the effects program that can call it instead, its tracepoints' direction, syscalls)
PROGRAMS = {
    "sock_exit": ("effects_exit", "exit", EXIT_SYSCALLS),
    "sock_close": ("effects_enter", "enter", CLOSE_SYSCALLS),
}


class SockConfigC(ctypes.Structure):
    """Mirror of `struct sock_config` in sockdata.bpf.c."""

    _fields_ = [
        ("wakeup_bytes", c_uint32),
        ("max_call_bytes", c_uint32),
        ("max_conn_bytes", c_uint64),
        ("ports", c_uint16 * MAX_PORTS),
    ]


class SockDataSensor:
    """Captures plain-HTTP traffic of tracked processes.

    ports: remote ports captured whatever the first bytes (an HTTP dialect whose first write is
    not a request line); at most MAX_PORTS. max_conn_bytes caps one connection; calls past it are
    counted (`sock_capped` in the per-kind stats), not sent.

    effects: the effects sensor, when it runs on the same syscalls' tracepoints and was built to
    call this sensor's programs (EffectsSensor.chain): they are called from its programs for
    tracked processes instead of being attached beside them, so that processes nobody tracks run
    one program per call there, not two. `chained` lists the programs called that way."""

    def __init__(self, shared_maps: dict[str, Map], ports: tuple[int, ...] = (), max_call_bytes: int = 16 * 1024 * 1024,
                 max_conn_bytes: int = 256 * 1024 * 1024, wakeup_bytes: int = 256 * 1024,
                 effects: EffectsSensor | None = None) -> None:
        if len(ports) > MAX_PORTS or any(not 0 < p < 65536 for p in ports):
            raise ValueError(f"at most {MAX_PORTS} ports, each in 1..65535: {ports}")
        if platform.machine() != "x86_64":
            raise BpfError(f"plain-HTTP capture knows x86-64 syscall numbers only, not {platform.machine()}",
                           errno.EOPNOTSUPP)
        self.obj = BpfObject(object_path("sockdata.bpf.o"))
        self.links: list[Link] = []
        self.effects = effects
        self.chained: list[str] = []
        try:
            for name in ("tracked", "events", "stats"):
                self.obj.reuse_map(name, shared_maps[name])
            for name in RUSTLS_LINK_MAPS:  # the TLS sensor's, when it runs: rustls records find their socket
                if name in shared_maps:
                    self.obj.reuse_map(name, shared_maps[name])
            config = SockConfigC(wakeup_bytes=wakeup_bytes, max_call_bytes=max_call_bytes,
                                 max_conn_bytes=max_conn_bytes)
            for i, port in enumerate(ports):
                config.ports[i] = port
            self.obj.set_rodata(config)
            self.obj.load()
            for prog, (effects_prog, direction, syscalls) in PROGRAMS.items():
                if effects is not None and effects.chain(effects_prog, self.obj.program_fd(prog), syscalls):
                    self.chained.append(prog)
                    continue
                for name in syscalls:
                    self.links.append(self.obj.attach_tracepoint(prog, "syscalls", f"sys_{direction}_{name}"))
        except BaseException:
            self.close()
            raise

    def register(self, decoder: EventDecoder) -> None:
        decoder.register(Kind.SOCK_DATA, decode_sock_data)
        decoder.register(Kind.SOCK_CLOSE, decode_sock_close)

    def close(self) -> None:
        if self.effects is not None:
            for prog in self.chained:
                self.effects.unchain(PROGRAMS[prog][0])
        self.chained.clear()
        for link in self.links:
            link.destroy()
        self.links.clear()
        self.obj.close()


def open_sockdata(shared_maps: dict[str, Map], features: Features, max_call_bytes: int,
                  ports: tuple[int, ...] = (), effects: EffectsSensor | None = None) -> SockDataSensor | None:
    """The plain-HTTP sensor, or None when this kernel refuses it (said once through
    `features` as `plain_http`): TLS capture and everything else go on. `effects`: see
    SockDataSensor."""
    try:
        tracefs_root()  # its programs attach to syscall tracepoints: tracefs is mounted where absent
        sensor = SockDataSensor(shared_maps, ports=ports, max_call_bytes=max_call_bytes, effects=effects)
    except TracefsUnavailable as exc:
        features.unavailable("plain_http", str(exc))
        return None
    except BpfError as exc:
        features.unavailable("plain_http", exc.summary)
        return None
    features.available("plain_http")
    return sensor
