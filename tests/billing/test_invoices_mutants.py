"""Tests that kill the mutants of billing/services/invoices.py the mutation run left
(bin/mutate; README, "Mutation testing")."""

from __future__ import annotations

from datetime import date

import pytest

from billing.models import Invoice, InvoiceStatus
from billing.services.invoices import (
    invoice_finalize,
    invoice_mark_paid,
    invoices_finalize_due,
    invoices_generate_month,
)
from tests.factories import ClientFactory, at, priced_event

pytestmark = pytest.mark.django_db

OCT = date(2026, 10, 1)


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
