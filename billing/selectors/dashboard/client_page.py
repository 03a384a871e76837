"""The client page: one client's month from the rollups, and its top lists from theirs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from django.core.cache import cache
from django.db.models import Count, FloatField, Max, Min, QuerySet, Sum
from django.db.models.functions import Cast
from django.utils import timezone

from agency.calendar import month_bounds, month_start, next_month
from agency.db import ExactSum
from agency.models import Client
from agency.money import apply_markup, split_cents
from billing.models import DailyRollup, EndUserDailyRollup, Invoice, PromptDailyRollup
from billing.selectors.dashboard.usage import (
    ROLLUP_FIELDS,
    TOKEN_COLUMNS,
    TREND_CACHE_SECONDS,
    ZERO,
    UsageTotals,
    group_totals,
)
from billing.selectors.lines import MonthBill

TOP_N = 20
# Top lists of a month whose rollups have not changed stay valid; kept this long.
TOP_LISTS_CACHE_SECONDS = 86_400


@dataclass
class PromptHashRow:
    prompt_hash: str
    calls: int
    raw_usd: Decimal
    billed_usd: Decimal
    first_at: datetime
    last_at: datetime

    @property
    def span(self) -> timedelta:
        return self.last_at - self.first_at

    @property
    def calls_per_minute(self) -> Decimal | None:
        minutes = Decimal(self.span.total_seconds()) / 60
        if self.calls < 2 or minutes <= 0:
            return None
        return Decimal(self.calls) / minutes


@dataclass
class WeekOverWeek:
    this_week_usd: Decimal
    last_week_usd: Decimal
    ends_on: date

    @property
    def change_pct(self) -> Decimal | None:
        if not self.last_week_usd:
            return None
        return (self.this_week_usd - self.last_week_usd) / self.last_week_usd * 100


@dataclass
class ClientMonth:
    client: Client
    month: date
    days: list[date]
    totals: UsageTotals
    by_model: list[UsageTotals]
    by_project: list[UsageTotals]
    by_feature: list[UsageTotals]
    daily_by_model: dict[str, list[Decimal]]
    avg_prompt_tokens: list[Decimal | None]
    week_over_week: WeekOverWeek
    months: list[date]
    # Changes whenever the month's rollups are rebuilt: rows are deleted and re-inserted
    # when a day's events change, so new ids mean the raw events may have changed.
    watermark: str


@dataclass
class TopLists:
    """The month's top end users and prompt hashes, from their daily rollups."""

    end_users: list[UsageTotals]
    prompts: list[PromptHashRow]
    watermark: str
    computed_at: datetime


def client_month(
    client: Client, *, month: date, today: date, bill: MonthBill | None = None
) -> ClientMonth:
    """Everything the client page shows for one month from the rollups: one query for the
    month (plus the two weeks before its end, for week-over-week) and one for the months
    with usage. The top lists come separately from ``top_lists``."""
    last_day = month_bounds(month)[1]
    days = [month + timedelta(days=i) for i in range((last_day - month).days + 1)]
    wow_end = min(today, last_day) if month <= today else last_day
    wow_start = wow_end - timedelta(days=13)
    rows = list(
        DailyRollup.objects.filter(
            client=client, day__gte=min(month, wow_start), day__lte=last_day
        ).values("id", *ROLLUP_FIELDS)
    )
    month_rows = [r for r in rows if r["day"] >= month]

    totals = UsageTotals(name="Total")
    for row in month_rows:
        totals.add(row)
    by_model = group_totals(month_rows, lambda r: r["model"])
    position = {day: i for i, day in enumerate(days)}
    daily_by_model = {g.name: [ZERO] * len(days) for g in by_model}
    per_day = [UsageTotals() for _ in days]
    for row in month_rows:
        i = position[row["day"]]
        daily_by_model[row["model"]][i] += row["billed_usd"]
        per_day[i].add(row)
    avg_prompt_tokens: list[Decimal | None] = [
        Decimal(t.prompt_tokens) / t.events if t.events else None for t in per_day
    ]

    this_week = sum(
        (r["billed_usd"] for r in rows if wow_end - timedelta(days=6) <= r["day"] <= wow_end),
        ZERO,
    )
    last_week = sum(
        (r["billed_usd"] for r in rows if wow_start <= r["day"] < wow_end - timedelta(days=6)),
        ZERO,
    )
    raw = bill.raw_usd if bill is not None else None
    billed = bill.billed_usd if bill is not None else None
    return ClientMonth(
        client=client,
        month=month,
        days=days,
        totals=totals,
        by_model=by_model,
        by_project=rounded_shares(
            group_totals(month_rows, lambda r: r["project"]), raw_usd=raw, billed_usd=billed
        ),
        by_feature=rounded_shares(
            group_totals(month_rows, lambda r: r["feature"]), raw_usd=raw, billed_usd=billed
        ),
        daily_by_model=daily_by_model,
        avg_prompt_tokens=avg_prompt_tokens,
        week_over_week=WeekOverWeek(
            this_week_usd=this_week, last_week_usd=last_week, ends_on=wow_end
        ),
        months=months_with_usage(client, today=today),
        watermark=_watermark(len(month_rows), max((r["id"] for r in month_rows), default=0)),
    )


