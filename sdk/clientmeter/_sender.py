"""Background delivery for one (ClientMeter URL, API key): batches, spool, retries, poison.

The app thread only appends to a list. A daemon thread cuts the list into batches (every
``interval`` seconds or ``max_batch`` events), writes each batch to this key's spool folder
*before* its first send, POSTs it with this key, and deletes the file once ClientMeter
answered. So an outage or a restart loses nothing that left memory, every resend carries
the same event ids (the server dedupes on them), and a batch never leaves with another key.

A batch that keeps failing because of what it holds is isolated: a ``4xx`` other than
401/403/404/408/429 at once, the same ``5xx`` on every retry once other batches went
through meanwhile. It is halved until the events at fault are alone; those go to the dead
letters with the server's answer, and everything else goes on being delivered.
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import json
import logging
import os
import random
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clientmeter._http import httpx
from clientmeter._spool import Spool

log = logging.getLogger("clientmeter")

USER_AGENT = "clientmeter-python/0.2.0"
MAX_RETRY_AFTER = 600.0
# Same status this many times in a row: a multi-event batch is halved, a single event
# (once other batches went through meanwhile) is a dead letter.
SPLIT_AFTER = 2
BURY_AFTER = 3

_exiting = False  # set by the exit hook once its flush is over: record straight to disk


def exit_flush_done() -> None:
    """From now on events go straight to the spool: no thread will run to send them."""
    global _exiting
    _exiting = True


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


def dedupe(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeated ids within one batch (the server refuses a batch that repeats an id)."""
    seen: set[str] = set()
    unique = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            unique.append(event)
    return unique


class Kind(enum.Enum):
    DELIVERED = "delivered"  # 2xx: every event has its result
    REFUSED = "refused"  # a 4xx about the batch's content: isolate the bad events
    SERVER = "server"  # 5xx: the server, or maybe this batch
    THROTTLED = "throttled"  # 408, 429: later, the same batch
    KEY = "key"  # 401, 403, 404, redirects: the key or URL is wrong; retry slowly
    UNREACHABLE = "unreachable"  # no HTTP answer at all


@dataclass
class Answer:
    kind: Kind
    status: int | None = None
    text: str = ""
    retry_after: float | None = None
    rejected: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)


@dataclass
class Hold:
    """A batch that failed with a server error: how often, since when, next try."""

    status: int | None
    first_failed: float
    count: int = 1
    not_before: float = 0.0


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


def classify(response: Any, events: list[dict[str, Any]]) -> Answer:
    status = response.status_code
    if 200 <= status < 300:
        return Answer(Kind.DELIVERED, status, rejected=_rejections(response, events))
    text = response.text
    if status in (408, 429):
        return Answer(Kind.THROTTLED, status, text, retry_after_seconds(response))
    if status >= 500:
        return Answer(Kind.SERVER, status, text, retry_after_seconds(response))
    if 400 <= status < 500 and status not in (401, 403, 404):
        return Answer(Kind.REFUSED, status, text)
    return Answer(Kind.KEY, status, text)


