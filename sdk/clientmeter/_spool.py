"""The spool on disk: batches waiting for delivery and dead letters, one folder per key.

Layout, under the spool directory (``CLIENTMETER_SPOOL_DIR``)::

    <fingerprint>/          one folder per (ClientMeter URL, API key)
        key.json            the URL and the key's public prefix, for ``python -m clientmeter spool``
        state.json          the last delivery error, for the same
        queue/<name>.json   batches waiting, oldest name first: {"events": [...]}
        dead/<name>.json    dead letters: {"events": [...], "status": ..., "answer": ...}

The fingerprint is a hash of the URL and the key: the key itself is never written, and
only a process that holds the key can find (and so send) its folder. A batch therefore
only ever goes out with the key it was recorded under.

Several processes may share the directory. Every file is written to a temporary name and
renamed into place, so a reader sees a whole batch or none. A batch is sent only under a
lock: a POSIX record lock on its file (released by the kernel if the process dies, and
not inherited by a forked child, unlike ``flock``), plus an in-process claim so two
threads of one process never send the same batch either.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no record locks; the in-process claim and server dedupe remain.
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("clientmeter")

# Bounds per key folder; see sdk/README.md, "Spool and dead letters".
DEFAULT_QUEUE_MAX_MB = 256.0
DEFAULT_DEAD_MAX_MB = 64.0
MEMORY_MAX_EVENTS = 10_000  # when the directory cannot be used at all
ANSWER_LIMIT = 2000

_KEY_PREFIX_RE = re.compile(r"^(cm_[a-z]+_[A-Za-z0-9]{8})_")


def key_fingerprint(url: str, api_key: str) -> str:
    """A name for the (URL, key) pair that does not reveal the key."""
    material = f"{url.rstrip('/')}\n{api_key}".encode()
    return hashlib.sha256(material).hexdigest()[:24]


def key_hint(api_key: str) -> str:
    """The key's public prefix (``cm_live_AbCdEfGh``, shown in admin), or nothing."""
    match = _KEY_PREFIX_RE.match(api_key)
    return match.group(1) if match else ""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def env_megabytes(name: str, default: float) -> int:
    """A size bound in bytes from a megabyte setting; a bad value warns and keeps the default."""
    raw = os.environ.get(name)
    value = default
    if raw:
        try:
            value = float(raw)
        except ValueError:
            log.warning("ClientMeter: %s=%r is not a number; using %s", name, raw, default)
    return int(value * 1024 * 1024)


def write_atomic(path: Path, payload: Any) -> int:
    """Write JSON to a temporary file and rename it into place; return its size."""
    data = json.dumps(payload, separators=(",", ":")).encode()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return len(data)


def new_batch_name() -> str:
    """Sortable by creation time across processes, unique without coordination."""
    return f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# Names claimed by a thread of this process, per queue directory: record locks do not
# exclude threads of the same process, this does.
_claims: set[str] = set()
_claims_lock = threading.Lock()


def _reset_claims_after_fork() -> None:
    global _claims_lock
    _claims_lock = threading.Lock()
    _claims.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_claims_after_fork)