def _watermark(rows: int, max_id: int | None) -> str:
    return f"{rows}:{max_id or 0}"


def month_watermark(client: Client, month: date) -> str:
    """``ClientMonth.watermark`` without loading the month: count and max id of its
    rollup rows (the unique index starts with client and day)."""
    first, last = month_bounds(month)
    figures = DailyRollup.objects.filter(client=client, day__gte=first, day__lte=last).aggregate(
        rows=Count("id"), max_id=Max("id")
    )
    return _watermark(figures["rows"], figures["max_id"])


def top_lists(client: Client, *, month: date, watermark: str, compute: bool) -> TopLists | None:
    """The month's top end users and prompts, from the cache when still good, summed from
    their daily rollups when ``compute``; None when neither (the page then loads them in
    a second request).

    Still good: computed at the same rollup ``watermark`` (nothing changed since), or less
    than ``TREND_CACHE_SECONDS`` ago. Since the lists come from rollups (a few thousand
    rows for a month of the largest client, not its ~10⁵–10⁶ raw events) computing them
    is cheap; the cache only spares the repeat.
    """
    key = f"dashboard:top:{client.pk}:{month:%Y-%m}"
    cached: TopLists | None = cache.get(key)
    now = timezone.now()
    if cached is not None and (
        cached.watermark == watermark
        or now - cached.computed_at < timedelta(seconds=TREND_CACHE_SECONDS)
    ):
        return cached
    if not compute:
        return None
    lists = TopLists(
        end_users=end_users(client, month=month),
        prompts=top_prompts(client, month=month),
        watermark=watermark,
        computed_at=now,
    )
    cache.set(key, lists, TOP_LISTS_CACHE_SECONDS)
    return lists


def _month_rollups(model: Any, client: Client, month: date) -> QuerySet[Any]:
    # Bounded by the unique (client, day, …) index: one client, one month of days.
    first, last = month_bounds(month)
    return model.objects.filter(client=client, day__gte=first, day__lte=last).order_by()


def _rank() -> Cast:
    # Ordering only: ExactSum comes back as text on SQLite, which would sort "9" after
    # "10". The figures shown come from the exact sum beside it.
    return Cast(ExactSum("cost_usd"), FloatField())


