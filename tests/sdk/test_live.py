"""End to end: the wrapped Anthropic client → the SDK's sender → the real app (live server).

Only Anthropic is faked (a MockTransport with real Messages API bodies); the ClientMeter
side is the real ingest and budget API on a transactional test database, reached over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import anthropic
import clientmeter as meter
import httpx2
import pytest
import time_machine
from django.conf import settings

from agency.models import Client, Project
from billing.services.rollups import rollups_rebuild_dirty
from tests.factories import ClientFactory
from tests.sdk.anthropic_api import (
    BATCH_ID,
    MODEL,
    START_WITH_CACHE,
    message_body,
    overloaded_midway,
    stream_events,
)
from tests.sdk.conftest import process_exit
from tests.sdk.openai_api import BATCH_ID as OPENAI_BATCH_ID
from tests.sdk.openai_api import BATCH_USAGE, CHAT_USAGE, RESPONSE_USAGE, OpenAIAPI
from tracking.keys import api_key_create
from tracking.models import ModelRate, UsageEvent
from tracking.pricing import RateCard, normalize_usage, price_usage

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ASK: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, Claude"}],
}
CREATE_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
# tracking/data/model_rates.csv, Sonnet 4.6 per MTok: input 3, output 15, 5m write 3.75, 1h write 6, read 0.30.
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
    return sorted(tmp_path.glob("spool/*/queue/*.json"))


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(tmp_path.glob("spool/*/dead/*.json"))]


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


def test_an_event_for_another_client_is_a_dead_letter_and_flush_says_so(
    anthropic_api, live_server, acme, tmp_path
):
    _, globex_key = api_key_create(name="globex bot", client=client_named("globex"))
    client = wrap_live(anthropic_api, live_server, globex_key, tmp_path)

    client.messages.create(**ASK)

    assert not meter.flush(timeout=10)  # answered, but the event was not taken
    assert UsageEvent.objects.count() == 0
    assert spooled_files(tmp_path) == []
    [letter] = dead_letters(tmp_path)
    [result] = json.loads(letter["answer"])
    assert [error["code"] for error in result["errors"]] == ["forbidden_client"]
    assert [event["id"] for event in letter["events"]] == [CREATE_ID]


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


# --- issue 9 on the real app -------------------------------------------------------------


def wrap_for(
    api: Any, live_server: Any, key: str, spool: Path, slug: str | None, **kwargs: Any
) -> Any:
    return meter.wrap(
        api.client(),
        client=slug,
        url=live_server.url,
        api_key=key,
        spool_dir=spool / "spool",
        **kwargs,
    )


def stored(client_slug: str) -> set[str]:
    return set(
        UsageEvent.objects.filter(client__slug=client_slug).values_list("event_id", flat=True)
    )


@pytest.mark.parametrize("slug", [True, False], ids=["client-tagged", "key-only"])
def test_spooled_events_of_two_keys_land_each_under_its_own_client(
    anthropic_api, live_server, acme, acme_key, tmp_path, slug
):
    _, globex_key = api_key_create(name="globex bot", client=client_named("globex"))
    down = {"http_client": httpx2.Client(transport=Down())}
    apps = {"acme": acme_key, "globex": globex_key}
    ids: dict[str, set[str]] = {}
    for name, key in apps.items():
        client = wrap_for(anthropic_api, live_server, key, tmp_path, name if slug else None, **down)
        ids[name] = {f"msg_{name}_{n:02}" for n in range(20)}
        for message_id in sorted(ids[name]):
            client.messages.create(**ASK, metadata={"user_id": message_id})
    process_exit()

    wrap_for(anthropic_api, live_server, acme_key, tmp_path, "acme" if slug else None)
    assert meter.flush(timeout=20)
    assert (stored("acme"), stored("globex")) == (ids["acme"], set())

    wrap_for(anthropic_api, live_server, globex_key, tmp_path, "globex" if slug else None)
    assert meter.flush(timeout=20)
    assert (stored("acme"), stored("globex")) == (ids["acme"], ids["globex"])


def test_a_stream_with_a_revised_cache_write_lands_priced(
    anthropic_api, live_server, acme_key, tmp_path
):
    anthropic_api.stream = stream_events(
        start_usage=START_WITH_CACHE,
        delta_usages=[{"output_tokens": 15, "cache_creation_input_tokens": 400}],
    )
    client = wrap_live(anthropic_api, live_server, acme_key, tmp_path)
    system = [{"type": "text", "text": "Acme", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]

    with client.messages.stream(**ASK, system=system) as stream:
        stream.until_done()

    assert meter.flush(timeout=10)
    event = UsageEvent.objects.get()
    # Sonnet 4.6: 25 × 3 + 148 × 3.75 + 252 × 6 (the 1h write grew by 152) + 15 × 15 per MTok.
    assert (event.cache_write_5m_tokens, event.cache_write_1h_tokens, event.cost_usd) == (
        148,
        252,
        Decimal("0.002367"),
    )


def test_a_streamed_error_lands_with_its_status(anthropic_api, live_server, acme_key, tmp_path):
    anthropic_api.stream = overloaded_midway()
    client = wrap_live(anthropic_api, live_server, acme_key, tmp_path)

    with pytest.raises(anthropic.APIStatusError), client.messages.stream(**ASK) as stream:
        stream.until_done()

    assert meter.flush(timeout=10)
    event = UsageEvent.objects.get()
    assert (event.status_code, event.input_tokens, event.output_tokens) == (529, 25, 1)


# --- OpenAI, priced by the server's rules ---------------------------------------------------


def engine_cost(model: str, usage: dict[str, Any], service_tier: str | None = None) -> Decimal:
    """What tracking/pricing.py's OpenAI rules give for this usage at the shipped rate."""
    rate = ModelRate.objects.get(provider="openai", model=model)
    normalized = normalize_usage("openai", usage, service_tier=service_tier)
    return price_usage(normalized, RateCard.from_rate(rate)).total


