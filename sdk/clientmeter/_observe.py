"""Following a response body as the app reads it, whichever way it reads it.

A provider's SDK reads every body through the HTTP response's ``iter_bytes`` (or
``aiter_bytes``): its own stream classes, ``parse()``, ``read()``, ``json()``,
``iter_lines()`` of ``with_streaming_response``. So the body is observed there, once, on
the response object of the one call: the app's code path does not matter. The call is
recorded once, when the body ends, when the response is closed, when it is garbage
collected half-read, or at exit (``finish_all``) with what was seen so far.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

log = logging.getLogger("clientmeter")

_open: set[Observation] = set()
_open_lock = threading.Lock()


def drop_none(value: Any) -> Any:
    """The usage object without explicit nulls ("not applicable"), at any depth."""
    if isinstance(value, dict):
        return {key: drop_none(item) for key, item in value.items() if item is not None}
    return value


def usage_dict(usage: Any) -> dict[str, Any]:
    """A usage object (a pydantic model or a dict) with the API's own field names.

    ``exclude_unset`` keeps exactly the keys present in the response (unknown new fields
    included, as the SDKs keep extras); ``exclude_none`` drops explicit nulls, which would
    otherwise fail a strict integer check on ingest.
    """
    if isinstance(usage, dict):
        dropped: dict[str, Any] = drop_none(usage)
        return dropped
    dumped: dict[str, Any] = usage.model_dump(
        mode="json", by_alias=True, exclude_unset=True, exclude_none=True
    )
    return dumped


class Observation:
    """One call whose response body is being read. Subclasses read the bytes."""

    def __init__(self) -> None:
        self.done = False
        with _open_lock:
            _open.add(self)

    def feed(self, chunk: bytes) -> bytes:
        """See a piece of the body; return what the app gets (the same, unless filtered)."""
        return chunk

    def drain(self) -> bytes:
        """At the end of the body: anything a filter still holds back."""
        return b""

    def record(self) -> None:
        """Record the call from what was seen (called once)."""

    def finish(self) -> None:
        with _open_lock:
            if self.done:
                return
            self.done = True
            _open.discard(self)
        try:
            self.record()
        except Exception:
            log.exception("ClientMeter: could not record a call")


def finish_all() -> None:
    """At exit: record every call still in flight with the usage seen so far."""
    with _open_lock:
        pending = list(_open)
    for observation in pending:
        observation.finish()


def forget_all() -> None:
    """In a forked child: the parent records its own calls."""
    global _open_lock
    _open_lock = threading.Lock()
    _open.clear()


def follow(response: Any, observation: Observation, *, is_async: bool) -> None:
    """Feed ``response``'s body to ``observation`` as it is read, then finish it."""
    if hasattr(response, "_content"):  # read already (a body that was not streamed)
        observation.feed(response._content)
        observation.finish()
        return
    if is_async:
        _follow_async(response, observation)
    else:
        _follow_sync(response, observation)
    # Dropped half-read: record what was seen. (The observation holds no reference to the
    # response, so this can fire.)
    finalizer = weakref.finalize(response, observation.finish)
    finalizer.atexit = False  # the exit hook finishes open calls itself, in its own order


