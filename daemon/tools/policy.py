"""Default limits per tool, by command pattern: the config's `[[policies]]` as a `policy_for(call)`.

A policy's `match` is a glob (fnmatch, case-sensitive) tried against several spellings of the
call's command, because the same tool shows up differently: `pytest -x`, `/usr/bin/pytest -x`,
`bash -c "pytest -x"` (what agents' shell tools run), `bash -lc "cd repo && npm install"`. The
first policy that matches any spelling wins; what it leaves unset comes from the run's defaults.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence

from vigild.correlate.tool_calls import ToolCall
from vigild.daemon.config import ToolPolicy
from vigild.daemon.tools.control_loop import CallPolicy, PolicyFor

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "fish"})
SEPARATORS = ("&&", "||", ";", "|", "\n")


def command_spellings(argv: Sequence[str]) -> list[str]:
    """The command line as given, with the program's base name, and each command of a shell's
    `-c` script (split at `&&`, `||`, `;`, `|`, newlines)."""
    if not argv:
        return []
    spellings = [" ".join(argv), " ".join([os.path.basename(argv[0]), *argv[1:]])]
    if os.path.basename(argv[0]) in SHELLS:
        script = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("-") and "c" in a), None)
        if script is not None:
            spellings.append(script.strip())
            parts = [script]
            for sep in SEPARATORS:
                parts = [piece for part in parts for piece in part.split(sep)]
            spellings += [p.strip() for p in parts if p.strip()]
    return spellings


def matching_policy(policies: Iterable[ToolPolicy], argv: Sequence[str]) -> ToolPolicy | None:
    spellings = command_spellings(argv)
    for policy in policies:
        if any(fnmatch.fnmatchcase(s, policy.match) for s in spellings):
            return policy
    return None


def policy_for_config(policies: Sequence[ToolPolicy], default: CallPolicy) -> PolicyFor:
    """`ToolCallControl.policy_for`: the first matching `[[policies]]` entry over `default`."""
    compiled = [(p, CallPolicy.of(p)) for p in policies]

    def policy_for(call: ToolCall) -> CallPolicy:
        found = matching_policy([p for p, _ in compiled], call.argv)
        if found is None:
            return default
        return next(c for p, c in compiled if p is found).over(default)

    return policy_for
