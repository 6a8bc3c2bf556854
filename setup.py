"""Build hook: compile the BPF objects as part of every install (``pip install .`` or ``-e .``).

Metadata lives in pyproject.toml; this file only adds the BPF compile step to build_py, so the
installed package carries its ``*.bpf.o`` files and never needs the source tree at run time, and
the held lane's helper (daemon/pipeline/gil_boost.c, optional: a failed build is said, not fatal).
"""

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _load_build(name, path):
    # Build modules are imported by path: the vigild package is not importable while it is built.
    spec = importlib.util.spec_from_file_location(name, HERE / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithBpf(build_py):
    def run(self) -> None:
        bpf_build = _load_build("vigild_bpf_build", "bpf/build.py")
        # An editable install imports vigild.bpf from the source folder, so the objects go there.
        out_dir = HERE / "bpf" if self.editable_mode else Path(self.build_lib) / "vigild" / "bpf"
        try:
            bpf_build.build(out_dir, Path(self.get_finalized_command("build").build_temp) / "bpf")
        except bpf_build.BuildError as exc:
            raise SystemExit(f"error: {exc}") from None
        boost_build = _load_build("vigild_gil_boost_build", "daemon/pipeline/gil_boost_build.py")
        pipeline = HERE / "daemon" / "pipeline" if self.editable_mode else Path(self.build_lib) / "vigild" / "daemon" / "pipeline"
        try:
            boost_build.build(pipeline)
        except boost_build.BuildError as exc:
            print(f"warning: {exc}\nwarning: the held lane will run without raising the pipeline thread", file=sys.stderr)
        super().run()


setup(cmdclass={"build_py": BuildPyWithBpf})
