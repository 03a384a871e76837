"""Daily and hourly rollups, rebuilt whole per (client, agency-local day) from raw events.

With them, the same rebuild writes the top-list rollups (per end user and per prompt
hash), so the client page's top lists never scan raw events, and the per-model rollups
the reconciliation reads (``ModelDailyRollup``: the day's DailyRollup rows summed per
client, provider and model, in the same transaction).

A (client, day) is never incremented: its rows are deleted and re-aggregated from the raw
events of that day in one transaction. The incremental path (days marked dirty by ingest
and re-pricing) and a full rebuild therefore run the same aggregation and agree to the
last decimal, including late and re-priced events, and a rebuild is idempotent.

The billed amount of a row is its raw cost under the client's markup as of the end of
that local day (from ``Client.history``); today uses the current markup. Markup is
linear, so ``Σ billed`` of a day's rows equals the day's raw cost × (1 + markup/100).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, Trunc, TruncDate
from django.utils import timezone

from agency.calendar import (
    day_bounds,
    local_day,
    local_days,
    month_bounds,
    month_start,
    today,
    zone,
)
from agency.db import ExactSum
from agency.models import Client
from agency.money import COST_PLACES, apply_markup
from billing.models import (
    DailyRollup,
    EndUserDailyRollup,
    HourlyRollup,
    ModelDailyRollup,
    PromptDailyRollup,
    TrackedClientMonth,
    TrackedModelDay,
)
from tracking.buckets import GROUPED, Reach, cost_columns, token_columns
from tracking.models import DataKind, DirtyDay, PricingStatus, UsageEvent
from tracking.partitions import months_archived
from tracking.services import dirty_days_mark, month_versions_touch

logger = logging.getLogger(__name__)

# What a rollup row sums: the buckets that reach the rollups, and the raw cost.
TOKEN_FIELDS = token_columns(Reach.ROLLUP)
COST_FIELDS = (*cost_columns(Reach.ROLLUP), "cost_usd")
# What the top-list rollups (end users, prompt hashes) sum: the usage tables' tokens.
TOP_TOKEN_FIELDS = tuple(str(bucket.token_column) for bucket in GROUPED)
# What the reconciliation's rollup sums: the billed buckets (tracking.buckets).
MODEL_TOKEN_FIELDS = token_columns(Reach.INVOICE)
# Every model rebuilt with a (client, day), in one transaction.
DAY_MODELS = (DailyRollup, HourlyRollup, EndUserDailyRollup, PromptDailyRollup, ModelDailyRollup)
ZERO = Decimal("0")
# A dirty mark younger than this is rebuilt but kept for the next run. Ingest stamps
# marked_at with its own clock before its transaction commits, so a mark can be
# overwritten with an *older* marked_at after we read it; keeping young marks one more
# cycle makes that race harmless (a rebuild is idempotent and cheap).
DIRTY_SETTLE = timedelta(minutes=2)
# How far back markup_changes_mark looks for client edits.
MARKUP_SWEEP_WINDOW = timedelta(days=2)


def billed_usd(raw_usd: Decimal, markup_pct: Decimal) -> Decimal:
    """Raw cost under a markup, at the storage scale of rollups (15 places).

    Quantizing here, half-up, is a storage guard, not money rounding: PostgreSQL rounds a
    NUMERIC(30, 15) the same way on insert, and SQLite (text) would otherwise keep more
    places, so both databases hold the same value.
    """
    with localcontext(prec=60):
        return apply_markup(raw_usd, markup_pct).quantize(COST_PLACES, rounding=ROUND_HALF_UP)


class MarkupBook:
    """Each client's markup as of the end of any local day, from ``Client.history``.

    A markup change applies from the day it is made: day D uses the markup in force at
    the end of D. Days before the first history record use that record (a client created
    today with back-filled usage); today and later use the current markup.
    """

    def __init__(self, client_ids: Iterable[int]) -> None:
        ids = list(client_ids)
        self._current = dict(Client.objects.filter(pk__in=ids).values_list("pk", "markup_pct"))
        history: dict[int, list[tuple[datetime, Decimal]]] = defaultdict(list)
        rows = (
            Client.history.filter(id__in=ids)
            .order_by("history_date", "history_id")
            .values_list("id", "history_date", "markup_pct")
        )
        for client_id, when, markup in rows:
            history[client_id].append((when, markup))
        self._moments = {k: [when for when, _ in v] for k, v in history.items()}
        self._markups = {k: [m for _, m in v] for k, v in history.items()}
        self._today = today()

    def markup(self, client_id: int, day: date) -> Decimal:
        current = self._current.get(client_id, ZERO)
        moments = self._moments.get(client_id)
        if day >= self._today or not moments:
            return current
        end = day_bounds(day)[1]
        index = bisect_left(moments, end)  # records strictly before the end of the day
        return self._markups[client_id][max(index - 1, 0)]


def _events_of_day(client_id: int, day: date) -> QuerySet[UsageEvent]:
    start, end = day_bounds(day)
    # (client, occurred_at) range: served by the usageevent_client_time index.
    return UsageEvent.objects.filter(
        client_id=client_id, occurred_at__gte=start, occurred_at__lt=end
    ).order_by()


def _unpriced() -> Count:
    return Count("pk", filter=Q(pricing_status=PricingStatus.UNPRICED))


def _daily_rows(client_id: int, day: date, markup: Decimal) -> list[DailyRollup]:
    sums: dict[str, Any] = {name: Sum(name) for name in TOKEN_FIELDS}
    sums.update({name: ExactSum(name) for name in COST_FIELDS})
    groups = (
        _events_of_day(client_id, day)
        .values(
            "feature",
            "provider",
            project_name=Coalesce("project__name", Value("")),
            model_name=Coalesce("rate__model", "model"),
        )
        .annotate(n_events=Count("pk"), n_unpriced=_unpriced(), **sums)
    )
    rows = []
    for values in groups:
        group: dict[str, Any] = dict(values)
        costs = {name: group[name] if group[name] is not None else ZERO for name in COST_FIELDS}
        rows.append(
            DailyRollup(
                client_id=client_id,
                day=day,
                project=group["project_name"],
                feature=group["feature"],
                provider=group["provider"],
                model=group["model_name"],
                events=group["n_events"],
                unpriced_events=group["n_unpriced"],
                markup_pct=markup,
                billed_usd=billed_usd(costs["cost_usd"], markup),
                **{name: group[name] or 0 for name in TOKEN_FIELDS},
                **costs,
            )
        )
    return rows


def _hourly_rows(client_id: int, day: date) -> list[HourlyRollup]:
    groups = (
        _events_of_day(client_id, day)
        .annotate(bucket=Trunc("occurred_at", "hour", tzinfo=UTC))
        .values("bucket")
        .annotate(n_events=Count("pk"), n_unpriced=_unpriced(), cost=ExactSum("cost_usd"))
    )
    return [
        HourlyRollup(
            client_id=client_id,
            day=day,
            hour=group["bucket"],
            events=group["n_events"],
            unpriced_events=group["n_unpriced"],
            cost_usd=group["cost"] if group["cost"] is not None else ZERO,
        )
        for group in groups
    ]


def _end_user_rows(client_id: int, day: date) -> list[EndUserDailyRollup]:
    groups = (
        _events_of_day(client_id, day)
        .values("end_user")
        .annotate(
            n_events=Count("pk"),
            n_unpriced=_unpriced(),
            cost=ExactSum("cost_usd"),
            **{f"sum_{name}": Sum(name) for name in TOP_TOKEN_FIELDS},
        )
    )
    rows = []
    for values in groups:
        group: dict[str, Any] = dict(values)
        rows.append(
            EndUserDailyRollup(
                client_id=client_id,
                day=day,
                end_user=group["end_user"],
                events=group["n_events"],
                unpriced_events=group["n_unpriced"],
                cost_usd=group["cost"] if group["cost"] is not None else ZERO,
                **{name: group[f"sum_{name}"] or 0 for name in TOP_TOKEN_FIELDS},
            )
        )
    return rows


def _prompt_rows(client_id: int, day: date) -> list[PromptDailyRollup]:
    groups = (
        _events_of_day(client_id, day)
        .exclude(prompt_hash="")
        .values("prompt_hash")
        .annotate(
            n_events=Count("pk"),
            n_unpriced=_unpriced(),
            cost=ExactSum("cost_usd"),
            first=Min("occurred_at"),
            last=Max("occurred_at"),
        )
    )
    return [
        PromptDailyRollup(
            client_id=client_id,
            day=day,
            prompt_hash=group["prompt_hash"],
            events=group["n_events"],
            unpriced_events=group["n_unpriced"],
            cost_usd=group["cost"] if group["cost"] is not None else ZERO,
            first_at=group["first"],
            last_at=group["last"],
        )
        for group in groups
    ]


def _lock_clients(client_ids: Iterable[int]) -> None:
    """Serialize rebuilds of the same client (concurrent workers would otherwise both
    delete, then both insert and collide on the unique bucket). FOR NO KEY UPDATE does not
    conflict with the FOR KEY SHARE lock an event insert takes, so ingest never waits."""
    list(
        Client.objects.select_for_update(no_key=True)
        .filter(pk__in=list(client_ids))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


@transaction.atomic
def rollups_rebuild_days(*, client_id: int, days: Iterable[date]) -> int:
    """Rebuild the daily and hourly rollups of these agency-local days of one client from
    their raw events. Returns the number of daily rollup rows written."""
    # An archived month's events are detached (tracking.partitions): its rollups stay.
    archived = months_archived()
    day_list = sorted({day for day in days if month_start(day) not in archived})
    if not day_list:
        return 0
    _lock_clients([client_id])
    markups = MarkupBook([client_id])
    for model in DAY_MODELS:
        model.objects.filter(client_id=client_id, day__in=day_list).delete()
    daily: list[DailyRollup] = []
    hourly: list[HourlyRollup] = []
    end_users: list[EndUserDailyRollup] = []
    prompts: list[PromptDailyRollup] = []
    for day in day_list:
        daily.extend(_daily_rows(client_id, day, markups.markup(client_id, day)))
        hourly.extend(_hourly_rows(client_id, day))
        end_users.extend(_end_user_rows(client_id, day))
        prompts.extend(_prompt_rows(client_id, day))
    DailyRollup.objects.bulk_create(daily, batch_size=1000)
    HourlyRollup.objects.bulk_create(hourly, batch_size=1000)
    EndUserDailyRollup.objects.bulk_create(end_users, batch_size=1000)
    PromptDailyRollup.objects.bulk_create(prompts, batch_size=1000)
    _model_rows_insert(day_list, [client_id])
    return len(daily)


def _model_rows_insert(days: list[date], client_ids: list[int] | None) -> None:
    """Insert the ``ModelDailyRollup`` rows of these days (these clients, or all) as the
    sums of their ``DailyRollup`` rows (billed and untagged calls included: the overview
    reads them), which must be current and the model rows gone.
    Summing the stored rows, not the events again, keeps the rebuild cheap (~8 rows per
    client and day instead of a third pass over the events) and makes the two rollups
    agree by construction: a NUMERIC sum of NUMERICs is exact. Then the reconciliation's
    sums of them (``_recon_sums_refresh``)."""
    if not days:
        return
    _model_rows_write(days, client_ids)
    _recon_sums_refresh(days, client_ids)


def _recon_sums_refresh(days: Iterable[date], client_ids: list[int] | None) -> None:
    """After the ``ModelDailyRollup`` rows of these days (these clients, or all) were
    rewritten: give their months a new rollups version (what is computed from them, the
    stored reconciliation, is stale from this commit on) and re-sum what the
    reconciliation reads, ``TrackedModelDay`` of the days and ``TrackedClientMonth`` of
    the clients' months. Last of a rebuild's writes.

    The version comes first because its upsert locks the month's version row until
    commit (PostgreSQL): rebuilds of one month's days re-sum in turn, each after the
    previous one committed, so a day's sum over every client never misses another
    rebuild's clients. Every statement after the lock reads what is committed."""
    day_list = sorted(set(days))
    if not day_list:
        return
    month_versions_touch(kind=DataKind.ROLLUPS, days=day_list)
    TrackedModelDay.objects.filter(day__in=day_list).delete()
    model_sums: dict[str, Any] = {name: Sum(name) for name in MODEL_TOKEN_FIELDS}
    groups = (
        ModelDailyRollup.objects.filter(day__in=day_list)
        .order_by()
        .values("day", "provider", "model")
        .annotate(
            n_rows=Count("pk"),
            n_events=Sum("events"),
            n_unpriced=Sum("unpriced_events"),
            cost=ExactSum("cost_usd"),
            **{f"sum_{name}": value for name, value in model_sums.items()},
        )
    )
    made = []
    for values in groups:
        group: dict[str, Any] = dict(values)
        made.append(
            TrackedModelDay(
                day=group["day"],
                provider=group["provider"],
                model=group["model"],
                rows=group["n_rows"],
                events=group["n_events"] or 0,
                unpriced_events=group["n_unpriced"] or 0,
                cost_usd=group["cost"] if group["cost"] is not None else ZERO,
                **{name: group[f"sum_{name}"] or 0 for name in MODEL_TOKEN_FIELDS},
            )
        )
    TrackedModelDay.objects.bulk_create(made, batch_size=1000)
    months = sorted({day.replace(day=1) for day in day_list})
    stale = TrackedClientMonth.objects.filter(month__in=months)
    if client_ids is not None:
        stale = stale.filter(client_id__in=client_ids)
    stale.delete()
    for month in months:
        first, last = month_bounds(month)
        rows = ModelDailyRollup.objects.filter(day__gte=first, day__lte=last).order_by()
        if client_ids is not None:
            rows = rows.filter(client_id__in=client_ids)
        sums = rows.values("client_id", "provider").annotate(
            n_rows=Count("pk"), cost=ExactSum("cost_usd")
        )
        TrackedClientMonth.objects.bulk_create(
            [
                TrackedClientMonth(
                    client_id=group["client_id"],
                    month=month,
                    provider=group["provider"],
                    rows=group["n_rows"],
                    cost_usd=group["cost"] if group["cost"] is not None else ZERO,
                )
                for group in sums
            ],
            batch_size=1000,
        )


