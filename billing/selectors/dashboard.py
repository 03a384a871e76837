"""Reads behind the agency overview and the client page.

Everything here reads the daily rollups, except two small top-N lists (end users and
prompt hashes) that the rollups do not carry: those read the raw events of one client and
one month through the ``(client, occurred_at)`` index, and are cached (see
``top_lists``). Callers pass clients that already went through
``agency.selectors.clients_for`` / ``client_for``; nothing here widens scope, and every
cache key carries the client ids it was computed for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db.models import Case, Count, F, FloatField, Max, Min, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Cast
from django.utils import timezone

from agency.db import ExactSum
from agency.models import Client
from agency.money import apply_markup
from billing.models import DailyRollup
from billing.selectors.budgets import BudgetPosition, budget_of, budget_position
from billing.selectors.rollups import MonthTotals, month_bounds, month_range
from tracking.models import PricingStatus, UsageEvent

ZERO = Decimal("0")
SPARK_DAYS = 30
TOP_N = 20
# How long sums of past days (overview) and top-N lists (client page) are reused.
TREND_CACHE_SECONDS = 300
# Top lists of a month whose rollups have not changed stay valid; kept this long.
TOP_LISTS_CACHE_SECONDS = 86_400


# --- months -------------------------------------------------------------------------


def parse_month(value: str | None, *, today: date) -> date:
    """First day of ``YYYY-MM``; the current month when missing or malformed."""
    if value:
        try:
            parsed = datetime.strptime(value, "%Y-%m")  # noqa: DTZ007 - a calendar month
        except ValueError:
            pass
        else:
            return parsed.date().replace(day=1)
    return today.replace(day=1)


def shift_month(month: date, delta: int) -> date:
    index = month.year * 12 + month.month - 1 + delta
    return date(index // 12, index % 12 + 1, 1)


# --- shared row shape ---------------------------------------------------------------


@dataclass
class UsageTotals:
    """Calls, tokens by kind and money of one group of rollup rows."""

    name: str = ""
    events: int = 0
    unpriced_events: int = 0
    input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0
    raw_usd: Decimal = ZERO
    billed_usd: Decimal = ZERO

    def add(self, row: dict[str, Any]) -> None:
        self.events += row["events"]
        self.unpriced_events += row["unpriced_events"]
        self.input_tokens += row["input_tokens"]
        self.cache_write_tokens += row["cache_write_5m_tokens"] + row["cache_write_1h_tokens"]
        self.cache_read_tokens += row["cache_read_tokens"]
        self.output_tokens += row["output_tokens"]
        self.raw_usd += row["cost_usd"]
        self.billed_usd += row["billed_usd"]

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached or not: what the prompt weighs."""
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens

    @property
    def cache_hit_ratio(self) -> Decimal | None:
        """cache_read / (input + cache_read + cache writes); None without input."""
        if not self.prompt_tokens:
            return None
        return Decimal(self.cache_read_tokens) / Decimal(self.prompt_tokens)

    @property
    def margin_usd(self) -> Decimal:
        return self.billed_usd - self.raw_usd


_ROLLUP_FIELDS = (
    "day",
    "project",
    "feature",
    "provider",
    "model",
    "events",
    "unpriced_events",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "cost_usd",
    "billed_usd",
)


def _group(
    rows: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], str]
) -> list[UsageTotals]:
    groups: dict[str, UsageTotals] = {}
    for row in rows:
        name = key(row)
        groups.setdefault(name, UsageTotals(name=name)).add(row)
    return sorted(groups.values(), key=lambda g: (-g.billed_usd, -g.events, g.name))


# --- agency overview ----------------------------------------------------------------


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
    sort: str
    headers: dict[str, SortHeader]


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


@dataclass(frozen=True)
class SortHeader:
    key: str
    label: str
    numeric: bool
    next_sort: str  # what a click asks for
    aria_sort: str  # "ascending", "descending" or "none"


COLUMNS = (
    ("name", "Client", False),
    ("raw", "Raw cost", True),
    ("billed", "Billed", True),
    ("margin", "Margin", True),
    ("budget", "Budget used", False),
    ("projected", "Projected month end", True),
)


def sort_headers(sort: str) -> dict[str, SortHeader]:
    """Header links for the overview table: a click on the sorted column reverses it; a
    first click sorts names A–Z and amounts largest first."""
    headers = {}
    for key, label, numeric in COLUMNS:
        if sort == key:
            next_sort, aria = f"-{key}", "ascending"
        elif sort == f"-{key}":
            next_sort, aria = key, "descending"
        else:
            next_sort, aria = (f"-{key}" if key != "name" else key), "none"
        headers[key] = SortHeader(key, label, numeric, next_sort, aria)
    return headers


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
    input_tokens: int = 0
    output_tokens: int = 0


NO_USAGE = DayFigures()

# What the overview sums per day, from the daily rollups; read back by _day_figures.
_DAY_SUMS = {
    "cost": ExactSum("cost_usd"),
    "billed": ExactSum("billed_usd"),
    "n": Sum("events"),
    "unpriced": Sum("unpriced_events"),
    "untagged": Sum("events", filter=Q(project="")),
    "input": Sum("input_tokens"),
    "output": Sum("output_tokens"),
}


