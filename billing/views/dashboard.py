"""The agency overview (staff only) and the client page (staff, and that client's users).

Permission checks live here, not in templates: the overview refuses non-staff with a 404,
and the client page looks its client up through ``client_for``, so another client's
slug is a 404 for a client's user. A client's user sees billed amounts only: the agency's
raw cost and margin (its markup) are never rendered for them.
"""

from __future__ import annotations

from datetime import date

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
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
from billing.csv_export import csv_lines
from billing.selectors import dashboard
from billing.selectors.budgets import alerts_all, budget_status_for, month_alert_history
from billing.selectors.invoices import invoices_for
from billing.selectors.lines import month_bill
from billing.selectors.reconciliation import coverage_summary


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


def _staff_only(request: HttpRequest) -> None:
    # 404, not 403: a client's user learns nothing about what else exists.
    if not request.user.is_staff:
        raise Http404("No such page")


def _with_current(months: list[date], month: date) -> list[date]:
    """The picker's months, plus the one shown (a month without data still shows)."""
    return sorted({*months, month}, reverse=True)


@login_required
@require_GET
def overview(request: HtmxHttpRequest) -> HttpResponse:
    _staff_only(request)
    now = timezone.now()
    day = today(now)
    month = month_param(request.GET.get("month"), today=day)
    clients = clients_for(request.user)
    data = dashboard.overview(
        clients,
        now=now,
        sort=request.GET.get("sort", "name"),
        month=month,
        name=request.GET.get("q", ""),
        status=request.GET.get("status", ""),
    )
    template = "billing/overview.html"
    if request.htmx:
        template += "#overview-table"
    months = _with_current(dashboard.months_with_data(clients, today=day), month)
    context = {
        "data": data,
        "months": months,
        "q": request.GET.get("q", ""),
        "status": request.GET.get("status", ""),
        # The one reconciliation line (the table fragment does not show it).
        "recon": None if request.htmx else coverage_summary(month),
    }
    return render(request, template, context)


@login_required
@require_GET
def overview_csv(request: HttpRequest) -> StreamingHttpResponse:
    """The overview's table as CSV: one row per client and the total row (staff only)."""
    _staff_only(request)
    now = timezone.now()
    month = month_param(request.GET.get("month"), today=today(now))
    data = dashboard.overview(
        clients_for(request.user),
        now=now,
        sort=request.GET.get("sort", "name"),
        month=month,
        name=request.GET.get("q", ""),
        status=request.GET.get("status", ""),
    )
    response = StreamingHttpResponse(
        csv_lines(dashboard.overview_table(data)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="overview-{month:%Y-%m}.csv"'
    return response


@login_required
@require_GET
def alerts_page(request: HttpRequest) -> HttpResponse:
    """Every alert across clients, newest first, with its deliveries (staff only)."""
    _staff_only(request)
    alerts = alerts_all(clients_for(request.user))
    return render(request, "billing/alerts.html", {"alerts": alerts})


@login_required
@require_GET
def client_detail(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    client = client_for(request.user, slug)
    now = timezone.now()  # read once: the month shown and its budget position agree
    day = today(now)
    month = month_param(request.GET.get("month"), today=day)
    bill = month_bill(client, month)
    data = dashboard.client_month(client, month=month, today=day, bill=bill)
    # Raw-event top lists: from the cache, or computed here only when asked (?top=1, the
    # no-JavaScript link); otherwise the page loads them through client_top_lists.
    top = dashboard.top_lists(
        client, month=month, watermark=data.watermark, compute=request.GET.get("top") == "1"
    )
    budget = budget_status_for(client, month, now=now, bill=bill)
    context = {
        "client": client,
        "data": data,
        "months": _with_current(data.months, month),
        "top": top,
        "show_cost": request.user.is_staff,
        # Markup, unpriced models, usage without a project: staff, or a client set to see them.
        "details": request.user.is_staff or client.show_pricing_details,
        "bill": bill,
        "budget": budget,
        "history": month_alert_history(client, budget),
        "spend_chart": charts.stacked_bars(data.days, data.daily_by_model),
        # Models with something billed: one without a rate has no bar (and is never $0).
        "legend": charts.legend(
            [name for name, values in data.daily_by_model.items() if any(values)]
        ),
        "prompt_chart": charts.line_chart(data.days, data.avg_prompt_tokens),
        "previous_month": shift_month(month, -1) if month > FIRST_MONTH else None,
        "next_month": shift_month(month, 1) if month < month_start(day) else None,
    }
    if request.htmx:
        return render(request, "billing/client_detail.html#month-body", context)
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
    context = {
        "client": client,
        "top": top,
        "show_cost": request.user.is_staff,
        "details": request.user.is_staff or client.show_pricing_details,
    }
    return render(request, "billing/client_detail.html#top-lists", context)
