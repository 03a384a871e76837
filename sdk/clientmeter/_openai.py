"""OpenAI: Chat Completions, the Responses API and Batch API results.

``POST /chat/completions`` and ``POST /responses`` are recorded however the app made them
(plain, ``stream=True``, the stream helpers, ``with_raw_response``,
``with_streaming_response``). A streamed chat completion only reports usage when asked
(``stream_options={"include_usage": True}``): the SDK asks when the app did not, and then
hides the extra usage-only chunk (and the ``"usage": null`` it adds to every other chunk),
so the app reads exactly the stream it asked for. Batch API results are read where the app
downloads them, ``GET /files/{id}/content``: each line that is a succeeded chat completion
or response is recorded, priced as batch, dated by its own ``created`` time.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

from clientmeter._events import Call
from clientmeter._observe import (
    JSONBody,
    JSONLines,
    Observation,
    SSEFilter,
    SSEReader,
    drop_none,
    follow,
    usage_dict,
    without_usage_null,
)
from clientmeter._wrap import Meter, Send

log = logging.getLogger("clientmeter")

PROVIDER = "openai"
_FILE_CONTENT = re.compile(r"/files/([^/?#]+)/content(?:[?#]|$)")
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
# A failed response's error code, as an HTTP status for the event.
ERROR_STATUS = {"rate_limit_exceeded": 429, "invalid_prompt": 400, "server_error": 500}


def _bare(path: Any) -> str:
    return str(path).split("?", 1)[0]


class OpenAIProvider:
    name = PROVIDER

    def route(self, method: str, path: Any) -> str | None:
        if method == "POST":
            bare = _bare(path)
            if bare.endswith("/chat/completions"):
                return "chat"
            if bare.endswith("/responses"):
                return "response"
            if bare.endswith("/batches"):
                return "batch_create"
            return None
        if method == "GET" and "/files/" in str(path) and _FILE_CONTENT.search(str(path)):
            return "file_content"
        return None

    def call(
        self, client: Any, meter: Meter, kind: str, send: Send, path: Any, args: Any, kwargs: Any
    ) -> Any:
        if kind != "file_content":
            meter.check_budget()
        if kind == "batch_create":
            return send(path, *args, **kwargs)
        kwargs, hide = _ask_for_usage(kind, kwargs)
        call = meter.start(kwargs.get("body") if kind != "file_content" else None)
        result = send(path, *args, **kwargs)
        _follow(meter, kind, call, result, hide=hide, is_async=False)
        return result

    async def acall(
        self, client: Any, meter: Meter, kind: str, send: Any, path: Any, args: Any, kwargs: Any
    ) -> Any:
        if kind != "file_content":
            await meter.acheck_budget()
        if kind == "batch_create":
            return await send(path, *args, **kwargs)
        kwargs, hide = _ask_for_usage(kind, kwargs)
        call = meter.start(kwargs.get("body") if kind != "file_content" else None)
        result = await send(path, *args, **kwargs)
        _follow(meter, kind, call, result, hide=hide, is_async=True)
        return result


OPENAI = OpenAIProvider()


def _ask_for_usage(kind: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """For a streamed chat completion without usage: ask for it, and remember to hide it."""
    body = kwargs.get("body")
    if kind != "chat" or not isinstance(body, dict) or body.get("stream") is not True:
        return kwargs, False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return kwargs, False
    asked = (
        {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    )
    return {**kwargs, "body": {**body, "stream_options": asked}}, True


def _follow(
    meter: Meter, kind: str, call: Call | None, result: Any, *, hide: bool, is_async: bool
) -> None:
    if call is None:
        return
    try:
        response = getattr(result, "response", None)  # Stream, HttpxBinaryResponseContent
        if response is None:
            response = getattr(result, "http_response", None)  # APIResponse, LegacyAPIResponse
        if response is None:
            if getattr(result, "usage", None) is not None:
                meter.record_body(
                    call,
                    _as_dict(result),
                    provider=PROVIDER,
                    request_id=getattr(result, "_request_id", None),
                )
            return
        request_id = response.headers.get("x-request-id")
        streamed = response.headers.get("content-type", "").startswith("text/event-stream")
        observation: Observation
        if kind == "file_content":
            observation = JSONLines(
                lambda line: _record_batch_line(meter, call, line), needle=b'"custom_id"'
            )
        elif streamed and kind == "chat":
            observation = ChatStream(meter, call, request_id, hide=hide)
        elif streamed:
            observation = ResponseStream(meter, call, request_id)
        else:
            observation = JSONBody(
                lambda body: meter.record_body(call, body, provider=PROVIDER, request_id=request_id)
            )
        follow(response, observation, is_async=is_async)
    except Exception:
        log.exception("ClientMeter: could not follow an OpenAI response")


def _as_dict(model: Any) -> dict[str, Any]:
    return {
        "id": getattr(model, "id", None),
        "model": getattr(model, "model", None),
        "usage": usage_dict(model.usage),
        "service_tier": getattr(model, "service_tier", None),
    }


class ChatStream(Observation):
    """A streamed chat completion: usage comes in the last chunk (``choices: []``)."""

    def __init__(self, meter: Meter, call: Call, request_id: str | None, *, hide: bool) -> None:
        super().__init__()
        self.meter = meter
        self.call = call
        self.request_id = request_id
        self.body: dict[str, Any] | None = None
        self._filter = SSEFilter(self._decide) if hide else None
        self._reader = None if hide else SSEReader(self._event, self._wanted)

    def feed(self, chunk: bytes) -> bytes:
        if self._filter is not None:
            return self._filter.feed(chunk)
        if self._reader is not None:
            self._reader.feed(chunk)
        return chunk

    def drain(self) -> bytes:
        return self._filter.drain() if self._filter is not None else b""

    def _wanted(self, event: str | None, data: bytes) -> bool:
        return _USAGE_OBJECT.search(data) is not None

    def _event(self, event: str | None, data: bytes) -> None:
        self._take(json.loads(data))

    def _decide(self, data: bytes) -> bytes | None:
        if b'"usage"' not in data:
            return data
        if _USAGE_OBJECT.search(data) is None:
            return without_usage_null(data)
        chunk = json.loads(data)
        self._take(chunk)
        if not chunk.get("choices"):
            return None  # the usage-only chunk the app did not ask for
        del chunk["usage"]  # usage on a content chunk (some servers): not asked for either
        return json.dumps(chunk, separators=(",", ":")).encode()

    def _take(self, chunk: Any) -> None:
        if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
            self.body = chunk

    def record(self) -> None:
        if self.body is not None:
            self.meter.record_body(
                self.call, self.body, provider=PROVIDER, request_id=self.request_id
            )


class ResponseStream(Observation):
    """A streamed response: the final ``response.completed`` event carries usage."""

    _FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

    def __init__(self, meter: Meter, call: Call, request_id: str | None) -> None:
        super().__init__()
        self.meter = meter
        self.call = call
        self.request_id = request_id
        self.body: dict[str, Any] | None = None
        self.status = 200
        self._reader = SSEReader(self._event, self._wanted)

    def feed(self, chunk: bytes) -> bytes:
        if not self.done:
            self._reader.feed(chunk)
        return chunk

    def _wanted(self, event: str | None, data: bytes) -> bool:
        if event is not None:
            return event in self._FINAL
        return data.startswith(
            (
                b'{"type":"response.completed"',
                b'{"type":"response.incomplete"',
                b'{"type":"response.failed"',
            )
        )

    def _event(self, event: str | None, data: bytes) -> None:
        payload = json.loads(data)
        response = payload.get("response")
        if isinstance(response, dict):
            self.body = response
        if (payload.get("type") or event) == "response.failed":
            error = (response or {}).get("error") or {}
            self.status = ERROR_STATUS.get(str(error.get("code")), 500)
        self.finish()

    def record(self) -> None:
        if self.body is not None:
            self.meter.record_body(
                self.call,
                self.body,
                provider=PROVIDER,
                request_id=self.request_id,
                status_code=self.status,
            )


def _record_batch_line(meter: Meter, call: Call, line: dict[str, Any]) -> None:
    """One line of a Batch API output file: a succeeded request's response body."""
    response = line.get("response")
    if not isinstance(response, dict) or response.get("status_code") != 200:
        return
    body = response.get("body")
    if not isinstance(body, dict) or body.get("object") not in ("chat.completion", "response"):
        return
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return
    created = body.get("created", body.get("created_at"))
    occurred_at = (
        datetime.fromtimestamp(created, timezone.utc).isoformat()
        if isinstance(created, (int, float))
        else None
    )
    meter.record(
        call,
        provider=PROVIDER,
        event_id=body.get("id") or line.get("id"),
        model=body.get("model"),
        usage=drop_none(usage),
        request_id=response.get("request_id"),
        service_tier="batch",
        occurred_at=occurred_at,
        extra_metadata={
            "batch_request_id": str(line.get("id")),
            "custom_id": str(line.get("custom_id")),
        },
    )
