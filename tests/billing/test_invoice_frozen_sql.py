"""An issued invoice is frozen in PostgreSQL itself (issue 10, item 7), whatever writes
to it: each test here goes around the app with raw SQL.

Everything printed is frozen (billing name and address, client name, tax label, markup
display, project split, year, sequence, number, PDF, money, agency details, lines); the
status only moves forward (finalized → sent → paid, finalized or sent → void); TRUNCATE
of the invoice tables is refused while they hold issued invoices.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from agency.models import Client
from billing.models import Invoice, InvoiceStatus
from billing.services.invoices import (
    invoice_finalize,
    invoice_mark_paid,
    invoice_send,
    invoice_void,
    invoices_generate_month,
)
from tests.factories import ClientFactory, priced_event

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="the freeze is PostgreSQL triggers; SQLite relies on the model guard",
    ),
]

OCT = date(2026, 10, 1)


def at(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


@pytest.fixture(autouse=True)
def private_root(tmp_path: Path, settings: Any) -> None:
    settings.PRIVATE_STORAGE_ROOT = tmp_path / "private"


@pytest.fixture
def acme(rates, time_machine) -> Client:
    time_machine.move_to(at(9, 20), tick=False)
    client: Client = ClientFactory.create(
        slug="acme", markup_pct=Decimal("25"), billing_email="ap@acme.example"
    )
    priced_event(client, at=at(10, 3))
    priced_event(client, at=at(10, 4), model="claude-haiku-4-5")
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoices_generate_month(month=OCT)
    return client


@pytest.fixture
def issued(acme) -> Invoice:
    return invoice_finalize(invoice_id=Invoice.objects.get(client=acme).pk)


def sql(statement: str, *params: Any) -> None:
    """Run raw SQL in a savepoint, so a refusal leaves the test's transaction usable."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)


def refused(statement: str, *params: Any, match: str) -> None:
    with pytest.raises(DatabaseError, match=match):
        sql(statement, *params)


def set_status(invoice: Invoice, status: str) -> None:
    sql("UPDATE billing_invoice SET status = %s WHERE id = %s", status, invoice.pk)


def test_resending_restamps_sent_at(issued):
    invoice_send(invoice_id=issued.pk)
    sql("UPDATE billing_invoice SET sent_at = now() WHERE id = %s", issued.pk)


# Every column an issued invoice prints or is identified by, with a different value.
FROZEN = {
    "billing_name": "'Someone Else'",
    "billing_address": "'1 Other Road'",
    "billing_email": "'x@example.com'",
    "billing_tax_id": "'XX-1'",
    "client_name": "'Renamed Inc'",
    "tax_label": "'GST'",
    "tax_rate_pct": "20",
    "show_markup": "NOT show_markup",
    "split_by_project": "NOT split_by_project",
    "markup_pct": "99",
    "year": "year + 1",
    "seq": "seq + 100",
    "number": "'INV-1999-00001'",
    "issue_date": "issue_date - 1",
    "due_date": "due_date + 30",
    "month": "month - 31",
    "client_id": "client_id",  # replaced per test by another client's id
    "kind": "'credit'",
    "replaces_id": "id",
    "pdf": "'invoices/forged.pdf'",
    "pdf_sha256": "'0000'",
    "raw_cost_usd": "raw_cost_usd + 1",
    "subtotal_usd": "subtotal_usd + 1",
    "tax_usd": "tax_usd + 1",
    "total_usd": "total_usd + 1",
    "unpriced_events": "unpriced_events + 1",
    "agency_name": "'Other Agency'",
    "agency_address": "'Elsewhere'",
    "agency_tax_id": "'T-9'",
    "agency_email": "'a@example.com'",
    "agency_logo": "'agency/other.png'",
    "payment_terms_days": "payment_terms_days + 1",
    "payment_instructions": "'Pay cash'",
    "finalized_at": "finalized_at - interval '1 day'",
    "generated_at": "generated_at - interval '1 day'",
    "created_at": "created_at - interval '1 day'",
    "void_reason": "'sneaky'",
    "voided_at": "now()",
    "paid_at": "now()",
    "paid_on": "'2001-01-01'",
    "show_pricing_details": "NOT show_pricing_details",
    "invoice_note": "'sneaky note'",
    "sent_at": "now()",
}


