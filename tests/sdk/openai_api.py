"""A stand-in for api.openai.com: real response bodies behind an httpx2 MockTransport.

The bodies follow the types of the installed ``openai`` package (types/chat/chat_completion.py,
chat_completion_chunk.py, completion_usage.py, responses/response.py, response_usage.py,
response_*_event.py, batch.py) and the examples of OpenAI's API reference. A streamed chat completion
sends usage only when the request asks for it (``stream_options.include_usage``): then every
chunk carries ``"usage": null`` and one more chunk, with no choices, carries the usage, as
the API documents.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx2
import openai

from tests.sdk.anthropic_api import ChunkedBody

CHAT_MODEL = "gpt-4o-2024-08-06"
CHAT_ID = "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
# The prompt-caching guide's example: 2,006 prompt tokens of which 1,920 were cached.
CHAT_USAGE: dict[str, Any] = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
RESPONSE_MODEL = "gpt-5"
RESPONSE_ID = "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
MESSAGE_ITEM_ID = "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b"
STORY = "In a peaceful grove…"
# Reasoning (512) is inside output_tokens; cached (1,024) inside input_tokens.
RESPONSE_USAGE: dict[str, Any] = {
    "input_tokens": 3000,
    "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 0},
    "output_tokens": 800,
    "output_tokens_details": {"reasoning_tokens": 512},
    "total_tokens": 3800,
}
BATCH_ID = "batch_abc123"
OUTPUT_FILE_ID = "file-cvaTdG"
BATCH_MODEL = "gpt-4o-mini"
BATCH_USAGE: dict[str, Any] = {"prompt_tokens": 22, "completion_tokens": 2, "total_tokens": 24}
# When the batch's requests ran: a fixed moment, an hour before the live tests' pinned
# clock (tests/sdk/test_live.py, PINNED_AT), so the meter neither finds it in the future
# nor older than its backfill window, on any day the suite runs.
BATCH_CREATED = int(datetime(2026, 11, 20, 11, tzinfo=UTC).timestamp())


def chat_completion(usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": CHAT_ID,
        "object": "chat.completion",
        "created": 1741570283,
        "model": CHAT_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! How can I help you today?",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage or CHAT_USAGE,
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
    }


def chat_chunks(include_usage: bool) -> list[dict[str, Any]]:
    base = {
        "id": CHAT_ID,
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": CHAT_MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
    }
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Hello"},
        {"content": " there!"},
        {},
    ]
    chunks = []
    for number, delta in enumerate(deltas):
        finish = "stop" if number == len(deltas) - 1 else None
        chunk = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            chunk["usage"] = None
        chunks.append(chunk)
    if include_usage:
        chunks.append({**base, "choices": [], "usage": CHAT_USAGE})
    return chunks


def response_body(status: str = "completed", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "completed_at": 1741476543 if done else None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": RESPONSE_MODEL,
        "output": [
            {
                "type": "message",
                "id": MESSAGE_ITEM_ID,
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "In a peaceful grove…", "annotations": []}
                ],
            }
        ]
        if done
        else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": (usage or RESPONSE_USAGE) if done else None,
        "user": None,
        "metadata": {},
    }


def response_events() -> list[dict[str, Any]]:
    """A streamed text response, event by event as the Responses streaming guide lists them."""
    item = {"type": "message", "id": MESSAGE_ITEM_ID, "role": "assistant"}
    part = {"type": "output_text", "annotations": []}
    where = {"item_id": MESSAGE_ITEM_ID, "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response_body("in_progress")},
        {"type": "response.in_progress", "response": response_body("in_progress")},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        {"type": "response.output_text.delta", **where, "delta": STORY, "logprobs": []},
        {"type": "response.output_text.done", **where, "text": STORY, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": {**part, "text": STORY}},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {**item, "status": "completed", "content": [{**part, "text": STORY}]},
        },
        {"type": "response.completed", "response": response_body()},
    ]
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def batch_body() -> dict[str, Any]:
    return {
        "id": BATCH_ID,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": None,
        "input_file_id": "file-abc123",
        "completion_window": "24h",
        "status": "completed",
        "output_file_id": OUTPUT_FILE_ID,
        "error_file_id": "file-HOWS94",
        "created_at": 1711471533,
        "in_progress_at": 1711471538,
        "expires_at": 1711557933,
        "finalizing_at": 1711493133,
        "completed_at": 1711493163,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 3, "completed": 2, "failed": 1},
        "metadata": {},
    }


def batch_output_jsonl() -> bytes:
    """The Batch guide's output lines: two succeeded chat completions and one failure."""

    def succeeded(number: int) -> dict[str, Any]:
        return {
            "id": f"batch_req_{number}",
            "custom_id": f"request-{number}",
            "response": {
                "status_code": 200,
                "request_id": f"req_c187b3{number}",
                "body": {
                    **chat_completion(BATCH_USAGE),
                    "id": f"chatcmpl-batch{number}",
                    "model": BATCH_MODEL,
                    "created": BATCH_CREATED,
                },
            },
            "error": None,
        }

    failed = {
        "id": "batch_req_3",
        "custom_id": "request-3",
        "response": {
            "status_code": 400,
            "request_id": "req_failed",
            "body": {"error": {"message": "Invalid model", "type": "invalid_request_error"}},
        },
        "error": None,
    }
    lines = [succeeded(1), failed, succeeded(2)]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def sse_data(items: list[dict[str, Any]], *, named: bool) -> list[bytes]:
    chunks = []
    for item in items:
        event = f"event: {item['type']}\n" if named else ""
        chunks.append(f"{event}data: {json.dumps(item)}\n\n".encode())
    return chunks


