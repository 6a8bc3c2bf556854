"""How `vigil trace/run --agent-telemetry` turns on the telemetry of the agent it starts.

Each agent has its own switch: Claude Code and Gemini CLI read environment variables; Codex reads
only its config.toml, which the CLI's `-c key=value` overrides for one run, so those are added
right after the program name when the command is Codex (`codex`, or its platform binary). Prompts
are never asked for (Codex `log_user_prompt = false`; the others log prompts only when told to).
"""

from __future__ import annotations

import os

CODEX_NAMES = frozenset({"codex", "codex.js"})


def telemetry_env(endpoint: str) -> dict[str, str]:
    """Environment that makes Claude Code and Gemini CLI export OTLP/HTTP protobuf to endpoint."""
    return {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_LOGS_EXPORT_INTERVAL": "1000",
        "GEMINI_TELEMETRY_ENABLED": "true",
        "GEMINI_TELEMETRY_TARGET": "local",
        "GEMINI_TELEMETRY_OTLP_ENDPOINT": endpoint,
        "GEMINI_TELEMETRY_OTLP_PROTOCOL": "http",
        "GEMINI_TELEMETRY_LOG_PROMPTS": "false",
    }


def is_codex(argv: list[str]) -> bool:
    return bool(argv) and os.path.basename(argv[0]) in CODEX_NAMES


def codex_overrides(endpoint: str) -> list[str]:
    """`-c` options that send Codex's log events to endpoint (OTLP/HTTP, protobuf)."""
    exporter = f'{{ otlp-http = {{ endpoint = "{endpoint}/v1/logs", protocol = "binary" }} }}'
    return ["-c", f"otel.exporter={exporter}", "-c", "otel.log_user_prompt=false"]


def with_telemetry(argv: list[str], endpoint: str) -> list[str]:
    """The command, with Codex's overrides inserted when it is Codex."""
    if is_codex(argv):
        return [argv[0], *codex_overrides(endpoint), *argv[1:]]
    return list(argv)
