"""Credential redaction for everything the correlator emits.

Agents send their API keys in every request and often paste secrets into prompts and tool
arguments. Events leave the daemon (logs, metrics backends, dashboards), so every string is
scrubbed here first: a leaked credential in an audit trail is worse than a missing one, which is
why the patterns lean towards over-redaction while the corpus test keeps ordinary words intact.

Pure functions over ``str`` / ``dict`` / ``list`` so they can be applied at the last moment
(``to_dict()``) regardless of which decoder produced the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"

# Header names whose values are credentials whatever they look like.
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
    }
)

# JSON object keys (compared lower-case with '-' folded to '_') whose string values are
# credentials: tool arguments such as {"password": "..."} carry no recognisable prefix.
_SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "x_api_key",
        "api_key",
        "apikey",
        "x_goog_api_key",
        "cookie",
        "set_cookie",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "access_token",
        "refresh_token",
        "id_token",
        "aws_secret_access_key",
        "private_key",
    }
)


class _Rule:
    """One credential shape: a cheap substring trigger guards a regex pass over the text.

    The trigger check runs at C speed, so a 10 MB response body without any ``sk-`` in it costs
    one ``in`` test instead of a regex scan per rule.
    """

    __slots__ = ("triggers", "lower", "regex", "replacement")

    def __init__(self, triggers: tuple[str, ...], pattern: str, replacement: str, *, lower: bool = False,
                 flags: int = 0) -> None:
        self.triggers = triggers
        self.lower = lower
        self.regex = re.compile(pattern, flags)
        self.replacement = replacement

    def apply(self, text: str, lowered: str) -> str:
        haystack = lowered if self.lower else text
        if not any(t in haystack for t in self.triggers):
            return text
        return self.regex.sub(self.replacement, text)


_RULES: tuple[_Rule, ...] = (
    # PEM private keys, also when the capture was cut before the END line.
    _Rule(
        ("PRIVATE KEY-----",),
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY-----|.*\Z)",
        REDACTED,
        flags=re.DOTALL,
    ),
    # OpenAI (sk-, sk-proj-, sk-svcacct-) and Anthropic (sk-ant-api03-...) keys. Real keys always
    # contain a digit; requiring one keeps hyphenated words such as "sk-learn-tutorial" intact.
    _Rule(("sk-",), r"\bsk-(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{20,}", REDACTED),
    # Google API keys have a fixed shape: "AIza" + 35 characters.
    _Rule(("AIza",), r"\bAIza[0-9A-Za-z_\-]{35}", REDACTED),
    # AWS access key ids (long-term AKIA, temporary ASIA).
    _Rule(("AKIA", "ASIA"), r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", REDACTED),
    # AWS secret keys have no prefix; only the assignment form is recognisable.
    _Rule(
        ("aws_secret_access_key",),
        r"(?i)(aws_secret_access_key[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9/+=]{16,}",
        r"\g<1>" + REDACTED,
        lower=True,
    ),
    # GitHub classic (ghp_/gho_/ghu_/ghs_/ghr_) and fine-grained (github_pat_) tokens.
    _Rule(
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
        REDACTED,
    ),
    # Slack bot/user/app tokens.
    _Rule(("xox",), r"\bxox[abposr]-[A-Za-z0-9\-]{10,}", REDACTED),
    # "Bearer <token>" anywhere (curl commands in tool arguments, logs pasted into prompts).
    _Rule(("bearer",), r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]{8,}=*", r"\g<1>" + REDACTED, lower=True),
    # Header lines quoted in text ("-H 'x-api-key: ...'"): the value has no shape of its own.
    _Rule(
        ("authorization", "api-key", "api_key"),
        r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-goog-api-key)([\"']?\s*:\s*[\"']?)(?!\[REDACTED\])"
        r"(?:(bearer|basic)\s+)?[^\s\"',;]+",
        r"\g<1>\g<2>" + REDACTED,
        lower=True,
    ),
    # Credentials passed in URL query strings (?key=..., &access_token=...).
    _Rule(
        ("key=", "token=", "secret=", "password=", "sig="),
        r"(?i)([?&;](?:key|api_key|apikey|api-key|access_token|token|client_secret|password|sig)=)"
        r"[^&#\s\"']+",
        r"\g<1>" + REDACTED,
        lower=True,
    ),
)


def redact_text(text: str) -> str:
    """Return ``text`` with every recognised credential replaced by :data:`REDACTED`."""
    lowered = text.lower()
    for rule in _RULES:
        redacted = rule.apply(text, lowered)
        if redacted is not text:
            text = redacted
            lowered = text.lower()
    return text


def _sensitive_key(key: str) -> bool:
    return key.lower().replace("-", "_") in _SENSITIVE_KEYS


def redact_value(value: Any) -> Any:
    """Redact recursively through dicts, lists and tuples; return a new structure.

    String values under credential-named keys are replaced whole; every other string goes through
    :func:`redact_text`. Keys themselves are scrubbed too (a JSON object can be keyed by a token).
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                if _sensitive_key(key) and isinstance(item, str):
                    out[redact_text(key)] = REDACTED
                    continue
                key = redact_text(key)
            out[key] = redact_value(item)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_value(item) for item in value]
    return value


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Replace the values of credential headers; scrub the others like any text."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if name.lower() in SENSITIVE_HEADERS:
            out.append((name, REDACTED))
        else:
            out.append((name, redact_text(value)))
    return out


def redact_url(target: str) -> str:
    """Redact a request target: credential query parameters and credential-shaped path parts."""
    return redact_text(target)
