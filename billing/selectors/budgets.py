"""Budget status, burn rate and alert history, read from the rollups.

Status bands on the billed amount (raw cost plus markup) against the monthly budget:
green below 80%, yellow from 80% to below 100%, red at 100% or more. No budget, no status
(None, never green). The burn-rate projection is month-to-date billed ÷ elapsed hours of
the month (the hour in progress counts as elapsed) × hours in the month, with its own
status by the same bands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

from django.db.models import QuerySet
from django.utils import timezone

from agency.calendar import month_range, month_start
from agency.models import Client
from agency.money import COST_PLACES, ONE_HUNDRED
from billing.models import Alert, BudgetStatus
from billing.selectors.rollups import MonthTotals, month_totals

ZERO = Decimal("0")
YELLOW_FROM_PCT = Decimal("80")
HOUR = timedelta(hours=1)
PERCENT_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class BudgetPosition:
    """A client's budget position in one month. Money is unrounded (round at display)."""

    client_id: int
    month: date
    budget_usd: Decimal | None
    cost_usd: Decimal
    billed_usd: Decimal
    events: int
    unpriced_events: int
    percent_used: Decimal | None  # of the budget, 4 places; None without a (positive) budget
    status: str | None  # BudgetStatus value; None without a budget
    projected_billed_usd: Decimal
    projected_percent: Decimal | None
    projected_status: str | None
    elapsed_hours: int
    month_hours: int

    @property
    def unknown_spend(self) -> bool:
        """Some events have no rate yet: spend is higher than these figures."""
        return self.unpriced_events > 0

    @property
    def has_budget(self) -> bool:
        return self.budget_usd is not None


def budget_band(amount: Decimal, budget: Decimal | None) -> str | None:
    """The status of ``amount`` billed against ``budget``. A zero budget is red as soon as
    anything is billed."""
    if budget is None:
        return None
    if budget == 0:
        return BudgetStatus.RED if amount > 0 else BudgetStatus.GREEN
    if amount >= budget:
        return BudgetStatus.RED
    if amount * ONE_HUNDRED >= budget * YELLOW_FROM_PCT:
        return BudgetStatus.YELLOW
    return BudgetStatus.GREEN


def percent_of(amount: Decimal, budget: Decimal | None) -> Decimal | None:
    """``amount`` as a percentage of ``budget``, 4 places (a ratio, not money)."""
    if budget is None or budget == 0:
        return None
    with localcontext(prec=50):
        return (amount * ONE_HUNDRED / budget).quantize(PERCENT_PLACES, rounding=ROUND_HALF_UP)


def month_hours(month: date, now: datetime) -> tuple[int, int]:
    """(elapsed hours, hours in the month) of the agency-local month at ``now``.

    Counted in real hours, so a month with a DST change has 743 or 745. The hour in
    progress counts as elapsed (so the first hour of a month divides by 1, not 0).
    """
    # In UTC: subtracting two datetimes of the same zone is wall-clock arithmetic in Python.
    start, end = (moment.astimezone(UTC) for moment in month_range(month))
    total = int((end - start) / HOUR)
    if now >= end:
        return total, total
    if now < start:
        return 0, total
    return min(int((now - start) // HOUR) + 1, total), total


def project_month(billed: Decimal, elapsed: int, total: int) -> Decimal:
    """Month-end billed at the month-to-date burn rate (15 places, storage scale)."""
    if elapsed <= 0 or elapsed >= total:
        return billed
    with localcontext(prec=60):
        return (billed * total / elapsed).quantize(COST_PLACES, rounding=ROUND_HALF_UP)


def budget_of(client: Client, month: date, now: datetime) -> Decimal | None:
    """The budget that applies to a month: the current one for this month and later (an
    edit mid-month applies at once); for a past month, the budget in force at its end."""
    _, end = month_range(month)
    if now < end:
        return client.monthly_budget_usd
    records = list(
        Client.history.filter(id=client.pk, history_date__lt=end)
        .order_by("-history_date", "-history_id")
        .values_list("monthly_budget_usd", flat=True)[:1]
    )
    # No record before the month ended (history began later): the current budget.
    return records[0] if records else client.monthly_budget_usd


def budget_position(
    *, client: Client, month: date, totals: MonthTotals, now: datetime, budget: Decimal | None
) -> BudgetPosition:
    """Compute a position from a month's totals (no queries)."""
    elapsed, total = month_hours(month, now)
    projected = project_month(totals.billed_usd, elapsed, total)
    return BudgetPosition(
        client_id=client.pk,
        month=month,
        budget_usd=budget,
        cost_usd=totals.cost_usd,
        billed_usd=totals.billed_usd,
        events=totals.events,
        unpriced_events=totals.unpriced_events,
        percent_used=percent_of(totals.billed_usd, budget),
        status=budget_band(totals.billed_usd, budget),
        projected_billed_usd=projected,
        projected_percent=percent_of(projected, budget),
        projected_status=budget_band(projected, budget),
        elapsed_hours=elapsed,
        month_hours=total,
    )


def budget_status_for(
    client: Client, month: date, *, now: datetime | None = None
) -> BudgetPosition:
    """A client's budget position for the month containing ``month``, live from the
    rollups (one small query), so an edited budget shows at once."""
    moment = now or timezone.now()
    month = month_start(month)
    totals = month_totals(month=month, client_ids=[client.pk]).get(
        client.pk, MonthTotals(client_id=client.pk)
    )
    return budget_position(
        client=client,
        month=month,
        totals=totals,
        now=moment,
        budget=budget_of(client, month, moment),
    )


def alerts_for(client: Client, limit: int = 20) -> QuerySet[Alert]:
    """The client's most recent alerts, newest first, with their deliveries."""
    return (
        Alert.objects.filter(client=client)
        .prefetch_related("deliveries")
        .order_by("-created_at", "-pk")[:limit]
    )
