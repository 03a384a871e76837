"""Invoice generation, numbering, immutability, late-usage adjustments, rounding, tax, void."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core import mail
from django.core.management import call_command

from agency.money import apply_markup, round_money
from billing.models import (
    ImmutableInvoiceError,
    Invoice,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceStatus,
)
from billing.services.invoices import (
    InvoiceError,
    invoice_finalize,
    invoice_generate,
    invoice_mark_paid,
    invoice_send,
    invoice_void,
    invoices_finalize_due,
    invoices_generate_month,
)
from tests.clock import AGENCY_TZ
from tests.factories import ClientFactory, ProjectFactory, at, priced_event
from tracking.models import ClosedPeriod, ModelRate, UsageEvent
from tracking.rates import DEFAULT_RATES_CSV, model_rates_load
from tracking.services import dirty_days_mark, usage_events_reprice

pytestmark = pytest.mark.django_db

OCT = date(2026, 10, 1)
NOV = date(2026, 11, 1)
DEC = date(2026, 12, 1)


def generate(month: date) -> Invoice:
    result = invoices_generate_month(month=month)
    assert len(result.invoice_ids) == 1
    return Invoice.objects.get(pk=result.invoice_ids[0])


def test_generating_creates_a_draft_per_client_with_usage_only(acme, time_machine):
    idle = ClientFactory.create()
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    result = invoices_generate_month(month=OCT)
    assert result.generated == 1
    assert list(Invoice.objects.values_list("client_id", "status")) == [(acme.pk, "draft")]
    assert not Invoice.objects.filter(client=idle).exists()


def test_regenerating_twice_replaces_the_draft_and_never_duplicates(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    first = generate(OCT)
    first_line_ids = set(first.lines.values_list("pk", flat=True))
    second = generate(OCT)
    third = generate(OCT)
    assert first.pk == second.pk == third.pk
    assert Invoice.objects.count() == 1
    assert InvoiceLine.objects.count() == 1
    assert not first_line_ids & set(third.lines.values_list("pk", flat=True))
    assert third.total_usd == first.total_usd == Decimal("0.01")


def test_regenerating_a_draft_picks_up_new_usage(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    generate(OCT)
    priced_event(acme, at=at(10, 30), input_tokens=100_000)
    invoice = generate(OCT)
    # 0.006 + 0.303 raw, × 1.25 = 0.38625 → 0.39
    assert invoice.total_usd == Decimal("0.39")


def test_lines_are_grouped_by_model_display_name(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    priced_event(acme, at=at(10, 4))
    priced_event(acme, at=at(10, 4), model="claude-haiku-4-5-20251001")
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice = generate(OCT)
    lines = {line.description: line for line in invoice.lines.all()}
    assert set(lines) == {"Claude Sonnet 4.5", "Claude Haiku 4.5"}
    assert lines["Claude Sonnet 4.5"].events == 2
    assert lines["Claude Sonnet 4.5"].input_tokens == 2000


def test_lines_split_by_project_when_the_client_asks(acme, time_machine):
    acme.invoice_split_by_project = True
    acme.save()
    bot = ProjectFactory.create(client=acme, name="support-bot")
    priced_event(acme, at=at(10, 3), project=bot)
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice = generate(OCT)
    assert sorted(invoice.lines.values_list("description", flat=True)) == [
        # Words a client understands, not "untagged".
        "Claude Sonnet 4.5 — No project",
        "Claude Sonnet 4.5 — support-bot",
    ]


def test_thousands_of_sub_cent_events_round_once_per_line_half_up(acme, time_machine):
    # 3 input + 1 output token of Haiku: 3e-6 + 5e-6 = $0.000008 raw per call, far below
    # a cent. Rounded per event, the month would bill $0.00.
    template = priced_event(
        acme, at=at(10, 5), model="claude-haiku-4-5", input_tokens=3, output_tokens=1, save=False
    )
    assert template.cost_usd == Decimal("0.000008")
    events = []
    for i in range(2500):
        event = UsageEvent(
            **{
                f.attname: getattr(template, f.attname)
                for f in UsageEvent._meta.concrete_fields
                if f.attname != "id"
            }
        )
        event.event_id = f"tiny-{i}"
        event.occurred_at = at(10, 1 + i % 28, i % 24)
        events.append(event)
    UsageEvent.objects.bulk_create(events)
    dirty_days_mark({(acme.pk, e.occurred_at.date()) for e in events})
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice = generate(OCT)
    line = invoice.lines.get()
    # 2500 × 0.000008 = 0.02 raw; × 1.25 = 0.025 → half-up 0.03 (half-even would give 0.02)
    assert line.billed_usd == Decimal("0.025")
    assert line.amount_usd == Decimal("0.03")
    assert invoice.subtotal_usd == invoice.total_usd == Decimal("0.03")


def test_total_is_the_sum_of_rounded_lines(acme, time_machine):
    # Two lines of $0.0048 raw, $0.006 billed: each rounds to 0.01, so the total is 0.02,
    # where rounding the unrounded sum (0.012) would give 0.01.
    priced_event(acme, at=at(10, 3), input_tokens=1600, output_tokens=0)
    priced_event(acme, at=at(10, 3), model="claude-haiku-4-5", input_tokens=4800, output_tokens=0)
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice = generate(OCT)
    amounts = list(invoice.lines.values_list("amount_usd", flat=True))
    assert amounts == [round_money(line.billed_usd) for line in invoice.lines.all()]
    assert invoice.subtotal_usd == sum(amounts)
    unrounded = sum((line.billed_usd for line in invoice.lines.all()), Decimal(0))
    assert invoice.subtotal_usd != round_money(unrounded)


def test_tax_is_one_rounded_row_on_the_subtotal(acme, time_machine):
    acme.tax_rate_pct = Decimal("20")
    acme.tax_label = "VAT"
    acme.save()
    # Sonnet: 100,000 × $3/MTok = 0.30 raw, × 1.25 = 0.375 → 0.38.
    priced_event(acme, at=at(10, 3), input_tokens=100_000, output_tokens=0)
    # Haiku: 304,000 × $1 + 200 × $5 per MTok = 0.305 raw, × 1.25 = 0.38125 → 0.38.
    priced_event(acme, at=at(10, 3), model="claude-haiku-4-5", input_tokens=304_000)
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice = generate(OCT)
    assert sorted(invoice.lines.values_list("amount_usd", flat=True)) == [Decimal("0.38")] * 2
    # 20% of the 0.76 subtotal is 0.152 → 0.15; taxing each line would give 0.08 + 0.08.
    assert (invoice.subtotal_usd, invoice.tax_usd, invoice.total_usd) == (
        Decimal("0.76"),
        Decimal("0.15"),
        Decimal("0.91"),
    )
    assert (invoice.tax_label, invoice.tax_rate_pct) == ("VAT", Decimal("20"))


def test_no_tax_row_without_a_rate(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    assert generate(OCT).tax_usd == Decimal("0")


def test_finalizing_numbers_invoices_gaplessly_per_year(acme, time_machine, settings):
    settings.INVOICE_NUMBER_PREFIX = "NW"
    others = [ClientFactory.create() for _ in range(2)]
    for client in [acme, *others]:
        priced_event(client, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoices_generate_month(month=OCT)
    numbers = [
        invoice_finalize(invoice_id=pk).number
        for pk in Invoice.objects.order_by("pk").values_list("pk", flat=True)
    ]
    assert numbers == ["NW-2026-00001", "NW-2026-00002", "NW-2026-00003"]


def test_finalizing_snapshots_details_and_closes_the_month(acme, time_machine):
    from agency.models import AgencyProfile

    profile = AgencyProfile.load()
    profile.name, profile.payment_terms_days = "Northwind", 14
    profile.save()
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 4, 9), tick=False)
    invoice = invoice_finalize(invoice_id=generate(OCT).pk)
    assert invoice.status == InvoiceStatus.FINALIZED
    assert (invoice.issue_date, invoice.due_date) == (date(2026, 11, 4), date(2026, 11, 18))
    assert (invoice.agency_name, invoice.billing_name) == ("Northwind", "Acme Accounts Payable")
    assert ClosedPeriod.objects.filter(client=acme, month=OCT).exists()
    content = invoice.pdf.read()
    assert content.startswith(b"%PDF")
    assert hashlib.sha256(content).hexdigest() == invoice.pdf_sha256


def test_finalizing_twice_is_refused(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice = invoice_finalize(invoice_id=generate(OCT).pk)
    with pytest.raises(InvoiceError, match=r"^INV-2026-00001 is finalized, not a draft$"):
        invoice_finalize(invoice_id=invoice.pk)


def _snapshot(invoice: Invoice) -> tuple:
    invoice.refresh_from_db()
    lines = list(invoice.lines.order_by("position").values())
    return (invoice.subtotal_usd, invoice.total_usd, invoice.pdf_sha256, invoice.pdf.name, lines)


def test_finalized_invoice_never_changes_after_rate_markup_and_usage_changes(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice = invoice_finalize(invoice_id=generate(OCT).pk)
    before = _snapshot(invoice)
    # The rate of the events is corrected, the markup doubles, more October usage arrives.
    time_machine.move_to(at(11, 10), tick=False)
    result = model_rates_load(
        text=DEFAULT_RATES_CSV.read_text().replace(
            "Claude Sonnet 4.5,2025-09-29,3,15,", "Claude Sonnet 4.5,2025-09-29,30,150,"
        )
    )
    assert result.updated == 1
    usage_events_reprice(rate_ids=result.changed_rate_ids)
    acme.markup_pct = Decimal("50")
    acme.save()
    priced_event(acme, at=at(10, 20))
    with pytest.raises(InvoiceError, match=r"^INV-2026-00001 is finalized; it cannot be regen"):
        invoice_generate(client_id=acme.pk, month=OCT)
    invoices_generate_month(month=OCT)
    assert _snapshot(invoice) == before
    assert UsageEvent.objects.get(event_id__startswith="inv-", occurred_at=at(10, 3)).cost_usd == (
        Decimal("0.006")
    )


def test_model_guard_refuses_changing_a_finalized_invoice(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice = invoice_finalize(invoice_id=generate(OCT).pk)
    invoice.total_usd += 1
    invoice.subtotal_usd += 1
    with pytest.raises(
        ImmutableInvoiceError,
        match=r"^invoice INV-2026-00001 is finalized: refusing to change subtotal_usd, total_usd$",
    ):
        invoice.save()


def test_model_guard_refuses_changing_a_finalized_invoice_line(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice = invoice_finalize(invoice_id=generate(OCT).pk)
    line = invoice.lines.get()
    line.amount_usd = Decimal("99")
    with pytest.raises(ImmutableInvoiceError, match=r"^the lines of a finalized invoice cannot"):
        line.save()
    with pytest.raises(ImmutableInvoiceError, match=r"^the lines of a finalized invoice cannot"):
        line.delete()


def _finalized_october(acme, time_machine) -> Invoice:
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    return invoice_finalize(invoice_id=generate(OCT).pk)


def test_late_usage_lands_on_the_next_invoice_at_its_own_months_markup(acme, time_machine):
    _finalized_october(acme, time_machine)
    time_machine.move_to(at(11, 5), tick=False)
    acme.markup_pct = Decimal("100")
    acme.save()
    priced_event(acme, at=at(10, 30), input_tokens=100_000, output_tokens=0)  # $0.30, late
    priced_event(acme, at=at(11, 6), input_tokens=100_000, output_tokens=0)  # $0.30 raw
    time_machine.move_to(at(12, 1, 2), tick=False)
    november = generate(NOV)
    usage, adjustment = november.lines.order_by("position")
    assert (usage.kind, usage.usage_month, usage.amount_usd) == ("usage", NOV, Decimal("0.60"))
    assert (adjustment.kind, adjustment.usage_month) == (InvoiceLineKind.ADJUSTMENT, OCT)
    # October's 25 %, not November's 100 %: October's key now bills round(0.306 × 1.25)
    # = 0.38 in all, of which its invoice already billed 0.01.
    assert adjustment.billed_usd == Decimal("0.375")
    assert adjustment.amount_usd == Decimal("0.37")
    assert adjustment.input_tokens == 100_000
    assert november.total_usd == Decimal("0.97")


def test_adjustments_are_not_billed_twice(acme, time_machine):
    _finalized_october(acme, time_machine)
    time_machine.move_to(at(11, 5), tick=False)
    priced_event(acme, at=at(10, 30), input_tokens=100_000, output_tokens=0)
    priced_event(acme, at=at(11, 6))
    time_machine.move_to(at(12, 1, 2), tick=False)
    generate(NOV)
    november = invoice_finalize(invoice_id=generate(NOV).pk)
    assert november.lines.filter(kind=InvoiceLineKind.ADJUSTMENT).count() == 1
    priced_event(acme, at=at(12, 2))
    time_machine.move_to(at(12, 31), tick=False)
    december = generate(DEC)
    assert not december.lines.filter(kind=InvoiceLineKind.ADJUSTMENT).exists()


def test_late_usage_during_the_grace_period_is_absorbed_by_the_draft(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    draft = generate(OCT)
    time_machine.move_to(at(11, 2), tick=False)
    priced_event(acme, at=at(10, 31), input_tokens=100_000, output_tokens=0)
    time_machine.move_to(at(11, 4, 3), tick=False)
    result = invoices_finalize_due()
    draft.refresh_from_db()
    assert result.finalized == [draft.pk]
    assert draft.total_usd == Decimal("0.38")  # (0.006 + 0.3) × 1.25 = 0.3825


def test_drafts_wait_for_the_grace_period(acme, time_machine, settings):
    settings.INVOICE_GRACE_DAYS = 3
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    draft = generate(OCT)
    time_machine.move_to(at(11, 3, 23), tick=False)
    assert invoices_finalize_due().finalized == []
    time_machine.move_to(at(11, 4, 0), tick=False)
    assert invoices_finalize_due().finalized == [draft.pk]
    assert invoices_finalize_due().finalized == []


def test_finalized_totals_equal_the_events_raw_cost_plus_markup_per_line(acme, time_machine):
    """The invariant: per line key, what all issued invoices bill for a month equals the
    month's events' raw cost × (1 + markup), rounded once — late usage included."""
    other = ClientFactory.create(markup_pct=Decimal("17.5"))
    models = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
    for i in range(60):
        client = acme if i % 3 else other
        priced_event(
            client,
            at=at(10, 1 + i % 30, i % 24),
            model=models[i % 3],
            input_tokens=137 * i + 11,
            output_tokens=59 * i + 3,
        )
    time_machine.move_to(at(11, 1, 2), tick=False)
    for pk in invoices_generate_month(month=OCT).invoice_ids:
        invoice_finalize(invoice_id=pk)
    time_machine.move_to(at(11, 10), tick=False)
    for i in range(7):  # late October usage, and November usage
        priced_event(acme, at=at(10, 2 + i), model=models[i % 3], input_tokens=5003 * i + 1)
        priced_event(other, at=at(11, 2 + i), input_tokens=999 * i + 7)
    time_machine.move_to(at(12, 1, 2), tick=False)
    for pk in invoices_generate_month(month=NOV).invoice_ids:
        invoice_finalize(invoice_id=pk)

    expected: dict[tuple, Decimal] = defaultdict(Decimal)
    for event in UsageEvent.objects.filter(occurred_at__lt=datetime(2026, 11, 1, tzinfo=AGENCY_TZ)):
        client = acme if event.client_id == acme.pk else other
        assert event.rate is not None and event.cost_usd is not None
        expected[(event.client_id, event.rate.model)] += apply_markup(
            event.cost_usd, client.markup_pct
        )
    billed: dict[tuple, Decimal] = defaultdict(Decimal)
    for line in InvoiceLine.objects.filter(usage_month=OCT, invoice__status="finalized"):
        billed[(line.invoice.client_id, line.model)] += line.amount_usd
    assert billed == {key: round_money(value) for key, value in expected.items()}
    assert InvoiceLine.objects.filter(usage_month=OCT, kind="adjustment").count() == 3


def test_void_keeps_number_and_reason_and_rerenders_the_pdf(acme, time_machine):
    invoice = _finalized_october(acme, time_machine)
    original_hash = invoice.pdf_sha256
    voided = invoice_void(invoice_id=invoice.pk, reason="Wrong billing address")
    assert (voided.status, voided.number) == (InvoiceStatus.VOID, invoice.number)
    assert voided.void_reason == "Wrong billing address"
    assert voided.pdf_sha256 != original_hash
    assert hashlib.sha256(voided.pdf.read()).hexdigest() == voided.pdf_sha256


def test_the_correction_of_a_void_invoice_is_a_new_invoice_that_replaces_it(acme, time_machine):
    invoice = _finalized_october(acme, time_machine)
    invoice_void(invoice_id=invoice.pk, reason="Wrong address")
    correction = invoice_finalize(invoice_id=generate(OCT).pk)
    assert correction.pk != invoice.pk
    assert correction.replaces_id == invoice.pk
    assert correction.number == "INV-2026-00002"
    assert correction.total_usd == invoice.total_usd


def test_void_needs_a_reason(acme, time_machine):
    invoice = _finalized_october(acme, time_machine)
    with pytest.raises(InvoiceError, match=r"^a void needs a reason$"):
        invoice_void(invoice_id=invoice.pk, reason="  ")


def test_a_draft_cannot_be_voided_or_sent(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    draft = generate(OCT)
    refused = rf"^invoice {draft.pk} is draft; expected one of \(InvoiceStatus.FINALIZED, "
    with pytest.raises(InvoiceError, match=refused):
        invoice_void(invoice_id=draft.pk, reason="no")
    with pytest.raises(InvoiceError, match=refused):
        invoice_send(invoice_id=draft.pk)


def test_sending_emails_the_pdf_and_marks_sent(acme, time_machine):
    invoice = _finalized_october(acme, time_machine)
    sent = invoice_send(invoice_id=invoice.pk)
    assert sent.status == InvoiceStatus.SENT
    (message,) = mail.outbox
    assert message.to == ["ap@acme.example"]
    assert str(invoice.number) in str(message.subject)
    name, content, mimetype = message.attachments[0]
    assert (name, mimetype) == (f"{invoice.number}.pdf", "application/pdf")
    assert hashlib.sha256(content).hexdigest() == invoice.pdf_sha256


def test_paid_invoice_cannot_be_paid_again(acme, time_machine):
    invoice = _finalized_october(acme, time_machine)
    assert invoice_mark_paid(invoice_id=invoice.pk).status == InvoiceStatus.PAID
    with pytest.raises(
        InvoiceError,
        match=rf"^invoice {invoice.pk} is paid; expected one of \(InvoiceStatus.FINALIZED, ",
    ):
        invoice_mark_paid(invoice_id=invoice.pk)


def test_no_usage_deletes_a_stale_draft(acme, time_machine):
    event = priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    generate(OCT)
    event.delete()
    dirty_days_mark([(acme.pk, date(2026, 10, 3))])
    invoices_generate_month(month=OCT)
    assert not Invoice.objects.exists()


def test_generate_and_finalize_commands(acme, time_machine, capsys):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    call_command("generate_invoices", "--month", "2026-10", "--client", "acme")
    call_command("generate_invoices", "--month", "2026-10")
    call_command("finalize_invoices", "--month", "2026-10", "--client", "acme")
    out = capsys.readouterr().out
    assert "1 draft(s) generated" in out
    assert "INV-2026-00001: Acme Corp $0.01" in out
    assert Invoice.objects.get().status == InvoiceStatus.FINALIZED


def test_display_name_falls_back_to_the_model_id(acme, time_machine):
    ModelRate.objects.filter(model="claude-sonnet-4-5").update(display_name="")
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    assert generate(OCT).lines.get().description == "claude-sonnet-4-5"


def test_invoice_months_follow_the_agency_time_zone(acme, time_machine, settings):
    settings.TIME_ZONE = "America/New_York"
    priced_event(acme, at=datetime(2026, 11, 1, 3, tzinfo=UTC))  # 23:00 on 31 October in NY
    time_machine.move_to(at(11, 2), tick=False)
    october = generate(OCT)
    assert october.lines.get().events == 1
    assert invoices_generate_month(month=NOV).generated == 0


def test_next_month_leaves_a_voided_month_to_its_correction(acme, time_machine):
    priced_event(acme, at=at(9, 25))  # September invoiced first: adjustments reach back
    time_machine.move_to(at(10, 1, 2), tick=False)
    invoice_finalize(invoice_id=generate(date(2026, 9, 1)).pk)
    october = _finalized_october(acme, time_machine)
    time_machine.move_to(at(11, 20), tick=False)
    invoice_void(invoice_id=october.pk, reason="Wrong billing address")
    priced_event(acme, at=at(11, 21))
    time_machine.move_to(at(12, 1, 2), tick=False)
    november = generate(NOV)
    # Not October's whole usage again, as "received after invoicing": that is the
    # correction's to bill.
    assert list(november.lines.values_list("kind", "usage_month")) == [("usage", NOV)]
    correction = generate(OCT)
    assert (correction.replaces_id, correction.total_usd) == (october.pk, october.total_usd)


def test_a_draft_created_late_gets_its_own_grace_period(acme, time_machine, settings):
    settings.INVOICE_GRACE_DAYS = 3
    october = _finalized_october(acme, time_machine)
    time_machine.move_to(at(11, 20), tick=False)
    invoice_void(invoice_id=october.pk, reason="Wrong billing address")
    correction = generate(OCT)
    time_machine.move_to(at(11, 22, 3), tick=False)
    assert invoices_finalize_due().finalized == []
    time_machine.move_to(at(11, 23, 3), tick=False)
    assert invoices_finalize_due().finalized == [correction.pk]


def test_a_failed_email_leaves_the_invoice_finalized(acme, time_machine, monkeypatch):
    from django.core.mail.backends.locmem import EmailBackend

    def refuse(self, messages):
        raise ConnectionRefusedError("smtp down")

    monkeypatch.setattr(EmailBackend, "send_messages", refuse)
    invoice = _finalized_october(acme, time_machine)
    with pytest.raises(ConnectionRefusedError, match=r"^smtp down$"):
        invoice_send(invoice_id=invoice.pk)
    invoice.refresh_from_db()
    assert (invoice.status, invoice.sent_at) == (InvoiceStatus.FINALIZED, None)


def test_sending_without_a_billing_email_is_refused(acme, time_machine):
    acme.billing_email = ""
    acme.save()
    invoice = _finalized_october(acme, time_machine)
    with pytest.raises(InvoiceError, match="no billing email"):
        invoice_send(invoice_id=invoice.pk)
    assert mail.outbox == []


def test_generate_command_refuses_an_unknown_client(acme, time_machine):
    from django.core.management.base import CommandError

    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    with pytest.raises(CommandError, match="no client 'acme-typo'"):
        call_command("generate_invoices", "--month", "2026-10", "--client", "acme-typo")
    assert not Invoice.objects.exists()


# --- what each line carries, and which lines there are ---------------------------------


def _lines(invoice: Invoice) -> list[tuple]:
    return list(
        invoice.lines.order_by("position").values_list(
            "position", "kind", "usage_month", "description", "amount_usd"
        )
    )


def test_late_usage_of_a_split_client_is_one_adjustment_line_per_project(acme, time_machine):
    acme.invoice_split_by_project = True
    acme.save()
    bot, web, idle = (ProjectFactory.create(client=acme, name=n) for n in ("bot", "web", "idle"))
    for project in (bot, web, idle):
        priced_event(acme, at=at(10, 3), project=project)  # $0.006 raw, billed 0.0075 → 0.01
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice_finalize(invoice_id=generate(OCT).pk)
    time_machine.move_to(at(11, 5), tick=False)
    priced_event(acme, at=at(10, 30), project=bot, input_tokens=100_000, output_tokens=0)
    priced_event(acme, at=at(10, 30), project=web, input_tokens=200_000, output_tokens=0)
    priced_event(acme, at=at(11, 6), project=bot)
    time_machine.move_to(at(12, 1, 2), tick=False)

    november = generate(NOV)

    # October's bot key now bills round(0.306 × 1.25) = 0.38, of which 0.01 was invoiced;
    # web's round(0.606 × 1.25) = 0.76 less 0.01. Idle had no late usage: no line.
    assert _lines(november) == [
        (1, "usage", NOV, "Claude Sonnet 4.5 — bot", Decimal("0.01")),
        (2, "adjustment", OCT, "Claude Sonnet 4.5 — bot", Decimal("0.37")),
        (3, "adjustment", OCT, "Claude Sonnet 4.5 — web", Decimal("0.75")),
    ]
    assert november.total_usd == Decimal("1.13")


def test_an_adjustment_line_carries_only_the_late_quantities(acme, time_machine):
    priced_event(acme, at=at(10, 3))  # 1,000 in × $3/M + 200 out × $15/M = 0.003 + 0.003
    priced_event(acme, at=at(10, 3), model="claude-next-9")  # no rate: unpriced
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice_finalize(invoice_id=generate(OCT).pk)
    time_machine.move_to(at(11, 5), tick=False)
    priced_event(acme, at=at(10, 30), input_tokens=100_000, output_tokens=0)  # 0.30 input
    priced_event(acme, at=at(10, 30), model="claude-next-9", input_tokens=7, output_tokens=3)
    priced_event(acme, at=at(11, 6))
    time_machine.move_to(at(12, 1, 2), tick=False)

    november = generate(NOV)

    fields = (
        "position", "kind", "usage_month", "description", "events", "unpriced_events",
        "input_tokens", "output_tokens", "cost_input_usd", "cost_output_usd", "raw_cost_usd",
        "billed_usd", "amount_usd",
    )  # fmt: skip
    assert list(november.lines.order_by("position").values_list(*fields)) == [
        (1, "usage", NOV, "Claude Sonnet 4.5", 1, 0, 1000, 200,
         Decimal("0.003"), Decimal("0.003"), Decimal("0.006"), Decimal("0.0075"), Decimal("0.01")),
        # October's Sonnet key: 0.306 raw, billed 0.3825 → 0.38, less the 0.01 invoiced.
        (2, "adjustment", OCT, "Claude Sonnet 4.5", 1, 0, 100_000, 0,
         Decimal("0.3"), Decimal("0"), Decimal("0.3"), Decimal("0.375"), Decimal("0.37")),
        (3, "adjustment", OCT, "claude-next-9", 1, 1, 7, 3,
         Decimal("0"), Decimal("0"), Decimal("0"), Decimal("0"), Decimal("0")),
    ]  # fmt: skip
    assert november.unpriced_events == 1


@pytest.mark.parametrize(("rate", "tax"), [("1", "0.13"), ("0.5", "0.06"), ("0.25", "0.03")])
def test_a_tax_rate_of_one_percent_or_less_is_still_charged(acme, time_machine, rate, tax):
    acme.tax_rate_pct = Decimal(rate)
    acme.save()
    # 10M × $1/M + 200 × $5/M = 10.001 raw, × 1.25 = 12.50125 → 12.50.
    priced_event(acme, at=at(10, 3), model="claude-haiku-4-5", input_tokens=10_000_000)
    time_machine.move_to(at(11, 1, 2), tick=False)

    invoice = generate(OCT)

    # 1% of 12.50 is 0.125 → 0.13; 0.5% is 0.0625 → 0.06; 0.25% is 0.03125 → 0.03.
    assert (invoice.subtotal_usd, invoice.tax_usd) == (Decimal("12.50"), Decimal(tax))
    assert invoice.total_usd == Decimal("12.50") + Decimal(tax)


def test_generate_command_for_one_client_leaves_the_others(acme, time_machine, capsys):
    globex = ClientFactory.create(slug="globex")
    priced_event(acme, at=at(10, 3))
    priced_event(globex, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)

    call_command("generate_invoices", "--month", "2026-10", "--client", "acme")

    assert list(Invoice.objects.values_list("client__slug", "month", "status")) == [
        ("acme", OCT, "draft")
    ]
    assert capsys.readouterr().out == (
        "2026-10: 1 draft(s) generated, 0 already issued, 0 with nothing to bill\n"
    )


def test_generate_command_counts_generated_issued_and_empty(acme, time_machine, capsys):
    issued, emptied = ClientFactory.create(slug="issued"), ClientFactory.create(slug="emptied")
    priced_event(acme, at=at(10, 3))
    priced_event(issued, at=at(10, 3))
    gone = priced_event(emptied, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoices_generate_month(month=OCT)
    invoice_finalize(invoice_id=Invoice.objects.get(client=issued).pk)
    gone.delete()  # the emptied client's draft has nothing left to bill
    dirty_days_mark([(emptied.pk, date(2026, 10, 3))])

    call_command("generate_invoices", "--month", "2026-10")

    assert capsys.readouterr().out == (
        "2026-10: 1 draft(s) generated, 1 already issued, 1 with nothing to bill\n"
    )
    assert sorted(Invoice.objects.values_list("client__slug", "status")) == [
        ("acme", "draft"),
        ("issued", "finalized"),
    ]
