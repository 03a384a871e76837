"""Background delivery: batches events, spools them to disk, retries with backoff.

The app thread only appends to a list. A daemon thread cuts the list into batches (every
``interval`` seconds or ``max_batch`` events), writes each batch to the spool directory
*before* its first send, POSTs it, and deletes the file once ClientMeter answered. So an
outage or a restart loses nothing that left memory, and every resend carries the same
event ids (the server dedupes on them).
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import hashlib
import json
import logging
import os
import random
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clientmeter._http import httpx

try:
    import fcntl
except ImportError:
    # Windows: no flock; two processes may then send the same file, and the server dedupes.
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("clientmeter")

USER_AGENT = "clientmeter-python/0.1.0"
MAX_RETRY_AFTER = 600.0


def default_spool_dir() -> Path:
    """CLIENTMETER_SPOOL_DIR, else the per-user cache directory of the platform."""
    configured = os.environ.get("CLIENTMETER_SPOOL_DIR")
    if configured:
        return Path(configured)
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "clientmeter" / "spool"


def spool_namespace(url: str) -> str:
    """One spool subdirectory per ClientMeter server, so events never go to the wrong one.

    Not per API key: after a key rotation the spooled events still go out, with the new key.
    """
    return hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def dedupe(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeated ids within one batch (the server refuses a batch that repeats an id)."""
    seen: set[str] = set()
    unique = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            unique.append(event)
    return unique


class Spool:
    """Batches waiting for delivery, one JSON file each, sent oldest first.

    While a file is being sent it is held with an exclusive ``flock``, so processes sharing
    the directory do not send the same batch at the same time. If the directory cannot be
    used the batches stay in memory (and are lost with the process), with a warning.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._memory: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        if directory is not None:
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("ClientMeter: cannot use spool directory %s (%s)", directory, exc)
                self.directory = None

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._memory = {}

    def put(self, events: list[dict[str, Any]], *, name: str | None = None) -> None:
        name = name or f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if self.directory is not None:
            temporary = self.directory / f".{name}.tmp"
            try:
                temporary.write_text(json.dumps({"events": events}), encoding="utf-8")
                # Atomic: a reader sees the whole batch or no file at all.
                os.replace(temporary, self.directory / f"{name}.json")
                return
            except OSError as exc:
                log.warning("ClientMeter: cannot write the spool (%s); keeping it in memory", exc)
        with self._lock:
            self._memory[name] = events

    def names(self) -> list[str]:
        with self._lock:
            names = set(self._memory)
        if self.directory is not None:
            with contextlib.suppress(OSError):
                names.update(path.stem for path in self.directory.glob("*.json"))
        return sorted(names)

    def remove(self, name: str) -> None:
        with self._lock:
            if self._memory.pop(name, None) is not None:
                return
        if self.directory is not None:
            with contextlib.suppress(OSError):
                (self.directory / f"{name}.json").unlink()

    @contextlib.contextmanager
    def claim(self, name: str) -> Iterator[list[dict[str, Any]] | None]:
        """The batch's events while this process holds it, or None if it is gone or taken."""
        with self._lock:
            in_memory = self._memory.get(name)
        if in_memory is not None or self.directory is None:
            yield in_memory
            return
        path = self.directory / f"{name}.json"
        try:
            handle = path.open("rb")
        except OSError:
            yield None
            return
        with handle:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    yield None
                    return
                if os.fstat(handle.fileno()).st_nlink == 0:  # sent and removed meanwhile
                    yield None
                    return
            try:
                events = json.loads(handle.read())["events"]
            except (ValueError, KeyError, TypeError):
                log.error("ClientMeter: unreadable spool file %s, moved aside", path)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                yield None
                return
            yield events


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    SPLIT = "split"
    RETRY = "retry"


def retry_after_seconds(response: Any) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


