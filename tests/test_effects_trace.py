"""File and network effects of tracked commands, with the real lineage and effects programs
(root only). Each test runs a small Python program tracked from its first instruction and looks
at the effect events of its session."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vigild.bpf.effects_events import (
    DnsQuery,
    FileChmod,
    FileEffect,
    FileMkdir,
    FileOpen,
    FileRename,
    FileUnlink,
    FileWrite,
    NetAccept,
    NetBind,
    NetClose,
    NetConnect,
    NetEffect,
)
from vigild.bpf.events import KIND_NAMES

from support.effects_tracer import EffectsTracer

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def tracer() -> Iterator[EffectsTracer]:
    t = EffectsTracer()
    yield t
    t.close()


def of(events: list[Any], cls: type, **match: Any) -> list[Any]:
    return [e for e in events if type(e) is cls and all(getattr(e, k) == v for k, v in match.items())]


def real(path: Path) -> str:
    return os.path.realpath(path)


def test_ten_thousand_small_writes_are_one_effect(tracer: EffectsTracer, tmp_path: Path) -> None:
    target = tmp_path / "many.bin"
    events = tracer.python("""
        import os, sys
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for _ in range(10000):
            os.write(fd, b"0123456")
        os.close(fd)
    """, str(target))
    writes = of(events, FileWrite, path=real(target))
    assert len(writes) == 1, writes
    assert writes[0].bytes == 70000 and writes[0].writes == 10000
    assert writes[0].reason == "close" and writes[0].aggregated and not writes[0].path_stale
    assert target.stat().st_size == 70000
    assert len(of(events, FileOpen, path=real(target))) == 1


def test_writes_left_open_are_reported_at_exit(tracer: EffectsTracer, tmp_path: Path) -> None:
    target = tmp_path / "open-at-exit.log"
    events = tracer.python("""
        import os, sys
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
        for _ in range(100):
            os.writev(fd, [b"ab", b"cde"])
        os._exit(0)
    """, str(target))
    writes = of(events, FileWrite, path=real(target))
    assert [(w.bytes, w.writes, w.reason) for w in writes] == [(500, 100, "exit")]


def test_relative_paths_after_chdir_are_absolute(tracer: EffectsTracer, tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "c").mkdir()
    events = tracer.python("""
        import os, sys
        os.chdir(sys.argv[1] + "/a/b")
        open("../c/up.txt", "w").close()
        open("here.txt", "w").close()
        open("./../../a/b/../c/../b/twisty.txt", "w").close()
        dfd = os.open("..", os.O_RDONLY | os.O_DIRECTORY)
        os.close(os.open("c/via-dirfd.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dfd))
        try:
            open("../missing/nope.txt")
        except FileNotFoundError:
            pass
    """, str(tmp_path))
    base = real(tmp_path)
    opened = {e.path for e in of(events, FileOpen) if e.ret >= 0}
    assert {f"{base}/a/c/up.txt", f"{base}/a/b/here.txt", f"{base}/a/b/twisty.txt",
            f"{base}/a/c/via-dirfd.txt", f"{base}/a"} <= opened
    failed = of(events, FileOpen, path=f"{base}/a/missing/nope.txt")
    assert len(failed) == 1 and failed[0].ret == -2  # ENOENT, resolved from the cwd and normalised


def test_open_flags_create_truncate_read(tracer: EffectsTracer, tmp_path: Path) -> None:
    existing = tmp_path / "existing.txt"
    existing.write_text("old contents")
    fresh = tmp_path / "fresh.txt"
    events = tracer.python("""
        import os, sys
        os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
        os.close(os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        os.close(os.open(sys.argv[2], os.O_RDONLY))
        os.close(os.open(sys.argv[2], os.O_RDWR | os.O_APPEND))
    """, str(fresh), str(existing))
    created = of(events, FileOpen, path=real(fresh))
    assert len(created) == 1
    assert (created[0].create, created[0].created, created[0].write, created[0].read, created[0].truncate) == \
        (True, True, True, False, False)
    assert created[0].mode == 0o640
    flags = [(e.read, e.write, e.create, e.truncate, e.created) for e in of(events, FileOpen, path=real(existing))]
    assert flags == [(False, True, True, True, False), (True, False, False, False, False),
                     (True, True, False, False, False)]


def test_unlink_rename_mkdir_chmod_absolute(tracer: EffectsTracer, tmp_path: Path) -> None:
    events = tracer.python("""
        import os, sys
        os.chdir(sys.argv[1])
        os.mkdir("d", 0o750)
        open("f1", "w").close()
        os.rename("f1", "d/f2")
        os.chmod("d/f2", 0o600)
        dfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY)
        os.rename("f2", "../f3", src_dir_fd=dfd, dst_dir_fd=dfd)
        fd = os.open("f3", os.O_RDONLY)
        os.fchmod(fd, 0o644)
        os.unlink("f3")
        os.rmdir("d")
        try:
            os.unlink("never-there")
        except FileNotFoundError:
            pass
    """, str(tmp_path))
    base = real(tmp_path)
    assert [(e.path, e.mode, e.ret) for e in of(events, FileMkdir)] == [(f"{base}/d", 0o750, 0)]
    assert [(e.path, e.new_path) for e in of(events, FileRename)] == [
        (f"{base}/f1", f"{base}/d/f2"), (f"{base}/d/f2", f"{base}/f3")]
    assert [(e.path, e.mode, e.fd >= 0) for e in of(events, FileChmod)] == [
        (f"{base}/d/f2", 0o600, False), (f"{base}/f3", 0o644, True)]
    assert [(e.path, e.directory, e.ret) for e in of(events, FileUnlink)] == [
        (f"{base}/f3", False, 0), (f"{base}/d", True, 0), (f"{base}/never-there", False, -2)]


def _echo_server(family: int, addr: str) -> tuple[socket.socket, threading.Thread]:
    """An untracked listener that reads 1000 bytes and answers 500."""
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((addr, 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            got = 0
            while got < 1000:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                got += len(chunk)
            conn.sendall(b"y" * 500)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return srv, thread


CLIENT = """
    import socket, sys
    family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.connect((sys.argv[1], int(sys.argv[2])))
    for _ in range(10):
        s.sendall(b"x" * 100)
    got = 0
    while got < 500:
        got += len(s.recv(4096))
    s.close()
"""


@pytest.mark.parametrize(("family", "addr"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_tcp_connect_reports_address_and_bytes(tracer: EffectsTracer, family: int, addr: str) -> None:
    srv, thread = _echo_server(family, addr)
    port = srv.getsockname()[1]
    try:
        events = tracer.python(CLIENT, addr, str(port))
    finally:
        thread.join(5)
        srv.close()
    connects = of(events, NetConnect, remote_port=port)
    assert len(connects) == 1
    c = connects[0]
    assert (c.family, c.sock_type, c.remote_addr, c.ret) == \
        ("inet" if family == socket.AF_INET else "inet6", "stream", addr, 0)
    assert c.local_port and c.local_addr == addr
    closes = of(events, NetClose, sock_id=c.sock_id)
    assert len(closes) == 1
    assert (closes[0].bytes_sent, closes[0].bytes_received, closes[0].sends) == (1000, 500, 10)
    assert (closes[0].remote_addr, closes[0].remote_port, closes[0].reason) == (addr, port, "close")


def test_bind_accept_within_the_tracked_process(tracer: EffectsTracer) -> None:
    events = tracer.python("""
        import socket
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        cli = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
        cli.sendall(b"q" * 300)
        got = 0
        while got < 300:
            got += len(conn.recv(4096))
        for s in (cli, conn, srv):
            s.close()
    """)
    binds = of(events, NetBind, family="inet")
    assert len(binds) == 1 and binds[0].local_addr == "127.0.0.1" and binds[0].local_port > 0
    port = binds[0].local_port
    accepts = of(events, NetAccept, local_port=port)
    assert len(accepts) == 1 and accepts[0].remote_addr == "127.0.0.1"
    closes = {e.sock_id: e for e in of(events, NetClose)}
    assert closes[accepts[0].sock_id].bytes_received == 300
    client = of(events, NetConnect, remote_port=port)[0]
    assert closes[client.sock_id].bytes_sent == 300
    assert client.local_port == accepts[0].remote_port


def test_unix_socket_path(tracer: EffectsTracer, tmp_path: Path) -> None:
    path = str(tmp_path / "agent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            received.append(conn.recv(4096))
            conn.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        events = tracer.python("""
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sys.argv[1])
            s.sendall(b"hello")
            s.recv(2)
            s.close()
            a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            a.bind("\\0vigil-abstract-test")
            a.close()
        """, path)
    finally:
        thread.join(5)
        srv.close()
    connects = of(events, NetConnect, family="unix")
    assert [(c.unix_path, c.unix_abstract, c.ret) for c in connects] == [(path, False, 0)]
    closes = of(events, NetClose, sock_id=connects[0].sock_id)
    assert [(c.unix_path, c.bytes_sent, c.bytes_received) for c in closes] == [(path, 5, 2)]
    binds = of(events, NetBind, family="unix")
    assert [(b.unix_path, b.unix_abstract) for b in binds] == [("vigil-abstract-test", True)]


def test_dns_question_over_udp(tracer: EffectsTracer) -> None:
    events = tracer.python("""
        import socket
        def query(name, qtype, qid):
            labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
            return qid.to_bytes(2, "big") + bytes.fromhex("01000001000000000000") + labels + b"\\0" + \\
                qtype.to_bytes(2, "big") + b"\\0\\1"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(query("api.example.com", 1, 7), ("127.0.0.1", 53))
        s.close()
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.connect(("127.0.0.1", 53))
        c.send(query("files.example.org", 28, 8))
        c.close()
        d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        d.sendto(b"not-dns", ("127.0.0.1", 5353))
        d.close()
    """)
    queries = of(events, DnsQuery)
    assert [(q.name, q.qtype, q.query_id, q.server, q.server_port) for q in queries] == [
        ("api.example.com.", "A", 7, "127.0.0.1", 53), ("files.example.org.", "AAAA", 8, "127.0.0.1", 53)]


def test_ssh_key_read_is_a_read_open(tracer: EffectsTracer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_rsa"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    events = tracer.run(["env", f"HOME={home}", "sh", "-c", "cat ~/.ssh/id_rsa > /dev/null"])
    opens = of(events, FileOpen, path=real(key))
    assert len(opens) == 1
    assert (opens[0].read, opens[0].write, opens[0].create, opens[0].comm) == (True, False, False, "cat")


def test_untracked_processes_produce_no_effects(tracer: EffectsTracer, tmp_path: Path) -> None:
    noise = tmp_path / "noise"
    untracked = subprocess.Popen(["sh", "-c", f"for i in $(seq 200); do echo $i > {noise}-$i; rm {noise}-$i; done"])
    tracer.python("import time; time.sleep(0.3)")
    untracked.wait()
    effects = [e for e in tracer.sink.events if isinstance(e, (FileEffect, NetEffect, DnsQuery))]
    assert effects  # the tracked python did open files
    assert not [e for e in effects if e.pid == untracked.pid or "noise" in getattr(e, "path", "")]
    assert all(e.session_id in tracer.pipeline.sessions for e in effects)


def test_aggregation_off_sends_every_call(tmp_path: Path) -> None:
    t = EffectsTracer(aggregate=False)
    try:
        target = tmp_path / "per-call.bin"
        events = t.python("""
            import os, sys
            fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
            for _ in range(100):
                os.write(fd, b"abc")
            os.close(fd)
        """, str(target))
    finally:
        t.close()
    writes = of(events, FileWrite, path=real(target))
    assert len(writes) == 100
    assert {(w.bytes, w.writes, w.aggregated, w.reason) for w in writes} == {(3, 1, False, "call")}


def test_every_kind_the_kernel_counted_has_a_name_and_decoded(tracer: EffectsTracer, tmp_path: Path) -> None:
    """The per-kind counters (metric labels, `lost` events) are named from the one Kind table,
    and every record the real programs wrote had a decoder: no unknown kind, no short record."""
    target = tmp_path / "named.txt"
    tracer.python("""
        import os, socket, sys
        with open(sys.argv[1], "w") as f:
            f.write("x")
        os.rename(sys.argv[1], sys.argv[1] + ".2")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.close()
    """, str(target))
    stats = tracer.lineage.stats()
    assert {"exec", "exit", "file_open", "file_write", "file_rename", "net_bind", "net_close"} <= set(stats)
    assert set(stats) <= set(KIND_NAMES.values())
    assert tracer.pipeline.decoder.errors == {}
