"""Try to have N children alive at once; report how many forks the kernel refused."""

import os
import sys
import time

children, refused = [], 0
for _ in range(int(sys.argv[1])):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(2)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print(f"forked {len(children)} refused {refused}", flush=True)
sys.exit(1 if refused else 0)
