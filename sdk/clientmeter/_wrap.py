"""Transparent proxies around an Anthropic client that record the usage of every call.

Only the calls that spend tokens are intercepted (``messages.create``/``parse``/``stream``
and ``messages.batches.create``/``results``, the same under ``beta``); everything else is passed through untouched
by ``__getattr__``. Recording never raises into the app: a failure is logged and the
app's call and its result are unaffected. The one deliberate exception is the opt-in
budget guard's ``BudgetExceeded``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

from clientmeter._budget import BudgetGuard
from clientmeter._events import Call, StreamUsage, build_event, usage_dict
from clientmeter._sender import Sender
from clientmeter._tags import EMPTY, Tags, current

log = logging.getLogger("clientmeter")


@dataclass(frozen=True)
class Meter:
    """Where events go and what they are tagged with, shared by a client and its proxies."""

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

    def start(self, model: object) -> Call | None:
        """Capture the tags in force now: the wrap defaults < ``tags()`` blocks < ``with_tags``."""
        try:
            tags = self.defaults.merged(current()).merged(self.call_tags)
            return Call(tags=tags, model=model if isinstance(model, str) else None)
        except Exception:
            log.exception("ClientMeter: could not prepare a call record")
            return None

    def record(self, call: Call | None, **fields: Any) -> None:
        if self.sender is None or call is None:
            return
        try:
            self.sender.record(build_event(call=call, client=self.client, **fields))
        except Exception:
            log.exception("ClientMeter: could not record a call")

    def record_message(
        self,
        call: Call | None,
        message: Any,
        *,
        latency: bool = True,
        service_tier: str | None = None,
        occurred_at: str | None = None,
        extra_metadata: dict[str, str] | None = None,
    ) -> None:
        if call is None:
            return
        try:
            usage = usage_dict(message.usage)
            self.record(
                call,
                event_id=getattr(message, "id", None),
                model=getattr(message, "model", None),
                usage=usage,
                request_id=getattr(message, "_request_id", None),
                latency_ms=call.elapsed_ms() if latency else None,
                service_tier=service_tier,
                occurred_at=occurred_at,
                extra_metadata=extra_metadata,
            )
        except Exception:
            log.exception("ClientMeter: could not read the usage of a message")


class _Proxy:
    """Forwards every attribute to the wrapped object; ``isinstance`` sees the wrapped class."""

    _cm_inner: Any

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "_cm_inner", inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_cm_inner"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_cm_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._cm_inner, name, value)

    def __dir__(self) -> list[str]:
        return dir(self._cm_inner)

    def __repr__(self) -> str:
        return repr(self._cm_inner)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._cm_inner)


# --- streams --------------------------------------------------------------------------


class _StreamRecorder:
    """Follows a stream's raw events and records the call once, when it ends or is closed."""

    def __init__(self, meter: Meter, call: Call | None, stream: Any) -> None:
        self.meter = meter
        self.call = call
        self.stream = stream
        self.usage = StreamUsage()
        self.done = False

    def observe(self, event: Any) -> None:
        try:
            self.usage.observe(event)
            if self.usage.stopped:
                self.finish()
        except Exception:
            log.exception("ClientMeter: could not read a stream event")

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.usage.usage is None or self.call is None:
            return  # no message_start: nothing was generated
        try:
            request_id = self.stream.response.headers.get("request-id")
        except Exception:
            request_id = None
        self.meter.record(
            self.call,
            event_id=self.usage.message_id,
            model=self.usage.model,
            usage=self.usage.usage,
            request_id=request_id,
            latency_ms=self.call.elapsed_ms(),
        )


class ObservedStream(_Proxy):
    """A ``Stream[RawMessageStreamEvent]`` that records its usage as it is consumed."""

    def __init__(self, inner: Any, recorder: _StreamRecorder) -> None:
        super().__init__(inner)
        self._cm_recorder = recorder
        self._cm_iterator = self._cm_events()

    def _cm_events(self) -> Iterator[Any]:
        try:
            for event in self._cm_inner:
                self._cm_recorder.observe(event)
                yield event
        finally:
            self._cm_recorder.finish()

    def __iter__(self) -> Iterator[Any]:
        return self._cm_iterator

    def __next__(self) -> Any:
        return next(self._cm_iterator)

    def __enter__(self) -> ObservedStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._cm_inner.close()
        finally:
            self._cm_recorder.finish()


