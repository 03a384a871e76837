"""Every way of calling the Messages API is recorded, and streams record what they saw.

Issue 9, findings 4 and 5: the client-level ``with_raw_response``, ``with_streaming_response``
(at both levels) and ``beta.messages.tool_runner`` went unrecorded; an abandoned stream kept
``message_start``'s usage; a revised cache write broke the 5m/1h split; a streamed ``error``
was stored as a 200.
"""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import anthropic
import clientmeter as meter
import pytest

from tests.sdk.anthropic_api import (
    MODEL,
    START_WITH_CACHE,
    USAGE,
    message_body,
    overloaded_midway,
    stream_events,
    tool_use_body,
)
from tests.sdk.conftest import MeterServer

ASK: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, Claude"}],
}
MESSAGE_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
STREAM_ID = "msg_01StreamedAAAAAAAAAAAAAA"


def sent(server: MeterServer, *, delivered: bool = True) -> list[dict[str, Any]]:
    assert meter.flush(timeout=5) is delivered
    return server.events


def one_event(server: MeterServer) -> dict[str, Any]:
    [event] = sent(server)
    return event


@pytest.fixture
def aclient(anthropic_api, meter_options):
    return meter.wrap(anthropic_api.async_client(), client="acme", **meter_options)


# --- with_raw_response at the client level ----------------------------------------------


def test_client_level_with_raw_response_is_recorded(wrapped, meter_server):
    client = wrapped()

    raw = client.with_raw_response.messages.create(**ASK)

    assert (raw.headers["request-id"], raw.parse().id) == (
        "req_011CSHoEeqs5C35K2UUqR7Fy",
        MESSAGE_ID,
    )
    event = one_event(meter_server)
    assert (event["id"], event["usage"], event["project"]) == (MESSAGE_ID, USAGE, "support-bot")


def test_client_level_with_raw_response_beta_is_recorded(wrapped, meter_server):
    client = wrapped()

    client.with_raw_response.beta.messages.create(**ASK).parse()

    assert one_event(meter_server)["usage"] == USAGE


def test_client_level_with_raw_response_stream_is_recorded(wrapped, meter_server):
    client = wrapped()

    raw = client.with_raw_response.messages.create(**ASK, stream=True)
    types = [event.type for event in raw.parse()]

    assert types[-1] == "message_stop"
    assert one_event(meter_server)["usage"]["output_tokens"] == 15


def test_async_client_level_with_raw_response_is_recorded(aclient, meter_server):
    async def call() -> Any:
        raw = await aclient.with_raw_response.messages.create(**ASK)
        return await raw.parse()

    assert asyncio.run(call()).id == MESSAGE_ID
    assert one_event(meter_server)["usage"] == USAGE


# --- with_streaming_response, both levels -------------------------------------------------


def streaming(client: Any, level: str) -> Any:
    if level == "client":
        return client.with_streaming_response.messages
    return client.messages.with_streaming_response


@pytest.mark.parametrize("level", ["client", "messages"])
def test_with_streaming_response_parsed_is_recorded(wrapped, meter_server, level):
    client = wrapped()

    with streaming(client, level).create(**ASK) as response:
        assert response.parse().id == MESSAGE_ID

    assert one_event(meter_server)["usage"] == USAGE


@pytest.mark.parametrize("level", ["client", "messages"])
def test_with_streaming_response_read_as_json_is_recorded(wrapped, meter_server, level):
    client = wrapped()

    with streaming(client, level).create(**ASK) as response:
        body = response.json()

    event = one_event(meter_server)
    assert (event["id"], event["usage"], event["request_id"]) == (
        body["id"],
        USAGE,
        "req_011CSHoEeqs5C35K2UUqR7Fy",
    )


@pytest.mark.parametrize("level", ["client", "messages"])
def test_with_streaming_response_stream_read_line_by_line_is_recorded(wrapped, meter_server, level):
    client = wrapped()

    with streaming(client, level).create(**ASK, stream=True) as response:
        lines = list(response.iter_lines())

    assert "event: message_stop" in lines
    event = one_event(meter_server)
    assert (event["id"], event["usage"]["output_tokens"]) == (STREAM_ID, 15)


def test_with_streaming_response_beta_is_recorded(wrapped, meter_server):
    client = wrapped()

    with client.with_streaming_response.beta.messages.create(**ASK) as response:
        response.read()

    assert one_event(meter_server)["usage"] == USAGE


