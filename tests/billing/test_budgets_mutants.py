"""Tests that kill the mutants of billing/selectors/budgets.py the mutation run left
(bin/mutate; README, "Mutation testing"; the equivalent ones are listed in
docs/mutants.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from agency.calendar import month_range
from billing.models import Alert, AlertDelivery, AlertKind
from billing.selectors.budgets import (
    alerts_for,
    budget_of,
    month_hours,
    percent_of,
    project_month,
)
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db

NOV = date(2026, 11, 1)


@pytest.fixture(autouse=True)
def _clock(time_machine):
    """Clients are created (and their first history recorded) well before November."""
    time_machine.move_to(datetime(2026, 9, 1, tzinfo=UTC), tick=False)


def _alert(client, n: int, created_at: datetime) -> Alert:
    return Alert.objects.create(
        client=client,
        month=NOV,
        kind=AlertKind.ANOMALY,
        threshold=n,
        key=f"anomaly-{n}",
        subject=f"alert {n}",
        message="",
        created_at=created_at,
    )


# --- alerts_for ----------------------------------------------------------------------


def test_alerts_for_shows_the_20_newest_by_default():
    client = ClientFactory.create()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for n in range(21):
        _alert(client, n, start + timedelta(hours=n))

    assert [a.threshold for a in alerts_for(client)] == list(range(20, 0, -1))


def test_alerts_for_orders_by_time_then_newest_row():
    client = ClientFactory.create()
    noon = datetime(2026, 11, 5, 12, tzinfo=UTC)
    late = _alert(client, 1, noon + timedelta(hours=1))  # first row, latest time
    tie_old = _alert(client, 2, noon)
    tie_new = _alert(client, 3, noon)

    assert list(alerts_for(client)) == [late, tie_new, tie_old]


def test_alerts_for_loads_deliveries_in_one_more_query(django_assert_num_queries):
    client = ClientFactory.create()
    for n in range(3):
        alert = _alert(client, n, datetime(2026, 11, 2, n, tzinfo=UTC))
        AlertDelivery.objects.create(
            alert=alert, channel="email", target="a@example.com", updated_at=alert.created_at
        )

    with django_assert_num_queries(2):
        assert [len(a.deliveries.all()) for a in alerts_for(client)] == [1, 1, 1]


# --- budget_of: the budget in force at a past month's end ------------------------------


def _set_budget(client, amount: str, at: datetime) -> None:
    client.monthly_budget_usd = Decimal(amount)
    client._history_date = at  # django-simple-history records this instant
    client.save()


def test_a_past_month_uses_this_clients_budget_not_anothers():
    acme = ClientFactory.create(monthly_budget_usd=Decimal("100"))
    other = ClientFactory.create(monthly_budget_usd=Decimal("100"))
    _, end = month_range(NOV)
    _set_budget(acme, "500", end - timedelta(days=3))
    _set_budget(other, "999", end - timedelta(days=1))  # later, but another client's
    _set_budget(acme, "700", end + timedelta(days=2))  # after the month: not in force

    assert budget_of(acme, NOV, now=end + timedelta(days=5)) == Decimal("500")


def test_a_past_month_uses_the_latest_record_by_date_then_by_id():
    acme = ClientFactory.create(monthly_budget_usd=Decimal("100"))
    _, end = month_range(NOV)
    _set_budget(acme, "500", end - timedelta(days=1))
    _set_budget(acme, "300", end - timedelta(days=9))  # recorded later, dated earlier
    assert budget_of(acme, NOV, now=end + timedelta(days=5)) == Decimal("500")

    same = end - timedelta(hours=1)
    _set_budget(acme, "610", same)
    _set_budget(acme, "620", same)  # same instant: the later record wins
    assert budget_of(acme, NOV, now=end + timedelta(days=5)) == Decimal("620")


def test_at_the_months_end_instant_the_month_is_past():
    acme = ClientFactory.create(monthly_budget_usd=Decimal("100"))
    _, end = month_range(NOV)
    _set_budget(acme, "500", end - timedelta(days=1))
    _set_budget(acme, "900", end + timedelta(hours=1))

    assert budget_of(acme, NOV, now=end) == Decimal("500")


# --- month_hours ---------------------------------------------------------------------


def test_a_month_not_begun_has_no_elapsed_hour():
    start, _ = month_range(NOV)
    assert month_hours(NOV, start - timedelta(microseconds=1))[0] == 0


def test_the_first_instant_of_a_month_is_its_first_hour():
    start, _ = month_range(NOV)
    assert month_hours(NOV, start)[0] == 1


# --- rounding: half up, exact for any storable amount ---------------------------------


def test_percent_rounds_half_up():
    # 0.0000125 of 1 is 0.00125 %: half up 0.0013 (half even would say 0.0012).
    assert percent_of(Decimal("0.0000125"), Decimal("1")) == Decimal("0.0013")


def test_percent_is_exact_for_a_30_digit_amount():
    # 10^14 and a few millionths of a cent: 28 digits of precision would round its
    # ...0000499999999 % up to ...0001 before the 4-place rounding.
    amount = Decimal("100000000000000.000000499999999")
    assert percent_of(amount, Decimal("1")) == Decimal("10000000000000000.0000")


def test_projection_rounds_half_up_at_storage_scale():
    # 1e-15 × 5 / 2 = 2.5e-15: half up 3e-15 (half even would say 2e-15).
    assert project_month(Decimal("1E-15"), 2, 5) == Decimal("3E-15")


def test_projection_is_exact_for_a_large_amount():
    # Found by search: 28 digits of precision round this one's last place differently.
    billed = Decimal("169223165317.193811197989174")
    assert project_month(billed, 523, 720) == Decimal("232964969461.528764937958327")
