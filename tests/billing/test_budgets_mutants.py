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
    alerts_all,
    alerts_for,
    bill_totals,
    budget_of,
    budget_position,
    budget_status_for,
    month_alert_history,
    month_hours,
    percent_of,
    project_month,
)
from billing.selectors.lines import month_bill
from billing.selectors.rollups import MonthTotals
from tests.factories import ClientFactory, DailyRollupFactory

pytestmark = pytest.mark.django_db

NOV = date(2026, 11, 1)


@pytest.fixture(autouse=True)
def _clock(time_machine):
    """Clients are created (and their first history recorded) well before November."""
    time_machine.move_to(datetime(2026, 9, 1, tzinfo=UTC), tick=False)


def _alert(
    client, n: int, created_at: datetime, *, month: date = NOV, kind: str = AlertKind.ANOMALY
) -> Alert:
    return Alert.objects.create(
        client=client,
        month=month,
        kind=kind,
        threshold=n,
        key=f"{kind}-{n}",
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


# --- alerts_all: the staff alerts page ---------------------------------------------------


def test_alerts_all_lists_only_the_clients_given_newest_first():
    acme, globex, other = (ClientFactory.create() for _ in range(3))
    noon = datetime(2026, 11, 5, 12, tzinfo=UTC)
    late = _alert(acme, 1, noon + timedelta(hours=1))
    tie_old = _alert(globex, 2, noon)
    tie_new = _alert(acme, 3, noon)
    _alert(other, 4, noon + timedelta(hours=2))

    chosen = ClientFactory._meta.model.objects.filter(pk__in=[acme.pk, globex.pk])
    assert list(alerts_all(chosen)) == [late, tie_new, tie_old]


def test_alerts_all_breaks_a_tie_of_instants_newest_row_first_whoever_it_belongs_to():
    # Without the row as tie-break the database returns a tie in the order it finds the
    # rows: by client then row on SQLite, by row on PostgreSQL. Neither is this order.
    acme, globex = ClientFactory.create(), ClientFactory.create()
    noon = datetime(2026, 11, 5, 12, tzinfo=UTC)
    first = _alert(acme, 1, noon)
    second = _alert(globex, 2, noon)
    agency_wide = _alert(None, 3, noon)
    last = _alert(acme, 4, noon)

    chosen = ClientFactory._meta.model.objects.filter(pk__in=[acme.pk, globex.pk])
    assert list(alerts_all(chosen)) == [last, agency_wide, second, first]


def test_alerts_all_shows_the_200_newest_by_default_and_the_limit_given():
    client = ClientFactory.create()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    Alert.objects.bulk_create(
        Alert(
            client=client,
            month=NOV,
            kind=AlertKind.ANOMALY,
            threshold=n,
            key=f"anomaly-{n}",
            subject=f"alert {n}",
            message="",
            created_at=start + timedelta(minutes=n),
        )
        for n in range(201)
    )
    clients = ClientFactory._meta.model.objects.filter(pk=client.pk)

    shown = [a.threshold for a in alerts_all(clients)]
    assert (len(shown), shown[0], shown[-1]) == (200, 200, 1)
    assert [a.threshold for a in alerts_all(clients, limit=2)] == [200, 199]


def test_alerts_all_loads_clients_and_deliveries_in_one_more_query(django_assert_num_queries):
    client = ClientFactory.create(name="Acme Corp")
    for n in range(3):
        alert = _alert(client, n, datetime(2026, 11, 2, n, tzinfo=UTC))
        AlertDelivery.objects.create(
            alert=alert, channel="email", target="a@example.com", updated_at=alert.created_at
        )
    clients = ClientFactory._meta.model.objects.filter(pk=client.pk)

    with django_assert_num_queries(2):
        assert [
            (a.client and a.client.name, len(a.deliveries.all())) for a in alerts_all(clients)
        ] == [("Acme Corp", 1)] * 3


# --- month_alert_history: the month's alerts and the thresholds crossed without one ---


def _position(client, *, billed: str, budget: str | None = "100"):
    return budget_position(
        client=client,
        month=NOV,
        totals=MonthTotals(
            client_id=client.pk, cost_usd=Decimal(billed), billed_usd=Decimal(billed)
        ),
        now=datetime(2026, 11, 20, tzinfo=UTC),
        budget=None if budget is None else Decimal(budget),
    )


def test_history_lists_this_clients_alerts_of_the_month_newest_first():
    acme = ClientFactory.create()
    other = ClientFactory.create()
    noon = datetime(2026, 11, 5, 12, tzinfo=UTC)
    first_row_latest = _alert(acme, 1, noon + timedelta(hours=1))
    tie_old = _alert(acme, 2, noon)
    tie_new = _alert(acme, 3, noon)
    _alert(acme, 4, noon - timedelta(days=30), month=date(2026, 10, 1))  # October's
    _alert(other, 5, noon + timedelta(hours=2))  # another client's

    history = month_alert_history(acme, _position(acme, billed="10"))

    assert history.alerts == [first_row_latest, tie_new, tie_old]


def test_history_loads_deliveries_in_one_more_query(django_assert_num_queries):
    client = ClientFactory.create()
    for n in range(3):
        alert = _alert(client, n, datetime(2026, 11, 2, n, tzinfo=UTC))
        AlertDelivery.objects.create(
            alert=alert, channel="email", target="a@example.com", updated_at=alert.created_at
        )
    position = _position(client, billed="10")

    with django_assert_num_queries(2):
        history = month_alert_history(client, position)
        assert [len(a.deliveries.all()) for a in history.alerts] == [1, 1, 1]


def test_history_names_each_threshold_reached_without_an_actual_alert():
    # $80.00 of $100 reaches 50% and exactly 80%, not 100%. 50% has its alert; 80% only
    # a projected one, which is not the alert of a threshold reached.
    client = ClientFactory.create(alert_thresholds="50,80,100")
    _alert(client, 50, datetime(2026, 11, 10, tzinfo=UTC), kind=AlertKind.ACTUAL)
    _alert(client, 80, datetime(2026, 11, 3, tzinfo=UTC), kind=AlertKind.PROJECTED)

    history = month_alert_history(client, _position(client, billed="80.00"))

    assert history.unrecorded == [80]
    assert len(history.alerts) == 2


def test_history_of_a_small_budget_counts_cents():
    # $0.80 of a $1 budget reaches 50% and 80%: amounts below a dollar count.
    client = ClientFactory.create(alert_thresholds="50,80,100")

    history = month_alert_history(client, _position(client, billed="0.80", budget="1"))

    assert history.unrecorded == [50, 80]


@pytest.mark.parametrize(("billed", "budget"), [("85", None), ("0", "0"), ("0", "100")])
def test_history_without_budget_or_spend_has_nothing_unrecorded(billed, budget):
    # No budget, or nothing billed (even against a zero budget): no threshold reached.
    client = ClientFactory.create(alert_thresholds="50,80,100")

    history = month_alert_history(client, _position(client, billed=billed, budget=budget))

    assert (history.alerts, history.unrecorded) == ([], [])


# --- bill_totals and budget_status_for: the position of the month's bill --------------


def test_bill_totals_carry_the_bills_client_and_figures():
    client = ClientFactory.create(markup_pct=Decimal("25"))
    DailyRollupFactory.create(client=client, day=date(2026, 11, 3), events=7, cost_usd=Decimal("4"))

    totals = bill_totals(month_bill(client, NOV))

    assert totals == MonthTotals(
        client_id=client.pk,
        cost_usd=Decimal("4"),
        billed_usd=Decimal("5"),
        events=7,
        unpriced_events=0,
    )


def test_status_counts_the_months_events():
    client = ClientFactory.create(markup_pct=Decimal("0"))
    DailyRollupFactory.create(client=client, day=date(2026, 11, 3), events=7)

    assert budget_status_for(client, NOV, now=datetime(2026, 11, 20, tzinfo=UTC)).events == 7


def test_status_given_another_months_bill_reads_its_own_month():
    client = ClientFactory.create(markup_pct=Decimal("0"), monthly_budget_usd=Decimal("100"))
    DailyRollupFactory.create(client=client, day=date(2026, 10, 3), cost_usd=Decimal("90"))
    DailyRollupFactory.create(client=client, day=date(2026, 11, 3), cost_usd=Decimal("10"))
    october = month_bill(client, date(2026, 10, 1))
    now = datetime(2026, 11, 20, tzinfo=UTC)

    position = budget_status_for(client, NOV, now=now, bill=october)

    assert (position.month, position.billed_usd, position.events) == (NOV, Decimal("10"), 1)
