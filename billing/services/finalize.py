"""Finalizing many invoices at once, their PDFs rendered in parallel by the workers.

Numbers stay gapless because nothing about them changes: each invoice is still finalized
by ``invoice_finalize``, one transaction that takes the year's counter lock, writes the
number and the frozen figures, and stores the PDF. What moves out of that transaction is
the slow part, rendering the PDF, which the counter lock would otherwise serialize:

1. The due invoices are put in order and each is given the number it will get if they
   are finalized in that order (the counter's current value + its position).
2. One task per invoice (``billing.tasks.invoice_pdf_prepare_task``, on any worker)
   renders the PDF that invoice will have with those figures and keeps it in the cache
   under the hash of its HTML (``billing.pdf.invoice_pdf_prepare``), then marks it ready.
3. The job waits for them, rendering the ones still pending itself, from the end of the
   list (so it never waits on a queue it holds up: with one worker process it renders
   them all); those it rendered are reported as stragglers. Then it finalizes the
   invoices in that order. Each finalizing transaction renders the HTML (milliseconds)
   and uses the prepared PDF only if its hash is the same, i.e. the document printed
   would be identical (same number, dates, snapshots); otherwise (an invoice finalized
   meanwhile by someone else shifts the numbers) it renders the PDF itself, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from django.core.cache import cache
from django.utils import timezone

from agency.calendar import local_day
from billing.models import Invoice, InvoiceNumberCounter, InvoiceStatus
from billing.pdf import PREPARED_SECONDS, invoice_pdf_prepare
from billing.services.invoices import (
    DueResult,
    finalized_fields,
    invoice_finalize,
    invoices_refresh_due,
)

logger = logging.getLogger(__name__)

# prepare(invoice_id, seq, moment as ISO 8601): enqueue the PDF of one invoice.
Prepare = Callable[[int, int, str], object]


def invoice_as_finalized(invoice_id: int, *, seq: int, moment: datetime) -> Invoice | None:
    """The draft with the figures its finalization at ``moment`` as number ``seq`` would
    write, in memory only (nothing saved); None unless it is a draft."""
    invoice = Invoice.objects.select_related("client").filter(pk=invoice_id).first()
    if invoice is None or invoice.status != InvoiceStatus.DRAFT:
        return None
    for name, value in finalized_fields(invoice, moment=moment, seq=seq).items():
        setattr(invoice, name, value)
    return invoice


def _ready_key(invoice_id: int, seq: int, moment: datetime) -> str:
    return f"billing:pdf-ready:{invoice_id}:{seq}:{moment.isoformat()}"


def invoice_pdf_prepare_for(*, invoice_id: int, seq: int, moment: datetime) -> str | None:
    """Render ahead the PDF of a draft finalized as number ``seq`` at ``moment`` (the
    prepare task's work), then mark it ready for the job that waits. Returns the cache
    key of the PDF, None if the invoice is no draft."""
    invoice = invoice_as_finalized(invoice_id, seq=seq, moment=moment)
    if invoice is None:
        return None
    key = invoice_pdf_prepare(invoice)
    cache.set(_ready_key(invoice_id, seq, moment), key, PREPARED_SECONDS)
    return key


def invoices_finalize_batch(
    invoice_ids: list[int],
    *,
    prepare: Prepare,
    now: datetime | None = None,
    result: DueResult | None = None,
) -> DueResult:
    """Finalize these drafts in this order, their PDFs rendered ahead by ``prepare`` (one
    task per invoice); see the module's docstring. Returns what was finalized, what
    failed (left a draft) and the stragglers (PDF rendered by this job, not a worker)."""
    moment = now or timezone.now()
    result = result if result is not None else DueResult()
    year = local_day(moment).year
    base = (
        InvoiceNumberCounter.objects.filter(year=year).values_list("last_seq", flat=True).first()
        or 0
    )
    drafts = set(
        Invoice.objects.filter(pk__in=invoice_ids, status=InvoiceStatus.DRAFT).values_list(
            "pk", flat=True
        )
    )
    seqs: dict[int, int] = {}  # only drafts take a number, in the batch's order
    for invoice_id in invoice_ids:
        if invoice_id in drafts:
            seqs[invoice_id] = seq = base + len(seqs) + 1
            try:
                prepare(invoice_id, seq, moment.isoformat())
            except Exception:  # the broker is down: the job renders this one itself
                logger.exception("could not enqueue the PDF of invoice %s", invoice_id)
    # Wait for the workers, helping from the end of the list: the job never waits on
    # a queue it may itself be holding up (a single worker process runs this job).
    pending = list(seqs)
    while pending := [pk for pk in pending if not cache.has_key(_ready_key(pk, seqs[pk], moment))]:
        invoice_id = pending.pop()
        invoice_pdf_prepare_for(invoice_id=invoice_id, seq=seqs[invoice_id], moment=moment)
        result.stragglers.append(invoice_id)
    if result.stragglers:
        logger.info(
            "%s of %s invoice PDFs rendered by the finalization job itself, not ahead by "
            "a worker: %s",
            len(result.stragglers),
            len(seqs),
            result.stragglers,
        )
    for invoice_id in invoice_ids:
        try:
            invoice_finalize(invoice_id=invoice_id, now=moment)
        except Exception:
            logger.exception("finalizing invoice %s failed", invoice_id)
            result.failed.append(invoice_id)
        else:
            result.finalized.append(invoice_id)
    return result


def invoices_finalize_due_parallel(*, prepare: Prepare, now: datetime | None = None) -> DueResult:
    """``invoices_finalize_due`` with the PDFs rendered ahead over the workers: refresh
    past months' drafts, then finalize those past their grace period in one batch."""
    moment = now or timezone.now()
    result, due = invoices_refresh_due(now=moment)
    return invoices_finalize_batch(due, prepare=prepare, now=moment, result=result)
