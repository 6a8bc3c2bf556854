"""Real Codex (pinned releases, the npm platform binary) under `vigil trace` and `vigil run`, in a
loopback-only network namespace, against the fake Responses server that drives it through one
`exec_command` tool call.

Both TLS paths of Codex are exercised (tests/support/codex_harness.py): its compiled-in OpenSSL (no CA
variable), which vigil hooks by locating OpenSSL's functions from their error sites, and rustls
(CODEX_CA_CERTIFICATE; its WebSocket transport always), hooked at its TLS 1.3 record functions
found by their additional-data immediate and vtable shape. Every LLM call the server answered is
checked field by field, and against Codex's own telemetry.

The binaries: `npm install --ignore-scripts @openai/codex@VERSION` into
$VIGIL_AGENTS_DIR/codex-VERSION (default /var/cache/vigil-agents), or the pinned one where
tests/realagents/install.sh puts it (codex@VERSION).
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.require import need
from support.helpers import parse_json_lines, vigil_trace
from realagents.agents import pins
from vigild.bpf.static_openssl import LocateError, SiteCache, is_static_executable, locate
from vigild.bpf.static_rustls import AAD_IMMEDIATE, locate_rustls
from vigild.correlate.tool_links import apply_links

PINNED = pins()["codex"][1]  # the release the other real-agent tests drive (tests/realagents/pins.txt)
MIDDLE = "0.169.0"
OLDER = "0.154.0"
VERSIONS = (PINNED, MIDDLE, OLDER)
AGENTS_DIR = Path(os.environ.get("VIGIL_AGENTS_DIR", "/var/cache/vigil-agents"))
PLATFORM_BINARY = "node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
HARNESS = Path(__file__).resolve().parent / "support" / "codex_harness.py"
# OpenSSL compiled into each pinned release (its version string), as measured
OPENSSL_OF = {"0.171.0": "3.6.4", MIDDLE: "3.6.4", OLDER: "3.6.3"}


def codex_binary(version: str) -> str:
    path = AGENTS_DIR / f"codex-{version}" / PLATFORM_BINARY
    if not path.exists():  # installed by tests/realagents/install.sh
        path = AGENTS_DIR / f"codex@{version}" / PLATFORM_BINARY
    need(path.exists(), f"Codex {version} is not installed at {path} (npm install --ignore-scripts "
                        f"@openai/codex@{version} in {path.parents[5]})")
    return str(path)


def run_harness(version: str, mode: str, command: str, tmp_path: Path,
                *vigil_options: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    need(os.geteuid() == 0, "this test needs root (BPF, network and mount namespaces)")
    exe = codex_binary(version)
    out_file = tmp_path / "tool-output.txt"
    proc = subprocess.run(
        ["unshare", "-n", "-m", "--propagation", "private", "--", "sh", "-c",
         'ip link set lo up && exec "$0" "$@"', sys.executable, str(HARNESS), exe, mode, command,
         str(out_file), "--agent-telemetry", *vigil_options],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["returncode"] == 0, result["stderr"]
    assert result["server_errors"] == []
    # Codex really ran the tool the model asked for
    assert result["tool_output"] == "vigil-codex-tool\n", result["stderr"][-3000:]
    events, _ = parse_json_lines(result["stdout"])
    return result, events


def llm_exchanges(result: dict[str, Any]) -> list[dict[str, Any]]:
    calls = [e for e in result["exchanges"] if e["provider"] == "openai_responses"]
    assert len(calls) == 2 and calls[0]["tool_calls"] and not calls[1]["tool_calls"]
    assert calls[0]["tool_calls"][0]["name"] == "exec_command"  # the tool Codex declared
    assert "exec_command" in calls[0]["request_tools"]
    return calls


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def in_call_order(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Events of `kind` in the order their calls were made (ts_ns: the request's first byte), not
    the order they were emitted: a call's event is emitted when its response ends, and Codex may
    read the end of one response only after its next call, on another connection, has finished."""
    return sorted(of_type(events, kind), key=lambda e: e["ts_ns"])


