"""Writes about invoices: generate drafts from the rollups, finalize, send, pay, void.

Figures come from ``DailyRollup`` only (never from scanning raw events). The lines are
computed by ``billing.selectors.lines.invoice_lines_compute`` (the rule is described
there), the same code that gives the dashboards their estimates, so a page and the
invoice it turns into agree to the cent.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agency.calendar import local_day, month_start, next_month, previous_month
from agency.models import AgencyProfile, Client
from agency.money import ONE_HUNDRED, ZERO, round_money
from billing.models import (
    DailyRollup,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceNumberCounter,
    InvoiceStatus,
)
from billing.pdf import invoice_pdf_render
from billing.selectors.lines import (
    ISSUED_STATUSES,
    invoice_lines_compute,
)
from billing.services.rollups import rollups_rebuild_dirty
from tracking.models import ClosedPeriod

logger = logging.getLogger(__name__)


class InvoiceError(Exception):
    """An invoice operation that is not allowed in the invoice's current state."""


# --- totals ------------------------------------------------------------------------------


def invoice_totals(lines: list[InvoiceLine], tax_rate_pct: Decimal) -> dict[str, Decimal]:
    """Subtotal = sum of the rounded lines; tax = round_money(subtotal × rate) on the whole
    subtotal (one rounding, printed as its own row); total = subtotal + tax."""
    subtotal = sum((line.amount_usd for line in lines), ZERO)
    tax = round_money(subtotal * tax_rate_pct / ONE_HUNDRED) if tax_rate_pct > 0 else ZERO
    return {
        "raw_cost_usd": sum((line.raw_cost_usd for line in lines), ZERO),
        "subtotal_usd": subtotal,
        "tax_usd": tax,
        "total_usd": subtotal + tax,
    }


def _client_snapshot(client: Client) -> dict[str, Any]:
    return {
        "markup_pct": client.markup_pct,
        "tax_rate_pct": client.tax_rate_pct,
        "tax_label": client.tax_label or "Tax",
        # Pricing details off: amounts per line only, so no markup either (README).
        "show_markup": client.invoice_show_markup and client.show_pricing_details,
        "show_pricing_details": client.show_pricing_details,
        "invoice_note": client.invoice_note.strip(),
        "split_by_project": client.invoice_split_by_project,
        "client_name": client.name,
        "billing_name": client.billing_name or client.name,
        "billing_email": client.billing_email,
        "billing_address": client.billing_address,
        "billing_tax_id": client.billing_tax_id,
    }


def _agency_snapshot() -> dict[str, Any]:
    profile = AgencyProfile.load()
    return {
        "agency_name": profile.name,
        "agency_address": profile.address,
        "agency_tax_id": profile.tax_id,
        "agency_email": profile.email,
        "agency_logo": profile.logo.name,  # "" when there is none (the field is not null)
        "payment_terms_days": profile.payment_terms_days,
        "payment_instructions": profile.payment_instructions,
    }


# --- generation --------------------------------------------------------------------------


def rollups_refresh() -> None:
    """Bring the rollups up to date (late and re-priced events) before reading them."""
    rollups_rebuild_dirty()


@transaction.atomic
def invoice_generate(*, client_id: int, month: date, now: datetime | None = None) -> Invoice | None:
    """Create or replace the draft monthly invoice of a client for a month.

    Regenerating replaces the draft's lines; it never creates a second invoice (the
    client row lock serialises generations, and a unique constraint backs it). Returns
    None, deleting a stale draft, when there is nothing to bill. Raises InvoiceError if
    the month's invoice is already issued. Call ``rollups_refresh()`` first.
    """
    moment = now or timezone.now()
    # FOR NO KEY UPDATE: serialises generations of one client without blocking ingest
    # (an event insert takes FOR KEY SHARE on its client).
    client = Client.objects.select_for_update(no_key=True).get(pk=client_id)
    invoice = (
        Invoice.objects.select_for_update()
        .filter(client=client, month=month, kind=InvoiceKind.MONTHLY)
        .exclude(status=InvoiceStatus.VOID)
        .first()
    )
    if invoice is not None and not invoice.is_draft:
        raise InvoiceError(f"{invoice} is {invoice.status}; it cannot be regenerated")
    lines = invoice_lines_compute(
        client=client, month=month, exclude_invoice_id=invoice.pk if invoice else None
    )
    if not lines:
        if invoice is not None:
            invoice.delete()
        return None
    fields = {
        **_client_snapshot(client),
        **_agency_snapshot(),
        **invoice_totals(lines, client.tax_rate_pct),
        "unpriced_events": sum(line.unpriced_events for line in lines),
        "generated_at": moment,
    }
    if invoice is None:
        replaces = (
            Invoice.objects.filter(client=client, month=month, status=InvoiceStatus.VOID)
            .order_by("-voided_at")
            .first()
        )
        invoice = Invoice.objects.create(client=client, month=month, replaces=replaces, **fields)
    else:
        invoice.lines.all().delete()
        for name, value in fields.items():
            setattr(invoice, name, value)
        invoice.save()
    for line in lines:
        line.invoice = invoice
    InvoiceLine.objects.bulk_create(lines)
    return invoice


