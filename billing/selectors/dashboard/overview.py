"""The agency overview: every active client's month to date, budget and 30-day trend."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db.models import QuerySet

from agency.calendar import local_day, month_bounds, month_range, month_start
from agency.db import ExactSum
from agency.models import Client
from agency.money import round_money
from billing.models import ModelDailyRollup
from billing.selectors.budgets import (
    BudgetPosition,
    bill_totals,
    budget_position,
    month_hours,
)
from billing.selectors.dashboard.usage import TREND_CACHE_SECONDS, ZERO, UsageTotals
from billing.selectors.lines import LineRow, MonthBill, line_rows, line_sums_add, month_bills

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


def spark_days_billed(ids: list[int], start: date, end: date) -> dict[tuple[int, date], Decimal]:
    """Billed per (client, day) from ``start`` to ``end`` inclusive: one grouped query
    over the per-model rollups (every client's events, ~8 rows per client and day)."""
    if end < start or not ids:
        return {}
    rows = (
        ModelDailyRollup.objects.filter(client_id__in=ids, day__gte=start, day__lte=end)
        .values("client_id", "day")
        .annotate(billed=ExactSum("billed_usd"))
        .order_by()
        .values_list("client_id", "day", "billed")
    )
    return {(client_id, day): billed or ZERO for client_id, day, billed in rows}


def _cached(key: str, compute: Callable[[], Any]) -> Any:
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, TREND_CACHE_SECONDS)
    return value


UnpricedKey = tuple[str, str, int]  # provider, model (as sent), client id


@dataclass
class PastDays:
    """Every client's days before today, as the cache holds them: the month's rollups
    summed per invoice line (``line_rows``: plain tuples) and each client's billed per
    day of the sparkline before today. Plain tuples and one list per client, because a
    cache hit unpickles all of it on every request: the previous shape (a dataclass per
    line with a dict of tokens and one of costs) took ~150 ms of each request to
    unpickle at 200 clients."""

    lines: list[LineRow]
    spark: dict[int, list[Decimal]]


def _sum_past_days(
    clients: list[Client], month: date, spark_days: list[date], yesterday: date
) -> PastDays:
    ids = [c.pk for c in clients]
    billed = spark_days_billed(ids, spark_days[0], yesterday)
    before = [day for day in spark_days if day <= yesterday]
    spark = {pk: [billed.get((pk, day), ZERO) for day in before] for pk in ids}
    lines = line_rows(clients, start=month, end=yesterday + timedelta(days=1))
    return PastDays(lines=lines, spark=spark)


def _past_days(
    clients: list[Client], month: date, spark_days: list[date], yesterday: date
) -> PastDays:
    """Per client sums of the days before today, cached briefly.

    Why: the overview sums a month and a 30-day trend for every client, which on the
    wide rollup (client × day × project × feature × model) is ~10⁶ rows at 200 clients and
    10M events/month: well over a second. Past days only change with late or re-priced
    events, so they are read from the cache (shared in Redis in production) and only
    today's rows are summed live. A late event shows up within ``TREND_CACHE_SECONDS``.
    """
    ids = sorted(c.pk for c in clients)
    # Whether a client is invoiced by project decides its line keys: part of the key.
    split = [c.pk for c in clients if c.invoice_split_by_project]
    digest = hashlib.sha256(f"{ids}{sorted(split)}".encode()).hexdigest()[:16]
    # The window is in the key: a new day (or month) starts a new entry.
    key = f"dashboard:past-sums:v3:{month}:{spark_days[0]}:{yesterday}:{digest}"
    past: PastDays = _cached(key, lambda: _sum_past_days(clients, month, spark_days, yesterday))
    return past


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
    query summed per line in SQL (``line_rows``); each client's bill becomes a budget
    position with ``billing.selectors.budgets``.
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
    spark_end = end if current else end - timedelta(days=1)
    spark_days = [spark_end - timedelta(days=SPARK_DAYS - 1 - i) for i in range(SPARK_DAYS)]
    past = _past_days(active, month, spark_days, end - timedelta(days=1))
    figures = line_sums_add({}, past.lines, month)
    today_billed: dict[int, Decimal] = {}
    if current:
        # Today, live (never cached): one grouped query, a row per client and line.
        live = line_rows(active, start=today, end=today + timedelta(days=1))
        line_sums_add(figures, live, month)
        for line in live:
            today_billed[line[0]] = today_billed.get(line[0], ZERO) + line[8]
    bills = month_bills(active, month, figures=figures, labels=False)
    budgets = budgets_of(active, month, now)
    hours = month_hours(month, now)
    unpriced: dict[UnpricedKey, int] = {}
    rows = []
    for client in active:
        keys = figures.get(client.pk, {})
        untagged_calls = 0
        for (_month, provider, model, _project), sums in keys.items():
            untagged_calls += sums.untagged_events
            if sums.unpriced_events:
                key = (provider, model, client.pk)
                unpriced[key] = unpriced.get(key, 0) + sums.unpriced_events
        bill = bills[client.pk]
        position = budget_position(
            client=client,
            month=month,
            totals=bill_totals(bill),
            now=now,
            budget=budgets[client.pk],
            billed_basis=bill.basis,
            hours=hours,
        )
        spark = past.spark.get(client.pk, [])
        if current:
            spark = [*spark, today_billed.get(client.pk, ZERO)]
        rows.append(
            OverviewRow(
                client=client,
                raw_usd=bill.raw_usd,
                billed_usd=bill.billed_usd,
                events=bill.events,
                unpriced_events=bill.unpriced_events,
                untagged_events=untagged_calls,
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
