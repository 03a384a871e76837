"""The budget API, ``GET /api/v1/budget?client=SLUG[&month=YYYY-MM]``, and the
reconciliation API, ``GET /api/v1/reconciliation[?month=YYYY-MM]``.

Same bearer keys as ingest. A client's key sees only its own client (any other slug is a
404, the same answer as an unknown slug); an agency-wide key may ask about any client.
The reconciliation is the agency's own books: agency-wide keys only, a client's key gets
the 404 of a page that does not exist for it.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

import msgspec
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from agency.calendar import MonthError, current_month, parse_month
from agency.models import Client
from agency.money import round_money
from billing import recon_outputs
from billing.selectors.budgets import BudgetPosition, budget_status_for
from tracking import schema
from tracking.keys import api_error, api_key_required, rate_limit_hit
from tracking.schema import MONTH_RULE, Budget, BudgetQuery, NotPriced

_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else str(round_money(amount))


def _percent(value: Decimal | None) -> str | None:
    # One decimal for display; a ratio, not money, so not round_money.
    return None if value is None else str(value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def budget_payload(client: Client, position: BudgetPosition) -> Budget:
    return Budget(
        client=client.slug,
        month=position.month.strftime("%Y-%m"),
        budget_usd=_money(position.budget_usd),
        cost_usd=str(round_money(position.cost_usd)),
        billed_usd=str(round_money(position.billed_usd)),
        percent_used=_percent(position.percent_used),
        status=position.status,  # type: ignore[arg-type]  # a BudgetStatus value
        projected_billed_usd=(
            str(round_money(position.projected_billed_usd)) if position.projectable else None
        ),
        projected_status=(
            position.projected_status if position.projectable else None  # type: ignore[arg-type]
        ),
        unpriced_events=position.unpriced_events,
        billed_basis=position.billed_basis,  # type: ignore[arg-type]  # "invoice" | "estimate"
        not_priced=NotPriced(calls=position.unpriced_events) if position.unpriced_events else None,
    )


# Exempt so that a POST gets the API's JSON 405 below rather than the CSRF middleware's
# HTML 403; the view only ever reads, and authenticates by bearer key, never a cookie.
@csrf_exempt
def budget(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return api_error(405, "method_not_allowed", "Use GET.", headers={"Allow": "GET, HEAD"})
    return _budget(request)


@api_key_required
def _budget(request: HttpRequest) -> HttpResponse:
    key = request.api_key  # type: ignore[attr-defined]
    wait = rate_limit_hit(
        key, scope="budget", limit_per_minute=settings.INGEST_RATE_LIMIT_PER_MINUTE
    )
    if wait is not None:
        return api_error(
            429, "rate_limited", "Too many requests.", headers={"Retry-After": str(wait)}
        )
    slug = request.GET.get("client", "").strip()
    if not slug and key.client_id is not None:
        slug = key.client.slug
    if not slug:
        return api_error(400, "invalid", "Pass ?client=<slug>.", field="client")
    now = timezone.now()  # read once: the month and its budget position agree
    try:
        query = msgspec.convert(request.GET.dict(), BudgetQuery)
        month = parse_month(query.month) if query.month else current_month(now)
    except (msgspec.ValidationError, MonthError):
        return api_error(400, "invalid", MONTH_RULE, field="month")
    # Not a slug at all (e.g. a NUL byte, which PostgreSQL refuses in a query): no such client.
    client = Client.objects.filter(slug=slug).first() if _SLUG.match(slug) else None
    if client is None or (key.client_id is not None and key.client_id != client.pk):
        return api_error(404, "not_found", "No such client.")
    position = budget_status_for(client, month, now=now)
    return HttpResponse(
        msgspec.json.encode(budget_payload(client, position)), content_type="application/json"
    )


# --- reconciliation -------------------------------------------------------------------


@csrf_exempt  # see budget() above
def reconciliation(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return api_error(405, "method_not_allowed", "Use GET.", headers={"Allow": "GET, HEAD"})
    return _reconciliation(request)


@api_key_required
def _reconciliation(request: HttpRequest) -> HttpResponse:
    key = request.api_key  # type: ignore[attr-defined]
    if key.client_id is not None:
        return api_error(404, "not_found", "No such resource for this key.")
    wait = rate_limit_hit(
        key, scope="reconciliation", limit_per_minute=settings.INGEST_RATE_LIMIT_PER_MINUTE
    )
    if wait is not None:
        return api_error(
            429, "rate_limited", "Too many requests.", headers={"Retry-After": str(wait)}
        )
    try:
        query = msgspec.convert(request.GET.dict(), schema.ReconciliationQuery)
        month = parse_month(query.month) if query.month else current_month()
    except (msgspec.ValidationError, MonthError):
        return api_error(400, "invalid", MONTH_RULE, field="month")
    return HttpResponse(recon_outputs.api_output(month), content_type="application/json")