class ObservedAsyncStream(_Proxy):
    """An ``AsyncStream[RawMessageStreamEvent]`` that records its usage as it is consumed."""

    def __init__(self, inner: Any, recorder: _StreamRecorder) -> None:
        super().__init__(inner)
        self._cm_recorder = recorder
        self._cm_iterator = self._cm_events()

    async def _cm_events(self) -> AsyncIterator[Any]:
        try:
            async for event in self._cm_inner:
                self._cm_recorder.observe(event)
                yield event
        finally:
            self._cm_recorder.finish()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._cm_iterator

    async def __anext__(self) -> Any:
        return await self._cm_iterator.__anext__()

    async def __aenter__(self) -> ObservedAsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self._cm_inner.close()
        finally:
            self._cm_recorder.finish()


def _observe_raw(meter: Meter, call: Call | None, raw: Any, *, is_async: bool) -> Any:
    try:
        recorder = _StreamRecorder(meter, call, raw)
        return ObservedAsyncStream(raw, recorder) if is_async else ObservedStream(raw, recorder)
    except Exception:
        log.exception("ClientMeter: could not follow a stream")
        return raw


def _observe_helper_stream(meter: Meter, call: Call | None, stream: Any, *, is_async: bool) -> None:
    """Follow a ``MessageStream``: swap in an observed raw stream before it is iterated.

    The helper reads ``_raw_stream`` lazily from its generator, so every path (iteration,
    ``text_stream``, ``get_final_message()``, ``until_done()``) goes through the observer.
    """
    raw = getattr(stream, "_raw_stream", None)
    if raw is None:
        log.warning("ClientMeter: unknown stream helper %r; its usage is not recorded", stream)
        return
    stream._raw_stream = _observe_raw(meter, call, raw, is_async=is_async)


class _StreamManager(_Proxy):
    def __init__(self, inner: Any, meter: Meter, call: Call | None) -> None:
        super().__init__(inner)
        self._cm_meter = meter
        self._cm_call = call

    def __enter__(self) -> Any:
        if self._cm_call is not None:
            self._cm_call.started = time.monotonic()
        stream = self._cm_inner.__enter__()
        _observe_helper_stream(self._cm_meter, self._cm_call, stream, is_async=False)
        return stream

    def __exit__(self, *exc_info: Any) -> Any:
        return self._cm_inner.__exit__(*exc_info)


class _AsyncStreamManager:
    """``async with client.messages.stream(...)``: the budget check, then the SDK's manager.

    The SDK's manager is only made in ``__aenter__``, after the check: making it creates the
    request coroutine, which a refused call would leave never awaited.
    """

    def __init__(self, make_inner: Any, meter: Meter, call: Call | None) -> None:
        self._cm_make_inner = make_inner
        self._cm_inner: Any = None
        self._cm_meter = meter
        self._cm_call = call

    async def __aenter__(self) -> Any:
        await self._cm_meter.acheck_budget()
        if self._cm_call is not None:
            self._cm_call.started = time.monotonic()
        self._cm_inner = self._cm_make_inner()
        stream = await self._cm_inner.__aenter__()
        _observe_helper_stream(self._cm_meter, self._cm_call, stream, is_async=True)
        return stream

    async def __aexit__(self, *exc_info: Any) -> Any:
        if self._cm_inner is not None:
            return await self._cm_inner.__aexit__(*exc_info)
        return None


# --- Message Batches -------------------------------------------------------------------


class _ResultRecorder:
    """Records each succeeded batch result, priced as batch; other results carry no usage."""

    def __init__(
        self, meter: Meter, call: Call | None, batch_id: str, ended_at: str | None
    ) -> None:
        self.meter = meter
        self.call = call
        self.batch_id = batch_id
        # The batch's end, not the time the results are read: re-reading the results later
        # must produce identical events, or the server would see a conflicting replay.
        self.ended_at = ended_at

    def observe(self, item: Any) -> None:
        try:
            result = getattr(item, "result", None)
            if getattr(result, "type", None) != "succeeded" or result is None:
                return
            self.meter.record_message(
                self.call,
                result.message,
                latency=False,
                service_tier="batch",
                occurred_at=self.ended_at,
                extra_metadata={"batch_id": self.batch_id, "custom_id": str(item.custom_id)},
            )
        except Exception:
            log.exception("ClientMeter: could not read a batch result")


class ObservedResults(_Proxy):
    def __init__(self, inner: Any, recorder: _ResultRecorder) -> None:
        super().__init__(inner)
        self._cm_recorder = recorder
        self._cm_iterator = self._cm_items()

    def _cm_items(self) -> Iterator[Any]:
        for item in self._cm_inner:
            self._cm_recorder.observe(item)
            yield item

    def __iter__(self) -> Iterator[Any]:
        return self._cm_iterator

    def __next__(self) -> Any:
        return next(self._cm_iterator)


