"""`vigild`, the service: its lifecycle, reload and status (main), the agents it finds running or
starting (agents), the control socket that `vigil status`, `top`, `declare` and `hook` talk to
(control), and its systemd unit (vigild.service)."""

from importlib import import_module
from typing import Any

__all__ = ["build_parser"]


def __getattr__(name: str) -> Any:
    """`vigild.daemon.service.build_parser` is `vigild`'s argument parser by its package's name (setup.sh's
    man page and completion generators and the tests ask for it here); loaded on first use so that
    a module of this package imported on its own does not pull in all of `vigild`."""
    if name in __all__:
        return getattr(import_module(f"{__name__}.main"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
