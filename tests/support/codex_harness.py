"""Run a real, pinned Codex under `vigil trace|run` against the fake Responses server; print what
both sides saw as one JSON object on stdout.

Must run inside `unshare -n -m` (loopback only; a private mount namespace): the server, vigil and
Codex share that network namespace, and nothing can leave the machine. Modes choose Codex's TLS
path (measured on 0.154 and 0.169):
- ``rustls``: `CODEX_CA_CERTIFICATE` names the test CA; Codex then speaks rustls (aws-lc).
- ``openssl``: no CA variable; the test CA is appended to the system bundle, bind-mounted over
  /etc/ssl/certs/ca-certificates.crt in this mount namespace only; Codex then speaks through its
  compiled-in OpenSSL (native-tls).
- ``openssl-ws``: the same, with the provider's `supports_websockets = true`: Codex first tries
  its Responses WebSocket transport, which always goes over rustls (the fake server does not
  upgrade, so Codex falls back to HTTP over OpenSSL).

    python codex_harness.py CODEX_EXE MODE {trace|run} OUT_FILE [vigil options...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: fakellm

from fakellm.codex_driver import AgentDrivingServer  # noqa: E402

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PROMPT = "Run the command the task needs."
MODEL = "gpt-5-codex"
API_KEY = "sk-test-codex-harness-0123456789abcdef"


def codex_home(url: str, websockets: bool) -> str:
    home = tempfile.mkdtemp(prefix="vigil-codex-home-")
    Path(home, "config.toml").write_text(
        f'model = "{MODEL}"\nmodel_provider = "local"\n\n[model_providers.local]\nname = "local"\n'
        f'base_url = "{url}/v1"\nenv_key = "LOCAL_API_KEY"\nwire_api = "responses"\n'
        f'supports_websockets = {str(websockets).lower()}\n')
    return home


def trust_in_system_bundle(ca_path: str, workdir: str) -> None:
    bundle = Path(workdir, "bundle.pem")
    bundle.write_text(Path(SYSTEM_BUNDLE).read_text() + Path(ca_path).read_text())
    subprocess.run(["mount", "--bind", str(bundle), SYSTEM_BUNDLE], check=True)


def main() -> int:
    exe, mode, command, out_file, *vigil_options = sys.argv[1:]
    workdir = tempfile.mkdtemp(prefix="vigil-codex-work-")
    with AgentDrivingServer(f"echo vigil-codex-tool > {out_file}") as server:
        env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "CODEX_CA_CERTIFICATE")}
        env.update(CODEX_HOME=codex_home(server.url, websockets=mode == "openssl-ws"), LOCAL_API_KEY=API_KEY, RUST_LOG="error", NO_COLOR="1")
        if mode == "rustls":
            env["CODEX_CA_CERTIFICATE"] = server.ca_path
        else:
            trust_in_system_bundle(server.ca_path, workdir)
        vigil = [sys.executable, "-m", "vigild.daemon.cli", command, "-o", "json", *vigil_options, "--",
                 exe, "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", PROMPT]
        proc = subprocess.run(vigil, env=env, cwd=workdir, capture_output=True, text=True, timeout=240)
        exchanges = [
            {"method": e.method, "path": e.path, "status": e.status, "stream": e.stream, "provider": e.provider,
             "model": e.response.model if e.response else None,
             "response_id": e.response.response_id if e.response else None,
             "input_tokens": e.response.input_tokens if e.response else None,
             "output_tokens": e.response.output_tokens if e.response else None,
             "tool_calls": [{"id": t.id, "name": t.name, "arguments": t.arguments} for t in e.response.tool_calls]
             if e.response else [],
             "request_tools": [t.get("name") for t in (e.request_json or {}).get("tools", []) if isinstance(t, dict)]
             if isinstance(e.request_json, dict) else []}
            for e in server.exchanges.snapshot()
        ]
        json.dump({"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr[-6000:],
                   "exchanges": exchanges, "server_errors": server.errors,
                   "tool_output": Path(out_file).read_text() if Path(out_file).exists() else None}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