@dataclass
class RunResult:
    generated: int = 0
    skipped_issued: int = 0
    empty: int = 0
    invoice_ids: list[int] = field(default_factory=list)


def invoices_generate_month(
    *, month: date, client_slug: str | None = None, now: datetime | None = None
) -> RunResult:
    """Generate (or regenerate) the drafts of every client with something to bill for the
    month: usage in it, or late usage of an earlier invoiced month. Safe to run twice."""
    rollups_refresh()
    clients = Client.objects.order_by("pk")
    if client_slug:
        clients = clients.filter(slug=client_slug)
    else:
        with_usage = DailyRollup.objects.filter(day__gte=month, day__lt=next_month(month))
        # Earlier issued invoices: late usage to adjust. A draft of the month: it may have
        # become empty.
        invoiced = Invoice.objects.filter(
            Q(status__in=ISSUED_STATUSES, month__lt=month)
            | Q(status=InvoiceStatus.DRAFT, month=month)
        )
        clients = clients.filter(
            Q(pk__in=with_usage.values("client_id")) | Q(pk__in=invoiced.values("client_id"))
        )
    result = RunResult()
    for client_id in clients.values_list("pk", flat=True):
        try:
            invoice = invoice_generate(client_id=client_id, month=month, now=now)
        except InvoiceError:
            result.skipped_issued += 1
            continue
        if invoice is None:
            result.empty += 1
        else:
            result.generated += 1
            result.invoice_ids.append(invoice.pk)
    return result


# --- finalization ------------------------------------------------------------------------


def invoice_number(year: int, seq: int) -> str:
    return f"{settings.INVOICE_NUMBER_PREFIX}-{year}-{seq:05d}"


def _next_number(year: int) -> int:
    # The counter row is created if missing (ON CONFLICT DO NOTHING, so two first
    # finalizations of a year don't collide), then locked: concurrent finalizations
    # queue here and each sees the previous one's committed increment.
    InvoiceNumberCounter.objects.bulk_create(
        [InvoiceNumberCounter(year=year)], ignore_conflicts=True
    )
    counter = InvoiceNumberCounter.objects.select_for_update().get(year=year)
    counter.last_seq += 1
    counter.save(update_fields=["last_seq"])
    return counter.last_seq


def _write_pdf(invoice: Invoice, content: bytes, *, suffix: str = "") -> dict[str, str]:
    """Store ``content``, the invoice's PDF as it is now; its ``pdf`` and ``pdf_sha256``."""
    name = f"invoices/{invoice.year}/{invoice.number}{suffix}.pdf"
    stored = invoice.pdf.storage.save(name, ContentFile(content))
    return {"pdf": stored, "pdf_sha256": hashlib.sha256(content).hexdigest()}


def _store_pdf(invoice: Invoice) -> None:
    # The database lets a finalized invoice's PDF be set once, in the finalizing
    # transaction (migration 0007); after that it is frozen like everything printed.
    # A PDF prepared ahead for exactly this document (invoices_finalize_batch) is used.
    fields = _write_pdf(invoice, invoice_pdf_render(invoice, prepared=True))
    Invoice.objects.filter(pk=invoice.pk).update(**fields)
    invoice.pdf.name, invoice.pdf_sha256 = fields["pdf"], fields["pdf_sha256"]


