"""The reconciliation read from ``ModelDailyRollup`` equals, to the last decimal, what it
was when read from ``DailyRollup`` (the former path, kept as ``_reconciliation(month,
DailyRollup)``), and both add up to the raw events.

The data set: an agency in New York (UTC−5 in November), events on both sides of local
midnight at the start and end of November and mid-month, several models (one by a dated
alias, one with no rate), tagged and untagged events, a report-sourced client with events
of its own, an unmapped client, report rows for Anthropic (mapped, unmapped and sourced
keys) and OpenAI, and a late event after the rebuild, picked up by the dirty-day rebuild.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from agency.calendar import day_bounds, month_bounds, zone
from agency.db import ExactSum
from agency.models import Client, UsageSource
from billing.models import DailyRollup, ModelDailyRollup, TrackedClientMonth, TrackedModelDay
from billing.selectors.reconciliation import (
    TOKEN_KINDS,
    Reconciliation,
    _reconciliation,
    reconciliation_for,
)
from billing.services.rollups import rollups_rebuild_dirty, rollups_rebuild_period
from tests.billing.test_reconciliation import report
from tests.factories import ClientFactory, ProjectFactory, priced_event
from tracking.models import AccountKind, ProviderAccount, ProviderReportRow, UsageEvent
from tracking.provider_reports.summaries import report_summaries_refresh

OCTOBER, NOVEMBER, DECEMBER = date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)
MONTHS = (OCTOBER, NOVEMBER, DECEMBER)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def clients(settings: Any, rates: None, time_machine: Any) -> dict[str, Client]:
    settings.TIME_ZONE = "America/New_York"
    time_machine.move_to(utc(2026, 12, 5, 12), tick=False)
    acme = ClientFactory.create(slug="acme")
    beta = ClientFactory.create(slug="beta")
    loose = ClientFactory.create(slug="loose")  # no key mapped: unattributed
    sourced = ClientFactory.create(slug="sourced", usage_source=UsageSource.PROVIDER_REPORT)
    for client, key in ((acme, "apikey_acme"), (beta, "apikey_beta"), (sourced, "apikey_s")):
        ProviderAccount.objects.create(
            provider="anthropic", kind=AccountKind.API_KEY, external_id=key, client=client
        )
    web = ProjectFactory.create(client=beta, name="web")
    moments = (
        utc(2026, 11, 1, 4, 59),  # 31 October, 23:59 local: October
        utc(2026, 11, 1, 5, 0),  # 1 November, 00:00 local
        utc(2026, 11, 15, 4, 30),  # 14 November local
        utc(2026, 11, 15, 5, 30),  # 15 November local
        utc(2026, 12, 1, 4, 59),  # 30 November local
        utc(2026, 12, 1, 5, 0),  # 1 December local
    )
    models = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-5-20251101", "no-rate-x")
    for n, at in enumerate(moments):
        for m, model in enumerate(models):
            tokens: dict[str, Any] = {
                "input_tokens": 1_234 + 7 * n + m,
                "output_tokens": 321 + 3 * n * m,
            }
            priced_event(acme, at=at, model=model, **tokens)
            priced_event(beta, at=at, model=model, **tokens)  # untagged
            if m % 2:
                priced_event(beta, at=at, model=model, project=web, **tokens)
            priced_event(sourced, at=at, model=model, **tokens)
            if m == n % 4:
                priced_event(loose, at=at, model=model, **tokens)
    rollups_rebuild_period(start=OCTOBER, end=date(2026, 12, 31))
    # The provider's books: not every day, several keys, OpenAI with nothing tracked.
    for day in (date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 14), date(2026, 11, 30)):
        for key in ("apikey_acme", "apikey_beta", "apikey_s", "apikey_unmapped"):
            report(
                day, "claude-sonnet-4-5", "123.456", "123.4", api_key_id=key, input_tokens=9,
                requests=4,
            )  # fmt: skip
            report(day, "claude-haiku-4-5-20251001", "7.0001", api_key_id=key, output_tokens=5)
        report(day, "gpt-4.1", "50", provider="openai", api_key_id="sk_1", input_tokens=100)
    report(date(2026, 12, 1), "claude-opus-4-5", "99.99", api_key_id="apikey_acme")
    # A group only a report-sourced key used, and rows without an amount or a list amount.
    report(date(2026, 11, 14), "claude-opus-4-5", "10.5", api_key_id="apikey_s")
    report(date(2026, 11, 14), "no-rate-x", "1", api_key_id="apikey_s")  # unrated too
    for key, amount in (("apikey_s", None), ("apikey_unmapped", Decimal("3.000000000001"))):
        ProviderReportRow.objects.create(
            provider="anthropic", day=date(2026, 11, 30), model="claude-sonnet-4-5",
            api_key_id=key, batch=True, amount_cents=amount, list_amount_cents=None,
            input_tokens=11,
        )  # fmt: skip
    ProviderReportRow.objects.create(
        provider="anthropic", day=date(2026, 11, 30), model="claude-haiku-4-5",
        api_key_id="apikey_s", service_tier="priority", amount_cents=None, output_tokens=3,
    )  # fmt: skip
    report_summaries_refresh(
        provider="anthropic", since=date(2026, 11, 30), until=date(2026, 11, 30)
    )
    return {"acme": acme, "beta": beta, "loose": loose, "sourced": sourced}


def both(month: date) -> tuple[Reconciliation, Reconciliation]:
    return reconciliation_for(month), _reconciliation(month, legacy=True)


def assert_identical(month: date) -> Reconciliation:
    new, old = both(month)
    assert new == old
    # Same digits, not only the same value (no 4.5 against 4.500 on the page).
    for a, b in ((new.total, old.total), (new.report_sourced, old.report_sourced)):
        assert str(a.tracked_cost_usd) == str(b.tracked_cost_usd)
        assert str(a.provider_cost_usd) == str(b.provider_cost_usd)
    return new


def raw(month: date, *, sourced: bool) -> dict[str, Any]:
    """The month's raw events (agency-local days), of report-sourced clients or the rest."""
    first, last = month_bounds(month)
    events = UsageEvent.objects.annotate(local=TruncDate("occurred_at", tzinfo=zone())).filter(
        local__gte=first, local__lte=last
    )
    condition = Q(client__usage_source=UsageSource.PROVIDER_REPORT)
    events = events.filter(condition) if sourced else events.exclude(condition)
    return events.aggregate(cost=ExactSum("cost_usd"), **{k: Sum(k) for k in TOKEN_KINDS})


