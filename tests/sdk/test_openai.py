"""The OpenAI wrapper: Chat Completions, Responses and Batch results, sync and async."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import clientmeter as meter
import openai
import pytest
from openai.types import Batch
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.sdk.conftest import MeterServer
from tests.sdk.openai_api import (
    BATCH_CREATED,
    BATCH_ID,
    BATCH_USAGE,
    CHAT_ID,
    CHAT_MODEL,
    CHAT_USAGE,
    RESPONSE_ID,
    RESPONSE_USAGE,
    OpenAIAPI,
    batch_body,
    chat_chunks,
    chat_completion,
    response_body,
    response_events,
)

CHAT: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Hello!"}],
}
RESPOND: dict[str, Any] = {"model": "gpt-5", "input": "Tell me a three sentence bedtime story."}


@pytest.fixture
def openai_api() -> OpenAIAPI:
    return OpenAIAPI()


@pytest.fixture
def client(openai_api, meter_options) -> Any:
    return meter.wrap(openai_api.client(), client="acme", project="support-bot", **meter_options)


@pytest.fixture
def aclient(openai_api, meter_options) -> Any:
    return meter.wrap(openai_api.async_client(), client="acme", **meter_options)


def sent(server: MeterServer) -> list[dict[str, Any]]:
    assert meter.flush(timeout=5)
    return server.events


def one_event(server: MeterServer) -> dict[str, Any]:
    [event] = sent(server)
    return event


def test_the_stand_in_bodies_parse_as_the_sdk_types():
    ChatCompletion.model_validate(chat_completion())
    for chunk in chat_chunks(include_usage=True):
        ChatCompletionChunk.model_validate(chunk)
    Response.model_validate(response_body())
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
    for event in response_events():
        adapter.validate_python(event)
    Batch.model_validate(batch_body())


def test_the_wrapped_client_is_still_an_openai_client(client):
    assert isinstance(client, openai.OpenAI)


# --- Chat Completions --------------------------------------------------------------------


def test_chat_completion_is_recorded_with_its_usage_and_tier(client, meter_server):
    completion = client.chat.completions.create(**CHAT)

    assert completion.id == CHAT_ID
    event = one_event(meter_server)
    assert {k: event[k] for k in ("id", "provider", "model", "usage", "service_tier")} == {
        "id": CHAT_ID,
        "provider": "openai",
        "model": CHAT_MODEL,
        "usage": CHAT_USAGE,
        "service_tier": "default",
    }
    assert (event["client"], event["project"], event["request_id"]) == (
        "acme",
        "support-bot",
        "req_8d3f2a0c1b5e4f6a",
    )


def test_tags_apply_to_openai_calls(client, meter_server):
    with meter.tags(user="u-42", feature="faq"):
        client.chat.completions.create(**CHAT)

    event = one_event(meter_server)
    assert (event["user"], event["feature"]) == ("u-42", "faq")


def chunks_as_seen(chunks: Any) -> list[dict[str, Any]]:
    """What the app sees of each chunk: its fields as set, exactly."""
    return [chunk.model_dump(exclude_unset=True) for chunk in chunks]


def test_a_stream_without_usage_asks_for_it_and_hides_it(client, openai_api, meter_server):
    plain = openai_api.client()
    expected = chunks_as_seen(plain.chat.completions.create(**CHAT, stream=True))

    seen = chunks_as_seen(client.chat.completions.create(**CHAT, stream=True))

    assert seen == expected
    assert all("usage" not in chunk for chunk in seen)
    assert openai_api.bodies[-1]["stream_options"] == {"include_usage": True}
    event = one_event(meter_server)
    assert (event["id"], event["usage"]) == (CHAT_ID, CHAT_USAGE)


def test_a_stream_read_as_lines_shows_the_lines_it_would_have(client, openai_api, meter_server):
    with openai_api.client().chat.completions.with_streaming_response.create(
        **CHAT, stream=True
    ) as plain:
        expected = list(plain.iter_lines())

    with client.chat.completions.with_streaming_response.create(**CHAT, stream=True) as response:
        seen = list(response.iter_lines())

    assert seen == expected
    assert one_event(meter_server)["usage"] == CHAT_USAGE


def test_a_stream_that_asked_for_usage_gets_it_and_is_recorded_once(
    client, openai_api, meter_server
):
    chunks = list(
        client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
    )

    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 2006
    assert openai_api.bodies[-1]["stream_options"] == {"include_usage": True}
    assert one_event(meter_server)["usage"] == CHAT_USAGE


def test_other_stream_options_are_kept(client, openai_api, meter_server):
    list(
        client.chat.completions.create(
            **CHAT, stream=True, stream_options={"include_obfuscation": False}
        )
    )

    assert openai_api.bodies[-1]["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }
    assert one_event(meter_server)["usage"] == CHAT_USAGE


def test_the_chat_stream_helper_is_recorded(client, meter_server):
    with client.chat.completions.stream(**CHAT) as stream:
        final = stream.get_final_completion()

    assert final.choices[0].message.content == "Hello there!"
    assert final.usage is None  # as without the wrapper: the app did not ask for usage
    assert one_event(meter_server)["usage"] == CHAT_USAGE


def test_chat_with_raw_response_is_recorded(client, meter_server):
    raw = client.chat.completions.with_raw_response.create(**CHAT)

    assert raw.parse().id == CHAT_ID
    assert one_event(meter_server)["usage"] == CHAT_USAGE


def test_async_chat_completion_is_recorded(aclient, meter_server):
    asyncio.run(aclient.chat.completions.create(**CHAT))

    assert one_event(meter_server)["usage"] == CHAT_USAGE


def test_async_chat_stream_is_recorded_and_hides_the_usage_chunk(aclient, meter_server):
    async def call() -> list[Any]:
        stream = await aclient.chat.completions.create(**CHAT, stream=True)
        return [chunk async for chunk in stream]

    chunks = asyncio.run(call())

    assert len(chunks) == 4
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert one_event(meter_server)["usage"] == CHAT_USAGE


def test_models_and_other_calls_pass_through_unrecorded(client, meter_server):
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    assert sent(meter_server) == []


# --- Responses -------------------------------------------------------------------------------


def test_a_response_is_recorded(client, meter_server):
    response = client.responses.create(**RESPOND)

    assert response.id == RESPONSE_ID
    event = one_event(meter_server)
    assert (event["id"], event["provider"], event["model"], event["usage"]) == (
        RESPONSE_ID,
        "openai",
        "gpt-5",
        RESPONSE_USAGE,
    )


def test_a_streamed_response_is_recorded_from_its_completed_event(client, meter_server):
    kinds = [event.type for event in client.responses.create(**RESPOND, stream=True)]

    assert (kinds[0], kinds[-1], len(kinds)) == ("response.created", "response.completed", 9)
    assert one_event(meter_server)["usage"] == RESPONSE_USAGE


def test_the_response_stream_helper_is_recorded(client, meter_server):
    with client.responses.stream(**RESPOND) as stream:
        final = stream.get_final_response()

    assert final.usage is not None
    assert one_event(meter_server)["usage"] == RESPONSE_USAGE


def test_async_streamed_response_is_recorded(aclient, meter_server):
    async def call() -> int:
        stream = await aclient.responses.create(**RESPOND, stream=True)
        return len([event async for event in stream])

    assert asyncio.run(call()) == 9
    assert one_event(meter_server)["usage"] == RESPONSE_USAGE


# --- Batch API results -------------------------------------------------------------------------


def read_results(client: Any) -> list[dict[str, Any]]:
    batch = client.batches.retrieve(BATCH_ID)
    content = client.files.content(batch.output_file_id)
    return [json.loads(line) for line in content.text.splitlines()]


def test_batch_results_record_each_succeeded_line_as_batch(client, meter_server):
    lines = read_results(client)

    assert [line["custom_id"] for line in lines] == ["request-1", "request-3", "request-2"]
    events = sorted(sent(meter_server), key=lambda e: e["id"])
    assert [(e["id"], e["service_tier"], e["usage"]) for e in events] == [
        ("chatcmpl-batch1", "batch", BATCH_USAGE),
        ("chatcmpl-batch2", "batch", BATCH_USAGE),
    ]
    created = datetime.fromtimestamp(BATCH_CREATED, UTC)
    assert {datetime.fromisoformat(e["occurred_at"]) for e in events} == {created}
    assert events[0]["metadata"] == {"batch_request_id": "batch_req_1", "custom_id": "request-1"}


def test_batch_results_read_twice_give_identical_events(client, meter_server):
    read_results(client)
    assert meter.flush(timeout=5)
    read_results(client)
    assert meter.flush(timeout=5)

    posted = [
        event
        for request in meter_server.requests
        for event in json.loads(request.content)["events"]
    ]
    assert len(posted) == 4
    by_id: dict[str, list[dict[str, Any]]] = {}
    for event in posted:
        by_id.setdefault(event["id"], []).append(event)
    assert all(first == second for first, second in by_id.values())


def test_async_batch_results_are_recorded(aclient, meter_server):
    async def read() -> bytes:
        content = await aclient.files.content("file-cvaTdG")
        return await content.aread()

    assert asyncio.run(read()).count(b"\n") == 3
    assert len(sent(meter_server)) == 2


def test_an_ordinary_file_is_not_taken_for_batch_results(client, openai_api, meter_server):
    client.batches.create(
        input_file_id="file-abc123", endpoint="/v1/chat/completions", completion_window="24h"
    )

    assert sent(meter_server) == []


# --- the budget guard ----------------------------------------------------------------------------


def test_a_red_client_is_refused_before_an_openai_call(openai_api, meter_options, meter_server):
    meter_server.budget = {"status": "red", "month": "2026-11"}
    guarded = meter.wrap(openai_api.client(), client="acme", budget_guard=True, **meter_options)

    with pytest.raises(meter.BudgetExceeded):
        guarded.chat.completions.create(**CHAT)
    with pytest.raises(meter.BudgetExceeded):
        guarded.responses.create(**RESPOND)

    assert openai_api.requests == []
