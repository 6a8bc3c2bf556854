"""How long the pipeline may block on its ring buffers before doing its periodic work.

While a tracked process lives, records arrive without a wakeup (the kernel wakes the consumer
only every `wakeup_bytes` or for a held exec or a new root) and TLS libraries appear in its maps:
the pipeline polls every few milliseconds. With nothing tracked there is nothing to pick up: it
blocks for a second (drop counters, health), and whatever starts a session wakes it at once
(RingBuffer.wake), so an idle vigild costs no fixed short poll.
"""

from __future__ import annotations

from vigild.correlate.process_tree import ProcessTable

IDLE_WAIT_MS = 1000


class PollWait:
    """busy_ms while any tracked process is alive, else idle_ms.

    The table keeps thousands of exited processes for late lookups; scanning them at every short
    poll would cost more than the poll saves, so the live process found last is asked first (it
    usually still lives: a root, an agent) and the scan runs only when it has gone."""

    def __init__(self, busy_ms: int, idle_ms: int = IDLE_WAIT_MS) -> None:
        self.busy_ms = busy_ms
        self.idle_ms = idle_ms
        self._live_pid: int | None = None

    def __call__(self, processes: ProcessTable) -> int:
        known = processes.get(self._live_pid) if self._live_pid is not None else None
        if known is not None and known.alive:
            return self.busy_ms
        self._live_pid = next((pid for pid, info in processes.processes.items() if info.alive), None)
        return self.busy_ms if self._live_pid is not None else self.idle_ms
