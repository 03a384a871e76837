"""Reads of the rollups: agency-local days and months, and month totals per client.

Days and months are those of the agency's time zone (``settings.TIME_ZONE``); events are
stored in UTC. A local day is turned into its UTC range so event filters use the
``(client, occurred_at)`` index.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from agency.db import ExactSum
from billing.models import DailyRollup

ZERO = Decimal("0")


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The aware [start, end) of an agency-local day (23 or 25 hours long across DST)."""
    tz = timezone.get_default_timezone()
    start = datetime.combine(day, time.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)
    return start, end


def local_days(start: date, end: date) -> Iterator[date]:
    """Every day from ``start`` to ``end`` inclusive."""
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


def month_bounds(month: date) -> tuple[date, date]:
    """First and last day (inclusive) of the month containing ``month``."""
    first = month.replace(day=1)
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


def month_range(month: date) -> tuple[datetime, datetime]:
    """The aware [start, end) of an agency-local month."""
    first, last = month_bounds(month)
    return day_bounds(first)[0], day_bounds(last)[1]


def current_month(now: datetime | None = None) -> date:
    """First day of the agency-local month of ``now``."""
    moment = now or timezone.now()
    return timezone.localdate(moment, timezone.get_default_timezone()).replace(day=1)


@dataclass(frozen=True)
class MonthTotals:
    """A client's usage in one month, summed from its daily rollups (unrounded)."""

    client_id: int
    cost_usd: Decimal = ZERO
    billed_usd: Decimal = ZERO
    events: int = 0
    unpriced_events: int = 0

    @property
    def unknown_spend(self) -> bool:
        """Some events have no rate yet: the real spend is higher than shown."""
        return self.unpriced_events > 0


def month_totals(*, month: date, client_ids: Iterable[int] | None = None) -> dict[int, MonthTotals]:
    """Totals per client id for the month containing ``month``; clients without usage are
    absent (callers default to ``MonthTotals(client_id)``). One grouped query."""
    first, last = month_bounds(month)
    rows = DailyRollup.objects.filter(day__gte=first, day__lte=last)
    if client_ids is not None:
        rows = rows.filter(client_id__in=list(client_ids))
    grouped = (
        rows.order_by()
        .values("client_id")
        .annotate(
            cost=ExactSum("cost_usd"),
            billed=ExactSum("billed_usd"),
            n_events=Sum("events"),
            n_unpriced=Sum("unpriced_events"),
        )
    )
    return {
        row["client_id"]: MonthTotals(
            client_id=row["client_id"],
            cost_usd=row["cost"] if row["cost"] is not None else ZERO,
            billed_usd=row["billed"] if row["billed"] is not None else ZERO,
            events=row["n_events"] or 0,
            unpriced_events=row["n_unpriced"] or 0,
        )
        for row in grouped
    }
