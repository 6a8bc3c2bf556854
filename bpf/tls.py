"""The TLS sensor: uprobes on OpenSSL and GnuTLS that hand tracked processes' plaintext to the
pipeline.

uprobes attach to a file (an inode), for every process that maps it; the programs drop calls from
untracked processes in the kernel. Libraries are found where agents load them: the system's own
(attached at start), those a tracked process maps (its /proc/PID/maps, through /proc/PID/root for
containers), and executables that carry OpenSSL themselves and export its symbols (Node.js).
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vigild.bpf.events import TLS_DIR_READ, TLS_DIR_WRITE, TLS_LIB_GNUTLS, TLS_LIB_OPENSSL, TlsConfigC
from vigild.bpf.features import Features
from vigild.bpf.loader import BpfError, BpfObject, Link, Map
from vigild.bpf.objects import object_path

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


def cookie(lib: int, direction: int) -> int:
    return (lib << 8) | direction


@dataclass
class HookedFile:
    path: str
    lib: int
    links: list[Link] = field(default_factory=list)
    error: str | None = None


class TlsSensor:
    def __init__(self, shared_maps: dict[str, Map], max_call_bytes: int = 16 * 1024 * 1024,
                 wakeup_bytes: int = 256 * 1024) -> None:
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
        self.attach_file(root + exe, TLS_LIB_OPENSSL, quiet_if_absent=True)

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


def open_tls(shared_maps: dict[str, Map], features: Features, max_call_bytes: int) -> TlsSensor | None:
    """The TLS sensor, or None when this kernel refuses its programs (said once through
    `features`): the processes and effects are still traced."""
    try:
        sensor = TlsSensor(shared_maps, max_call_bytes=max_call_bytes)
    except BpfError as exc:
        features.unavailable("tls", exc.summary)
        return None
    features.available("tls")
    return sensor
