"""Running the real `vigild` as a subprocess for tests: a temp config, store, socket and metrics
port; its log collected line by line; `status` over the control socket; BPF programs it holds."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen

from support.helpers import kill_group
from vigild.daemon.service.control import request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Vigild:
    def __init__(self, workdir: Path, config: str, prefix: tuple[str, ...] = ()) -> None:
        self.dir = workdir
        self.config = workdir / "config.toml"
        self.config.write_text(config)
        self.socket = workdir / "vigild.sock"
        self.db = workdir / "vigil.db"
        self.port = free_port()
        self.prefix = prefix
        self.log: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 120) -> Vigild:
        """Start vigild and wait until it answers; if it does not, its process group is killed.
        The timeout is generous: loading the BPF programs takes ~15 s in the v2 guest (TCG)."""
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "vigild.daemon.service", "--config", str(self.config),
             "--db", str(self.db), "--metrics-address", f"127.0.0.1:{self.port}", "--socket", str(self.socket)],
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        threading.Thread(target=self._read_log, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vigild exited with {self.proc.returncode}: {self.log}")
            try:
                self.status()
                return self
            except OSError:
                time.sleep(0.1)
        self.kill_group()
        raise TimeoutError(f"vigild did not answer on {self.socket} within {timeout} s: {self.log}")

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def wait_log(self, pattern: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r} in {self.log}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def status(self) -> dict:
        return request(self.socket, "status")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as reply:
            return reply.read().decode()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 120) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise

    def kill_group(self) -> None:
        """SIGKILL vigild and whatever it started (its own process group): a failed test leaves
        nothing running."""
        if self.proc is not None:
            kill_group(self.proc)


def bpf_prog_ids(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds file descriptors for (from /proc/PID/fdinfo;
    Debian's bpftool does not list holder pids)."""
    ids = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            m = re.search(r"^prog_id:\s*(\d+)", info.read_text(), re.MULTILINE)
        except OSError:
            continue
        if m:
            ids.add(int(m.group(1)))
    return ids


def loaded_prog_ids() -> set[int]:
    """Every BPF program the kernel has loaded (`bpftool prog show`)."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {int(p["id"]) for p in json.loads(out)}


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def orphaned_programs(before: set[int], timeout: float = 5.0) -> set[int]:
    """BPF programs loaded since ``before`` that no live process holds (by a program or link fd)
    and are still loaded: what a run left attached or pinned. Another process's programs are
    held by it, so this holds on a busy machine; the kernel frees programs after an RCU grace
    period, hence the wait."""
    deadline = time.monotonic() + timeout
    while True:
        new = loaded_prog_ids() - before
        held: set[int] = set()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    held |= bpf_prog_ids(int(proc.name))
                except OSError:
                    continue  # exited meanwhile
        orphans = (new - held) & loaded_prog_ids()
        if not orphans or time.monotonic() > deadline:
            return orphans
        time.sleep(0.2)


def agent_config(name: str, comm: str) -> str:
    """A vigild config watching only the agent named `name`, matched by its process name."""
    return f'[discovery]\ndefault_agents = false\n\n[[agents]]\nname = "{name}"\ncomm = "{comm}"\n'


def wait_agent_session(daemon: Vigild, agent: str, count: int = 1, timeout: float = 20) -> None:
    """Until vigild has started `count` sessions of `agent` (read from its metrics)."""
    deadline = time.monotonic() + timeout
    while metric_value(daemon.metrics(), "vigil_agent_sessions_started_total", agent=agent) < count:
        assert time.monotonic() < deadline, f"no session of {agent}: {daemon.log}"
        time.sleep(0.1)


@contextmanager
def watched_agent(workdir: Path, comm: str, script: str, agent: str = "first") -> Iterator[tuple[Vigild, Popen[str]]]:
    """A vigild watching an agent program (`script`, an executable's text) that it has seen start;
    the agent is killed when the block ends (vigild is the caller's to stop)."""
    path = workdir / comm
    path.write_text(script)
    path.chmod(0o755)
    daemon = Vigild(workdir, agent_config(agent, comm)).start()
    proc: Popen[str] = subprocess.Popen([str(path)], stdin=subprocess.PIPE, text=True)
    try:
        wait_agent_session(daemon, agent)
        yield daemon, proc
    finally:
        proc.kill()
        proc.wait()
