"""The control socket: JSON lines, registered commands, and who may connect (root and the
configured group, checked with SO_PEERCRED even when the socket file is open to everyone)."""

from __future__ import annotations

import grp
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigild.daemon.service.control import CommandError, ControlServer, request

pytestmark = pytest.mark.usefixtures("root")

NOBODY = 65534
GROUP = grp.getgrgid(NOBODY).gr_name  # nogroup
OTHER_GID = 1  # daemon: not the control group


@pytest.fixture
def server() -> Iterator[ControlServer]:
    # Not under pytest's tmp_path: its parents are 0700, which an unprivileged child cannot cross.
    workdir = Path(tempfile.mkdtemp(prefix="vigil-control-"))
    workdir.chmod(0o755)
    control = ControlServer(workdir / "control.sock", GROUP)
    control.register("status", lambda req: {"uptime_s": 1.5})
    control.register("echo", lambda req: req.get("text"))

    def refuse(req: dict) -> None:
        raise CommandError("not today")

    control.register("refuse", refuse)
    control.start()
    yield control
    control.close()
    workdir.rmdir()


def as_user(path: Path, uid: int, gid: int) -> str:
    """Connect from a forked child running as uid/gid (everything is imported already: /root,
    where this Python lives, is closed to other users)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            answer = json.dumps({"result": request(path, "status")})
        except (OSError, CommandError) as exc:
            answer = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as reader:
        return reader.read()


def test_root_gets_answers(server: ControlServer) -> None:
    assert request(server.path, "status") == {"uptime_s": 1.5}
    with pytest.raises(CommandError, match="not today"):
        request(server.path, "refuse")
    with pytest.raises(CommandError, match="unknown command 'nope'.*echo, refuse, status"):
        request(server.path, "nope")


def test_several_requests_on_one_connection(server: ControlServer) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(server.path))
        sock.sendall(b'{"command": "echo", "text": "a"}\nnot json\n[1]\n{"command": "echo", "text": "b"}\n')
        sock.shutdown(socket.SHUT_WR)
        lines = sock.makefile("rb").read().splitlines()
    replies = [json.loads(line) for line in lines]
    assert replies[0] == {"ok": True, "result": "a"}
    assert not replies[1]["ok"] and "not JSON" in replies[1]["error"]
    assert not replies[2]["ok"] and "JSON object" in replies[2]["error"]
    assert replies[3] == {"ok": True, "result": "b"}


def test_socket_file_is_root_and_group_only(server: ControlServer) -> None:
    st = server.path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, NOBODY, 0o660)


def test_group_member_is_admitted(server: ControlServer) -> None:
    assert json.loads(as_user(server.path, NOBODY, NOBODY)) == {"result": {"uptime_s": 1.5}}


def test_other_user_is_refused(server: ControlServer) -> None:
    # The file mode stops it first...
    assert "PermissionError" in as_user(server.path, NOBODY, OTHER_GID)
    # ...and SO_PEERCRED when the file is opened to everyone.
    server.path.chmod(0o666)
    answer = json.loads(as_user(server.path, NOBODY, OTHER_GID))
    assert answer == {"error": "CommandError: permission denied: root or the vigild control group only"}
    assert server.refused == 1


def test_idle_connections_are_capped_not_a_thread_each(server: ControlServer) -> None:
    """A thousand idle connections cost at most MAX_CONNECTIONS threads; the rest are told "busy",
    and the socket still answers once they go."""
    from vigild.daemon.service import control as control_module

    before = threading.active_count()
    clients = []
    try:
        for _ in range(1_000):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(server.path))
            clients.append(sock)
        deadline = time.monotonic() + 10
        while server._server.busy_refused < 1_000 - control_module.MAX_CONNECTIONS:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, server._server.busy_refused  # type: ignore[union-attr]
            time.sleep(0.05)
        assert threading.active_count() - before <= control_module.MAX_CONNECTIONS
        busy = clients[-1].recv(200)
        assert b"busy" in busy
    finally:
        for sock in clients:
            sock.close()
    deadline = time.monotonic() + 10
    while server._server.active:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert request(server.path, "status") == {"uptime_s": 1.5}


def test_idle_connection_is_closed_after_the_timeout(server: ControlServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from vigild.daemon.service import control as control_module

    server.close()
    monkeypatch.setattr(control_module, "IDLE_TIMEOUT_S", 0.5)
    short = ControlServer(server.path, GROUP)
    short.register("status", lambda req: {"uptime_s": 1.5})
    short.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(short.path))
            sock.settimeout(5)
            assert sock.recv(10) == b""  # closed by the server, not by us
    finally:
        short.close()
