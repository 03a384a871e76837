"""The agency overview: every active client's month to date, budget and 30-day trend."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db.models import Case, F, Q, QuerySet, Sum, Value, When

from agency.calendar import local_day, month_start
from agency.db import ExactSum
from agency.models import Client
from billing.models import DailyRollup
from billing.selectors.budgets import BudgetPosition, budget_of, budget_position
from billing.selectors.dashboard.usage import TREND_CACHE_SECONDS, ZERO, UsageTotals
from billing.selectors.rollups import MonthTotals

SPARK_DAYS = 30


@dataclass
class OverviewRow:
    client: Client
    raw_usd: Decimal = ZERO
    billed_usd: Decimal = ZERO
    events: int = 0
    unpriced_events: int = 0
    untagged_events: int = 0
    spark: list[Decimal] = field(default_factory=list)
    budget: BudgetPosition | None = None

    @property
    def margin_usd(self) -> Decimal:
        return self.billed_usd - self.raw_usd


@dataclass
class UnpricedModel:
    provider: str
    model: str
    events: int
    clients: int


@dataclass
class Overview:
    month: date
    rows: list[OverviewRow]
    totals: UsageTotals
    spark_days: list[date]
    unpriced_models: list[UnpricedModel]
    untagged_events: int
    untagged_clients: int
    sort: str  # the order of ``rows``: a SORT_KEYS key, '-' first when descending


SORT_KEYS: dict[str, Callable[[OverviewRow], Any]] = {
    "name": lambda r: r.client.name.lower(),
    "raw": lambda r: r.raw_usd,
    "billed": lambda r: r.billed_usd,
    "margin": lambda r: r.margin_usd,
    # Clients without a budget sort below any percentage.
    "budget": lambda r: (
        r.budget is not None and r.budget.percent_used is not None,
        r.budget.percent_used if r.budget and r.budget.percent_used is not None else ZERO,
    ),
    "projected": lambda r: r.budget.projected_billed_usd if r.budget else ZERO,
}


def normalise_sort(value: str | None) -> str:
    """A known sort key with an optional leading '-', else 'name'."""
    if value and value.lstrip("-") in SORT_KEYS:
        return value
    return "name"


@dataclass
class DayFigures:
    """One client's usage on one day, summed over its rollup buckets."""

    cost_usd: Decimal = ZERO
    billed_usd: Decimal = ZERO
    events: int = 0
    unpriced_events: int = 0
    untagged_events: int = 0


NO_USAGE = DayFigures()

# What the overview sums per day, from the daily rollups; read back by _day_figures.
_DAY_SUMS = {
    "cost": ExactSum("cost_usd"),
    "billed": ExactSum("billed_usd"),
    "n": Sum("events"),
    "unpriced": Sum("unpriced_events"),
    "untagged": Sum("events", filter=Q(project="")),
}


def _day_figures(item: Mapping[str, Any]) -> DayFigures:
    return DayFigures(
        cost_usd=item["cost"] or ZERO,
        billed_usd=item["billed"] or ZERO,
        events=item["n"] or 0,
        unpriced_events=item["unpriced"] or 0,
        untagged_events=item["untagged"] or 0,
    )


def client_days(ids: list[int], start: date, end: date) -> dict[tuple[int, date], DayFigures]:
    """Per (client, day) sums of the daily rollups from ``start`` to ``end`` inclusive:
    one grouped query."""
    if end < start or not ids:
        return {}
    return {
        (item["client_id"], item["day"]): _day_figures(item)
        for item in DailyRollup.objects.filter(client_id__in=ids, day__gte=start, day__lte=end)
        .values("client_id", "day")
        .annotate(**_DAY_SUMS)
        .order_by()
    }


def _cached(key: str, compute: Callable[[], Any]) -> Any:
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, TREND_CACHE_SECONDS)
    return value


UnpricedKey = tuple[str, str, int]  # provider, model (as sent), client id