def _rejections(
    response: Any, events: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(event, result) for each event the server rejected; results come in event order."""
    try:
        results = response.json().get("results", [])
    except Exception:
        return []
    rejected = []
    for index, result in enumerate(results):
        if (
            isinstance(result, dict)
            and result.get("status") == "rejected"
            and index < len(events)
            and events[index].get("id") == result.get("id")
        ):
            rejected.append((events[index], result))
    return rejected


class Sender:
    """Delivers the events of one (URL, key) from a daemon thread. Never raises."""

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
        queue_max_bytes: int | None = None,
        dead_max_bytes: int | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/api/v1/usage"
        self.api_key = api_key
        self.spool = Spool(
            spool_dir,
            url=self.url,
            api_key=api_key,
            queue_max_bytes=queue_max_bytes,
            dead_max_bytes=dead_max_bytes,
        )
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
        self._holds: dict[str, Hold] = {}
        self._last_delivery = float("-inf")
        self._left_behind = 0  # events dead-lettered or dropped since the last flush()
        self._thread: threading.Thread | None = None
        self._closed = False
        _live_senders.add(self)
        with self._cond:
            self._start()

    # --- called from the app's threads -------------------------------------------------

    def record(self, event: dict[str, Any]) -> None:
        if _exiting or self._closed:
            # The exit flush is over (or the sender was closed): no thread will send this,
            # so it goes straight to the spool for the next run.
            if not self.spool.put([event]):
                self._left_behind += 1
            return
        with self._cond:
            self._start()
            if not self._buffer:
                self._buffer_since = time.monotonic()
            self._buffer.append(event)
            # Wake the thread to start the interval clock, or to send a full batch now.
            if len(self._buffer) == 1 or len(self._buffer) >= self.max_batch:
                self._cond.notify_all()

    def request_flush(self) -> int:
        """Ask the thread for a delivery round now; returns the ticket to wait for."""
        with self._cond:
            self._start()
            self._flush_wanted += 1
            self._cond.notify_all()
            return self._flush_wanted

    def await_flush(self, ticket: int, deadline: float | None) -> bool:
        """Wait for the round ``ticket``; True once nothing is left undelivered.

        On timeout the buffered events are written to the spool, so they survive an exit.
        """
        with self._cond:
            while self._flush_served < ticket:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                if self._thread is None or not self._thread.is_alive():
                    break  # no thread to serve it (shutdown): spool what is buffered
                self._cond.wait(remaining)
            served = self._flush_served >= ticket
            delivered = served and self._flush_ok
        if not served:
            self._spool_buffer()
        left_behind, self._left_behind = self._left_behind, 0
        return delivered and not left_behind

    def flush(self, timeout: float | None = 5.0) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        return self.await_flush(self.request_flush(), deadline)

    def queued_batches(self) -> int:
        return len(self.spool.names())

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
        """In a forked child: fresh locks, no thread, no copy of the parent's buffer.

        The parent still holds (and will send) what it recorded; the child starts empty
        and looks at the shared spool like any other process.
        """
        self._cond = threading.Condition()
        self._buffer = []
        self._thread = None
        self._pending = True
        self._holds = {}
        self._flush_wanted = self._flush_served = 0
        self._left_behind = 0
        if self._own_http:
            self._http = None
        self.spool.after_fork()

    # --- the delivery thread ----------------------------------------------------------

    def _start(self) -> None:
        if self._closed or _exiting or sys.is_finalizing():
            # A thread started during interpreter shutdown never runs, and its start()
            # would wait for it forever.
            return
        if self._thread is None or not self._thread.is_alive():
            thread = threading.Thread(target=self._run, name="clientmeter-sender", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # Python 3.12+ refuses new threads once shutdown began
                return
            self._thread = thread

    def _spool_buffer(self) -> None:
        with self._cond:
            events, self._buffer = self._buffer, []
        self._spool(events)

    def _spool(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), self.max_batch):
            batch = dedupe(events[start : start + self.max_batch])
            if not self.spool.put(batch):
                self._left_behind += len(batch)

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
        self._spool(events)
        if events:
            self._pending = True
        if forced or time.monotonic() >= self._next_attempt:
            self._deliver(forced=forced)
        if forced:
            with self._cond:
                self._flush_served = goal
                # Events recorded after this cycle took the buffer belong to a later flush.
                self._flush_ok = not self._pending
                self._cond.notify_all()

    def _deliver(self, *, forced: bool) -> None:
        """Send queued batches oldest first, isolating the ones that fail on their own."""
        waiting = False
        server_errors = 0
        rounds = 0
        while True:
            changed = taken = False
            names = self.spool.names()
            for name in names:
                hold = self._holds.get(name)
                if hold is not None and not forced and time.monotonic() < hold.not_before:
                    waiting = True
                    continue
                with self.spool.claim(name) as events:
                    if events is None:
                        taken = True  # another sender holds it (or it just went)
                        continue
                    answer = self._post(events)
                    if answer.kind is Kind.DELIVERED:
                        self._delivered(name, events, answer)
                        server_errors = 0
                        continue
                    if answer.kind is Kind.REFUSED:
                        self._isolate(name, events, answer)
                        changed = True
                        continue
                    if answer.kind is Kind.SERVER:
                        server_errors += 1
                        if self._suspect(name, events, answer, alone=len(names) == 1):
                            changed = True
                            continue
                        if server_errors < 2:
                            # One failing batch may be the batch: see whether the next goes.
                            waiting = True
                            continue
                self._schedule_retry(answer)  # down, throttled or a bad key: the key waits
                return
            rounds += 1
            if taken and forced and not changed and rounds < 40:
                # A flush wants an answer: give the other sender a moment to finish its
                # batch, then look again (it is gone if sent, back if not).
                time.sleep(0.05)
                continue
            if not changed:
                break
        waiting = waiting or taken
        if self._failures:
            log.info("ClientMeter: delivery to %s works again", self.endpoint)
            self.spool.clear_error()
        self._failures = 0
        self._holds = {name: hold for name, hold in self._holds.items() if name in names}
        self._pending = waiting
        if waiting:
            soonest = min((hold.not_before for hold in self._holds.values()), default=0.0)
            self._next_attempt = max(soonest, time.monotonic() + min(self.interval, 0.1))

    def _delivered(self, name: str, events: list[dict[str, Any]], answer: Answer) -> None:
        self._last_delivery = time.monotonic()
        self._holds.pop(name, None)
        if answer.rejected:
            for event, result in answer.rejected:
                log.warning(
                    "ClientMeter rejected event %s: %s", event.get("id"), result.get("errors")
                )
            self._bury(
                [event for event, _ in answer.rejected],
                name=f"{name}-rejected",
                status=answer.status,
                text=json.dumps([result for _, result in answer.rejected]),
                reason="rejected",
            )
        self.spool.remove(name)

    def _suspect(
        self, name: str, events: list[dict[str, Any]], answer: Answer, *, alone: bool
    ) -> bool:
        """Count a server error against the batch; isolate it once it looks like poison."""
        now = time.monotonic()
        hold = self._holds.get(name)
        if hold is None:
            hold = self._holds[name] = Hold(answer.status, first_failed=now)
        elif hold.status != answer.status:
            hold.status, hold.count = answer.status, 1  # "the same 5xx on every retry"
        else:
            hold.count += 1
        hold.not_before = now + min(self.backoff_max, self.backoff_base * 2 ** (hold.count - 1))
        others_went_through = self._last_delivery > hold.first_failed
        if len(events) > 1:
            poisoned = hold.count >= SPLIT_AFTER and (others_went_through or alone)
        else:
            poisoned = hold.count >= BURY_AFTER and others_went_through
        if poisoned:
            del self._holds[name]
            self._isolate(name, events, answer, failing_since=hold.first_failed)
        else:
            self._warn(f"{self.endpoint} answered {answer.status}")
            self.spool.note_error(answer.status, answer.text)
        return poisoned

    def _isolate(
        self,
        name: str,
        events: list[dict[str, Any]],
        answer: Answer,
        *,
        failing_since: float | None = None,
    ) -> None:
        """Halve a batch the server will not take, or make a dead letter of its one event.

        Halves of a batch that failed with a server error inherit the time it started
        failing: a delivery since then (even of the other half) shows the server works.
        """
        if len(events) > 1:
            half = len(events) // 2
            # Written before the original goes: a crash between the two resends, and the
            # server dedupes; the reverse order would lose events.
            for part, suffix in ((events[:half], "a"), (events[half:], "b")):
                self.spool.put(part, name=f"{name}{suffix}", force=True)
                if failing_since is not None:
                    self._holds[f"{name}{suffix}"] = Hold(None, failing_since, count=0)
        else:
            self._bury(events, name=name, status=answer.status, text=answer.text, reason="refused")
        self.spool.remove(name)

    def _bury(
        self, events: list[dict[str, Any]], *, name: str, status: int | None, text: str, reason: str
    ) -> None:
        self._left_behind += len(events)
        if self.spool.bury(events, name=name, status=status, answer=text, reason=reason):
            log.error(
                "ClientMeter: %d event(s) moved to the dead letters in %s (%s %s): %s",
                len(events),
                self.spool.dead_dir,
                status,
                text[:300],
                ", ".join(str(event.get("id")) for event in events[:10]),
            )

    def _schedule_retry(self, answer: Answer) -> None:
        if answer.kind is Kind.KEY:
            log.error(
                "ClientMeter answered %s at %s: %s; events kept in the spool",
                answer.status,
                self.endpoint,
                answer.text[:500],
            )
            self._failures = max(self._failures, 32)  # a configuration problem: retry slowly
        elif answer.kind is Kind.UNREACHABLE:
            self._warn(f"cannot reach {self.endpoint} ({answer.text})")
        else:
            self._warn(f"{self.endpoint} answered {answer.status}")
        self.spool.note_error(answer.status, answer.text)
        self._failures += 1
        delay = min(self.backoff_max, self.backoff_base * 2 ** (self._failures - 1))
        delay = random.uniform(delay / 2, delay)  # jitter: spread the retries of many processes
        if answer.retry_after is not None:
            delay = max(delay, min(answer.retry_after, MAX_RETRY_AFTER))
        self._next_attempt = time.monotonic() + delay
        self._pending = True

    def _client(self) -> Any:
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout)
        return self._http

    def _post(self, events: list[dict[str, Any]]) -> Answer:
        try:
            response = self._client().post(
                self.endpoint,
                json={"events": events},
                headers={"Authorization": f"Bearer {self.api_key}", "User-Agent": USER_AGENT},
                timeout=self.timeout,
            )
        except Exception as exc:
            return Answer(Kind.UNREACHABLE, None, repr(exc))
        return classify(response, events)

    def _warn(self, message: str) -> None:
        # One warning per outage, then quiet until delivery works again.
        level = logging.WARNING if self._failures == 0 else logging.DEBUG
        log.log(level, "ClientMeter: %s; events kept in the spool and retried", message)


_live_senders: weakref.WeakSet[Sender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _exiting
    _exiting = False
    for sender in list(_live_senders):
        sender.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
