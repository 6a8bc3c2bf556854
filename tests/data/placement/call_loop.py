"""An agent's tool-call loop without a model: N calls of /bin/true, GAP seconds apart."""

import os
import sys
import time

calls, gap = int(sys.argv[1]), float(sys.argv[2])
for _ in range(calls):
    pid = os.posix_spawn("/bin/true", ["/bin/true"], os.environ)
    os.waitpid(pid, 0)
    time.sleep(gap)
