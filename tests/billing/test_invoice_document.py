"""The invoice a client receives: PAID and VOID, sub-rows that add up to their line,
"No project", one page when small, true footer wording, the client's note, the tax row in
the CSV, and amounts per line only unless the client is set to see pricing details."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from decimal import Decimal

import pytest
from django.http import StreamingHttpResponse
from django.urls import reverse

from agency.models import AgencyProfile, Client
from billing.csv_export import invoice_lines_rows
from billing.models import Invoice, InvoiceLine, InvoiceStatus
from billing.pdf import invoice_pdf_document, invoice_pdf_html, invoice_sections
from billing.services.invoices import (
    InvoiceError,
    invoice_finalize,
    invoice_mark_paid,
    invoice_void,
    invoices_generate_month,
)
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    ProjectFactory,
    StaffFactory,
    at,
    priced_event,
)
from tracking.buckets import Reach, cost_columns, token_columns

pytestmark = pytest.mark.django_db

OCT = date(2026, 10, 1)


def _usage(client: Client) -> None:
    bot = ProjectFactory.create(client=client, name="support-bot")
    for day, tokens in enumerate((1_234, 98_765, 4_321, 55_555, 7), start=2):
        priced_event(client, at=at(10, day), input_tokens=tokens, output_tokens=tokens // 3 + 1)
        priced_event(
            client, at=at(10, day, 5), model="claude-haiku-4-5", input_tokens=tokens * 7,
            output_tokens=tokens, project=bot,
        )  # fmt: skip


def _invoice(client: Client, time_machine) -> Invoice:
    _usage(client)
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoices_generate_month(month=OCT)
    return invoice_finalize(invoice_id=Invoice.objects.get(client=client).pk)


@pytest.fixture
def acme(acme: Client) -> Client:
    acme.show_pricing_details = True
    acme.invoice_split_by_project = True
    acme.save()
    return acme


@pytest.fixture
def issued(acme: Client, time_machine) -> Invoice:
    return _invoice(acme, time_machine)


def _usd(text: str) -> Decimal:
    return Decimal(text.replace("$", "").replace(",", "").replace("−", "-"))


def _text(html: str) -> str:
    """The words printed, without the markup of the HTML or its stylesheet."""
    html = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _csv_rows(invoice: Invoice) -> list[list[str]]:
    return [[str(v) for v in row] for row in invoice_lines_rows(invoice)]


# --- PAID and VOID ---------------------------------------------------------------------


def test_a_paid_invoice_says_paid_with_its_day_and_nothing_due(issued):
    paid = invoice_mark_paid(invoice_id=issued.pk, paid_on=date(2026, 11, 1))
    assert (paid.status, paid.paid_on) == (InvoiceStatus.PAID, date(2026, 11, 1))
    text = _text(invoice_pdf_html(paid))
    assert "PAID" in text
    assert "Paid on 1 Nov 2026" in text
    assert "Amount due $0.00" in text
    assert f"Total {paid.total_usd:,}" not in text  # the total is still printed, as total
    assert f"Amount due ${paid.total_usd:,.2f}" not in text


def test_marking_paid_stores_a_paid_copy_and_keeps_the_original(issued):
    original = issued.pdf.name
    paid = invoice_mark_paid(invoice_id=issued.pk)
    assert "INV-2026-00001-paid" in str(paid.pdf.name)
    assert paid.pdf.storage.exists(original)
    assert paid.paid_on == date(2026, 11, 1)  # today, agency time
    assert b"%PDF" in paid.pdf.open("rb").read(8)


def test_a_payment_cannot_be_received_in_the_future(issued):
    with pytest.raises(InvoiceError, match="in the future"):
        invoice_mark_paid(invoice_id=issued.pk, paid_on=date(2026, 11, 2))
    issued.refresh_from_db()
    assert issued.status == InvoiceStatus.FINALIZED


def test_the_lines_csv_of_a_paid_invoice_ends_with_the_payment(issued):
    paid = invoice_mark_paid(invoice_id=issued.pk, paid_on=date(2026, 11, 1))
    tail = [(row[2], row[4], row[-1]) for row in _csv_rows(paid)[-2:]]
    assert tail == [("paid", "Paid on 2026-11-01", f"{-paid.total_usd}"), ("amount_due", "", "0")]


def test_a_void_invoice_says_void_and_nothing_is_due(issued):
    void = invoice_void(invoice_id=issued.pk, reason="wrong address")
    text = _text(invoice_pdf_html(void))
    assert "VOID" in text
    assert "Amount due" not in text
    assert "PAID" not in text


# --- lines and sub-rows ----------------------------------------------------------------


def test_each_sub_row_shows_its_amount_and_they_add_up_to_the_line(issued):
    lines = [line for section in invoice_sections(issued) for line in section.lines]
    assert len(lines) == 2
    for line in lines:
        amounts = [_usd(detail.amount) for detail in line.details]
        assert len(amounts) == 2 and all(amounts)
        assert sum(amounts) == _usd(line.amount), line.description


def test_lines_without_a_project_say_no_project(issued):
    text = _text(invoice_pdf_html(issued))
    assert "Claude Sonnet 4.5 — No project" in text
    assert "untagged" not in text


def test_a_small_invoice_fits_on_one_page(issued):
    document = invoice_pdf_document(issued)
    assert len(document.pages) == 1


def test_five_models_with_every_kind_of_token_fit_on_one_page(acme):
    """The demo's smallest invoice: five models, each with all seven sub-rows, an agency
    address of four lines and payment instructions, pricing details on."""

    profile = AgencyProfile.load()
    profile.name, profile.address = "Northwind AI Agency", "12 Harbour Street\nBristol\nUK"
    profile.tax_id, profile.email = "GB 123 4567 89", "billing@northwind.example"
    profile.payment_instructions = "Bank transfer to IBAN GB00 NWBK 0000 0000 0000 00."
    profile.save()
    invoice = Invoice.objects.create(
        client=acme, month=OCT, show_pricing_details=True, agency_name=profile.name,
        agency_address=profile.address, agency_tax_id=profile.tax_id,
        agency_email=profile.email, payment_instructions=profile.payment_instructions,
        billing_name="Acme AP", billing_address="1 Main Street\nSpringfield",
        billing_email="ap@acme.example",
    )  # fmt: skip
    costs = {name: Decimal("0.50") for name in cost_columns(Reach.INVOICE)}
    costs["cost_discount_usd"] = Decimal("-0.20")
    for position in range(1, 6):
        InvoiceLine.objects.create(
            invoice=invoice, position=position, usage_month=OCT, provider="anthropic",
            model=f"claude-{position}", description=f"Claude {position}", events=500,
            **{name: 123_456 for name in token_columns(Reach.INVOICE)}, **costs,
            raw_cost_usd=Decimal("2.80"), billed_usd=Decimal("3.50"), amount_usd=Decimal("3.50"),
        )  # fmt: skip
    invoice.refresh_from_db()
    html = invoice_pdf_html(invoice)
    assert html.count('class="detail"') == 35
    assert len(invoice_pdf_document(invoice).pages) == 1


def test_the_footer_says_unit_prices_include_the_agencys_fee_when_markup_is_hidden(issued):
    text = _text(invoice_pdf_html(issued))
    assert "Unit prices are the provider's rates in effect on the day of each call, our" in text
    assert "markup" not in text.lower()


# --- the client's note and the tax row --------------------------------------------------


def test_the_clients_note_is_printed_on_the_pdf_and_in_the_csv(acme, time_machine):
    acme.invoice_note = "Reverse charge: VAT to be accounted for by the recipient."
    acme.save()
    invoice = _invoice(acme, time_machine)
    assert "Reverse charge: VAT to be accounted for by the recipient." in invoice_pdf_html(invoice)
    last = _csv_rows(invoice)[-1]
    assert (last[2], last[4]) == ("note", acme.invoice_note)


def test_the_note_is_frozen_with_the_invoice(issued, acme):
    acme.invoice_note = "Added later"
    acme.save()
    issued.refresh_from_db()
    assert issued.invoice_note == ""


def test_the_lines_csv_has_the_tax_row_the_pdf_prints_even_when_it_is_zero(acme, time_machine):
    # 0.001 % of a few dollars rounds to $0.00: the PDF still prints the tax row.
    acme.tax_rate_pct, acme.tax_label = Decimal("0.001"), "VAT"
    acme.save()
    invoice = _invoice(acme, time_machine)
    assert invoice.tax_usd == 0
    assert "VAT (0.001 %)" in invoice_pdf_html(invoice)
    kinds = [(row[2], row[4]) for row in _csv_rows(invoice)[-3:]]
    assert kinds == [("subtotal", ""), ("tax", "VAT (0.001 %)"), ("total", "")]


# --- pricing details: amounts per line only unless the client sees them ---------------


@pytest.fixture
def private(acme: Client, time_machine) -> Invoice:
    acme.show_pricing_details = False
    acme.invoice_show_markup = True  # refused without pricing details
    acme.save()
    return _invoice(acme, time_machine)


def test_without_pricing_details_the_pdf_shows_amounts_per_line_only(private):
    text = _text(invoice_pdf_html(private))
    assert "markup" not in text.lower()
    assert "/ MTok" not in text and "Unit price" not in text
    assert "Input" not in text and "Output" not in text
    assert "Provider cost" not in text
    for line in private.lines.all():
        assert f"{line.description} {line.events:,} calls ${line.amount_usd:,.2f}" in text


def test_without_pricing_details_the_invoice_shows_no_markup_whatever_the_client_says(private):
    assert (private.show_pricing_details, private.show_markup) == (False, False)


def test_without_pricing_details_the_pdf_keeps_the_unpriced_gaps_to_the_agency(acme, time_machine):
    acme.show_pricing_details = False
    acme.save()
    priced_event(acme, at=at(10, 9), model="claude-unknown-9")
    invoice = _invoice(acme, time_machine)
    assert invoice.unpriced_events == 1
    text = _text(invoice_pdf_html(invoice)).lower()
    assert "not yet priced" not in text and "without a published rate" not in text


def test_without_pricing_details_the_csv_has_amounts_per_line_only(private):
    header = _csv_rows(private)[0]
    assert header == [
        "invoice", "line", "kind", "usage_month", "description", "provider", "model",
        "project", "calls", "amount_usd",
    ]  # fmt: skip


def test_with_pricing_details_the_csv_has_tokens_and_billed_figures(issued):
    header = _csv_rows(issued)[0]
    assert {"input_tokens", "output_tokens", "billed_usd", "amount_usd"} <= set(header)
    assert "markup_pct" not in header


# --- who downloads what ----------------------------------------------------------------


def _body(response) -> str:
    if isinstance(response, StreamingHttpResponse):
        return b"".join(response.streaming_content).decode()  # type: ignore[arg-type]
    return response.content.decode()


def _urls(invoice: Invoice) -> dict[str, str]:
    kwargs = {"slug": "acme", "pk": invoice.pk}
    return {
        "lines": reverse("invoice_lines_csv", kwargs=kwargs),
        "events": reverse("invoice_events_csv", kwargs=kwargs),
        "month": reverse("usage_month_csv", kwargs={"slug": "acme", "month": "2026-10"}),
        "pdf": reverse("invoice_pdf", kwargs=kwargs),
    }


def test_the_clients_user_gets_amounts_only_in_every_csv(private, client):
    client.force_login(ClientMembershipFactory.create(client=private.client).user)
    urls = _urls(private)
    lines = _body(client.get(urls["lines"]))
    assert "markup" not in lines and "input_tokens" not in lines and "billed_usd" not in lines
    for name in ("events", "month"):
        header = next(csv.reader(io.StringIO(_body(client.get(urls[name])))))
        assert "billed_usd" not in header and "cost_usd" not in header, name
        assert "input_tokens" in header, name


def test_staff_get_the_clients_document_and_their_own_event_columns(private, client):
    client.force_login(StaffFactory.create())
    urls = _urls(private)
    assert _body(client.get(urls["lines"])) == "".join(
        ",".join(row) + "\r\n" for row in _csv_rows(private)
    )
    header = next(csv.reader(io.StringIO(_body(client.get(urls["events"])))))
    assert {"cost_usd", "markup_pct", "billed_usd"} <= set(header)


def test_a_clients_user_with_pricing_details_gets_the_billed_price_per_call(issued, client):
    client.force_login(ClientMembershipFactory.create(client=issued.client).user)
    header = next(csv.reader(io.StringIO(_body(client.get(_urls(issued)["events"])))))
    assert "billed_usd" in header and "cost_usd" not in header


def test_another_clients_user_is_refused_every_document(private, client):
    other = ClientFactory.create(slug="globex", show_pricing_details=True)
    client.force_login(ClientMembershipFactory.create(client=other).user)
    for name, url in _urls(private).items():
        assert client.get(url).status_code == 404, name


def test_anonymous_is_sent_to_sign_in(private, client):
    for name, url in _urls(private).items():
        assert client.get(url).status_code == 302, name
