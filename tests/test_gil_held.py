"""The held lane's GIL-keeping syscalls behave as the os module's: same results, same exceptions
(the cgroup backends map OSError by errno, control_loop catches ProcessLookupError), and only
inside `keeping_gil()`, only on the thread that entered it."""

from __future__ import annotations

import errno
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from vigild.cgroups import OsFs, gil_held


def test_rename_mkdir_and_write_keep_their_meaning(tmp_path: Path) -> None:
    fs = OsFs()
    with gil_held.keeping_gil():
        assert gil_held.active()
        fs.mkdir(tmp_path / "a")
        fs.rename(tmp_path / "a", tmp_path / "b")
        (tmp_path / "b" / "value").write_text("")
        fs.write(tmp_path / "b" / "value", "42")
        with pytest.raises(FileNotFoundError):
            fs.write(tmp_path / "b" / "missing", "1")  # a cgroup file is never created by a write
        with pytest.raises(FileExistsError):
            fs.mkdir(tmp_path / "b")
    assert not gil_held.active()
    assert (tmp_path / "b" / "value").read_text() == "42" and not (tmp_path / "a").exists()


def test_is_link_tells_links_from_directories_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    with gil_held.keeping_gil():
        assert gil_held.is_link(tmp_path / "link")
        assert not gil_held.is_link(tmp_path / "dir")
        assert not gil_held.is_link(tmp_path / "missing")


def test_kill_raises_process_lookup_error_for_a_gone_process() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        with gil_held.keeping_gil():
            gil_held.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        with gil_held.keeping_gil(), pytest.raises(ProcessLookupError):
            gil_held.kill(child.pid, signal.SIGCONT)  # reaped: no such process
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_keeping_the_gil_is_per_thread() -> None:
    seen: list[bool] = []
    with gil_held.keeping_gil():
        worker = threading.Thread(target=lambda: seen.append(gil_held.active()))
        worker.start()
        worker.join()
    assert seen == [False]


def test_the_errno_is_the_os_modules(tmp_path: Path) -> None:
    with gil_held.keeping_gil(), pytest.raises(OSError) as caught:
        gil_held.rename(tmp_path / "nope", tmp_path / "other")
    assert caught.value.errno == errno.ENOENT and str(tmp_path / "nope") in str(caught.value)
