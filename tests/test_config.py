"""vigild's configuration: defaults, drop-ins, agent matching, and errors that name file and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vigild.daemon.config import (
    DEFAULT_AGENTS,
    AgentSpec,
    Config,
    ConfigError,
    load,
    parse_duration,
    parse_size,
)
from vigild.daemon.pipeline.reader import DEFAULT_BACKLOG_BYTES
from vigild.daemon.service.agents import AgentMatcher

EX_CONFIG = 78


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path)
    return info.value


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config = load(tmp_path / "config.toml", missing_ok=True)
    assert config.agents == DEFAULT_AGENTS
    assert {"claude", "codex", "gemini", "aider", "openhands", "node"} <= set(config.root_comms)
    assert config.metrics_address == ("127.0.0.1", 9464)
    assert not config.capture_content


def test_the_example_config_is_valid(tmp_path: Path) -> None:
    config = load(Path(__file__).parent.parent / "daemon" / "config.example.toml")
    assert config.agents == DEFAULT_AGENTS and config.retention_s == 30 * 86400


def test_full_config_and_drop_ins(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", """
[[agents]]
name = "mine"
comm = "my-agent"

[[agents]]
name = "claude"              # replaces the built-in claude entries
exe = "/opt/*/bin/node"      # a glob before the literal file name
args = "*claude*"

[capture]
content = true
max_call_bytes = "2MiB"

[effects]
fold_opens = false
backlog = "32MiB"

[store]
path = "/tmp/x.db"
retention = "7d"

[[policies]]
match = "pytest*"
memory_high = "1G"
memory_max = "1.5GiB"
pids_max = 256
cpu_weight = 50
timeout = "90s"

[metrics]
address = "[::1]:9999"
drop_labels = ["model", "tool"]

[control]
group = "nogroup"
raise_gil_holder = true
""")
    write(tmp_path / "conf.d" / "10-more.toml", """
[[agents]]
name = "other"
comm = "other-agent"

[metrics]
address = "127.0.0.1:9100"
""")
    config = load(main)
    names = [a.name for a in config.agents]
    assert names.count("claude") == 1 and {"mine", "other", "codex"} <= set(names)
    assert "node" in config.root_comms and "my-agent" in config.root_comms
    assert config.capture_content and config.max_call_bytes == 2 << 20
    assert not config.fold_opens and Config().fold_opens  # on unless turned off
    assert config.backlog_bytes == 32 << 20 and Config().backlog_bytes == DEFAULT_BACKLOG_BYTES
    assert config.retention_s == 7 * 86400
    assert config.raise_gil_holder and not Config().raise_gil_holder  # opt-in
    (policy,) = config.policies
    assert (policy.memory_high, policy.memory_max, policy.pids_max, policy.cpu_weight, policy.timeout_s) == (
        1 << 30, 3 << 29, 256, 50, 90.0)
    assert config.metrics_address == ("127.0.0.1", 9100)  # the drop-in wins
    assert config.drop_labels == {"model", "tool"}
    assert config.files == (main, tmp_path / "conf.d" / "10-more.toml")


def test_agent_matching() -> None:
    matcher = AgentMatcher([AgentSpec("gemini", exe="*/node", args="*@google/gemini-cli/*"),
                            AgentSpec("claude", comm="claude"),
                            AgentSpec("long", comm="a-very-long-agent-name")])
    assert matcher.match("node", "/usr/bin/node", ["node", "/usr/lib/node_modules/@google/gemini-cli/dist/index.js"]) == "gemini"
    assert matcher.match("node", "/usr/bin/node", ["node", "server.js"]) is None
    assert matcher.match("claude", "/usr/local/bin/claude", ["claude"]) == "claude"
    assert matcher.match("a-very-long-ag", "/x", []) is None
    assert matcher.match("a-very-long-age", "/x", []) == "long"  # the kernel's 15 bytes


def test_units() -> None:
    assert parse_size("512M") == 512 << 20 and parse_size("2GiB") == 2 << 30 and parse_size(1024) == 1024
    assert parse_duration("10m") == 600 and parse_duration(1.5) == 1.5 and parse_duration("250ms") == 0.25
    for bad in ("12 parsecs", "-1", "1iB", True):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[capture]\ncontent = true\nmax_call_bytes = = 3\n')
    err = error_of(path)
    assert (err.path, err.line) == (path, 3)
    assert str(err).startswith(f"{path}:3: TOML syntax")


def test_wrong_type_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '# comment\n\n[capture]\ntls = true\ncontent = "yes"\n')
    err = error_of(path)
    assert err.line == 5 and "capture.content" in err.reason and "true or false" in err.reason


def test_unknown_key_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", """
[[agents]]
name = "a"
comm = "a"