@pytest.mark.parametrize("month", MONTHS)
def test_the_model_rollup_gives_the_same_reconciliation(
    clients: dict[str, Client], month: date
) -> None:
    recon = assert_identical(month)
    assert recon.has_report
    assert ModelDailyRollup.objects.count() < DailyRollup.objects.count()


def test_the_figures_add_up_to_the_raw_events(clients: dict[str, Client]) -> None:
    recon = reconciliation_for(NOVEMBER)
    rest, sourced = raw(NOVEMBER, sourced=False), raw(NOVEMBER, sourced=True)
    tracked = recon.total.tracked_cost_usd + recon.not_in_report.tracked_cost_usd
    assert tracked == rest["cost"]
    assert recon.report_sourced.tracked_cost_usd == sourced["cost"]
    for kind in TOKEN_KINDS:
        in_report = recon.total.tracked_tokens[kind] + recon.not_in_report.tracked_tokens[kind]
        assert in_report == (rest[kind] or 0)
        assert recon.report_sourced.tracked_tokens[kind] == (sourced[kind] or 0)
    # The unpriced model is tracked as calls with no cost, never as $0 of a rate.
    assert recon.total.tracked_unpriced_events > 0
    # 1 November (reported) holds the calls from local midnight on, not the UTC day's.
    first = recon.by_day[0].figures
    assert first.tracked_cost_usd == _raw_day_cost(date(2026, 11, 1))


def _raw_day_cost(day: date) -> Decimal:
    start, end = day_bounds(day)
    return UsageEvent.objects.filter(
        occurred_at__gte=start,
        occurred_at__lt=end,
        client__usage_source=UsageSource.EVENTS,
    ).aggregate(cost=ExactSum("cost_usd"))["cost"]


