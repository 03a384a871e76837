"""Tests that kill the mutants of billing/services/invoices.py the mutation run left
(bin/mutate; README, "Mutation testing")."""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal

import pytest
from django.core.cache import cache

from agency.models import AgencyProfile
from billing.models import Invoice, InvoiceLine, InvoiceNumberCounter, InvoiceStatus
from billing.services.finalize import invoice_pdf_prepare_for
from billing.services.invoices import (
    RunResult,
    invoice_finalize,
    invoice_mark_paid,
    invoice_totals,
    invoice_void,
    invoices_finalize_due,
    invoices_generate_month,
    previous_month_of,
)
from tests.factories import ClientFactory, at, priced_event
from tracking.services import dirty_days_mark

pytestmark = pytest.mark.django_db

OCT = date(2026, 10, 1)
NOV = date(2026, 11, 1)


@pytest.fixture
def issued(acme, time_machine) -> Invoice:
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoices_generate_month(month=OCT)
    return invoice_finalize(invoice_id=Invoice.objects.get(client=acme).pk)


def test_marking_paid_records_the_moment_given(issued):
    paid = invoice_mark_paid(invoice_id=issued.pk, now=at(11, 20, 9))

    assert (paid.status, paid.paid_at) == (InvoiceStatus.PAID, at(11, 20, 9))
    assert Invoice.objects.get(pk=issued.pk).paid_at == at(11, 20, 9)


def test_marking_paid_without_a_moment_records_now(issued, time_machine):
    time_machine.move_to(at(11, 21, 10), tick=False)
    paid = invoice_mark_paid(invoice_id=issued.pk)

    assert Invoice.objects.get(pk=paid.pk).paid_at == at(11, 21, 10)


def test_finalize_due_works_at_the_moment_given_not_the_clock(acme, time_machine, settings):
    # The daily job is told the moment (a rerun for a past day): every date it uses,
    # the grace period's and the finalized invoice's, comes from that moment.
    settings.INVOICE_GRACE_DAYS = 3
    globex = ClientFactory.create(slug="globex")
    priced_event(acme, at=at(10, 3))
    priced_event(globex, at=at(10, 4))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoices_generate_month(month=OCT)
    drafts = list(Invoice.objects.order_by("pk").values_list("pk", flat=True))

    result = invoices_finalize_due(now=at(11, 10))  # the clock still says 1 November

    assert (result.refreshed, result.finalized, result.failed) == (2, drafts, [])
    assert set(Invoice.objects.values_list("status", flat=True)) == {InvoiceStatus.FINALIZED}
    assert Invoice.objects.get(client=acme).finalized_at == at(11, 10)


# --- totals and snapshots ----------------------------------------------------------------


def test_the_totals_of_no_lines_are_decimal_zeros():
    # Money stays Decimal even with nothing to add (a caller may quantize it).
    totals = invoice_totals([], Decimal("20"))

    assert totals == dict.fromkeys(("raw_cost_usd", "subtotal_usd", "tax_usd", "total_usd"), 0)
    assert {type(value) for value in totals.values()} == {Decimal}


def test_a_negative_tax_rate_charges_no_tax_never_a_credit():
    # Admin refuses a rate below zero; one set some other way still charges nothing.
    line = InvoiceLine(raw_cost_usd=Decimal("8"), amount_usd=Decimal("10.00"))

    totals = invoice_totals([line], Decimal("-20"))

    assert (totals["tax_usd"], totals["total_usd"]) == (Decimal("0"), Decimal("10.00"))


def test_a_client_without_a_tax_label_gets_tax(acme, time_machine):
    acme.tax_label, acme.tax_rate_pct = "", Decimal("10")
    acme.save()
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)

    draft = Invoice.objects.get(pk=invoices_generate_month(month=OCT).invoice_ids[0])

    assert draft.tax_label == "Tax"


