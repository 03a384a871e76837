"""The opt-in budget guard: no call while the client is red; fail open when unsure."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import clientmeter as meter
import httpx2
import pytest
from clientmeter._budget import BudgetGuard

from tests.sdk.anthropic_api import BATCH_ID, MODEL
from tests.sdk.conftest import METER_URL

ASK: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, Claude"}],
}
# What BudgetExceeded says about RED below.
OVER_BUDGET = (
    r"^ClientMeter: client 'acme' is over its budget for 2026-11: "
    r"billed 504\.00 USD of 500\.00 USD \(100\.8%\)$"
)
RED = {
    "client": "acme",
    "month": "2026-11",
    "budget_usd": "500.00",
    "cost_usd": "420.00",
    "billed_usd": "504.00",
    "percent_used": "100.8",
    "status": "red",
    "projected_billed_usd": "651.00",
    "projected_status": "red",
}


def test_a_red_client_is_refused_before_the_call(wrapped, meter_server, anthropic_api):
    meter_server.budget = RED
    client = wrapped(budget_guard=True)

    with pytest.raises(meter.BudgetExceeded, match="acme"):
        client.messages.create(**ASK)

    assert anthropic_api.requests == []


def test_budget_exceeded_carries_the_status(wrapped, meter_server):
    meter_server.budget = RED
    client = wrapped(budget_guard=True)

    with pytest.raises(meter.BudgetExceeded, match=OVER_BUDGET) as refused:
        client.messages.create(**ASK)

    assert (refused.value.client, refused.value.budget) == ("acme", RED)


def test_the_check_asks_for_the_wrapped_client(wrapped, meter_server):
    client = wrapped(budget_guard=True)

    client.messages.create(**ASK)

    [check] = meter_server.budget_requests
    assert (check.url.params["client"], check.headers["Authorization"][:7]) == ("acme", "Bearer ")


@pytest.mark.parametrize("status", ["green", "yellow", None])
def test_a_client_not_red_may_call(wrapped, meter_server, status):
    meter_server.budget = {**RED, "status": status}
    client = wrapped(budget_guard=True)

    message = client.messages.create(**ASK)

    assert message.id == "msg_01XFDUDYJgAACzvnptvVoYEL"


def test_a_red_projection_alone_does_not_refuse(wrapped, meter_server):
    meter_server.budget = {**RED, "status": "yellow", "projected_status": "red"}
    client = wrapped(budget_guard=True)

    assert client.messages.create(**ASK).id == "msg_01XFDUDYJgAACzvnptvVoYEL"


def test_a_failing_check_lets_the_call_through(wrapped, meter_server):
    meter_server.budget_status_code = 503
    client = wrapped(budget_guard=True)

    assert client.messages.create(**ASK).id == "msg_01XFDUDYJgAACzvnptvVoYEL"


def test_an_unreachable_budget_api_lets_the_call_through(anthropic_api, tmp_path):
    def down(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    client = meter.wrap(
        anthropic_api.client(),
        client="acme",
        url=METER_URL,
        api_key="cm_live_x",
        spool_dir=tmp_path,
        http_client=httpx2.Client(transport=httpx2.MockTransport(down)),
        budget_guard=True,
    )

    assert client.messages.create(**ASK).id == "msg_01XFDUDYJgAACzvnptvVoYEL"


def test_the_status_is_cached_between_calls(wrapped, meter_server):
    client = wrapped(budget_guard=True)

    client.messages.create(**ASK)
    client.messages.create(**ASK)

    assert len(meter_server.budget_requests) == 1


def test_the_cached_status_expires(meter_server):
    guard = BudgetGuard(
        url=METER_URL,
        api_key="cm_live_x",
        client="acme",
        ttl=0.05,
        http_client=httpx2.Client(transport=httpx2.MockTransport(meter_server)),
    )
    guard.check()
    meter_server.budget = RED
    time.sleep(0.1)

    with pytest.raises(meter.BudgetExceeded, match=OVER_BUDGET):
        guard.check()


def test_streams_are_refused_too(wrapped, meter_server, anthropic_api):
    meter_server.budget = RED
    client = wrapped(budget_guard=True)

    with (
        pytest.raises(meter.BudgetExceeded, match=OVER_BUDGET),
        client.messages.stream(**ASK) as stream,
    ):
        stream.until_done()

    assert anthropic_api.requests == []


def test_batch_creation_is_refused_too(wrapped, meter_server, anthropic_api):
    meter_server.budget = RED
    client = wrapped(budget_guard=True)

    with pytest.raises(meter.BudgetExceeded, match=OVER_BUDGET):
        client.messages.batches.create(requests=[])

    assert anthropic_api.requests == []


def test_reading_batch_results_is_never_refused(wrapped, meter_server):
    meter_server.budget = RED
    client = wrapped(budget_guard=True)

    assert len(list(client.messages.batches.results(BATCH_ID))) == 5


def test_without_the_guard_a_red_client_may_call(wrapped, meter_server):
    meter_server.budget = RED
    client = wrapped()

    assert client.messages.create(**ASK).id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert meter_server.budget_requests == []


def test_async_red_client_is_refused(anthropic_api, meter_options, meter_server):
    meter_server.budget = RED
    client = meter.wrap(
        anthropic_api.async_client(), client="acme", budget_guard=True, **meter_options
    )

    with pytest.raises(meter.BudgetExceeded, match=OVER_BUDGET):
        asyncio.run(client.messages.create(**ASK))

    assert anthropic_api.requests == []


def test_async_stream_of_a_red_client_is_refused(anthropic_api, meter_options, meter_server):
    meter_server.budget = RED
    client = meter.wrap(
        anthropic_api.async_client(), client="acme", budget_guard=True, **meter_options
    )

    async def chat() -> None:
        async with client.messages.stream(**ASK) as stream:
            await stream.until_done()

    with pytest.raises(meter.BudgetExceeded, match=OVER_BUDGET):
        asyncio.run(chat())
    assert anthropic_api.requests == []


def test_the_guard_needs_the_client_slug(anthropic_api, meter_options):
    with pytest.raises(ValueError, match="client="):
        meter.wrap(anthropic_api.client(), budget_guard=True, **meter_options)
