"""Run one real agent, under a wrapper (`vigil run -o json --`, `vigil trace -o json --` or
nothing), against the agent-driving fake model server, inside a loopback-only network namespace.

    unshare -n -- python -m realagents.netns AGENT OUTDIR COMMAND [WRAPPER...]

(with tests/ on PYTHONPATH). Brings loopback up, serves the fake model in this process, runs
WRAPPER + the agent's command line with cwd OUTDIR/work, and writes OUTDIR/stdout, OUTDIR/stderr
and OUTDIR/exchanges.json (what the server received and answered). Exits with the wrapper's
status. Being inside `unshare -n` is checked: nothing the agent tries may leave the machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from fakellm import FakeLLMServer
from fakellm.driving import driving_scenario

from realagents.agents import PROMPT, agent

AGENT_TIMEOUT_S = float(os.environ.get("VIGIL_AGENT_TIMEOUT", "240"))
PROMPT = os.environ.get("VIGIL_AGENT_PROMPT", PROMPT)  # a test may mark its agent's command line


def _only_loopback() -> bool:
    """True when this network namespace has no interface but lo."""
    return [name for _index, name in socket.if_nameindex()] == ["lo"]


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    name, out, command, wrapper = argv[0], Path(argv[1]), argv[2], argv[3:]
    if not _only_loopback():
        print("netns.py: run me inside `unshare -n` (this namespace has more than loopback)", file=sys.stderr)
        return 2
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    spec = agent(name)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    _git_repository(work)
    # e.g. "500,429": the agent's first turns are answered with these errors (test_agent_api_errors)
    fail_first = [int(s) for s in os.environ.get("VIGIL_FAKE_FAIL_FIRST", "").split(",") if s.strip()]
    with FakeLLMServer(default_scenario=driving_scenario(command), cert_dir=out / "certs",
                       fail_first=fail_first) as server:
        env = spec.prepare(out / "home", server.url, server.ca_path)
        env |= {k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "VIGIL_"))}
        env |= json.loads(os.environ.get("VIGIL_AGENT_ENV") or "{}")  # e.g. a vigild's telemetry endpoint
        with (out / "stdout").open("w") as stdout, (out / "stderr").open("w") as stderr:
            try:
                status = subprocess.run([*wrapper, *spec.argv(PROMPT)], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                        stdout=stdout, stderr=stderr, timeout=AGENT_TIMEOUT_S, check=False).returncode
            except subprocess.TimeoutExpired:
                status = 124
        records = [{"provider": e.provider, "method": e.method, "path": e.path, "status": e.status,
                    "stream": e.stream, "error": e.error,
                    "tools": [n for n, _s in _declared(e.provider, e.request_json)],
                    "tool_calls": ([{"id": t.id, "name": t.name, "arguments": t.arguments}
                                    for t in e.response.tool_calls] if e.response else []),
                    "text": e.response.text if e.response else None} for e in server.exchanges]
        (out / "exchanges.json").write_text(json.dumps({"exchanges": records, "errors": server.errors}, indent=1))
    return status


def _git_repository(work: Path) -> None:
    """Agents are run in repositories, and look at them (status, log, branch): give them one,
    with one commit."""
    git = ["git", "-c", "user.name=vigil test", "-c", "user.email=test@localhost", "-C", str(work)]
    (work / "README.md").write_text("test repository\n")
    for args in (["init", "-q", "-b", "main"], ["add", "README.md"], ["commit", "-q", "-m", "start"]):
        subprocess.run([*git, *args], check=True, stdout=subprocess.DEVNULL, env={"PATH": os.environ["PATH"], "HOME": str(work)})


def _declared(provider: str | None, request: object) -> list[tuple[str, dict]]:
    from fakellm.driving import declared_tools

    if provider is None or not isinstance(request, dict):
        return []
    return declared_tools(provider, request)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
