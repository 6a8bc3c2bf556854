"""vigild's configuration: `/etc/vigild/config.toml` plus `conf.d/*.toml` drop-ins next to it.

Files are read with the standard `tomllib`, checked against the schema below one file at a time
(so every error can name the file and line it comes from), then merged in order: tables key by
key, the `[[agents]]` and `[[policies]]` lists appended. A wrong config is refused whole with a
`ConfigError` saying `file:line: reason`; nothing is half-applied.
"""

from __future__ import annotations

import fnmatch
import grp
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vigild.cgroups.limits import KNOBS, CallLimits, Knob
from vigild.correlate.agent_profiles import Profiles

DEFAULT_PATH = Path("/etc/vigild/config.toml")
COMM_MAX = 15  # the kernel keeps 15 bytes of a process name
GLOB_CHARS = re.compile(r"[*?\[]")
LABELS = frozenset({"agent", "provider", "model", "tool", "outcome", "type", "kind", "limit", "library", "reason",
                    "feature"})
CONTAINER_LABELS = frozenset({"namespace", "container"})
LOG_LEVELS = ("debug", "info", "warning", "error")
SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
DURATION_UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

Path_ = tuple[str | int, ...]


class ConfigError(ValueError):
    """A config file is unreadable or wrong; str() is `file:line: reason`."""

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")


@dataclass(frozen=True)
class AgentSpec:
    """Which processes are agents of one kind: an exact process name, and/or globs over the
    executable path and the command line. The kernel matches `kernel_comm` at exec; user space
    then checks the globs (`matches`).

    `relaunch` (globs over a child's script path) and `housekeeping` (globs over a child's
    command line) extend the agent profile of that name (correlate/agent_profiles.py). An entry
    with only those and a name discovers nothing: it extends the built-in profile and leaves the
    built-in discovery of that agent in place."""

    name: str
    comm: str | None = None
    exe: str | None = None
    args: str | None = None
    relaunch: tuple[str, ...] = ()
    housekeeping: tuple[str, ...] = ()

    @property
    def discovers(self) -> bool:
        return self.comm is not None or self.exe is not None

    @property
    def kernel_comm(self) -> str:
        base = self.comm if self.comm is not None else Path(self.exe or "").name
        return base.encode()[:COMM_MAX].decode(errors="ignore")

    def matches(self, comm: str, exe: str, argv: list[str]) -> bool:
        if comm.encode()[:COMM_MAX].decode(errors="ignore") != self.kernel_comm:
            return False
        if self.exe is not None and not fnmatch.fnmatchcase(exe, self.exe):
            return False
        return self.args is None or fnmatch.fnmatchcase(" ".join(argv), self.args)


@dataclass(frozen=True)
class ToolPolicy(CallLimits):
    """Limits for the tool calls whose command line matches `match` (consumed by the control
    work: per-tool-call cgroups); its knobs are `Limits`'."""

    match: str


# Real agents, as they show up in the kernel. Launched through their npm/pip entry points
# (`claude`, `codex`, `gemini` are `#!/usr/bin/env node` scripts, `aider` and `openhands` Python
# console scripts) the first exec carries the script's name as comm; started as `node .../cli.js`
# they are node processes with the package path in argv.
DEFAULT_AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec("claude", comm="claude"),
    AgentSpec("claude", exe="*/node", args="*@anthropic-ai/claude-code/*"),
    AgentSpec("codex", comm="codex"),
    AgentSpec("codex", exe="*/node", args="*@openai/codex/*"),
    AgentSpec("gemini", comm="gemini"),
    AgentSpec("gemini", exe="*/node", args="*@google/gemini-cli/*"),
    AgentSpec("qwen", comm="qwen"),
    AgentSpec("qwen", exe="*/node", args="*@qwen-code/qwen-code/*"),
    AgentSpec("opencode", comm="opencode"),
    AgentSpec("aider", comm="aider"),
    AgentSpec("openhands", comm="openhands"),
)