class OpenAIAPI:
    """Routes requests like the OpenAI API; ``requests`` keeps each request's JSON body."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        path = request.url.path
        headers = {"x-request-id": "req_8d3f2a0c1b5e4f6a"}
        params: dict[str, Any] = json.loads(request.content) if request.content else {}
        self.bodies.append(params)
        if request.method == "POST" and path == "/v1/chat/completions":
            if params.get("stream"):
                include = bool((params.get("stream_options") or {}).get("include_usage"))
                chunks = [*sse_data(chat_chunks(include), named=False), b"data: [DONE]\n\n"]
                return _stream(headers, chunks)
            return httpx2.Response(200, headers=headers, json=chat_completion())
        if request.method == "POST" and path == "/v1/responses":
            if params.get("stream"):
                return _stream(headers, sse_data(response_events(), named=True))
            return httpx2.Response(200, headers=headers, json=response_body())
        if request.method == "POST" and path == "/v1/batches":
            return httpx2.Response(
                200, headers=headers, json={**batch_body(), "status": "validating"}
            )
        if request.method == "GET" and path == f"/v1/batches/{BATCH_ID}":
            return httpx2.Response(200, headers=headers, json=batch_body())
        if request.method == "GET" and path == f"/v1/files/{OUTPUT_FILE_ID}/content":
            return httpx2.Response(200, headers=headers, content=batch_output_jsonl())
        if request.method == "GET" and path == "/v1/models/gpt-4o":
            body = {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"}
            return httpx2.Response(200, headers=headers, json=body)
        return httpx2.Response(
            404, json={"error": {"message": "not found", "type": "invalid_request_error"}}
        )

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            api_key="sk-test",
            max_retries=0,
            http_client=httpx2.Client(transport=httpx2.MockTransport(self)),
        )

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key="sk-test",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self)),
        )


def _stream(headers: dict[str, str], chunks: list[bytes]) -> httpx2.Response:
    headers = {**headers, "content-type": "text/event-stream; charset=utf-8"}
    return httpx2.Response(200, headers=headers, stream=ChunkedBody(chunks))
