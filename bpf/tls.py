"""The TLS sensor: uprobes on OpenSSL and GnuTLS that hand tracked processes' plaintext to the
pipeline.

Where the kernel has uprobe_multi links (6.6+), TLS libraries are hooked per tracked process
(`uprobe_mode` "per-process"): one link per process and library with a pid filter, attached while
the kernel holds the process at its first mmap of the library, so processes nobody tracks carry no
breakpoint at all. Elsewhere (`"global"`) uprobes attach to a file (an inode), for every process
that maps it, and the programs drop calls from untracked processes in the kernel: each such call
still traps. Executables that carry TLS themselves are hooked per file in both modes. Libraries are found where agents load them: the system's own
(attached at start), those a tracked process maps (its /proc/PID/maps, through /proc/PID/root for
containers), executables that carry OpenSSL themselves and export its symbols (Node.js), and
executables with BoringSSL compiled in and no symbols (Bun: Claude Code, opencode), found by
`tls_locate`, and static executables with OpenSSL 3 compiled in (Codex), found by
`static_openssl`. What cannot be hooked is recorded per executable (`captures`) so it is said, not
silent.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from vigild.bpf.events import (TLS_DIR_READ, TLS_DIR_WRITE, TLS_LIB_GNUTLS, TLS_LIB_OPENSSL, TLS_LIB_RUSTLS, ExeKeyC,
                               TlsConfigC, TlsLinkKeyC)
from vigild.bpf.features import Features
from vigild.bpf.loader import BpfError, BpfObject, Link, Map
from vigild.bpf.objects import object_path
from vigild.bpf.static_openssl import NO_OPENSSL, SiteCache, is_static_executable
from vigild.bpf.static_rustls import RustlsSites
from vigild.bpf.tls_locate import Blind, Locator, TlsFunctions
from vigild.bpf.uprobe_multi import BPF_TRACE_UPROBE_MULTI, create_link, link_refusal, symbol_offsets

log = logging.getLogger("vigild.tls")

# (symbol, entry program, return program, direction)
OPENSSL_CALLS = (
    ("SSL_write", "tls_enter", "tls_exit", TLS_DIR_WRITE),
    ("SSL_write_ex", "tls_enter_ex", "tls_exit_ex", TLS_DIR_WRITE),
    ("SSL_read", "tls_enter", "tls_exit", TLS_DIR_READ),
    ("SSL_read_ex", "tls_enter_ex", "tls_exit_ex", TLS_DIR_READ),
)
GNUTLS_CALLS = (
    ("gnutls_record_send", "tls_enter", "tls_exit", TLS_DIR_WRITE),
    ("gnutls_record_recv", "tls_enter", "tls_exit", TLS_DIR_READ),
)
LIBRARIES = {
    TLS_LIB_OPENSSL: ("openssl", OPENSSL_CALLS, "SSL_free"),
    TLS_LIB_GNUTLS: ("gnutls", GNUTLS_CALLS, "gnutls_deinit"),
}
LIB_PREFIXES = {"libssl.so": TLS_LIB_OPENSSL, "libgnutls.so": TLS_LIB_GNUTLS}
# (entry, return) programs for the located write and read functions, by stack: BoringSSL keeps
# SSL_write/SSL_read's signatures; OpenSSL 3's ssl_write_internal(s, buf, num, flags, written)
# returns the count through its 5th argument, ssl_read_internal(s, buf, num, readbytes) its 4th.
LOCATED_PROGRAMS = {
    "openssl": (("tls_enter_ex5", "tls_exit_ex"), ("tls_enter_ex", "tls_exit_ex")),
}
DEFAULT_PROGRAMS = (("tls_enter", "tls_exit"), ("tls_enter", "tls_exit"))
# per-process mode: the uprobe_multi copies of the programs, and the mmap hold that asks for links
MULTI_PROGRAMS = {"tls_enter": "tls_m_enter", "tls_enter_ex": "tls_m_enter_ex", "tls_exit": "tls_m_exit",
                  "tls_exit_ex": "tls_m_exit_ex", "tls_free": "tls_m_free"}
PER_PROCESS_PROGRAMS = (*MULTI_PROGRAMS.values(), "tls_mmap")
PER_PROCESS = "per-process"
GLOBAL = "global"
DEFAULT_SITE_CACHE = "/var/cache/vigild/static-tls.json"
RUSTLS_UNLOCATED = "rustls {} is compiled in but its TLS 1.3 record functions were not located, so its connections are not read: {}"
RUSTLS_UNLINKED = ("rustls {} is compiled in and located, but its records cannot be tied to connections without "
                   "the socket syscall tracepoints (the plain-HTTP sensor is unavailable), so they are not read")
# maps tls.bpf.c shares with sockdata.bpf.c (bpf/rustls_link.bpf.h): rustls records to their socket
RUSTLS_LINK_MAPS = ("rustls_read_sock", "rustls_pending", "rustls_sock_conn")


def cookie(lib: int, direction: int) -> int:
    return (lib << 8) | direction


@dataclass
class HookedFile:
    path: str
    lib: int
    links: list[Link] = field(default_factory=list)
    error: str | None = None


@dataclass
class LibraryFile:
    """A TLS library hooked per process: where it is, and the links each program gets
    (program, offsets, cookies, is a return probe)."""

    path: str
    lib: int
    plan: list[tuple[str, list[int], list[int], bool]]


def kernel_file_key(st_dev: int, st_ino: int) -> ExeKeyC:
    """A file as the kernel names it: s_dev is MKDEV(major, minor) = major << 20 | minor."""
    return ExeKeyC(ino=st_ino, dev=(os.major(st_dev) << 20) | os.minor(st_dev))


def library_plan(path: str, lib: int) -> list[tuple[str, list[int], list[int], bool]]:
    """The uprobe_multi links one process needs on a TLS library: one per program, each on every
    function that program serves. Raises KeyError when a function is missing."""
    _name, calls, free_symbol = LIBRARIES[lib]
    offsets = symbol_offsets(path, [c[0] for c in calls] + [free_symbol])
    grouped: dict[tuple[str, bool], tuple[list[int], list[int]]] = {}
    for symbol, enter, leave, direction in calls:
        for prog, ret in ((enter, False), (leave, True)):
            offs, cks = grouped.setdefault((MULTI_PROGRAMS[prog], ret), ([], []))
            offs.append(offsets[symbol])
            cks.append(cookie(lib, direction))
    grouped[(MULTI_PROGRAMS["tls_free"], False)] = ([offsets[free_symbol]], [cookie(lib, 0)])
    return [(prog, offs, cks, ret) for (prog, ret), (offs, cks) in grouped.items()]


@dataclass
class Capture:
    """What vigil can read of one executable's TLS: `hooked` (how: symbols or locator) or
    `blind` (why). Executables with no TLS stack of their own have none."""

    path: str
    state: str  # "hooked" | "blind"
    stack: str
    how: str | None = None
    reason: str | None = None
    locate_ms: float | None = None
    cached: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"binary": self.path, "state": self.state, "stack": self.stack, "how": self.how,
                "reason": self.reason, "locate_ms": self.locate_ms, "cached": self.cached}


class TlsSensor:
    def __init__(self, shared_maps: dict[str, Map], max_call_bytes: int = 16 * 1024 * 1024,
                 wakeup_bytes: int = 256 * 1024, locator: Locator | None = None,
                 locate_timeout: float = 30.0, site_cache: str | None = DEFAULT_SITE_CACHE,
                 per_process: bool | None = None) -> None:
        """locator: finds TLS compiled into stripped executables (None: such executables are
        reported blind). locate_timeout bounds how long one exec waits for a first search.
        site_cache: where OpenSSL found in static executables is remembered by build.
        per_process: hook TLS libraries per tracked process (None: where the kernel can)."""
        self.uprobe_mode = GLOBAL
        self.mode_reason = "turned off" if per_process is False else ""
        self.obj = self._open(shared_maps, TlsConfigC(wakeup_bytes=wakeup_bytes, max_call_bytes=max_call_bytes),
                              per_process is not False)
        self.held = shared_maps.get("held")
        self.lib_files: dict[tuple[int, int], LibraryFile] = {}  # per-process mode: (st_dev, st_ino) -> file
        self.by_kernel_key: dict[tuple[int, int], tuple[int, int]] = {}  # (s_dev, ino) -> (st_dev, st_ino)
        self.proc_links: dict[int, dict[tuple[int, int], list[int]]] = {}  # pid -> file -> link fds
        # link fds of exited processes: closed on their own thread, since each close waits for the
        # kernel to take its breakpoints out (tens of ms) and the pipeline must not wait on that
        self.closing: list[int] = []
        self._closer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigil-tls-unlink")
        self.link_ok = 0
        self.link_failed: Counter[str] = Counter()
        self.link_ms_max = 0.0
        self.files: dict[tuple[int, int], HookedFile] = {}
        self.attach_ok: Counter[str] = Counter()
        self.attach_failed: Counter[str] = Counter()
        self.locator = locator
        self.locate_timeout = locate_timeout
        self.sites = SiteCache(site_cache)
        # executable (st_dev, st_ino) -> its capture, once examined; `new_captures` are the ones
        # not yet reported (the pipeline drains them into events)
        self.captures: dict[tuple[int, int], Capture] = {}
        self.new_captures: list[Capture] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigil-tls-locate")
        self._pending: dict[tuple[int, int], Future[TlsFunctions | Blind | None]] = {}
        self._examined: set[tuple[int, int]] = set()
        self._shown: dict[tuple[int, int], str] = {}
        # set once the socket syscalls that tie rustls records to connections are traced
        self.rustls_linked = False

    @property
    def link_maps(self) -> dict[str, Map]:
        """The maps the socket sensor must share for rustls records to find their connection."""
        return {name: self.obj.map(name) for name in RUSTLS_LINK_MAPS}

    def _open(self, shared_maps: dict[str, Map], config: TlsConfigC, try_per_process: bool) -> BpfObject:
        """The loaded object: with the uprobe_multi programs where the kernel loads them, else
        without (and `mode_reason` says why)."""
        for per_process in ((True, False) if try_per_process else (False,)):
            obj = BpfObject(object_path("tls.bpf.o"))
            try:
                for name in ("tracked", "events", "stats", "held"):
                    if name in shared_maps:
                        obj.reuse_map(name, shared_maps[name])
                obj.set_rodata(config)
                for prog in PER_PROCESS_PROGRAMS:
                    if not per_process:
                        obj.disable_program(prog)
                    elif prog != "tls_mmap":
                        obj.set_expected_attach_type(prog, BPF_TRACE_UPROBE_MULTI)
                obj.load()
                refusal = link_refusal(obj.program_fd("tls_m_enter")) if per_process else None
                if refusal is not None:
                    raise BpfError(refusal, errno.EOPNOTSUPP)
                if per_process:
                    self.tls_files = obj.map("tls_files")
                    self.tls_linked = obj.map("tls_linked")
                    obj.attach("tls_mmap")
                    self.uprobe_mode = PER_PROCESS
                return obj
            except BpfError as exc:
                obj.close()
                if not per_process:
                    raise
                self.mode_reason = f"uprobe_multi links unavailable (kernel 6.6+): {exc.summary}"
                log.info("TLS uprobes attach globally: %s", self.mode_reason)
            except BaseException:
                obj.close()
                raise
        raise AssertionError("unreachable: the global load raises or returns")

    # ---- per-process links ----
    def add_library(self, path: str, lib: int) -> bool:
        """Per-process mode: make a TLS library file linkable per process, and have the kernel
        hold each tracked process at its first mmap of it."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.lib_files:
            return True
        name = LIBRARIES[lib][0]
        try:
            plan = library_plan(path, lib)
        except (KeyError, OSError, ValueError) as exc:
            self.attach_failed[name] += 1
            log.warning("cannot hook %s in %s: %s", name, path, exc)
            return False
        kkey = kernel_file_key(st.st_dev, st.st_ino)
        try:
            self.tls_files.update(kkey, ctypes.c_uint8(1))
        except BpfError as exc:
            self.attach_failed[name] += 1
            log.warning("cannot hook %s in %s: %s", name, path, exc.summary)
            return False
        self.lib_files[key] = LibraryFile(path=path, lib=lib, plan=plan)
        self.by_kernel_key[(kkey.dev, kkey.ino)] = key
        self.attach_ok[name] += 1
        log.info("hooked %s in %s (per process)", name, path)
        return True

    def link_mapped(self, pid: int, dev: int, ino: int) -> bool:
        """A tracked process mapped a library (the kernel's s_dev and inode): attach its links."""
        key = self.by_kernel_key.get((dev, ino))
        return key is not None and self.link_process(pid, key)

    def link_process(self, pid: int, key: tuple[int, int]) -> bool:
        """Attach the per-process links of one library file for pid (once); True when linked."""
        links = self.proc_links.setdefault(pid, {})
        if key in links:
            return True
        f = self.lib_files[key]
        started = time.monotonic()
        fds: list[int] = []
        try:
            for prog, offsets, cookies, ret in f.plan:
                fds.append(create_link(self.obj.program_fd(prog), f.path, offsets, cookies, pid, retprobe=ret))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            self._forget_link(pid, key)
            if exc.errno != errno.ESRCH:  # a process gone meanwhile needs no link
                self.link_failed[errno.errorcode.get(exc.errno or 0, "error")] += 1
                log.warning("cannot hook TLS of process %d: %s", pid, exc)
            return False
        links[key] = fds
        self._mark_linked(pid, key)
        self.link_ok += 1
        self.link_ms_max = max(self.link_ms_max, (time.monotonic() - started) * 1000)
        return True

    def inherit_links(self, parent: int, child: int) -> None:
        """A child forked from a linked process maps its libraries without an mmap of its own:
        link it to the same files (attached when its fork is seen: TLS calls it makes before
        that, without exec'ing first, are not read)."""
        for key in list(self.proc_links.get(parent, {})):
            self.link_process(child, key)

    def unlink_process(self, pid: int) -> None:
        """pid exited: a new process with its pid must be held again; its links close later."""
        for key, fds in self.proc_links.pop(pid, {}).items():
            self._forget_link(pid, key)
            self.closing.extend(fds)

    def close_exited_links(self, wait: bool = False) -> None:
        """Detach the links of exited processes, on the closer thread (wait: until done)."""
        fds, self.closing = self.closing, []
        if fds:
            done = self._closer.submit(_close_all, fds)
            if wait:
                done.result()

    def _link_key(self, pid: int, key: tuple[int, int]) -> TlsLinkKeyC:
        return TlsLinkKeyC(tgid=pid, file=kernel_file_key(*key))

    def _mark_linked(self, pid: int, key: tuple[int, int]) -> None:
        try:
            self.tls_linked.update(self._link_key(pid, key), ctypes.c_uint8(1))
        except BpfError:  # full: the process is held at its next mmap of the file, and found linked
            pass

    def _forget_link(self, pid: int, key: tuple[int, int]) -> None:
        self.tls_linked.delete(self._link_key(pid, key))

    def release(self, pid: int) -> None:
        """Let a process the kernel held at its mmap go."""
        if self.held is not None and self.held.delete(ctypes.c_uint32(pid)):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    # ---- finding libraries ----
    def attach_system_libraries(self) -> list[str]:
        """Hook the system's libssl and libgnutls before any agent starts, so the first
        connection of a new process is seen without waiting for a scan."""
        hooked = []
        for path, lib in _ldconfig_libraries():
            if self.attach_library(path, lib):
                hooked.append(path)
        return hooked

    def attach_library(self, path: str, lib: int, pid: int | None = None) -> bool:
        """Hook a TLS library: per process where the kernel allows it (linking pid, a process
        that maps it already), else on the file for every process."""
        if self.uprobe_mode != PER_PROCESS:
            return self.attach_file(path, lib)
        if not self.add_library(path, lib):
            return False
        if pid is not None:
            st = os.stat(path)
            self.link_process(pid, (st.st_dev, st.st_ino))
        return True

    def scan_process(self, pid: int) -> tuple[int, int] | None:
        """Hook TLS libraries a tracked process maps, and the TLS its executable carries; returns
        the executable's (st_dev, st_ino), or None when the process is gone."""
        root = f"/proc/{pid}/root"
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return None  # gone already
        seen: set[str] = set()
        for line in maps.splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or not parts[5].startswith("/"):
                continue
            path = parts[5]
            if path in seen:
                continue
            seen.add(path)
            name = os.path.basename(path)
            for prefix, lib in LIB_PREFIXES.items():
                if name.startswith(prefix):
                    self.attach_library(root + path, lib, pid)
        exe = exe.removesuffix(" (deleted)")
        return self.examine_executable(root + exe, shown=exe)

    def examine_executable(self, path: str, shown: str | None = None) -> tuple[int, int] | None:
        """Hook the TLS an executable carries: exported OpenSSL symbols, or BoringSSL found by the
        locator. Waits at most locate_timeout for a first search (a held exec waits on this);
        a search still running then is finished by `poll_pending`. Returns the file's key.
        shown: the path as the process sees it (path may go through /proc/PID/root)."""
        shown = shown or path
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        try:
            same = os.stat(shown)
            if (same.st_dev, same.st_ino) == key:
                path = shown  # the same file in our namespace: the search outlives the process
        except OSError:
            pass
        if key in self._examined:
            return key
        self._examined.add(key)
        if self.attach_file(path, TLS_LIB_OPENSSL, quiet_if_absent=True):
            self._record(key, Capture(path=shown, state="hooked", stack="openssl", how="symbols"))
            return key
        if self.locator is None:
            return key
        self._shown[key] = shown
        future = self._pool.submit(self._locate, path)
        try:
            found = future.result(timeout=self.locate_timeout)
        except FutureTimeout:
            self._pending[key] = future
            log.warning("locating TLS in %s takes longer than %.1f s: its process runs on, unhooked "
                        "until the search ends", path, self.locate_timeout)
            return key
        except OSError:
            self._examined.discard(key)  # gone before it could be read: examined again if seen again
            return key
        except Exception as exc:  # noqa: BLE001 - a binary that breaks the search is blind, not fatal
            found = Blind(path, "unknown", f"TLS search failed: {exc}")
        self._apply(key, shown, found)
        return key

    def _locate(self, path: str) -> TlsFunctions | Blind | None:
        """OpenSSL 3 compiled into a static executable (Codex: bpf/static_openssl.py) first; else
        the BoringSSL-family locator. Runs on the locate pool."""
        assert self.locator is not None
        if is_static_executable(path):
            started = time.monotonic()
            found, cached = self.sites.lookup(path)
            if found.openssl is not None:
                unread: tuple[Blind, ...] = ()
                if found.rustls and found.rustls_sites is None:
                    reason = RUSTLS_UNLOCATED.format(found.rustls, found.rustls_error)
                    unread = (Blind(path, "rustls", reason, found.build_key, cached=cached),)
                elif found.rustls and not self.rustls_linked:
                    unread = (Blind(path, "rustls", RUSTLS_UNLINKED.format(found.rustls), found.build_key, cached=cached),)
                return TlsFunctions(path=path, stack="openssl", write=found.openssl.write_offset,
                                    read=found.openssl.read_offset, close=None, close_name="",
                                    build_key=found.build_key, seconds=time.monotonic() - started, cached=cached,
                                    unread=unread, rustls=found.rustls_sites if self.rustls_linked else None)
            if found.openssl_error != NO_OPENSSL:
                return Blind(path, "openssl", f"OpenSSL 3 is compiled in but refused: {found.openssl_error}",
                             found.build_key, cached=cached)
        return self.locator.locate(path)

    def poll_pending(self) -> None:
        """Attach what searches that outlived their exec's wait have found."""
        for key, future in list(self._pending.items()):
            if future.done():
                del self._pending[key]
                try:
                    found = future.result()
                except OSError:
                    self._examined.discard(key)
                    continue
                except Exception as exc:  # noqa: BLE001
                    found = Blind("", "unknown", f"TLS search failed: {exc}")
                self._apply(key, self._shown.get(key, ""), found, late=True)

    def _apply(self, key: tuple[int, int], path: str, found: TlsFunctions | Blind | None, late: bool = False) -> None:
        ms = round(found.seconds * 1000, 1) if found is not None else None
        if isinstance(found, TlsFunctions):
            error = self.attach_offsets(key, found)
            if error is None:
                self._record(key, Capture(path=path, state="hooked", stack=found.stack,
                                          how="locator (late)" if late else "locator", locate_ms=ms,
                                          cached=found.cached))
                if found.rustls is not None:
                    error = self.attach_rustls(key, found.path, found.rustls)
                    self._record(key, Capture(path=path, state="hooked" if error is None else "blind", stack="rustls",
                                              how="locator" if error is None else None, locate_ms=ms, cached=found.cached,
                                              reason=None if error is None else f"located, but attaching failed: {error}"))
                for other in found.unread:  # said too; connections without plaintext get this reason
                    self._record(key, Capture(path=path, state="blind", stack=other.stack, reason=other.reason,
                                              locate_ms=ms, cached=other.cached))
            else:
                self._record(key, Capture(path=path, state="blind", stack=found.stack,
                                          reason=f"located, but attaching failed: {error}", locate_ms=ms))
        elif isinstance(found, Blind):
            self._record(key, Capture(path=path, state="blind", stack=found.stack, reason=found.reason,
                                      locate_ms=ms, cached=found.cached))

    def _record(self, key: tuple[int, int], capture: Capture) -> None:
        self.captures[key] = capture
        self.new_captures.append(capture)
        if capture.state == "blind":
            log.warning("cannot read TLS plaintext of %s (%s): %s", capture.path, capture.stack, capture.reason)

    def capture_of(self, shown: str) -> Capture | None:
        """The capture of an executable by the path its process saw."""
        return next((c for c in self.captures.values() if c.path == shown), None)

    def attach_offsets(self, key: tuple[int, int], found: TlsFunctions) -> str | None:
        """Attach the programs of the located stack at file offsets; returns the error, or None."""
        hooked = HookedFile(path=found.path, lib=TLS_LIB_OPENSSL)
        (w_enter, w_exit), (r_enter, r_exit) = LOCATED_PROGRAMS.get(found.stack, DEFAULT_PROGRAMS)
        plan = [(w_enter, w_exit, found.write, TLS_DIR_WRITE), (r_enter, r_exit, found.read, TLS_DIR_READ)]
        try:
            for enter, leave, offset, direction in plan:
                c = cookie(TLS_LIB_OPENSSL, direction)
                hooked.links.append(self.obj.attach_uprobe(enter, found.path, offset=offset, cookie=c))
                hooked.links.append(self.obj.attach_uprobe(leave, found.path, offset=offset, retprobe=True, cookie=c))
            if found.close is not None:
                hooked.links.append(self.obj.attach_uprobe("tls_free", found.path, offset=found.close,
                                                           cookie=cookie(TLS_LIB_OPENSSL, 0)))
        except BpfError as exc:
            for link in hooked.links:
                link.destroy()
            hooked.error = str(exc).splitlines()[0]
            self.attach_failed[found.stack] += 1
            self.files[key] = hooked
            return hooked.error
        self.files[key] = hooked
        self.attach_ok[found.stack] += 1
        log.info("hooked %s in %s at offsets write=%#x read=%#x", found.stack, found.path, found.write, found.read)
        return None

    def attach_rustls(self, key: tuple[int, int], path: str, sites: RustlsSites) -> str | None:
        """Attach the rustls record programs to every encrypter and decrypter located in the
        executable (one per crypto provider compiled in; the process runs one); returns the
        error, or None. The links join the executable's other hooks."""
        hooked = self.files[key]
        links: list[Link] = []
        write, read = cookie(TLS_LIB_RUSTLS, TLS_DIR_WRITE), cookie(TLS_LIB_RUSTLS, TLS_DIR_READ)
        plan = [("rustls_encrypt_enter", "rustls_encrypt_exit", e.offset,
                 write | (e.type_offset << 16) | (e.appdata_tag << 24)) for e in sites.encrypters]
        plan += [("rustls_decrypt_enter", "rustls_decrypt_exit", offset, read) for offset in sites.decrypters]
        try:
            for enter, leave, offset, c in plan:
                links.append(self.obj.attach_uprobe(enter, path, offset=offset, cookie=c))
                links.append(self.obj.attach_uprobe(leave, path, offset=offset, retprobe=True, cookie=c))
        except BpfError as exc:
            for link in links:
                link.destroy()
            self.attach_failed["rustls"] += 1
            return str(exc).splitlines()[0]
        hooked.links.extend(links)
        self.attach_ok["rustls"] += 1
        log.info("hooked rustls in %s: %d encrypters, %d decrypters", path, len(sites.encrypters), len(sites.decrypters))
        return None

    # ---- attaching ----
    def attach_file(self, path: str, lib: int, quiet_if_absent: bool = False) -> bool:
        """Attach the TLS probes of `lib` to the ELF file at path, once per inode.

        quiet_if_absent: the file is a candidate (an executable that may or may not carry
        OpenSSL), so a missing symbol is not a failure."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.files:
            return not self.files[key].error
        name, calls, free_symbol = LIBRARIES[lib]
        hooked = HookedFile(path=path, lib=lib)
        self.files[key] = hooked
        try:
            for symbol, enter, leave, direction in calls:
                c = cookie(lib, direction)
                hooked.links.append(self.obj.attach_uprobe(enter, path, symbol, cookie=c))
                hooked.links.append(self.obj.attach_uprobe(leave, path, symbol, retprobe=True, cookie=c))
            hooked.links.append(self.obj.attach_uprobe("tls_free", path, free_symbol, cookie=cookie(lib, 0)))
        except BpfError as exc:
            for link in hooked.links:
                link.destroy()
            hooked.links.clear()
            hooked.error = str(exc).splitlines()[0]
            if quiet_if_absent and exc.errno == errno.ENOENT:
                return False
            self.attach_failed[name] += 1
            log.warning("cannot hook %s in %s: %s", name, path, hooked.error)
            return False
        self.attach_ok[name] += 1
        log.info("hooked %s in %s", name, path)
        return True

    @property
    def hooked_paths(self) -> list[str]:
        return [f.path for f in self.files.values() if not f.error] + [f.path for f in self.lib_files.values()]

    def health(self) -> dict[str, object]:
        """How TLS uprobes are placed, and the per-process links' state."""
        return {"tls_uprobes": self.uprobe_mode, "tls_uprobes_reason": self.mode_reason,
                "tls_links_ok": self.link_ok, "tls_links_failed": dict(self.link_failed),
                "tls_linked_processes": len(self.proc_links), "tls_link_ms_max": round(self.link_ms_max, 2)}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for f in self.files.values():
            for link in f.links:
                link.destroy()
        self.files.clear()
        for pid in list(self.proc_links):
            self.unlink_process(pid)
        self.close_exited_links()
        self._closer.shutdown(wait=True)
        self.obj.close()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _ldconfig_libraries() -> list[tuple[str, int]]:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    found = []
    for line in out.splitlines():
        name, _, target = line.strip().partition(" => ")
        soname = name.split(" ", 1)[0]
        for prefix, lib in LIB_PREFIXES.items():
            # libssl.so.3, libgnutls.so.30: the runtime names, not the -dev symlinks
            if soname.startswith(prefix + ".") and target:
                found.append((target, lib))
    return found


def open_tls(shared_maps: dict[str, Map], features: Features, max_call_bytes: int, locator: Locator | None = None,
             locate_timeout: float = 30.0) -> TlsSensor | None:
    """The TLS sensor, or None when this kernel refuses its programs (said once through
    `features`): the processes and effects are still traced."""
    try:
        sensor = TlsSensor(shared_maps, max_call_bytes=max_call_bytes, locator=locator, locate_timeout=locate_timeout)
    except BpfError as exc:
        features.unavailable("tls", exc.summary)
        return None
    features.available("tls")
    return sensor
