"""An MCP server over streamable HTTP (the official `mcp` SDK's FastMCP), on loopback.

    python mcp_http_server.py PORT [CERT KEY]

With CERT and KEY it serves HTTPS. One tool, read_notes(path), which reads a file."""

import sys
from pathlib import Path

import uvicorn
from mcp.server.fastmcp import FastMCP

server = FastMCP("notes-server", host="127.0.0.1", port=int(sys.argv[1]), log_level="WARNING")


@server.tool()
def read_notes(path: str) -> str:
    """Read a notes file."""
    return Path(path).read_text()


if __name__ == "__main__":
    tls = {"ssl_certfile": sys.argv[2], "ssl_keyfile": sys.argv[3]} if len(sys.argv) > 3 else {}
    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", **tls)
