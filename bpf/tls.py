"""The TLS sensor: uprobes on OpenSSL and GnuTLS that hand tracked processes' plaintext to the
pipeline.

uprobes attach to a file (an inode), for every process that maps it; the programs drop calls from
untracked processes in the kernel. Libraries are found where agents load them: the system's own
(attached at start), those a tracked process maps (its /proc/PID/maps, through /proc/PID/root for
containers), executables that carry OpenSSL themselves and export its symbols (Node.js), and
static executables that carry OpenSSL without symbols (Codex), located by its error sites
(bpf/static_openssl.py) in a background thread and cached by build.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vigild.bpf.events import TLS_DIR_READ, TLS_DIR_WRITE, TLS_LIB_GNUTLS, TLS_LIB_OPENSSL, TlsConfigC
from vigild.bpf.loader import BpfError, BpfObject, Link, Map
from vigild.bpf.objects import object_path
from vigild.bpf.static_openssl import NO_OPENSSL, SiteCache, StaticTls, is_static_executable

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
# OpenSSL 3 internals found in static binaries: (which, entry program, return program, direction)
STATIC_OPENSSL_CALLS = (
    ("write_offset", "tls_enter_ex5", "tls_exit_ex", TLS_DIR_WRITE),
    ("read_offset", "tls_enter_ex", "tls_exit_ex", TLS_DIR_READ),
)
DEFAULT_SITE_CACHE = "/var/cache/vigild/static-tls.json"


def cookie(lib: int, direction: int) -> int:
    return (lib << 8) | direction


@dataclass
class HookedFile:
    path: str
    lib: int
    links: list[Link] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class StaticFinding:
    """What vigil could do with a static executable a tracked process runs: `hooked` when its
    OpenSSL is attached, and the TLS stacks in it that stay unread (rustls); once per file."""

    pid: int
    path: str
    build_key: str
    openssl_version: str | None
    hooked: bool
    blind: list[str]
    reason: str
    cached: bool
    locate_ms: float


class TlsSensor:
    def __init__(self, shared_maps: dict[str, Map], max_call_bytes: int = 16 * 1024 * 1024,
                 wakeup_bytes: int = 256 * 1024, site_cache: str | None = DEFAULT_SITE_CACHE) -> None:
        self.obj = BpfObject(object_path("tls.bpf.o"))
        try:
            for name in ("tracked", "events", "stats"):
                self.obj.reuse_map(name, shared_maps[name])
            self.obj.set_rodata(TlsConfigC(wakeup_bytes=wakeup_bytes, max_call_bytes=max_call_bytes))
            self.obj.load()
        except BaseException:
            self.obj.close()
            raise
        self.files: dict[tuple[int, int], HookedFile] = {}
        self.attach_ok: Counter[str] = Counter()
        self.attach_failed: Counter[str] = Counter()
        self.sites = SiteCache(site_cache)
        self._static_seen: set[tuple[int, int]] = set()
        self._located: queue.SimpleQueue[tuple[int, str, StaticTls, bool, float]] = queue.SimpleQueue()

    # ---- finding libraries ----
    def attach_system_libraries(self) -> list[str]:
        """Hook the system's libssl and libgnutls before any agent starts, so the first
        connection of a new process is seen without waiting for a scan."""
        hooked = []
        for path, lib in _ldconfig_libraries():
            if self.attach_file(path, lib):
                hooked.append(path)
        return hooked

    def scan_process(self, pid: int) -> None:
        """Hook TLS libraries a tracked process maps, and its executable if it exports OpenSSL."""
        root = f"/proc/{pid}/root"
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return  # gone already
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
                    self.attach_file(root + path, lib)
        exe = exe.removesuffix(" (deleted)")
        if not self.attach_file(root + exe, TLS_LIB_OPENSSL, quiet_if_absent=True):
            self._consider_static(pid, root + exe)

    # ---- static executables ----
    def _consider_static(self, pid: int, path: str) -> None:
        """Examine a static executable once per inode, off the pipeline thread (a first scan of
        Codex takes seconds; the ring buffer must keep draining meanwhile)."""
        try:
            st = os.stat(path)
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in self._static_seen or not is_static_executable(path):
            return
        self._static_seen.add(key)
        if self.sites.known(path):
            self._examine(pid, path)  # milliseconds: attached before the process gets far
            return
        thread = threading.Thread(target=self._examine, args=(pid, path), name="vigil-locate", daemon=True)
        thread.start()

    def _examine(self, pid: int, path: str) -> None:
        start = time.monotonic()
        found, cached = self.sites.lookup(path)
        self._located.put((pid, path, found, cached, (time.monotonic() - start) * 1000))

    def prepare(self, path: str) -> None:
        """Examine an executable about to be started (vigil trace/run -- CMD) now, so that its
        first connection is already hooked: the seconds of a first scan are spent before it runs."""
        if is_static_executable(path):
            self.sites.lookup(path)

    def poll_static(self) -> list[StaticFinding]:
        """Attach what the locator threads found since the last call (pipeline thread)."""
        findings = []
        while True:
            try:
                pid, path, found, cached, ms = self._located.get_nowait()
            except queue.Empty:
                return findings
            finding = self._attach_static(pid, path, found, cached, ms)
            if finding.hooked or finding.blind or found.openssl_error != NO_OPENSSL:
                findings.append(finding)  # a static program with no TLS at all is not news

    def _attach_static(self, pid: int, path: str, found: StaticTls, cached: bool, ms: float) -> StaticFinding:
        hooked, reason = False, found.openssl_error or ""
        if found.openssl is not None:
            error = self._attach_offsets(path, found)
            hooked, reason = error is None, error or ""
        blind = [f"rustls {found.rustls}"] if found.rustls else []
        if blind:
            reason = (reason + "; " if reason else "") + (
                f"rustls {found.rustls} is compiled in: its plaintext has no hook, so connections "
                "over it are not read (Codex: its HTTP when given a CA bundle, its WebSocket always)")
        return StaticFinding(pid=pid, path=path.removeprefix(f"/proc/{pid}/root"), build_key=found.build_key,
                             openssl_version=found.openssl.version if found.openssl else None, hooked=hooked,
                             blind=blind, reason=reason, cached=cached, locate_ms=round(ms, 1))

    def _attach_offsets(self, path: str, found: StaticTls) -> str | None:
        """Attach the static OpenSSL probes; None on success, else why not."""
        assert found.openssl is not None
        try:
            st = os.stat(path)
        except OSError as exc:
            return f"the executable is gone: {exc}"
        hooked = HookedFile(path=path, lib=TLS_LIB_OPENSSL)
        self.files[(st.st_dev, st.st_ino)] = hooked
        try:
            for which, enter, leave, direction in STATIC_OPENSSL_CALLS:
                offset = getattr(found.openssl, which)
                c = cookie(TLS_LIB_OPENSSL, direction)
                hooked.links.append(self.obj.attach_uprobe(enter, path, None, offset=offset, cookie=c))
                hooked.links.append(self.obj.attach_uprobe(leave, path, None, offset=offset, retprobe=True,
                                                           cookie=c))
        except BpfError as exc:
            for link in hooked.links:
                link.destroy()
            hooked.links.clear()
            hooked.error = str(exc).splitlines()[0]
            self.attach_failed["openssl-static"] += 1
            log.warning("cannot hook the OpenSSL inside %s: %s", path, hooked.error)
            return hooked.error
        self.attach_ok["openssl-static"] += 1
        log.info("hooked OpenSSL %s inside %s (located by its error sites)", found.openssl.version, path)
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
        return [f.path for f in self.files.values() if not f.error]

    def close(self) -> None:
        for f in self.files.values():
            for link in f.links:
                link.destroy()
        self.files.clear()
        self.obj.close()


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
