"""Writes about invoices: generate drafts from the rollups, finalize, send, pay, void.

Figures come from ``DailyRollup`` only (never from scanning raw events). One rule computes
every line, for the invoiced month and for late usage of earlier months alike:

    line amount = round_money(current rollup billed for the key)
                  − amounts other live invoices already billed for that key

where a key is (usage month, provider, model[, project]). For the invoiced month nothing
else has billed it, so a line is simply its rounded billed amount. For an earlier, already
invoiced month the result is the late usage, as an adjustment line priced at that month's
rates and markup (the rollup rows carry both). Across all invoices the amounts billed for a
key always add up to the rounded billed amount of the key's events: nothing is billed
twice and nothing is lost, to the cent.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import Min, Q, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from agency.calendar import local_day, month_start, next_month, previous_month
from agency.db import ExactSum
from agency.models import AgencyProfile, Client
from agency.money import ONE_HUNDRED, ZERO, round_money
from billing.models import (
    DailyRollup,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceNumberCounter,
    InvoiceStatus,
)
from billing.pdf import invoice_pdf_render
from billing.services.rollups import rollups_rebuild_dirty
from tracking.buckets import Reach, cost_columns, token_columns
from tracking.models import ClosedPeriod, ModelRate

logger = logging.getLogger(__name__)

# What a line bills per bucket; its raw cost (the rollups' cost_usd) is raw_cost_usd.
TOKEN_FIELDS = token_columns(Reach.INVOICE)
COST_FIELDS = cost_columns(Reach.INVOICE)
# Invoices that bill something: everything but void ones.
LIVE_STATUSES = (
    InvoiceStatus.DRAFT, InvoiceStatus.FINALIZED, InvoiceStatus.SENT, InvoiceStatus.PAID,
)  # fmt: skip
ISSUED_STATUSES = (InvoiceStatus.FINALIZED, InvoiceStatus.SENT, InvoiceStatus.PAID)


class InvoiceError(Exception):
    """An invoice operation that is not allowed in the invoice's current state."""


Key = tuple[date, str, str, str]  # usage month, provider, model, project ('' when not split)


@dataclass
class Figures:
    """Summed quantities and unrounded money of one line key."""

    events: int = 0
    unpriced_events: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_FIELDS, 0))
    costs: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(COST_FIELDS, ZERO))
    raw_cost_usd: Decimal = ZERO
    billed_usd: Decimal = ZERO
    amount_usd: Decimal = ZERO  # already rounded amounts (billed side only)
    markups: set[Decimal] = field(default_factory=set)


# --- reading figures ---------------------------------------------------------------------


def _rollup_figures(client: Client, *, start: date, end: date) -> dict[Key, Figures]:
    """Rollup sums per key for the months in [start, end)."""
    group = ["usage_month", "provider", "model"]
    if client.invoice_split_by_project:
        group.append("project")
    rows = (
        DailyRollup.objects.filter(client=client, day__gte=start, day__lt=end)
        .annotate(usage_month=TruncMonth("day"))
        .values(*group, "markup_pct")
        .annotate(
            n_events=Sum("events"),
            n_unpriced=Sum("unpriced_events"),
            **{f"t_{name}": Sum(name) for name in TOKEN_FIELDS},
            **{f"c_{name}": ExactSum(name) for name in COST_FIELDS},
            raw=ExactSum("cost_usd"),
            billed=ExactSum("billed_usd"),
        )
    )
    figures: dict[Key, Figures] = defaultdict(Figures)
    for row in rows:
        month = row["usage_month"]
        month = month.date() if isinstance(month, datetime) else month
        key = (month, row["provider"], row["model"], row.get("project", ""))
        fig = figures[key]
        fig.events += row["n_events"] or 0
        fig.unpriced_events += row["n_unpriced"] or 0
        for name in TOKEN_FIELDS:
            fig.tokens[name] += row[f"t_{name}"] or 0
        for name in COST_FIELDS:
            fig.costs[name] += row[f"c_{name}"] or ZERO
        fig.raw_cost_usd += row["raw"] or ZERO
        fig.billed_usd += row["billed"] or ZERO
        fig.markups.add(row["markup_pct"])
    return figures


