"""The reconciliation page (staff only): the provider's books against what was tracked.

Client users get a 404 (they learn nothing about the agency's books), anonymous users
the login page. The htmx month picker swaps ``#recon-body`` like the client page's.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from agency.calendar import today
from billing import recon_outputs
from billing.views.dashboard import HtmxHttpRequest, _staff_only, month_param


@login_required
@require_GET
def reconciliation(request: HtmxHttpRequest) -> HttpResponse:
    _staff_only(request)
    day = today()
    month = month_param(request.GET.get("month"), today=day)
    # Our own rendering (recon_outputs.page_body), stored as UTF-8: safe as rendered.
    body = mark_safe(recon_outputs.page_output(month, day).decode())  # noqa: S308
    if request.htmx:
        return HttpResponse(body)
    return render(request, "billing/reconciliation.html", {"body": body})