def coverage(events: list[dict[str, Any]]) -> None:
    """The executable's capture events: its OpenSSL and its rustls hooked by the locators, nothing blind."""
    hooked = [e for e in of_type(events, "capture_hooked") if e["binary"].endswith(PLATFORM_BINARY)]
    assert [(e["stack"], e["how"]) for e in hooked] == [("openssl", "locator"), ("rustls", "locator")], hooked
    assert hooked[0]["session_id"] is not None and hooked[1]["session_id"] == hooked[0]["session_id"]
    assert of_type(events, "capture_blind") == []
    assert not [e for e in of_type(events, "lost") if e["kind"] == "rustls_unread"]


def unrequested_alerts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(The harness runs Codex with the host's HOME: its shell snapshot sources the host's shell
    startup, whose writes outside the work tree are alerts of their own.)"""
    return [d for d in of_type(events, "detection") if d["name"] == "unrequested"]


def tool_ids(calls: list[dict[str, Any]]) -> list[list[str]]:
    return [[t["id"] for t in c["tool_calls"]] for c in calls]


@pytest.mark.parametrize("mode", ["openssl", "rustls"])
@pytest.mark.parametrize("command", ["trace", "run"])
@pytest.mark.parametrize("version", VERSIONS)
def test_each_tls_path_decodes_every_call_and_telemetry_agrees(version: str, command: str, mode: str,
                                                               tmp_path: Path) -> None:
    result, events = run_harness(version, mode, command, tmp_path)
    served = llm_exchanges(result)
    coverage(events)
    calls = in_call_order(events, "llm_call")
    assert [c["source"] for c in calls] == ["tls", "tls"]
    for call, sent in zip(calls, served, strict=True):
        assert call["provider"] == "openai" and call["endpoint"] == "/v1/responses"
        assert call["stream"] is True and call["status"] == 200 and call["model"] == sent["model"]
        assert call["response_id"] == sent["response_id"]
        assert (call["input_tokens"], call["output_tokens"]) == (sent["input_tokens"], sent["output_tokens"])
        assert [{k: t[k] for k in ("id", "name", "arguments")} for t in call["tool_calls"]] == sent["tool_calls"]
        assert "exec_command" in call["request_tools"] and call["finish_reason"] == "completed"
        assert call["session_id"] == events[0]["session_id"]
    # The analytics POST is HTTPS but not a model call.
    assert [r["path"] for r in of_type(events, "https_request")] == ["/v1/analytics/codex/turn-costs"]
    checks = in_call_order(events, "telemetry_check")
    assert [c["response_id"] for c in checks] == [s["response_id"] for s in served]
    assert all(c["agree"] for c in checks), checks
    assert {"input_tokens", "output_tokens", "tool_call_ids", "status"} <= set(checks[0]["compared"])
    assert "sk-test-codex-harness" not in result["stdout"]
    if command == "run":
        tool = served[0]["tool_calls"][0]
        # Codex may read a response's end after its command started: TLS then links it late
        # (tool_linked, source tls); the history applies that link to the call's start.
        starts = [s for s in of_type(apply_links(events), "tool_start") if s.get("tool_call_id") == tool["id"]]
        assert len(starts) == 1 and starts[0]["unrequested"] is False
        assert starts[0]["response_id"] == served[0]["response_id"] and starts[0]["tool_name"] == "exec_command"
        assert tool["arguments"]["cmd"] in " ".join(starts[0]["argv"])
        ends = [e for e in of_type(events, "tool_end") if e["tool_call"] == starts[0]["tool_call"]]
        assert len(ends) == 1 and ends[0]["outcome"] == "ok"
    # TLS read the call; the telemetry that also names it is a check and links nothing (TLS wins)
    assert [e for e in of_type(events, "tool_linked") if e["source"] != "tls"] == []
    assert unrequested_alerts(events) == []


@pytest.mark.parametrize("command", ["trace", "run"])
def test_unread_codex_is_filled_and_linked_by_its_telemetry(command: str, tmp_path: Path) -> None:
    """With the TLS search off (`--no-tls-locate`) Codex is read by nothing: its telemetry becomes
    the LLM calls, and it names the shell tool call only after the command ran, so the call is
    linked then (`tool_linked`, source telemetry) and an `unrequested` alert does not stand."""
    result, events = run_harness(PINNED, "rustls", command, tmp_path, "--no-tls-locate")
    served = llm_exchanges(result)
    assert not [e for e in of_type(events, "capture_hooked") if e["binary"].endswith(PLATFORM_BINARY)]
    calls = in_call_order(events, "llm_call")
    assert [c["source"] for c in calls] == ["telemetry", "telemetry"]
    assert of_type(events, "telemetry_check") == []
    for call, sent in zip(calls, served, strict=True):
        assert call["provider"] == "openai" and call["status"] == 200 and call["model"] == sent["model"]
        assert (call["input_tokens"], call["output_tokens"]) == (sent["input_tokens"], sent["output_tokens"])
        assert call["session_id"] == events[0]["session_id"] and call["comm"] == "codex"
    assert tool_ids(calls) == [[t["id"] for t in s["tool_calls"]] for s in served]
    first = calls[0]["tool_calls"][0]
    assert first["name"] == "exec_command" and first["arguments"] == served[0]["tool_calls"][0]["arguments"]
    (start,) = [s for s in of_type(events, "tool_start") if first["arguments"]["cmd"] in " ".join(s["argv"])]
    assert start["unrequested"] is True  # nothing named it when it started
    (link,) = of_type(events, "tool_linked")
    assert (link["tool_call"], link["tool_call_id"], link["match"], link["source"]) == (
        start["tool_call"], first["id"], "command", "telemetry")
    linked = [s for s in of_type(apply_links(events), "tool_start") if s["tool_call"] == start["tool_call"]]
    assert linked[0]["tool_call_id"] == first["id"] and linked[0]["unrequested"] is False
    # an alert raised before the link (the blind notice came late) is withdrawn by it
    retracted = {(r["tool_call"], r["alert_ts_ns"]) for r in of_type(events, "alert_retracted")}
    assert {(a["tool_call"], a["ts_ns"]) for a in unrequested_alerts(events)} == retracted


@pytest.mark.parametrize("version", VERSIONS)
def test_openssl_is_located_by_error_sites_and_cached_by_build(version: str, tmp_path: Path) -> None:
    exe = codex_binary(version)
    assert is_static_executable(exe)
    sites = locate(exe)
    assert sites.version == OPENSSL_OF[version]
    # Two distinct functions (that they are the right ones, the decoded traffic above shows).
    assert sites.write_offset != sites.read_offset
    cache = SiteCache(str(tmp_path / "cache.json"))
    first, cached = cache.lookup(exe)
    assert not cached and first.openssl == sites and first.rustls and first.rustls.startswith("0.23.")
    again, cached = SiteCache(str(tmp_path / "cache.json")).lookup(exe)
    assert cached and again == first


def test_the_two_releases_differ_and_are_both_located() -> None:
    located = [locate(codex_binary(v)) for v in VERSIONS]
    for a, b in itertools.combinations(located, 2):
        assert a.build_key != b.build_key and a.write_offset != b.write_offset


def rustls_sites(path: str) -> Any:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return locate_rustls(data)


def test_rustls_record_functions_are_located_in_every_release_and_cached(tmp_path: Path) -> None:
    """Each release carries three providers' TLS 1.3 ciphers (ring, aws-lc-rs AES and ChaCha):
    three encrypters and three decrypters, each encrypter's content type found in its code; the
    cache keeps them by build."""
    located = {v: rustls_sites(codex_binary(v)) for v in VERSIONS}
    for sites in located.values():
        assert len(sites.encrypters) == 3 and len(set(sites.decrypters)) == 3
        assert not {e.offset for e in sites.encrypters} & set(sites.decrypters)
        # OutboundPlainMessage keeps ContentType after its 32-byte payload; ApplicationData is its
        # fourth variant (rustls's declaration order), whatever the release
        assert {(e.type_offset, e.appdata_tag) for e in sites.encrypters} == {(32, 3)}
    assert len({s.decrypters for s in located.values()}) == len(VERSIONS)  # moved in every release
    exe = codex_binary(PINNED)
    first, cached = SiteCache(str(tmp_path / "cache.json")).lookup(exe)
    assert not cached and first.rustls_sites == located[PINNED] and first.rustls_error is None
    again, cached = SiteCache(str(tmp_path / "cache.json")).lookup(exe)
    assert cached and again == first
    # an entry from before rustls was located (no rustls_sites) is examined again, in place
    cache_file = tmp_path / "cache.json"
    saved = json.loads(cache_file.read_text())
    for entry in saved["builds"].values():
        del entry["rustls_sites"], entry["rustls_error"]
    cache_file.write_text(json.dumps(saved))
    redone, cached = SiteCache(str(cache_file)).lookup(exe)
    assert not cached and redone == first
    assert SiteCache(str(cache_file)).lookup(exe) == (first, True)


def test_rustls_without_decrypters_is_refused_with_a_reason(tmp_path: Path) -> None:
    """The decrypters' additional-data immediates changed in a copy: only encrypters are left,
    and vigil refuses rather than reading one direction."""
    exe = codex_binary(PINNED)
    copy = bytearray(Path(exe).read_bytes())
    for offset in rustls_sites(exe).decrypters:
        at = copy.index(AAD_IMMEDIATE, offset, offset + 0x1000)
        copy[at + 3] = 0x01
    path = tmp_path / "codex-no-decrypters"
    path.write_bytes(bytes(copy))
    with pytest.raises(LocateError, match=r"3 encrypter\(s\) and 0 decrypter\(s\)"):
        rustls_sites(str(path))
    found, _ = SiteCache(None).lookup(str(path))
    assert found.rustls_sites is None and "0 decrypter(s)" in (found.rustls_error or "")
    assert found.openssl is not None  # the OpenSSL path is still located


def test_binaries_without_openssl_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(LocateError, match="no OpenSSL 3"):
        locate(sys.executable)
    with pytest.raises(LocateError, match="no function builds TLS 1.3 record data"):
        rustls_sites("/bin/ls")
    text = tmp_path / "script.sh"
    text.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(LocateError, match="not a little-endian x86-64 ELF64"):
        locate(str(text))
    assert not is_static_executable(str(text)) and not is_static_executable("/bin/ls")


def test_a_copied_string_makes_the_binary_ambiguous(tmp_path: Path) -> None:
    """Two copies of ssl_write_internal's name: vigil refuses rather than picking one."""
    exe = Path(codex_binary(PINNED)).read_bytes()
    needle = b"\0ssl_write_internal\0"
    at = exe.index(needle)
    # Overwrite the neighbouring string (ssl_read_internal's or any other of the same length
    # region) with a second copy, inside .rodata.
    copy = bytearray(exe)
    second = exe.index(b"\0", at + len(needle) + 64)
    copy[second:second + len(needle)] = needle
    path = tmp_path / "codex-ambiguous"
    path.write_bytes(bytes(copy))
    with pytest.raises(LocateError, match="found 2 times"):
        locate(str(path))


