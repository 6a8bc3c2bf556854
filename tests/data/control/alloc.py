"""Allocate and touch N MiB in one burst; print the wall clock before and right after, then hold
the memory a moment (argv[2] seconds)."""

import sys
import time

mib = int(sys.argv[1])
before = time.time_ns()
block = b"\x01" * (mib << 20)
print(f"allocated {mib} {before} {time.time_ns()}", flush=True)
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.3)
