"""End to end: the wrapped Anthropic client → the SDK's sender → the real app (live server).

Only Anthropic is faked (a MockTransport with real Messages API bodies); the ClientMeter
side is the real ingest and budget API on a transactional test database, reached over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import clientmeter as meter
import httpx2
import pytest
import time_machine
from django.conf import settings

from agency.models import Client, Project
from billing.services.rollups import rollups_rebuild_dirty
from tests.factories import ClientFactory
from tests.sdk.anthropic_api import BATCH_ID, MODEL, message_body
from tests.sdk.conftest import process_exit
from tracking.keys import api_key_create
from tracking.models import UsageEvent

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ASK: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, Claude"}],
}
CREATE_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
# PRICING.md §2.1, Sonnet 4.6 per MTok: input 3, output 15, 5m write 3.75, 1h write 6, read 0.30.
# 2048×3 + 148×3.75 + 100×6 + 1800×0.30 + 503×15 = 15,384 USD per million calls.
CREATE_COST = Decimal("0.015384")


# The live server runs in this process, so it keeps this clock; the SDK stamps calls with it
# too. After the batch ended (BATCH_ENDED_AT) and within the backfill window of it, and
# priced by the shipped rates in force that day.
PINNED_AT = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def pinned_clock(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("real_clock"):
        yield
        return
    with time_machine.travel(PINNED_AT, tick=True):
        yield


def client_named(slug: str) -> Client:
    return cast(Client, ClientFactory(slug=slug, markup_pct=Decimal("25")))


@pytest.fixture
def acme(rates: None) -> Client:
    return client_named("acme")


@pytest.fixture
def acme_key(acme: Client) -> str:
    _, raw_key = api_key_create(name="support bot", client=acme)
    return raw_key


def wrap_live(anthropic_api: Any, live_server: Any, key: str, spool: Path, **kwargs: Any) -> Any:
    return meter.wrap(
        anthropic_api.client(),
        client="acme",
        project="support-bot",
        url=live_server.url,
        api_key=key,
        spool_dir=spool / "spool",
        **kwargs,
    )


def spooled_files(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("spool/*/*.json"))


class Down(httpx2.BaseTransport):
    """ClientMeter unreachable: every connection is refused."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)


class LoseFirstResponse(httpx2.BaseTransport):
    """The first POST reaches the server and commits; its response is lost on the way back."""

    def __init__(self) -> None:
        self.real = httpx2.HTTPTransport()
        self.lost = False

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.real.handle_request(request)
        if not self.lost:
            self.lost = True
            response.read()
            raise httpx2.ReadTimeout("response lost", request=request)
        return response


def test_a_create_lands_as_one_priced_event(anthropic_api, live_server, acme_key, tmp_path):
    client = wrap_live(anthropic_api, live_server, acme_key, tmp_path)

    client.messages.create(**ASK)

    assert meter.flush(timeout=10)
    [event] = UsageEvent.objects.all()
    assert (event.event_id, event.cost_usd) == (CREATE_ID, CREATE_COST)


def test_tags_land_on_the_event_and_the_project_is_created(
    anthropic_api, live_server, acme_key, tmp_path
):
    client = wrap_live(anthropic_api, live_server, acme_key, tmp_path)

    with meter.tags(user="u-42", feature="faq"):
        client.messages.create(**ASK)

    assert meter.flush(timeout=10)
    event = UsageEvent.objects.select_related("project").get()
    assert event.project is not None
    assert (event.project.name, event.end_user, event.feature) == ("support-bot", "u-42", "faq")
    assert Project.objects.filter(client__slug="acme", name="support-bot").count() == 1


def test_a_stream_lands_with_its_final_usage(anthropic_api, live_server, acme_key, tmp_path):
    client = wrap_live(anthropic_api, live_server, acme_key, tmp_path)

    with client.messages.stream(**ASK) as stream:
        stream.until_done()

    assert meter.flush(timeout=10)
    event = UsageEvent.objects.get()
    # 25 input × 3 + 15 output × 15 (not 16: message_delta is cumulative) per MTok.
    assert (event.input_tokens, event.output_tokens, event.cost_usd) == (
        25,
        15,
        Decimal("0.000300"),
    )


def test_batch_results_land_at_half_price(anthropic_api, live_server, acme_key, tmp_path):
    client = wrap_live(anthropic_api, live_server, acme_key, tmp_path)

    list(client.messages.batches.results(BATCH_ID))

    assert meter.flush(timeout=10)
    events = UsageEvent.objects.order_by("event_id")
    # (9 × 3 + 25 × 15) / 2 per MTok for each succeeded result; the other three cost nothing.
    assert [(e.service_tier, e.cost_usd) for e in events] == [("batch", Decimal("0.000201"))] * 2


def test_a_response_lost_after_commit_is_not_double_counted(
    anthropic_api, live_server, acme_key, tmp_path
):
    client = wrap_live(
        anthropic_api,
        live_server,
        acme_key,
        tmp_path,
        http_client=httpx2.Client(transport=LoseFirstResponse()),
    )
    client.messages.create(**ASK)
    assert not meter.flush(timeout=10)  # committed, but the SDK never heard back

    assert meter.flush(timeout=10)  # the resend: a duplicate

    assert [(e.event_id, e.cost_usd) for e in UsageEvent.objects.all()] == [
        (CREATE_ID, CREATE_COST)
    ]
    assert spooled_files(tmp_path) == []


