"""The agency overview: every active client's month to date, budget and 30-day trend."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db.models import Q, QuerySet, Sum

from agency.calendar import local_day, month_bounds, month_range, month_start
from agency.db import ExactSum
from agency.models import Client
from agency.money import round_money
from billing.models import DailyRollup
from billing.selectors.budgets import BudgetPosition, bill_totals, budget_position
from billing.selectors.dashboard.usage import TREND_CACHE_SECONDS, ZERO, UsageTotals
from billing.selectors.lines import Figures, Key, MonthBill, figures_add, month_bills, month_figures

SPARK_DAYS = 30
STATUS_FILTERS = ("green", "yellow", "red", "none")


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
    bill: MonthBill | None = None

    @property
    def margin_usd(self) -> Decimal:
        # Both sides are the bill's rounded rows: raw + margin = billed as displayed.
        return self.billed_usd - self.raw_usd

    @property
    def basis(self) -> str:
        return self.bill.basis if self.bill else "estimate"


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
    current: bool = True  # the month in progress (else a past month, complete)


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
    "projected": lambda r: (
        r.budget.projected_billed_usd if r.budget and r.budget.projectable else ZERO
    ),
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
    # The month's days before today per invoice-line key, for the per-line estimate.
    keys: dict[Key, Figures] = field(default_factory=dict)


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
    if yesterday >= month:
        clients = list(Client.objects.filter(pk__in=ids))
        keyed = month_figures(clients, month, start=month, end=yesterday + timedelta(days=1))
        for client_id, keys in keyed.items():
            past[client_id].keys = keys
    return past, unpriced_events(ids, month, yesterday)


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
    key = f"dashboard:past-sums:v2:{month}:{spark_days[0]}:{yesterday}:{digest}"
    past: tuple[dict[int, PastDays], dict[UnpricedKey, int]] = _cached(
        key, lambda: _sum_past_days(ids, month, spark_days, yesterday)
    )
    return past


TodayFigures = tuple[dict[int, DayFigures], dict[UnpricedKey, int], dict[int, dict[Key, Figures]]]


def _today(ids: list[int], today: date, month: date) -> TodayFigures:
    """Today's usage per client, its unpriced events per (provider, model, client) and
    its sums per invoice-line key (for the per-line estimate), read live (never cached)
    in one grouped query over today's rollup rows (a few rows per client: its models
    and projects of the day)."""
    figures: dict[int, DayFigures] = {}
    unpriced: dict[UnpricedKey, int] = {}
    keyed: dict[int, dict[Key, Figures]] = {}
    if not ids:
        return figures, unpriced, keyed
    rows = (
        DailyRollup.objects.filter(client_id__in=ids, day=today)
        .values("client_id", "provider", "model", "project", "markup_pct")
        .annotate(**_DAY_SUMS)
        .order_by()
    )
    for item in rows:
        day = _day_figures(item)
        client_id = item["client_id"]
        _add(figures.setdefault(client_id, DayFigures()), day)
        if day.unpriced_events:
            key = (item["provider"], item["model"], client_id)
            unpriced[key] = unpriced.get(key, 0) + day.unpriced_events
        line_key = (month, item["provider"], item["model"], item["project"])
        fig = keyed.setdefault(client_id, {}).setdefault(line_key, Figures())
        fig.events += day.events
        fig.unpriced_events += day.unpriced_events
        fig.raw_cost_usd += day.cost_usd
        fig.billed_usd += day.billed_usd
        fig.markups.add(item["markup_pct"])
    return figures, unpriced, keyed


def budgets_of(clients: list[Client], month: date, now: datetime) -> dict[int, Decimal | None]:
    """Each client's budget for ``month`` by ``budget_of``'s rule, in at most one query
    whatever the number of clients: the current budget for this month and later; for a
    past month, the latest history record before its end (else the current budget)."""
    current = {c.pk: c.monthly_budget_usd for c in clients}
    _, end = month_range(month)
    if now < end or not clients:
        return current
    budgets = dict(current)
    seen: set[int] = set()
    records = (
        Client.history.filter(id__in=list(current), history_date__lt=end)
        .order_by("id", "-history_date", "-history_id")
        .values_list("id", "monthly_budget_usd")
    )
    for client_id, budget in records:
        if client_id not in seen:
            seen.add(client_id)
            budgets[client_id] = budget
    return budgets


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


def overview(
    clients: QuerySet[Client],
    *,
    now: datetime,
    sort: str = "name",
    month: date | None = None,
    name: str = "",
    status: str = "",
) -> Overview:
    """Money and budget position per active client for ``month`` (this month to date by
    default) at ``now``, a 30-day billed trend each, and warnings.

    Each client's figures are its month's bill (``billing.selectors.lines``): the issued
    invoice's lines, or the estimate by the invoice's per-line rule. Past days come
    summed per client and line key from the cache (``_past_days``), today from one live
    query; each client's bill becomes a budget position with ``billing.selectors.budgets``.
    One moment gives the month, today and the burn rate: reading the clock again here
    could project a month the caller is not showing. ``name`` (part of a client's name)
    and ``status`` (green, yellow, red or none) filter the rows; the totals are those of
    the rows shown.
    """
    today = local_day(now)
    this_month = month_start(today)
    month = month_start(month or this_month)
    current = month >= this_month
    # A past month is read whole from the cache; "today" is then past its end.
    end = today if current else month_bounds(month)[1] + timedelta(days=1)
    active = list(clients.filter(active=True))
    ids = [c.pk for c in active]
    spark_end = end if current else end - timedelta(days=1)
    spark_days = [spark_end - timedelta(days=SPARK_DAYS - 1 - i) for i in range(SPARK_DAYS)]
    past, past_unpriced = _past_days(ids, month, spark_days, end - timedelta(days=1))
    live: dict[int, DayFigures] = {}
    live_unpriced: dict[UnpricedKey, int] = {}
    live_keys: dict[int, dict[Key, Figures]] = {}
    if current:
        live, live_unpriced, live_keys = _today(ids, today, month)
    unpriced = dict(past_unpriced)
    for key, events in live_unpriced.items():
        unpriced[key] = unpriced.get(key, 0) + events
    figures: dict[int, dict[Key, Figures]] = {}
    for client in active:
        before_keys = past[client.pk].keys if client.pk in past else {}
        keys: dict[Key, Figures] = {}
        for source in (before_keys, live_keys.get(client.pk, {})):
            for line_key, fig in source.items():
                figures_add(keys.setdefault(line_key, Figures()), fig)
        figures[client.pk] = keys
    bills = month_bills(active, month, figures=figures, labels=False)
    budgets = budgets_of(active, month, now)
    rows = []
    for client in active:
        in_month = DayFigures()
        before = past.get(client.pk) or PastDays(DayFigures(), [ZERO] * (SPARK_DAYS - 1))
        _add(in_month, before.month)
        today_figures = live.get(client.pk, NO_USAGE)
        _add(in_month, today_figures)
        bill = bills[client.pk]
        position = budget_position(
            client=client,
            month=month,
            totals=bill_totals(bill),
            now=now,
            budget=budgets[client.pk],
            billed_basis=bill.basis,
        )
        spark = [*before.spark, today_figures.billed_usd] if current else before.spark
        rows.append(
            OverviewRow(
                client=client,
                raw_usd=bill.raw_usd,
                billed_usd=bill.billed_usd,
                events=bill.events,
                unpriced_events=bill.unpriced_events,
                untagged_events=in_month.untagged_events,
                budget=position,
                spark=spark,
                bill=bill,
            )
        )

    if name.strip():
        rows = [r for r in rows if name.strip().lower() in r.client.name.lower()]
    if status in STATUS_FILTERS:
        rows = [r for r in rows if ((r.budget.status if r.budget else None) or "none") == status]
    sort = normalise_sort(sort)
    ordered = sorted(rows, key=lambda r: r.client.name.lower())
    ordered.sort(key=SORT_KEYS[sort.lstrip("-")], reverse=sort.startswith("-"))

    # Sums of the displayed (rounded) rows: the total row adds up to the rows above it.
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
        current=current,
    )


OVERVIEW_CSV_HEADER = [
    "client", "slug", "basis", "invoice", "calls", "not_priced_calls", "raw_usd",
    "billed_usd", "margin_usd", "budget_usd", "percent_used", "status",
    "projected_billed_usd", "projected_status",
]  # fmt: skip


def _money_text(amount: Decimal | None) -> str:
    return "" if amount is None else f"{round_money(amount)}"


def overview_table(data: Overview) -> list[list[str]]:
    """The overview's table as rows of text (the CSV export): header, one row per client
    in the page's order, then the total row, which is the sum of the rows above it.
    Calls without a rate are counted in ``not_priced_calls``, never priced at $0."""
    rows = [list(OVERVIEW_CSV_HEADER)]
    for row in data.rows:
        budget = row.budget
        projectable = budget is not None and budget.projectable
        rows.append(
            [
                row.client.name,
                row.client.slug,
                row.basis,
                (row.bill.invoice.number or "") if row.bill and row.bill.invoice else "",
                str(row.events),
                str(row.unpriced_events),
                _money_text(row.raw_usd),
                _money_text(row.billed_usd),
                _money_text(row.margin_usd),
                _money_text(budget.budget_usd if budget else None),
                ""
                if budget is None or budget.percent_used is None
                else f"{budget.percent_used:.1f}",
                (budget.status or "") if budget else "",
                _money_text(budget.projected_billed_usd) if budget and projectable else "",
                (budget.projected_status or "") if budget and projectable else "",
            ]
        )
    totals = data.totals
    rows.append(
        [
            "Total", "", "", "", str(totals.events), str(totals.unpriced_events),
            _money_text(totals.raw_usd), _money_text(totals.billed_usd),
            _money_text(totals.margin_usd), "", "", "", "", "",
        ]
    )  # fmt: skip
    return rows
