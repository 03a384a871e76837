"""Reads of the rollups: month totals per client (days and months: ``agency.calendar``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db.models import Sum

from agency.calendar import month_bounds
from agency.db import ExactSum
from billing.models import DailyRollup

ZERO = Decimal("0")


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
