"""The wrapped client records every token-spending call and otherwise behaves as before."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime
from typing import Any

import anthropic
import clientmeter as meter
import pytest

from tests.sdk.anthropic_api import (
    BATCH_ENDED_AT,
    BATCH_ID,
    BATCH_USAGE,
    MODEL,
    USAGE,
    AnthropicAPI,
    message_body,
    stream_events,
)
from tests.sdk.conftest import MeterServer

ASK: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, Claude"}],
}


def sent(server: MeterServer) -> list[dict[str, Any]]:
    assert meter.flush(timeout=5)
    return server.events


def test_create_records_the_usage_object_as_the_api_returned_it(wrapped, meter_server):
    client = wrapped()

    client.messages.create(**ASK)

    [event] = sent(meter_server)
    assert event["usage"] == USAGE


def test_create_event_carries_id_client_tags_and_call_facts(wrapped, meter_server):
    client = wrapped()

    client.messages.create(**ASK)

    [event] = sent(meter_server)
    assert {key: event[key] for key in ("id", "client", "project", "model", "request_id")} == {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "client": "acme",
        "project": "support-bot",
        "model": MODEL,
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }
    assert event["status_code"] == 200
    assert isinstance(event["latency_ms"], int)
    assert datetime.fromisoformat(event["occurred_at"]).utcoffset() is not None


def test_create_returns_the_message_unchanged(wrapped):
    client = wrapped()

    message = client.messages.create(**ASK)

    assert isinstance(message, anthropic.types.Message)
    assert message.content == [
        anthropic.types.TextBlock(type="text", text="Hello! How can I help you today?")
    ]


def test_wrapped_client_still_is_an_anthropic_client(wrapped):
    assert isinstance(wrapped(), anthropic.Anthropic)


def test_count_tokens_is_passed_through_and_not_recorded(wrapped, meter_server, anthropic_api):
    client = wrapped()

    count = client.messages.count_tokens(model=MODEL, messages=ASK["messages"])

    assert count.input_tokens == 2095
    assert sent(meter_server) == []


def test_null_usage_fields_are_left_out(wrapped, meter_server, anthropic_api):
    anthropic_api.message = message_body(
        usage={"input_tokens": 10, "output_tokens": 3, "server_tool_use": None}
    )
    client = wrapped()

    client.messages.create(**ASK)

    [event] = sent(meter_server)
    assert event["usage"] == {"input_tokens": 10, "output_tokens": 3}


def test_unknown_usage_fields_are_kept(wrapped, meter_server, anthropic_api):
    usage = {
        "input_tokens": 10,
        "output_tokens": 3,
        "server_tool_use": {"code_execution_requests": 2},
    }
    anthropic_api.message = message_body(usage=usage)
    client = wrapped()

    client.messages.create(**ASK)

    [event] = sent(meter_server)
    assert event["usage"] == usage


def test_stream_helper_records_the_final_cumulative_usage(wrapped, meter_server):
    client = wrapped()

    with client.messages.stream(**ASK) as stream:
        assert stream.get_final_text() == "Hello there!"

    [event] = sent(meter_server)
    # message_start says output 1, message_delta says 15 (cumulative): 15, not 16.
    assert event["usage"] == {
        "input_tokens": 25,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 15,
        "service_tier": "standard",
    }


def test_stream_takes_the_latest_value_of_each_field_including_revised_input(
    wrapped, meter_server, anthropic_api
):
    anthropic_api.stream = stream_events(
        delta_usages=[
            {"output_tokens": 10},
            {
                "input_tokens": 10682,
                "cache_read_input_tokens": 7123,
                "output_tokens": 15,
                "server_tool_use": {"web_search_requests": 1, "web_fetch_requests": 0},
            },
        ]
    )
    client = wrapped()

    with client.messages.stream(**ASK) as stream:
        stream.until_done()

    [event] = sent(meter_server)
    assert event["usage"] == {
        "input_tokens": 10682,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 7123,
        "output_tokens": 15,
        "service_tier": "standard",
        "server_tool_use": {"web_search_requests": 1, "web_fetch_requests": 0},
    }


def test_stream_event_id_is_the_streamed_message_id(wrapped, meter_server):
    client = wrapped()

    with client.messages.stream(**ASK) as stream:
        for _ in stream.text_stream:
            pass

    [event] = sent(meter_server)
    assert event["id"] == "msg_01StreamedAAAAAAAAAAAAAA"


def test_create_with_stream_true_records_usage(wrapped, meter_server):
    client = wrapped()

    events = [event.type for event in client.messages.create(**ASK, stream=True)]

    assert events[0] == "message_start"
    [event] = sent(meter_server)
    assert (event["usage"]["input_tokens"], event["usage"]["output_tokens"]) == (25, 15)


def test_stream_abandoned_early_records_the_usage_seen_so_far(wrapped, meter_server):
    client = wrapped()

    with client.messages.create(**ASK, stream=True) as stream:
        next(stream)

    [event] = sent(meter_server)
    assert (event["usage"]["input_tokens"], event["usage"]["output_tokens"]) == (25, 1)


def test_stream_is_recorded_once(wrapped, meter_server):
    client = wrapped()

    with client.messages.create(**ASK, stream=True) as stream:
        for _ in stream:
            pass
        stream.close()

    assert meter.flush(timeout=5)
    posted = sum(len(_posted_events(request)) for request in meter_server.requests)
    assert posted == 1


def _posted_events(request: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(request.content)["events"]
    return events


def test_async_create_records_usage(anthropic_api, meter_options, meter_server):
    client = meter.wrap(anthropic_api.async_client(), client="acme", **meter_options)

    asyncio.run(client.messages.create(**ASK))

    [event] = sent(meter_server)
    assert (event["id"], event["usage"]) == ("msg_01XFDUDYJgAACzvnptvVoYEL", USAGE)


def test_async_stream_helper_records_usage(anthropic_api, meter_options, meter_server):
    client = meter.wrap(anthropic_api.async_client(), client="acme", **meter_options)

    async def chat() -> str:
        async with client.messages.stream(**ASK) as stream:
            return "".join([text async for text in stream.text_stream])

    assert asyncio.run(chat()) == "Hello there!"
    [event] = sent(meter_server)
    assert (event["usage"]["input_tokens"], event["usage"]["output_tokens"]) == (25, 15)


def test_async_create_with_stream_true_records_usage(anthropic_api, meter_options, meter_server):
    client = meter.wrap(anthropic_api.async_client(), client="acme", **meter_options)

    async def chat() -> list[str]:
        stream = await client.messages.create(**ASK, stream=True)
        return [event.type async for event in stream]

    assert asyncio.run(chat())[-1] == "message_stop"
    [event] = sent(meter_server)
    assert event["usage"]["output_tokens"] == 15


def test_wrapped_async_client_is_an_async_anthropic_client(anthropic_api, meter_options):
    client = meter.wrap(anthropic_api.async_client(), client="acme", **meter_options)

    assert isinstance(client, anthropic.AsyncAnthropic)


def test_batch_results_record_each_succeeded_result_as_batch(wrapped, meter_server):
    client = wrapped()

    results = list(client.messages.batches.results(BATCH_ID))

    assert [result.result.type for result in results] == [
        "succeeded",
        "errored",
        "canceled",
        "expired",
        "succeeded",
    ]
    events = sent(meter_server)
    assert [(event["id"], event["service_tier"]) for event in events] == [
        ("msg_01BatchOneAAAAAAAAAAAAA", "batch"),
        ("msg_01BatchTwoAAAAAAAAAAAAA", "batch"),
    ]
    assert all(event["usage"] == BATCH_USAGE for event in events)


def test_batch_result_occurred_at_is_the_batch_end(wrapped, meter_server):
    client = wrapped()

    list(client.messages.batches.results(BATCH_ID))

    events = sent(meter_server)
    assert {datetime.fromisoformat(event["occurred_at"]) for event in events} == {
        datetime.fromisoformat(BATCH_ENDED_AT)
    }


def test_batch_results_read_twice_give_identical_events(wrapped, meter_server):
    client = wrapped()

    list(client.messages.batches.results(BATCH_ID))
    assert meter.flush(timeout=5)
    list(client.messages.batches.results(BATCH_ID))
    assert meter.flush(timeout=5)

    posted = [event for request in meter_server.requests for event in _posted_events(request)]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for event in posted:
        by_id.setdefault(event["id"], []).append(event)
    assert [len(copies) for copies in by_id.values()] == [2, 2]
    assert all(copies[0] == copies[1] for copies in by_id.values())


def test_async_batch_results_are_recorded(anthropic_api, meter_options, meter_server):
    client = meter.wrap(anthropic_api.async_client(), client="acme", **meter_options)

    async def read() -> int:
        results = await client.messages.batches.results(BATCH_ID)
        return len([result async for result in results])

    assert asyncio.run(read()) == 5
    assert len(sent(meter_server)) == 2


def test_tags_block_tags_calls_inside_it(wrapped, meter_server):
    client = wrapped()

    with meter.tags(user="u-42", feature="faq", team="care"):
        client.messages.create(**ASK)

    [event] = sent(meter_server)
    assert (event["user"], event["feature"], event["team"]) == ("u-42", "faq", "care")


def test_tags_block_ends_with_the_block(wrapped, meter_server, anthropic_api):
    client = wrapped()
    with meter.tags(user="u-42"):
        pass
    client.messages.create(**ASK)

    [event] = sent(meter_server)
    assert "user" not in event


def test_inner_tags_block_overrides_outer_and_merges_metadata(wrapped, meter_server):
    client = wrapped()

    with (
        meter.tags(feature="faq", metadata={"locale": "fr"}),
        meter.tags(feature="summary", metadata={"variant": "b"}),
    ):
        client.messages.create(**ASK)

    [event] = sent(meter_server)
    assert (event["feature"], event["metadata"]) == ("summary", {"locale": "fr", "variant": "b"})


def test_with_tags_tags_calls_through_the_derived_client_and_wins(wrapped, meter_server):
    client = wrapped()

    with meter.tags(user="from-block"):
        meter.with_tags(client, user="u-7", feature="search").messages.create(**ASK)

    [event] = sent(meter_server)
    assert (event["user"], event["feature"]) == ("u-7", "search")


def test_with_tags_leaves_the_original_client_untagged(wrapped, meter_server, anthropic_api):
    client = wrapped()
    meter.with_tags(client, user="u-7")

    client.messages.create(**ASK)

    [event] = sent(meter_server)
    assert "user" not in event


def test_wrap_tags_are_defaults_a_block_overrides(wrapped, meter_server):
    client = wrapped(feature="default-feature")

    with meter.tags(project="other-bot"):
        client.messages.create(**ASK)

    [event] = sent(meter_server)
    assert (event["project"], event["feature"]) == ("other-bot", "default-feature")


def test_tags_do_not_leak_between_threads(wrapped, meter_server, anthropic_api):
    client = wrapped()
    inside = threading.Event()
    release = threading.Event()

    def tagged_thread() -> None:
        with meter.tags(user="thread-user"):
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=tagged_thread)
    thread.start()
    inside.wait(5)
    client.messages.create(**ASK)
    release.set()
    thread.join()

    [event] = sent(meter_server)
    assert "user" not in event


def test_tags_follow_each_asyncio_task(anthropic_api, meter_options, meter_server):
    client = meter.wrap(anthropic_api.async_client(), client="acme", **meter_options)

    async def call_as(user: str, message_id: str) -> None:
        with meter.tags(user=user):
            await asyncio.sleep(0)
            await client.messages.create(**ASK, metadata={"user_id": message_id})

    async def both() -> None:
        await asyncio.gather(call_as("alice", "msg_alice"), call_as("bob", "msg_bob"))

    asyncio.run(both())

    users = {event["id"]: event["user"] for event in sent(meter_server)}
    assert users == {"msg_alice": "alice", "msg_bob": "bob"}


def test_a_response_without_usage_is_returned_and_not_recorded(
    wrapped, meter_server, anthropic_api
):
    body = message_body()
    del body["usage"]
    anthropic_api.message = body
    client = wrapped()

    message = client.messages.create(**ASK)

    assert message.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert sent(meter_server) == []


def test_wrap_without_configuration_records_nothing_but_works(anthropic_api, monkeypatch):
    monkeypatch.delenv("CLIENTMETER_URL", raising=False)
    monkeypatch.delenv("CLIENTMETER_API_KEY", raising=False)
    client = meter.wrap(anthropic_api.client(), client="acme")

    message = client.messages.create(**ASK)

    assert message.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert meter.flush(timeout=1)


def test_wrap_reads_url_and_key_from_the_environment(anthropic_api, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIENTMETER_URL", "https://meter.example")
    monkeypatch.setenv("CLIENTMETER_API_KEY", "cm_live_env")
    monkeypatch.setenv("CLIENTMETER_SPOOL_DIR", str(tmp_path))

    client: Any = meter.wrap(anthropic_api.client(), client="acme")

    sender = client._cm_meter.sender
    assert (sender.endpoint, sender.api_key) == (
        "https://meter.example/api/v1/usage",
        "cm_live_env",
    )


def test_anthropic_errors_reach_the_app_unchanged(wrapped, anthropic_api, meter_server):
    anthropic_api.error = (529, "overloaded_error")
    client = wrapped()

    # The SDK's own error, as the SDK words it (its message format changed in anthropic
    # 2.x: "529 Overloaded (… type: overloaded_error)" where 0.x said "Error code: 529").
    with pytest.raises(anthropic.InternalServerError) as raised:
        client.messages.create(**ASK)
    assert raised.value.status_code == 529
    assert "overloaded_error" in str(raised.value)
    assert sent(meter_server) == []


def test_api_reference_bodies_parse(anthropic_api: AnthropicAPI):
    """Guard for the fakes themselves: the SDK parses them into its own types."""
    message = anthropic_api.client().messages.create(**ASK)

    assert message.usage.cache_creation is not None
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 100


def test_beta_create_records_the_usage_with_its_iterations(wrapped, meter_server, anthropic_api):
    # As Anthropic documents it: a beta usage object with one iteration per sampling step.
    usage = {
        "input_tokens": 8,
        "cache_creation_input_tokens": 5120,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 5120, "ephemeral_1h_input_tokens": 0},
        "iterations": [
            {
                "input_tokens": 8,
                "output_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 5120,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 5120,
                    "ephemeral_1h_input_tokens": 0,
                },
                "type": "message",
            }
        ],
        "output_tokens": 0,
        "service_tier": "standard",
        "inference_geo": "global",
    }
    anthropic_api.message = message_body(usage=usage)
    client = wrapped()

    client.beta.messages.create(**ASK, betas=["compact-2026-01-12"])

    [event] = sent(meter_server)
    assert event["usage"] == usage


def test_beta_stream_records_usage(wrapped, meter_server):
    client = wrapped()

    with client.beta.messages.stream(**ASK) as stream:
        stream.until_done()

    [event] = sent(meter_server)
    assert (event["usage"]["input_tokens"], event["usage"]["output_tokens"]) == (25, 15)


def test_async_beta_create_records_usage(anthropic_api, meter_options, meter_server):
    client = meter.wrap(anthropic_api.async_client(), client="acme", **meter_options)

    asyncio.run(client.beta.messages.create(**ASK))

    [event] = sent(meter_server)
    assert event["usage"] == USAGE


def test_an_overlong_tag_is_trimmed_so_the_event_is_not_rejected(wrapped, meter_server):
    client = wrapped()

    with meter.tags(user="u" * 250 + "\x00"):
        client.messages.create(**ASK)

    [event] = sent(meter_server)
    assert event["user"] == "u" * 200


def test_metadata_is_cut_to_twenty_keys(wrapped, meter_server):
    client = wrapped()

    with meter.tags(metadata={f"key{number:02}": "v" * 300 for number in range(25)}):
        client.messages.create(**ASK)

    [event] = sent(meter_server)
    assert (len(event["metadata"]), event["metadata"]["key00"]) == (20, "v" * 200)


def test_with_raw_response_create_is_recorded_and_still_raw(wrapped, meter_server):
    client = wrapped()

    raw = client.messages.with_raw_response.create(**ASK)

    assert (raw.headers["request-id"], raw.parse().id) == (
        "req_011CSHoEeqs5C35K2UUqR7Fy",
        "msg_01XFDUDYJgAACzvnptvVoYEL",
    )
    [event] = sent(meter_server)
    assert event["usage"] == USAGE


def test_with_raw_response_stream_is_recorded(wrapped, meter_server):
    client = wrapped()

    raw = client.messages.with_raw_response.create(**ASK, stream=True)
    for _ in raw.parse():
        pass

    [event] = sent(meter_server)
    assert event["usage"]["output_tokens"] == 15


def test_async_with_raw_response_create_is_recorded(anthropic_api, meter_options, meter_server):
    client = meter.wrap(anthropic_api.async_client(), client="acme", **meter_options)

    async def call() -> Any:
        raw = await client.messages.with_raw_response.create(**ASK)
        return await raw.parse()

    assert asyncio.run(call()).id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    [event] = sent(meter_server)
    assert event["usage"] == USAGE
