"""`vigild`: the long-running service. It grows with the configuration and exporter work; for now
it tracks the agents named on its command line into the store until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from vigild.bpf.loader import BpfError, BpfUnavailable
from vigild.daemon.store import Store, StoreError

log = logging.getLogger("vigild")


def main(argv: list[str] | None = None) -> int:
    from vigild.bpf.lineage import LineageSensor
    from vigild.daemon.pipeline import Pipeline
    from vigild.daemon.sinks import StoreSink

    parser = argparse.ArgumentParser(prog="vigild", description="Track AI agents and keep their history.")
    parser.add_argument("--db", type=Path, default=Path("/var/lib/vigild/vigil.db"))
    parser.add_argument("--comm", action="append", default=[], help="agent process name to track (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="vigild: %(levelname)s %(name)s: %(message)s")
    if not args.comm:
        parser.error("name at least one agent with --comm")
    try:
        lineage = LineageSensor(root_comms=args.comm)
        store = Store(args.db)
    except (BpfUnavailable, BpfError, StoreError) as exc:
        log.error("%s", str(exc).splitlines()[0])
        return 1
    pipeline = Pipeline(lineage, sinks=[])
    pipeline.sinks.append(StoreSink(store, pipeline.processes))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pipeline.start()
    log.info("tracking %s into %s", ", ".join(args.comm), args.db)
    stop.wait()
    pipeline.stop()
    lineage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
