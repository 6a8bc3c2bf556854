"""Where the installed package keeps its compiled BPF objects."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from vigild.bpf.loader import BpfUnavailable


def object_path(name: str) -> Path:
    """Path of a compiled object shipped inside vigild.bpf (built at install time)."""
    path = Path(str(resources.files("vigild.bpf") / name))
    if not path.exists():
        raise BpfUnavailable(
            f"{name} is missing from {path.parent}: the package was installed without its BPF "
            "objects; reinstall it with clang, bpftool and libbpf-dev present"
        )
    return path
