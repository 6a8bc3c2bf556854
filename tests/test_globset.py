"""GlobSet must answer exactly as wcmatch's globmatch does, prefilter or not."""

from __future__ import annotations

import random

import pytest
from wcmatch import glob as wglob

from vigild.correlate.detections import DEFAULT_SECRET_GLOBS, DEFAULT_WRITE_ALLOW_GLOBS
from vigild.correlate.globset import GLOB_FLAGS, GlobSet

PARTS = ["", ".ssh", ".aws", "credentials", "config", ".env", ".env.local", "etc", "shadow", "tmp", "a", "b",
         "bc", "d", ".gnupg", "x.py", "..", ".", "Library", "Keychains", ".kube", "dev", "proc", "id_rsa",
         ".git-credentials", ".config", "gcloud", ".docker", "config.json", "keyrings", ".local", "share", "src",
         "xy.c"]
GLOB_SETS = [DEFAULT_SECRET_GLOBS, DEFAULT_WRITE_ALLOW_GLOBS, ("*.py", "src/**/x?.c", "/a/[bc]/d"),
             ("/a/[bc]/dd",), ("**/.env",), ()]


def random_paths(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return ["/" * rng.randint(0, 1) + "/".join(rng.choice(PARTS) for _ in range(rng.randint(1, 6)))
            for _ in range(count)]


@pytest.mark.parametrize("globs", GLOB_SETS, ids=lambda g: ",".join(g)[:40] or "empty")
def test_same_answers_as_wcmatch(globs: tuple[str, ...]) -> None:
    matcher = GlobSet(globs)
    paths = random_paths(7, 20_000) + ["/a/b/dd", "/a/bc/dd", ".env", "/root/.ssh/id_rsa", "/tmp/x", ""]
    expected = [bool(p) and wglob.globmatch(p, list(globs), flags=GLOB_FLAGS) for p in paths]
    assert [matcher.match(p) for p in paths] == expected
    if globs:
        assert any(expected), "the corpus must exercise matches too"


def test_prefilter_uses_only_text_every_match_contains() -> None:
    # a character class is one character, not its letters; "**/" makes the slash optional
    assert GlobSet(("/a/[bc]/dd",)).match("/a/b/dd")
    assert GlobSet(("**/.env",)).match(".env")
    # with a glob that has no usable literal the prefilter is off, and matching still works
    assert GlobSet(("*", "**/.ssh/**")).match("anything")