class ObservedAsyncResults(_Proxy):
    def __init__(self, inner: Any, recorder: _ResultRecorder) -> None:
        super().__init__(inner)
        self._cm_recorder = recorder
        self._cm_iterator = self._cm_items()

    async def _cm_items(self) -> AsyncIterator[Any]:
        async for item in self._cm_inner:
            self._cm_recorder.observe(item)
            yield item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._cm_iterator

    async def __anext__(self) -> Any:
        return await self._cm_iterator.__anext__()


def _retrieve_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {key: kwargs[key] for key in ("workspace_id", "extra_headers") if key in kwargs}


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


class _Batches(_Proxy):
    def __init__(self, inner: Any, meter: Meter) -> None:
        super().__init__(inner)
        self._cm_meter = meter

    def create(self, *args: Any, **kwargs: Any) -> Any:
        self._cm_meter.check_budget()
        return self._cm_inner.create(*args, **kwargs)

    def results(self, message_batch_id: str, **kwargs: Any) -> Any:
        meter = self._cm_meter
        call = meter.start(None)
        try:
            batch = self._cm_inner.retrieve(message_batch_id, **_retrieve_kwargs(kwargs))
            ended_at = _iso(batch.ended_at)
        except Exception:
            ended_at = None
        decoder = self._cm_inner.results(message_batch_id, **kwargs)
        try:
            return ObservedResults(
                decoder, _ResultRecorder(meter, call, message_batch_id, ended_at)
            )
        except Exception:
            log.exception("ClientMeter: could not follow batch results")
            return decoder


class _AsyncBatches(_Proxy):
    def __init__(self, inner: Any, meter: Meter) -> None:
        super().__init__(inner)
        self._cm_meter = meter

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        await self._cm_meter.acheck_budget()
        return await self._cm_inner.create(*args, **kwargs)

    async def results(self, message_batch_id: str, **kwargs: Any) -> Any:
        meter = self._cm_meter
        call = meter.start(None)
        try:
            batch = await self._cm_inner.retrieve(message_batch_id, **_retrieve_kwargs(kwargs))
            ended_at = _iso(batch.ended_at)
        except Exception:
            ended_at = None
        decoder = await self._cm_inner.results(message_batch_id, **kwargs)
        try:
            recorder = _ResultRecorder(meter, call, message_batch_id, ended_at)
            return ObservedAsyncResults(decoder, recorder)
        except Exception:
            log.exception("ClientMeter: could not follow batch results")
            return decoder


# --- with_raw_response ------------------------------------------------------------------


class _RawStreamResponse(_Proxy):
    """The raw response of ``create(stream=True)``: ``parse()`` gives an observed stream."""

    def __init__(self, inner: Any, meter: Meter, call: Call | None, *, is_async: bool) -> None:
        super().__init__(inner)
        self._cm_meter = meter
        self._cm_call = call
        self._cm_async = is_async

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        if self._cm_async:
            return self._cm_aparse(*args, **kwargs)
        stream = self._cm_inner.parse(*args, **kwargs)
        return _observe_raw(self._cm_meter, self._cm_call, stream, is_async=False)

    async def _cm_aparse(self, *args: Any, **kwargs: Any) -> Any:
        stream = await self._cm_inner.parse(*args, **kwargs)
        return _observe_raw(self._cm_meter, self._cm_call, stream, is_async=True)


class _RawMessages(_Proxy):
    """``messages.with_raw_response``: returns the SDK's raw response, records its message."""

    def __init__(self, inner: Any, meter: Meter) -> None:
        super().__init__(inner)
        self._cm_meter = meter

    def create(self, *args: Any, **kwargs: Any) -> Any:
        meter = self._cm_meter
        meter.check_budget()
        call = meter.start(kwargs.get("model"))
        raw = self._cm_inner.create(*args, **kwargs)
        if kwargs.get("stream"):
            return _RawStreamResponse(raw, meter, call, is_async=False)
        try:
            message = raw.parse()  # parsed once: the SDK caches it for the app's own parse()
        except Exception:
            return raw  # the app's parse() will raise what is wrong
        meter.record_message(call, message)
        return raw


class _AsyncRawMessages(_Proxy):
    def __init__(self, inner: Any, meter: Meter) -> None:
        super().__init__(inner)
        self._cm_meter = meter

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        meter = self._cm_meter
        await meter.acheck_budget()
        call = meter.start(kwargs.get("model"))
        raw = await self._cm_inner.create(*args, **kwargs)
        if kwargs.get("stream"):
            return _RawStreamResponse(raw, meter, call, is_async=True)
        try:
            message = await raw.parse()
        except Exception:
            return raw
        meter.record_message(call, message)
        return raw