@pytest.mark.parametrize("level", ["client", "messages"])
def test_async_with_streaming_response_is_recorded(aclient, meter_server, level):
    async def call() -> Any:
        async with streaming(aclient, level).create(**ASK) as response:
            return await response.parse()

    assert asyncio.run(call()).id == MESSAGE_ID
    assert one_event(meter_server)["usage"] == USAGE


def test_async_with_streaming_response_stream_is_recorded(aclient, meter_server):
    async def call() -> list[str]:
        async with aclient.messages.with_streaming_response.create(**ASK, stream=True) as response:
            return [line async for line in response.iter_lines()]

    assert "event: message_stop" in asyncio.run(call())
    assert one_event(meter_server)["usage"]["output_tokens"] == 15


# --- tool_runner -------------------------------------------------------------------------

TOOL_USAGE = {"input_tokens": 400, "output_tokens": 50, "service_tier": "standard"}
FINAL_USAGE = {"input_tokens": 470, "output_tokens": 20, "service_tier": "standard"}


@anthropic.beta_tool
def get_weather(location: str) -> str:
    """The weather at a place.

    Args:
        location: the city.
    """
    return json.dumps({"location": location, "temperature": "18C"})


def two_turns(anthropic_api: Any) -> None:
    anthropic_api.replies = [
        tool_use_body("msg_01ToolTurnAAAAAAAAAAAAAA", usage=TOOL_USAGE),
        message_body("msg_01FinalTurnAAAAAAAAAAAAA", usage=FINAL_USAGE),
    ]


def test_tool_runner_records_every_turn(wrapped, meter_server, anthropic_api):
    two_turns(anthropic_api)
    client = wrapped()

    final = client.beta.messages.tool_runner(**ASK, tools=[get_weather]).until_done()

    assert final.id == "msg_01FinalTurnAAAAAAAAAAAAA"
    assert {event["id"]: event["usage"] for event in sent(meter_server)} == {
        "msg_01ToolTurnAAAAAAAAAAAAAA": TOOL_USAGE,
        "msg_01FinalTurnAAAAAAAAAAAAA": FINAL_USAGE,
    }


def test_streaming_tool_runner_is_recorded(wrapped, meter_server):
    client = wrapped()

    runner = client.beta.messages.tool_runner(**ASK, tools=[get_weather], stream=True)
    for message_stream in runner:
        message_stream.until_done()

    event = one_event(meter_server)
    assert (event["id"], event["usage"]["output_tokens"]) == (STREAM_ID, 15)


def test_async_tool_runner_records_every_turn(aclient, meter_server, anthropic_api):
    two_turns(anthropic_api)

    @anthropic.beta_async_tool
    async def get_weather(location: str) -> str:
        """The weather at a place.

        Args:
            location: the city.
        """
        return json.dumps({"location": location, "temperature": "18C"})

    async def run() -> Any:
        return await aclient.beta.messages.tool_runner(**ASK, tools=[get_weather]).until_done()

    assert asyncio.run(run()).id == "msg_01FinalTurnAAAAAAAAAAAAA"
    assert len(sent(meter_server)) == 2


# --- abandoned streams ------------------------------------------------------------------


def read_until(stream: Any, kind: str) -> None:
    for event in stream:
        if event.type == kind:
            return


def test_a_stream_abandoned_after_its_last_delta_records_that_usage(wrapped, meter_server):
    client = wrapped()

    with client.messages.create(**ASK, stream=True) as stream:
        read_until(stream, "message_delta")  # message_stop never read

    assert one_event(meter_server)["usage"]["output_tokens"] == 15


def test_a_stream_abandoned_midway_records_the_last_cumulative_usage(
    wrapped, meter_server, anthropic_api
):
    anthropic_api.stream = stream_events(delta_usages=[{"output_tokens": 7}, {"output_tokens": 15}])
    client = wrapped()

    with client.messages.create(**ASK, stream=True) as stream:
        read_until(stream, "message_delta")  # the first, cumulative 7 output tokens

    assert one_event(meter_server)["usage"]["output_tokens"] == 7


def test_a_dropped_half_read_stream_is_recorded_when_collected(wrapped, meter_server):
    client = wrapped()
    stream = client.messages.create(**ASK, stream=True)
    read_until(stream, "message_delta")

    del stream
    gc.collect()

    assert one_event(meter_server)["usage"]["output_tokens"] == 15


