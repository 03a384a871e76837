"""A stand-in for api.anthropic.com: real Messages API bodies behind an httpx2 MockTransport.

The bodies follow the types of the installed ``anthropic`` SDK (types/message.py, usage.py,
message_delta_usage.py, raw_message_*_event.py, messages/message_batch*.py) and the
examples of Anthropic's API documentation (usage, prompt caching). Only what leaves the machine is faked: the app's ``anthropic``
client, our wrapper and our sender are the real ones.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import httpx2

MODEL = "claude-sonnet-4-6"

# The prompt-caching documentation's 1-hour example, with the tier and geo fields.
USAGE: dict[str, Any] = {
    "input_tokens": 2048,
    "cache_read_input_tokens": 1800,
    "cache_creation_input_tokens": 248,
    "cache_creation": {"ephemeral_5m_input_tokens": 148, "ephemeral_1h_input_tokens": 100},
    "output_tokens": 503,
    "service_tier": "standard",
    "inference_geo": "global",
}


def message_body(
    message_id: str = "msg_01XFDUDYJgAACzvnptvVoYEL",
    *,
    usage: dict[str, Any] | None = None,
    model: str = MODEL,
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": USAGE if usage is None else usage,
    }


def sse_chunks(events: list[dict[str, Any]]) -> list[bytes]:
    """One network chunk per event, as the API flushes them."""
    return [f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events]


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(sse_chunks(events))


class ChunkedBody(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A body that arrives chunk by chunk (sync or async), so a half-read stream is real.

    ``gate``, when set, is waited on before the chunk at ``gate_at``: the rest of the
    stream has not arrived yet (a call in flight).
    """

    def __init__(
        self, chunks: list[bytes], gate: threading.Event | None = None, gate_at: int = 0
    ) -> None:
        self.chunks = chunks
        self.gate = gate
        self.gate_at = gate_at

    def __iter__(self) -> Iterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if self.gate is not None and index == self.gate_at:
                self.gate.wait()
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def stream_events(
    message_id: str = "msg_01StreamedAAAAAAAAAAAAAA",
    *,
    start_usage: dict[str, Any] | None = None,
    delta_usages: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """A text reply as the API streams it: preliminary usage first, cumulative deltas after."""
    start = {
        "type": "message_start",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage
            or {
                "input_tokens": 25,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
                "service_tier": "standard",
            },
        },
    }
    events: list[dict[str, Any]] = [
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " there!"},
        },
        {"type": "content_block_stop", "index": 0},
    ]
    for usage in delta_usages or [{"output_tokens": 15}]:
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": usage,
            }
        )
    events.append({"type": "message_stop"})
    return events


def tool_use_body(message_id: str, *, usage: dict[str, Any]) -> dict[str, Any]:
    """A reply asking for a tool (``stop_reason: tool_use``), as types/tool_use_block.py."""
    return {
        **message_body(message_id, usage=usage),
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather",
                "input": {"location": "Paris"},
            }
        ],
        "stop_reason": "tool_use",
    }


# A stream that writes to the cache (148 tokens for 5 minutes, 100 for an hour) before a
# message_delta revises the write (see stream_events(start_usage=…)).
START_WITH_CACHE: dict[str, Any] = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 248,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 148, "ephemeral_1h_input_tokens": 100},
    "output_tokens": 1,
}


def overloaded_midway() -> list[dict[str, Any]]:
    """A stream cut by an ``error`` event after message_start and one text delta."""
    events = stream_events()[:4]
    events.append({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    return events


BATCH_ID = "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"
BATCH_ENDED_AT = "2026-11-20T10:15:00Z"


def batch_body() -> dict[str, Any]:
    return {
        "id": BATCH_ID,
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {
            "processing": 0,
            "succeeded": 2,
            "errored": 1,
            "canceled": 1,
            "expired": 1,
        },
        "created_at": "2026-11-20T09:00:00Z",
        "ended_at": BATCH_ENDED_AT,
        "expires_at": "2026-11-21T09:00:00Z",
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": f"https://api.anthropic.com/v1/messages/batches/{BATCH_ID}/results",
    }


BATCH_USAGE: dict[str, Any] = {
    "input_tokens": 9,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 25,
    "service_tier": "batch",
}


def batch_results_jsonl() -> bytes:
    lines = [
        {
            "custom_id": "qa-1",
            "result": {
                "type": "succeeded",
                "message": message_body("msg_01BatchOneAAAAAAAAAAAAA", usage=BATCH_USAGE),
            },
        },
        {
            "custom_id": "qa-2",
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "max_tokens: 0"},
                },
            },
        },
        {"custom_id": "qa-3", "result": {"type": "canceled"}},
        {"custom_id": "qa-4", "result": {"type": "expired"}},
        {
            "custom_id": "qa-5",
            "result": {
                "type": "succeeded",
                "message": message_body("msg_01BatchTwoAAAAAAAAAAAAA", usage=BATCH_USAGE),
            },
        },
    ]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


class AnthropicAPI:
    """Routes requests like the Messages API; ``stream_body`` and ``message`` can be changed."""

    def __init__(self) -> None:
        self.message = message_body()
        self.stream = stream_events()
        self.requests: list[httpx2.Request] = []
        # When set, every Messages API call fails with this status and error type.
        self.error: tuple[int, str] | None = None
        # Messages answered first, one per (non-streamed) call, before ``message``.
        self.replies: list[dict[str, Any]] = []
        # The streams' content type (Bedrock frames its streams differently).
        self.stream_content_type = "text/event-stream"
        # When set, a stream stops before its event number ``gate_at`` until the gate opens.
        self.gate: threading.Event | None = None
        self.gate_at = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        path = request.url.path
        headers = {"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy"}
        if self.error is not None:
            status, kind = self.error
            body = {"type": "error", "error": {"type": kind, "message": "Overloaded"}}
            return httpx2.Response(status, headers=headers, json=body)
        if request.method == "POST" and path == "/v1/messages":
            params = json.loads(request.content)
            if params.get("stream"):
                headers["content-type"] = self.stream_content_type
                chunked = ChunkedBody(sse_chunks(self.stream), self.gate, self.gate_at)
                return httpx2.Response(200, headers=headers, stream=chunked)
            if self.replies:
                return httpx2.Response(200, headers=headers, json=self.replies.pop(0))
            user_id = params.get("metadata", {}).get("user_id")
            if user_id:  # lets concurrent tests tell their responses apart
                return httpx2.Response(200, headers=headers, json={**self.message, "id": user_id})
            return httpx2.Response(200, headers=headers, json=self.message)
        if request.method == "POST" and path == "/v1/messages/count_tokens":
            return httpx2.Response(200, headers=headers, json={"input_tokens": 2095})
        if request.method == "GET" and path == f"/v1/messages/batches/{BATCH_ID}":
            return httpx2.Response(200, headers=headers, json=batch_body())
        if request.method == "GET" and path == f"/v1/messages/batches/{BATCH_ID}/results":
            return httpx2.Response(200, headers=headers, content=batch_results_jsonl())
        return httpx2.Response(404, json={"type": "error", "error": {"type": "not_found_error"}})

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key="sk-ant-test",
            max_retries=0,
            http_client=httpx2.Client(transport=httpx2.MockTransport(self)),
        )

    def async_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key="sk-ant-test",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self)),
        )


Handler = Callable[[httpx2.Request], httpx2.Response]