def test_the_agency_logo_is_kept_by_its_file_name_or_empty(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    without = Invoice.objects.get(pk=invoices_generate_month(month=OCT).invoice_ids[0])
    profile = AgencyProfile.load()
    profile.logo.name = "agency/northwind.png"
    profile.save()

    with_logo = Invoice.objects.get(pk=invoices_generate_month(month=OCT).invoice_ids[0])

    assert (without.agency_logo, with_logo.agency_logo) == ("", "agency/northwind.png")


# --- generating a month: which clients, at what moment, the counts -------------------


def _run(result: RunResult) -> tuple[int, int, int, int]:
    return (result.generated, result.skipped_issued, result.empty, len(result.invoice_ids))


def test_usage_of_the_months_before_and_after_is_not_this_months(acme, time_machine):
    globex = ClientFactory.create(slug="globex")
    priced_event(acme, at=at(9, 28))
    priced_event(globex, at=at(11, 2))
    time_machine.move_to(at(11, 3), tick=False)

    assert _run(invoices_generate_month(month=OCT)) == (0, 0, 0, 0)
    assert not Invoice.objects.exists()


def test_an_earlier_draft_or_a_later_issued_invoice_does_not_bring_a_client_in(acme, time_machine):
    # Only an earlier *issued* invoice (late usage to adjust) or a draft of the month
    # itself (it may have become empty) makes a client without usage worth a look.
    globex = ClientFactory.create(slug="globex")
    priced_event(acme, at=at(9, 28))
    priced_event(globex, at=at(11, 2))
    time_machine.move_to(at(12, 1, 2), tick=False)
    invoices_generate_month(month=date(2026, 9, 1))  # Acme's draft of September
    invoice_finalize(invoice_id=invoices_generate_month(month=NOV).invoice_ids[0])

    assert _run(invoices_generate_month(month=OCT)) == (0, 0, 0, 0)
    assert Invoice.objects.filter(month=OCT).count() == 0


def test_an_issued_invoice_of_the_month_whose_usage_is_gone_is_not_regenerated(acme, time_machine):
    # The month's events were deleted after its invoice was issued: nothing to bill, and
    # the issued invoice is no draft to look at.
    event = priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoice_finalize(invoice_id=invoices_generate_month(month=OCT).invoice_ids[0])
    event.delete()
    dirty_days_mark([(acme.pk, date(2026, 10, 3))])

    assert _run(invoices_generate_month(month=OCT)) == (0, 0, 0, 0)


def test_generating_records_the_moment_given_not_the_clock(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)

    draft = invoices_generate_month(month=OCT, now=at(11, 2, 8)).invoice_ids[0]

    assert Invoice.objects.get(pk=draft).generated_at == at(11, 2, 8)


def test_every_issued_and_every_emptied_invoice_is_counted(acme, time_machine):
    clients = [acme, *(ClientFactory.create() for _ in range(3))]
    events = [priced_event(client, at=at(10, 3)) for client in clients]
    time_machine.move_to(at(11, 1, 2), tick=False)
    drafts = invoices_generate_month(month=OCT).invoice_ids
    for draft in drafts[:2]:
        invoice_finalize(invoice_id=draft)
    for event in events[2:]:
        event.delete()
    dirty_days_mark([(client.pk, date(2026, 10, 3)) for client in clients[2:]])

    assert _run(invoices_generate_month(month=OCT)) == (0, 2, 2, 0)


# --- finalizing: its dates, its PDF ------------------------------------------------------


def test_finalizing_dates_the_invoice_by_the_moment_given_not_the_clock(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    draft = invoices_generate_month(month=OCT).invoice_ids[0]

    issued = invoice_finalize(invoice_id=draft, now=at(11, 10))

    assert (issued.issue_date, issued.due_date) == (date(2026, 11, 10), date(2026, 12, 10))


def test_the_finalized_pdf_is_stored_under_its_number(acme, time_machine, settings, tmp_path):
    settings.PRIVATE_STORAGE_ROOT = tmp_path  # empty: the name is not taken already
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)

    issued = invoice_finalize(invoice_id=invoices_generate_month(month=OCT).invoice_ids[0])

    assert Invoice.objects.get(pk=issued.pk).pdf.name == "invoices/2026/INV-2026-00001.pdf"
    assert (tmp_path / "invoices/2026/INV-2026-00001.pdf").read_bytes().startswith(b"%PDF")


def test_finalizing_uses_the_pdf_prepared_for_it_and_only_once(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    draft = invoices_generate_month(month=OCT).invoice_ids[0]
    key = invoice_pdf_prepare_for(invoice_id=draft, seq=1, moment=at(11, 1, 2))
    assert key is not None
    prepared = cache.get(key)

    issued = invoice_finalize(invoice_id=draft, now=at(11, 1, 2))

    assert issued.pdf_sha256 == hashlib.sha256(prepared).hexdigest()
    assert cache.get(key) is None


# --- the daily finalization: its order, what it refreshes, what it logs -----------------


def test_a_finalization_that_fails_is_logged_and_listed_and_the_others_go_on(
    acme, time_machine, settings, tmp_path, caplog
):
    # The PDF store is broken (its root is a file, not a folder): each finalization fails
    # and rolls back, leaving its draft and no number used.
    globex = ClientFactory.create(slug="globex")
    priced_event(acme, at=at(10, 3))
    priced_event(globex, at=at(10, 4))
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoices_generate_month(month=OCT)
    drafts = list(Invoice.objects.order_by("pk").values_list("pk", flat=True))
    broken = tmp_path / "not-a-folder"
    broken.write_text("")
    settings.PRIVATE_STORAGE_ROOT = broken

    result = invoices_finalize_due(now=at(11, 10))

    assert (result.refreshed, result.finalized, result.failed) == (2, [], drafts)
    failures = [r for r in caplog.records if r.name == "billing.services.invoices"]
    assert [(r.levelname, r.getMessage()) for r in failures] == [
        ("ERROR", f"finalizing invoice {pk} failed") for pk in drafts
    ]
    assert all(r.exc_info and issubclass(r.exc_info[0], OSError) for r in failures)
    assert list(Invoice.objects.values_list("status", "number")) == [("draft", None)] * 2
    assert not InvoiceNumberCounter.objects.filter(last_seq__gt=0).exists()


def test_drafts_are_finalized_oldest_month_first_whatever_their_row_order(acme, time_machine):
    # November's draft is made first (its row comes first): October still gets the
    # lower number.
    priced_event(acme, at=at(10, 3))
    priced_event(acme, at=at(11, 3))
    time_machine.move_to(at(12, 2), tick=False)
    november = invoices_generate_month(month=NOV).invoice_ids[0]
    october = invoices_generate_month(month=OCT).invoice_ids[0]

    result = invoices_finalize_due(now=at(12, 20))

    assert result.finalized == [october, november]
    assert [Invoice.objects.get(pk=pk).number for pk in (october, november)] == [
        "INV-2026-00001",
        "INV-2026-00002",
    ]


def test_drafts_of_one_month_are_finalized_in_row_order(acme, time_machine):
    # Globex's draft is made first, so its row comes first though its client's does not.
    # With its month changed and changed back, PostgreSQL stores it anew after Acme's (an
    # update of an indexed column is not made in place): the table's order is no longer
    # the rows' order. (SQLite keeps a row where it is: there the order cannot differ.)
    globex = ClientFactory.create(slug="globex")
    priced_event(acme, at=at(10, 3))
    priced_event(globex, at=at(10, 4))
    time_machine.move_to(at(11, 1, 2), tick=False)
    first = invoices_generate_month(month=OCT, client_slug="globex").invoice_ids[0]
    second = invoices_generate_month(month=OCT, client_slug="acme").invoice_ids[0]
    Invoice.objects.filter(pk=first).update(month=NOV)
    Invoice.objects.filter(pk=first).update(month=OCT)

    result = invoices_finalize_due(now=at(11, 10))

    assert result.finalized == [first, second]
    assert [Invoice.objects.get(pk=pk).number for pk in (first, second)] == [
        "INV-2026-00001",
        "INV-2026-00002",
    ]


def test_the_daily_job_does_not_correct_a_voided_month(acme, time_machine):
    # Only a generation of the month makes a void invoice's correction, never the job
    # that finalizes due drafts.
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    issued = invoice_finalize(invoice_id=invoices_generate_month(month=OCT).invoice_ids[0])
    invoice_void(invoice_id=issued.pk, reason="wrong markup")

    result = invoices_finalize_due(now=at(11, 10))

    assert (result.refreshed, result.finalized, result.failed) == (0, [], [])
    assert list(Invoice.objects.values_list("pk", "status")) == [(issued.pk, "void")]


def test_the_daily_job_leaves_this_months_draft_alone(acme, time_machine):
    priced_event(acme, at=at(11, 3))
    time_machine.move_to(at(11, 5), tick=False)
    draft = invoices_generate_month(month=NOV).invoice_ids[0]

    result = invoices_finalize_due(now=at(11, 10))

    assert (result.refreshed, result.finalized) == (0, [])
    assert Invoice.objects.get(pk=draft).generated_at == at(11, 5)


def test_the_daily_job_regenerates_drafts_at_the_moment_given(acme, time_machine):
    priced_event(acme, at=at(10, 3))
    time_machine.move_to(at(11, 1, 2), tick=False)
    draft = invoices_generate_month(month=OCT).invoice_ids[0]

    invoices_finalize_due(now=at(11, 10))  # the clock still says 1 November

    assert Invoice.objects.get(pk=draft).generated_at == at(11, 10)


def test_a_draft_that_became_empty_does_not_stop_the_next_ones(acme, time_machine):
    globex = ClientFactory.create(slug="globex")
    gone = priced_event(acme, at=at(10, 3))
    priced_event(globex, at=at(10, 4))
    time_machine.move_to(at(11, 1, 2), tick=False)
    emptied, kept = invoices_generate_month(month=OCT).invoice_ids
    gone.delete()
    dirty_days_mark([(acme.pk, date(2026, 10, 3))])

    result = invoices_finalize_due(now=at(11, 10))

    assert (result.refreshed, result.finalized) == (1, [kept])
    assert not Invoice.objects.filter(pk=emptied).exists()
    assert list(Invoice.objects.values_list("pk", "status")) == [(kept, "finalized")]


# --- after issue -------------------------------------------------------------------------


def test_a_paid_or_void_invoice_comes_back_with_its_client(issued, django_assert_num_queries):
    # The pages that show it next read the client's name without another query.
    paid = invoice_mark_paid(invoice_id=issued.pk, now=at(11, 20, 9))
    with django_assert_num_queries(0):
        assert paid.client.name == "Acme Corp"


def test_the_month_before_is_that_of_the_moment_given_not_the_clock(time_machine):
    time_machine.move_to(at(11, 20), tick=False)

    assert previous_month_of(at(3, 15)) == date(2026, 2, 1)
    assert previous_month_of(at(1, 1, 0)) == date(2025, 12, 1)
