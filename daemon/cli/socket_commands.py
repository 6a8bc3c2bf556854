"""The commands that ask a running vigil over its control socket: `vigil status` and `vigil top`
(vigild), and `vigil declare` (vigild or a `vigil run`)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from rich.console import Console

from vigild.cgroups import KNOBS


def cmd_declare(args: argparse.Namespace) -> int:
    """Send the declaration, say what was applied (and clamped), then exec CMD. A vigil that
    cannot be reached costs the limits, never the work: CMD runs all the same."""
    from vigild.daemon.service.control import CommandError, request

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    needs = {**{knob.name: getattr(args, knob.name) for knob in KNOBS}, "timeout_s": args.timeout}
    ok = True
    try:
        reply = request(args.socket, "declare", next=args.next or not command, match=args.match, tag=args.tag,
                        **{k: v for k, v in needs.items() if v is not None})
    except (OSError, CommandError) as exc:
        ok = False
        print(f"vigil: warning: cannot declare to {args.socket}: {exc}", file=sys.stderr)
    else:
        where = "this tool call" if reply["applies_to"] == "this_call" else "the next tool call"
        print(f"vigil: declared for {where}: {json.dumps(reply['applied'])}", file=sys.stderr)
        for clamp in reply["clamped"]:
            shown = (lambda v: f"{v / (1 << 20):g}M") if clamp["need"].startswith("memory") else (lambda v: f"{v:g}")
            print(f"vigil: {clamp['need']} {shown(clamp['declared'])} is above the host bound: clamped to "
                  f"{shown(clamp['bound'])}", file=sys.stderr)
    if command:
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"vigil: error: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
            return 127
    return 0 if ok else 1


def cmd_top(args: argparse.Namespace) -> int:
    from vigild.daemon.cli.top_view import render, run_top
    from vigild.daemon.service.control import CommandError, request

    def ask() -> dict:
        return request(args.socket, "top", session_id=args.session)

    try:
        if args.once:
            snapshot = ask()
            if args.output == "json":
                print(json.dumps(snapshot, indent=2))
            else:
                Console().print(render(snapshot, args.session))
            return 0
        run_top(ask, Console(), args.session, args.interval)
    except (OSError, CommandError) as exc:
        print(f"vigil: error: cannot ask vigild at {args.socket}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from vigild.daemon.cli.status_view import print_status
    from vigild.daemon.service.control import CommandError, request

    try:
        status = request(args.socket, "status")
    except (OSError, CommandError) as exc:
        print(f"vigil: error: cannot ask vigild at {args.socket}: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(status, indent=2))
    else:
        print_status(status, Console())
    return 0