def finalized_fields(invoice: Invoice, *, moment: datetime, seq: int) -> dict[str, Any]:
    """What finalizing ``invoice`` at ``moment`` with number ``seq`` of its year writes."""
    client = Client.objects.get(pk=invoice.client_id)
    today = local_day(moment)
    agency = _agency_snapshot()
    fields = {
        **_client_snapshot(client),
        **agency,
        "number": invoice_number(today.year, seq),
        "year": today.year,
        "seq": seq,
        "issue_date": today,
        "due_date": today + timedelta(days=agency["payment_terms_days"]),
        "status": InvoiceStatus.FINALIZED,
        "finalized_at": moment,
    }
    # The lines were computed at the draft's settings; keep those two flags as they were
    # so the printed layout matches the lines.
    fields.pop("split_by_project")
    fields.pop("tax_rate_pct")
    fields.pop("tax_label")
    return fields


@transaction.atomic
def invoice_finalize(*, invoice_id: int, now: datetime | None = None) -> Invoice:
    """Issue a draft: gapless number, frozen details, closed month, stored PDF.

    All in one transaction, so a failure (the PDF, say) leaves a draft and no gap in the
    numbering. Raises InvoiceError unless the invoice is a draft.
    """
    moment = now or timezone.now()
    invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
    if not invoice.is_draft:
        raise InvoiceError(f"{invoice} is {invoice.status}, not a draft")
    if not invoice.lines.exists():
        raise InvoiceError(f"{invoice} has no lines")
    seq = _next_number(local_day(moment).year)
    fields = finalized_fields(invoice, moment=moment, seq=seq)
    updated = Invoice.objects.filter(pk=invoice.pk, status=InvoiceStatus.DRAFT).update(**fields)
    if updated != 1:
        raise InvoiceError(f"{invoice} changed while finalizing")
    ClosedPeriod.objects.bulk_create(
        [ClosedPeriod(client_id=invoice.client_id, month=invoice.month)], ignore_conflicts=True
    )
    invoice.refresh_from_db()
    _store_pdf(invoice)
    return invoice


def invoice_is_due(invoice: Invoice, *, today: date) -> bool:
    """The grace period (settings.INVOICE_GRACE_DAYS) is over: counted from the end of the
    invoiced month, or from the day the draft was created if that is later, so a draft
    created late (the correction of a void invoice, say) still gets its days of review."""
    start = next_month(invoice.month)
    if invoice.created_at is not None:
        start = max(start, local_day(invoice.created_at))
    return today >= start + timedelta(days=settings.INVOICE_GRACE_DAYS)


@dataclass
class DueResult:
    refreshed: int = 0
    finalized: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    # PDFs the finalization job rendered itself, not ahead by a worker (see
    # billing.services.finalize).
    stragglers: list[int] = field(default_factory=list)


def invoices_finalize_due(*, now: datetime | None = None) -> DueResult:
    """Regenerate every draft of a past month (absorbing usage that arrived during the
    grace period), then finalize those whose grace period is over. Safe to run twice:
    a finalized invoice is no longer a draft."""
    moment = now or timezone.now()
    result, due = invoices_refresh_due(now=moment)
    for invoice_id in due:
        try:
            invoice_finalize(invoice_id=invoice_id, now=moment)
        except Exception:
            logger.exception("finalizing invoice %s failed", invoice_id)
            result.failed.append(invoice_id)
        else:
            result.finalized.append(invoice_id)
    return result


def invoices_refresh_due(*, now: datetime) -> tuple[DueResult, list[int]]:
    """Regenerate every draft of a past month; the ids of those past their grace period,
    in the order they are to be finalized."""
    today = local_day(now)
    this_month = month_start(today)
    rollups_refresh()
    result = DueResult()
    due = []
    drafts = Invoice.objects.filter(
        status=InvoiceStatus.DRAFT, kind=InvoiceKind.MONTHLY, month__lt=this_month
    ).order_by("month", "pk")
    for client_id, month in drafts.values_list("client_id", "month"):
        try:
            invoice = invoice_generate(client_id=client_id, month=month, now=now)
        except InvoiceError:
            continue
        if invoice is None:
            continue
        result.refreshed += 1
        if invoice_is_due(invoice, today=today):
            due.append(invoice.pk)
    return result, due


# --- after issue ---------------------------------------------------------------------------


def _move(invoice_id: int, *, allowed: tuple[str, ...], **fields: Any) -> Invoice:
    """A status change as a conditional UPDATE: it happens once, whoever races for it."""
    if Invoice.objects.filter(pk=invoice_id, status__in=allowed).update(**fields) != 1:
        status = Invoice.objects.filter(pk=invoice_id).values_list("status", flat=True).first()
        raise InvoiceError(f"invoice {invoice_id} is {status}; expected one of {allowed}")
    return Invoice.objects.select_related("client").get(pk=invoice_id)


