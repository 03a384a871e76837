"""``python -m clientmeter spool``: what waits in the spool, per key, and what to do with it.

    python -m clientmeter spool                 queue and dead letters per key
    python -m clientmeter spool retry [--key K] dead letters back into the queue
    python -m clientmeter spool drop --key K    delete dead letters (--queue: the queue too)

``K`` is a key's public prefix (``cm_live_AbCdEfGh``) or its folder's fingerprint (or a
start of it). Retried batches are sent by the next process that holds their key; when
CLIENTMETER_URL and CLIENTMETER_API_KEY name that key, ``retry`` sends them at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clientmeter._sender import Sender, default_spool_dir
from clientmeter._spool import key_fingerprint, new_batch_name, write_atomic


@dataclass
class Folder:
    """One key's spool folder, as found on disk."""

    path: Path
    url: str = ""
    key_prefix: str = ""
    queued_batches: int = 0
    queued_events: int = 0
    queue_oldest: float | None = None
    last_error: str = ""
    dead_files: list[Path] = field(default_factory=list)
    dead_events: int = 0
    dead_oldest: float | None = None
    dead_last_error: str = ""

    @property
    def fingerprint(self) -> str:
        return self.path.name

    def matches(self, selector: str) -> bool:
        if self.key_prefix and self.key_prefix == selector:
            return True
        return len(selector) >= 4 and self.fingerprint.startswith(selector)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _events_in(path: Path) -> int:
    events = _read(path).get("events")
    return len(events) if isinstance(events, list) else 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def scan(root: Path) -> list[Folder]:
    folders: list[Folder] = []
    if not root.is_dir():
        return folders
    for path in sorted(root.iterdir()):
        if not (path / "queue").is_dir():
            continue
        key = _read(path / "key.json")
        folder = Folder(
            path=path, url=str(key.get("url", "")), key_prefix=str(key.get("key_prefix", ""))
        )
        queued = sorted((path / "queue").glob("*.json"))
        folder.queued_batches = len(queued)
        folder.queued_events = sum(_events_in(batch) for batch in queued)
        if queued:
            folder.queue_oldest = min(_mtime(batch) for batch in queued)
        error = _read(path / "state.json").get("last_error") or {}
        if error:
            folder.last_error = f"{error.get('status') or ''} {error.get('answer', '')}".strip()
        folder.dead_files = sorted((path / "dead").glob("*.json"))
        letters = [(letter, _read(letter)) for letter in folder.dead_files]
        folder.dead_events = sum(len(record.get("events") or []) for _, record in letters)
        if letters:
            folder.dead_oldest = min(_mtime(letter) for letter, _ in letters)
            _, newest = max(letters, key=lambda item: _mtime(item[0]))
            folder.dead_last_error = (
                f"{newest.get('status') or ''} {newest.get('answer', '')}".strip()
            )
        folders.append(folder)
    return folders


def _age(moment: float | None) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int(time.time() - moment))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def show(folders: list[Folder], out: Any) -> None:
    if not folders:
        print("Nothing in the spool.", file=out)
        return
    for folder in folders:
        print(
            f"{folder.key_prefix or '(key)'} at {folder.url or '?'}  [{folder.fingerprint}]",
            file=out,
        )
        print(
            f"  queued:       {folder.queued_events} events in {folder.queued_batches} batches, "
            f"oldest {_age(folder.queue_oldest)}",
            file=out,
        )
        if folder.last_error:
            print(f"  last error:   {folder.last_error[:300]}", file=out)
        print(
            f"  dead letters: {folder.dead_events} events in {len(folder.dead_files)} files, "
            f"oldest {_age(folder.dead_oldest)}",
            file=out,
        )
        if folder.dead_last_error:
            print(f"  last refusal: {folder.dead_last_error[:300]}", file=out)


def retry(folders: list[Folder], out: Any) -> int:
    moved = 0
    for folder in folders:
        for letter in folder.dead_files:
            events = _read(letter).get("events")
            if isinstance(events, list) and events:
                write_atomic(folder.path / "queue" / f"{new_batch_name()}.json", {"events": events})
                moved += len(events)
            letter.unlink()
        print(
            f"{folder.key_prefix or folder.fingerprint}: {folder.dead_events} events queued again",
            file=out,
        )
        _send_now(folder, out)
    return moved


def _send_now(folder: Folder, out: Any) -> None:
    url, api_key = os.environ.get("CLIENTMETER_URL"), os.environ.get("CLIENTMETER_API_KEY")
    if not (url and api_key) or key_fingerprint(url, api_key) != folder.fingerprint:
        print("  sent by the next process that holds this key", file=out)
        return
    sender = Sender(url=url, api_key=api_key, spool_dir=folder.path.parent)
    delivered = sender.close(timeout=30)
    print("  sent" if delivered else "  not all sent: see the dead letters again", file=out)


def drop(folders: list[Folder], *, queue: bool, out: Any) -> None:
    for folder in folders:
        for letter in folder.dead_files:
            letter.unlink(missing_ok=True)
        dropped = f"{folder.dead_events} dead-letter events"
        if queue:
            for batch in (folder.path / "queue").glob("*.json"):
                batch.unlink(missing_ok=True)
            dropped += f" and {folder.queued_events} queued events"
        print(f"{folder.key_prefix or folder.fingerprint}: dropped {dropped}", file=out)


def main(argv: Sequence[str] | None = None, out: Any = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="python -m clientmeter")
    commands = parser.add_subparsers(dest="command", required=True)
    spool = commands.add_parser("spool", help="show the queue and dead letters per key")
    spool.add_argument("action", nargs="?", choices=["show", "retry", "drop"], default="show")
    spool.add_argument("--dir", type=Path, help="the spool directory (CLIENTMETER_SPOOL_DIR)")
    spool.add_argument("--key", help="a key prefix (cm_live_…) or folder fingerprint")
    spool.add_argument("--all", action="store_true", help="drop: every key's")
    spool.add_argument("--queue", action="store_true", help="drop: the queued batches too")
    args = parser.parse_args(argv)
    folders = scan(args.dir or default_spool_dir())
    if args.key:
        folders = [folder for folder in folders if folder.matches(args.key)]
        if not folders:
            print(f"No spool folder for key {args.key}.", file=out)
            return 1
    if args.action == "show":
        show(folders, out)
    elif args.action == "retry":
        retry(folders, out)
    else:
        if not (args.key or args.all):
            print("drop needs --key K or --all: dropped events are never billed.", file=out)
            return 2
        drop(folders, queue=args.queue, out=out)
    return 0
