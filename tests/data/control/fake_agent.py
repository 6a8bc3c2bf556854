"""A fake agent: runs each argv given as a JSON list in argv[1] as one tool call, in order, and
exits 0 whatever they do (an OOM-killed tool must not take the agent down)."""

import json
import subprocess
import sys

for argv in json.loads(sys.argv[1]):
    result = subprocess.run(argv, check=False)
    print(f"tool {argv[0]} -> {result.returncode}", flush=True)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
