"""Start a command that is tracked before it runs its first instruction.

The child is forked and held on a pipe until the parent has put its pid in the kernel's tracked
map; only then does it exec, so neither it nor anything it forks can escape. If the parent dies
first, the pipe reads EOF and the child exits instead of running untraced.
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass

GATE_PARENT_GONE = 125


class LaunchError(RuntimeError):
    """The command could not be executed (not found, not executable...). `status` is the shell's
    convention for it: 127 when the command was not found, 126 when it could not be executed."""

    def __init__(self, message: str, errno_value: int = 0) -> None:
        super().__init__(message)
        self.status = 127 if errno_value == errno.ENOENT else 126


@dataclass
class GatedChild:
    pid: int
    argv: list[str]
    _gate: int
    _errors: int

    def release(self) -> None:
        """Let the child exec; raise LaunchError if the exec fails."""
        os.write(self._gate, b"go")
        os.close(self._gate)
        with os.fdopen(self._errors, "rb") as errors:
            failure = errors.read()
        if failure:
            os.waitpid(self.pid, 0)
            err = int(failure.decode() or 0)
            raise LaunchError(f"cannot run {self.argv[0]!r}: {os.strerror(err)}", err)


def spawn_gated(argv: list[str], stdout_fd: int | None = None) -> GatedChild:
    """Fork a child that waits at a gate (until `release`) and then execs `argv`; with
    `stdout_fd`, the command's stdout is that descriptor (vigil's stderr under `-o json`)."""
    gate_r, gate_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # child: wait for the go, then become the command
        try:
            os.close(gate_w)
            os.close(err_r)
            if os.read(gate_r, 2) != b"go":
                os._exit(GATE_PARENT_GONE)
            os.close(gate_r)
            if stdout_fd is not None:
                os.dup2(stdout_fd, 1)
            # Python ignores SIGPIPE and SIGXFSZ, and our caller may block signals while it sets
            # up: the command must start with default dispositions and an empty mask.
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(err_w, str(exc.errno or 0).encode())
        finally:
            os._exit(127)
    os.close(gate_r)
    os.close(err_w)
    return GatedChild(pid=pid, argv=argv, _gate=gate_w, _errors=err_r)