def test_a_half_read_helper_stream_is_recorded_on_exit_of_its_block(wrapped, meter_server):
    client = wrapped()

    with client.messages.stream(**ASK) as stream:
        next(iter(stream))

    event = one_event(meter_server)
    assert (event["id"], event["usage"]["output_tokens"]) == (STREAM_ID, 1)


def test_a_stream_in_another_framing_is_read_from_the_sdks_events(
    wrapped, meter_server, anthropic_api
):
    # Bedrock frames streams as binary AWS event streams, not SSE: the SDK's own events are
    # read instead of the bytes (the stand-in keeps SSE bytes, which the client still reads).
    anthropic_api.stream_content_type = "application/vnd.amazon.eventstream"
    client = wrapped()

    with client.messages.create(**ASK, stream=True) as stream:
        read_until(stream, "message_delta")

    event = one_event(meter_server)
    assert (event["id"], event["usage"]["output_tokens"]) == (STREAM_ID, 15)


def test_a_half_read_stream_in_another_framing_records_what_the_app_read(
    wrapped, meter_server, anthropic_api
):
    anthropic_api.stream_content_type = "application/vnd.amazon.eventstream"
    client = wrapped()

    with client.messages.stream(**ASK) as stream:
        next(iter(stream))

    assert one_event(meter_server)["usage"]["output_tokens"] == 1


# --- revised cache writes -----------------------------------------------------------------

REVISED = {"output_tokens": 15, "cache_creation_input_tokens": 400}


def system_cached_for(ttl: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "text",
            "text": "You are a support agent for Acme.",
            "cache_control": {"type": "ephemeral", "ttl": ttl},
        }
    ]


@pytest.mark.parametrize(
    ("ttl", "split"),
    [
        ("1h", {"ephemeral_5m_input_tokens": 148, "ephemeral_1h_input_tokens": 252}),
        ("5m", {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 100}),
    ],
)
def test_a_revised_cache_write_goes_to_the_ttl_the_request_asked_for(
    wrapped, meter_server, anthropic_api, ttl, split
):
    anthropic_api.stream = stream_events(start_usage=START_WITH_CACHE, delta_usages=[REVISED])
    client = wrapped()

    with client.messages.stream(**ASK, system=system_cached_for(ttl)) as stream:
        stream.until_done()

    usage = one_event(meter_server)["usage"]
    assert (usage["cache_creation_input_tokens"], usage["cache_creation"]) == (400, split)


def test_a_cache_write_revised_down_keeps_the_split_whole(wrapped, meter_server, anthropic_api):
    anthropic_api.stream = stream_events(
        start_usage=START_WITH_CACHE,
        delta_usages=[{"output_tokens": 15, "cache_creation_input_tokens": 120}],
    )
    client = wrapped()

    with client.messages.stream(**ASK, system=system_cached_for("1h")) as stream:
        stream.until_done()

    split = one_event(meter_server)["usage"]["cache_creation"]
    assert split == {"ephemeral_5m_input_tokens": 120, "ephemeral_1h_input_tokens": 0}


def test_a_delta_with_its_own_split_is_taken_as_sent(wrapped, meter_server, anthropic_api):
    delta = {
        "output_tokens": 15,
        "cache_creation_input_tokens": 400,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 400},
    }
    anthropic_api.stream = stream_events(start_usage=START_WITH_CACHE, delta_usages=[delta])
    client = wrapped()

    with client.messages.stream(**ASK) as stream:
        stream.until_done()

    assert one_event(meter_server)["usage"]["cache_creation"] == delta["cache_creation"]


# --- streamed errors -----------------------------------------------------------------------


def test_a_streamed_error_is_recorded_with_its_status(wrapped, meter_server, anthropic_api):
    anthropic_api.stream = overloaded_midway()
    client = wrapped()

    with pytest.raises(anthropic.APIStatusError), client.messages.stream(**ASK) as stream:
        stream.until_done()

    event = one_event(meter_server)
    assert (event["id"], event["status_code"], event["usage"]["output_tokens"]) == (
        STREAM_ID,
        529,
        1,
    )


def test_async_streamed_error_is_recorded_with_its_status(aclient, meter_server, anthropic_api):
    anthropic_api.stream = overloaded_midway()

    async def chat() -> None:
        stream = await aclient.messages.create(**ASK, stream=True)
        async for _ in stream:
            pass

    with pytest.raises(anthropic.APIStatusError):
        asyncio.run(chat())

    assert one_event(meter_server)["status_code"] == 529
