"""The overview's faster path (issue 14) gives the figures of the former one, to the cent.

The overview now reads a client's month per invoice line from ``ModelDailyRollup``
(``billing.selectors.lines.line_rows``; a client invoiced by project from
``DailyRollup``) and builds its estimated lines without an ``InvoiceLine``
(``_estimate_line``). Compared here on the same data:

- every figure of every row (billed, raw, margin, calls, calls not priced, calls without
  a project, the 30-day sparkline, the models without a rate) against the same figures
  computed directly from the ``DailyRollup`` rows by the invoice's rule (each line
  rounded, then added up), on the first, a middle and the last day of a month and for
  the month once past, with the past days' cache empty and then filled;
- the past month's bills against the former path, ``invoice_lines_compute`` (``_line``
  on the full ``Figures``), and ``_estimate_line`` against ``_bill_line(_line(...))``;
- the per-model sums the rollup job writes (``billed_usd``, ``untagged_events``)
  against the daily rows they sum, by both rebuild paths.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import time_machine
from django.core.cache import cache
from django.db.models import Q, Sum

from agency.db import ExactSum
from agency.models import Client
from agency.money import ZERO, round_money
from billing.models import DailyRollup, ModelDailyRollup
from billing.selectors import dashboard
from billing.selectors.lines import (
    Figures,
    LineSums,
    _bill_line,
    _estimate_line,
    _line,
    invoice_lines_compute,
    month_bill,
)
from billing.services.rollups import rollups_rebuild_days, rollups_rebuild_period
from tests.clock import AGENCY_TZ
from tests.factories import ClientFactory, DailyRollupFactory, ProjectFactory, UsageEventFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_cache")]

NOVEMBER = dt.date(2026, 11, 1)
MODELS = (
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("openai", "gpt-5"),
    ("anthropic", "mystery-1"),  # no rate: its calls are not priced
)
PROJECTS = ("", "web", "api")
FEATURES = ("", "chat", "search")
PLACES = Decimal("1E-15")


def _world(seed: int) -> list[Client]:
    """Rollup rows at random over October's last days and November: three clients
    invoiced per model, one per project, markups changing from day to day, costs with
    15 places (so line rounding matters), models without a rate."""
    rng = random.Random(seed)
    clients = [
        ClientFactory.create(name=f"C{i}", markup_pct=Decimal(rng.choice(["0", "15", "33.33"])))
        for i in range(3)
    ]
    clients.append(ClientFactory.create(name="Split", invoice_split_by_project=True))
    for client in clients:
        for offset in range(-12, 30):
            day = NOVEMBER + dt.timedelta(days=offset)
            if rng.random() < 0.2:
                continue
            markup = Decimal(rng.choice(["0", "10", "25", "12.5"]))
            buckets = {
                (rng.choice(PROJECTS), rng.choice(FEATURES), rng.choice(MODELS))
                for _ in range(rng.randint(1, 6))
            }
            for project, feature, (provider, model) in buckets:
                events = rng.randint(1, 40)
                unpriced = model == "mystery-1"
                cost = ZERO if unpriced else Decimal(rng.randint(1, 10**17)) * PLACES
                DailyRollupFactory.create(
                    client=client,
                    day=day,
                    project=project,
                    feature=feature,
                    provider=provider,
                    model=model,
                    events=events,
                    unpriced_events=events if unpriced else 0,
                    cost_usd=cost,
                    markup_pct=markup,
                    billed_usd=(cost * (100 + markup) / 100).quantize(
                        PLACES, rounding=ROUND_HALF_UP
                    ),
                )
    return clients


def _expected(client: Client, first: dt.date, last: dt.date) -> dict[str, Any]:
    """A client's figures for the days [first, last], straight from its DailyRollup rows:
    each invoice line (model, and project if split) rounded, then added up."""
    lines: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, 0, ZERO, ZERO])
    untagged = 0
    unpriced: dict[tuple[str, str], int] = defaultdict(int)
    for row in DailyRollup.objects.filter(client=client, day__gte=first, day__lte=last):
        project = row.project if client.invoice_split_by_project else ""
        line = lines[(row.provider, row.model, project)]
        line[0] += row.events
        line[1] += row.unpriced_events
        line[2] += row.cost_usd
        line[3] += row.billed_usd
        untagged += row.events if row.project == "" else 0
        if row.unpriced_events:
            unpriced[(row.provider, row.model)] += row.unpriced_events
    return {
        "events": sum(line[0] for line in lines.values()),
        "unpriced": sum(line[1] for line in lines.values()),
        "raw": sum((round_money(line[2]) for line in lines.values()), ZERO),
        "billed": sum((round_money(line[3]) for line in lines.values()), ZERO),
        "untagged": untagged,
        "unpriced_models": dict(unpriced),
    }


def _spark(client: Client, days: list[dt.date]) -> list[Decimal]:
    billed = dict(
        DailyRollup.objects.filter(client=client, day__in=days)
        .values("day")
        .annotate(b=ExactSum("billed_usd"))
        .values_list("day", "b")
    )
    return [billed.get(day, ZERO) for day in days]


def _assert_overview_matches(clients: list[Client], now: dt.datetime, month: dt.date) -> None:
    today = now.astimezone(AGENCY_TZ).date()
    current = month.year == today.year and month.month == today.month
    last = today if current else dt.date(2026, 11, 30)
    spark_days = [last - dt.timedelta(days=29 - i) for i in range(30)]
    unpriced: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for filled in (False, True):  # the past days summed afresh, then from the cache
        data = dashboard.overview(Client.objects.all(), now=now, month=month)
        rows = {row.client.pk: row for row in data.rows}
        for client in clients:
            row, expected = rows[client.pk], _expected(client, month, last)
            assert row.basis == "estimate"
            assert (row.billed_usd, row.raw_usd) == (expected["billed"], expected["raw"])
            assert row.margin_usd == expected["billed"] - expected["raw"]
            assert (row.events, row.unpriced_events) == (expected["events"], expected["unpriced"])
            assert row.untagged_events == expected["untagged"]
            assert row.spark == _spark(client, spark_days), filled
            if not filled:
                for model, calls in expected["unpriced_models"].items():
                    unpriced[model][0] += calls
                    unpriced[model][1] += 1
        models = {(m.provider, m.model): [m.events, m.clients] for m in data.unpriced_models}
        assert models == dict(unpriced)
        assert data.totals.billed_usd == sum(r.billed_usd for r in data.rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("day", [1, 15, 30])
def test_the_overview_gives_each_clients_figures_by_the_invoice_rule(seed: int, day: int) -> None:
    clients = _world(seed)
    now = dt.datetime(2026, 11, day, 12, tzinfo=AGENCY_TZ)
    cache.clear()
    with time_machine.travel(now, tick=False):
        _assert_overview_matches(clients, now, NOVEMBER)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_past_months_overview_and_bills_are_those_of_the_former_path(seed: int) -> None:
    clients = _world(seed)
    now = dt.datetime(2026, 12, 3, 12, tzinfo=AGENCY_TZ)
    with time_machine.travel(now, tick=False):
        _assert_overview_matches(clients, now, NOVEMBER)
        rows = {
            r.client.pk: r
            for r in dashboard.overview(Client.objects.all(), now=now, month=NOVEMBER).rows
        }
        for client in clients:
            # The former path: the invoice's own lines (``_line`` on full Figures).
            former = [
                _bill_line(line) for line in invoice_lines_compute(client=client, month=NOVEMBER)
            ]
            bill = month_bill(client, NOVEMBER)
            assert bill.lines == former
            assert rows[client.pk].billed_usd == sum((ln.billed_usd for ln in former), ZERO)
            assert rows[client.pk].raw_usd == sum((ln.raw_usd for ln in former), ZERO)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize(
    ("events", "billed"),
    [
        (0, "0"),
        (0, "0.004999"),
        (0, "0.005"),
        (3, "0"),
        (3, "0.004999"),
        (7, "12.345"),
        (2, "-0.005"),
    ],
)
def test_an_estimated_line_is_the_invoice_lines_display(
    split: bool, events: int, billed: str
) -> None:
    key = (NOVEMBER, "anthropic", "claude-sonnet-4-5", "web" if split else "")
    names = {("anthropic", "claude-sonnet-4-5"): "Claude Sonnet 4.5"}
    raw = Decimal(billed) / 2
    figures = Figures(events=events, unpriced_events=min(events, 1), raw_cost_usd=raw)
    figures.billed_usd = Decimal(billed)
    figures.markups.add(Decimal("25"))
    former = _line(key, figures, None, invoice_month=NOVEMBER, split=split, names=names)
    sums = LineSums(events, min(events, 1), 0, raw, Decimal(billed))
    assert _estimate_line(key, sums, split=split, names=names) == (
        None if former is None else _bill_line(former)
    )


def _model_sums_of_daily_rows() -> dict[tuple[int, dt.date, str, str], tuple[Any, ...]]:
    grouped = (
        DailyRollup.objects.values("client_id", "day", "provider", "model")
        .annotate(
            n=Sum("events"),
            u=Sum("unpriced_events"),
            t=Sum("events", filter=Q(project="")),
            c=ExactSum("cost_usd"),
            b=ExactSum("billed_usd"),
        )
        .order_by()
    )
    return {
        (g["client_id"], g["day"], g["provider"], g["model"]): (
            g["n"],
            g["u"],
            g["t"] or 0,
            g["c"],
            g["b"],
        )
        for g in grouped
    }


def _model_rows() -> dict[tuple[int, dt.date, str, str], tuple[Any, ...]]:
    return {
        (m.client_id, m.day, m.provider, m.model): (
            m.events,
            m.unpriced_events,
            m.untagged_events,
            m.cost_usd,
            m.billed_usd,
        )
        for m in ModelDailyRollup.objects.all()
    }


@pytest.mark.parametrize("path", ["sql", "python"])
def test_the_rollup_job_writes_billed_and_untagged_calls_per_model(path: str) -> None:
    client = ClientFactory.create(markup_pct=Decimal("33.33"))
    web = ProjectFactory.create(client=client, name="web")
    noon = dt.datetime(2026, 11, 14, 12, tzinfo=AGENCY_TZ)
    for hour, project, model, cost in (
        (0, None, "claude-sonnet-4-5", "0.000000000000001"),
        (1, web, "claude-sonnet-4-5", "1.234567890123456"),
        (2, None, "claude-haiku-4-5", "0.3"),
        (3, web, "claude-haiku-4-5", "7"),
        (26, web, "claude-sonnet-4-5", "2.5"),
    ):
        UsageEventFactory.create(
            client=client,
            project=project,
            model=model,
            occurred_at=noon + dt.timedelta(hours=hour),
            cost_usd=Decimal(cost),
        )
    days = [dt.date(2026, 11, 14), dt.date(2026, 11, 15)]
    if path == "sql":
        rollups_rebuild_period(start=days[0], end=days[1], client_id=client.pk)
    else:
        rollups_rebuild_days(client_id=client.pk, days=days)
    expected = _model_sums_of_daily_rows()
    assert _model_rows() == expected
    sonnet = expected[(client.pk, days[0], "anthropic", "claude-sonnet-4-5")]
    assert sonnet[2] == 1  # one of its two calls has no project
    assert sonnet[4] > sonnet[3] > 0  # billed: the raw cost with the markup
