"""A fake Claude Code: for each shell command in argv[1] (a JSON list) it runs the PreToolUse hook,
the command (`bash -c`, as the Bash tool does), then PostToolUse or PostToolUseFailure, feeding
each hook the JSON Claude Code documents, and prints what the post hook answered."""

import json
import subprocess
import sys

VIGIL = [sys.executable, "-m", "vigild.daemon.cli", "hook"]
BASE = {"session_id": "0b7c5a1e-hook-test", "transcript_path": "/tmp/transcript.jsonl", "cwd": "/tmp",
        "permission_mode": "default", "tool_name": "Bash"}

for i, command in enumerate(json.loads(sys.argv[1])):
    tool_use_id = f"toolu_01TEST{i:04d}"
    tool_input = {"command": command, "description": "run a command"}
    pre = {**BASE, "hook_event_name": "PreToolUse", "tool_input": tool_input, "tool_use_id": tool_use_id}
    subprocess.run([*VIGIL, "pre-tool-use"], input=json.dumps(pre), text=True, check=False)
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
    if result.returncode == 0:
        post = {**BASE, "hook_event_name": "PostToolUse", "tool_input": tool_input, "tool_use_id": tool_use_id,
                "tool_response": {"stdout": result.stdout, "stderr": result.stderr, "interrupted": False,
                                  "isImage": False}}
    else:
        post = {**BASE, "hook_event_name": "PostToolUseFailure", "tool_input": tool_input, "tool_use_id": tool_use_id,
                "error": f"Command exited with non-zero status code {result.returncode}", "is_interrupt": False}
    answer = subprocess.run([*VIGIL, "post-tool-use"], input=json.dumps(post), capture_output=True, text=True,
                            check=False)
    print(f"HOOK {tool_use_id} {result.returncode} {answer.stdout.strip() or '{}'}", flush=True)