def _day_figures(item: Mapping[str, Any]) -> DayFigures:
    return DayFigures(
        cost_usd=item["cost"] or ZERO,
        billed_usd=item["billed"] or ZERO,
        events=item["n"] or 0,
        unpriced_events=item["unpriced"] or 0,
        untagged_events=item["untagged"] or 0,
        input_tokens=item["input"] or 0,
        output_tokens=item["output"] or 0,
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
    total.input_tokens += day.input_tokens
    total.output_tokens += day.output_tokens


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
    today = timezone.localdate(now, timezone.get_default_timezone())
    month = today.replace(day=1)
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
            input_tokens=in_month.input_tokens,
            output_tokens=in_month.output_tokens,
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
        headers=sort_headers(sort),
    )


# --- client page --------------------------------------------------------------------


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
    """The month's top end users and prompt hashes, read from raw events."""

    end_users: list[UsageTotals]
    prompts: list[PromptHashRow]
    watermark: str
    computed_at: datetime


def client_month(client: Client, *, month: date, today: date) -> ClientMonth:
    """Everything the client page shows for one month from the rollups: one query for the
    month (plus the two weeks before its end, for week-over-week) and one for the months
    with usage. The raw-event top lists come separately from ``top_lists``."""
    last_day = month_bounds(month)[1]
    days = [month + timedelta(days=i) for i in range((last_day - month).days + 1)]
    wow_end = min(today, last_day) if month <= today else last_day
    wow_start = wow_end - timedelta(days=13)
    rows = list(
        DailyRollup.objects.filter(
            client=client, day__gte=min(month, wow_start), day__lte=last_day
        ).values("id", *_ROLLUP_FIELDS)
    )
    month_rows = [r for r in rows if r["day"] >= month]

    totals = UsageTotals(name="Total")
    for row in month_rows:
        totals.add(row)
    by_model = _group(month_rows, lambda r: r["model"])
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
    return ClientMonth(
        client=client,
        month=month,
        days=days,
        totals=totals,
        by_model=by_model,
        by_project=_group(month_rows, lambda r: r["project"]),
        by_feature=_group(month_rows, lambda r: r["feature"]),
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
    """The month's top end users and prompts, from the cache when still good, computed
    from raw events when ``compute``; None when neither (the page then loads them in a
    second request, so the rollup-backed page never waits on a raw scan).

    Still good: computed at the same rollup ``watermark`` (nothing changed since), or less
    than ``TREND_CACHE_SECONDS`` ago. A busy client's current month changes every minute;
    re-scanning ~10⁵–10⁶ raw events each time would make its page slow for everyone.
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


def _month_events(client: Client, month: date) -> QuerySet[UsageEvent]:
    # Bounded by the (client, occurred_at) index: one client, one month of rows.
    start, end = month_range(month)
    return UsageEvent.objects.filter(client=client, occurred_at__gte=start, occurred_at__lt=end)


def _rank() -> Cast:
    # Ordering only: ExactSum comes back as text on SQLite, which would sort "9" after
    # "10". The figures shown come from the exact sum beside it.
    return Cast(ExactSum("cost_usd"), FloatField())


def end_users(client: Client, *, month: date, limit: int = TOP_N) -> list[UsageTotals]:
    """The month's top end users by raw cost, with calls and tokens by kind."""
    result = []
    for item in (
        _month_events(client, month)
        .values("end_user")
        .annotate(
            n=Count("id"),
            unpriced=Count("id", filter=Q(pricing_status=PricingStatus.UNPRICED)),
            input=Sum("input_tokens"),
            cw5=Sum("cache_write_5m_tokens"),
            cw1=Sum("cache_write_1h_tokens"),
            read=Sum("cache_read_tokens"),
            output=Sum("output_tokens"),
            raw=ExactSum("cost_usd"),
            rank=_rank(),
        )
        .order_by("-rank", "-n", "end_user")[:limit]
    ):
        totals = UsageTotals(name=item["end_user"])
        raw = item["raw"] or ZERO
        totals.add(
            {
                "events": item["n"],
                "unpriced_events": item["unpriced"],
                "input_tokens": item["input"] or 0,
                "cache_write_5m_tokens": item["cw5"] or 0,
                "cache_write_1h_tokens": item["cw1"] or 0,
                "cache_read_tokens": item["read"] or 0,
                "output_tokens": item["output"] or 0,
                "cost_usd": raw,
                # The client's current markup: raw events carry no billed amount.
                "billed_usd": apply_markup(raw, client.markup_pct),
            }
        )
        result.append(totals)
    return result


def top_prompts(client: Client, *, month: date, limit: int = 10) -> list[PromptHashRow]:
    """Prompt hashes with the highest raw cost this month, with call counts and the time
    between their first and last call (many calls in minutes: a retry storm)."""
    return [
        PromptHashRow(
            prompt_hash=item["prompt_hash"],
            calls=item["n"],
            raw_usd=item["raw"] or ZERO,
            billed_usd=apply_markup(item["raw"] or ZERO, client.markup_pct),
            first_at=item["first"],
            last_at=item["last"],
        )
        for item in _month_events(client, month)
        .exclude(prompt_hash="")
        .values("prompt_hash")
        .annotate(
            n=Count("id"),
            raw=ExactSum("cost_usd"),
            first=Min("occurred_at"),
            last=Max("occurred_at"),
            rank=_rank(),
        )
        .order_by("-rank", "-n", "prompt_hash")[:limit]
    ]


def months_with_usage(client: Client, *, today: date) -> list[date]:
    """Months to offer in the picker: every month with rollups, and the current one."""
    months = set(DailyRollup.objects.filter(client=client).dates("day", "month"))
    months.add(today.replace(day=1))
    return sorted(months, reverse=True)
