"""TLS uprobes placed per tracked process (uprobe_multi links with a pid filter, kernel >= 6.6):
a process nobody tracks that uses the same libssl carries no breakpoint and gives no event, while
the tracked one is decoded. On older kernels the uprobes are global, and the test says so by
finding the breakpoint in the untracked process too.

A uprobe is an int3 written into the process's copy of the library's page, so reading
/proc/PID/mem at SSL_write's address tells, per process, whether calls there trap. Both processes
load a private copy of libssl (LD_LIBRARY_PATH): another vigil on the machine that hooks the
system's libssl for every process must not decide the outcome. vigil finds the copy when it scans
the tracked client's maps, so the client waits until its own SSL_write is hooked before calling."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakellm import FakeLLMServer, client_env
from support.helpers import vigil_trace
from support.intent_match import matched
from vigild.bpf.uprobe_multi import symbol_offsets

pytestmark = pytest.mark.usefixtures("root")

INT3 = 0xCC
PER_PROCESS_KERNEL = (6, 6)

# Reads the first byte of SSL_write as a process maps it: the tracked client reads its own and the
# untracked process's while its links are in place (vigil closes them when it exits).
PROBE = """
import json, os, sys
def first_byte(pid, path, offset):
    for line in open(f"/proc/{pid}/maps"):
        parts = line.split()
        if len(parts) < 6 or os.path.realpath(parts[5]) != path:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        file_off = int(parts[2], 16)
        if file_off <= offset < file_off + end - start:
            with open(f"/proc/{pid}/mem", "rb") as mem:
                mem.seek(start + offset - file_off)
                return mem.read(1)[0]
    return None
"""

# The child checks its byte right after loading libssl, with no wait: on 6.6+ the kernel held it at
# that mmap until its links were attached.
CLIENT = "PROBE = " + repr(PROBE) + "\n" + PROBE + """
import ssl, time, urllib.request
path, offset, other = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 30
while first_byte(os.getpid(), path, offset) != 0xCC and time.monotonic() < deadline:
    time.sleep(0.05)
ctx = ssl.create_default_context(cafile=os.environ["FAKELLM_CA"])
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
req = urllib.request.Request(os.environ["FAKELLM_URL"] + "/v1/chat/completions", data=body,
                             headers={"content-type": "application/json", "authorization": "Bearer sk-test"})
urllib.request.urlopen(req, context=ctx).read()
import subprocess
child = subprocess.run([sys.executable, "-c", PROBE + "import ssl; print(first_byte(os.getpid(), sys.argv[1], int(sys.argv[2])))",
                        path, str(offset)], capture_output=True, text=True, check=True).stdout
print(json.dumps({"self": first_byte(os.getpid(), path, offset), "other": first_byte(other, path, offset),
                  "child": int(child)}), file=sys.stderr, flush=True)
"""

UNTRACKED = """
import os, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=os.environ["FAKELLM_CA"])
urllib.request.urlopen(os.environ["FAKELLM_URL"] + "/simple/untracked/", context=ctx).read()
print("ready", flush=True)
sys.stdin.read()
urllib.request.urlopen(os.environ["FAKELLM_URL"] + "/simple/untracked-again/", context=ctx).read()
"""


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


def _kernel() -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", os.uname().release).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


def _libssl_copy(into: Path) -> str:
    """A private copy of the libssl this interpreter uses, under its soname in `into`."""
    import _ssl  # noqa: F401 - loads the libssl this interpreter uses

    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and os.path.basename(parts[5]).startswith("libssl.so"):
            into.mkdir()
            copy = into / os.path.basename(parts[5])
            shutil.copyfile(parts[5], copy)
            return str(copy)
    pytest.fail("this interpreter maps no libssl")


def test_untracked_process_carries_no_tls_uprobe_and_tracked_one_is_decoded(server: FakeLLMServer,
                                                                            tmp_path: Path) -> None:
    lib = _libssl_copy(tmp_path / "lib")
    offset = symbol_offsets(lib, ["SSL_write"])["SSL_write"]
    original = Path(lib).read_bytes()[offset]
    assert original != INT3
    env = {**client_env(server), "LD_LIBRARY_PATH": str(tmp_path / "lib")}
    untracked = subprocess.Popen([sys.executable, "-c", UNTRACKED], env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
    try:
        assert untracked.stdout is not None and untracked.stdout.readline() == "ready\n"
        client = tmp_path / "client.py"
        client.write_text(CLIENT)
        result = vigil_trace(["--", sys.executable, str(client), lib, str(offset), str(untracked.pid)],
                             env=env, timeout=300)  # TCG guests run Python 4-8x slower
        assert result.returncode == 0, result.stderr
        doctor = subprocess.run([sys.executable, "-m", "vigild.daemon.cli", "doctor", "-o", "json", str(untracked.pid)],
                                capture_output=True, text=True, timeout=60, check=True)
        assert untracked.stdin is not None
        untracked.communicate("go\n", timeout=30)  # TLS calls after the trace ended, untraced too
        assert untracked.returncode == 0
    finally:
        untracked.kill()
        untracked.wait()
    seen = json.loads(next(line for line in result.stderr.splitlines() if line.startswith('{"self"')))
    exchanges = server.exchanges.wait_finished(3)
    assert server.errors == []
    chat = [e for e in exchanges if e.provider]
    assert len(chat) == 1
    matched(result, chat)
    assert {c["pid"] for c in result.of_type("llm_call")} == {result.of_type("session_start")[0]["pid"]}
    assert not [e for e in result.events if e.get("pid") == untracked.pid]
    assert seen["self"] == INT3  # the tracked client traps at SSL_write
    assert seen["child"] == INT3  # hooked before its first instruction after loading libssl
    placement = json.loads(doctor.stdout)
    if _kernel() >= PER_PROCESS_KERNEL:
        assert seen["other"] == original  # per-process: no breakpoint in a process nobody tracks
        assert (placement["tls_uprobes"], placement["tls_uprobes_reason"]) == ("per-process", None)
    else:
        assert seen["other"] == INT3  # global uprobes: every process mapping libssl traps
        assert placement["tls_uprobes"] == "global" and "6.6" in placement["tls_uprobes_reason"]
