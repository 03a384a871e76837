"""Anthropic: which requests spend tokens, and how their usage is read.

``POST /v1/messages`` (also ``?beta=true``) is every Messages API call, however the app
made it; ``POST /v1/messages/batches`` only passes the budget guard; the batch results
(``GET …/batches/{id}/results``) record each succeeded result, priced as batch.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

from clientmeter._events import Call
from clientmeter._observe import JSONBody, Observation, SSEReader, follow, usage_dict
from clientmeter._wrap import Meter, Send

log = logging.getLogger("clientmeter")

PROVIDER = "anthropic"
_BATCH = re.compile(r"/v1/messages/batches/([^/?#]+)(/results)?(?:[?#]|$)")

# The HTTP status of each error type the API documents; a streamed ``error`` event carries
# only the type.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_FIVE_MINUTES = "ephemeral_5m_input_tokens"
_ONE_HOUR = "ephemeral_1h_input_tokens"


def _path(path: Any) -> str:
    return str(path)


class AnthropicProvider:
    name = PROVIDER

    def route(self, method: str, path: Any) -> str | None:
        text = _path(path)
        if method == "POST":
            bare = text.split("?", 1)[0]
            if bare == "/v1/messages":
                return "message"
            if bare == "/v1/messages/batches":
                return "batch_create"
            return None
        if method == "GET" and "/v1/messages/batches/" in text:
            match = _BATCH.search(text)
            if match:
                return "batch_results" if match.group(2) else "batch"
        return None

    def call(
        self, client: Any, meter: Meter, kind: str, send: Send, path: Any, args: Any, kwargs: Any
    ) -> Any:
        if kind in ("message", "batch_create"):
            meter.check_budget()
        if kind == "batch_create":
            return send(path, *args, **kwargs)
        call = meter.start(kwargs.get("body")) if kind == "message" else None
        result = send(path, *args, **kwargs)
        return self._follow(client, meter, kind, call, path, result, is_async=False)

    async def acall(
        self, client: Any, meter: Meter, kind: str, send: Any, path: Any, args: Any, kwargs: Any
    ) -> Any:
        if kind in ("message", "batch_create"):
            await meter.acheck_budget()
        if kind == "batch_create":
            return await send(path, *args, **kwargs)
        call = meter.start(kwargs.get("body")) if kind == "message" else None
        result = await send(path, *args, **kwargs)
        if kind == "batch_results":
            batch_id = _batch_id(path)
            if batch_id not in _batch_ends(client):
                await _aremember_end(client, batch_id)
        return self._follow(client, meter, kind, call, path, result, is_async=True)

    def _follow(
        self,
        client: Any,
        meter: Meter,
        kind: str,
        call: Call | None,
        path: Any,
        result: Any,
        *,
        is_async: bool,
    ) -> Any:
        try:
            if kind == "message":
                follow_message(meter, call, result, is_async=is_async)
            elif kind == "batch":
                ended_at = getattr(result, "ended_at", None)
                if ended_at is not None:
                    _batch_ends(client)[_batch_id(path)] = ended_at.isoformat()
            elif kind == "batch_results" and meter.sender is not None:
                batch_id = _batch_id(path)
                if not is_async and batch_id not in _batch_ends(client):
                    _remember_end(client, batch_id)
                return _observed_results(meter, batch_id, _batch_ends(client).get(batch_id), result)
        except Exception:
            log.exception("ClientMeter: could not follow an Anthropic response")
        return result


ANTHROPIC = AnthropicProvider()


# --- messages -----------------------------------------------------------------------


def follow_message(meter: Meter, call: Call | None, result: Any, *, is_async: bool) -> None:
    """Record a Message, or follow the body of a stream or raw response until it ends."""
    if call is None:
        return
    response = getattr(result, "response", None)  # Stream, AsyncStream
    if response is None:
        response = getattr(result, "http_response", None)  # APIResponse, LegacyAPIResponse
    if response is None:
        usage = getattr(result, "usage", None)
        if usage is not None:
            record_message(meter, call, result)
        return
    request_id = response.headers.get("request-id")
    content_type = response.headers.get("content-type", "")
    observation: Observation
    if content_type.startswith("text/event-stream"):
        observation = MessageStream(meter, call, request_id)
    elif hasattr(result, "_iterator"):
        # A stream in another framing (Bedrock's binary event stream): read the SDK's
        # parsed events instead of the bytes.
        stream = MessageStream(meter, call, request_id, read_bytes=False)
        _observe_events(result, stream, is_async=is_async)
        observation = stream
    else:
        observation = JSONBody(
            lambda body: meter.record_body(call, body, provider=PROVIDER, request_id=request_id)
        )
    follow(response, observation, is_async=is_async)


def _observe_events(result: Any, observation: MessageStream, *, is_async: bool) -> None:
    """Feed each event the SDK's stream yields to ``observation`` (its iterator, swapped)."""
    events = result._iterator

    def take(event: Any) -> None:
        if not observation.done:
            try:
                observation.take(event.model_dump(mode="json", by_alias=True, exclude_none=True))
            except Exception:
                log.exception("ClientMeter: could not read a stream event")

    def following() -> Iterator[Any]:
        for event in events:
            take(event)
            yield event

    async def afollowing() -> AsyncIterator[Any]:
        async for event in events:
            take(event)
            yield event

    result._iterator = afollowing() if is_async else following()


