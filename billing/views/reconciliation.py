"""The reconciliation page (staff only): the provider's books against what was tracked.

Client users get a 404 (they learn nothing about the agency's books), anonymous users
the login page. The htmx month picker swaps ``#recon-body`` like the client page's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from agency.calendar import FIRST_MONTH, month_start, shift_month, today
from agency.money import round_money
from billing import charts
from billing.selectors import reconciliation as recon
from billing.views.dashboard import HtmxHttpRequest, _staff_only, _with_current, month_param

# The spend-by-key table shows the largest gaps; the rest is one total row.
ACCOUNT_ROWS = 25


@dataclass(frozen=True)
class Shown:
    """Money as the page prints it: to the cent, untracked = provider − tracked as shown."""

    provider_cost_usd: Decimal
    tracked_cost_usd: Decimal

    @property
    def untracked_cost_usd(self) -> Decimal:
        return self.provider_cost_usd - self.tracked_cost_usd


def _shown(data: recon.Reconciliation) -> tuple[list[tuple[recon.ModelFigures, Shown]], Shown]:
    """Each model's money rounded to the cent, and the month's as the sum of those rows:
    the rule of the invoice, so every column adds up on the page (the API is exact)."""
    rows = [
        (
            m,
            Shown(
                round_money(m.figures.provider_cost_usd), round_money(m.figures.tracked_cost_usd)
            ),
        )
        for m in data.by_model
    ]
    total = Shown(
        sum((shown.provider_cost_usd for _, shown in rows), Decimal(0)),
        sum((shown.tracked_cost_usd for _, shown in rows), Decimal(0)),
    )
    return rows, total


def _body(month: date, day: date) -> str:
    """The page's ``#recon-body`` (no user or request in it: cached as rendered)."""
    data = recon.reconciliation_cached(month)
    series = recon.chart_series(data)
    models, shown = _shown(data)
    context = {
        "data": data,
        "models": models,
        "shown": shown,
        "accounts": data.accounts[:ACCOUNT_ROWS],
        "more_accounts": recon.accounts_rest(data, ACCOUNT_ROWS),
        "months": _with_current(recon.report_months(), month),
        "chart": charts.stacked_bars(
            data.days, series, label="Provider cost per day: tracked or not"
        ),
        "legend": charts.legend([name for name, values in series.items() if any(values)]),
        "drift_limit": recon.DRIFT_LIMIT_PCT,
        "time_zone": settings.TIME_ZONE,
        "previous_month": shift_month(month, -1) if month > FIRST_MONTH else None,
        "next_month": shift_month(month, 1) if month < month_start(day) else None,
    }
    return render_to_string("billing/reconciliation.html#recon-body", context)


@login_required
@require_GET
def reconciliation(request: HtmxHttpRequest) -> HttpResponse:
    _staff_only(request)
    day = today()
    month = month_param(request.GET.get("month"), today=day)
    # The body's links depend on the current month: it is part of the key.
    stored = recon.stored(
        month, f"page:{month_start(day):%Y-%m}", lambda: _body(month, day).encode()
    )
    # Our own rendering (_body), stored as UTF-8: safe as it was when rendered.
    body = mark_safe(stored.decode())  # noqa: S308
    if request.htmx:
        return HttpResponse(body)
    return render(request, "billing/reconciliation.html", {"body": body})