def _model_rows_write(days: list[date], client_ids: list[int] | None) -> None:
    if connection.vendor == "postgresql":
        params: dict[str, Any] = {"days": days, "clients": client_ids}
        client_filter = "AND r.client_id = ANY(%(clients)s)" if client_ids is not None else ""
        with connection.cursor() as cursor:
            cursor.execute(
                _MODEL_SQL.format(
                    token_columns=", ".join(MODEL_TOKEN_FIELDS),
                    token_sums=", ".join(f"SUM(r.{name})" for name in MODEL_TOKEN_FIELDS),
                    client_filter=client_filter,
                ),
                params,
            )
        return
    rows = DailyRollup.objects.filter(day__in=days).order_by()
    if client_ids is not None:
        rows = rows.filter(client_id__in=client_ids)
    groups = rows.values("client_id", "day", "provider", "model").annotate(
        n_events=Sum("events"),
        n_unpriced=Sum("unpriced_events"),
        cost=ExactSum("cost_usd"),
        billed=ExactSum("billed_usd"),
        n_untagged=Sum("events", filter=Q(project="")),
        **{f"sum_{name}": Sum(name) for name in MODEL_TOKEN_FIELDS},
    )
    made = []
    for values in groups:
        group: dict[str, Any] = dict(values)
        made.append(
            ModelDailyRollup(
                client_id=group["client_id"],
                day=group["day"],
                provider=group["provider"],
                model=group["model"],
                events=group["n_events"] or 0,
                unpriced_events=group["n_unpriced"] or 0,
                cost_usd=group["cost"] if group["cost"] is not None else ZERO,
                billed_usd=group["billed"] if group["billed"] is not None else ZERO,
                untagged_events=group["n_untagged"] or 0,
                **{name: group[f"sum_{name}"] or 0 for name in MODEL_TOKEN_FIELDS},
            )
        )
    ModelDailyRollup.objects.bulk_create(made, batch_size=1000)