def unpriced_events(ids: list[int], start: date, end: date) -> dict[UnpricedKey, int]:
    """Events without a rate per (provider, model, client), from the rollups, which keep
    the model id as sent for unpriced events."""
    if end < start or not ids:
        return {}
    return {
        (item["provider"], item["model"], item["client_id"]): item["n"]
        for item in DailyRollup.objects.filter(
            client_id__in=ids, day__gte=start, day__lte=end, unpriced_events__gt=0
        )
        .values("provider", "model", "client_id")
        .annotate(n=Sum("unpriced_events"))
        .order_by()
    }


@dataclass
class PastDays:
    """One client's days before today, summed once so a cache hit costs little: the
    month so far (first of the month to yesterday) and the billed trend of the
    sparkline's days before today."""

    month: DayFigures
    spark: list[Decimal]


def _add(total: DayFigures, day: DayFigures) -> None:
    total.cost_usd += day.cost_usd
    total.billed_usd += day.billed_usd
    total.events += day.events
    total.unpriced_events += day.unpriced_events
    total.untagged_events += day.untagged_events


def _sum_past_days(
    ids: list[int], month: date, spark_days: list[date], yesterday: date
) -> tuple[dict[int, PastDays], dict[UnpricedKey, int]]:
    start = min(spark_days[0], month)
    days = client_days(ids, start, yesterday)
    month_days = [month + timedelta(days=i) for i in range((yesterday - month).days + 1)]
    past = {}
    for client_id in ids:
        in_month = DayFigures()
        for day in month_days:
            _add(in_month, days.get((client_id, day), NO_USAGE))
        spark = [
            days.get((client_id, day), NO_USAGE).billed_usd
            for day in spark_days
            if day <= yesterday
        ]
        past[client_id] = PastDays(month=in_month, spark=spark)
    return past, unpriced_events(ids, start, yesterday)


def _past_days(
    ids: list[int], month: date, spark_days: list[date], yesterday: date
) -> tuple[dict[int, PastDays], dict[UnpricedKey, int]]:
    """Per client sums of the days before today, and their unpriced events, cached briefly.

    Why: the overview sums a month and a 30-day trend for every client, which on the
    wide rollup (client × day × project × feature × model) is ~10⁶ rows at 200 clients and
    10M events/month: well over a second. Past days only change with late or re-priced
    events, so they are read from the cache (shared in Redis in production) and only
    today's rows are summed live. A late event shows up within ``TREND_CACHE_SECONDS``.
    The cache holds one small entry per client, already summed, rather than one per
    (client, day): unpickling ~10⁴ day entries took ~50 ms of every request.
    """
    digest = hashlib.sha256(",".join(map(str, sorted(ids))).encode()).hexdigest()[:16]
    # The window is in the key: a new day (or month) starts a new entry.
    key = f"dashboard:past-sums:{month}:{spark_days[0]}:{yesterday}:{digest}"
    past: tuple[dict[int, PastDays], dict[UnpricedKey, int]] = _cached(
        key, lambda: _sum_past_days(ids, month, spark_days, yesterday)
    )
    return past


def _today(ids: list[int], today: date) -> tuple[dict[int, DayFigures], dict[UnpricedKey, int]]:
    """Today's usage per client and its unpriced events per (provider, model, client),
    read live (never cached) in one grouped query over today's rollup rows.

    Rows with unpriced events are grouped by model too; the rest by client alone, so the
    answer stays ~one row per client instead of one per client and model.
    """
    figures: dict[int, DayFigures] = {}
    unpriced: dict[UnpricedKey, int] = {}
    if not ids:
        return figures, unpriced
    has_unpriced = Q(unpriced_events__gt=0)
    rows = (
        DailyRollup.objects.filter(client_id__in=ids, day=today)
        .values(
            "client_id",
            unpriced_provider=Case(When(has_unpriced, then=F("provider")), default=Value("")),
            unpriced_model=Case(When(has_unpriced, then=F("model")), default=Value("")),
        )
        .annotate(**_DAY_SUMS)
        .order_by()
    )
    for item in rows:
        day = _day_figures(item)
        _add(figures.setdefault(item["client_id"], DayFigures()), day)
        if day.unpriced_events:
            key = (item["unpriced_provider"], item["unpriced_model"], item["client_id"])
            unpriced[key] = day.unpriced_events
    return figures, unpriced