def _follow_sync(response: Any, observation: Observation) -> None:
    cls = type(response)
    ref = weakref.ref(response)

    def iter_bytes(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        target = ref()
        if target is None:
            return
        for chunk in cls.iter_bytes(target, *args, **kwargs):
            seen = observation.feed(chunk)
            if seen:
                yield seen
        tail = observation.drain()
        if tail:
            yield tail
        observation.finish()

    def close() -> None:
        target = ref()
        try:
            if target is not None:
                cls.close(target)
        finally:
            observation.finish()

    response.iter_bytes = iter_bytes
    response.close = close


def _follow_async(response: Any, observation: Observation) -> None:
    cls = type(response)
    ref = weakref.ref(response)

    async def aiter_bytes(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        target = ref()
        if target is None:
            return
        async for chunk in cls.aiter_bytes(target, *args, **kwargs):
            seen = observation.feed(chunk)
            if seen:
                yield seen
        tail = observation.drain()
        if tail:
            yield tail
        observation.finish()

    async def aclose() -> None:
        target = ref()
        try:
            if target is not None:
                await cls.aclose(target)
        finally:
            observation.finish()

    response.aiter_bytes = aiter_bytes
    response.aclose = aclose


# --- reading bodies -------------------------------------------------------------------


class SSEReader:
    """Splits Server-Sent Events into (event name, data) pairs as the bytes arrive.

    ``wanted(event, first_data_line)`` says whether an event's data is kept: most events
    of a stream (text deltas) are skipped without being joined or decoded.
    """

    def __init__(
        self,
        on_event: Callable[[str | None, bytes], None],
        wanted: Callable[[str | None, bytes], bool],
    ) -> None:
        self._on_event = on_event
        self._wanted = wanted
        self._tail = b""
        self._event: str | None = None
        self._data: list[bytes] = []
        self._keep: bool | None = None

    def feed(self, chunk: bytes) -> None:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                self._dispatch()
            elif line.startswith(b"data:"):
                data = line[6:] if line[5:6] == b" " else line[5:]
                if self._keep is None:
                    self._keep = self._wanted(self._event, data)
                if self._keep:
                    self._data.append(data)
            elif line.startswith(b"event:"):
                self._event = line[6:].strip().decode("utf-8", "replace")

    def end(self) -> None:
        if self._tail:
            self.feed(b"\n")
        self._dispatch()

    def _dispatch(self) -> None:
        if self._keep:
            self._on_event(self._event, b"\n".join(self._data))
        self._event = None
        self._data = []
        self._keep = None


class JSONBody(Observation):
    """A JSON body read in pieces (``with_streaming_response``); parsed once complete."""

    def __init__(self, on_body: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._on_body = on_body

    def feed(self, chunk: bytes) -> bytes:
        self._parts.append(chunk)
        return chunk

    def record(self) -> None:
        try:
            body = json.loads(b"".join(self._parts))
        except ValueError:
            return  # not read to the end: no usage to be had
        if isinstance(body, dict):
            self._on_body(body)


class JSONLines(Observation):
    """A JSON Lines body (batch results): each complete line is handed over as it arrives."""

    def __init__(self, on_line: Callable[[dict[str, Any]], None], *, needle: bytes = b"") -> None:
        super().__init__()
        self._tail = b""
        self._on_line = on_line
        self._needle = needle  # lines without it are not even decoded

    def feed(self, chunk: bytes) -> bytes:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            self._line(line)
        return chunk

    def record(self) -> None:
        if self._tail:
            self._line(self._tail)
            self._tail = b""

    def _line(self, line: bytes) -> None:
        if not line.strip() or self._needle not in line:
            return
        try:
            item = json.loads(line)
        except ValueError:
            return
        if isinstance(item, dict):
            self._on_line(item)


_USAGE_NULL = re.compile(rb'(,\s*"usage"\s*:\s*null\b)|("usage"\s*:\s*null\s*,)')
_EVENT_END = re.compile(rb"\r?\n\r?\n")


class SSEFilter:
    """Rewrites whole SSE events: ``decide(data)`` returns the data to pass on, or None.

    Used where the SDK asked the API for more than the app did (OpenAI's usage chunk), so
    the app still sees exactly the stream it asked for.
    """

    def __init__(self, decide: Callable[[bytes], bytes | None]) -> None:
        self._decide = decide
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        pending = self._pending + chunk
        if b"\r" in pending:  # CRLF line ends (rare): the general pattern
            out = []
            while (match := _EVENT_END.search(pending)) is not None:
                block, pending = pending[: match.start()], pending[match.end() :]
                kept = self._event(block)
                if kept is not None:
                    out.append(kept + match.group(0))
            self._pending = pending
            return b"".join(out)
        blocks = pending.split(b"\n\n")
        self._pending = blocks.pop()
        return b"".join(kept + b"\n\n" for kept in map(self._event, blocks) if kept is not None)

    def drain(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest

    def _event(self, block: bytes) -> bytes | None:
        if b'"usage"' not in block:
            return block
        lines = block.split(b"\n")
        data_lines = [line for line in lines if line.startswith(b"data:")]
        if len(data_lines) != 1:
            return block
        line = data_lines[0]
        data = line[6:] if line[5:6] == b" " else line[5:]
        decided = self._decide(data)
        if decided is None:
            return None
        if decided is data:
            return block
        return block.replace(line, b"data: " + decided)


def without_usage_null(data: bytes) -> bytes:
    """A chunk as it reads when usage was not asked for: no ``"usage": null`` key."""
    stripped = _USAGE_NULL.sub(b"", data, count=1)
    return stripped if stripped != data else data
