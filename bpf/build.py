"""Compile the CO-RE BPF objects: vmlinux.h from the running kernel's BTF, then clang -target bpf.

Used by the package build (setup.py runs it so ``pip install .`` ships the objects) and by hand:
``python bpf/build.py OUTDIR``. It only needs clang and bpftool at build time; the objects are
CO-RE, so they load on any kernel with BTF without being rebuilt.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
BTF_PATH = Path("/sys/kernel/btf/vmlinux")

# clang 14 emits code this kernel's verifier rejects in places (signed lengths reaching
# bpf_probe_read_user); newer clangs are tried first.
CLANG_CANDIDATES = ("clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang")
ARCH_DEFINES = {"x86_64": "x86", "aarch64": "arm64", "arm64": "arm64", "s390x": "s390", "ppc64le": "powerpc"}


class BuildError(RuntimeError):
    """A build prerequisite is missing or a compile failed; the message says what to install."""


def find_clang() -> str:
    override = os.environ.get("VIGIL_CLANG")
    for name in ((override,) if override else CLANG_CANDIDATES):
        path = shutil.which(name)
        if path:
            return path
    raise BuildError(
        "building vigild's BPF programs needs clang: install the Debian package 'clang-19' "
        "(or 'clang'), or set VIGIL_CLANG to a clang binary"
    )


def find_bpftool() -> str:
    for candidate in (shutil.which("bpftool"), "/usr/sbin/bpftool", "/sbin/bpftool"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BuildError("building vigild's BPF programs needs bpftool: install the Debian package 'bpftool'")


def check_libbpf_headers() -> None:
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        raise BuildError("building vigild's BPF programs needs libbpf's headers: install the Debian package 'libbpf-dev'")


def generate_vmlinux_h(out_dir: Path) -> Path:
    """Dump the kernel's BTF as C. Any BTF-enabled kernel's types work for CO-RE: relocations
    are resolved against the target kernel at load time."""
    target = out_dir / "vmlinux.h"
    if target.exists():
        return target
    if not BTF_PATH.exists():
        raise BuildError(f"{BTF_PATH} is missing: the build needs a kernel with BTF (CONFIG_DEBUG_INFO_BTF=y)")
    result = subprocess.run(
        [find_bpftool(), "btf", "dump", "file", str(BTF_PATH), "format", "c"],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"bpftool could not dump {BTF_PATH}: {result.stderr.decode(errors='replace').strip()}")
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(result.stdout)
    tmp.replace(target)
    return target


def compile_object(source: Path, out_dir: Path, include_dir: Path, clang: str) -> Path:
    arch = ARCH_DEFINES.get(platform.machine(), platform.machine())
    target = out_dir / source.name.replace(".bpf.c", ".bpf.o")
    cmd = [
        clang, "-target", "bpf", "-g", "-O2", "-Wall", "-Werror",
        f"-D__TARGET_ARCH_{arch}", f"-I{include_dir}", f"-I{SOURCE_DIR}",
        "-c", str(source), "-o", str(target),
    ]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"compiling {source.name} failed:\n{result.stderr.decode(errors='replace')}")
    return target


def build(out_dir: Path, work_dir: Path | None = None) -> list[Path]:
    """Build every bpf/*.bpf.c into out_dir and return the objects; vmlinux.h (2-3 MB, needed
    only to compile) is generated in work_dir, which defaults to out_dir."""
    work_dir = work_dir or out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    check_libbpf_headers()
    clang = find_clang()
    generate_vmlinux_h(work_dir)
    return [compile_object(src, out_dir, work_dir, clang) for src in sorted(SOURCE_DIR.glob("*.bpf.c"))]


def main() -> int:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE_DIR
    try:
        for obj in build(out_dir):
            print(obj)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
