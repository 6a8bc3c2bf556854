"""The command a model asked for, found inside the command line an agent actually ran.

Agents wrap the model's command before running it: `bash -c CMD` (qwen-code, opencode), a login
shell `bash -lc CMD`, a shell snapshot sourced before `eval 'CMD'` (Claude Code), a subshell with
a trap around it (Gemini CLI), a re-exec of the agent's own binary that ends in
`exec '/bin/bash' -c 'CMD'` (Codex). `inner_commands` peels those layers with a real shell
tokenizer (`shlex`, POSIX rules, so `'"'"'`-style quoting comes back as the original text) and
returns every candidate, outermost first; the linker compares them with the model's command.
"""

from __future__ import annotations

import os
import re
import shlex

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "fish"})
_COMMAND_FLAG = re.compile(r"^-[a-zA-Z]*c[a-zA-Z]*$")  # -c, -lc, -ic, -xc ...
# Gemini CLI: `( trap '…' EXIT\nCMD\n)\n__code=$?`: CMD is the subshell's body after the trap line.
_TRAPPED_SUBSHELL = re.compile(r"\(\n\s*trap [^\n]*EXIT\n(.*)\n\)\n__code=\$\?", re.DOTALL)
MAX_DEPTH = 4
MAX_SCRIPT = 256 * 1024  # tokenizing is linear, but a bound keeps one odd command line cheap


def shell_script(argv: list[str]) -> str | None:
    """The script of a shell started as `SHELL [options] -c SCRIPT` anywhere in argv (a wrapper
    such as Codex's process-setup re-exec carries the shell command at its end)."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) not in SHELLS:
            continue
        rest = argv[i + 1:]
        for j, flag in enumerate(rest):
            if _COMMAND_FLAG.match(flag):
                # options may follow -c (`bash -c -l SCRIPT`): the script is the first non-option
                return next((a for a in rest[j + 1:] if not a.startswith("-")), None)
            if not flag.startswith("-"):
                break
    return None


def _tokens(script: str) -> list[str]:
    lexer = shlex.shlex(script[:MAX_SCRIPT], posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes: no inner command to find
        return []


def _nested(script: str) -> list[str]:
    """Commands one layer down in a script: `eval 'CMD'`, `exec SHELL -c 'CMD'`, a trapped subshell."""
    found: list[str] = []
    trapped = _TRAPPED_SUBSHELL.search(script)
    if trapped:
        found.append(trapped.group(1))
    tokens = _tokens(script)
    for i, tok in enumerate(tokens[:-1]):
        if tok == "eval":
            found.append(tokens[i + 1])
    inner = shell_script(tokens)
    if inner is not None and inner != script:
        found.append(inner)
    return found


def inner_commands(argv: list[str]) -> list[str]:
    """Every command this command line runs on the model's behalf, outermost first: the shell
    script of a `-c` shell, and what that script evals or re-executes, down a few layers."""
    script = shell_script(argv)
    if script is None:
        return []
    found = [script]
    layer = [script]
    for _ in range(MAX_DEPTH):
        layer = [n for s in layer for n in _nested(s) if n not in found]
        if not layer:
            break
        found += layer
    return [c.strip() for c in found if c.strip()]