class Spool:
    """The queue and dead letters of one (URL, key). Never raises on I/O trouble."""

    def __init__(
        self,
        root: Path | None,
        *,
        url: str,
        api_key: str,
        queue_max_bytes: int | None = None,
        dead_max_bytes: int | None = None,
    ) -> None:
        self.fingerprint = key_fingerprint(url, api_key)
        self.queue_max_bytes = (
            queue_max_bytes
            if queue_max_bytes is not None
            else env_megabytes("CLIENTMETER_SPOOL_MAX_MB", DEFAULT_QUEUE_MAX_MB)
        )
        self.dead_max_bytes = (
            dead_max_bytes
            if dead_max_bytes is not None
            else env_megabytes("CLIENTMETER_DEAD_LETTER_MAX_MB", DEFAULT_DEAD_MAX_MB)
        )
        self.directory: Path | None = None
        self._memory: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._queue_bytes = 0
        self._dead_bytes = 0
        self._last_error: str | None = None
        if root is not None:
            self._open(root / self.fingerprint, url=url, api_key=api_key)

    def _open(self, directory: Path, *, url: str, api_key: str) -> None:
        try:
            for folder in (directory / "queue", directory / "dead"):
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not (directory / "key.json").exists():
                write_atomic(
                    directory / "key.json",
                    {"url": url.rstrip("/"), "key_prefix": key_hint(api_key), "since": now_iso()},
                )
        except OSError as exc:
            log.warning(
                "ClientMeter: cannot use spool directory %s (%s); unsent events stay in "
                "memory and are lost with the process",
                directory,
                exc,
            )
            return
        self.directory = directory
        self._queue_bytes = _folder_bytes(directory / "queue")
        self._dead_bytes = _folder_bytes(directory / "dead")

    @property
    def queue_dir(self) -> Path | None:
        return self.directory / "queue" if self.directory is not None else None

    @property
    def dead_dir(self) -> Path | None:
        return self.directory / "dead" if self.directory is not None else None

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._memory = {}

    # --- the queue -----------------------------------------------------------------

    def put(
        self, events: list[dict[str, Any]], *, name: str | None = None, force: bool = False
    ) -> bool:
        """Queue a batch; False when it had to be dropped (the bound, or no room at all).

        ``force``: the halves of a batch being split, which take no more room than it did.
        """
        if not events:
            return True
        name = name or new_batch_name()
        queue = self.queue_dir
        if queue is not None:
            if not force and self._queue_bytes >= self.queue_max_bytes:
                self._queue_bytes = _folder_bytes(queue)  # others may have sent some meanwhile
            if not force and self._queue_bytes >= self.queue_max_bytes:
                log.error(
                    "ClientMeter: the spool %s is full (%d MB, CLIENTMETER_SPOOL_MAX_MB); "
                    "%d new events dropped",
                    queue,
                    self.queue_max_bytes // (1024 * 1024),
                    len(events),
                )
                return False
            try:
                self._queue_bytes += write_atomic(queue / f"{name}.json", {"events": events})
                return True
            except OSError as exc:
                log.warning("ClientMeter: cannot write the spool (%s); keeping it in memory", exc)
        with self._lock:
            held = sum(len(batch) for batch in self._memory.values())
            if held + len(events) > MEMORY_MAX_EVENTS:
                log.error("ClientMeter: no spool and memory full; %d events dropped", len(events))
                return False
            self._memory[name] = events
        return True

    def names(self) -> list[str]:
        """Queued batch names, oldest first; also refreshes the size estimate."""
        with self._lock:
            names = set(self._memory)
        queue = self.queue_dir
        if queue is not None:
            total = 0
            with contextlib.suppress(OSError), os.scandir(queue) as entries:
                for entry in entries:
                    if entry.name.endswith(".json") and not entry.name.startswith("."):
                        names.add(entry.name[:-5])
                        with contextlib.suppress(OSError):
                            total += entry.stat().st_size
            self._queue_bytes = total
        return sorted(names)

    def remove(self, name: str) -> None:
        with self._lock:
            if self._memory.pop(name, None) is not None:
                return
        queue = self.queue_dir
        if queue is not None:
            path = queue / f"{name}.json"
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                self._queue_bytes = max(0, self._queue_bytes - size)

    @contextlib.contextmanager
    def claim(self, name: str) -> Iterator[list[dict[str, Any]] | None]:
        """The batch's events while this thread holds it; None if it is gone or taken."""
        with self._lock:
            in_memory = self._memory.get(name)
        if in_memory is not None or self.queue_dir is None:
            yield in_memory
            return
        path = self.queue_dir / f"{name}.json"
        token = str(path)
        with _claims_lock:
            if token in _claims:
                yield None
                return
            _claims.add(token)
        try:
            try:
                handle = path.open("r+b")  # record locks need a writable handle
            except OSError:
                yield None  # sent (or buried) by someone else meanwhile
                return
            with handle:
                if not _lock(handle.fileno()) or not _same_file(path, handle.fileno()):
                    yield None
                    return
                try:
                    events = json.loads(handle.read())["events"]
                    if not isinstance(events, list):
                        raise TypeError("events is not a list")
                except (ValueError, KeyError, TypeError):
                    log.error("ClientMeter: unreadable spool file %s, moved aside", path)
                    with contextlib.suppress(OSError):
                        path.rename(path.with_suffix(".bad"))
                    yield None
                    return
                yield events
                # Closing the handle releases the lock.
        finally:
            with _claims_lock:
                _claims.discard(token)

    # --- dead letters ----------------------------------------------------------------

    def bury(
        self,
        events: list[dict[str, Any]],
        *,
        name: str,
        status: int | None,
        answer: str,
        reason: str,
    ) -> bool:
        """Keep events the server will not take, with its answer; False if dropped."""
        if not events:
            return True
        record = {
            "events": events,
            "status": status,
            "answer": answer[:ANSWER_LIMIT],
            "reason": reason,
            "at": now_iso(),
        }
        dead = self.dead_dir
        if dead is not None:
            if self._dead_bytes >= self.dead_max_bytes:
                self._dead_bytes = _folder_bytes(dead)
            if self._dead_bytes < self.dead_max_bytes:
                try:
                    self._dead_bytes += write_atomic(dead / f"{name}.json", record)
                    return True
                except OSError as exc:
                    log.error("ClientMeter: cannot write a dead letter (%s)", exc)
            else:
                log.error(
                    "ClientMeter: the dead-letter folder %s is full (CLIENTMETER_DEAD_LETTER_MAX_MB)",
                    dead,
                )
        log.error(
            "ClientMeter: %d events refused by ClientMeter and dropped: %s (%s): %s",
            len(events),
            ", ".join(str(event.get("id")) for event in events[:20]),
            status,
            answer[:500],
        )
        return False

    def note_error(self, status: int | None, answer: str) -> None:
        """Remember the latest delivery error on disk, for the spool command."""
        text = f"{status} {answer[:ANSWER_LIMIT]}" if status else answer[:ANSWER_LIMIT]
        if text == self._last_error or self.directory is None:
            return
        self._last_error = text
        with contextlib.suppress(OSError):
            write_atomic(
                self.directory / "state.json",
                {
                    "last_error": {
                        "status": status,
                        "answer": answer[:ANSWER_LIMIT],
                        "at": now_iso(),
                    }
                },
            )

    def clear_error(self) -> None:
        if self._last_error is None or self.directory is None:
            return
        self._last_error = None
        with contextlib.suppress(OSError):
            (self.directory / "state.json").unlink()


def _lock(fd: int) -> bool:
    """An exclusive record lock, without waiting: False if another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _same_file(path: Path, fd: int) -> bool:
    """The path still names the open file: not sent, split or buried while we waited."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _folder_bytes(folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.endswith(".json"):
                with contextlib.suppress(OSError):
                    total += entry.stat().st_size
    return total
