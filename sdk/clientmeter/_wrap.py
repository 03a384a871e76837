"""Metered clients: the provider's own client class, with its HTTP verbs observed.

Every call a provider SDK makes goes through its client's ``post``/``get``: the typed
resources, ``with_raw_response``, ``with_streaming_response`` (at either level), the
helpers that run several requests (Anthropic's ``tool_runner`` and message threads,
OpenAI's stream managers). So ``wrap()`` makes a copy of the app's client (the SDK's own
``copy()``, as ``with_options()`` does) whose class is a subclass overriding those two
methods, and whatever the app calls, the requests that spend tokens are seen there. The
copy *is* an ``anthropic.Anthropic`` (or ``openai.OpenAI``…): ``isinstance`` and type
hints hold, and everything else is the SDK's own code.

Recording never raises into the app: a failure is logged and the app's call and its
result are unaffected. The one deliberate exception is the opt-in ``BudgetExceeded``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from clientmeter._budget import BudgetGuard
from clientmeter._events import Call, build_event
from clientmeter._observe import drop_none
from clientmeter._sender import Sender
from clientmeter._tags import EMPTY, Tags, current

log = logging.getLogger("clientmeter")


@dataclass(frozen=True)
class Meter:
    """Where events go and what they are tagged with, shared by a client and its copies."""

    sender: Sender | None
    client: str | None
    defaults: Tags = EMPTY
    call_tags: Tags = EMPTY
    guard: BudgetGuard | None = None

    def with_tags(self, tags: Tags) -> Meter:
        return replace(self, call_tags=self.call_tags.merged(tags))

    def check_budget(self) -> None:
        if self.guard is not None:
            self.guard.check()

    async def acheck_budget(self) -> None:
        if self.guard is not None:
            await self.guard.acheck()

    def start(self, body: Any) -> Call | None:
        """Capture the tags in force now: the wrap defaults < ``tags()`` blocks < ``with_tags``."""
        if self.sender is None:
            return None  # not configured: nothing will be recorded, so nothing is followed
        try:
            tags = self.defaults.merged(current()).merged(self.call_tags)
            model = body.get("model") if isinstance(body, dict) else None
            return Call(tags=tags, model=model if isinstance(model, str) else None, body=body)
        except Exception:
            log.exception("ClientMeter: could not prepare a call record")
            return None

    def record_body(
        self,
        call: Call,
        body: dict[str, Any],
        *,
        provider: str,
        request_id: str | None,
        status_code: int = 200,
    ) -> None:
        """Record a response body read as JSON (a message, a completion, a response)."""
        usage = body.get("usage")
        if not isinstance(usage, dict):
            return  # e.g. an OpenAI background response still in progress: no usage yet
        tier = body.get("service_tier")
        self.record(
            call,
            provider=provider,
            event_id=body.get("id"),
            model=body.get("model"),
            usage=drop_none(usage),
            request_id=request_id,
            latency_ms=call.elapsed_ms(),
            status_code=status_code,
            service_tier=tier if isinstance(tier, str) else None,
        )

    def record(self, call: Call | None, **fields: Any) -> None:
        if self.sender is None or call is None:
            return
        try:
            self.sender.record(build_event(call=call, client=self.client, **fields))
        except Exception:
            log.exception("ClientMeter: could not record a call")


Send = Callable[..., Any]


class Provider(Protocol):
    """What differs between Anthropic and OpenAI: which requests count, how to read them."""

    name: str

    def route(self, method: str, path: str) -> str | None:
        """The kind of request (``None``: not ours, passed straight through)."""

    def call(
        self, client: Any, meter: Meter, kind: str, send: Send, path: Any, args: Any, kwargs: Any
    ) -> Any:
        """Make the request with ``send`` and follow its result."""

    async def acall(
        self,
        client: Any,
        meter: Meter,
        kind: str,
        send: Callable[..., Awaitable[Any]],
        path: Any,
        args: Any,
        kwargs: Any,
    ) -> Any:
        """The same for an async client."""


class _SyncMetered:
    """The verbs of a metered sync client (copied into its class, see ``_metered_class``)."""

    _cm_meter: Meter | None = None
    _cm_provider: Provider
    _cm_base: Any

    def post(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        send = functools.partial(self._cm_base.post, self)
        meter = self._cm_meter
        kind = self._cm_provider.route("POST", path) if meter is not None else None
        if meter is None or kind is None:
            return send(path, *args, **kwargs)
        return self._cm_provider.call(self, meter, kind, send, path, args, kwargs)

    def get(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        send = functools.partial(self._cm_base.get, self)
        meter = self._cm_meter
        kind = self._cm_provider.route("GET", path) if meter is not None else None
        if meter is None or kind is None:
            return send(path, *args, **kwargs)
        return self._cm_provider.call(self, meter, kind, send, path, args, kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        new = self._cm_base.copy(self, *args, **kwargs)
        new._cm_meter = self._cm_meter
        return new


class _AsyncMetered:
    """The verbs of a metered async client."""

    _cm_meter: Meter | None = None
    _cm_provider: Provider
    _cm_base: Any

    async def post(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        send = functools.partial(self._cm_base.post, self)
        meter = self._cm_meter
        kind = self._cm_provider.route("POST", path) if meter is not None else None
        if meter is None or kind is None:
            return await send(path, *args, **kwargs)
        return await self._cm_provider.acall(self, meter, kind, send, path, args, kwargs)

    async def get(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        send = functools.partial(self._cm_base.get, self)
        meter = self._cm_meter
        kind = self._cm_provider.route("GET", path) if meter is not None else None
        if meter is None or kind is None:
            return await send(path, *args, **kwargs)
        return await self._cm_provider.acall(self, meter, kind, send, path, args, kwargs)

    copy = _SyncMetered.copy


def is_metered(obj: Any) -> bool:
    return getattr(type(obj), "_cm_base", None) is not None


_classes: dict[type, type] = {}


def _metered_class(cls: type, provider: Provider, is_async: bool) -> type:
    """A direct subclass of the app's client class with the metered verbs.

    The verbs are copied into the subclass rather than mixed in: a mixin base would change
    the instance layout CPython compares before it lets ``__class__`` be set.
    """
    if getattr(cls, "_cm_base", None) is not None:
        return cls
    if cls in _classes:
        return _classes[cls]
    verbs = _AsyncMetered if is_async else _SyncMetered
    namespace: dict[str, Any] = {
        # Same name and module as the app's class: reprs, logs and tracebacks read as before.
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "_cm_provider": provider,
        "_cm_base": cls,
        "_cm_meter": None,
        "post": verbs.__dict__["post"],
        "get": verbs.__dict__["get"],
        "copy": verbs.__dict__["copy"],
        "with_options": verbs.__dict__["copy"],
    }
    metered = _classes[cls] = type(cls.__name__, (cls,), namespace)
    return metered


def metered_copy(inner: Any, meter: Meter, provider: Provider, *, is_async: bool) -> Any:
    """A copy of the app's client that records its calls to ``meter``."""
    cls = _metered_class(type(inner), provider, is_async)
    new = inner.copy()
    if type(new) is not cls:
        new.__class__ = cls
        # Resources made before the class changed would hold the unmetered verbs.
        for name in list(vars(new)):
            if isinstance(getattr(cls, name, None), functools.cached_property):
                del new.__dict__[name]
    new._cm_meter = meter
    return new


def meter_of(client: Any) -> Meter | None:
    meter: Meter | None = getattr(client, "_cm_meter", None) if is_metered(client) else None
    return meter
