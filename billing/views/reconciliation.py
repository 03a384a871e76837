"""The reconciliation page (staff only): the provider's books against what was tracked.

Client users get a 404 (they learn nothing about the agency's books), anonymous users
the login page. The htmx month picker swaps ``#recon-body`` like the client page's.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from agency.calendar import FIRST_MONTH, month_start, shift_month, today
from billing import charts
from billing.selectors import reconciliation as recon
from billing.views.dashboard import HtmxHttpRequest, _staff_only, _with_current, month_param


@login_required
@require_GET
def reconciliation(request: HtmxHttpRequest) -> HttpResponse:
    _staff_only(request)
    day = today()
    month = month_param(request.GET.get("month"), today=day)
    data = recon.reconciliation_cached(month)
    series = recon.chart_series(data)
    context = {
        "data": data,
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
    template = "billing/reconciliation.html"
    if request.htmx:
        template += "#recon-body"
    return render(request, template, context)
