"""The fail-safe behind held tool calls: nothing stays stopped if vigil dies.

The kernel stops (SIGSTOP) each tool-call process at its first exec and lists it in the `held` map
until vigil has placed it in its cgroup and sent SIGCONT. If vigil died in between, that process
would stay stopped forever. So before any thread starts, vigil forks this watchdog: it keeps only
the `held` map's descriptor and the read end of a pipe whose write end only vigil holds. When vigil
exits — normally, by an exception, or by SIGKILL — the kernel closes that write end, the read
returns EOF, and the watchdog sends SIGCONT to every pid still in `held` and exits. vigil's BPF
links are closed by the same exit (the watchdog closes its inherited copies), so nothing new is held
after that.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from dataclasses import dataclass

from vigild.bpf import libbpf

# After EOF, keep releasing for a moment: a program still running on another CPU while vigil's
# links were torn down may add one last entry.
RELEASE_ROUNDS = 10
RELEASE_INTERVAL_S = 0.05


def release_all(held_fd: int) -> list[int]:
    """SIGCONT and forget every pid in the held map; returns them."""
    lib = libbpf.lib()
    released = []
    key = ctypes.c_uint32()
    while lib.bpf_map_get_next_key(held_fd, None, ctypes.byref(key)) == 0:
        pid = key.value
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        lib.bpf_map_delete_elem(held_fd, ctypes.byref(key))
        released.append(pid)
    return released


def _watch(read_fd: int, held_fd: int) -> None:
    os.setpgid(0, 0)  # a Ctrl-C or a kill of vigil's process group must not take us along
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in (0, 1, 2, read_fd, held_fd):
            try:
                os.close(fd)  # above all vigil's BPF link and program fds: they must die with vigil
            except OSError:
                pass
    while True:
        try:
            if not os.read(read_fd, 64):
                break
        except InterruptedError:
            continue
    for _ in range(RELEASE_ROUNDS):
        release_all(held_fd)
        time.sleep(RELEASE_INTERVAL_S)


@dataclass
class Watchdog:
    pid: int
    _pipe_w: int

    def stop(self, timeout: float = 2.0) -> None:
        """vigil is shutting down cleanly: let the watchdog release what is left and exit."""
        if self._pipe_w < 0:
            return
        os.close(self._pipe_w)
        self._pipe_w = -1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                return
            time.sleep(0.02)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def start_watchdog(held_fd: int) -> Watchdog:
    """Fork the watchdog. Call it before any thread starts: the child runs Python after fork."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(write_fd)
            _watch(read_fd, held_fd)
        except BaseException:  # noqa: BLE001 - the forked child must never unwind into vigil's code
            code = 1
        finally:
            os._exit(code)
    os.close(read_fd)
    return Watchdog(pid=pid, _pipe_w=write_fd)
