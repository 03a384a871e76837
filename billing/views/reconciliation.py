"""The reconciliation page (staff only): the provider's books against what was tracked.

Client users get a 404 (they learn nothing about the agency's books), anonymous users
the login page. The htmx month picker swaps ``#recon-body`` like the client page's.
"""

from __future__ import annotations

from datetime import date

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET

from agency.calendar import FIRST_MONTH, month_start, shift_month, today
from billing import charts
from billing.selectors import reconciliation as recon
from billing.views.dashboard import HtmxHttpRequest, _staff_only, _with_current, month_param

# The spend-by-key table shows the largest gaps; the rest is one total row.
ACCOUNT_ROWS = 25


def _body(month: date, day: date) -> str:
    """The page's ``#recon-body`` (no user or request in it: cached as rendered)."""
    data = recon.reconciliation_cached(month)
    series = recon.chart_series(data)
    context = {
        "data": data,
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
    body = recon.cached(month, f"page:{month_start(day)}", lambda: _body(month, day))
    if request.htmx:
        return HttpResponse(body)
    return render(request, "billing/reconciliation.html", {"body": body})