@pytest.mark.parametrize("status", ["finalized", "sent", "paid", "void"])
def test_every_column_of_an_issued_invoice_is_frozen(issued, status):
    if status != "finalized":
        {"sent": invoice_send, "paid": invoice_mark_paid}.get(status, _void)(invoice_id=issued.pk)
    other_client = ClientFactory.create()
    accepted, messages = [], set()
    for column, value in FROZEN.items():
        if (status, column) == ("sent", "sent_at"):
            continue  # sending again re-stamps it: see test_resending_restamps_sent_at
        if column == "client_id":
            value = str(other_client.pk)
        try:
            sql(f"UPDATE billing_invoice SET {column} = {value} WHERE id = %s", issued.pk)
        except DatabaseError as exc:
            messages.add(str(exc).splitlines()[0])
        else:
            accepted.append(column)
    assert accepted == []
    assert messages == {f"invoice {issued.number} is {status}: its figures are frozen"}


def _void(*, invoice_id: int) -> Invoice:
    return invoice_void(invoice_id=invoice_id, reason="wrong address")


def test_a_draft_may_still_change(acme):
    draft = Invoice.objects.get(client=acme)
    sql("UPDATE billing_invoice SET billing_name = 'Fixed' WHERE id = %s", draft.pk)
    sql("UPDATE billing_invoiceline SET amount_usd = 1 WHERE invoice_id = %s", draft.pk)
    draft.refresh_from_db()
    assert draft.billing_name == "Fixed"


@pytest.mark.parametrize(
    ("path", "back_to"),
    [
        ("finalized", "draft"),
        ("sent", "finalized"),
        ("sent", "draft"),
        ("paid", "sent"),
        ("paid", "finalized"),
        ("paid", "void"),
        ("void", "finalized"),
        ("void", "sent"),
        ("void", "paid"),
        ("void", "draft"),
    ],
)
def test_the_status_never_moves_back(issued, path, back_to):
    if path == "sent":
        invoice_send(invoice_id=issued.pk)
    elif path == "paid":
        invoice_mark_paid(invoice_id=issued.pk)
    elif path == "void":
        _void(invoice_id=issued.pk)
    refused(
        "UPDATE billing_invoice SET status = %s WHERE id = %s",
        back_to,
        issued.pk,
        match=f"invoice {issued.number} is {path}: it cannot become {back_to}",
    )
    issued.refresh_from_db()
    assert issued.status == path


def test_the_forward_moves_are_allowed_in_sql_too(issued):
    set_status(issued, "sent")
    set_status(issued, "paid")
    issued.refresh_from_db()
    assert issued.status == InvoiceStatus.PAID


def test_the_app_moves_a_finalized_invoice_forward_and_voids_it(issued):
    invoice_send(invoice_id=issued.pk)
    invoice_send(invoice_id=issued.pk)  # sending again moves sent_at only
    void = _void(invoice_id=issued.pk)
    assert void.status == InvoiceStatus.VOID
    assert void.pdf.name == f"invoices/2026/{issued.number}-void.pdf"
    assert void.pdf_sha256 != issued.pdf_sha256


def test_the_app_marks_paid_with_the_day_and_a_paid_copy_of_the_pdf(issued):
    invoice_send(invoice_id=issued.pk)
    paid = invoice_mark_paid(invoice_id=issued.pk, paid_on=date(2026, 11, 1))
    assert (paid.status, paid.paid_on) == (InvoiceStatus.PAID, date(2026, 11, 1))
    assert f"{issued.number}-paid" in str(paid.pdf.name)
    assert paid.pdf_sha256 != issued.pdf_sha256


