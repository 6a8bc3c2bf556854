"""Priority inheritance by hand for the held lane: the GIL's usual holder runs real-time only
while a held process waits for the lane.

The lane's thread is SCHED_FIFO and wakes within 0.1 ms of a held exec, then needs the GIL. Under
a flood the pipeline thread holds it, and the scheduler may have preempted that thread for a
normal task's slice: the lane waited 3-7.5 ms for a holder that was not running (bench/README.md,
"placement p99"). A shorter switch interval cannot help, as the holder is not running to see the
drop request. So the lane waits on its ring in `gil_boost.c` (built at install beside this file),
which raises the registered threads to SCHED_FIFO just below the lane as soon as the ring has a
record, before the lane asks for the GIL: the holder preempts whatever runs on its CPU, reaches
the drop request and hands the GIL over. Python cannot do that step, as it runs before the GIL is
taken. Once the lane holds the GIL (and the lane's lock, see HeldLane.run_once), `Raised.restore`
puts every thread back at its own policy.

Where the helper is not built, or the kernel refuses (no CAP_SYS_NICE, a cpu cgroup with no
real-time budget), `GilBooster.available` / the refusal say why, once, and the lane works as
before.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent / "libvigil_gil_boost.so.1"
MAX_THREADS = 8  # the lane raises the pipeline thread; room for a few more GIL holders

_IntArray = ctypes.c_int * MAX_THREADS


class BoostError(RuntimeError):
    """The helper cannot be used here; the message says why."""


def _load() -> tuple[ctypes.CDLL, ctypes.PyDLL]:
    """The helper twice: through CDLL, whose calls release the GIL (the wait must), and through
    PyDLL, whose calls keep it (the restore must not hand the GIL back to a raised thread)."""
    if not LIBRARY.exists():
        raise BoostError(f"{LIBRARY.name} was not built (the install's C compiler or libc headers were missing)")
    try:
        releasing, keeping = ctypes.CDLL(str(LIBRARY), use_errno=True), ctypes.PyDLL(str(LIBRARY), use_errno=True)
    except OSError as exc:
        raise BoostError(f"cannot load {LIBRARY.name}: {exc}") from None
    ptr = ctypes.POINTER(ctypes.c_int)
    releasing.vigil_wait_and_raise.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ptr,
                                               ctypes.c_int, ptr, ptr, ptr]
    releasing.vigil_wait_and_raise.restype = ctypes.c_int
    keeping.vigil_restore.argtypes = [ctypes.c_int, ptr, ptr, ptr, ptr]
    keeping.vigil_restore.restype = ctypes.c_int
    return releasing, keeping


class Raised:
    """The threads one wait raised, until `restore` (idempotent) puts them back."""

    __slots__ = ("_booster", "count", "refused", "pending")

    def __init__(self, booster: GilBooster, count: int, refused: str | None) -> None:
        self._booster = booster
        self.count = count  # threads raised by this wait
        self.refused = refused  # why a raise was refused, None when none was
        self.pending = count > 0

    def restore(self) -> str | None:
        """Put the raised threads back; None when done (or done before), else why one could not be."""
        if not self.pending:
            return None
        self.pending = False
        return self._booster.restore()


class GilBooster:
    """Waits on a ring buffer's epoll set and raises the given threads when it has records (one
    per lane: its arrays are reused for each wait, from the lane's thread only)."""

    def __init__(self, epoll_fd: int, wake_fd: int, priority: int) -> None:
        releasing, keeping = _load()
        self._wait_fn, self._restore_fn = releasing.vigil_wait_and_raise, keeping.vigil_restore
        self._epoll_fd = epoll_fd
        self._wake_fd = wake_fd
        self.priority = priority
        self._tids = _IntArray()
        self._policies = _IntArray()
        self._prios = _IntArray()
        self._errs = _IntArray()
        self._n = 0

    def wait(self, timeout_ms: int, threads: tuple[int, ...]) -> Raised | None:
        """Wait up to timeout_ms; None when no ring has records (timeout, woken), else what was
        raised of `threads` (native ids). Raises OSError when the wait itself failed (EINTR: an
        empty wait, None)."""
        n = min(len(threads), MAX_THREADS)
        for i in range(n):
            self._tids[i] = threads[i]
        self._n = n
        ready = self._wait_fn(self._epoll_fd, self._wake_fd, timeout_ms, n, self._tids, self.priority,
                              self._policies, self._prios, self._errs)
        if ready == -errno.EINTR or ready == 0:
            return None
        if ready < 0:
            raise OSError(-ready, os.strerror(-ready))
        raised = sum(1 for i in range(n) if self._policies[i] >= 0)
        refusals = [self._errs[i] for i in range(n) if self._errs[i] not in (0, errno.ESRCH)]
        return Raised(self, raised, os.strerror(refusals[0]) if refusals else None)

    def restore(self) -> str | None:
        """Put back what the last wait raised, keeping the GIL (see `_load`); None when done, else
        why a thread could not be put back."""
        if not self._restore_fn(self._n, self._tids, self._policies, self._prios, self._errs):
            return None
        return os.strerror(next(self._errs[i] for i in range(self._n) if self._errs[i]))