def test_a_late_event_shows_after_the_dirty_day_rebuild(clients: dict[str, Client]) -> None:
    before = reconciliation_for(NOVEMBER)
    late = priced_event(
        clients["acme"],
        at=utc(2026, 11, 14, 18),
        model="claude-sonnet-4-5",
        input_tokens=77_777,
        output_tokens=1,
        received_at=utc(2026, 12, 5, 12),
    )
    # Until the rebuild (every 2 minutes, debounced after ingest) the rollups hold the
    # day as it was: the page shows the event once the rebuild has run.
    assert reconciliation_for(NOVEMBER) == before
    rollups_rebuild_dirty()
    after = assert_identical(NOVEMBER)
    assert late.cost_usd is not None
    assert after.total.tracked_cost_usd == before.total.tracked_cost_usd + late.cost_usd
    day = after.by_day[13]
    assert day.day == date(2026, 11, 14)
    assert (
        day.figures.tracked_tokens["input_tokens"]
        == before.by_day[13].figures.tracked_tokens["input_tokens"] + 77_777
    )


def test_a_client_switched_to_the_report_moves_aside_without_a_rebuild(
    clients: dict[str, Client],
) -> None:
    """The rollup is per client, so a change of usage source needs no rebuild."""
    clients["beta"].usage_source = UsageSource.PROVIDER_REPORT
    clients["beta"].save()
    recon = assert_identical(NOVEMBER)
    assert recon.report_sourced.tracked_cost_usd == raw(NOVEMBER, sourced=True)["cost"]


def sums_from_the_rollups() -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """``TrackedModelDay`` and ``TrackedClientMonth`` as they should be: re-summed from
    the per-model rollups now."""
    by_day = {
        (g["day"], g["provider"], g["model"], g["n"], g["cost"], g["input_tokens"])
        for g in ModelDailyRollup.objects.values("day", "provider", "model").annotate(
            n=Count("pk"), cost=ExactSum("cost_usd"), input_tokens=Sum("input_tokens")
        )
    }
    by_month: dict[tuple[int, date, str], list[Any]] = {}
    for client_id, day, provider, cost in ModelDailyRollup.objects.values_list(
        "client_id", "day", "provider", "cost_usd"
    ):
        entry = by_month.setdefault((client_id, day.replace(day=1), provider), [0, Decimal(0)])
        entry[0] += 1
        entry[1] += cost
    return by_day, {(*key, n, cost) for key, (n, cost) in by_month.items()}


def stored_sums() -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    return (
        set(
            TrackedModelDay.objects.values_list(
                "day", "provider", "model", "rows", "cost_usd", "input_tokens"
            )
        ),
        set(
            TrackedClientMonth.objects.values_list(
                "client_id", "month", "provider", "rows", "cost_usd"
            )
        ),
    )


def test_the_rebuild_keeps_the_reconciliations_sums(clients: dict[str, Client]) -> None:
    assert stored_sums() == sums_from_the_rollups()
    assert TrackedModelDay.objects.count() > 0
    # A late event, then a rebuild of that one client and day.
    priced_event(clients["beta"], at=utc(2026, 11, 20, 18), model="claude-sonnet-4-5")
    rollups_rebuild_dirty()
    assert stored_sums() == sums_from_the_rollups()
    # Every event of a client's day gone: the rebuild leaves it no rows.
    UsageEvent.objects.filter(client=clients["loose"]).delete()
    rollups_rebuild_period(start=OCTOBER, end=date(2026, 12, 31), client_id=clients["loose"].pk)
    assert not TrackedClientMonth.objects.filter(client=clients["loose"]).exists()
    assert stored_sums() == sums_from_the_rollups()
    # A whole day's events gone, for every client.
    UsageEvent.objects.filter(occurred_at__gte=utc(2026, 11, 15, 5)).filter(
        occurred_at__lt=utc(2026, 11, 16, 5)
    ).delete()
    rollups_rebuild_period(start=date(2026, 11, 15), end=date(2026, 11, 15))
    assert not TrackedModelDay.objects.filter(day=date(2026, 11, 15)).exists()
    assert stored_sums() == sums_from_the_rollups()
    assert_identical(NOVEMBER)


def test_a_model_only_report_sourced_clients_used_is_left_out(
    clients: dict[str, Client],
) -> None:
    """On a reported day, a day × model whose every rollup row is a report-sourced
    client's has no tracked cell (the day sum minus their part is nothing, not $0)."""
    priced_event(clients["sourced"], at=utc(2026, 11, 14, 18), model="claude-opus-4-1")
    rollups_rebuild_dirty()
    recon = assert_identical(NOVEMBER)
    day = next(d for d in recon.by_day if d.day == date(2026, 11, 14))
    assert "claude-opus-4-1" not in {m.model for m in day.models}
