"""Finalizing a batch with PDFs rendered ahead (billing.services.finalize): numbers stay
gapless and in order, a prepared PDF is used only for exactly its document, and the job
never depends on a worker to finish."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.cache import cache

from billing.models import Invoice, InvoiceStatus
from billing.pdf import invoice_pdf_html, prepared_key
from billing.services.finalize import (
    invoice_as_finalized,
    invoice_pdf_prepare_for,
    invoices_finalize_batch,
    invoices_finalize_due_parallel,
)
from billing.services.invoices import invoice_finalize, invoices_generate_month
from tests.factories import ClientFactory, priced_event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("rates", "private_cache")]

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def _drafts(count: int) -> list[int]:
    for i in range(count):
        client = ClientFactory.create(slug=f"c{i}", markup_pct=Decimal("10"))
        priced_event(client, at=datetime(2026, 10, 3 + i, 12, tzinfo=UTC))
    return invoices_generate_month(month=date(2026, 10, 1), now=NOW).invoice_ids


def _inline(invoice_id: int, seq: int, moment_iso: str) -> None:
    """A worker that runs each prepare task at once (what an eager Celery does)."""
    invoice_pdf_prepare_for(
        invoice_id=invoice_id, seq=seq, moment=datetime.fromisoformat(moment_iso)
    )


def _pdf_text(invoice: Invoice) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) reads the stored PDF")
    with invoice.pdf.open("rb") as handle:
        data = handle.read()
    return subprocess.run(
        ["pdftotext", "-", "-"], input=data, capture_output=True, check=True
    ).stdout.decode()


def test_prepared_pdfs_are_used_and_numbers_are_gapless_in_order():
    ids = _drafts(3)
    keys = []
    for position, invoice_id in enumerate(ids, start=1):
        invoice = invoice_as_finalized(invoice_id, seq=position, moment=NOW)
        assert invoice is not None
        keys.append(prepared_key(invoice_pdf_html(invoice)))

    result = invoices_finalize_batch(ids, prepare=_inline, now=NOW)

    assert result.finalized == ids and result.failed == [] and result.stragglers == []
    invoices = [Invoice.objects.get(pk=pk) for pk in ids]
    assert [i.number for i in invoices] == [f"INV-2026-{n:05d}" for n in (1, 2, 3)]
    assert all(i.status == InvoiceStatus.FINALIZED and i.pdf_sha256 for i in invoices)
    # Each prepared PDF was taken by its finalization (and only there).
    assert not any(cache.has_key(key) for key in keys)
    for invoice in invoices:
        assert invoice.number is not None and invoice.number in _pdf_text(invoice)


def test_without_any_worker_the_job_renders_every_pdf_itself_and_reports_them():
    ids = _drafts(3)
    result = invoices_finalize_batch(ids, prepare=lambda *args: None, now=NOW)
    assert result.finalized == ids
    assert sorted(result.stragglers) == sorted(ids)
    assert [Invoice.objects.get(pk=pk).seq for pk in ids] == [1, 2, 3]


def test_a_broker_that_refuses_tasks_still_finalizes_everything():
    ids = _drafts(2)

    def broker_down(*args: object) -> None:
        raise ConnectionError("redis is down")

    result = invoices_finalize_batch(ids, prepare=broker_down, now=NOW)
    assert result.finalized == ids and result.failed == []


def test_a_number_taken_meanwhile_makes_the_prepared_pdfs_unusable_never_wrong():
    """Another finalization between preparing and finalizing shifts every number: the
    prepared documents (printed with the old numbers) are not used; each invoice gets a
    PDF with its own number, still gapless."""
    ids = _drafts(4)
    intruder, batch = ids[0], ids[1:]
    prepared: list[tuple[int, int]] = []

    def prepare_then_intrude(invoice_id: int, seq: int, moment_iso: str) -> None:
        _inline(invoice_id, seq, moment_iso)
        prepared.append((invoice_id, seq))
        if len(prepared) == len(batch):
            invoice_finalize(invoice_id=intruder, now=NOW)  # takes number 1

    result = invoices_finalize_batch(batch, prepare=prepare_then_intrude, now=NOW)

    assert [seq for _, seq in prepared] == [1, 2, 3]
    assert result.finalized == batch
    assert set(Invoice.objects.values_list("seq", flat=True)) == {1, 2, 3, 4}
    for invoice_id in batch:
        invoice = Invoice.objects.get(pk=invoice_id)
        # Its own number only, never the one it was prepared with.
        assert set(re.findall(r"INV-2026-\d{5}", _pdf_text(invoice))) == {invoice.number}
        assert invoice.seq == dict(prepared)[invoice_id] + 1


def test_an_invoice_that_is_no_draft_takes_no_number_and_shifts_nothing():
    ids = _drafts(3)
    invoice_finalize(invoice_id=ids[0], now=NOW)  # number 1, outside the batch
    result = invoices_finalize_batch(ids, prepare=_inline, now=NOW)
    assert result.failed == [ids[0]]  # not a draft: refused, as before
    assert result.stragglers == []
    assert [Invoice.objects.get(pk=pk).seq for pk in ids] == [1, 2, 3]


def test_the_daily_job_finalizes_due_drafts_over_the_workers(settings):
    settings.INVOICE_GRACE_DAYS = 0
    ids = _drafts(2)
    result = invoices_finalize_due_parallel(prepare=_inline)  # drafts made today: due now
    assert sorted(result.finalized) == sorted(ids) and result.stragglers == []
    assert set(Invoice.objects.values_list("seq", flat=True)) == {1, 2}


def test_a_draft_finalized_elsewhere_while_the_job_waits_does_not_hang_it():
    ids = _drafts(2)

    def finalize_the_last_elsewhere(invoice_id: int, seq: int, moment_iso: str) -> None:
        if invoice_id == ids[-1]:
            invoice_finalize(invoice_id=invoice_id, now=NOW)  # never prepared, never will be

    result = invoices_finalize_batch(ids, prepare=finalize_the_last_elsewhere, now=NOW)
    assert result.finalized == [ids[0]] and result.failed == [ids[-1]]
    assert set(Invoice.objects.values_list("seq", flat=True)) == {1, 2}