def unpriced_models(unpriced: dict[UnpricedKey, int]) -> list[UnpricedModel]:
    """Models waiting for a rate, most events first, with how many clients use them."""
    grouped: dict[tuple[str, str], list[int]] = {}
    # Keys are unique per client, so counting them counts distinct clients.
    for (provider, model, _client_id), events in unpriced.items():
        entry = grouped.setdefault((provider, model), [0, 0])
        entry[0] += events
        entry[1] += 1
    return sorted(
        (
            UnpricedModel(provider=provider, model=model, events=events, clients=clients)
            for (provider, model), (events, clients) in grouped.items()
        ),
        key=lambda m: (-m.events, m.model),
    )


def overview(clients: QuerySet[Client], *, now: datetime, sort: str = "name") -> Overview:
    """Month-to-date money and budget position per active client at ``now``, a 30-day
    billed trend each, and warnings.

    Past days come summed per client from the cache (``_past_days``), today from one live
    query (``_today``); each client's month becomes a budget position with
    ``billing.selectors.budgets``. One moment gives the month, today and the burn rate:
    reading the clock again here could project a month the caller is not showing.
    """
    today = local_day(now)
    month = month_start(today)
    active = list(clients.filter(active=True))
    ids = [c.pk for c in active]
    spark_days = [today - timedelta(days=SPARK_DAYS - 1 - i) for i in range(SPARK_DAYS)]
    past, past_unpriced = _past_days(ids, month, spark_days, today - timedelta(days=1))
    live, live_unpriced = _today(ids, today)
    unpriced = dict(past_unpriced)
    for key, events in live_unpriced.items():
        unpriced[key] = unpriced.get(key, 0) + events
    rows = []
    for client in active:
        in_month = DayFigures()
        before = past.get(client.pk) or PastDays(DayFigures(), [ZERO] * (SPARK_DAYS - 1))
        _add(in_month, before.month)
        today_figures = live.get(client.pk, NO_USAGE)
        _add(in_month, today_figures)
        totals = MonthTotals(
            client_id=client.pk,
            cost_usd=in_month.cost_usd,
            billed_usd=in_month.billed_usd,
            events=in_month.events,
            unpriced_events=in_month.unpriced_events,
        )
        position = budget_position(
            client=client,
            month=month,
            totals=totals,
            now=now,
            budget=budget_of(client, month, now),
        )
        rows.append(
            OverviewRow(
                client=client,
                raw_usd=totals.cost_usd,
                billed_usd=totals.billed_usd,
                events=totals.events,
                unpriced_events=totals.unpriced_events,
                untagged_events=in_month.untagged_events,
                budget=position,
                spark=[*before.spark, today_figures.billed_usd],
            )
        )

    sort = normalise_sort(sort)
    ordered = sorted(rows, key=lambda r: r.client.name.lower())
    ordered.sort(key=SORT_KEYS[sort.lstrip("-")], reverse=sort.startswith("-"))

    totals_row = UsageTotals(name="Total")
    for row in ordered:
        totals_row.events += row.events
        totals_row.unpriced_events += row.unpriced_events
        totals_row.raw_usd += row.raw_usd
        totals_row.billed_usd += row.billed_usd
    untagged = [r for r in ordered if r.untagged_events]
    return Overview(
        month=month,
        rows=ordered,
        totals=totals_row,
        spark_days=spark_days,
        unpriced_models=unpriced_models(unpriced),
        untagged_events=sum(r.untagged_events for r in untagged),
        untagged_clients=len(untagged),
        sort=sort,
    )