@transaction.atomic
def model_rollups_refresh(*, start: date, end: date) -> None:
    """Re-derive the ``ModelDailyRollup`` rows of these local days from the stored
    ``DailyRollup`` rows, for every client: for rollups written outside the rebuild
    (tests, a repair by hand). The rebuild keeps them current on its own."""
    days = list(local_days(start, end))
    ModelDailyRollup.objects.filter(day__gte=start, day__lte=end).delete()
    _model_rows_insert(days, None)


def markup_changes_mark(*, now: datetime | None = None) -> int:
    """Mark dirty the days whose rollups carry a markup that is no longer theirs.

    A day's rows are built with the markup in force at that moment, but the day's markup
    is the one in force at its *end*: a change later the same day (with no new usage that
    day) would leave the day billed at the old markup, and a full rebuild would disagree.
    Ingest never sees a markup change and ``Client.save()`` does no workflow, so each
    rebuild looks at the clients edited within ``MARKUP_SWEEP_WINDOW`` (the beat runs
    every 2 minutes; the window leaves a day of slack) and marks the (client, day) of each
    edit, and later days with rows, whose stored markup differs. An edit of other fields
    marks nothing. Returns the number of pairs marked.
    """
    moment = now or timezone.now()
    edits = Client.history.filter(history_date__gte=moment - MARKUP_SWEEP_WINDOW).values_list(
        "id", "history_date"
    )
    first_day: dict[int, date] = {}
    for client_id, when in edits:
        day = local_day(when)
        first_day[client_id] = min(day, first_day.get(client_id, day))
    if not first_day:
        return 0
    book = MarkupBook(first_day)
    condition = Q()
    for client_id, day in first_day.items():
        condition |= Q(client_id=client_id, day__gte=day)
    stored = DailyRollup.objects.filter(condition).values_list("client_id", "day", "markup_pct")
    stale = {
        (client_id, day)
        for client_id, day, markup in stored.distinct()
        if markup != book.markup(client_id, day)
    }
    dirty_days_mark(stale, now=moment)
    return len(stale)


