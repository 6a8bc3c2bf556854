"""A local HTTPS fake of the LLM APIs, plus real client programs, for end-to-end tracer tests.

Typical use::

    from fakellm import FakeLLMServer, client_env, CLIENTS_DIR

    with FakeLLMServer() as server:
        subprocess.run([sys.executable, CLIENTS_DIR / "openai_client.py"],
                       env=client_env(server), check=True, capture_output=True)
        for exchange in server.exchanges.wait_finished(4):
            ...  # compare exchange.response with what the tracer decoded

Per request the scenario is chosen by the ``x-fake-scenario`` header, otherwise by
``server.default_scenario`` (see :mod:`fakellm.scripts`).

curl needs no script (``$URL`` is ``server.url``, ``$CA`` is ``server.ca_path``)::

    curl -sS --cacert "$CA" --http1.1 "$URL/v1/messages" \\
         -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \\
         -H 'x-api-key: sk-ant-api03-…' \\
         -d '{"model":"claude-sonnet-4-6","max_tokens":1024,"stream":true,
              "messages":[{"role":"user","content":"hi"}]}'
    curl -sS --cacert "$CA" --http2 "$URL/v1/chat/completions" \\
         -H 'content-type: application/json' -H 'authorization: Bearer sk-proj-…' \\
         -d '{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}'
    curl -sS --cacert "$CA" --http2 "$URL/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse" \\
         -H 'content-type: application/json' -H 'x-goog-api-key: AIza…' \\
         -d '{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}'
    curl -sS --cacert "$CA" --http1.1 "$URL/simple/requests/"      # not an LLM call

(``--compressed`` makes curl ask for gzip, which the ``gzip_chunked`` scenario then uses.)
curl uses the system ``libcurl.so.4`` → ``libssl.so.3`` (``SSL_write`` / ``SSL_read``); Node
links OpenSSL statically into the ``node`` binary; CPython's ``_ssl`` module uses
``libssl.so.3``'s ``SSL_write_ex`` / ``SSL_read_ex``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .certs import CertPaths, generate_certs
from .clients._common import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY
from .providers import LLMResponse, ToolCallRecord
from .scripts import (
    DEFAULT_TEXT,
    DEFAULT_TOOL_CALLS,
    DELAY_HEADER,
    PROVIDERS,
    SCENARIO_HEADER,
    SCENARIOS,
    Reply,
    Scenario,
    ToolCallSpec,
)
from .server import Exchange, ExchangeLog, FakeLLMServer

CLIENTS_DIR = Path(__file__).resolve().parent / "clients"
"""Directory of the client programs (``openai_client.py``, ``node_fetch.js`` …)."""


def client_env(server: FakeLLMServer, scenario: str | None = None) -> dict[str, str]:
    """Environment for a client process: where the server is and which CA to trust.

    Sets the variables each client family reads — ``FAKELLM_URL``/``FAKELLM_CA`` for our
    scripts, ``SSL_CERT_FILE`` for Python/OpenSSL defaults, ``NODE_EXTRA_CA_CERTS`` for Node,
    ``CURL_CA_BUNDLE`` for curl, and the fake API keys (``FAKELLM_OPENAI_KEY`` /
    ``FAKELLM_ANTHROPIC_KEY``, read by ``node_fetch.js``) — on top of the current environment.
    """
    env = dict(os.environ)
    env.update(
        FAKELLM_URL=server.url,
        FAKELLM_CA=server.ca_path,
        SSL_CERT_FILE=server.ca_path,
        NODE_EXTRA_CA_CERTS=server.ca_path,
        CURL_CA_BUNDLE=server.ca_path,
        FAKELLM_OPENAI_KEY=FAKE_OPENAI_KEY,
        FAKELLM_ANTHROPIC_KEY=FAKE_ANTHROPIC_KEY,
    )
    if scenario is not None:
        env["FAKELLM_SCENARIO"] = scenario
    return env


__all__ = [
    "CLIENTS_DIR",
    "DEFAULT_TEXT",
    "DEFAULT_TOOL_CALLS",
    "DELAY_HEADER",
    "FAKE_ANTHROPIC_KEY",
    "FAKE_OPENAI_KEY",
    "PROVIDERS",
    "SCENARIOS",
    "SCENARIO_HEADER",
    "CertPaths",
    "Exchange",
    "ExchangeLog",
    "FakeLLMServer",
    "LLMResponse",
    "Reply",
    "Scenario",
    "ToolCallRecord",
    "ToolCallSpec",
    "client_env",
    "generate_certs",
]