@dataclass(frozen=True)
class Config:
    agents: tuple[AgentSpec, ...] = DEFAULT_AGENTS
    scan_running: bool = True
    capture_tls: bool = True
    capture_content: bool = False
    capture_effects: bool = True
    # [effects]: fold a thread's repeated read-only opens of a file into counted records
    fold_opens: bool = True
    # [effects] backlog: what a burst of records may queue in vigild's memory beyond the kernel's
    # ring before the kernel sheds (and counts) effects (daemon/pipeline/reader.py; its default)
    backlog_bytes: int = 128 << 20
    max_call_bytes: int = 16 << 20
    # [detections]
    detections: frozenset[str] = frozenset({"secret_read", "secret_egress", "unrequested", "tool_loop",
                                            "write_outside_tree"})
    secret_globs: tuple[str, ...] = ()  # added to the built-in list
    unrequested_grace_s: float = 15.0  # a blind session's unrequested alert waits this long for a late link
    # [otlp]: every session is sent as a trace when it ends
    otlp_endpoint: str | None = None
    otlp_content: bool = False
    # [telemetry]: where vigild receives the agents' own OTLP/HTTP telemetry (None: not received)
    telemetry_address: tuple[str, int] | None = None
    store_path: Path = Path("/var/lib/vigild/vigil.db")
    retention_s: float | None = 30 * 86400.0
    store_max_bytes: int | None = None
    store_key_file: Path | None = None
    policies: tuple[ToolPolicy, ...] = ()
    metrics_address: tuple[str, int] | None = ("127.0.0.1", 9464)
    drop_labels: frozenset[str] = frozenset()
    max_label_values: int = 200
    container_labels: frozenset[str] = frozenset()  # "namespace", "container": names operators allow as labels
    socket_path: Path = Path("/run/vigild/vigild.sock")
    socket_group: str | None = None
    placement_warm: str = "auto"  # "off": no no-op cgroup moves ahead of placements (daemon/tools/placement_warm.py)
    favordynmods: bool = False  # cgroup2 remounted with favordynmods while placing (cgroups/dynmods.py; host-wide)
    # Opt-in: it costs ~1.3-1.7 ms per tool call under a flood for a p99 it did not lower on a quiet host (bench/README.md)
    raise_gil_holder: bool = False  # the pipeline thread real-time while a held exec waits (daemon/pipeline/gil_boost.py)
    log_level: str = "info"
    # [limits]: host-wide bounds on what an agent may declare for a tool call (None: no bound)
    bounds: CallLimits = CallLimits()
    # [tools]: the service runs each tool call of tracked agents in its own cgroup with these limits
    tools_enabled: bool = False
    tool_limits: CallLimits = CallLimits()
    # [adaptive]: memory.high follows host headroom and pressure (daemon/tools/adaptive.py)
    adaptive: bool = False
    adaptive_pressure: float = 10.0
    adaptive_headroom: float = 0.2
    adaptive_floor: int = 64 << 20
    files: tuple[Path, ...] = field(default=(), compare=False)

    @property
    def root_comms(self) -> list[str]:
        """Process names the kernel turns into session roots at exec."""
        return sorted({a.kernel_comm for a in self.agents if a.discovers})

    @property
    def profiles(self) -> Profiles:
        """The built-in agent profiles with the `relaunch`/`housekeeping` globs of [[agents]]."""
        extra: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        for spec in self.agents:
            if spec.relaunch or spec.housekeeping:
                relaunch, housekeeping = extra.get(spec.name, ((), ()))
                extra[spec.name] = (relaunch + spec.relaunch, housekeeping + spec.housekeeping)
        return Profiles().with_extensions(extra)


# ---- values ---------------------------------------------------------------------------------------

