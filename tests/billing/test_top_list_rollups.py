"""Top-list rollups: per end user and per prompt hash, rebuilt with the daily rollups, so
the client page's top lists never read raw events."""

from __future__ import annotations

import importlib
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
import time_machine
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agency.models import Client
from billing.models import EndUserDailyRollup, PromptDailyRollup
from billing.selectors import dashboard
from billing.services import rollups
from billing.services.rollups import (
    rollups_rebuild_days,
    rollups_rebuild_dirty,
    rollups_rebuild_period,
)
from tests.clock import AGENCY_TZ
from tests.factories import ClientFactory, UsageEventFactory
from tracking.models import PricingStatus, UsageEvent
from tracking.services import dirty_days_mark, local_day

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=AGENCY_TZ)
NOVEMBER = date(2026, 11, 1)


def add_event(client: Client, at: datetime, cost: str | None, **fields: object) -> UsageEvent:
    """A stored event with an exact cost (None: unpriced), its day marked dirty."""
    if cost is None:
        fields.update(pricing_status=PricingStatus.UNPRICED, cost_usd=None)
    else:
        fields.update(cost_usd=Decimal(cost), cost_input_usd=Decimal(cost))
    event = UsageEventFactory.create(client=client, occurred_at=at, **fields)
    dirty_days_mark([(client.pk, local_day(at))])
    return event


def top_rows() -> list[tuple[object, ...]]:
    end_users = EndUserDailyRollup.objects.order_by("client_id", "day", "end_user").values_list(
        "client_id", "day", "end_user", "events", "unpriced_events", "cost_usd",
        "input_tokens", "cache_read_tokens", "output_tokens",
    )  # fmt: skip
    prompts = PromptDailyRollup.objects.order_by("client_id", "day", "prompt_hash").values_list(
        "client_id", "day", "prompt_hash", "events", "unpriced_events", "cost_usd",
        "first_at", "last_at",
    )  # fmt: skip
    return [("u", *row) for row in end_users] + [("p", *row) for row in prompts]


@pytest.fixture
def month_of_calls() -> Client:
    """Two clients, calls over three local days with 15-place costs, one unpriced call,
    one call without a prompt hash, and a call just before the month."""
    acme, other = ClientFactory.create(slug="acme"), ClientFactory.create(slug="other")
    base = datetime(2026, 11, 18, 9, 0, tzinfo=AGENCY_TZ)
    for i in range(12):
        add_event(
            acme,
            base + timedelta(hours=7 * i),
            "0.000000000000001" if i % 3 else "1.100000000000007",
            end_user=f"user-{i % 4}",
            prompt_hash=f"p-{i % 3}",
            input_tokens=100 + i,
            output_tokens=10 * i,
        )
    add_event(acme, base, None, end_user="user-0", prompt_hash="p-0", model="claude-next-9")
    add_event(acme, base, "5", end_user="user-9", prompt_hash="")
    add_event(acme, datetime(2026, 10, 31, 23, 30, tzinfo=AGENCY_TZ), "99", end_user="late-oct")
    add_event(other, base, "70", end_user="mallory", prompt_hash="m-1")
    return acme


@time_machine.travel(NOW, tick=False)
def test_dirty_day_rebuild_writes_top_list_rollups_exactly(month_of_calls):
    rollups_rebuild_dirty()
    user_0 = EndUserDailyRollup.objects.filter(client=month_of_calls, end_user="user-0")
    # user-0: calls 0, 4, 8 (i % 3 == 0 → 1.100000000000007 each for 0; 4 and 8 the tiny
    # cost) plus the unpriced call, which adds a call and no cost.
    assert sum(row.events for row in user_0) == 4
    assert sum(row.unpriced_events for row in user_0) == 1
    assert sum((row.cost_usd for row in user_0), Decimal(0)) == Decimal("1.100000000000009")
    assert not PromptDailyRollup.objects.filter(prompt_hash="").exists()


@time_machine.travel(NOW, tick=False)
def test_a_late_event_updates_the_top_lists_and_a_second_rebuild_changes_nothing(
    month_of_calls,
):
    rollups_rebuild_dirty()
    before = dashboard.end_users(month_of_calls, month=NOVEMBER)
    add_event(month_of_calls, datetime(2026, 11, 19, 8, 0, tzinfo=AGENCY_TZ), "40", end_user="late")
    rollups_rebuild_dirty()
    after = dashboard.end_users(month_of_calls, month=NOVEMBER)
    assert after[0].name == "late" and after[0].raw_usd == Decimal("40")
    assert [u.name for u in after[1:]] == [u.name for u in before]
    rows = top_rows()
    rollups_rebuild_period(start=date(2026, 10, 1), end=date(2026, 11, 30))
    assert top_rows() == rows


@time_machine.travel(NOW, tick=False)
def test_top_lists_read_no_raw_events_and_match_the_events(month_of_calls):
    rollups_rebuild_dirty()
    with CaptureQueriesContext(connection) as queries:
        users = dashboard.end_users(month_of_calls, month=NOVEMBER)
        prompts = dashboard.top_prompts(month_of_calls, month=NOVEMBER)
    assert not [q for q in queries.captured_queries if "tracking_usageevent" in q["sql"]]
    events = UsageEvent.objects.filter(
        client=month_of_calls, occurred_at__gte=datetime(2026, 11, 1, tzinfo=AGENCY_TZ)
    )
    assert "late-oct" not in [u.name for u in users] and "mallory" not in [u.name for u in users]
    for user in users:
        mine = events.filter(end_user=user.name)
        assert user.events == mine.count()
        assert user.raw_usd == sum((e.cost_usd or Decimal(0) for e in mine), Decimal(0))
        assert user.input_tokens == sum(e.input_tokens for e in mine)
    assert [p.prompt_hash for p in prompts] == ["p-0", "p-1", "p-2"]
    for prompt in prompts:
        mine = events.filter(prompt_hash=prompt.prompt_hash)
        assert prompt.calls == mine.count()
        assert prompt.first_at == min(e.occurred_at for e in mine)
        assert prompt.last_at == max(e.occurred_at for e in mine)


@time_machine.travel(NOW, tick=False)
def test_one_client_rebuild_and_the_all_clients_statement_agree(month_of_calls):
    """The ORM path (one client's days; SQLite's only path) and PostgreSQL's per-day
    statement write the same rows."""
    if connection.vendor != "postgresql":
        pytest.skip("the per-day statement is PostgreSQL's")
    days = sorted({local_day(e.occurred_at) for e in UsageEvent.objects.all()})
    for client_id in Client.objects.values_list("pk", flat=True):
        rollups_rebuild_days(client_id=client_id, days=days)
    by_client = top_rows()
    for day in days:
        rollups._rebuild_day_sql(day, None)
    assert top_rows() == by_client
    assert by_client


@time_machine.travel(NOW, tick=False)
def test_the_migration_backfill_writes_what_the_rebuild_writes(month_of_calls):
    rollups_rebuild_period(start=date(2026, 10, 1), end=date(2026, 11, 30))
    rebuilt = top_rows()
    EndUserDailyRollup.objects.all().delete()
    PromptDailyRollup.objects.all().delete()
    migration = importlib.import_module("billing.migrations.0012_scale_top_list_rollups")
    migration.backfill(apps, SimpleNamespace(connection=connection))
    assert top_rows() == rebuilt
