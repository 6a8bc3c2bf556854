"""correlate: pure-Python decoding of captured TLS plaintext into agent intent events.

No kernel access here: the uprobes deliver :class:`TlsChunk` objects, :class:`TlsStreamDecoder`
returns :class:`LlmCall`, :class:`HttpsRequest` and :class:`ParseFailure` events.
"""

from vigild.correlate.intent import Event, HttpsRequest, LlmCall, ParseFailure
from vigild.correlate.redact import REDACTED, redact_headers, redact_text, redact_url, redact_value
from vigild.correlate.tls_stream import TlsChunk, TlsStreamDecoder

__all__ = [
    "REDACTED",
    "Event",
    "HttpsRequest",
    "LlmCall",
    "ParseFailure",
    "TlsChunk",
    "TlsStreamDecoder",
    "redact_headers",
    "redact_text",
    "redact_url",
    "redact_value",
]
