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
import logging
from ctypes import c_uint16, c_uint32, c_uint64

from vigild.bpf.events import EventDecoder, Kind
from vigild.bpf.syscall_tracepoints import TracefsUnavailable, tracefs_root
from vigild.bpf.tls import RUSTLS_LINK_MAPS
# The records have the TLS layouts, so the TLS decoders read them (lib says which sensor).
from vigild.bpf.events import _decode_tls_close as decode_sock_close
from vigild.bpf.events import _decode_tls_data as decode_sock_data
from vigild.bpf.features import Features
from vigild.bpf.loader import BpfError, BpfObject, Link, Map
from vigild.bpf.objects import object_path

log = logging.getLogger("vigild.sockdata")

MAX_PORTS = 8
# (tracepoint, program): every exit shares one program, the entry already decided.
ENTRY_PROGRAMS = (
    ("sys_enter_write", "sock_enter_write"),
    ("sys_enter_sendto", "sock_enter_sendto"),
    ("sys_enter_writev", "sock_enter_writev"),
    ("sys_enter_sendmsg", "sock_enter_sendmsg"),
    ("sys_enter_read", "sock_enter_read"),
    ("sys_enter_recvfrom", "sock_enter_recvfrom"),
    ("sys_enter_readv", "sock_enter_readv"),
    ("sys_enter_recvmsg", "sock_enter_recvmsg"),
    ("sys_enter_close", "sock_close"),
)
EXIT_TRACEPOINTS = ("sys_exit_write", "sys_exit_sendto", "sys_exit_writev", "sys_exit_sendmsg", "sys_exit_read",
                    "sys_exit_recvfrom", "sys_exit_readv", "sys_exit_recvmsg")


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
    counted (`sock_capped` in the per-kind stats), not sent."""

    def __init__(self, shared_maps: dict[str, Map], ports: tuple[int, ...] = (), max_call_bytes: int = 16 * 1024 * 1024,
                 max_conn_bytes: int = 256 * 1024 * 1024, wakeup_bytes: int = 256 * 1024) -> None:
        if len(ports) > MAX_PORTS or any(not 0 < p < 65536 for p in ports):
            raise ValueError(f"at most {MAX_PORTS} ports, each in 1..65535: {ports}")
        self.obj = BpfObject(object_path("sockdata.bpf.o"))
        self.links: list[Link] = []
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
            for tracepoint, prog in ENTRY_PROGRAMS:
                self.links.append(self.obj.attach_tracepoint(prog, "syscalls", tracepoint))
            for tracepoint in EXIT_TRACEPOINTS:
                self.links.append(self.obj.attach_tracepoint("sock_exit", "syscalls", tracepoint))
        except BaseException:
            self.close()
            raise

    def register(self, decoder: EventDecoder) -> None:
        decoder.register(Kind.SOCK_DATA, decode_sock_data)
        decoder.register(Kind.SOCK_CLOSE, decode_sock_close)

    def close(self) -> None:
        for link in self.links:
            link.destroy()
        self.links.clear()
        self.obj.close()


def open_sockdata(shared_maps: dict[str, Map], features: Features, max_call_bytes: int,
                  ports: tuple[int, ...] = ()) -> SockDataSensor | None:
    """The plain-HTTP sensor, or None when this kernel refuses it (said once through
    `features` as `plain_http`): TLS capture and everything else go on."""
    try:
        tracefs_root()  # its programs attach to syscall tracepoints: tracefs is mounted where absent
        sensor = SockDataSensor(shared_maps, ports=ports, max_call_bytes=max_call_bytes)
    except TracefsUnavailable as exc:
        features.unavailable("plain_http", str(exc))
        return None
    except BpfError as exc:
        features.unavailable("plain_http", exc.summary)
        return None
    features.available("plain_http")
    return sensor
