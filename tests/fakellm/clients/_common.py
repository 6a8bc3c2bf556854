"""Shared plumbing of the Python client scripts: arguments, fake API keys, TLS trust, output.

The scripts are run as programs (``python clients/x.py``) so this module is imported as a
top-level module from the script's directory; the ``fakellm`` package re-exports the keys.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from typing import Any

FAKE_OPENAI_KEY = "sk-proj-" + "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8dKLzd"
"""Looks like a real project key (``sk-proj-`` + 40 chars) so redaction tests can hunt for it."""

FAKE_ANTHROPIC_KEY = (
    "sk-ant-api03-"
    "CfrL1spNxnyVmihA_2O76UMFxFkM_R5Kjp1vRt-1fjORS_6ilI8ihN5KXSc7"
    "Tvo_hBKqFYY_kv5ZJr3J1TWDtkwtDDb-xAA"
)
"""Same shape as a real Anthropic key (``sk-ant-api03-`` + 95 chars ending in ``AA``)."""


def parse_args(description: str) -> argparse.Namespace:
    """``--url``/``--ca`` with ``FAKELLM_URL``/``FAKELLM_CA`` (then ``SSL_CERT_FILE``) fallbacks."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", default=os.environ.get("FAKELLM_URL"), help="server base URL")
    parser.add_argument(
        "--ca",
        default=os.environ.get("FAKELLM_CA") or os.environ.get("SSL_CERT_FILE"),
        help="CA certificate (PEM) to trust",
    )
    parser.add_argument("--scenario", default=os.environ.get("FAKELLM_SCENARIO"), help="x-fake-scenario")
    args = parser.parse_args()
    if not args.url or not args.ca:
        parser.error("--url and --ca (or FAKELLM_URL and FAKELLM_CA) are required")
    args.url = args.url.rstrip("/")
    return args


def tls_context(ca_path: str) -> ssl.SSLContext:
    """A verifying client context trusting only the fake CA — the SDKs' normal OpenSSL path."""
    return ssl.create_default_context(cafile=ca_path)


def scenario_headers(scenario: str | None) -> dict[str, str]:
    """Extra request headers selecting a server scenario, if one was asked for."""
    return {"x-fake-scenario": scenario} if scenario else {}


def emit(summary: dict[str, Any]) -> None:
    """Print the summary as one JSON document on stdout (the test parses it)."""
    json.dump(summary, sys.stdout, ensure_ascii=False, sort_keys=True)
    sys.stdout.write("\n")
    sys.stdout.flush()


def anthropic_summary(message: Any, stream: bool) -> dict[str, Any]:
    """What the anthropic SDK reconstructed from a Message, in the fields tests compare."""
    return {
        "api": "messages",
        "stream": stream,
        "id": message.id,
        "model": message.model,
        "text": "".join(b.text for b in message.content if b.type == "text"),
        "tool_calls": [
            {"id": b.id, "name": b.name, "arguments": b.input}
            for b in message.content
            if b.type == "tool_use"
        ],
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
        "finish_reason": message.stop_reason,
    }
