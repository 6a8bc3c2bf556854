"""How to run each pinned real agent headless against a local model server.

Each agent is started as its users start it (the npm `bin` entry, or the platform binary the npm
wrapper would exec), pointed at the fake server by its own environment variables and settings
files, with a throw-away HOME. Versions come from pins.txt, shared with install.sh.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("VIGIL_AGENTS_CACHE", "/var/cache/vigil-agents"))
PROMPT = "Run the test command with your shell tool, then say done."
FAKE_KEY = "fake-key-for-local-tests"  # not credential-shaped on purpose: nothing to redact


def pins() -> dict[str, tuple[str, str]]:
    """name -> (npm package, version), from pins.txt."""
    found = {}
    for line in (HERE / "pins.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and not parts[0].startswith("#"):
            found[parts[0]] = (parts[1], parts[2])
    return found


@dataclass(frozen=True)
class Agent:
    """One pinned agent: where its install is, how to start it, what it needs in its HOME."""

    name: str
    package: str
    version: str

    @property
    def prefix(self) -> Path:
        return CACHE / f"{self.name}@{self.version}"

    @property
    def installed(self) -> bool:
        return (self.prefix / ".complete").exists()

    def bin(self, name: str) -> Path:
        return self.prefix / "node_modules" / ".bin" / name

    def argv(self, prompt: str = PROMPT) -> list[str]:
        """The command line a user would type (absolute paths)."""
        modules = self.prefix / "node_modules"
        if self.name == "gemini":
            return [str(self.bin("gemini")), "-p", prompt, "--yolo", "-m", "gemini-2.5-pro", "-o", "json"]
        if self.name == "qwen":
            return [str(self.bin("qwen")), "-p", prompt, "--yolo", "-o", "json"]
        if self.name == "claude":
            exe = modules / "@anthropic-ai" / "claude-code-linux-x64" / "claude"
            return [str(exe), "-p", prompt, "--output-format", "json", "--dangerously-skip-permissions",
                    "--model", "claude-sonnet-4-5"]
        if self.name == "codex":
            exe = modules / "@openai" / "codex-linux-x64" / "vendor" / "x86_64-unknown-linux-musl" / "bin" / "codex"
            return [str(exe), "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", prompt]
        if self.name == "opencode":
            exe = modules / "opencode-linux-x64" / "bin" / "opencode"
            return [str(exe), "run", "--model", "local/test-model", prompt]
        raise ValueError(f"no recipe for agent {self.name!r}")

    def prepare(self, home: Path, url: str, ca: str) -> dict[str, str]:
        """Write the agent's settings under `home`; return the environment to run it with."""
        home.mkdir(parents=True, exist_ok=True)
        node_dir = str(Path(shutil.which("node") or "/usr/bin/node").parent)
        env = {"HOME": str(home), "PATH": f"{node_dir}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "NODE_EXTRA_CA_CERTS": ca, "SSL_CERT_FILE": ca, "TERM": "dumb", "CI": "1", "NO_COLOR": "1"}
        if self.name == "gemini":
            _write_json(home / ".gemini" / "settings.json", {"security": {"auth": {"selectedType": "gemini-api-key"}}})
            env |= {"GOOGLE_GEMINI_BASE_URL": url, "GEMINI_API_KEY": FAKE_KEY, "GEMINI_CLI_TRUST_WORKSPACE": "true"}
        elif self.name == "qwen":
            _write_json(home / ".qwen" / "settings.json", {"security": {"auth": {"selectedType": "openai"}}})
            env |= {"OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": FAKE_KEY, "OPENAI_MODEL": "qwen3-coder-plus"}
        elif self.name == "claude":
            env |= {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": FAKE_KEY, "IS_SANDBOX": "1",
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
                    "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1"}
        elif self.name == "codex":
            codex_home = home / ".codex"
            codex_home.mkdir(parents=True, exist_ok=True)
            (codex_home / "config.toml").write_text(
                'model = "gpt-5-codex"\nmodel_provider = "local"\n\n[model_providers.local]\nname = "local"\n'
                f'base_url = "{url}/v1"\nenv_key = "LOCAL_API_KEY"\nwire_api = "responses"\n')
            env |= {"CODEX_HOME": str(codex_home), "LOCAL_API_KEY": FAKE_KEY, "CODEX_CA_CERTIFICATE": ca}
        elif self.name == "opencode":
            _write_json(home / ".config" / "opencode" / "opencode.json", {
                "$schema": "https://opencode.ai/config.json", "autoupdate": False, "share": "disabled",
                "provider": {"local": {"npm": "@ai-sdk/openai-compatible", "name": "local",
                                       "options": {"baseURL": f"{url}/v1", "apiKey": FAKE_KEY},
                                       "models": {"test-model": {"name": "test-model"}}}}})
            env |= {"OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1"}
        return env


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def agent(name: str) -> Agent:
    package, version = pins()[name]
    return Agent(name, package, version)
