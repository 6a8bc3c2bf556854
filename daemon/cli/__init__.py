"""`vigil`, the command line: the parser and dispatch (main), one module per group of commands
(trace: `trace` and `run`; stored: `sessions`, `show`, `report`, `export`, `keygen`;
socket_commands: `status`, `top`, `declare`; doctor; hook), and the views only the CLI shows: the
history (history, report and its HTML template), `vigil top` (top_view), `vigil status`
(status_view), and the telemetry settings a run gives a known agent (telemetry_setup)."""

from importlib import import_module
from typing import Any

__all__ = ["build_parser"]


def __getattr__(name: str) -> Any:
    """`vigild.daemon.cli.build_parser` is `vigil`'s argument parser by its package's name (setup.sh's
    man page and completion generators and the tests ask for it here); loaded on first use so that
    a module of this package imported on its own does not pull in all of `vigil`."""
    if name in __all__:
        return getattr(import_module(f"{__name__}.main"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