def wrap_openai(live_server: Any, key: str, tmp_path: Path) -> Any:
    return wrap_for(OpenAIAPI(), live_server, key, tmp_path, "acme")


def test_an_openai_chat_completion_lands_priced(live_server, acme_key, tmp_path):
    client = wrap_openai(live_server, acme_key, tmp_path)

    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])

    assert meter.flush(timeout=10)
    event = UsageEvent.objects.get()
    # gpt-4o per MTok: 86 uncached × 2.50 + 1,920 cached × 1.25 + 300 output × 10.
    assert event.cost_usd == Decimal("0.005615") == engine_cost("gpt-4o", CHAT_USAGE)
    assert (event.provider, event.cache_read_tokens, event.input_tokens) == ("openai", 1920, 86)


def test_a_streamed_openai_chat_completion_lands_priced(live_server, acme_key, tmp_path):
    client = wrap_openai(live_server, acme_key, tmp_path)

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )

    assert all(chunk.usage is None for chunk in chunks)
    assert meter.flush(timeout=10)
    assert UsageEvent.objects.get().cost_usd == Decimal("0.005615")


def test_an_openai_response_lands_priced(live_server, acme_key, tmp_path):
    client = wrap_openai(live_server, acme_key, tmp_path)

    with client.responses.stream(model="gpt-5", input="A story") as stream:
        stream.until_done()

    assert meter.flush(timeout=10)
    event = UsageEvent.objects.get()
    # gpt-5 per MTok: 1,976 uncached × 1.25 + 1,024 cached × 0.125 + 800 output × 10
    # (the 512 reasoning tokens are inside the 800, not added).
    assert event.cost_usd == Decimal("0.010598") == engine_cost("gpt-5", RESPONSE_USAGE)
    assert event.output_tokens == 800


def test_openai_batch_results_land_at_half_price(live_server, acme_key, tmp_path):
    client = wrap_openai(live_server, acme_key, tmp_path)
    batch = client.batches.retrieve(OPENAI_BATCH_ID)

    client.files.content(batch.output_file_id).read()

    assert meter.flush(timeout=10)
    events = UsageEvent.objects.order_by("event_id")
    # gpt-4o-mini per MTok: (22 × 0.15 + 2 × 0.60) / 2 for each succeeded line.
    expected = engine_cost("gpt-4o-mini", BATCH_USAGE, service_tier="batch")
    assert expected == Decimal("0.00000225")
    assert [(e.event_id, e.service_tier, e.cost_usd) for e in events] == [
        ("chatcmpl-batch1", "batch", expected),
        ("chatcmpl-batch2", "batch", expected),
    ]
