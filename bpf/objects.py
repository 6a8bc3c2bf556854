"""Where the installed package keeps its compiled BPF objects.

Test hook: `VIGIL_TEST_REPLACE_OBJECT=NAME=PATH` (e.g. `effects.bpf.o=/tmp/refused.bpf.o`) makes
`object_path(NAME)` return PATH instead. tests/test_features.py uses it to make one sensor's
object one the kernel refuses and check that vigil loses that feature only and says so; it names
one object, so nothing else can be swapped through it.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from vigild.bpf.loader import BpfUnavailable

REPLACE_ENV = "VIGIL_TEST_REPLACE_OBJECT"


def object_path(name: str) -> Path:
    """Path of a compiled object shipped inside vigild.bpf (built at install time)."""
    replaced, _, replacement = os.environ.get(REPLACE_ENV, "").partition("=")
    if replaced == name and replacement:
        return Path(replacement)
    path = Path(str(resources.files("vigild.bpf") / name))
    if not path.exists():
        raise BpfUnavailable(
            f"{name} is missing from {path.parent}: the package was installed without its BPF "
            "objects; reinstall it with clang, bpftool and libbpf-dev present"
        )
    return path