# --- messages and the client -----------------------------------------------------------


class _Messages(_Proxy):
    def __init__(self, inner: Any, meter: Meter) -> None:
        super().__init__(inner)
        self._cm_meter = meter

    @property
    def batches(self) -> Any:
        return _Batches(self._cm_inner.batches, self._cm_meter)

    @property
    def with_raw_response(self) -> Any:
        return _RawMessages(self._cm_inner.with_raw_response, self._cm_meter)

    def create(self, *args: Any, **kwargs: Any) -> Any:
        meter = self._cm_meter
        meter.check_budget()
        call = meter.start(kwargs.get("model"))
        result = self._cm_inner.create(*args, **kwargs)
        if kwargs.get("stream"):
            return _observe_raw(meter, call, result, is_async=False)
        meter.record_message(call, result)
        return result

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        meter = self._cm_meter
        meter.check_budget()
        call = meter.start(kwargs.get("model"))
        result = self._cm_inner.parse(*args, **kwargs)
        meter.record_message(call, result)
        return result

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        meter = self._cm_meter
        meter.check_budget()
        call = meter.start(kwargs.get("model"))
        return _StreamManager(self._cm_inner.stream(*args, **kwargs), meter, call)


class _AsyncMessages(_Proxy):
    def __init__(self, inner: Any, meter: Meter) -> None:
        super().__init__(inner)
        self._cm_meter = meter

    @property
    def batches(self) -> Any:
        return _AsyncBatches(self._cm_inner.batches, self._cm_meter)

    @property
    def with_raw_response(self) -> Any:
        return _AsyncRawMessages(self._cm_inner.with_raw_response, self._cm_meter)

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        meter = self._cm_meter
        await meter.acheck_budget()
        call = meter.start(kwargs.get("model"))
        result = await self._cm_inner.create(*args, **kwargs)
        if kwargs.get("stream"):
            return _observe_raw(meter, call, result, is_async=True)
        meter.record_message(call, result)
        return result

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        meter = self._cm_meter
        await meter.acheck_budget()
        call = meter.start(kwargs.get("model"))
        result = await self._cm_inner.parse(*args, **kwargs)
        meter.record_message(call, result)
        return result

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        # Not a coroutine in the SDK either: the request (and the budget check) happen
        # in ``async with``.
        call = self._cm_meter.start(kwargs.get("model"))
        messages = self._cm_inner
        return _AsyncStreamManager(lambda: messages.stream(*args, **kwargs), self._cm_meter, call)


class _Beta(_Proxy):
    """``client.beta``: its ``messages`` are recorded like the stable ones."""

    def __init__(self, inner: Any, meter: Meter, *, is_async: bool) -> None:
        super().__init__(inner)
        self._cm_meter = meter
        self._cm_async = is_async

    @property
    def messages(self) -> Any:
        if self._cm_async:
            return _AsyncMessages(self._cm_inner.messages, self._cm_meter)
        return _Messages(self._cm_inner.messages, self._cm_meter)


class MeteredClient(_Proxy):
    """An Anthropic or AsyncAnthropic client whose token-spending calls are recorded."""

    def __init__(self, inner: Any, meter: Meter, *, is_async: bool) -> None:
        super().__init__(inner)
        self._cm_meter = meter
        self._cm_async = is_async

    def _cm_derive(self, inner: Any, meter: Meter | None = None) -> MeteredClient:
        return MeteredClient(inner, meter or self._cm_meter, is_async=self._cm_async)

    @property
    def messages(self) -> Any:
        if self._cm_async:
            return _AsyncMessages(self._cm_inner.messages, self._cm_meter)
        return _Messages(self._cm_inner.messages, self._cm_meter)

    @property
    def beta(self) -> Any:
        return _Beta(self._cm_inner.beta, self._cm_meter, is_async=self._cm_async)

    def with_options(self, *args: Any, **kwargs: Any) -> MeteredClient:
        return self._cm_derive(self._cm_inner.with_options(*args, **kwargs))

    def copy(self, *args: Any, **kwargs: Any) -> MeteredClient:
        return self._cm_derive(self._cm_inner.copy(*args, **kwargs))

    def with_middleware(self, *args: Any, **kwargs: Any) -> MeteredClient:
        return self._cm_derive(self._cm_inner.with_middleware(*args, **kwargs))

    def __enter__(self) -> MeteredClient:
        self._cm_inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._cm_inner.__exit__(*exc_info)

    async def __aenter__(self) -> MeteredClient:
        await self._cm_inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._cm_inner.__aexit__(*exc_info)
