"""The agency overview (staff only) and the client page (staff, and that client's users).

Permission checks live here, not in templates: the overview refuses non-staff with a 404,
and the client page looks its client up through ``client_for``, so another client's
slug is a 404 for a client's user. A client's user sees billed amounts only: the agency's
raw cost and margin (its markup) are never rendered for them.
"""

from __future__ import annotations

from datetime import date

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_htmx.middleware import HtmxDetails

from agency.calendar import (
    FIRST_MONTH,
    MonthError,
    MonthOutOfRange,
    month_start,
    parse_month,
    shift_month,
    today,
)
from agency.selectors import client_for, clients_for
from billing import charts
from billing.selectors import dashboard
from billing.selectors.budgets import alerts_for, budget_status_for
from billing.selectors.invoices import invoices_for


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def month_param(value: str | None, *, today: date) -> date:
    """The month of ``?month=YYYY-MM``: this month when absent or unreadable (a stale or
    hand-edited link still shows a page), 404 for a month outside the range kept."""
    if value:
        try:
            return parse_month(value)
        except MonthOutOfRange:
            raise Http404("No such month") from None
        except MonthError:
            pass
    return month_start(today)


@login_required
@require_GET
def overview(request: HtmxHttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise Http404("No such page")
    data = dashboard.overview(
        clients_for(request.user),
        now=timezone.now(),
        sort=request.GET.get("sort", "name"),
    )
    template = "billing/overview.html"
    if request.htmx:
        template += "#overview-table"
    return render(request, template, {"data": data})


@login_required
@require_GET
def client_detail(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    client = client_for(request.user, slug)
    now = timezone.now()  # read once: the month shown and its budget position agree
    day = today(now)
    month = month_param(request.GET.get("month"), today=day)
    data = dashboard.client_month(client, month=month, today=day)
    # Raw-event top lists: from the cache, or computed here only when asked (?top=1, the
    # no-JavaScript link); otherwise the page loads them through client_top_lists.
    top = dashboard.top_lists(
        client, month=month, watermark=data.watermark, compute=request.GET.get("top") == "1"
    )
    context = {
        "client": client,
        "data": data,
        "top": top,
        "show_cost": request.user.is_staff,
        "budget": budget_status_for(client, month, now=now),
        "spend_chart": charts.stacked_bars(data.days, data.daily_by_model),
        "legend": charts.legend(list(data.daily_by_model)),
        "prompt_chart": charts.line_chart(data.days, data.avg_prompt_tokens),
        "previous_month": shift_month(month, -1) if month > FIRST_MONTH else None,
        "next_month": shift_month(month, 1) if month < month_start(day) else None,
    }
    if request.htmx:
        return render(request, "billing/client_detail.html#month-body", context)
    context["alerts"] = alerts_for(client, limit=20)
    context["invoices"] = invoices_for(client, include_drafts=request.user.is_staff)
    return render(request, "billing/client_detail.html", context)


@login_required
@require_GET
def client_top_lists(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The top end users and prompts of a month: the fragment the client page loads after
    itself when they were not cached."""
    client = client_for(request.user, slug)
    month = month_param(request.GET.get("month"), today=today())
    top = dashboard.top_lists(
        client, month=month, watermark=dashboard.month_watermark(client, month), compute=True
    )
    context = {"client": client, "top": top, "show_cost": request.user.is_staff}
    return render(request, "billing/client_detail.html#top-lists", context)
