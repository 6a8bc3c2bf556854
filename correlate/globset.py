"""A set of path globs compiled once, with a literal prefilter that rejects most paths in ~1 µs.

Detections test every file open of a tracked tree against the secret and write-allow globs: a busy
tool call opens thousands of files a second. `wcmatch.glob.globmatch` recompiles its patterns on
every call (~45 µs for the 15 default secret globs) and even its compiled matcher takes ~20 µs, so
the globs are translated by wcmatch once (its grammar stays the one users write) and guarded by the
literal text every match must contain: a glob can only match a path that contains each of its
wildcard-free runs, so a path containing none of the globs' longest runs is rejected by one
search for them all (an Aho-Corasick automaton), without running the translated patterns.
"""

from __future__ import annotations

import re

import ahocorasick_rs
from wcmatch import glob as wglob

GLOB_FLAGS = wglob.GLOBSTAR | wglob.DOTGLOB
# Characters with meaning in wcmatch's glob grammar (under GLOB_FLAGS) end a literal run; so does
# "/", which `**/` makes optional (`**/.env` matches a bare `.env`).
_SPECIAL = re.compile(r"[*?\[\]\\{}!|()@+/]")
_CHAR_CLASS = re.compile(r"\[[^\]]*\]")  # `[bc]` matches one character, not the text "bc"
_MIN_LITERAL = 2  # a shorter run would pass nearly every path and filter nothing
MATCHES_REMEMBERED = 16384


class GlobSet:
    """Path globs (wcmatch syntax, `**` and dotfiles on) matched as one compiled unit."""

    def __init__(self, globs: tuple[str, ...] | list[str]) -> None:
        self.globs = tuple(globs)
        include, exclude = wglob.translate(list(self.globs), flags=GLOB_FLAGS) if self.globs else ([], [])
        self._include = [re.compile(p) for p in include]
        self._exclude = [re.compile(p) for p in exclude]
        literals = [self._longest_literal(g) for g in self.globs]
        usable = {lit for lit in literals if lit is not None}
        # A path holding a literal that holds another holds that other too: only the literals
        # none of the others is part of are searched for (the default secret globs: 9 of 15;
        # the regex engine tries every branch at each position a branch can start at).
        # Found by one ahocorasick-rs automaton: ~3.5k instructions for a 40-character path where
        # a regex alternation of the same literals took ~5.1k (valgrind, bench/README.md).
        needed = sorted(lit for lit in usable if not any(other != lit and other in lit for other in usable))
        self._prefilter = (ahocorasick_rs.AhoCorasick(needed, implementation=ahocorasick_rs.Implementation.DFA)
                           if usable and None not in literals else None)
        self._known: dict[str, bool] = {}

    @staticmethod
    def _longest_literal(glob: str) -> str | None:
        longest = max(_SPECIAL.split(_CHAR_CLASS.sub("*", glob)), key=len)
        return longest if len(longest) >= _MIN_LITERAL else None

    def match(self, path: str) -> bool:
        """Whether a glob matches `path`. Answers are remembered (up to MATCHES_REMEMBERED paths,
        then forgotten at once): a burst opens the same files again and again."""
        known = self._known.get(path)
        if known is None:
            if len(self._known) >= MATCHES_REMEMBERED:
                self._known.clear()
            known = self._known[path] = self._match(path)
        return known

    def _match(self, path: str) -> bool:
        if not path or not self._include:
            return False
        if self._prefilter is not None and not self._prefilter.find_matches_as_indexes(path):
            return False
        if any(p.fullmatch(path) for p in self._exclude):
            return False
        return any(p.fullmatch(path) for p in self._include)