def _billed_figures(
    client: Client, *, start: date, end: date, exclude_invoice_id: int | None
) -> dict[Key, Figures]:
    """What other live invoices already bill per key, for usage months in [start, end)."""
    group = ["usage_month", "provider", "model"]
    if client.invoice_split_by_project:
        group.append("project")
    lines = InvoiceLine.objects.filter(
        invoice__client=client,
        invoice__status__in=LIVE_STATUSES,
        usage_month__gte=start,
        usage_month__lt=end,
    )
    if exclude_invoice_id is not None:
        lines = lines.exclude(invoice_id=exclude_invoice_id)
    rows = lines.values(*group).annotate(
        n_events=Sum("events"),
        n_unpriced=Sum("unpriced_events"),
        **{f"t_{name}": Sum(name) for name in TOKEN_FIELDS},
        **{f"c_{name}": ExactSum(name) for name in COST_FIELDS},
        raw=ExactSum("raw_cost_usd"),
        billed=ExactSum("billed_usd"),
        amount=ExactSum("amount_usd"),
    )
    figures: dict[Key, Figures] = {}
    for row in rows:
        fig = Figures(
            events=row["n_events"] or 0,
            unpriced_events=row["n_unpriced"] or 0,
            tokens={name: row[f"t_{name}"] or 0 for name in TOKEN_FIELDS},
            costs={name: row[f"c_{name}"] or ZERO for name in COST_FIELDS},
            raw_cost_usd=row["raw"] or ZERO,
            billed_usd=row["billed"] or ZERO,
            amount_usd=row["amount"] or ZERO,
        )
        figures[(row["usage_month"], row["provider"], row["model"], row.get("project", ""))] = fig
    return figures


def _adjustable_start(client: Client, month: date) -> date:
    """First month whose late usage may be adjusted on this month's invoice: the client's
    first issued monthly invoice (usage from before invoicing began is history, not debt)."""
    first = (
        Invoice.objects.filter(
            client=client, kind=InvoiceKind.MONTHLY, status__in=ISSUED_STATUSES, month__lt=month
        )
        .aggregate(first=Min("month"))
        .get("first")
    )
    return first or month


def _display_names() -> dict[tuple[str, str], str]:
    names: dict[tuple[str, str], str] = {}
    for provider, model, display in ModelRate.objects.order_by("effective_from").values_list(
        "provider", "model", "display_name"
    ):
        if display:
            names[(provider, model)] = display
    return names


def _line(
    key: Key,
    current: Figures,
    billed: Figures | None,
    *,
    invoice_month: date,
    split: bool,
    names: dict[tuple[str, str], str],
) -> InvoiceLine | None:
    """The line that bills what ``current`` holds beyond ``billed``; None if nothing."""
    month, provider, model, project = key
    billed = billed or Figures()
    amount = round_money(current.billed_usd) - billed.amount_usd
    tokens = {name: current.tokens[name] - billed.tokens[name] for name in TOKEN_FIELDS}
    events = current.events - billed.events
    if amount == ZERO and not any(tokens.values()) and events == 0:
        return None
    label = names.get((provider, model), model)
    markup = next(iter(current.markups)) if len(current.markups) == 1 else None
    return InvoiceLine(
        kind=InvoiceLineKind.USAGE if month == invoice_month else InvoiceLineKind.ADJUSTMENT,
        usage_month=month,
        provider=provider,
        model=model,
        project=project,
        description=f"{label} — {project or 'No project'}" if split else label,
        events=events,
        unpriced_events=current.unpriced_events - billed.unpriced_events,
        **tokens,
        **{name: current.costs[name] - billed.costs[name] for name in COST_FIELDS},
        raw_cost_usd=current.raw_cost_usd - billed.raw_cost_usd,
        markup_pct=markup,
        billed_usd=current.billed_usd - billed.billed_usd,
        amount_usd=amount,
    )


