"""What an agent's own process tree looks like: which of its children continue the agent, which
are the agent's housekeeping, and which are the tool calls the model asked for.

A process a controlled agent forks and that execs is, by default, a tool call. Real agents also
spawn processes for themselves, and this module tells those apart, from the command line alone:

- **relaunch**: a child that runs the agent's own interpreter and script again with new flags
  (Gemini CLI `node --max-old-space-size=… gemini.js`, qwen-code `node --expose-gc cli.js`)
  *is* the agent. Generic rule: same executable and same script path as its parent (after
  resolving symlinks), for interpreted agents (a native executable re-running itself is a
  helper mode, e.g. Codex's `--codex-run-as-process-setup`, which then execs the tool); a
  profile can add script globs for an agent whose relaunch runs a sibling script of its package.
- **housekeeping**: environment probes, shell snapshots, VCS queries and the like, by a glob over
  the command line (argv joined with spaces) per profile, plus helpers that language runtimes
  spawn under any agent (Python's ctypes runs `ldconfig -p`). A housekeeping process and its
  descendants are agent activity: neither a tool call nor an `unrequested` alert. A command the
  model did ask for is never housekeeping (checked by the caller against pending intents).
- **tool**: everything else.

Profiles are data (`DEFAULT_PROFILES`), extended per agent name by vigild's `[[agents]]` config
(`housekeeping`, `relaunch` keys). Pure: no /proc, no kernel; paths are resolved only through
the `resolve` function given (the caller's view of the process's filesystem).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

RELAUNCH = "relaunch"
HOUSEKEEPING = "housekeeping"
TOOL = "tool"

# Interpreters whose first non-flag argument is the program that runs (the "script").
INTERPRETERS = ("node", "nodejs", "bun", "deno", "python", "python3", "ruby", "perl")

# Spawned by language runtimes whatever the agent: Python's ctypes.util.find_library (ldconfig -p,
# then `gcc -Wl,-t -o TMP -lNAME` and `objdump -p -j .dynamic` on what it finds, then `ld -t`) and
# its platform module (`uname -p`).
RUNTIME_HOUSEKEEPING: tuple[str, ...] = (
    "/sbin/ldconfig -p", "/usr/sbin/ldconfig -p", "ldconfig -p",
    "*/gcc -Wl,-t -o /tmp/* -l*", "*/objdump -p -j .dynamic *", "ld -t *-l*",
    "uname -p",
)


@dataclass(frozen=True)
class AgentProfile:
    """How one agent kind looks from the kernel: `match` globs over the agent process's command
    line (argv joined with spaces) recognise it; `relaunch` globs over a child's script path mark
    a re-execution of the agent; `housekeeping` globs over a child's command line mark its own
    helpers."""

    name: str
    match: tuple[str, ...] = ()
    relaunch: tuple[str, ...] = ()
    housekeeping: tuple[str, ...] = ()

    def recognises(self, argv: list[str]) -> bool:
        joined = " ".join(argv)
        return any(fnmatch.fnmatchcase(joined, glob) for glob in self.match)

    def extended(self, relaunch: Iterable[str] = (), housekeeping: Iterable[str] = ()) -> AgentProfile:
        return replace(self, relaunch=self.relaunch + tuple(relaunch),
                       housekeeping=self.housekeeping + tuple(housekeeping))


# Observed on the pinned releases in tests/realagents/pins.txt (commands as the kernel saw them).
DEFAULT_PROFILES: tuple[AgentProfile, ...] = (
    AgentProfile(
        "gemini",
        match=("*/@google/gemini-cli/*", "*/.bin/gemini *", "*/bin/gemini *", "gemini *", "*/gemini.js *"),
        housekeeping=(
            "git rev-parse --show-toplevel", "git rev-parse --git-common-dir",
            # the `systeminformation` module's graphics probe, run at start
            "/bin/sh -c lspci -vvv*", "/bin/sh -c clinfo --raw", "/bin/sh -c xdpyinfo *",
            "/bin/sh -c xrandr --verbose*",
        ),
    ),
    AgentProfile(
        "qwen",
        match=("*/@qwen-code/qwen-code/*", "*/.bin/qwen *", "*/bin/qwen *", "qwen *"),
        relaunch=("*/@qwen-code/qwen-code/cli.js", "*/@qwen-code/qwen-code/cli-entry.js"),
        housekeeping=(
            "/bin/sh -c command -v rg", "/bin/sh -c ps -o ppid=,command= -p *",
            # its repository context: rev-parse, `status --short --branch`, `log --oneline -n 5`
            "git -c core.fsmonitor= -c log.showSignature=false *",
            "systemd-inhibit --help", "systemd-inhibit --what=sleep --who=Qwen Code *",
        ),
    ),
    AgentProfile(
        "claude",
        match=("*/@anthropic-ai/claude-code*", "*/claude *", "claude *", "*/claude"),
        housekeeping=(
            "/bin/bash -c env", "/bin/sh -c env", "*/bash -c env", "*/zsh -c env",
            # its shell snapshot, written once per session
            "*/bash -c -l SNAPSHOT_FILE=*", "*/zsh -c -l SNAPSHOT_FILE=*",
            # its own git queries, with hooks, askpass and external protocols disabled
            "git -c core.hooksPath=/dev/null -c core.fsmonitor= -c safe.bareRepository=explicit *",
            "*/git -c core.askPass= -c protocol.ext.allow=never *",
        ),
    ),
    AgentProfile(
        "codex",
        match=("*/@openai/codex*", "*/bin/codex *", "*/codex *", "codex *"),
        housekeeping=(
            "/bin/sh /usr/bin/lsb_release -a", "lsb_release -a", "getconf LONG_BIT",
            "*/git -c safe.bareRepository=explicit ls-remote *",
            # its repository context, with hooks and fsmonitor disabled
            "git -c safe.bareRepository=explicit -c core.hooksPath=/dev/null -c core.fsmonitor=false *",
            "git -c safe.bareRepository=explicit config --null --get *",
            # its shell snapshot: written by a login shell, then validated
            "*/bash -lc *echo '# Snapshot file'*", "*/zsh -lc *echo '# Snapshot file'*",
            "*/bash -c set -e; . */shell_snapshots/*", "*/zsh -c set -e; . */shell_snapshots/*",
        ),
    ),
    AgentProfile(
        "opencode",
        match=("*/opencode-linux-*/bin/opencode *", "*/opencode *", "opencode *"),
        housekeeping=(
            # its project detection and repository context
            "git rev-parse *", "git remote get-url origin", "git rev-list --max-parents=0 HEAD",
            "git worktree list --porcelain",
            "git --no-optional-locks -c core.autocrlf=false -c core.fsmonitor=false *",
            # its snapshots of the work tree: a git directory of its own, created with `git init`
            "git init", "git --git-dir */opencode/snapshot/*",
            "git -c core.autocrlf=false -c core.longpaths=true -c core.symlinks=true *--git-dir *",
        ),
    ),
)


@dataclass(frozen=True)
class Proc:
    """What the classification needs of one exec: the executable the kernel ran and its argv."""

    filename: str
    argv: list[str]


def script_of(proc: Proc) -> str | None:
    """The program an interpreter runs (first argument after the flags), or None when the
    executable is not an interpreter or names no script."""
    exe = os.path.basename(proc.filename)
    if exe not in INTERPRETERS and not exe.startswith(("python3.", "node")):
        return None
    for arg in proc.argv[1:]:
        if arg == "--":
            continue
        if arg.startswith("-"):
            if arg in ("-c", "-e", "--eval", "-m", "-p", "--print"):
                return None  # inline code or a module, not a script path
            continue
        return arg
    return None


@dataclass
class Profiles:
    """The profiles in force: built-in ones extended by the config, plus the runtime helpers."""

    profiles: tuple[AgentProfile, ...] = DEFAULT_PROFILES
    runtime: tuple[str, ...] = RUNTIME_HOUSEKEEPING
    resolve: Callable[[str], str] = field(default=os.path.realpath)

    def with_extensions(self, extra: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> Profiles:
        """name -> (relaunch globs, housekeeping globs) from the config; an unknown name adds a
        profile recognised by nothing but its name being given to `profile_named`."""
        known = {p.name: p for p in self.profiles}
        for name, (relaunch, housekeeping) in extra.items():
            known[name] = known.get(name, AgentProfile(name)).extended(relaunch, housekeeping)
        return replace(self, profiles=tuple(known.values()))

    def profile_named(self, name: str | None) -> AgentProfile | None:
        return next((p for p in self.profiles if p.name == name), None) if name else None

    def recognise(self, agent: Proc) -> AgentProfile | None:
        """The profile of the agent process that runs `agent` (None: an agent vigil knows no
        profile of; the generic rules still apply)."""
        return next((p for p in self.profiles if p.recognises(agent.argv)), None)

    def classify(self, child: Proc, agent: Proc, profile: AgentProfile | None = None) -> str:
        """RELAUNCH, HOUSEKEEPING or TOOL for the first exec of a child of the agent process."""
        profile = profile or self.recognise(agent)
        if self.is_relaunch(child, agent, profile):
            return RELAUNCH
        joined = " ".join(child.argv)
        globs = self.runtime + (profile.housekeeping if profile is not None else ())
        if any(fnmatch.fnmatchcase(joined, glob) for glob in globs):
            return HOUSEKEEPING
        return TOOL

    def is_relaunch(self, child: Proc, agent: Proc, profile: AgentProfile | None) -> bool:
        script = script_of(child)
        if script is None or self.resolve(child.filename) != self.resolve(agent.filename):
            return False
        resolved = self.resolve(script)
        parent_script = script_of(agent)
        if parent_script is not None and resolved == self.resolve(parent_script):
            return True
        globs = profile.relaunch if profile is not None else ()
        return any(fnmatch.fnmatchcase(resolved, g) or fnmatch.fnmatchcase(script, g) for g in globs)
