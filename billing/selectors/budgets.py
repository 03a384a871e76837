"""Budget status, burn rate and alert history, read from the rollups.

Status bands on the billed amount (raw cost plus markup) against the monthly budget:
green below 80%, yellow from 80% to below 100%, red at 100% or more. No budget, no status
(None, never green). The burn-rate projection is month-to-date billed ÷ elapsed hours of
the month (the hour in progress counts as elapsed) × hours in the month, with its own
status by the same bands, once the month has ``PROJECTION_MIN_HOURS`` of data (the
rule the projected alerts follow): before that it is "too early to project".

The billed figure is the month's bill (``billing.selectors.lines``): the issued invoice's
lines, or the estimate by the invoice's own per-line rounding, so the status, the
percentage and every screen use the amount the client is (or will be) invoiced.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

from django.db.models import Q, QuerySet
from django.utils import timezone

from agency.calendar import month_range, month_start
from agency.models import Client
from agency.money import COST_PLACES, ONE_HUNDRED
from billing.models import Alert, AlertKind, BudgetStatus
from billing.selectors.lines import ESTIMATE, MonthBill, month_bill
from billing.selectors.rollups import MonthTotals

ZERO = Decimal("0")
YELLOW_FROM_PCT = Decimal("80")
HOUR = timedelta(hours=1)
PERCENT_PLACES = Decimal("0.0001")
# Projections from the first hours of a month are noise (one busy hour × 744): neither
# projected alerts nor the screens project before a day of data. The status is still
# shown from the first hour.
PROJECTION_MIN_HOURS = 24


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
    billed_basis: str = ESTIMATE  # "invoice" once the month's invoice is issued

    @property
    def projectable(self) -> bool:
        """Enough of the month has passed for a burn rate to mean something."""
        return self.elapsed_hours >= min(PROJECTION_MIN_HOURS, self.month_hours)

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
    *,
    client: Client,
    month: date,
    totals: MonthTotals,
    now: datetime,
    budget: Decimal | None,
    billed_basis: str = ESTIMATE,
    hours: tuple[int, int] | None = None,
) -> BudgetPosition:
    """Compute a position from a month's totals (no queries). ``hours`` is
    ``month_hours(month, now)`` when the caller has it (the overview: once, not per
    client)."""
    elapsed, total = hours or month_hours(month, now)
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
        billed_basis=billed_basis,
    )


def bill_totals(bill: MonthBill) -> MonthTotals:
    """A month's bill as the totals a budget position is computed from."""
    return MonthTotals(
        client_id=bill.client_id,
        cost_usd=bill.raw_usd,
        billed_usd=bill.billed_usd,
        events=bill.events,
        unpriced_events=bill.unpriced_events,
    )


def budget_status_for(
    client: Client, month: date, *, now: datetime | None = None, bill: MonthBill | None = None
) -> BudgetPosition:
    """A client's budget position for the month containing ``month`` on its bill (the
    issued invoice, or the estimate live from the rollups), so an edited budget shows at
    once."""
    moment = now or timezone.now()
    month = month_start(month)
    if bill is None or bill.month != month:
        bill = month_bill(client, month)
    return budget_position(
        client=client,
        month=month,
        totals=bill_totals(bill),
        now=moment,
        budget=budget_of(client, month, moment),
        billed_basis=bill.basis,
    )


def alerts_for(client: Client, limit: int = 20) -> QuerySet[Alert]:
    """The client's most recent alerts, newest first, with their deliveries."""
    return (
        Alert.objects.filter(client=client)
        .prefetch_related("deliveries")
        .order_by("-created_at", "-pk")[:limit]
    )


@dataclass(frozen=True)
class AlertHistory:
    """A month's alerts as recorded, and the thresholds its billed amount crossed with no
    alert on record (usage loaded or priced after the month, say): a month at 878% of its
    budget never reads "No alerts"."""

    alerts: list[Alert]
    unrecorded: list[int]  # thresholds (percent) reached without a recorded alert


def month_alert_history(client: Client, position: BudgetPosition) -> AlertHistory:
    alerts = list(
        Alert.objects.filter(client=client, month=position.month)
        .prefetch_related("deliveries")
        .order_by("-created_at", "-pk")
    )
    budget = position.budget_usd
    recorded = {a.threshold for a in alerts if a.kind == AlertKind.ACTUAL}
    unrecorded = []
    if budget is not None and position.billed_usd > 0:
        unrecorded = [
            t
            for t in client.threshold_list()
            if t not in recorded and position.billed_usd >= budget * t / ONE_HUNDRED
        ]
    return AlertHistory(alerts=alerts, unrecorded=unrecorded)


def alerts_all(clients: QuerySet[Client], limit: int = 200) -> QuerySet[Alert]:
    """Every alert of these clients and the agency-wide ones (reconciliation), newest
    first, with client and deliveries (staff)."""
    return (
        Alert.objects.filter(Q(client__in=clients) | Q(client__isnull=True))
        .select_related("client")
        .prefetch_related("deliveries")
        .order_by("-created_at", "-pk")[:limit]
    )