def rollups_rebuild_dirty() -> int:
    """Rebuild every (client, day) marked in ``tracking.models.DirtyDay`` (after marking
    the days a markup change left stale), then delete the marks consumed: only those
    whose ``marked_at`` is not newer than what was read (a day marked again meanwhile
    stays marked) and older than ``DIRTY_SETTLE``. Returns the number of (client, day)
    pairs rebuilt. Safe to run twice or concurrently."""
    markup_changes_mark()
    marks = list(
        DirtyDay.objects.order_by("client_id", "day").values_list(
            "pk", "client_id", "day", "marked_at"
        )
    )
    if connection.vendor == "postgresql":
        # One statement per day for all its dirty clients: after a burst touching every
        # client, one pass over the day's events instead of one query per client.
        by_day: dict[date, list[int]] = defaultdict(list)
        for _, client_id, day, _ in marks:
            by_day[day].append(client_id)
        for day, clients in sorted(by_day.items()):
            _rebuild_day_sql(day, sorted(clients))
    else:
        by_client: dict[int, list[date]] = defaultdict(list)
        for _, client_id, day, _ in marks:
            by_client[client_id].append(day)
        for client_id, days in by_client.items():
            rollups_rebuild_days(client_id=client_id, days=days)
    settled = timezone.now() - DIRTY_SETTLE
    consumable = [(pk, marked_at) for pk, _, _, marked_at in marks if marked_at <= settled]
    for start in range(0, len(consumable), 500):
        condition = Q()
        for pk, marked_at in consumable[start : start + 500]:
            condition |= Q(pk=pk, marked_at__lte=marked_at)
        DirtyDay.objects.filter(condition).delete()
    return len(marks)