[[agents]]
name = "b"
comm = "b"
command = "b"
""")
    err = error_of(path)
    assert err.line == 9 and "unknown key 'command'" in err.reason
    path = write(tmp_path / "config.toml", "[metric]\naddress = '1.2.3.4:5'\n")
    err = error_of(path)
    assert err.line == 1 and "unknown key 'metric'" in err.reason


def test_bad_glob_and_size_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", """
[[policies]]
match = "make*"
memory_max = "2G"

[[policies]]
match = "py[test*"
""")
    err = error_of(path)
    assert err.line == 7 and "unclosed '['" in err.reason
    path = write(tmp_path / "config.toml", """
[[policies]]
match = "make*"
memory_max = [
  "not", "a size",
]
""")
    err = error_of(path)
    assert err.line == 4 and "memory_max" in err.reason and "size" in err.reason


def test_semantic_errors(tmp_path: Path) -> None:
    cases = {
        '[[agents]]\nname = "x"\nexe = "/usr/bin/no*de"\n': (3, "must be literal"),
        '[[agents]]\nname = "x"\n': (1, "needs comm or exe"),
        '[[agents]]\nname = "x"\nhousekeeping = "git *"\n': (3, "list of globs"),
        '[[policies]]\nmatch = "x"\nmemory_high = "2G"\nmemory_max = "1G"\n': (3, "above memory_max"),
        '[control]\ngroup = "no-such-group-here"\n': (2, "no group named"),
        '[metrics]\ndrop_labels = ["pid"]\n': (2, "unknown metric label 'pid'"),
        '[metrics]\naddress = "localhost"\n': (2, "HOST:PORT"),
    }
    for text, (line, reason) in cases.items():
        err = error_of(write(tmp_path / "config.toml", text))
        assert err.line == line and reason in err.reason, (text, err)


def test_error_in_a_drop_in_names_the_drop_in(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", "[log]\nlevel = 'info'\n")
    drop_in = write(tmp_path / "conf.d" / "20-bad.toml", "[log]\n\nlevel = 'loud'\n")
    err = error_of(main)
    assert (err.path, err.line) == (drop_in, 3)


def test_check_config_cli(tmp_path: Path) -> None:
    vigild = [sys.executable, "-m", "vigild.daemon.service"]
    good = write(tmp_path / "good.toml", "[log]\nlevel = 'debug'\n")
    ok = subprocess.run([*vigild, "--config", str(good), "--check-config"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "configuration OK" in ok.stdout
    bad = write(tmp_path / "bad.toml", "[store]\nretention = '1 fortnight'\n")
    res = subprocess.run([*vigild, "--config", str(bad), "--check-config"], capture_output=True, text=True, check=False)
    assert res.returncode == EX_CONFIG
    assert f"{bad}:2: store.retention" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    missing = subprocess.run([*vigild, "--config", str(tmp_path / "nope.toml"), "--check-config"],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == EX_CONFIG and "no such file" in missing.stderr


def test_agents_extend_profiles_without_replacing_discovery(tmp_path: Path) -> None:
    from vigild.correlate.agent_profiles import HOUSEKEEPING, RELAUNCH, TOOL, Proc

    config = load(write(tmp_path / "config.toml", """
[[agents]]
name = "claude"
housekeeping = ["make -n *"]

[[agents]]
name = "mine"
comm = "mine"
relaunch = ["*/mine/worker.py"]
housekeeping = ["probe --quick"]
"""))
    assert [a for a in config.agents if a.name == "claude" and a.discovers] == [
        a for a in DEFAULT_AGENTS if a.name == "claude"]
    assert "mine" in config.root_comms and "" not in config.root_comms
    profiles = config.profiles
    claude = profiles.profile_named("claude")
    assert claude is not None and "make -n *" in claude.housekeeping and "/bin/bash -c env" in claude.housekeeping
    agent = Proc("/usr/bin/python3", ["python3", "/opt/mine/main.py"])
    mine = profiles.profile_named("mine")
    assert profiles.classify(Proc("/usr/bin/python3", ["python3", "/opt/mine/worker.py"]), agent, mine) == RELAUNCH
    assert profiles.classify(Proc("/usr/bin/probe", ["probe", "--quick"]), agent, mine) == HOUSEKEEPING
    assert profiles.classify(Proc("/usr/bin/probe", ["probe", "--slow"]), agent, mine) == TOOL
