"""Four streaming LLM calls in flight at once from one process.

Two Anthropic ``messages.stream`` calls and two OpenAI chat streams run on four threads, started
together behind a barrier.  By default every thread has its own SDK client, hence its own TLS
connection — the tracer must keep four interleaved SSL streams of one PID apart.  With
``--http2`` all four share one HTTP/2 client, so they are multiplexed as concurrent streams on a
single connection instead.

Each request carries ``x-client-tag: stream-N`` so a test can pair the printed results with the
server's exchanges.  The default scenario is ``slow`` (delayed, spaced events) so that the
streams really overlap.  Prints ``{"streams": [...]}`` ordered by N, each with ``tag, api,
stream, id, model, text, tool_calls, input_tokens, output_tokens, finish_reason, t_start, t_end``.

Run: ``python concurrent_streams.py --url URL --ca ca.pem [--http2]`` (or ``FAKELLM_URL`` /
``FAKELLM_CA``).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import anthropic
import httpx2
import openai
from _common import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, anthropic_summary, emit, parse_args, tls_context

STREAMS = 4


def anthropic_stream(http: httpx2.Client, url: str, headers: dict[str, str]) -> dict[str, Any]:
    client = anthropic.Anthropic(base_url=url, api_key=FAKE_ANTHROPIC_KEY, http_client=http, max_retries=0)
    with client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=512,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers=headers,
    ) as stream:
        message = stream.get_final_message()
    return anthropic_summary(message, stream=True)


def openai_stream(http: httpx2.Client, url: str, headers: dict[str, str]) -> dict[str, Any]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=FAKE_OPENAI_KEY, http_client=http, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    )
    result: dict[str, Any] = {"api": "chat", "stream": True, "text": "", "finish_reason": None}
    calls: dict[int, dict[str, Any]] = {}
    for chunk in stream:
        result["id"], result["model"] = chunk.id, chunk.model
        if chunk.usage is not None:
            result["input_tokens"] = chunk.usage.prompt_tokens
            result["output_tokens"] = chunk.usage.completion_tokens
        for choice in chunk.choices:
            result["text"] += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function:
                    slot["name"] = tc.function.name or slot["name"]
                    slot["arguments"] += tc.function.arguments or ""
            result["finish_reason"] = choice.finish_reason or result["finish_reason"]
    result["tool_calls"] = [
        {"id": c["id"], "name": c["name"], "arguments": json.loads(c["arguments"])}
        for _, c in sorted(calls.items())
    ]
    return result


def main() -> None:
    http2 = "--http2" in sys.argv
    if http2:
        sys.argv.remove("--http2")
    args = parse_args(__doc__ or "")
    scenario = args.scenario or "slow"
    results: list[dict[str, Any] | None] = [None] * STREAMS
    failures: list[str] = []
    barrier = threading.Barrier(STREAMS)
    shared = httpx2.Client(verify=tls_context(args.ca), http2=True) if http2 else None

    def worker(n: int) -> None:
        http = shared or httpx2.Client(verify=tls_context(args.ca))
        headers = {"x-client-tag": f"stream-{n}", "x-fake-scenario": scenario}
        try:
            barrier.wait()
            t_start = time.time()
            run = anthropic_stream if n % 2 == 0 else openai_stream
            result = run(http, args.url, headers)
            results[n] = {"tag": f"stream-{n}", "t_start": t_start, "t_end": time.time(), **result}
        except Exception as exc:  # reported below; the process exit code says it failed
            failures.append(f"stream-{n}: {exc!r}")
        finally:
            if shared is None:
                http.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(STREAMS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if shared is not None:
        shared.close()
    if failures:
        raise SystemExit("; ".join(failures))
    emit({"http2": http2, "streams": results})


if __name__ == "__main__":
    main()