def test_events_recorded_while_clientmeter_is_down_arrive_after_a_restart(
    anthropic_api, live_server, acme_key, tmp_path
):
    before = wrap_live(
        anthropic_api, live_server, acme_key, tmp_path, http_client=httpx2.Client(transport=Down())
    )
    before.messages.create(**ASK)
    process_exit()
    assert (UsageEvent.objects.count(), len(spooled_files(tmp_path))) == (0, 1)

    wrap_live(anthropic_api, live_server, acme_key, tmp_path)  # the app starts again

    assert meter.flush(timeout=10)
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == [CREATE_ID]


def test_replaying_a_delivered_spool_file_changes_nothing(
    anthropic_api, live_server, acme_key, tmp_path
):
    before = wrap_live(
        anthropic_api, live_server, acme_key, tmp_path, http_client=httpx2.Client(transport=Down())
    )
    before.messages.create(**ASK)
    process_exit()
    [spool_file] = spooled_files(tmp_path)
    saved = spool_file.read_bytes()
    wrap_live(anthropic_api, live_server, acme_key, tmp_path)
    assert meter.flush(timeout=10)
    received_at = UsageEvent.objects.get().received_at
    process_exit()

    spool_file.write_bytes(saved)  # the same batch again, as after a crash before its delete
    wrap_live(anthropic_api, live_server, acme_key, tmp_path)
    assert meter.flush(timeout=10)

    event = UsageEvent.objects.get()
    assert (event.cost_usd, event.received_at) == (CREATE_COST, received_at)
    assert spooled_files(tmp_path) == []


def test_an_event_for_another_client_is_rejected_and_dropped(
    anthropic_api, live_server, acme, tmp_path
):
    _, globex_key = api_key_create(name="globex bot", client=client_named("globex"))
    client = wrap_live(anthropic_api, live_server, globex_key, tmp_path)

    client.messages.create(**ASK)

    assert meter.flush(timeout=10)  # delivered: the server answered, per event
    assert UsageEvent.objects.count() == 0
    assert spooled_files(tmp_path) == []


def test_budget_guard_refuses_a_client_over_budget(
    anthropic_api, live_server, acme, acme_key, tmp_path
):
    acme.monthly_budget_usd = Decimal("0.01")
    acme.save()
    wrap_live(anthropic_api, live_server, acme_key, tmp_path).messages.create(**ASK)
    assert meter.flush(timeout=10)
    rollups_rebuild_dirty()  # what the beat schedule does shortly after ingest
    guarded = wrap_live(anthropic_api, live_server, acme_key, tmp_path, budget_guard=True)
    calls_before = len(anthropic_api.requests)

    with pytest.raises(meter.BudgetExceeded, match="acme"):
        guarded.messages.create(**ASK)

    assert len(anthropic_api.requests) == calls_before


def test_budget_guard_lets_a_client_under_budget_call(
    anthropic_api, live_server, acme, acme_key, tmp_path
):
    acme.monthly_budget_usd = Decimal("500")
    acme.save()
    guarded = wrap_live(anthropic_api, live_server, acme_key, tmp_path, budget_guard=True)

    assert guarded.messages.create(**ASK).id == CREATE_ID


def test_budget_guard_with_another_clients_key_fails_open(
    anthropic_api, live_server, acme, tmp_path
):
    acme.monthly_budget_usd = Decimal("0")
    acme.save()
    _, globex_key = api_key_create(name="globex bot", client=client_named("globex"))
    guarded = wrap_live(anthropic_api, live_server, globex_key, tmp_path, budget_guard=True)

    assert guarded.messages.create(**ASK).id == CREATE_ID


APP_SCRIPT = """
import sys
import anthropic, clientmeter as meter
from tests.sdk.anthropic_api import AnthropicAPI

client = meter.wrap(
    AnthropicAPI().client(), client="acme", url=sys.argv[1], api_key=sys.argv[2],
    spool_dir=sys.argv[3],
)
client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=[])
# No flush: the SDK's atexit hook must send it.
"""


# The app is another process, on the real clock: so is the server, or it would see the
# app's call as coming from the future.
@pytest.mark.real_clock
def test_an_app_that_exits_without_flushing_still_delivers(
    anthropic_api, live_server, acme_key, tmp_path
):
    result = subprocess.run(
        [sys.executable, "-c", APP_SCRIPT, live_server.url, acme_key, str(tmp_path)],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == [CREATE_ID]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_sends_its_own_events(anthropic_api, live_server, acme_key, tmp_path):
    parent = wrap_live(anthropic_api, live_server, acme_key, tmp_path)
    parent.messages.create(**ASK)  # the parent's sender thread is running now

    pid = os.fork()
    if pid == 0:  # the worker, as gunicorn --preload makes them
        code = 1
        try:
            anthropic_api.message = message_body("msg_from_the_forked_worker")
            parent.messages.create(**ASK)
            code = 0 if meter.flush(timeout=10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert meter.flush(timeout=10)

    assert os.waitstatus_to_exitcode(status) == 0
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {
        CREATE_ID,
        "msg_from_the_forked_worker",
    }
