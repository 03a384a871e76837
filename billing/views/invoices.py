"""Invoice downloads: the PDF, the lines CSV and the raw-event CSVs. Read-only.

Each view looks its client up through ``client_for`` (404 for another client's slug) and
the invoice within that client (404 for another client's invoice). These are the only way
to a PDF: the files are in private storage, which no URL serves. Every answer is an
attachment marked ``Cache-Control: private, no-store`` (never_cache), so no shared proxy
or browser cache keeps a copy. Agency staff see every
invoice, drafts included (rendered on the fly with a DRAFT mark); a client's user sees
only their own issued invoices, and never the agency's raw cost of an event. The PDF and
the lines CSV are the client's document, the same for staff; what they print follows the
client's pricing-details option (Client.show_pricing_details), frozen with the invoice.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from agency.calendar import MonthError, next_month, parse_month
from agency.models import Client
from agency.selectors import client_for
from billing.csv_export import csv_lines, event_csv, invoice_lines_rows
from billing.pdf import invoice_pdf_render
from billing.selectors.invoices import invoice_events, invoice_for, month_events
from tracking.partitions import months_archived


def _filename(invoice_number: str | None, pk: int) -> str:
    return invoice_number or f"draft-{pk}"


@never_cache
@login_required
@require_GET
def invoice_pdf(request: HttpRequest, slug: str, pk: int) -> HttpResponseBase:
    client = client_for(request.user, slug)
    invoice = invoice_for(client, pk, include_drafts=request.user.is_staff)
    name = f"{_filename(invoice.number, invoice.pk)}.pdf"
    if invoice.pdf:
        pdf = invoice.pdf.open("rb")
        return FileResponse(pdf, as_attachment=True, filename=name, content_type="application/pdf")
    response = HttpResponse(invoice_pdf_render(invoice), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@never_cache
@login_required
@require_GET
def invoice_lines_csv(request: HttpRequest, slug: str, pk: int) -> StreamingHttpResponse:
    client = client_for(request.user, slug)
    invoice = invoice_for(client, pk, include_drafts=request.user.is_staff)
    name = f"{_filename(invoice.number, invoice.pk)}-lines.csv"
    return _csv(csv_lines(invoice_lines_rows(invoice)), name)


@never_cache
@login_required
@require_GET
def invoice_events_csv(request: HttpRequest, slug: str, pk: int) -> HttpResponseBase:
    client = client_for(request.user, slug)
    invoice = invoice_for(client, pk, include_drafts=request.user.is_staff)
    months = {invoice.month, *invoice.lines.values_list("usage_month", flat=True)}
    if gone := _archived(months):
        return gone
    events = invoice_events(invoice)
    first = invoice.lines.order_by("usage_month").values_list("usage_month", flat=True).first()
    days = (first or invoice.month, next_month(invoice.month))
    lines = event_csv(events, client_id=client.pk, days=days, **_event_money(request, client))
    return _csv(lines, f"{_filename(invoice.number, invoice.pk)}-events.csv")


@never_cache
@login_required
@require_GET
def usage_month_csv(request: HttpRequest, slug: str, month: str) -> HttpResponseBase:
    client = client_for(request.user, slug)
    try:
        first_day = parse_month(month)
    except MonthError:
        raise Http404("No such month") from None
    if gone := _archived({first_day}):
        return gone
    events = month_events(client, first_day)
    days = (first_day, next_month(first_day))
    lines = event_csv(events, client_id=client.pk, days=days, **_event_money(request, client))
    return _csv(lines, f"{client.slug}-usage-{first_day:%Y-%m}.csv")


def _archived(months: Iterable[date | None]) -> HttpResponse | None:
    """410 for an export whose raw events were archived (tracking.partitions): an empty
    CSV would read as "no usage"."""
    archived = sorted(m for m in months if m is not None and m in months_archived())
    if not archived:
        return None
    names = ", ".join(f"{m:%Y-%m}" for m in archived)
    return HttpResponse(
        f"The events of {names} were archived and are no longer in ClientMeter's database; "
        "the agency keeps them in its archive files. Invoices and their lines CSV are "
        "unchanged.\n",
        status=410,
        content_type="text/plain; charset=utf-8",
    )


def _event_money(request: HttpRequest, client: Client) -> dict[str, bool]:
    """The raw-event exports are staff-only in part: staff also get each call's raw cost
    and markup. A client's user gets each call's billed price only if the client is set
    to see pricing details (one call's tokens and price give its unit prices away)."""
    staff = request.user.is_staff
    return {"show_cost": staff, "show_billed": staff or client.show_pricing_details}


def _csv(lines: Iterable[str | bytes], filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
