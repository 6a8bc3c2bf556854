"""Credential redaction for everything the correlator emits.

Agents send their API keys in every request and often paste secrets into prompts and tool
arguments. Events leave the daemon (logs, metrics backends, dashboards), so every string is
scrubbed here first: a leaked credential in an audit trail is worse than a missing one, which is
why the patterns lean towards over-redaction while the corpus test keeps ordinary words intact.

Pure functions over ``str`` / ``dict`` / ``list`` so they can be applied at the last moment
(``to_dict()``) regardless of which decoder produced the value.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections.abc import Iterable
from typing import Any

import ahocorasick_rs

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


# Why a table of our own rather than a scanner library: detect-secrets (Yelp) and gitleaks are
# line-oriented repository scanners. detect-secrets' regexes carry no literal anchor, and combined
# they cost ~1.3 ms per 4 KiB string here (every argv, path and LLM text passes through this on
# the pipeline thread); several of its shapes are too loose for prose (Artifactory, Twilio without
# boundaries). The shapes below are the issuers' documented token formats, each guarded by literal
# triggers checked at C speed, and tests/data/redaction_corpus.json holds one case per shape plus
# look-alikes that must survive.
_TOKEN_PREFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    # GitLab personal/deploy/feed/runner/CI/... tokens.
    (("glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "glcbt-", "glimt-", "glptt-", "glagent-", "gloas-"),
     r"\bgl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-[A-Za-z0-9_\-]{20,}"),
    # Stripe secret and restricted keys, webhook secrets.
    (("sk_live_", "rk_live_", "sk_test_", "rk_test_", "whsec_"), r"\b(?:[sr]k_(?:live|test)|whsec)_[0-9A-Za-z]{16,}"),
    # Hugging Face user and organisation tokens.
    (("hf_", "api_org_"), r"\b(?:hf|api_org)_[A-Za-z0-9]{30,}"),
    # npm automation/publish tokens; PyPI upload tokens (a macaroon, base64url).
    (("npm_",), r"\bnpm_[A-Za-z0-9]{36}\b"),
    (("pypi-",), r"\bpypi-[A-Za-z0-9_\-]{50,}"),
    # Docker Hub personal access tokens.
    (("dckr_pat_",), r"\bdckr_pat_[A-Za-z0-9_\-]{20,}"),
    # SendGrid API keys.
    (("SG.",), r"\bSG\.[A-Za-z0-9_\-]{16,32}\.[A-Za-z0-9_\-]{16,64}"),
    # Twilio API key SIDs and Mailgun/Mailchimp keys.
    (("SK",), r"\bSK[0-9a-fA-F]{32}\b"),
    (("key-",), r"\bkey-[0-9a-f]{32}\b"),
    (("-us",), r"\b[0-9a-f]{32}-us[0-9]{1,2}\b"),
    # Google OAuth access tokens and client secrets.
    (("ya29.",), r"\bya29\.[0-9A-Za-z_\-]{20,}"),
    (("GOCSPX-",), r"\bGOCSPX-[A-Za-z0-9_\-]{20,}"),
    # JSON Web Tokens (header and payload are base64url JSON objects: "eyJ").
    (("eyJ",), r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    # Model providers agents talk to: Groq, Replicate, xAI, Perplexity.
    (("gsk_",), r"\bgsk_[A-Za-z0-9]{30,}"),
    (("r8_",), r"\br8_[A-Za-z0-9]{30,}"),
    (("xai-",), r"\bxai-[A-Za-z0-9]{30,}"),
    (("pplx-",), r"\bpplx-[A-Za-z0-9]{30,}"),
    # Cloud and SaaS: DigitalOcean, HashiCorp Vault/Terraform, Shopify, Atlassian, Linear,
    # New Relic, age secret keys, Square.
    (("dop_v1_", "doo_v1_", "dor_v1_"), r"\bdo[por]_v1_[a-f0-9]{64}\b"),
    (("hvs.", "hvb."), r"\bhv[sb]\.[A-Za-z0-9_\-]{20,}"),
    ((".atlasv1.",), r"\b[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_\-=]{40,}"),
    (("shpat_", "shpss_", "shpca_", "shppa_"), r"\bshp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}\b"),
    (("ATATT",), r"\bATATT[A-Za-z0-9_\-=]{40,}"),
    (("lin_api_",), r"\blin_api_[A-Za-z0-9]{30,}"),
    (("NRAK-",), r"\bNRAK-[A-Z0-9]{27}\b"),
    (("AGE-SECRET-KEY-",), r"\bAGE-SECRET-KEY-1[0-9A-Z]{58}\b"),
    (("sq0csp-", "sq0atp-", "EAAA"), r"\b(?:sq0(?:csp|atp)-[0-9A-Za-z_\-]{22,}|EAAA[A-Za-z0-9_\-]{60})"),
    # Telegram bot tokens.
    ((":AA",), r"(?<![0-9])[0-9]{8,10}:AA[0-9A-Za-z_\-]{33}\b"),
)

# Names whose values are credentials in NAME=VALUE, "name": "value", name: value and --name VALUE
# forms (DB_PASSWORD=..., --api-key=..., {"client_secret": ...}). A value must look like a
# credential, not like prose or a count: see _is_credential_value. The word is found first and
# the name around it second: one regex spanning both would backtrack through every word of a
# 4 KiB text (~0.7 ms; this way ~20 µs).
# The words, lower-case; "key" covers api_key, access-key, encryption_key and apikey alike.
_SECRET_WORDS = ("passw", "pwd", "secret", "token", "key", "credential", "conn")
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_.-")
_AFTER_WORD = re.compile(r"[A-Za-z0-9_.\-]*([\"']?\s*(?:=|:=|:|=>)\s*[\"']?|\s+(?=[^\s=:]))"
                         r"(?!\[REDACTED\])([^\s\"'`,;&<>(){}\[\]]+)")
_PASSWORD_WORDS = ("passw", "pwd", "secret", "private", "credential")


def _entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _is_credential_value(name: str, separator: str, value: str) -> bool:
    """Whether the value of a NAME=VALUE pair looks like a credential.

    Passwords and secrets are often plain words ("hunter22"), so any value of four or more
    characters under such a name goes, except references ($VAR, ${...}, %s, ***). Token and key
    names are also used for counts and settings (max_tokens=1024, token_type: bearer), so their
    values must be long and random-looking: 12+ characters, a digit, and over 3 bits of entropy
    per character. Without "=" or ":" only a command-line flag (--password VALUE) assigns.
    """
    if value.startswith(("$", "%", "*", "<")) or value.lower() in ("none", "null", "true", "false"):
        return False
    if not separator.strip() and not name.startswith("-"):
        return False
    lowered = name.lower()
    if any(word in lowered for word in _PASSWORD_WORDS) or ("conn" in lowered and "str" in lowered):
        return len(value) >= 4
    return len(value) >= 12 and any(c.isdigit() for c in value) and _entropy(value) > 3.0


class _Assignments(_Rule):
    """NAME=VALUE forms: each credential word is found with str.find (C speed), then the name
    around it and the value after it are read at that spot only."""

    def __init__(self) -> None:
        super().__init__(_SECRET_WORDS, r"(?!)", "", lower=True)

    def apply(self, text: str, lowered: str) -> str:
        spots = sorted({at for word in self.triggers for at in _find_all(lowered, word)})
        if not spots:
            return text
        pieces: list[str] = []
        done = 0
        for at in spots:
            if at < done:
                continue
            start = at
            while start > done and text[start - 1] in _NAME_CHARS:
                start -= 1
            after = _AFTER_WORD.match(text, at)
            if after is None:
                continue
            name = text[start:after.start(1)]
            if _is_credential_value(name, after.group(1), after.group(2)):
                pieces.append(text[done:after.start(2)])
                pieces.append(REDACTED)
                done = after.end(2)
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)


def _find_all(haystack: str, needle: str) -> list[int]:
    found = []
    at = haystack.find(needle)
    while at >= 0:
        found.append(at)
        at = haystack.find(needle, at + 1)
    return found


# A bare AWS secret access key: 40 characters of base64 with upper, lower and digits and a
# random-looking spread (git SHAs are 40 characters too, but hex: under 4 bits per character).
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


class _BareAwsSecret(_Rule):
    def __init__(self) -> None:
        super().__init__((), _AWS_SECRET.pattern, "")

    def apply(self, text: str, lowered: str) -> str:
        # search first: most texts (every path) hold no candidate, and a sub with a callback costs
        # a closure and the sub's own setup on top of the same scan. A text its lower-cased copy
        # equals has no upper-case letter, which every key this redacts has: most paths, no scan.
        if len(text) < 40 or text == lowered or self.regex.search(text) is None:
            return text

        def replace(match: re.Match[str]) -> str:
            value = match.group(0)
            if (any(c.isupper() for c in value) and any(c.islower() for c in value)
                    and any(c.isdigit() for c in value) and _entropy(value) > 4.2):
                return REDACTED
            return value
        return self.regex.sub(replace, text)


_RULES: tuple[_Rule, ...] = (
    # PEM private keys, also when the capture was cut before the END line; PuTTY key files.
    _Rule(
        ("PRIVATE KEY-----",),
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY-----|.*\Z)",
        REDACTED,
        flags=re.DOTALL,
    ),
    _Rule(("PuTTY-User-Key-File",), r"PuTTY-User-Key-File-\d.*\Z", REDACTED, flags=re.DOTALL),
    # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-api03-...), OpenRouter (sk-or-v1-)
    # keys. Real keys always contain a digit; requiring one keeps hyphenated words such as
    # "sk-learn-tutorial" intact.
    _Rule(("sk-",), r"\bsk-(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{20,}", REDACTED),
    # Google API keys have a fixed shape: "AIza" + 35 characters.
    _Rule(("AIza",), r"\bAIza[0-9A-Za-z_\-]{35}", REDACTED),
    # AWS access key ids (long-term AKIA, temporary ASIA).
    _Rule(("AKIA", "ASIA"), r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", REDACTED),
    # AWS secret keys in their assignment form (any length, any quoting).
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
    # Slack bot/user/app tokens and incoming webhooks; Discord webhooks.
    _Rule(("xox",), r"\bxox[abposr]-[A-Za-z0-9\-]{10,}", REDACTED),
    _Rule(("hooks.slack.com",), r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9_/\-]+",
          r"\g<1>" + REDACTED),
    _Rule(("/api/webhooks/",), r"(/api/webhooks/[0-9]+/)[A-Za-z0-9_\-]+", r"\g<1>" + REDACTED),
    *(_Rule(triggers, pattern, REDACTED) for triggers, pattern in _TOKEN_PREFIXES),
    # Azure storage/service bus connection strings and SAS signatures.
    _Rule(
        ("accountkey=", "sharedaccesskey=", "sharedaccesssignature="),
        r"(?i)((?:AccountKey|SharedAccessKey|SharedAccessSignature)=)[^;\s\"']+",
        r"\g<1>" + REDACTED,
        lower=True,
    ),
    # URLs with a password in their userinfo: postgres://user:pass@host, https://u:p@proxy.
    _Rule(("://",), r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@\"']*:)(?!\[REDACTED\])[^/\s@\"']+(?=@)",
          r"\g<1>" + REDACTED),
    # .npmrc auth lines: //registry.npmjs.org/:_authToken=...
    _Rule(("_authtoken=", "_auth=", "_password="), r"(?i)(:_(?:authToken|auth|password)=)\S+",
          r"\g<1>" + REDACTED, lower=True),
    # "Bearer <token>" / "Basic <credentials>" anywhere (curl commands in tool arguments, logs).
    _Rule(("bearer", "basic "), r"(?i)\b((?:bearer|basic)\s+)(?!\[REDACTED\])[A-Za-z0-9\-._~+/]{8,}=*",
          r"\g<1>" + REDACTED, lower=True),
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
    _Assignments(),
    _BareAwsSecret(),
)


class _Triggers:
    """Every rule's triggers in one Aho-Corasick automaton (ahocorasick-rs, Rust), each naming
    (indices of the rules that look for it in the text itself, indices of those that look for it
    in the lower-cased text). Asking each rule in turn costs ~18 µs for a 60-character path,
    which every file effect of a tracked tree carries; pyahocorasick's automaton ~1.5 µs (its
    nodes find a child by a linear scan, ~100 instructions a character), this one ~0.6 µs."""

    def __init__(self, rules: tuple[_Rule, ...]) -> None:
        owners: dict[str, tuple[list[int], list[int]]] = {}
        for index, rule in enumerate(rules):
            for trigger in rule.triggers:
                owners.setdefault(trigger, ([], []))[1 if rule.lower else 0].append(index)
        self.rules = [(tuple(cased), tuple(lower)) for cased, lower in owners.values()]
        self.automaton = ahocorasick_rs.AhoCorasick(list(owners), implementation=ahocorasick_rs.Implementation.DFA)

_SEPARATOR = "\0"  # between the text and its lower-cased copy: in no trigger, so no match spans both
_TRIGGERS = _Triggers(_RULES)
_UNTRIGGERED = tuple(rule for rule in _RULES if not rule.triggers)  # the bare AWS secret: a shape, no word


def _rules_for(text: str, lowered: str) -> tuple[_Rule, ...] | list[_Rule]:
    """The rules that can change `text`, in their order: those whose trigger it holds, and those
    without one. A redaction writes only REDACTED and text that was there, so it never makes a
    later rule's trigger appear (and a rule whose trigger it removed finds none and does nothing)."""
    # One automaton pass over the text and its lower-cased copy joined (one call instead of two:
    # the call is a good part of what a path costs here): a match ending in the first part names
    # the rules that look in the text, one in the second those that look in the copy. Inline, not
    # a method of _Triggers: a frame less for every path of every file effect.
    matches = _TRIGGERS.automaton.find_matches_as_indexes(f"{text}{_SEPARATOR}{lowered}", overlapping=True)
    if not matches:
        return _UNTRIGGERED
    hit: set[int] = set()
    cut = len(text)
    rules = _TRIGGERS.rules
    for index, _start, end in matches:
        cased, lower = rules[index]
        hit.update(cased if end <= cut else lower)
    return [rule for index, rule in enumerate(_RULES) if index in hit or not rule.triggers]


def redact_text(text: str) -> str:
    """Return ``text`` with every recognised credential replaced by :data:`REDACTED`.

    Short strings (paths, arguments, labels) repeat across events: a Python agent opens the same
    few thousand files in every process it starts. They are answered from a cache.
    """
    if len(text) <= _CACHED_MAX_CHARS:
        return _redact_short(text)
    return _redact(text)


_CACHED_MAX_CHARS = 512


@functools.lru_cache(maxsize=32768)
def _redact_short(text: str) -> str:
    return _redact(text)


def _redact(text: str) -> str:
    lowered = text.lower()
    for rule in _rules_for(text, lowered):
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
