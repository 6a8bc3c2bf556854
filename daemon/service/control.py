"""The control socket: a Unix stream socket taking one JSON request per line and answering one
JSON line each, `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`.

Only root and members of the configured group get in. The socket file is created 0660
root:group, and each connection's peer is checked again with SO_PEERCRED (uid, primary gid and
supplementary groups at connect time), so a loosened file mode never lets anyone else in.
Commands are functions registered by name (`register`); a request is `{"command": NAME, ...}`.
"""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("vigild.control")

Handler = Callable[[dict[str, Any]], Any]
MAX_REQUEST = 1 << 20
MAX_CONNECTIONS = 32     # open connections at once; more are answered "busy" and closed at accept
IDLE_TIMEOUT_S = 30.0    # a connection that sends nothing for this long is closed


class CommandError(Exception):
    """A command refused its request; the message goes back to the client."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel recorded it at connect."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def _supplementary_groups(pid: int) -> set[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


class ControlServer:
    """Serves the registered commands on `path` in a thread; one thread per connection."""

    def __init__(self, path: Path, group: str | None = None) -> None:
        self.path = path
        self.gid = grp.getgrnam(group).gr_gid if group else None
        self.commands: dict[str, Handler] = {}
        self.refused = 0
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def register(self, name: str, handler: Handler) -> None:
        """`handler(request) -> result` (JSON-serialisable); raise CommandError to refuse."""
        self.commands[name] = handler

    def allowed(self, pid: int, uid: int, gid: int) -> bool:
        if uid == 0:
            return True
        return self.gid is not None and (gid == self.gid or self.gid in _supplementary_groups(pid))

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if _answers(self.path):
            raise OSError(errno.EADDRINUSE, f"another vigild serves {self.path}")
        self.path.unlink(missing_ok=True)  # left by a vigild that did not stop cleanly
        control = self

        class Connection(socketserver.StreamRequestHandler):
            timeout = IDLE_TIMEOUT_S

            def handle(self) -> None:
                try:
                    control._serve(self)
                except TimeoutError:
                    pass  # idle past IDLE_TIMEOUT_S: the connection is closed, its thread ends

        old_umask = os.umask(0o177)  # no window in which the socket is open to everyone
        try:
            server = _BoundedServer(str(self.path), Connection)
        finally:
            os.umask(old_umask)
        server.daemon_threads = True
        try:
            if self.gid is not None:
                os.chown(self.path, 0, self.gid)
                os.chmod(self.path, 0o660)
        except OSError as exc:
            server.server_close()
            self.path.unlink(missing_ok=True)
            raise OSError(exc.errno, f"cannot give the control socket {self.path} to group {self.gid}: "
                                     f"{exc.strerror} (vigild needs CAP_CHOWN for this)") from None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="vigil-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self.path.unlink(missing_ok=True)

    def _serve(self, conn: socketserver.StreamRequestHandler) -> None:
        pid, uid, gid = peer_credentials(conn.request)
        if not self.allowed(pid, uid, gid):
            self.refused += 1
            log.warning("control: refused pid %d uid %d gid %d (not root nor in the control group)", pid, uid, gid)
            conn.rfile.readline(MAX_REQUEST)  # read the request first: the client then gets the answer, not EPIPE
            _reply(conn, {"ok": False, "error": "permission denied: root or the vigild control group only"})
            return
        while line := conn.rfile.readline(MAX_REQUEST):
            _reply(conn, self.dispatch(line))

    def dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise CommandError("a request is a JSON object")
            name = request.get("command")
            handler = self.commands.get(name) if isinstance(name, str) else None
            if handler is None:
                raise CommandError(f"unknown command {name!r} (commands: {', '.join(sorted(self.commands))})")
            return {"ok": True, "result": handler(request)}
        except json.JSONDecodeError as exc:
            return {"ok": False, "error": f"not JSON: {exc}"}
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a failing command must not take the socket down
            log.exception("control: command failed")
            return {"ok": False, "error": f"internal error: {exc}"}


class _BoundedServer(socketserver.ThreadingUnixStreamServer):
    """One thread per connection, but never more than MAX_CONNECTIONS of them: a client that
    opens a thousand idle connections gets "busy" answers, not a thousand threads."""

    def __init__(self, path: str, handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(path, handler)
        self.active = 0
        self.busy_refused = 0
        self._count_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._count_lock:
            admitted = self.active < MAX_CONNECTIONS
            if admitted:
                self.active += 1
            else:
                self.busy_refused += 1
        if not admitted:
            try:
                request.sendall(b'{"ok": false, "error": "busy: too many open connections"}\n')
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self.active -= 1


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _reply(conn: socketserver.StreamRequestHandler, message: dict[str, Any]) -> None:
    try:
        conn.wfile.write(json.dumps(message, default=str).encode() + b"\n")
        conn.wfile.flush()
    except OSError:
        pass  # the client went away


def request(path: Path, command: str, timeout: float = 5.0, **args: Any) -> Any:
    """Client side: send one command, return its result or raise CommandError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
        with sock.makefile("rb") as reader:
            line = reader.readline(MAX_REQUEST)
    if not line:
        raise CommandError("vigild closed the connection without an answer")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise CommandError(reply.get("error", "request failed"))
    return reply.get("result")