def test_a_paid_invoice_keeps_its_paid_day(issued):
    invoice_mark_paid(invoice_id=issued.pk)
    refused(
        "UPDATE billing_invoice SET paid_on = paid_on + 1 WHERE id = %s",
        issued.pk,
        match="its figures are frozen",
    )


def test_the_pdf_of_an_issued_invoice_is_set_once(issued):
    refused(
        "UPDATE billing_invoice SET pdf = '' WHERE id = %s",
        issued.pk,
        match="its figures are frozen",
    )


def test_lines_of_an_issued_invoice_cannot_change_or_appear(issued):
    line = issued.lines.first()
    assert line is not None
    match = "the lines of a finalized invoice are frozen"
    refused("UPDATE billing_invoiceline SET amount_usd = 0 WHERE id = %s", line.pk, match=match)
    refused("DELETE FROM billing_invoiceline WHERE id = %s", line.pk, match=match)
    refused(
        "INSERT INTO billing_invoiceline (invoice_id, position, kind, usage_month, provider,"
        " model, project, description, events, unpriced_events, input_tokens,"
        " cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, output_tokens,"
        " web_search_requests, cost_input_usd, cost_output_usd, cost_cache_write_5m_usd,"
        " cost_cache_write_1h_usd, cost_cache_read_usd, cost_web_search_usd,"
        " cost_discount_usd, raw_cost_usd, billed_usd, amount_usd)"
        " SELECT invoice_id, 99, kind, usage_month, provider, model, project, 'extra', events,"
        " unpriced_events, input_tokens, cache_write_5m_tokens, cache_write_1h_tokens,"
        " cache_read_tokens, output_tokens, web_search_requests, cost_input_usd,"
        " cost_output_usd, cost_cache_write_5m_usd, cost_cache_write_1h_usd,"
        " cost_cache_read_usd, cost_web_search_usd, cost_discount_usd, raw_cost_usd,"
        " billed_usd, amount_usd FROM billing_invoiceline WHERE id = %s",
        line.pk,
        match=match,
    )


def test_a_drafts_line_cannot_be_moved_onto_an_issued_invoice(issued):
    other = ClientFactory.create(slug="globex")
    priced_event(other, at=at(10, 5))
    invoices_generate_month(month=OCT)
    draft = Invoice.objects.get(client=other)
    refused(
        "UPDATE billing_invoiceline SET invoice_id = %s WHERE invoice_id = %s",
        issued.pk,
        draft.pk,
        match="the lines of a finalized invoice are frozen",
    )


def test_an_issued_invoice_cannot_be_deleted(issued):
    refused(
        "DELETE FROM billing_invoice WHERE id = %s",
        issued.pk,
        match=f"invoice {issued.number} is finalized: it cannot be deleted",
    )


def truncate(tables: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        # The test settings allow TRUNCATE (the test runner wipes its database with it):
        # this is production's default. The test's own inserts have deferred foreign-key
        # checks pending, which TRUNCATE refuses to run past: run them now.
        cursor.execute("SET LOCAL clientmeter.allow_truncate = 'off'")
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"TRUNCATE {tables}")


@pytest.mark.parametrize(
    "tables",
    [
        "billing_invoiceline",
        "billing_invoice CASCADE",
        "billing_invoice, billing_invoiceline",
        "billing_invoicenumbercounter",
        "agency_client CASCADE",
    ],
)
def test_truncate_is_refused_while_issued_invoices_exist(issued, tables):
    with pytest.raises(DatabaseError, match="holds issued invoices: TRUNCATE refused"):
        truncate(tables)
    assert Invoice.objects.filter(pk=issued.pk).exists()
    assert issued.lines.exists()


def test_truncate_of_drafts_only_is_allowed(acme):
    truncate("billing_invoice, billing_invoiceline")
    assert not Invoice.objects.exists()