def record_message(meter: Meter, call: Call, message: Any) -> None:
    meter.record(
        call,
        provider=PROVIDER,
        event_id=getattr(message, "id", None),
        model=getattr(message, "model", None),
        usage=usage_dict(message.usage),
        request_id=getattr(message, "_request_id", None),
        latency_ms=call.elapsed_ms(),
    )


class MessageStream(Observation):
    """A streamed message, read from its raw events.

    ``message_start`` carries preliminary counts; each ``message_delta`` carries cumulative
    totals for the fields it has (``input_tokens`` may even be revised upward). So each
    field takes its latest value, never a sum. The call is recorded at ``message_stop``,
    at a streamed ``error`` (with that error's status), or with the last counts seen when
    the stream is abandoned.
    """

    _WANTED = frozenset({"message_start", "message_delta", "message_stop", "error"})

    def __init__(
        self, meter: Meter, call: Call, request_id: str | None, *, read_bytes: bool = True
    ) -> None:
        super().__init__()
        self.meter = meter
        self.call = call
        self.request_id = request_id
        self.read_bytes = read_bytes
        self.message_id: str | None = None
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self.status = 200
        self._reader = SSEReader(self._event, self._wanted)

    def _wanted(self, event: str | None, data: bytes) -> bool:
        if event is not None:
            return event in self._WANTED
        # No event lines (a proxy may drop them): the data's type says the same.
        return data.startswith((b'{"type":"message_', b'{"type": "message_', b'{"type":"error"'))

    def feed(self, chunk: bytes) -> bytes:
        if self.read_bytes and not self.done:
            self._reader.feed(chunk)
        return chunk

    def _event(self, event: str | None, data: bytes) -> None:
        self.take(json.loads(data), event)

    def take(self, payload: dict[str, Any], event: str | None = None) -> None:
        """One stream event, as a dict (from the bytes, or from the SDK's parsed event)."""
        kind = payload.get("type") or event
        if kind == "message_start":
            message = payload.get("message") or {}
            self.message_id = message.get("id")
            self.model = message.get("model")
            self.usage = usage_dict(message.get("usage") or {})
        elif kind == "message_delta":
            delta = payload.get("usage")
            if isinstance(delta, dict):
                self.usage = merge_usage(self.usage or {}, usage_dict(delta), self.call.body)
        elif kind == "message_stop":
            self.finish()
        elif kind == "error":
            error = payload.get("error") or {}
            self.status = ERROR_STATUS.get(str(error.get("type")), 500)
            self.finish()

    def record(self) -> None:
        if self.usage is None:
            return  # no message_start: nothing was generated
        self.meter.record(
            self.call,
            provider=PROVIDER,
            event_id=self.message_id,
            model=self.model,
            usage=self.usage,
            request_id=self.request_id,
            latency_ms=self.call.elapsed_ms(),
            status_code=self.status,
        )


def merge_usage(current: dict[str, Any], delta: dict[str, Any], body: Any) -> dict[str, Any]:
    """The latest value of each field; a revised cache write keeps its TTL split whole.

    A ``message_delta`` may revise ``cache_creation_input_tokens`` without sending the
    ``cache_creation`` split: the difference goes to the TTL the request asked for, so
    5m + 1h still equals the total (the server refuses an event where it does not).
    """
    merged = {**current, **delta}
    split = current.get("cache_creation")
    if (
        "cache_creation_input_tokens" in delta
        and "cache_creation" not in delta
        and isinstance(split, dict)
    ):
        total = delta["cache_creation_input_tokens"]
        five, hour = split.get(_FIVE_MINUTES, 0), split.get(_ONE_HOUR, 0)
        if isinstance(total, int) and five + hour != total:
            asked, other = (
                (_ONE_HOUR, _FIVE_MINUTES)
                if requested_ttl(body) == "1h"
                else (_FIVE_MINUTES, _ONE_HOUR)
            )
            revised = {**split, _FIVE_MINUTES: five, _ONE_HOUR: hour}
            revised[asked] = max(0, revised[asked] + total - five - hour)
            # Revised down by more than the asked TTL held: the rest comes off the other.
            revised[other] = total - revised[asked]
            merged["cache_creation"] = revised
    return merged


