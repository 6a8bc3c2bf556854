"""tracefs and the per-syscall tracepoints the effects sensor attaches to.

Why per-syscall tracepoints: the raw sys_enter/sys_exit run a BPF program for every syscall of
every process on the host; syscalls:sys_exit_X runs it for syscall X only (the kernel tests one
bit per syscall number first). They need tracefs, where libbpf reads the event ids; a host that
has it nowhere gets it mounted at /sys/kernel/tracing (said in a log line), and one where that
fails keeps the raw tracepoints (said as the `syscall_tracepoints` feature).
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

log = logging.getLogger("vigild.effects")

TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")  # where libbpf looks first, when debugfs is mounted

# The tracepoint names (x86-64) of the syscalls whose exit effects.bpf.c looks at; must match
# interesting_exit() in effects_syscalls.bpf.h (tests/test_syscall_tracepoints.py checks it).
EXIT_SYSCALLS = (
    "read", "write", "open", "pwrite64", "readv", "writev", "sendfile64", "connect", "accept", "sendto",
    "recvfrom", "sendmsg", "recvmsg", "bind", "rename", "mkdir", "rmdir", "creat", "unlink", "chmod",
    "fchmod", "openat", "mkdirat", "unlinkat", "renameat", "fchmodat", "splice", "accept4", "pwritev",
    "recvmmsg", "sendmmsg", "renameat2", "copy_file_range", "pwritev2", "openat2", "fchmodat2",
)
# ... and whose entry it looks at (sums written out before the fd goes away).
ENTER_SYSCALLS = ("close", "close_range", "dup2", "dup3", "execve", "execveat")


class TracefsUnavailable(RuntimeError):
    """No tracefs with syscall events here, and none could be mounted; the message says why."""


def _events_dir(root: Path) -> Path:
    return root / "events" / "syscalls"


def tracefs_root() -> Path:
    """The tracefs that libbpf will read (debugfs's first, as libbpf prefers it), mounting one at
    /sys/kernel/tracing when none is there. Raises TracefsUnavailable with the reason."""
    # libbpf picks debugfs's tracing directory whenever it exists, so that is the one to check.
    root = DEBUGFS_TRACING if DEBUGFS_TRACING.exists() else TRACEFS
    if _events_dir(root).is_dir():
        return root
    if root == DEBUGFS_TRACING:
        raise TracefsUnavailable(f"{_events_dir(root)} is missing (kernel built without CONFIG_FTRACE_SYSCALLS?)")
    if not TRACEFS.is_dir():
        raise TracefsUnavailable(f"{TRACEFS} does not exist (kernel built without tracefs?)")
    if not (TRACEFS / "events").is_dir():
        _mount_tracefs()
    if not _events_dir(TRACEFS).is_dir():
        raise TracefsUnavailable(f"{_events_dir(TRACEFS)} is missing (kernel built without CONFIG_FTRACE_SYSCALLS?)")
    return TRACEFS


def _mount_tracefs() -> None:
    # mount(2) through libc: one call, no mount(8) process, and the errno says why it failed.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tracefs", str(TRACEFS).encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        if err == 16 and (TRACEFS / "events").is_dir():  # EBUSY: another process mounted it meanwhile
            return
        raise TracefsUnavailable(f"cannot mount tracefs at {TRACEFS}: {os.strerror(err)}")
    log.info("effects: mounted tracefs at %s for the per-syscall tracepoints", TRACEFS)


def present(root: Path, direction: str, syscalls: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(syscalls whose sys_<direction>_X event this kernel has, those it has not): a kernel
    without the syscall (fchmodat2 before 6.6) has no event, and no process can make that call."""
    events = _events_dir(root)
    have = [name for name in syscalls if (events / f"sys_{direction}_{name}").is_dir()]
    return have, [name for name in syscalls if name not in have]