def rollups_rebuild_period(*, start: date, end: date, client_id: int | None = None) -> int:
    """Rebuild the rollups of every agency-local day from ``start`` to ``end`` inclusive
    (one client, or all). Days without events lose their rows; days of archived months
    keep theirs (tracking.partitions). Returns the number of
    daily rollup rows written. One transaction per day, so a long rebuild never holds a
    month of locks and can be interrupted and rerun."""
    if end < start:
        return 0
    if connection.vendor == "postgresql":
        only = None if client_id is None else [client_id]
        return sum(_rebuild_day_sql(day, only) for day in local_days(start, end))
    written = 0
    first, _ = day_bounds(start)
    _, last = day_bounds(end)
    events = UsageEvent.objects.filter(occurred_at__gte=first, occurred_at__lt=last)
    stored = [model.objects.filter(day__gte=start, day__lte=end) for model in DAY_MODELS]
    if client_id is not None:
        events = events.filter(client_id=client_id)
        stored = [rows.filter(client_id=client_id) for rows in stored]
    for month in months_archived():
        first_day, last_day = month_bounds(month)
        stored = [rows.exclude(day__gte=first_day, day__lte=last_day) for rows in stored]
    pairs = set(
        events.annotate(local=TruncDate("occurred_at", tzinfo=zone()))
        .values_list("client_id", "local")
        .distinct()
    )
    by_client: dict[int, set[date]] = defaultdict(set)
    for pair_client, day in pairs:
        by_client[pair_client].add(day)
    with transaction.atomic():
        for rows in stored:
            rows.delete()
        for pair_client, days in sorted(by_client.items()):
            written += rollups_rebuild_days(client_id=pair_client, days=days)
        # Days and clients left without events lost their rows above.
        _recon_sums_refresh(local_days(start, end), None if client_id is None else [client_id])
    return written