def end_users(client: Client, *, month: date, limit: int = TOP_N) -> list[UsageTotals]:
    """The month's top end users by raw cost, with calls and tokens by kind, summed from
    their daily rollups (``EndUserDailyRollup``), never from raw events."""
    result = []
    for item in (
        _month_rollups(EndUserDailyRollup, client, month)
        .values("end_user")
        .annotate(
            n=Sum("events"),
            unpriced=Sum("unpriced_events"),
            **{f"sum_{name}": Sum(name) for name in TOKEN_COLUMNS},
            raw=ExactSum("cost_usd"),
            rank=_rank(),
        )
        .order_by("-rank", "-n", "end_user")[:limit]
    ):
        sums: dict[str, Any] = dict(item)
        totals = UsageTotals(name=item["end_user"])
        raw = item["raw"] or ZERO
        totals.add(
            {
                "events": item["n"],
                "unpriced_events": item["unpriced"],
                **{name: sums[f"sum_{name}"] or 0 for name in TOKEN_COLUMNS},
                "cost_usd": raw,
                # The client's current markup: the list shows raw cost under it.
                "billed_usd": apply_markup(raw, client.markup_pct),
            }
        )
        result.append(totals)
    return result


def top_prompts(client: Client, *, month: date, limit: int = 10) -> list[PromptHashRow]:
    """Prompt hashes with the highest raw cost this month, with call counts and the time
    between their first and last call (many calls in minutes: a retry storm), summed
    from their daily rollups (``PromptDailyRollup``)."""
    return [
        PromptHashRow(
            prompt_hash=item["prompt_hash"],
            calls=item["n"],
            raw_usd=item["raw"] or ZERO,
            billed_usd=apply_markup(item["raw"] or ZERO, client.markup_pct),
            first_at=item["first"],
            last_at=item["last"],
        )
        for item in _month_rollups(PromptDailyRollup, client, month)
        .values("prompt_hash")
        .annotate(
            n=Sum("events"),
            raw=ExactSum("cost_usd"),
            first=Min("first_at"),
            last=Max("last_at"),
            rank=_rank(),
        )
        .order_by("-rank", "-n", "prompt_hash")[:limit]
    ]


def months_with_usage(client: Client, *, today: date) -> list[date]:
    """Months to offer in the picker: every month with usage or an invoice, never one after
    the current month (the page adds the month it shows, should it have none)."""
    current = month_start(today)
    months = set(
        DailyRollup.objects.filter(client=client, day__lt=next_month(current)).dates("day", "month")
    )
    months |= set(
        Invoice.objects.filter(client=client, month__lte=current).values_list("month", flat=True)
    )
    return sorted(months, reverse=True)


def months_with_data(clients: QuerySet[Client], *, today: date) -> list[date]:
    """The overview's picker: months in which any of these clients has usage.

    Read month by month, each step the first rollup day on or after the month's start
    (``ORDER BY day LIMIT 1``: a walk of the (day, client) index that jumps over months
    without usage), not as the distinct months of every rollup row: that scanned the
    whole table, ~0.4 s at 200 clients and 10M events, on every overview request."""
    end = next_month(month_start(today))
    days = (
        DailyRollup.objects.filter(client__in=clients, day__lt=end)
        .order_by("day")
        .values_list("day", flat=True)
    )
    months: list[date] = []
    first = days.first()
    while first is not None:
        months.append(month_start(first))
        after = next_month(month_start(first))
        first = days.filter(day__gte=after).first() if after < end else None
    return sorted(months, reverse=True)


def _apportion(parts: list[Decimal], total: Decimal | None) -> list[Decimal]:
    """``parts`` scaled to add up to ``total`` (the month's bill, rounded per invoice line),
    then rounded with ``split_cents``: shown above that total, they add up to it."""
    whole = sum(parts, ZERO)
    if total is not None and whole:
        with localcontext(prec=50):
            parts = [part * total / whole for part in parts]
    return split_cents(parts)


def rounded_shares(
    groups: list[UsageTotals], *, raw_usd: Decimal | None = None, billed_usd: Decimal | None = None
) -> list[UsageTotals]:
    """The groups (projects, features) with raw and billed rounded to the cent so that
    they add up to the month's bill (``raw_usd``/``billed_usd``, when given; else to their
    own rounded sum), and raw + margin = billed on every row."""
    raw = _apportion([g.raw_usd for g in groups], raw_usd)
    billed = _apportion([g.billed_usd for g in groups], billed_usd)
    for group, raw_part, billed_part in zip(groups, raw, billed, strict=True):
        group.raw_usd, group.billed_usd = raw_part, billed_part
    return groups
