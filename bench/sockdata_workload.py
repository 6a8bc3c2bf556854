"""The workload of bench/sockdata_overhead.py: N small writes and reads, timed from inside.

    python sockdata_workload.py KIND CALLS RESULT_FILE

KIND: `http` (a loopback TCP connection whose first write is a request line: captured when
tracked), `other` (a TCP connection whose first write is not: ignored after its first write) or
`file` (writes to /dev/null and reads from /dev/zero: not sockets). Writes the process's CPU
nanoseconds (user + system: the probes run in its syscalls) per write+read pair to RESULT_FILE;
CPU time, not wall time, so other load on the machine does not count (the timing excludes
interpreter start and connection set-up)."""

from __future__ import annotations

import os
import socket
import sys
import time

PAYLOAD = b"x" * 64


def main() -> None:
    kind, calls, result = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kind == "file":
        out, inp = os.open("/dev/null", os.O_WRONLY), os.open("/dev/zero", os.O_RDONLY)
    else:
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        first = b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n" \
            if kind == "http" else b"\x00bench"
        client.sendall(first)
        server.recv(len(first))
        out, inp = client.fileno(), server.fileno()
    write, read = os.write, os.read
    start = time.process_time_ns()
    for _ in range(calls):
        write(out, PAYLOAD)
        read(inp, 64)
    elapsed = time.process_time_ns() - start
    with open(result, "w", encoding="utf-8") as f:
        f.write(str(elapsed / calls))


if __name__ == "__main__":
    main()
