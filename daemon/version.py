"""The installed vigild's version, for `--version` and `vigil_build_info`."""

from __future__ import annotations

from importlib import metadata


def package_version() -> str:
    try:
        return metadata.version("vigild")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"
