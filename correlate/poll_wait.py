"""How long the pipeline may block on its ring buffers before doing its periodic work.

While a tracked process lives, records arrive without a wakeup (the kernel wakes the consumer
only every `wakeup_bytes` or for a held exec) and TLS libraries appear in its maps: the pipeline
polls every few milliseconds. With nothing tracked there is nothing to pick up: it blocks for a
second (drop counters, health), and whatever starts a session wakes it at once (RingBuffer.wake),
so an idle vigild costs no fixed short poll.
"""

from __future__ import annotations

from vigild.correlate.process_tree import ProcessTable

IDLE_WAIT_MS = 1000


def poll_wait_ms(processes: ProcessTable, busy_ms: int, idle_ms: int = IDLE_WAIT_MS) -> int:
    """busy_ms while any tracked process is alive, else idle_ms. The live ones are the oldest
    entries in practice (roots, agents), so the scan stops early when busy; when idle it reads
    the remembered exited ones once per idle wait."""
    return busy_ms if any(info.alive for info in processes.processes.values()) else idle_ms
