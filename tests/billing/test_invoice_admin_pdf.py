"""The invoice admin (read-only, actions) and what the PDF prints."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse

from agency.models import AgencyProfile, Client
from billing.models import Invoice, InvoiceStatus
from billing.pdf import invoice_pdf_html
from billing.services.invoices import invoice_finalize, invoice_void, invoices_generate_month
from tests.factories import ClientFactory, StaffFactory, at, priced_event

pytestmark = pytest.mark.django_db

OCT = date(2026, 10, 1)
_ONE_PIXEL_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.fixture
def acme(rates, time_machine) -> Client:
    time_machine.move_to(at(9, 20), tick=False)
    profile = AgencyProfile.load()
    profile.name, profile.address, profile.tax_id = "Northwind AI", "12 Harbour St", "GB 123"
    profile.payment_instructions = "IBAN GB00 0000"
    profile.save()
    client: Client = ClientFactory.create(
        slug="acme", billing_name="Acme AP", billing_address="1 Main St", billing_tax_id="US-77"
    )
    priced_event(client, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoices_generate_month(month=OCT)
    return client


@pytest.fixture
def draft(acme) -> Invoice:
    return Invoice.objects.get(client=acme)


@pytest.fixture
def staff_client(client):
    client.force_login(StaffFactory.create(is_superuser=True))
    return client


def test_admin_finalize_action_issues_the_draft(draft, staff_client):
    url = reverse("admin:billing_invoice_changelist")
    form = {"action": "finalize", "_selected_action": [draft.pk]}
    response = staff_client.post(url, form)
    # First a page to confirm: nothing is issued yet.
    assert response.status_code == 200
    assert b"Finalizing is irreversible" in response.content
    assert b"Yes, finalize 1 invoice" in response.content
    draft.refresh_from_db()
    assert (draft.status, draft.number) == (InvoiceStatus.DRAFT, None)
    response = staff_client.post(url, {**form, "confirm": "1"})
    assert response.status_code == 302
    draft.refresh_from_db()
    assert (draft.status, draft.number) == (InvoiceStatus.FINALIZED, "INV-2026-00001")


def test_admin_void_action_asks_for_a_reason_first(draft, staff_client):
    invoice = invoice_finalize(invoice_id=draft.pk)
    url = reverse("admin:billing_invoice_changelist")
    form = {"action": "void", "_selected_action": [invoice.pk]}
    response = staff_client.post(url, form)
    assert response.status_code == 200
    assert b"Reason" in response.content
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.FINALIZED
    staff_client.post(url, {**form, "confirm": "1", "void_reason": "Duplicate"})
    invoice.refresh_from_db()
    assert (invoice.status, invoice.void_reason) == (InvoiceStatus.VOID, "Duplicate")


def test_admin_change_page_of_an_issued_invoice_is_read_only(draft, staff_client):
    invoice = invoice_finalize(invoice_id=draft.pk)
    url = reverse("admin:billing_invoice_change", args=[invoice.pk])
    response = staff_client.get(url)
    assert response.status_code == 200
    assert b'name="total_usd"' not in response.content
    assert b'name="lines-0-amount_usd"' not in response.content
    staff_client.post(url, {"total_usd": "999", "status": "draft"})
    invoice.refresh_from_db()
    assert (invoice.total_usd, invoice.status) == (Decimal("0.01"), InvoiceStatus.FINALIZED)


def test_admin_cannot_delete_an_issued_invoice(draft, staff_client):
    invoice = invoice_finalize(invoice_id=draft.pk)
    url = reverse("admin:billing_invoice_delete", args=[invoice.pk])
    assert staff_client.get(url).status_code == 403


def test_pdf_prints_agency_client_number_dates_and_total(draft):
    html = invoice_pdf_html(invoice_finalize(invoice_id=draft.pk))
    for text in [
        "Northwind AI", "12 Harbour St", "Tax ID GB 123", "Acme AP", "1 Main St", "US-77",
        "INV-2026-00001", "1 Nov 2026", "1 Dec 2026", "1 Oct – 31 Oct 2026", "IBAN GB00 0000",
        "Claude Sonnet 4.5", "$0.01",
    ]:  # fmt: skip
        assert text in html, text


def test_pdf_hides_raw_cost_and_markup_by_default(draft):
    html = invoice_pdf_html(draft)
    assert "Provider cost" not in html
    assert "Markup" not in html


def test_pdf_shows_raw_cost_and_markup_when_the_client_wants(acme, draft):
    acme.invoice_show_markup = acme.show_pricing_details = True
    acme.save()
    html = invoice_pdf_html(invoice_finalize(invoice_id=draft.pk))
    assert "Provider cost" in html
    assert "25 %" in html


def test_void_pdf_carries_the_mark_and_the_reason(draft):
    invoice = invoice_finalize(invoice_id=draft.pk)
    html = invoice_pdf_html(invoice_void(invoice_id=invoice.pk, reason="Sent twice"))
    assert '<div class="watermark void">VOID</div>' in html
    assert "Sent twice" in html


def test_pdf_labels_adjustments_with_their_month(acme, draft, time_machine):
    invoice_finalize(invoice_id=draft.pk)
    time_machine.move_to(at(11, 10), tick=False)
    priced_event(acme, at=at(10, 30))
    priced_event(acme, at=at(11, 11))
    time_machine.move_to(at(12, 1, 2), tick=False)
    invoices_generate_month(month=date(2026, 11, 1))
    html = invoice_pdf_html(Invoice.objects.get(client=acme, month=date(2026, 11, 1)))
    assert "Usage in November 2026" in html
    assert "Usage from October 2026 received after invoicing" in html


def test_admin_regenerate_action_picks_up_new_usage(acme, draft, staff_client):
    priced_event(acme, at=at(10, 20), input_tokens=100_000)
    url = reverse("admin:billing_invoice_changelist")
    staff_client.post(url, {"action": "regenerate", "_selected_action": [draft.pk]})
    draft.refresh_from_db()
    assert draft.lines.get().events == 2
    assert Invoice.objects.count() == 1


def test_admin_send_and_paid_actions(acme, draft, staff_client, mailoutbox):
    acme.billing_email = "ap@acme.example"
    acme.save()
    invoice = invoice_finalize(invoice_id=draft.pk)
    url = reverse("admin:billing_invoice_changelist")
    staff_client.post(url, {"action": "send", "_selected_action": [invoice.pk]})
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.SENT
    assert [m.to for m in mailoutbox] == [["ap@acme.example"]]
    form = {"action": "mark_paid", "_selected_action": [invoice.pk]}
    assert b"Payment received on" in staff_client.post(url, form).content
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.SENT
    staff_client.post(url, {**form, "confirm": "1", "paid_on": "2026-10-30"})
    invoice.refresh_from_db()
    assert (invoice.status, invoice.paid_on) == (InvoiceStatus.PAID, date(2026, 10, 30))


def test_pdf_prints_the_agency_logo_and_the_amount_due(draft):
    from django.core.files.base import ContentFile

    profile = AgencyProfile.load()
    profile.logo.save("logo.png", ContentFile(_ONE_PIXEL_PNG))
    html = invoice_pdf_html(invoice_finalize(invoice_id=draft.pk))
    assert f'<img src="file://{profile.logo.path}"' in html
    assert '<tr class="due"><td>Amount due</td><td class="num">$0.01</td></tr>' in html
    assert ">1 call<" in html
