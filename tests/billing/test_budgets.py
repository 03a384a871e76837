"""Budget status, burn rate and the recompute, with time frozen where dates matter."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.cache import cache
from django.utils import timezone

from agency.models import Client
from billing.models import BudgetSnapshot, BudgetStatus
from billing.selectors.budgets import (
    budget_band,
    budget_position,
    budget_status_for,
    month_hours,
)
from billing.selectors.rollups import MonthTotals
from billing.services.budgets import budgets_recompute
from billing.tasks import RECOMPUTE_SCHEDULED_KEY, budgets_recompute_task
from tests.clock import AGENCY_TZ
from tests.factories import ClientFactory, UsageEventFactory
from tracking.models import DirtyDay, PricingStatus
from tracking.services import dirty_days_mark, local_day
from tracking.signals import usage_recorded

pytestmark = pytest.mark.django_db

NOVEMBER = date(2026, 11, 1)


def spend(client: Client, at: datetime, cost: str | None) -> None:
    """An event of ``cost`` raw USD at ``at`` (None: unpriced), its day marked dirty."""
    if cost is None:
        UsageEventFactory.create(
            client=client, occurred_at=at, pricing_status=PricingStatus.UNPRICED, cost_usd=None
        )
    else:
        UsageEventFactory.create(client=client, occurred_at=at, cost_usd=Decimal(cost))
    dirty_days_mark([(client.pk, local_day(at))], now=at - timedelta(hours=1))


def recompute() -> None:
    """What the beat runs: rebuild dirty days, then recompute every budget."""
    DirtyDay.objects.update(marked_at=timezone.now() - timedelta(hours=1))
    budgets_recompute_task()


@pytest.mark.parametrize(
    ("billed", "status"),
    [
        ("79.99", BudgetStatus.GREEN),
        ("80.00", BudgetStatus.YELLOW),
        ("99.99", BudgetStatus.YELLOW),
        ("100.00", BudgetStatus.RED),
        ("250", BudgetStatus.RED),
    ],
)
def test_status_bands(billed: str, status: str) -> None:
    assert budget_band(Decimal(billed), Decimal("100")) == status


@pytest.mark.parametrize(
    ("budget", "billed", "status", "percent"),
    [
        ("0", "0", BudgetStatus.GREEN, None),
        ("0", "0.01", BudgetStatus.RED, None),
        ("1", "0.79", BudgetStatus.GREEN, Decimal("79")),
        ("1", "0.799", BudgetStatus.GREEN, Decimal("79.9")),
        ("1", "0.80", BudgetStatus.YELLOW, Decimal("80")),
        ("1", "0.999", BudgetStatus.YELLOW, Decimal("99.9")),
        ("1", "1.00", BudgetStatus.RED, Decimal("100")),
    ],
)
def test_zero_and_one_dollar_budgets_get_their_status(
    budget: str, billed: str, status: str, percent: Decimal | None
) -> None:
    """A zero budget has no percentage (nothing to divide by) and is red once anything is
    billed; a $1 budget turns yellow at 80 cents and red at a dollar."""
    client = ClientFactory.build(pk=1, monthly_budget_usd=Decimal(budget))
    position = budget_position(
        client=client,
        month=NOVEMBER,
        totals=MonthTotals(client_id=1, billed_usd=Decimal(billed)),
        now=datetime(2026, 12, 1, 12, tzinfo=AGENCY_TZ),  # November is over: no projection
        budget=Decimal(budget),
    )
    assert (position.status, position.percent_used) == (status, percent)
    assert (position.projected_status, position.projected_percent) == (status, percent)


def test_no_budget_means_no_status_not_green() -> None:
    assert budget_band(Decimal("0"), None) is None


def test_client_without_budget_has_no_status_or_percent() -> None:
    client = ClientFactory.create(monthly_budget_usd=None, markup_pct=Decimal("0"))
    with time_machine.travel(datetime(2026, 11, 11, 12, 0, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "50")
        recompute()
        position = budget_status_for(client, NOVEMBER)

    assert (position.status, position.projected_status, position.percent_used) == (None, None, None)
    assert position.billed_usd == Decimal("50")
    assert BudgetSnapshot.objects.get(client=client).status == ""


def test_status_is_on_billed_amount_with_markup() -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("25"))
    with time_machine.travel(datetime(2026, 11, 30, 12, 0, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "64")  # billed 80
        recompute()
        position = budget_status_for(client, NOVEMBER)

    assert (position.billed_usd, position.percent_used) == (Decimal("80"), Decimal("80"))
    assert position.status == BudgetStatus.YELLOW


def test_snapshot_and_alerts_use_the_billed_amount_every_screen_shows() -> None:
    """Raw 63.996 at 25% markup is 79.995 billed unrounded, but the invoice line (and so
    every page) bills 80.00: the stored snapshot and the 80% alert follow the bill, not
    the unrounded sum, or the overview and the client page disagree by a band."""
    client = ClientFactory.create(
        monthly_budget_usd=Decimal("100"), markup_pct=Decimal("25"), alert_thresholds="80"
    )
    with time_machine.travel(datetime(2026, 11, 30, 12, 0, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "63.996")
        recompute()
        page = budget_status_for(client, NOVEMBER)

    snapshot = BudgetSnapshot.objects.get(client=client)
    assert page.billed_usd == Decimal("80.00")
    assert page.status == BudgetStatus.YELLOW
    assert (snapshot.billed_usd, snapshot.status) == (page.billed_usd, page.status)
    assert snapshot.percent_used == page.percent_used == Decimal("80")
    assert list(client.alerts.values_list("kind", "threshold")) == [("actual", 80)]


def test_burn_rate_projects_to_month_end_by_the_hour() -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("1000"), markup_pct=Decimal("0"))
    # 10 days and half an hour into November: 241 hours elapsed (the current one counts).
    with time_machine.travel(datetime(2026, 11, 11, 0, 30, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 3, 12, 0, tzinfo=AGENCY_TZ), "241")
        recompute()
        position = budget_status_for(client, NOVEMBER)

    assert (position.elapsed_hours, position.month_hours) == (241, 720)
    assert position.projected_billed_usd == Decimal("720")
    assert (position.status, position.projected_status) == (BudgetStatus.GREEN, BudgetStatus.GREEN)


def test_projection_turns_red_before_the_budget_is_spent() -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("500"), markup_pct=Decimal("0"))
    with time_machine.travel(datetime(2026, 11, 11, 0, 30, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 3, 12, 0, tzinfo=AGENCY_TZ), "241")
        recompute()
        snapshot = BudgetSnapshot.objects.get(client=client, month=NOVEMBER)

    assert (snapshot.status, snapshot.projected_status) == (BudgetStatus.GREEN, BudgetStatus.RED)
    assert snapshot.projected_billed_usd == Decimal("720")


def test_first_hour_of_a_month_starts_a_new_month() -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    with time_machine.travel(datetime(2026, 12, 1, 0, 10, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 30, 23, 50, tzinfo=AGENCY_TZ), "90")
        spend(client, datetime(2026, 12, 1, 0, 5, tzinfo=AGENCY_TZ), "1")
        recompute()
        december = budget_status_for(client, date(2026, 12, 1))
        november = budget_status_for(client, NOVEMBER)

    assert (december.billed_usd, december.elapsed_hours) == (Decimal("1"), 1)
    assert december.projected_billed_usd == Decimal("744")
    assert november.billed_usd == Decimal("90")
    assert november.projected_billed_usd == Decimal("90")  # a past month projects to itself


def test_months_follow_the_agency_time_zone(settings: object) -> None:
    settings.TIME_ZONE = "America/New_York"  # type: ignore[attr-defined]
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    with time_machine.travel(datetime(2026, 11, 1, 3, 30, tzinfo=UTC), tick=False):
        spend(client, datetime(2026, 11, 1, 3, 0, tzinfo=UTC), "85")  # 23:00 on Oct 31 there
        recompute()
        october = budget_status_for(client, date(2026, 10, 1))
        november = budget_status_for(client, NOVEMBER)

    assert (october.billed_usd, october.status) == (Decimal("85"), BudgetStatus.YELLOW)
    assert november.billed_usd == Decimal("0")
    assert BudgetSnapshot.objects.get(client=client).month == date(2026, 10, 1)


def test_a_month_with_a_dst_change_has_its_real_hours(settings: object) -> None:
    settings.TIME_ZONE = "America/New_York"  # type: ignore[attr-defined]
    end_of_november = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    assert month_hours(NOVEMBER, end_of_november) == (721, 721)


def test_budget_edited_mid_month_applies_at_once() -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    with time_machine.travel(datetime(2026, 11, 15, 12, 0, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "85")
        recompute()
        client.monthly_budget_usd = Decimal("200")
        client.save()
        live = budget_status_for(client, NOVEMBER)
        recompute()

    assert live.status == BudgetStatus.GREEN
    assert BudgetSnapshot.objects.get(client=client).status == BudgetStatus.GREEN


def test_a_past_month_keeps_the_budget_in_force_at_its_end() -> None:
    with time_machine.travel(datetime(2026, 10, 1, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    with time_machine.travel(datetime(2026, 11, 5, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 10, 20, 12, 0, tzinfo=AGENCY_TZ), "90")
        client.monthly_budget_usd = Decimal("1000")
        client.save()
        recompute()
        october = budget_status_for(client, date(2026, 10, 1))

    assert (october.budget_usd, october.status) == (Decimal("100"), BudgetStatus.YELLOW)


def test_markup_change_mid_month_bills_each_day_at_its_markup() -> None:
    with time_machine.travel(datetime(2026, 11, 1, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        client = ClientFactory.create(monthly_budget_usd=Decimal("1000"), markup_pct=Decimal("0"))
    with time_machine.travel(datetime(2026, 11, 10, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        client.markup_pct = Decimal("100")
        client.save()
    with time_machine.travel(datetime(2026, 11, 20, 12, 0, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 5, 12, 0, tzinfo=AGENCY_TZ), "100")  # markup 0
        spend(client, datetime(2026, 11, 15, 12, 0, tzinfo=AGENCY_TZ), "100")  # markup 100
        recompute()
        position = budget_status_for(client, NOVEMBER)

    assert (position.cost_usd, position.billed_usd) == (Decimal("200"), Decimal("300"))


def test_markup_change_later_the_same_day_rebills_that_day_without_new_usage() -> None:
    """Today's rows were built at the old markup; the change alone (no new event) must
    rebill them, and they must equal what a full rebuild gives."""
    with time_machine.travel(datetime(2026, 11, 1, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        client = ClientFactory.create(monthly_budget_usd=Decimal("150"), markup_pct=Decimal("0"))
    with time_machine.travel(datetime(2026, 11, 10, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 10, 8, 0, tzinfo=AGENCY_TZ), "100")
        recompute()
        assert budget_status_for(client, NOVEMBER).billed_usd == Decimal("100")
    with time_machine.travel(datetime(2026, 11, 10, 15, 0, tzinfo=AGENCY_TZ), tick=False):
        client.markup_pct = Decimal("100")
        client.save()
        recompute()
        today = budget_status_for(client, NOVEMBER)
        snapshot = BudgetSnapshot.objects.get(client=client)

    assert (today.billed_usd, today.status) == (Decimal("200"), BudgetStatus.RED)
    assert (snapshot.billed_usd, snapshot.status) == (Decimal("200"), BudgetStatus.RED)


def test_markup_change_just_before_midnight_rebills_the_day_after_it_ended() -> None:
    with time_machine.travel(datetime(2026, 11, 10, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        client = ClientFactory.create(monthly_budget_usd=Decimal("1000"), markup_pct=Decimal("0"))
        spend(client, datetime(2026, 11, 10, 8, 0, tzinfo=AGENCY_TZ), "100")
        recompute()
    with time_machine.travel(datetime(2026, 11, 10, 23, 59, tzinfo=AGENCY_TZ), tick=False):
        client.markup_pct = Decimal("50")
        client.save()
    # The next recompute only runs after midnight: the 10th is a past day by then.
    with time_machine.travel(datetime(2026, 11, 11, 0, 1, tzinfo=AGENCY_TZ), tick=False):
        recompute()
        position = budget_status_for(client, NOVEMBER)

    assert position.billed_usd == Decimal("150")


def test_an_edit_that_leaves_the_markup_alone_rebuilds_nothing() -> None:
    with time_machine.travel(datetime(2026, 11, 10, 9, 0, tzinfo=AGENCY_TZ), tick=False):
        client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("10"))
        spend(client, datetime(2026, 11, 10, 8, 0, tzinfo=AGENCY_TZ), "50")
        recompute()
        client.monthly_budget_usd = Decimal("120")
        client.save()
        recompute()

        assert not DirtyDay.objects.exists()


def test_late_event_counts_once_its_day_is_rebuilt() -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    with time_machine.travel(datetime(2026, 11, 20, 12, 0, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "70")
        recompute()
        spend(client, datetime(2026, 11, 2, 13, 0, tzinfo=AGENCY_TZ), "15")  # arrives 18 days late
        recompute()
        snapshot = BudgetSnapshot.objects.get(client=client)

    assert (snapshot.billed_usd, snapshot.status) == (Decimal("85"), BudgetStatus.YELLOW)


def test_unpriced_events_are_surfaced_as_unknown_spend() -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    with time_machine.travel(datetime(2026, 11, 20, 12, 0, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "10")
        spend(client, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), None)
        recompute()
        position = budget_status_for(client, NOVEMBER)

    assert (position.unpriced_events, position.unknown_spend) == (1, True)
    assert BudgetSnapshot.objects.get(client=client).unpriced_events == 1


def test_recompute_twice_gives_the_same_snapshot() -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    with time_machine.travel(datetime(2026, 11, 20, 12, 0, tzinfo=AGENCY_TZ), tick=False):
        spend(client, datetime(2026, 11, 2, 12, 0, tzinfo=AGENCY_TZ), "42.123456789012345")
        recompute()
        first = BudgetSnapshot.objects.values().get()
        budgets_recompute()
        second = BudgetSnapshot.objects.values().get()

    assert first == second


def test_new_usage_schedules_a_recompute() -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    spend(client, timezone.now(), "1")
    cache.delete(RECOMPUTE_SCHEDULED_KEY)

    usage_recorded.send(sender=None, client_ids={client.pk})

    assert BudgetSnapshot.objects.get(client=client).billed_usd == Decimal("1")


def test_a_burst_of_usage_schedules_only_one_recompute() -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    cache.set(RECOMPUTE_SCHEDULED_KEY, "1", 60)  # a recompute is already queued
    try:
        usage_recorded.send(sender=None, client_ids={client.pk})
    finally:
        cache.delete(RECOMPUTE_SCHEDULED_KEY)

    assert not BudgetSnapshot.objects.exists()
