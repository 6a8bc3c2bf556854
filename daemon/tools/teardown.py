"""Tool-call group teardown and spare making, off the pipeline thread.

Removing an ended call's groups (kill what is left, rmdir in every hierarchy) and making the
spare groups the next calls take were two thirds of the pipeline's time per tool call, spent
while the next held exec waited. Both run here, in order, on one thread: a held exec only waits
for its own placement. `drain` is the barrier for whoever must see every queued job done (an
agent tree's release, shutdown).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from vigild.cgroups import CgroupBackend, CgroupError, Limits

log = logging.getLogger("vigild.control")

SPARES = 4  # spare groups kept per tree: a burst of calls faster than the teardown thread
Job = Callable[[], None]


class Teardown:
    """One daemon thread running queued cgroup jobs in order; failures are logged, never lost
    silently, and never stop the thread."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="vigil-teardown", daemon=True)
        self._thread.start()

    def remove(self, backend: CgroupBackend, group: str) -> None:
        """Kill what is left in ``group`` and remove it, later."""
        def job() -> None:
            try:
                backend.remove(group, kill=True, timeout=2.0)
            except CgroupError as exc:
                self.failures += 1
                log.warning("cannot remove %s: %s", backend.path(group), exc)
        self._jobs.put(job)

    def refill(self, backend: CgroupBackend, limits: Limits | None, count: int = SPARES) -> None:
        """Make spares with ``limits`` in ``backend`` up to ``count``, later."""
        def job() -> None:
            try:
                backend.fill_spares(limits, count)
            except (CgroupError, ValueError) as exc:
                self.failures += 1
                log.warning("cannot make spare tool-call groups in %s: %s", backend.path(""), exc)
        self._jobs.put(job)

    def drain(self) -> None:
        """Return once every job queued before this call has run."""
        self._jobs.join()

    def close(self) -> None:
        """Run what is queued, then stop the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                job()
            except Exception:  # a bug in a job must not end teardown for the rest of the run
                self.failures += 1
                log.exception("tool-call teardown job failed")
            finally:
                self._jobs.task_done()