def test_websocket_transport_goes_over_rustls_and_is_seen(tmp_path: Path) -> None:
    """With no CA variable (OpenSSL for HTTP), Codex's Responses WebSocket still uses rustls:
    vigil reads every upgrade request the server received (over rustls) and every HTTP call after
    the fallback (over OpenSSL)."""
    result, events = run_harness(PINNED, "openssl-ws", "trace", tmp_path)
    upgrades = [e for e in result["exchanges"] if e["method"] == "GET" and e["path"] == "/v1/responses"]
    assert upgrades, result["exchanges"]  # Codex tried the WebSocket first
    seen = [r for r in of_type(events, "https_request") if r["method"] == "GET"]
    assert [(r["path"], r["status"]) for r in seen] == [("/v1/responses", u["status"]) for u in upgrades]
    coverage(events)
    served = llm_exchanges(result)
    assert [c["response_id"] for c in in_call_order(events, "llm_call")] == [s["response_id"] for s in served]


def test_a_static_program_without_tls_is_not_reported(root: None) -> None:
    """ldconfig is a static executable with no TLS: examined, nothing to say, no event."""
    assert is_static_executable("/sbin/ldconfig")
    result = vigil_trace(["--", "sh", "-c", "/sbin/ldconfig -p >/dev/null"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert "/sbin/ldconfig" in [e["argv"][0] for e in result.of_type("exec")]
    assert result.of_type("capture_hooked") == [] and result.of_type("capture_blind") == []