class Sender:
    """Delivers events to one ClientMeter server from a daemon thread. Never raises."""

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        spool_dir: Path | None,
        http_client: Any = None,
        max_batch: int = 100,
        interval: float = 1.0,
        timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_max: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/api/v1/usage"
        self.api_key = api_key
        self.spool = Spool(spool_dir / spool_namespace(url) if spool_dir is not None else None)
        self.max_batch = max_batch
        self.interval = interval
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._own_http = http_client is None
        self._http = http_client
        self._cond = threading.Condition()
        self._buffer: list[dict[str, Any]] = []
        self._buffer_since = 0.0
        self._flush_wanted = 0
        self._flush_served = 0
        self._flush_ok = False
        self._pending = True  # a previous run may have left batches in the spool
        self._next_attempt = 0.0
        self._failures = 0
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._closed = False
        _live_senders.add(self)
        with self._cond:
            self._start()

    # --- called from the app's threads -------------------------------------------------

    def record(self, event: dict[str, Any]) -> None:
        with self._cond:
            self._start()
            if not self._buffer:
                self._buffer_since = time.monotonic()
            self._buffer.append(event)
            # Wake the thread to start the interval clock, or to send a full batch now.
            if len(self._buffer) == 1 or len(self._buffer) >= self.max_batch:
                self._cond.notify_all()

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Send what is buffered or spooled now; True once nothing is left undelivered.

        On timeout the buffered events are written to the spool, so they survive an exit.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._start()
            self._flush_wanted += 1
            goal = self._flush_wanted
            self._cond.notify_all()
            while self._flush_served < goal:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            served = self._flush_served >= goal
            delivered = served and self._flush_ok
        if not served:
            self._spool_buffer()
        return delivered

    def close(self, timeout: float | None = 5.0) -> bool:
        """Flush, then stop the thread. Events recorded afterwards are only spooled."""
        delivered = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._own_http and self._http is not None and not (thread and thread.is_alive()):
            # Close the keep-alive connection, so the server side is not left waiting on it.
            with contextlib.suppress(Exception):
                self._http.close()
            self._http = None
        return delivered

    def after_fork(self) -> None:
        """In a forked child: fresh locks, no thread, no copy of the parent's buffer."""
        self._cond = threading.Condition()
        self._buffer = []
        self._thread = None
        self._pid = os.getpid()
        self._pending = True
        if self._own_http:
            self._http = None
        self.spool.after_fork()

    # --- the delivery thread ----------------------------------------------------------

    def _start(self) -> None:
        if self._closed:
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="clientmeter-sender", daemon=True
            )
            self._thread.start()

    def _spool_buffer(self) -> None:
        with self._cond:
            events, self._buffer = self._buffer, []
        for start in range(0, len(events), self.max_batch):
            self.spool.put(dedupe(events[start : start + self.max_batch]))

    def _run(self) -> None:
        while not self._closed:
            try:
                self._cycle()
            except Exception:
                log.exception("ClientMeter: delivery error")
                time.sleep(1.0)

    def _cycle(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                goal = self._flush_wanted
                forced = goal > self._flush_served
                buffer_due = bool(self._buffer) and (
                    forced
                    or len(self._buffer) >= self.max_batch
                    or now - self._buffer_since >= self.interval
                )
                retry_due = self._pending and now >= self._next_attempt
                if forced or buffer_due or retry_due or self._closed:
                    break
                waits = []
                if self._buffer:
                    waits.append(self._buffer_since + self.interval - now)
                if self._pending:
                    waits.append(self._next_attempt - now)
                self._cond.wait(max(0.01, min(waits)) if waits else None)
            if self._closed:
                return
            events: list[dict[str, Any]] = []
            if buffer_due:
                events, self._buffer = self._buffer, []
        for start in range(0, len(events), self.max_batch):
            self.spool.put(dedupe(events[start : start + self.max_batch]))
        if events:
            self._pending = True
        if forced or time.monotonic() >= self._next_attempt:
            self._deliver()
        if forced:
            with self._cond:
                self._flush_served = goal
                # Events recorded after this cycle took the buffer belong to a later flush.
                self._flush_ok = not self._pending
                self._cond.notify_all()

    def _deliver(self) -> None:
        """Send spooled batches oldest first; stop at the first one that must be retried."""
        busy = False
        while True:
            split = False
            for name in self.spool.names():
                with self.spool.claim(name) as events:
                    if events is None:
                        busy = True  # another sender holds it (or it just went): look again
                        continue
                    outcome, retry_after = self._post(events)
                    if outcome is Outcome.RETRY:
                        self._schedule_retry(retry_after)
                        return
                    if outcome is Outcome.SPLIT:
                        half = len(events) // 2
                        self.spool.put(events[:half], name=f"{name}a")
                        self.spool.put(events[half:], name=f"{name}b")
                        split = True
                    self.spool.remove(name)
            if not split:
                break
        if self._failures:
            log.info("ClientMeter: delivery works again")
        self._failures = 0
        self._pending = busy
        if busy:
            self._next_attempt = time.monotonic() + self.interval

    def _schedule_retry(self, retry_after: float | None) -> None:
        self._failures += 1
        delay = min(self.backoff_max, self.backoff_base * 2 ** (self._failures - 1))
        delay = random.uniform(delay / 2, delay)  # jitter: spread the retries of many processes
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        self._next_attempt = time.monotonic() + delay
        self._pending = True

    def _client(self) -> Any:
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout)
        return self._http

    def _post(self, events: list[dict[str, Any]]) -> tuple[Outcome, float | None]:
        try:
            response = self._client().post(
                self.endpoint,
                json={"events": events},
                headers={"Authorization": f"Bearer {self.api_key}", "User-Agent": USER_AGENT},
                timeout=self.timeout,
            )
        except Exception as exc:
            self._warn(f"cannot reach {self.endpoint} ({exc!r})")
            return Outcome.RETRY, None
        status = response.status_code
        if status == 200:
            self._log_rejections(response)
            return Outcome.DELIVERED, None
        if status in (408, 429) or status >= 500:
            self._warn(f"{self.endpoint} answered {status}")
            return Outcome.RETRY, retry_after_seconds(response)
        if status in (400, 413, 422):
            if len(events) > 1:  # find the one bad event by halving; the rest goes through
                return Outcome.SPLIT, None
            log.error(
                "ClientMeter refused event %s (%s): %s; dropping it",
                events[0].get("id"),
                status,
                response.text[:500],
            )
            return Outcome.DELIVERED, None
        # 401, 403, 404…: a configuration problem. Keep the events and retry slowly.
        log.error(
            "ClientMeter answered %s at %s: %s; events kept in the spool",
            status,
            self.endpoint,
            response.text[:500],
        )
        self._failures = max(self._failures, 32)
        return Outcome.RETRY, None

    def _warn(self, message: str) -> None:
        # One warning per outage, then quiet until delivery works again.
        level = logging.WARNING if self._failures == 0 else logging.DEBUG
        log.log(level, "ClientMeter: %s; events kept in the spool and retried", message)

    def _log_rejections(self, response: Any) -> None:
        try:
            results = response.json().get("results", [])
        except Exception:
            return
        for result in results:
            if isinstance(result, dict) and result.get("status") == "rejected":
                log.warning(
                    "ClientMeter rejected event %s: %s", result.get("id"), result.get("errors")
                )


_live_senders: weakref.WeakSet[Sender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sender in list(_live_senders):
        sender.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