def parse_size(value: object) -> int:
    """Bytes from an int or a string like `512M`, `2GiB` (binary units, as cgroups use)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", value, re.IGNORECASE)
        if m and (m.group(2) or not value.strip().lower().endswith("ib")):
            return int(float(m.group(1)) * SIZE_UNITS[m.group(2).lower()])
    raise ValueError(f"expected a size (bytes, or a number with K/M/G/T), got {value!r}")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like `90s`, `10m`, `7d`."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", value)
        if m:
            return float(m.group(1)) * DURATION_UNITS[m.group(2) or ""]
    raise ValueError(f"expected a duration (seconds, or a number with ms/s/m/h/d), got {value!r}")


def parse_glob(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty glob string, got {value!r}")
    depth = 0
    for i, ch in enumerate(value):
        if ch == "[" and (i == 0 or value[i - 1] != "\\"):
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
    if depth:
        raise ValueError(f"glob {value!r} has an unclosed '['")
    return value


def parse_address(value: object) -> tuple[str, int] | None:
    """`HOST:PORT` (`[::1]:9464` for IPv6), or an empty string for no exporter."""
    if value == "":
        return None
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if sep and port.isdigit() and int(port) < 65536 and host:
            return host.strip("[]"), int(port)
    raise ValueError(f"expected HOST:PORT, got {value!r}")


def _typed(kind: type | tuple[type, ...], name: str) -> Callable[[object], Any]:
    def check(value: object) -> object:
        if isinstance(value, bool) and kind is not bool:
            raise ValueError(f"expected {name}, got {value!r}")
        if not isinstance(value, kind):
            raise ValueError(f"expected {name}, got {type(value).__name__} {value!r}")
        return value
    return check


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return value


def _comm(value: object) -> str:
    text = _typed(str, "a process name")(value)
    if not text or "/" in text:
        raise ValueError(f"expected a process name without '/', got {value!r}")
    return str(text)


def _group(value: object) -> str:
    name = str(_typed(str, "a group name")(value))
    try:
        grp.getgrnam(name)
    except KeyError:
        raise ValueError(f"no group named {name!r} on this host") from None
    return name


def _labels(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of label names, got {value!r}")
    unknown = sorted(set(value) - LABELS)
    if unknown:
        raise ValueError(f"unknown metric label {unknown[0]!r} (labels: {', '.join(sorted(LABELS))})")
    return frozenset(value)


def _container_labels(value: object) -> frozenset[str]:
    """Which container names may become metric labels: pod namespaces and container names are the
    operator's to expose (they can name customers or projects); the runtime always is one."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of label names, got {value!r}")
    names = frozenset(value)
    unknown = sorted(names - CONTAINER_LABELS)
    if unknown:
        raise ValueError(f"unknown container label {unknown[0]!r} (labels: {', '.join(sorted(CONTAINER_LABELS))})")
    return names


def _percent(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise ValueError(f"expected a percentage between 0 and 100, got {value!r}")
    return float(value)


def _fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"expected a fraction between 0 and 1, got {value!r}")
    return float(value)


def _level(value: object) -> str:
    if value not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return str(value)


def _warm_mode(value: object) -> str:
    from vigild.daemon.tools.placement_warm import MODES

    if value not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}, got {value!r}")
    return str(value)


def _detection_names(value: object) -> frozenset[str]:
    from vigild.correlate.detections import ALL_DETECTIONS

    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of detection names")
    unknown = set(value) - ALL_DETECTIONS
    if unknown:
        raise ValueError(f"unknown detections {sorted(unknown)}; known: {sorted(ALL_DETECTIONS)}")
    return frozenset(value)


def _globs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("expected a list of path globs")
    return tuple(parse_glob(v) for v in value)


def _command_globs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("expected a list of globs over command lines or script paths")
    return tuple(parse_glob(v) for v in value)