def requested_ttl(body: Any) -> str:
    """The cache TTL the request asked for: the top-level ``cache_control``, else the
    last breakpoint in prompt order (tools, system, messages); ``5m`` by default."""
    if not isinstance(body, dict):
        return "5m"
    top = body.get("cache_control")
    if isinstance(top, dict):
        return str(top.get("ttl") or "5m")
    last: str | None = None
    for section in ("tools", "system", "messages"):
        for control in _cache_controls(body.get(section)):
            last = str(control.get("ttl") or "5m")
    return last or "5m"


def _cache_controls(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        control = value.get("cache_control")
        if isinstance(control, dict):
            yield control
        for key, item in value.items():
            if key != "cache_control" and isinstance(item, (dict, list)):
                yield from _cache_controls(item)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                yield from _cache_controls(item)


# --- Message Batches -----------------------------------------------------------------


def _batch_id(path: Any) -> str:
    match = _BATCH.search(_path(path))
    return match.group(1) if match else ""


def _batch_ends(client: Any) -> dict[str, str | None]:
    """Each batch's ``ended_at``, as read by the SDK's own retrieve before the results."""
    ends: dict[str, str | None] | None = client.__dict__.get("_cm_batch_ends")
    if ends is None:
        ends = client.__dict__["_cm_batch_ends"] = {}
    if len(ends) > 1000:
        ends.clear()
    return ends


def _remember_end(client: Any, batch_id: str) -> None:
    try:
        batch = client.messages.batches.retrieve(batch_id)
        _batch_ends(client)[batch_id] = batch.ended_at.isoformat() if batch.ended_at else None
    except Exception:
        log.warning("ClientMeter: could not read batch %s's end; results dated now", batch_id)


async def _aremember_end(client: Any, batch_id: str) -> None:
    try:
        batch = await client.messages.batches.retrieve(batch_id)
        _batch_ends(client)[batch_id] = batch.ended_at.isoformat() if batch.ended_at else None
    except Exception:
        log.warning("ClientMeter: could not read batch %s's end; results dated now", batch_id)


class _ResultRecorder:
    """Records each succeeded batch result, priced as batch; other results carry no usage."""

    def __init__(self, meter: Meter, call: Call | None, batch_id: str, ended_at: str | None):
        self.meter = meter
        self.call = call
        self.batch_id = batch_id
        # The batch's end, not the time the results are read: re-reading the results later
        # must produce identical events, or the server would see a conflicting replay.
        self.ended_at = ended_at

    def observe(self, item: Any) -> None:
        try:
            result = getattr(item, "result", None)
            if result is None or getattr(result, "type", None) != "succeeded":
                return
            message = result.message
            self.meter.record(
                self.call,
                provider=PROVIDER,
                event_id=getattr(message, "id", None),
                model=getattr(message, "model", None),
                usage=usage_dict(message.usage),
                service_tier="batch",
                occurred_at=self.ended_at,
                extra_metadata={"batch_id": self.batch_id, "custom_id": str(item.custom_id)},
            )
        except Exception:
            log.exception("ClientMeter: could not read a batch result")


class _Results:
    """The SDK's results decoder, each item recorded as it is read."""

    def __init__(self, inner: Any, recorder: _ResultRecorder) -> None:
        self._cm_inner = inner
        self._cm_recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cm_inner, name)

    def __iter__(self) -> Iterator[Any]:
        for item in self._cm_inner:
            self._cm_recorder.observe(item)
            yield item

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for item in self._cm_inner:
            self._cm_recorder.observe(item)
            yield item

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._cm_inner.__exit__(*exc_info)

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._cm_inner.__aexit__(*exc_info)


def _observed_results(meter: Meter, batch_id: str, ended_at: str | None, decoder: Any) -> Any:
    if not (hasattr(decoder, "__iter__") or hasattr(decoder, "__aiter__")):
        return decoder  # a raw response (with_raw_response): not followed
    call = meter.start(None)
    return _Results(decoder, _ResultRecorder(meter, call, batch_id, ended_at))