@transaction.atomic
def invoice_send(*, invoice_id: int, now: datetime | None = None) -> Invoice:
    """Email the stored PDF to the client's billing address and mark the invoice sent.
    Sending again re-sends. If the mail fails, the status change rolls back."""
    current = Invoice.objects.get(pk=invoice_id)
    if not current.billing_email:
        raise InvoiceError(f"{current} has no billing email")
    invoice = _move(
        invoice_id,
        allowed=(InvoiceStatus.FINALIZED, InvoiceStatus.SENT),
        status=InvoiceStatus.SENT,
        sent_at=now or timezone.now(),
    )
    period = f"{invoice.month:%B %Y}"
    message = EmailMessage(
        subject=f"Invoice {invoice.number} from {invoice.agency_name} ({period})",
        body=(
            f"Dear {invoice.billing_name},\n\n"
            f"Please find attached invoice {invoice.number} for AI usage in {period}: "
            f"${invoice.total_usd:,.2f}, due {invoice.due_date:%d %B %Y}.\n\n"
            f"{invoice.payment_instructions}\n\n{invoice.agency_name}\n"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[invoice.billing_email],
        reply_to=[invoice.agency_email] if invoice.agency_email else None,
    )
    with invoice.pdf.open("rb") as handle:
        message.attach(f"{invoice.number}.pdf", handle.read(), "application/pdf")
    message.send(fail_silently=False)
    return invoice


@transaction.atomic
def invoice_mark_paid(
    *, invoice_id: int, paid_on: date | None = None, now: datetime | None = None
) -> Invoice:
    """Record the payment of an issued invoice: ``paid_on`` is the day it was received
    (default: today, agency time). Its PDF is re-rendered marked PAID, with that day and
    "Amount due $0.00"; the original file is kept, as voiding keeps it."""
    moment = now or timezone.now()
    if paid_on is not None and paid_on > local_day(moment):
        raise InvoiceError(f"a payment received on {paid_on} is in the future")
    allowed = (InvoiceStatus.FINALIZED, InvoiceStatus.SENT)
    invoice = Invoice.objects.select_for_update().select_related("client").get(pk=invoice_id)
    if invoice.status not in allowed:
        raise InvoiceError(f"invoice {invoice_id} is {invoice.status}; expected one of {allowed}")
    fields: dict[str, Any] = {
        "status": InvoiceStatus.PAID,
        "paid_at": moment,
        "paid_on": paid_on or local_day(moment),
    }
    for name, value in fields.items():
        setattr(invoice, name, value)
    return _move(
        invoice_id,
        allowed=allowed,
        **fields,
        **_write_pdf(invoice, invoice_pdf_render(invoice), suffix="-paid"),
    )


@transaction.atomic
def invoice_void(*, invoice_id: int, reason: str, now: datetime | None = None) -> Invoice:
    """Void an issued, unpaid invoice: it keeps its number, records the reason and its PDF
    is re-rendered with a VOID mark. Its month stays closed; generating the month again
    creates the correction, a new invoice that ``replaces`` this one."""
    if not reason.strip():
        raise InvoiceError("a void needs a reason")
    allowed = (InvoiceStatus.FINALIZED, InvoiceStatus.SENT)
    invoice = Invoice.objects.select_for_update().select_related("client").get(pk=invoice_id)
    if invoice.status not in allowed:
        raise InvoiceError(f"invoice {invoice_id} is {invoice.status}; expected one of {allowed}")
    # The VOID copy is rendered first and stored by the same UPDATE that voids: the
    # database lets the PDF change only together with that move.
    fields: dict[str, Any] = {
        "status": InvoiceStatus.VOID,
        "void_reason": reason.strip(),
        "voided_at": now or timezone.now(),
    }
    for name, value in fields.items():
        setattr(invoice, name, value)
    return _move(
        invoice_id,
        allowed=allowed,
        **fields,
        **_write_pdf(invoice, invoice_pdf_render(invoice), suffix="-void"),
    )


def previous_month_of(moment: datetime) -> date:
    """The month before the agency-local month of ``moment``: what the 1st invoices."""
    return previous_month(month_start(local_day(moment)))