# --- PostgreSQL: the same aggregation as one INSERT … SELECT per day -----------------

_DAILY_SQL = """
INSERT INTO billing_dailyrollup (
    client_id, day, project, feature, provider, model, events, unpriced_events,
    {token_columns}, {cost_columns}, markup_pct, billed_usd
)
SELECT e.client_id, %(day)s, COALESCE(p.name, ''), e.feature, e.provider,
       COALESCE(r.model, e.model), COUNT(*),
       COUNT(*) FILTER (WHERE e.pricing_status = 'unpriced'),
       {token_sums}, {cost_sums}, m.markup_pct,
       -- Same as billed_usd(): exact product (no division), then half-up to 15 places.
       ROUND(COALESCE(SUM(e.cost_usd), 0) * (100 + m.markup_pct) * 0.01, 15)
FROM tracking_usageevent e
JOIN (VALUES {markup_values}) AS m (client_id, markup_pct) ON m.client_id = e.client_id
LEFT JOIN agency_project p ON p.id = e.project_id
LEFT JOIN tracking_modelrate r ON r.id = e.rate_id
WHERE e.occurred_at >= %(start)s AND e.occurred_at < %(end)s {client_filter}
GROUP BY e.client_id, COALESCE(p.name, ''), e.feature, e.provider, COALESCE(r.model, e.model),
         m.markup_pct
"""

_HOURLY_SQL = """
INSERT INTO billing_hourlyrollup (client_id, day, hour, events, unpriced_events, cost_usd)
SELECT e.client_id, %(day)s, date_trunc('hour', e.occurred_at, 'UTC'), COUNT(*),
       COUNT(*) FILTER (WHERE e.pricing_status = 'unpriced'), COALESCE(SUM(e.cost_usd), 0)
FROM tracking_usageevent e
WHERE e.occurred_at >= %(start)s AND e.occurred_at < %(end)s {client_filter}
GROUP BY e.client_id, date_trunc('hour', e.occurred_at, 'UTC')
"""


_END_USER_SQL = """
INSERT INTO billing_enduserdailyrollup (
    client_id, day, end_user, events, unpriced_events, cost_usd, {token_columns}
)
SELECT e.client_id, %(day)s, e.end_user, COUNT(*),
       COUNT(*) FILTER (WHERE e.pricing_status = 'unpriced'), COALESCE(SUM(e.cost_usd), 0),
       {token_sums}
FROM tracking_usageevent e
WHERE e.occurred_at >= %(start)s AND e.occurred_at < %(end)s {client_filter}
GROUP BY e.client_id, e.end_user
"""

