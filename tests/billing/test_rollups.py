"""Rollups: rebuilt whole per (client, local day); incremental and full rebuild agree."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db.models import Count
from django.utils import timezone

from agency.calendar import month_bounds
from agency.models import Client
from billing.models import DailyRollup, HourlyRollup
from billing.selectors.rollups import month_totals
from billing.services.rollups import (
    rollups_rebuild_days,
    rollups_rebuild_dirty,
    rollups_rebuild_period,
)
from tests.clock import AGENCY_TZ
from tests.factories import ClientFactory, ProjectFactory, UsageEventFactory, priced_event
from tracking.models import DirtyDay, ModelRate, PricingStatus, UsageEvent
from tracking.services import dirty_days_mark, local_day, usage_events_reprice

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=AGENCY_TZ)


def rate_for_unpriced_model() -> None:
    """The rate for claude-next-9 arrives: its waiting events are re-priced."""
    ModelRate.objects.create(
        provider="anthropic",
        model="claude-next-9",
        effective_from=date(2026, 1, 1),
        input_usd_per_mtok=Decimal("0.7"),
        output_usd_per_mtok=Decimal("3.3"),
    )
    usage_events_reprice(unpriced_only=True)


def add_event(client: Client, at: datetime, cost: str | None, **fields: object) -> UsageEvent:
    """A stored event with an exact cost (None: unpriced), its day marked dirty."""
    if cost is None:
        fields.update(pricing_status=PricingStatus.UNPRICED, cost_usd=None)
    else:
        fields.update(cost_usd=Decimal(cost), cost_input_usd=Decimal(cost))
    event = UsageEventFactory.create(client=client, occurred_at=at, **fields)
    dirty_days_mark([(client.pk, local_day(at))])
    return event


def snapshot() -> list[tuple[object, ...]]:
    """Every rollup row as exact values, in a stable order."""
    daily = [
        tuple(row)
        for row in DailyRollup.objects.order_by(
            "client_id", "day", "project", "feature", "provider", "model"
        ).values_list(
            "client_id", "day", "project", "feature", "provider", "model", "events",
            "unpriced_events", "input_tokens", "output_tokens", "cost_input_usd", "cost_usd",
            "markup_pct", "billed_usd",
        )
    ]  # fmt: skip
    hourly = [
        tuple(row)
        for row in HourlyRollup.objects.order_by("client_id", "day", "hour").values_list(
            "client_id", "day", "hour", "events", "unpriced_events", "cost_usd"
        )
    ]
    return daily + hourly


def settle() -> None:
    """Move the dirty marks past the settling window so a rebuild consumes them."""
    DirtyDay.objects.update(marked_at=timezone.now() - timedelta(hours=1))


def test_incremental_rollups_equal_a_full_rebuild_to_the_last_decimal(rates: None) -> None:
    with time_machine.travel(datetime(2026, 11, 3, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        acme = ClientFactory.create(markup_pct=Decimal("17.5"))
        other = ClientFactory.create(markup_pct=Decimal("0"))
        bot = ProjectFactory.create(client=acme, name="support-bot")
        for hour in range(6):
            at = datetime(2026, 11, 2, 8 + hour, 7, tzinfo=AGENCY_TZ)
            add_event(acme, at, "0.000000000000001", project=bot, feature="chat")
            add_event(acme, at, "1.333333333333333", feature="search")
            add_event(other, at, "0.100000000000007")
        priced_event(acme, at=datetime(2026, 11, 2, 20, 0, tzinfo=AGENCY_TZ), input_tokens=1234567)
        add_event(acme, datetime(2026, 11, 2, 21, 0, tzinfo=AGENCY_TZ), None, model="claude-next-9")
        settle()
        rollups_rebuild_dirty()
    with time_machine.travel(datetime(2026, 11, 10, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        # The markup changes on the 10th; the 2nd keeps its markup.
        acme.markup_pct = Decimal("40")
        acme.save()
        add_event(acme, datetime(2026, 11, 10, 8, 0, tzinfo=AGENCY_TZ), "2.000000000000009")
        # A late event for the 2nd, and the unknown model gets a rate (re-priced).
        add_event(acme, datetime(2026, 11, 2, 23, 59, tzinfo=AGENCY_TZ), "0.5", feature="chat")
        rate_for_unpriced_model()
        settle()
        rollups_rebuild_dirty()
        incremental = snapshot()
        rollups_rebuild_period(start=date(2026, 11, 1), end=date(2026, 11, 30))
        rebuilt = snapshot()

    assert rebuilt == incremental
    assert DailyRollup.objects.filter(unpriced_events__gt=0).count() == 0
    assert len({row[12] for row in incremental if row[0] == acme.pk and len(row) == 14}) == 2


def test_sums_are_exact_to_fifteen_places() -> None:
    client = ClientFactory.create(markup_pct=Decimal("10"))
    at = datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ)
    for _ in range(3):
        add_event(client, at, "0.100000000000001")

    rollups_rebuild_days(client_id=client.pk, days=[date(2026, 11, 2)])

    totals = month_totals(month=date(2026, 11, 1))[client.pk]
    assert totals.cost_usd == Decimal("0.300000000000003")
    assert totals.billed_usd == Decimal("0.330000000000003")


def test_day_is_the_agency_local_day(settings: object) -> None:
    settings.TIME_ZONE = "America/New_York"  # type: ignore[attr-defined]
    client = ClientFactory.create()
    add_event(client, datetime(2026, 11, 1, 3, 0, tzinfo=UTC), "1")

    rollups_rebuild_dirty_now()

    assert list(DailyRollup.objects.values_list("day", flat=True)) == [date(2026, 10, 31)]
    assert month_totals(month=date(2026, 10, 1))[client.pk].cost_usd == Decimal("1")
    assert client.pk not in month_totals(month=date(2026, 11, 1))


def rollups_rebuild_dirty_now() -> None:
    settle()
    rollups_rebuild_dirty()


def test_markup_change_applies_from_the_day_it_is_made() -> None:
    with time_machine.travel(datetime(2026, 11, 1, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        client = ClientFactory.create(markup_pct=Decimal("20"))
    with time_machine.travel(datetime(2026, 11, 10, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        client.markup_pct = Decimal("50")
        client.save()
    with time_machine.travel(NOW, tick=False):
        add_event(client, datetime(2026, 11, 9, 23, 0, tzinfo=AGENCY_TZ), "10")
        add_event(client, datetime(2026, 11, 10, 1, 0, tzinfo=AGENCY_TZ), "10")
        rollups_rebuild_dirty_now()

    billed = dict(DailyRollup.objects.values_list("day", "billed_usd"))
    assert billed == {date(2026, 11, 9): Decimal("12"), date(2026, 11, 10): Decimal("15")}


def test_today_uses_the_current_markup_even_without_history() -> None:
    client = ClientFactory.create(markup_pct=Decimal("20"))
    Client.objects.filter(pk=client.pk).update(markup_pct=Decimal("30"))  # no history row
    add_event(client, timezone.now(), "10")

    rollups_rebuild_dirty_now()

    assert DailyRollup.objects.get().billed_usd == Decimal("13")


def test_unpriced_events_are_counted_not_priced_at_zero() -> None:
    client = ClientFactory.create()
    add_event(client, NOW, None, model="mystery-model")

    rollups_rebuild_dirty_now()

    row = DailyRollup.objects.get()
    assert (row.model, row.events, row.unpriced_events) == ("mystery-model", 1, 1)
    assert month_totals(month=NOW.date())[client.pk].unknown_spend


def test_rows_group_by_project_feature_and_rate_model(rates: None) -> None:
    client = ClientFactory.create()
    project = ProjectFactory.create(client=client, name="bot")
    priced_event(client, at=NOW, model="claude-sonnet-4-5-20250929", project=project)
    priced_event(client, at=NOW, model="claude-sonnet-4-5")

    rollups_rebuild_dirty_now()

    rows = set(DailyRollup.objects.values_list("project", "model", "events"))
    assert rows == {("bot", "claude-sonnet-4-5", 1), ("", "claude-sonnet-4-5", 1)}


def test_consumed_dirty_marks_are_deleted() -> None:
    client = ClientFactory.create()
    add_event(client, NOW, "1")
    settle()

    assert rollups_rebuild_dirty() == 1
    assert not DirtyDay.objects.exists()


def test_marks_inside_the_settling_window_are_rebuilt_but_kept() -> None:
    client = ClientFactory.create()
    add_event(client, timezone.now(), "1")

    rollups_rebuild_dirty()

    assert DailyRollup.objects.count() == 1
    assert DirtyDay.objects.count() == 1


def test_rebuilding_twice_changes_nothing() -> None:
    client = ClientFactory.create()
    add_event(client, NOW, "1.5", feature="a")
    add_event(client, NOW, "2.5", feature="b")
    rollups_rebuild_days(client_id=client.pk, days=[NOW.date()])
    first = snapshot()

    rollups_rebuild_days(client_id=client.pk, days=[NOW.date()])

    assert snapshot() == first


def test_period_rebuild_removes_rows_of_days_without_events() -> None:
    client = ClientFactory.create()
    event = add_event(client, NOW, "1")
    rollups_rebuild_days(client_id=client.pk, days=[NOW.date()])
    event.delete()

    rollups_rebuild_period(start=date(2026, 11, 1), end=date(2026, 11, 30), client_id=client.pk)

    assert not DailyRollup.objects.exists()
    assert not HourlyRollup.objects.exists()


def test_period_rebuild_of_one_client_leaves_others_alone() -> None:
    first, second = ClientFactory.create(), ClientFactory.create()
    add_event(first, NOW, "1")
    add_event(second, NOW, "2")
    rollups_rebuild_dirty_now()
    UsageEvent.objects.filter(client=second).delete()

    rollups_rebuild_period(start=NOW.date(), end=NOW.date(), client_id=first.pk)

    assert set(DailyRollup.objects.values_list("client_id", flat=True)) == {first.pk, second.pk}


def test_hourly_rollups_bucket_by_utc_hour() -> None:
    client = ClientFactory.create()
    add_event(client, datetime(2026, 11, 20, 14, 5, tzinfo=AGENCY_TZ), "1")
    add_event(client, datetime(2026, 11, 20, 14, 55, tzinfo=AGENCY_TZ), "2")
    add_event(client, datetime(2026, 11, 20, 15, 0, tzinfo=AGENCY_TZ), "4")

    rollups_rebuild_dirty_now()

    hours = dict(HourlyRollup.objects.values_list("hour", "cost_usd"))
    assert hours == {
        datetime(2026, 11, 20, 14, tzinfo=AGENCY_TZ): Decimal("3"),
        datetime(2026, 11, 20, 15, tzinfo=AGENCY_TZ): Decimal("4"),
    }


def test_month_bounds_are_first_and_last_day() -> None:
    assert month_bounds(date(2028, 2, 17)) == (date(2028, 2, 1), date(2028, 2, 29))


def test_per_client_rebuild_equals_the_all_clients_rebuild(rates: None) -> None:
    """On PostgreSQL the period and dirty-day rebuilds are one INSERT … SELECT per day;
    the per-client rebuild is the ORM aggregation. Same rows, to the last decimal."""
    with time_machine.travel(datetime(2026, 11, 1, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        acme = ClientFactory.create(markup_pct=Decimal("12.5"))
        globex = ClientFactory.create(markup_pct=Decimal("-3.25"))
        bot = ProjectFactory.create(client=acme, name="bot")
    days = [date(2026, 11, 2), date(2026, 11, 3)]
    with time_machine.travel(NOW, tick=False):
        for day in days:
            at = datetime(day.year, day.month, day.day, 10, tzinfo=AGENCY_TZ)
            priced_event(acme, at=at, project=bot, input_tokens=777_777, output_tokens=3_333)
            priced_event(acme, at=at, model="claude-haiku-4-5", output_tokens=12_345)
            priced_event(globex, at=at + timedelta(hours=5), model="claude-opus-4-1")
            add_event(globex, at, None, model="not-yet-priced")
        for client in (acme, globex):
            rollups_rebuild_days(client_id=client.pk, days=days)
        per_client = snapshot()
        rollups_rebuild_period(start=days[0], end=days[-1])

    assert snapshot() == per_client
    assert len(per_client) == 14  # 4 daily and 3 hourly rows per day


# --- the whole incremental path (ingest, re-pricing, markup edits) vs the command ----------


def every_rollup_column() -> list[tuple[object, ...]]:
    """Every stored column of every rollup row (ids aside), in a stable order."""
    daily_fields = [f.attname for f in DailyRollup._meta.concrete_fields if not f.primary_key]
    hourly_fields = [f.attname for f in HourlyRollup._meta.concrete_fields if not f.primary_key]
    daily = DailyRollup.objects.order_by(
        "client_id", "day", "project", "feature", "provider", "model"
    ).values_list(*daily_fields)
    hourly = HourlyRollup.objects.order_by("client_id", "day", "hour").values_list(*hourly_fields)
    return [("daily", *row) for row in daily] + [("hourly", *row) for row in hourly]


def call(event_id: str, at: str, **fields: object) -> dict[str, object]:
    data: dict[str, object] = {
        "id": event_id,
        "model": "claude-sonnet-4-5",
        "occurred_at": at,
        "usage": {
            "input_tokens": 1201,
            "output_tokens": 457,
            "cache_read_input_tokens": 30_011,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 2003,
                "ephemeral_1h_input_tokens": 97,
            },
            "cache_creation_input_tokens": 2100,
        },
    }
    data.update(fields)
    return data


def test_rollups_kept_by_ingest_equal_the_rebuild_command_to_the_last_decimal(
    rates: None, settings: object
) -> None:
    """Nothing here marks a day by hand: ingest, re-pricing and markup edits must mark
    every day they change, across a DST change and local midnights in New York."""
    settings.TIME_ZONE = "America/New_York"  # type: ignore[attr-defined]
    from tracking.ingest import usage_ingest

    with time_machine.travel(datetime(2026, 11, 3, 9, 0, tzinfo=UTC), tick=False):
        acme = ClientFactory.create(slug="acme", markup_pct=Decimal("17.5"))
        globex = ClientFactory.create(slug="globex", markup_pct=Decimal("0"))
        events = [
            # 1 Nov 2026 is the DST change in New York; local midnight is 04:00Z before it.
            call("a1", "2026-11-01T03:59:59Z", project="support-bot", feature="chat"),
            call("a2", "2026-11-01T04:00:00Z", project="support-bot", feature="chat"),
            call("a3", "2026-11-02T04:59:59Z", feature="search", model="claude-haiku-4-5"),
            call("a4", "2026-11-02T05:00:00Z", service_tier="batch"),
            call("a5", "2026-11-02T12:00:00Z", model="claude-next-9"),  # unpriced for now
        ]
        usage_ingest(events=events, client=acme)
        usage_ingest(
            events=[
                call(
                    "g1",
                    "2026-11-02T12:00:00Z",
                    provider="openai",
                    model="gpt-4.1",
                    usage={
                        "prompt_tokens": 5003,
                        "completion_tokens": 77,
                        "prompt_tokens_details": {"cached_tokens": 4001},
                    },
                ),
            ],
            client=globex,
        )
        rollups_rebuild_dirty()
    with time_machine.travel(datetime(2026, 11, 10, 14, 0, tzinfo=UTC), tick=False):
        acme.markup_pct = Decimal("40")
        acme.save()
        usage_ingest(
            events=[
                call("a6", "2026-11-10T13:00:00Z"),
                call("a7", "2026-11-02T13:00:00Z", feature="search"),  # eight days late
                call("a1", "2026-11-01T03:59:59Z", project="support-bot", feature="chat"),
            ],
            client=acme,
        )
        rollups_rebuild_dirty()
        rate_for_unpriced_model()
        rollups_rebuild_dirty_now()  # every mark consumed: nothing left to hide behind
        assert not DirtyDay.objects.exists()
    with time_machine.travel(datetime(2026, 11, 10, 20, 0, tzinfo=UTC), tick=False):
        acme.markup_pct = Decimal("55.55")  # later the same day, no new usage
        acme.save()
    with time_machine.travel(datetime(2026, 11, 10, 20, 2, tzinfo=UTC), tick=False):
        rollups_rebuild_dirty()
        incremental = every_rollup_column()
        call_command("rebuild_rollups", "--start", "2026-10-01", "--end", "2026-11-30")
        rebuilt = every_rollup_column()
        # The other aggregation (PostgreSQL rebuilds with one INSERT … SELECT per day;
        # this is the ORM one) must give the same rows too.
        for client_id, day in set(DailyRollup.objects.values_list("client_id", "day")):
            rollups_rebuild_days(client_id=client_id, days=[day])
        orm = every_rollup_column()

    assert rebuilt == incremental
    assert orm == incremental
    days = {row[2] for row in incremental if row[0] == "daily" and row[1] == acme.pk}
    assert days == {date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 10)}
    priced = UsageEvent.objects.filter(client=acme).aggregate(n=Count("pk"))["n"]
    assert month_totals(month=date(2026, 11, 1))[acme.pk].events == priced - 1  # a1 on Oct 31
    markups = dict(
        DailyRollup.objects.filter(client=acme).values_list("day", "markup_pct").distinct()
    )
    assert markups[date(2026, 11, 2)] == Decimal("17.5")
    assert markups[date(2026, 11, 10)] == Decimal("55.55")


def test_rebuild_rollups_command_restores_a_period_from_the_raw_events(capsys) -> None:
    acme = ClientFactory.create(slug="acme", markup_pct=Decimal("10"))
    globex = ClientFactory.create(slug="globex")
    add_event(acme, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "1.000000000000001")
    add_event(globex, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "2")
    rollups_rebuild_dirty_now()
    good = every_rollup_column()
    DailyRollup.objects.update(cost_usd=Decimal("999"), billed_usd=Decimal("999"))
    HourlyRollup.objects.all().delete()

    call_command("rebuild_rollups", "--start", "2026-11-01", "--end", "2026-11-30")

    assert every_rollup_column() == good
    assert "rebuilt 2026-11-01…2026-11-30: 2 daily rollup rows" in capsys.readouterr().out


def test_rebuild_rollups_command_for_one_client_leaves_the_others_alone() -> None:
    acme = ClientFactory.create(slug="acme")
    globex = ClientFactory.create(slug="globex")
    add_event(acme, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "1")
    add_event(globex, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "2")
    rollups_rebuild_dirty_now()
    DailyRollup.objects.update(cost_usd=Decimal("999"))

    call_command(
        "rebuild_rollups", "--start", "2026-11-02", "--end", "2026-11-02", "--client", "acme"
    )

    costs = dict(DailyRollup.objects.values_list("client__slug", "cost_usd"))
    assert costs == {"acme": Decimal("1"), "globex": Decimal("999")}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2026-13-01"], "not a date (YYYY-MM-DD): '2026-13-01'"),
        (["--end", "yesterday"], "not a date (YYYY-MM-DD): 'yesterday'"),
        (["--client", "nobody"], "no client with slug 'nobody'"),
    ],
)
def test_rebuild_rollups_command_refuses_bad_arguments(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=f"^{re.escape(message)}$"):
        call_command("rebuild_rollups", *args)


def test_rebuild_rollups_dirty_consumes_the_marks() -> None:
    acme = ClientFactory.create()
    add_event(acme, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "1")
    settle()

    call_command("rebuild_rollups", "--dirty")

    assert DailyRollup.objects.get().cost_usd == Decimal("1")
    assert not DirtyDay.objects.exists()


def test_rebuilds_keep_the_rollups_of_an_archived_month() -> None:
    """An archived month's events are detached (tracking.partitions): its rollups are all
    that is left, so no rebuild path may wipe them; other months still rebuild."""
    from tracking.models import ArchivedMonth

    client = ClientFactory.create()
    event = add_event(client, NOW, "1")
    rollups_rebuild_days(client_id=client.pk, days=[NOW.date()])
    before = list(DailyRollup.objects.values())
    event.delete()
    ArchivedMonth.objects.create(month=date(2026, 11, 1), archived_at=NOW, events=1)

    rollups_rebuild_days(client_id=client.pk, days=[NOW.date()])
    rollups_rebuild_period(start=date(2026, 11, 1), end=date(2026, 11, 30))

    assert list(DailyRollup.objects.values()) == before
