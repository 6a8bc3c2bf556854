"""Run a command as a process with a chosen pid: clone3 with set_tid (Linux 5.5+, CAP_SYS_ADMIN),
so a test can reuse an exited process's pid deterministically instead of waiting for the pid
counter to wrap. Usage: spawn_at_pid.py PID PROGRAM [ARGS...]; exits with the command's status,
or 3 when the pid is taken (EEXIST)."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys

SYS_CLONE3 = {"x86_64": 435, "aarch64": 435}[os.uname().machine]


class CloneArgs(ctypes.Structure):
    """struct clone_args, CLONE_ARGS_SIZE_VER1 (up to set_tid_size)."""

    _fields_ = [(name, ctypes.c_uint64) for name in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal",
                                                     "stack", "stack_size", "tls", "set_tid", "set_tid_size")]


def main() -> int:
    pid, argv = int(sys.argv[1]), sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    tids = (ctypes.c_int32 * 1)(pid)
    args = CloneArgs(exit_signal=signal.SIGCHLD, set_tid=ctypes.addressof(tids), set_tid_size=1)
    # This process is single-threaded, so the child may run Python until it execs (as after fork).
    child = libc.syscall(SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if child == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    if child < 0:
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return 3
        print(f"clone3: {os.strerror(err)}", file=sys.stderr)
        return 2
    return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])


if __name__ == "__main__":
    sys.exit(main())