_PROMPT_SQL = """
INSERT INTO billing_promptdailyrollup (
    client_id, day, prompt_hash, events, unpriced_events, cost_usd, first_at, last_at
)
SELECT e.client_id, %(day)s, e.prompt_hash, COUNT(*),
       COUNT(*) FILTER (WHERE e.pricing_status = 'unpriced'), COALESCE(SUM(e.cost_usd), 0),
       MIN(e.occurred_at), MAX(e.occurred_at)
FROM tracking_usageevent e
WHERE e.occurred_at >= %(start)s AND e.occurred_at < %(end)s AND e.prompt_hash <> ''
      {client_filter}
GROUP BY e.client_id, e.prompt_hash
"""

_MODEL_SQL = """
INSERT INTO billing_modeldailyrollup (
    client_id, day, provider, model, events, unpriced_events, cost_usd, billed_usd,
    untagged_events, {token_columns}
)
SELECT r.client_id, r.day, r.provider, r.model, SUM(r.events), SUM(r.unpriced_events),
       SUM(r.cost_usd), SUM(r.billed_usd),
       COALESCE(SUM(r.events) FILTER (WHERE r.project = ''), 0), {token_sums}
FROM billing_dailyrollup r
WHERE r.day = ANY(%(days)s) {client_filter}
GROUP BY r.client_id, r.day, r.provider, r.model
"""


@transaction.atomic
def _rebuild_day_sql(day: date, only: list[int] | None) -> int:
    """Rebuild one local day for these clients (all when ``only`` is None) in one
    transaction: the same rows as ``rollups_rebuild_days``, from two statements."""
    if month_start(day) in months_archived():
        # Its events are detached (tracking.partitions): the rollups are all that is left.
        return 0
    start, end = day_bounds(day)
    events = UsageEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
    stored = [model.objects.filter(day=day) for model in DAY_MODELS]
    if only is not None:
        events = events.filter(client_id__in=only)
        stored = [rows.filter(client_id__in=only) for rows in stored]
    client_ids = sorted(set(events.values_list("client_id", flat=True).distinct()))
    _lock_clients(client_ids if only is None else only)
    for rows in stored:
        rows.delete()
    if not client_ids:
        _recon_sums_refresh([day], only)  # rows may have gone
        return 0
    markups = MarkupBook(client_ids)
    params: dict[str, Any] = {"day": day, "start": start, "end": end, "clients": only}
    values = []
    for index, pair_client in enumerate(client_ids):
        params[f"c{index}"] = pair_client
        params[f"m{index}"] = markups.markup(pair_client, day)
        values.append(f"(%(c{index})s::bigint, %(m{index})s::numeric)")
    client_filter = "AND e.client_id = ANY(%(clients)s)" if only is not None else ""
    daily_sql = _DAILY_SQL.format(
        token_columns=", ".join(TOKEN_FIELDS),
        cost_columns=", ".join(COST_FIELDS),
        token_sums=", ".join(f"COALESCE(SUM(e.{name}), 0)" for name in TOKEN_FIELDS),
        cost_sums=", ".join(f"COALESCE(SUM(e.{name}), 0)" for name in COST_FIELDS),
        markup_values=", ".join(values),
        client_filter=client_filter,
    )
    with connection.cursor() as cursor:
        cursor.execute(daily_sql, params)
        written = cursor.rowcount
        cursor.execute(_HOURLY_SQL.format(client_filter=client_filter), params)
        cursor.execute(
            _END_USER_SQL.format(
                token_columns=", ".join(TOP_TOKEN_FIELDS),
                token_sums=", ".join(f"COALESCE(SUM(e.{name}), 0)" for name in TOP_TOKEN_FIELDS),
                client_filter=client_filter,
            ),
            params,
        )
        cursor.execute(_PROMPT_SQL.format(client_filter=client_filter), params)
    _model_rows_insert([day], only)
    return written