def _url(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return value


_BOOL = _typed(bool, "true or false")
_STR = _typed(str, "a string")

# table -> key -> (Config field, parser)
def knob_value(knob: Knob) -> Callable[[object], int]:
    """The parser of one knob's value: a size (`512M`) or an integer, in the knob's range."""

    def parse(value: object) -> int:
        if knob.unit == "size":
            number = parse_size(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        else:
            number = value
        knob.check(number)
        return number

    return parse


def _knob_keys(into: str) -> dict[str, tuple[str, Callable[[object], Any]]]:
    """A table's keys for every knob, each stored as `<into>.<knob>` (gathered by `load`)."""
    return {knob.name: (f"{into}.{knob.name}", knob_value(knob)) for knob in KNOBS}


TABLES: dict[str, dict[str, tuple[str, Callable[[object], Any]]]] = {
    "discovery": {"default_agents": ("default_agents", _BOOL), "scan_running": ("scan_running", _BOOL)},
    "capture": {"tls": ("capture_tls", _BOOL), "content": ("capture_content", _BOOL),
                "effects": ("capture_effects", _BOOL),
                "max_call_bytes": ("max_call_bytes", parse_size)},
    "effects": {"fold_opens": ("fold_opens", _BOOL), "backlog": ("backlog_bytes", parse_size)},
    "store": {"path": ("store_path", lambda v: Path(_STR(v))),
              "retention": ("retention_s", lambda v: parse_duration(v) or None),
              "max_size": ("store_max_bytes", lambda v: parse_size(v) or None),
              "key_file": ("store_key_file", lambda v: Path(_STR(v)))},
    "metrics": {"address": ("metrics_address", parse_address), "drop_labels": ("drop_labels", _labels),
                "max_label_values": ("max_label_values", _positive_int),
                "container_labels": ("container_labels", _container_labels)},
    "control": {"socket": ("socket_path", lambda v: Path(_STR(v))), "group": ("socket_group", _group),
                "placement_warm": ("placement_warm", _warm_mode), "favordynmods": ("favordynmods", _BOOL),
                "raise_gil_holder": ("raise_gil_holder", _BOOL)},
    "log": {"level": ("log_level", _level)},
    "detections": {"enabled": ("detections", _detection_names), "secret_globs": ("secret_globs", _globs),
                   "unrequested_grace": ("unrequested_grace_s", parse_duration)},
    "otlp": {"endpoint": ("otlp_endpoint", _url), "content": ("otlp_content", _BOOL)},
    "telemetry": {"receive": ("telemetry_address", parse_address)},
    "limits": {**_knob_keys("bounds"), "timeout": ("bounds.timeout_s", lambda v: parse_duration(v) or None)},
    "tools": {"enabled": ("tools_enabled", _BOOL), **_knob_keys("tool_limits"),
              "timeout": ("tool_limits.timeout_s", lambda v: parse_duration(v) or None)},
    "adaptive": {"enabled": ("adaptive", _BOOL), "pressure": ("adaptive_pressure", _percent),
                 "headroom": ("adaptive_headroom", _fraction), "floor": ("adaptive_floor", parse_size)},
}
AGENT_KEYS: dict[str, Callable[[object], Any]] = {"name": _comm, "comm": _comm, "exe": parse_glob, "args": parse_glob,
                                                  "relaunch": _command_globs, "housekeeping": _command_globs}
POLICY_KEYS: dict[str, Callable[[object], Any]] = {
    "match": parse_glob, **{knob.name: knob_value(knob) for knob in KNOBS}, "timeout": parse_duration,
}


# ---- loading --------------------------------------------------------------------------------------

def config_files(path: Path) -> list[Path]:
    """The main file, then its drop-ins in name order."""
    return [path, *sorted((path.parent / "conf.d").glob("*.toml"))]


def load(path: Path = DEFAULT_PATH, missing_ok: bool = False) -> Config:
    """The configuration from `path` and its drop-ins; built-in defaults where they say nothing.

    missing_ok: an absent main file means the defaults (a fresh install)."""
    fields: dict[str, Any] = {}
    agents: list[AgentSpec] = []
    policies: list[ToolPolicy] = []
    default_agents = True
    read: list[Path] = []
    for file in config_files(path):
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            if file == path and missing_ok:
                continue
            raise ConfigError(file, None, "no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(file, None, f"cannot read: {exc}") from None
        read.append(file)
        part = _check_file(file, text)
        default_agents = part.pop("default_agents", default_agents)  # decides the list, not a Config field
        agents += part.pop("agents", [])
        policies += part.pop("policies", [])
        fields.update(part)
    replaced = {b.name for b in agents if b.discovers}
    kept = [a for a in DEFAULT_AGENTS if a.name not in replaced] if default_agents else []
    for group in ("bounds", "tool_limits"):
        values = {key.partition(".")[2]: fields.pop(key) for key in list(fields) if key.startswith(group + ".")}
        fields[group] = CallLimits(**values)  # each value was checked against its knob as it was read
    return replace(Config(), **fields, agents=tuple(kept + agents), policies=tuple(policies), files=tuple(read))


def _check_file(file: Path, text: str) -> dict[str, Any]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _line_from_message(str(exc))
        raise ConfigError(file, line, f"TOML syntax: {str(exc).split(' (at line')[0]}") from None
    lines = key_lines(text)

    def fail(where: Path_, reason: str) -> ConfigError:
        return ConfigError(file, _find_line(lines, where), reason)

    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "agents":
            out["agents"] = [_agent(item, ("agents", i), fail) for i, item in enumerate(_table_list(value, key, fail))]
        elif key == "policies":
            out["policies"] = [_policy(item, ("policies", i), fail) for i, item in enumerate(_table_list(value, key, fail))]
        elif key in TABLES:
            if not isinstance(value, dict):
                raise fail((key,), f"[{key}] must be a table")
            for sub, subvalue in value.items():
                spec = TABLES[key].get(sub)
                if spec is None:
                    raise fail((key, sub), f"unknown key {key}.{sub} (known: {', '.join(TABLES[key])})")
                try:
                    out[spec[0]] = spec[1](subvalue)
                except ValueError as exc:
                    raise fail((key, sub), f"{key}.{sub}: {exc}") from None
        else:
            known = ", ".join(["agents", "policies", *TABLES])
            raise fail((key,), f"unknown key {key!r} (known: {known})")
    return out


def _table_list(value: object, key: str, fail: Callable[[Path_, str], ConfigError]) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise fail((key,), f"{key} must be an array of tables ([[{key}]])")
    return value


def _fields(item: dict[str, Any], where: Path_, keys: dict[str, Callable[[object], Any]],
            fail: Callable[[Path_, str], ConfigError]) -> dict[str, Any]:
    out = {}
    for key, value in item.items():
        parser = keys.get(key)
        if parser is None:
            raise fail((*where, key), f"unknown key {key!r} in [[{where[0]}]] (known: {', '.join(keys)})")
        try:
            out[key] = parser(value)
        except ValueError as exc:
            raise fail((*where, key), f"{where[0]}.{key}: {exc}") from None
    return out


def _agent(item: dict[str, Any], where: Path_, fail: Callable[[Path_, str], ConfigError]) -> AgentSpec:
    values = _fields(item, where, AGENT_KEYS, fail)
    if "name" not in values:
        raise fail(where, "an agent needs a name")
    if "comm" not in values and "exe" not in values and not (values.get("relaunch") or values.get("housekeeping")):
        raise fail(where, f"agent {values['name']!r} needs comm or exe (or, to extend its profile only, "
                          "relaunch or housekeeping)")
    if "comm" not in values and "exe" in values and GLOB_CHARS.search(Path(values["exe"]).name):
        raise fail((*where, "exe"), f"agent {values['name']!r}: the file name in exe must be literal "
                                    "(the kernel matches it as the process name), or give comm")
    return AgentSpec(**values)


def _policy(item: dict[str, Any], where: Path_, fail: Callable[[Path_, str], ConfigError]) -> ToolPolicy:
    values = _fields(item, where, POLICY_KEYS, fail)
    if "match" not in values:
        raise fail(where, "a policy needs match (a command glob)")
    high, high_max = values.get("memory_high"), values.get("memory_max")
    if high is not None and high_max is not None and high > high_max:
        raise fail((*where, "memory_high"), "memory_high is above memory_max")
    if "timeout" in values:
        values["timeout_s"] = values.pop("timeout")
    return ToolPolicy(**values)


# ---- where keys are --------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def key_lines(text: str) -> dict[Path_, int]:
    """Line numbers (1-based) of tables and keys, by their path (`("agents", 1, "comm")`);
    tomllib does not keep positions, so semantic errors find their line here."""
    found: dict[Path_, int] = {}
    prefix: Path_ = ()
    counts: dict[tuple[str, ...], int] = {}
    for number, line in _logical_lines(text):
        header = _HEADER.match(line)
        if header:
            parts = tuple(_split_key(header.group(2)))
            if header.group(1) == "[[":
                index = counts.get(parts, -1) + 1
                counts[parts] = index
                prefix = (*parts, index)
            else:
                prefix = parts
            found.setdefault(prefix, number)
            continue
        key = _KEY.match(line)
        if key:
            found.setdefault((*prefix, *_split_key(key.group(1))), number)
    return found


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines where a statement starts (skipping the continuation of multi-line strings/arrays)."""
    depth, in_multiline = 0, None
    for number, line in enumerate(text.splitlines(), 1):
        if in_multiline is None and depth == 0:
            yield number, line
        i, quote = 0, None
        while i < len(line):
            if in_multiline:
                if line.startswith(in_multiline, i):
                    in_multiline, i = None, i + 3
                    continue
            elif quote:
                if line[i] == "\\" and quote == '"':
                    i += 1
                elif line[i] == quote:
                    quote = None
            elif line.startswith(('"""', "'''"), i):
                in_multiline, i = line[i:i + 3], i + 3
                continue
            elif line[i] in "\"'":
                quote = line[i]
            elif line[i] == "#":
                break
            elif line[i] in "[{" and not _HEADER.match(line):
                depth += 1
            elif line[i] in "]}" and depth:
                depth -= 1
            i += 1


def _split_key(key: str) -> list[str]:
    return [p.strip().strip("\"'") for p in re.findall(r"""\s*("[^"]*"|'[^']*'|[^.]+)\s*\.?""", key)]


def _find_line(lines: dict[Path_, int], where: Path_) -> int | None:
    for end in range(len(where), 0, -1):
        if where[:end] in lines:
            return lines[where[:end]]
    return None


def _line_from_message(message: str) -> int | None:
    m = re.search(r"at line (\d+)", message)
    return int(m.group(1)) if m else None

