"""Compile the held lane's helper (gil_boost.c) into the shared object gil_boost.py loads.

Run by the package build beside the BPF objects (setup.py), or by hand:
``python daemon/pipeline/gil_boost_build.py OUTDIR``. It needs a C compiler and libc's headers
(Debian: clang-19, which the BPF build needs anyway, and libc6-dev). Unlike the BPF objects the
helper is optional: without it the held lane works as before and says so once, so a failed build
is reported and the install goes on.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "gil_boost.c"
BPF_BUILD = Path(__file__).resolve().parents[2] / "bpf" / "build.py"  # in the source tree and installed alike
# gil_boost.LIBRARY's name. Not `*.so`: package walkers (pkgutil) take any such file for a Python
# extension module and fail to import it.
LIBRARY_NAME = "libvigil_gil_boost.so.1"


class BuildError(RuntimeError):
    """No compiler, or the compile failed; the message says what to install."""


def find_compiler() -> str:
    """The clang the BPF objects are built with (bpf/build.py, loaded by its path like this file:
    the package is not importable while it is built); any C compiler would do, and it is there."""
    spec = importlib.util.spec_from_file_location("vigild_bpf_build", BPF_BUILD)
    if spec is None or spec.loader is None:
        raise BuildError(f"cannot load {BPF_BUILD}")
    bpf_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bpf_build)
    try:
        return bpf_build.find_clang()
    except bpf_build.BuildError as exc:
        raise BuildError(f"{exc}; the held lane's helper also needs 'libc6-dev'") from None


def build(out_dir: Path) -> Path:
    """Compile gil_boost.c into out_dir and return the library's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / LIBRARY_NAME
    tmp = target.with_suffix(".tmp")
    cmd = [find_compiler(), "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", str(SOURCE), "-o", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"compiling {SOURCE.name} failed (are libc6-dev's headers installed?):\n"
                         f"{result.stderr.decode(errors='replace')}")
    tmp.replace(target)  # a running vigild keeps the old file it mapped
    return target


def main() -> int:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE.parent
    try:
        print(build(out_dir))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
