"""Pinned Bun-compiled agent releases, installed from npm into a cache directory on first use.

The locator must hold across releases (Bun and BoringSSL change under it), so the tests run an
old, a middle and the latest Claude Code 2.1.x build and opencode. Install scripts are skipped:
the platform package carries the executable, started directly.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

AGENTS_DIR = Path(os.environ.get("VIGIL_TEST_AGENTS", "/var/cache/vigild-test-agents"))

# (name, npm packages to install, the executable inside node_modules)
CLAUDE_CODE = {
    version: ([f"@anthropic-ai/claude-code-linux-x64@{version}"],
              "@anthropic-ai/claude-code-linux-x64/claude")
    for version in ("2.1.113", "2.1.220", "2.1.332")
}
OPENCODE = {
    "1.18.33": (["opencode-linux-x64@1.18.33"], "opencode-linux-x64/bin/opencode"),
}
RELEASES = {**{f"claude-code-{v}": spec for v, spec in CLAUDE_CODE.items()},
            **{f"opencode-{v}": spec for v, spec in OPENCODE.items()}}
LATEST_CLAUDE = "claude-code-2.1.332"


class AgentUnavailable(RuntimeError):
    pass


def agent_binary(release: str) -> Path:
    """The executable of a pinned release, installing it from npm if it is not there yet."""
    packages, inner = RELEASES[release]
    home = AGENTS_DIR / release
    binary = home / "node_modules" / inner
    if binary.exists():
        return binary
    home.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix", str(home),
                             *packages], capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0 or not binary.exists():
        raise AgentUnavailable(f"npm install {' '.join(packages)} failed: {result.stderr[-2000:]}")
    return binary