def invoice_lines_compute(
    *, client: Client, month: date, exclude_invoice_id: int | None = None
) -> list[InvoiceLine]:
    """Unsaved lines of ``client``'s invoice for ``month``: its own usage, then adjustments
    for late usage of earlier invoiced months that have no draft (or, once voided, no
    correction yet) of their own."""
    start = _adjustable_start(client, month)
    end = next_month(month)
    current = _rollup_figures(client, start=start, end=end)
    billed = _billed_figures(client, start=start, end=end, exclude_invoice_id=exclude_invoice_id)
    # An earlier month with a draft of its own absorbs its late usage there. So does a
    # month whose invoice was voided and awaits its correction: without this, the next
    # month's invoice would bill the whole voided month as "late usage".
    earlier = Invoice.objects.filter(client=client, kind=InvoiceKind.MONTHLY, month__lt=month)
    drafts = set(earlier.filter(status=InvoiceStatus.DRAFT).values_list("month", flat=True))
    voided = set(earlier.filter(status=InvoiceStatus.VOID).values_list("month", flat=True))
    live = set(earlier.filter(status__in=LIVE_STATUSES).values_list("month", flat=True))
    elsewhere = drafts | (voided - live)
    names = _display_names()
    lines = []
    for key in sorted(set(current) | set(billed)):
        if key[0] in elsewhere:
            continue
        line = _line(
            key,
            current.get(key, Figures()),
            billed.get(key),
            invoice_month=month,
            split=client.invoice_split_by_project,
            names=names,
        )
        if line is not None:
            lines.append(line)
    # Usage first, then adjustments by month; each by description.
    lines.sort(key=lambda ln: (ln.kind != InvoiceLineKind.USAGE, ln.usage_month, ln.description))
    for position, line in enumerate(lines, start=1):
        line.position = position
    return lines


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
        "agency_logo": profile.logo.name if profile.logo else "",
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


def _next_number(year: int) -> tuple[int, str]:
    # The counter row is created if missing (ON CONFLICT DO NOTHING, so two first
    # finalizations of a year don't collide), then locked: concurrent finalizations
    # queue here and each sees the previous one's committed increment.
    InvoiceNumberCounter.objects.bulk_create(
        [InvoiceNumberCounter(year=year)], ignore_conflicts=True
    )
    counter = InvoiceNumberCounter.objects.select_for_update().get(year=year)
    counter.last_seq += 1
    counter.save(update_fields=["last_seq"])
    return counter.last_seq, f"{settings.INVOICE_NUMBER_PREFIX}-{year}-{counter.last_seq:05d}"


def _write_pdf(invoice: Invoice, *, suffix: str = "") -> dict[str, str]:
    """Render and store the invoice's PDF as it is now; its ``pdf`` and ``pdf_sha256``."""
    content = invoice_pdf_render(invoice)
    name = f"invoices/{invoice.year}/{invoice.number}{suffix}.pdf"
    stored = invoice.pdf.storage.save(name, ContentFile(content))
    return {"pdf": stored, "pdf_sha256": hashlib.sha256(content).hexdigest()}


def _store_pdf(invoice: Invoice) -> None:
    # The database lets a finalized invoice's PDF be set once, in the finalizing
    # transaction (migration 0007); after that it is frozen like everything printed.
    fields = _write_pdf(invoice)
    Invoice.objects.filter(pk=invoice.pk).update(**fields)
    invoice.pdf.name, invoice.pdf_sha256 = fields["pdf"], fields["pdf_sha256"]


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
    client = Client.objects.get(pk=invoice.client_id)
    today = local_day(moment)
    seq, number = _next_number(today.year)
    agency = _agency_snapshot()
    fields = {
        **_client_snapshot(client),
        **agency,
        "number": number,
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


def invoices_finalize_due(*, now: datetime | None = None) -> DueResult:
    """Regenerate every draft of a past month (absorbing usage that arrived during the
    grace period), then finalize those whose grace period is over. Safe to run twice:
    a finalized invoice is no longer a draft."""
    moment = now or timezone.now()
    today = local_day(moment)
    this_month = month_start(today)
    rollups_refresh()
    result = DueResult()
    drafts = Invoice.objects.filter(
        status=InvoiceStatus.DRAFT, kind=InvoiceKind.MONTHLY, month__lt=this_month
    ).order_by("month", "pk")
    for client_id, month in drafts.values_list("client_id", "month"):
        try:
            invoice = invoice_generate(client_id=client_id, month=month, now=moment)
        except InvoiceError:
            continue
        if invoice is None:
            continue
        result.refreshed += 1
        if not invoice_is_due(invoice, today=today):
            continue
        try:
            invoice_finalize(invoice_id=invoice.pk, now=moment)
        except Exception:
            logger.exception("finalizing invoice %s failed", invoice.pk)
            result.failed.append(invoice.pk)
        else:
            result.finalized.append(invoice.pk)
    return result


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
    return _move(invoice_id, allowed=allowed, **fields, **_write_pdf(invoice, suffix="-paid"))


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
    return _move(invoice_id, allowed=allowed, **fields, **_write_pdf(invoice, suffix="-void"))


def previous_month_of(moment: datetime) -> date:
    """The month before the agency-local month of ``moment``: what the 1st invoices."""
    return previous_month(month_start(local_day(moment)))
