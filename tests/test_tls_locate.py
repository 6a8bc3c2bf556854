"""The BoringSSL locator on real Bun executables (Claude Code releases old, middle and latest, and
opencode), its disk cache, its refusals, and the stacks it names as blind."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from bunagents.install import RELEASES, agent_binary
from elftools.elf.elffile import ELFFile

from vigild.bpf import tls_locate
from vigild.bpf.tls_locate import BORINGSSL, Blind, Locator, TlsFunctions


def _text_range(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        return text["sh_offset"], text["sh_offset"] + text["sh_size"]


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_locates_boringssl_in_every_release(release: str, tmp_path: Path) -> None:
    binary = agent_binary(release)
    found = Locator(cache_dir=tmp_path).locate(str(binary))
    assert isinstance(found, TlsFunctions), found
    assert found.stack == "boringssl" and found.how == "locator" and not found.cached
    offsets = {found.write, found.read, found.close}
    assert len(offsets) == 3  # three different functions
    lo, hi = _text_range(binary)
    assert all(lo <= off < hi and off % 16 == 0 for off in offsets)

    # A second vigil finds it in the disk cache, by build: same offsets, no search.
    started = time.monotonic()
    again = Locator(cache_dir=tmp_path).locate(str(binary))
    assert isinstance(again, TlsFunctions) and again.cached
    assert (again.write, again.read, again.close) == (found.write, found.read, found.close)
    assert time.monotonic() - started < max(0.5, found.seconds)


def test_a_copy_at_another_path_uses_the_cache(tmp_path: Path) -> None:
    binary = agent_binary("opencode-1.18.33")
    cache = tmp_path / "cache"
    first = Locator(cache_dir=cache).locate(str(binary))
    copy = tmp_path / "opencode"
    shutil.copy(binary, copy)
    second = Locator(cache_dir=cache).locate(str(copy))
    assert isinstance(first, TlsFunctions) and isinstance(second, TlsFunctions)
    assert second.cached and second.path == str(copy) and second.write == first.write


def test_go_crypto_tls_is_named_blind() -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "the prometheus package (a Go program) is part of the test setup"
    found = Locator(cache_dir=None).locate(prometheus)
    assert isinstance(found, Blind) and found.stack == "go-crypto/tls"
    assert "Go crypto/tls" in found.reason


def test_executable_without_tls_has_no_stack() -> None:
    assert Locator(cache_dir=None).locate(shutil.which("ls") or "/bin/ls") is None


def _fn(entry: int, *sites: tuple[int, int]) -> tls_locate._Function:
    return tls_locate._Function(entry, [(entry + 16 * i, reason, line) for i, (reason, line) in enumerate(sites)])


S = BORINGSSL


def test_two_write_candidates_are_refused() -> None:
    funcs = [_fn(0x1000, (S.r_uninitialized, 900), (S.r_bad_length, 920)),
             _fn(0x2000, (S.r_uninitialized, 950), (S.r_bad_length, 970))]
    with pytest.raises(tls_locate._Refused, match="SSL_write: 2 candidates"):
        tls_locate._identify(None, None, S, funcs)  # type: ignore[arg-type]


def test_two_read_impl_candidates_are_refused() -> None:
    impl_inlined_read = _fn(0x3000, (S.r_uninitialized, 840), (S.r_handshake_failure, 870),
                            (S.r_should_not_have_been_called, 930))
    write = _fn(0x4000, (S.r_should_not_have_been_called, 955), (S.r_uninitialized, 960),
                (S.r_handshake_failure, 975), (S.r_bad_length, 981))
    shutdown = _fn(0x5000, (S.r_uninitialized, 1023), (S.r_application_data_on_shutdown, 1071))
    # SSL_read with ssl_read_impl inlined carries read_impl's two sites; a second function that
    # carries them too makes it ambiguous which one SSL_read runs: refused, not guessed.
    other_impl = _fn(0x6000, (S.r_uninitialized, 841), (S.r_handshake_failure, 871))
    with pytest.raises(tls_locate._Refused, match="ssl_read_impl: 2 candidates"):
        tls_locate._identify(None, None, S, [impl_inlined_read, write, shutdown, other_impl])  # type: ignore[arg-type]


def test_doctor_names_a_running_bun_process_hooked_and_a_plain_one_without_tls(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "wait.js"
    script.write_text("await Bun.sleep(60000);\n")
    bun = subprocess.Popen([str(agent_binary("opencode-1.18.33")), str(script)], env={**os.environ, "BUN_BE_BUN": "1"})
    plain = subprocess.Popen(["sleep", "60"])
    try:
        env = {**os.environ, "VIGIL_TLS_CACHE": str(tmp_path / "cache")}
        ask = [sys.executable, "-m", "vigild.daemon.cli", "doctor", "-o", "json"]
        time.sleep(1.0)
        report = json.loads(subprocess.run([*ask, str(bun.pid)], env=env, capture_output=True, text=True,
                                           check=True, timeout=120).stdout)
        (stack,) = [s for s in report["stacks"] if s["stack"] == "boringssl"]
        assert stack["state"] == "hooked" and stack["how"].startswith("locator (SSL_write at 0x")
        assert report["verdict"] == "readable"
        text = subprocess.run([*ask[:-2], str(plain.pid)], env=env, capture_output=True, text=True, check=True,
                              timeout=60).stdout
        assert text.startswith(f"pid {plain.pid} ") and "no TLS stack found" in text
    finally:
        for proc in (bun, plain):
            proc.kill()
            proc.wait()
