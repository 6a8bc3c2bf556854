"""The commands that read the history store: `vigil sessions`, `show`, `report` and `export`, and
`vigil keygen`, which makes the key the store's prompts are sealed with."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from vigild.daemon.store import Store, StoreError


def _open_store(path: Path, key_file: Path | None = None) -> Store:
    if not path.exists():
        raise StoreError(f"no store at {path} (record one with `vigil trace --db {path}` or run vigild)")
    return Store(path, key_file=key_file)


def cmd_sessions(args: argparse.Namespace) -> int:
    from vigild.daemon.cli.history import print_sessions

    print_sessions(_open_store(args.db), args.limit, args.output == "json", Console())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from vigild.daemon.cli.history import print_show, session_tree

    store = _open_store(args.db, args.key_file)
    session_id = store.resolve_session(args.session) if args.session else store.latest_session_id()
    tree = session_tree(store, session_id) if session_id is not None else None
    if tree is None:
        print(f"vigil: error: no session {args.session or ''} in {args.db}".replace("  ", " "), file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(tree, indent=2))
    else:
        print_show(tree, Console())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vigild.daemon.cli.history import session_tree
    from vigild.daemon.cli.report import write_html

    store = _open_store(args.db, args.key_file)
    session_id = store.resolve_session(args.session) if args.session else store.latest_session_id()
    tree = session_tree(store, session_id) if session_id is not None else None
    if tree is None:
        print(f"vigil: error: no session in {args.db}", file=sys.stderr)
        return 1
    try:
        write_html(tree, args.html, (store.session(session_id) or {}).get("agent"))
    except OSError as exc:
        print(f"vigil: error: cannot write {args.html}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote session {session_id} to {args.html}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vigild.daemon.sinks.otlp import OtlpExportError, export_session

    headers = dict(h.partition("=")[::2] for h in args.header)
    try:
        store = _open_store(args.db, args.key_file)
        session_id = store.resolve_session(args.session)
        sent = export_session(store, session_id, args.otlp_endpoint,
                              capture_content=args.capture_content, headers=headers, timeout=args.timeout)
    except OtlpExportError as exc:
        print(f"vigil: error: {exc}", file=sys.stderr)
        return 1
    print(f"exported session {session_id}: {sent} spans")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from vigild.daemon.crypto import generate_key_file

    try:
        key_id = generate_key_file(args.path)
    except OSError as exc:
        print(f"vigil: error: cannot write a key to {args.path}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote key {key_id} to {args.path}; keep a copy: without it, stored prompts cannot be read")
    return 0

