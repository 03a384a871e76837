"""Admin as people read it: money with separators and no trailing zeros, months as
"October 2026", invoice numbers that do not wrap."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse

from agency.money import format_pct, format_usd_exact
from billing.models import Invoice
from billing.services.invoices import invoice_finalize, invoices_generate_month
from tests.factories import StaffFactory, at, priced_event

pytestmark = pytest.mark.django_db

OCT = date(2026, 10, 1)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("0.007500000000000", "$0.0075"),
        ("1234.5", "$1,234.50"),
        ("1234567.891", "$1,234,567.891"),
        ("-0.25", "-$0.25"),
        ("0", "$0.00"),
    ],
)
def test_exact_usd_drops_trailing_zeros_and_separates_thousands(amount, text):
    assert format_usd_exact(Decimal(amount)) == text


def test_percentages_drop_trailing_zeros():
    assert (format_pct(Decimal("25.00")), format_pct(Decimal("12.50"))) == ("25 %", "12.5 %")


@pytest.fixture
def issued(acme, time_machine) -> Invoice:
    for day in range(2, 30):
        priced_event(acme, at=at(10, day), input_tokens=9_000_000, output_tokens=2_000_000)
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoices_generate_month(month=OCT)
    return invoice_finalize(invoice_id=Invoice.objects.get(client=acme).pk)


@pytest.fixture
def staff_client(client):
    client.force_login(StaffFactory.create(is_superuser=True))
    return client


def test_invoice_list_shows_money_months_and_unwrapped_numbers(issued, staff_client):
    assert issued.total_usd > 1000
    page = staff_client.get(reverse("admin:billing_invoice_changelist")).content.decode()
    assert f"${issued.total_usd:,.2f}" in page
    assert "October 2026" in page
    assert '<span style="white-space: nowrap">INV-2026-00001</span>' in page
    assert "Oct. 1, 2026" not in page


def test_invoice_page_shows_exact_costs_without_trailing_zeros(issued, staff_client):
    page = staff_client.get(
        reverse("admin:billing_invoice_change", args=[issued.pk])
    ).content.decode()
    line = issued.lines.get()
    assert format_usd_exact(line.raw_cost_usd) in page
    assert f"{line.raw_cost_usd:f}" not in page  # 15 decimal places
    assert "25 %" in page and "25.00" not in page
    assert "October 2026" in page


def test_month_filter_offers_months_by_name(issued, staff_client):
    page = staff_client.get(reverse("admin:billing_invoice_changelist")).content.decode()
    assert "?month=2026-10-01" in page
    filtered = staff_client.get(reverse("admin:billing_invoice_changelist") + "?month=2026-10-01")
    assert filtered.status_code == 200
    assert "INV-2026-00001" in filtered.content.decode()
