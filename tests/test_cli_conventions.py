"""CLI conventions (no kernel): --version, help on every flag, a subcommand's own usage on a bad
flag, man pages and shell completion built from the same parsers setup.sh uses."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from vigild.daemon.cli import build_parser as vigil_parser
from vigild.daemon.service import build_parser as vigild_parser
from vigild.daemon.version import package_version

BIN = Path(sys.executable).parent
PARSERS = {"vigil": ("vigild.daemon.cli", vigil_parser), "vigild": ("vigild.daemon.service", vigild_parser)}


def _actions(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        else:
            yield path, action


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_flag_has_help_and_version_is_printed(prog: str) -> None:
    module, build = PARSERS[prog]
    missing = [f"{path} {a.option_strings or a.dest}" for path, a in _actions(build(), prog)
               if not a.help and a.dest != "help"]
    assert missing == []
    out = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == f"{prog} {package_version()}"


def test_a_bad_flag_gets_the_subcommands_usage() -> None:
    out = subprocess.run([sys.executable, "-m", "vigild.daemon.cli", "sessions", "--bogus"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.startswith("usage: vigil sessions") and "unrecognized arguments: --bogus" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_man_page_and_completion_cover_every_subcommand(prog: str, tmp_path: Path) -> None:
    module, build = PARSERS[prog]
    page = tmp_path / f"{prog}.8"
    subprocess.run([str(BIN / "argparse-manpage"), "--module", module, "--function", "build_parser", "--prog", prog,
                    "--manual-section", "8", "--project-name", "vigild", "--version", package_version(),
                    "--output", str(page)], check=True, capture_output=True, timeout=60)
    text = page.read_text()
    assert text.startswith(f'.TH {prog.upper()} "8"')
    flags = {opt for _, a in _actions(build(), prog) for opt in a.option_strings
             if opt.startswith("--") and opt != "--help"}
    for flag in flags:
        assert flag.replace("-", "\\-") in text or flag in text, flag
    rendered = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, timeout=60,
                              env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"})
    if rendered.returncode == 0:  # man is optional on servers; the troff above is what gets installed
        assert prog in rendered.stdout

    completion = tmp_path / prog
    completion.write_text(subprocess.run([str(BIN / "shtab"), "--shell", "bash", f"{module}.build_parser"],
                                         check=True, capture_output=True, text=True, timeout=60).stdout)
    probe = subprocess.run(["bash", "-c", f"source {completion} && complete -p {prog}"], capture_output=True,
                           text=True, timeout=30)
    assert probe.returncode == 0 and prog in probe.stdout
