"""The agency overview: every active client's month to date, budget and 30-day trend."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.core.cache import cache
from django.db.models import QuerySet

from agency.calendar import local_day, month_range, month_start, next_month
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
from billing.selectors.dashboard.usage import ZERO, UsageTotals
from billing.selectors.lines import (
    ESTIMATE,
    MonthBill,
    issued_bills,
    line_rows,
    line_sums_add,
    month_bills,
)
from billing.selectors.rollups import MonthTotals
from tracking.models import DataKind, MonthVersion

SPARK_DAYS = 30
STATUS_FILTERS = ("green", "yellow", "red", "none")
# The figures' cache key changes with every rollup rebuild and every day: the expiry only
# bounds what the cache holds (~175 KB an entry at 200 clients, one per rebuild).
FIGURES_CACHE_SECONDS = 3600


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


UnpricedKey = tuple[str, str, int]  # provider, model (as sent), client id


class ClientFigures(NamedTuple):
    """One client's month (to date) as its estimate shows it, from the rollups: the
    estimated bill's totals (sums of its rounded lines), the calls without a project,
    the calls not priced per (provider, model), and its billed per day of the
    sparkline. A plain tuple: the cache unpickles 200 of these per request."""

    raw_usd: Decimal
    billed_usd: Decimal
    events: int
    unpriced_events: int
    untagged_events: int
    unpriced: tuple[tuple[str, str, int], ...]
    spark: tuple[Decimal, ...]


def _client_figures(
    clients: list[Client], month: date, spark_days: list[date], end: date
) -> dict[int, ClientFigures]:
    """Every client's figures for the days [month, end) and the sparkline's days: one
    grouped query for the month's lines (``line_rows``), one for the days' billed."""
    sums = line_sums_add({}, line_rows(clients, start=month, end=end), month)
    bills = month_bills(clients, month, figures=sums, labels=False, issued=False)
    billed = spark_days_billed([c.pk for c in clients], spark_days[0], spark_days[-1])
    figures = {}
    for client in clients:
        untagged = 0
        unpriced: dict[tuple[str, str], int] = {}
        for (_month, provider, model, _project), line in sums.get(client.pk, {}).items():
            untagged += line.untagged_events
            if line.unpriced_events:
                unpriced[provider, model] = unpriced.get((provider, model), 0) + (
                    line.unpriced_events
                )
        bill = bills[client.pk]
        figures[client.pk] = ClientFigures(
            raw_usd=bill.raw_usd,
            billed_usd=bill.billed_usd,
            events=bill.events,
            unpriced_events=bill.unpriced_events,
            untagged_events=untagged,
            unpriced=tuple((p, m, n) for (p, m), n in sorted(unpriced.items())),
            spark=tuple(billed.get((client.pk, day), ZERO) for day in spark_days),
        )
    return figures


def _rollup_versions(first: date, last: date) -> str:
    """The rollups' ``MonthVersion`` tokens of the months from ``first`` to ``last``:
    replaced in every transaction that rewrites a day's rollups of the month."""
    months = []
    month = month_start(first)
    while month <= last:
        months.append(month)
        month = next_month(month)
    tokens = dict(
        MonthVersion.objects.filter(kind=DataKind.ROLLUPS, month__in=months).values_list(
            "month", "token"
        )
    )
    return ":".join(tokens.get(m, "-") for m in months)


def _figures_key(clients: list[Client], month: date, spark_days: list[date], end: date) -> str:
    ids = sorted(c.pk for c in clients)
    split = [c.pk for c in clients if c.invoice_split_by_project]
    digest = hashlib.sha256(f"{ids}{sorted(split)}".encode()).hexdigest()[:16]
    versions = _rollup_versions(spark_days[0], end - timedelta(days=1))
    return f"dashboard:overview:v1:{month}:{spark_days[0]}:{end}:{digest}:{versions}"


def month_figures(
    clients: list[Client], month: date, spark_days: list[date], end: date
) -> tuple[dict[int, ClientFigures], bool]:
    """``_client_figures``, computed once per version of the rollups it reads, and
    whether it was computed now (else it came from the cache).

    The key holds the rollups' version of every month in the window (read before the
    rollups: what is then computed is at least that new), the window and the clients
    (ids, and who is invoiced by project: that decides the lines). So a rollup rebuild
    (new usage, a late event, a re-price, a markup change) shows on the next request,
    and until then every request reuses the sums: the overview then runs no grouped
    query at all. ``overview_refresh_task`` computes them after each rollup job run, so
    staff rarely wait for the sums. Everything else on a row (names, budgets, issued
    invoices, the projection) is read live.
    """
    key = _figures_key(clients, month, spark_days, end)
    figures: dict[int, ClientFigures] | None = cache.get(key)
    if figures is not None:
        return figures, False
    figures = _client_figures(clients, month, spark_days, end)
    cache.set(key, figures, FIGURES_CACHE_SECONDS)
    return figures, True


def _window(now: datetime, month: date | None) -> tuple[date, date, list[date], bool]:
    """(month, end, the sparkline's days, whether the month is in progress) at ``now``:
    the overview sums the days [month, end), to today for the month in progress, else
    the whole month; the sparkline ends on the last of them."""
    this_month = month_start(local_day(now))
    month = month_start(month or this_month)
    current = month >= this_month
    end = local_day(now) + timedelta(days=1) if current else next_month(month)
    spark_end = end - timedelta(days=1)
    spark_days = [spark_end - timedelta(days=SPARK_DAYS - 1 - i) for i in range(SPARK_DAYS)]
    return month, end, spark_days, current


def overview_prepare(clients: QuerySet[Client], *, now: datetime) -> bool:
    """Sum this month's overview figures of these clients' active ones unless the cache
    holds them under the rollups' current version; whether they were summed."""
    month, end, spark_days, _ = _window(now, None)
    return month_figures(list(clients.filter(active=True)), month, spark_days, end)[1]


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
    invoice's lines, or the estimate by the invoice's per-line rule, summed from the
    rollups once per version of them (``month_figures``); each client's bill becomes a
    budget position with ``billing.selectors.budgets``.
    One moment gives the month, today and the burn rate: reading the clock again here
    could project a month the caller is not showing. ``name`` (part of a client's name)
    and ``status`` (green, yellow, red or none) filter the rows; the totals are those of
    the rows shown.
    """
    month, end, spark_days, current = _window(now, month)
    active = list(clients.filter(active=True))
    figures, _ = month_figures(active, month, spark_days, end)
    invoiced = issued_bills(active, month)
    budgets = budgets_of(active, month, now)
    hours = month_hours(month, now)
    unpriced: dict[UnpricedKey, int] = {}
    rows = []
    for client in active:
        sums = figures[client.pk]
        for provider, model, calls in sums.unpriced:
            unpriced[provider, model, client.pk] = calls
        bill = invoiced.get(client.pk)
        if bill is None:
            totals = MonthTotals(
                client.pk, sums.raw_usd, sums.billed_usd, sums.events, sums.unpriced_events
            )
        else:
            totals = bill_totals(bill)
        position = budget_position(
            client=client,
            month=month,
            totals=totals,
            now=now,
            budget=budgets[client.pk],
            billed_basis=bill.basis if bill else ESTIMATE,
            hours=hours,
        )
        rows.append(
            OverviewRow(
                client=client,
                raw_usd=totals.cost_usd,
                billed_usd=totals.billed_usd,
                events=totals.events,
                unpriced_events=totals.unpriced_events,
                untagged_events=sums.untagged_events,
                budget=position,
                spark=list(sums.spark),
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
