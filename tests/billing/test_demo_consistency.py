"""Issue 13's done-when: walk every client and month of the demo data and check that the
client page, the budget API, the overview and its CSV, and the invoice agree to the cent.
Before an invoice is issued, the invoice it would be (computed now) is the reference."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client as HttpClient
from django.urls import reverse

from agency.models import Client
from billing.models import DailyRollup, Invoice, InvoiceLineKind, InvoiceStatus
from billing.selectors.lines import ISSUED_STATUSES, invoice_lines_compute
from tests.factories import StaffFactory
from tracking.keys import api_key_create


def _money(text: str) -> Decimal:
    return Decimal(text.replace("$", "").replace(",", "").strip())


def _figure(pattern: str, html: str) -> Decimal:
    match = re.search(pattern, html)
    assert match is not None, pattern
    return _money(match.group(1))


@pytest.mark.parametrize("moment", ["2026-11-23T10:00:00Z", "2026-12-01T00:30:00Z"])
def test_page_api_csv_and_invoice_agree_for_every_client_and_month(db, settings, tmp_path, moment):
    settings.MEDIA_ROOT = tmp_path
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"consistency-{moment}",
        }
    }
    with time_machine.travel(moment, tick=False):
        call_command("seed_demo", "--admin-password", "demo-pw", stdout=StringIO())
        http = HttpClient()
        http.force_login(StaffFactory.create())
        agency_key = api_key_create(name="consistency", client=None)[1]
        months = sorted(set(DailyRollup.objects.dates("day", "month")))
        checked = 0
        for month in months:
            label = f"{month:%Y-%m}"
            response = http.get(reverse("overview_csv") + f"?month={label}")
            streamed = b"".join(response.streaming_content)  # type: ignore[attr-defined]
            rows = list(csv.reader(io.StringIO(streamed.decode())))
            header, body = rows[0], rows[1:]
            by_slug = {r[header.index("slug")]: r for r in body if r[0] != "Total"}
            total = next(r for r in body if r[0] == "Total")
            overview = http.get(reverse("overview") + f"?month={label}").content.decode()
            column_sums = {
                "raw_usd": Decimal(0),
                "billed_usd": Decimal(0),
                "margin_usd": Decimal(0),
            }
            for client in Client.objects.filter(active=True):
                page = http.get(
                    reverse("client_detail", args=[client.slug]) + f"?month={label}"
                ).content.decode()
                page_billed = _figure(r'data-testid="billed-total">([^<]+)<', page)
                lines_billed = _figure(r'data-testid="lines-billed">([^<]+)<', page)
                api = http.get(
                    "/api/v1/budget",
                    {"client": client.slug, "month": label},
                    headers={"Authorization": f"Bearer {agency_key}"},
                ).json()
                row = by_slug[client.slug]
                invoice = Invoice.objects.filter(
                    client=client, month=month, status__in=ISSUED_STATUSES
                ).first()
                if invoice is not None:
                    reference = sum(
                        (
                            line.amount_usd
                            for line in invoice.lines.all()
                            if line.usage_month == month
                        ),
                        Decimal(0),
                    )
                    if not invoice.lines.filter(kind=InvoiceLineKind.ADJUSTMENT).exists():
                        assert reference == invoice.subtotal_usd
                    basis = "invoice"
                else:
                    draft = Invoice.objects.filter(
                        client=client, month=month, status=InvoiceStatus.DRAFT
                    ).first()
                    # The invoice as generated now: a draft's own lines are replaced.
                    lines = invoice_lines_compute(
                        client=client, month=month, exclude_invoice_id=draft.pk if draft else None
                    )
                    reference = sum(
                        (line.amount_usd for line in lines if line.usage_month == month),
                        Decimal(0),
                    )
                    basis = "estimate"
                    if draft is not None and not draft.lines.exclude(usage_month=month).exists():
                        assert draft.subtotal_usd == reference, f"draft {client.slug} {label}"
                where = f"{client.slug} {label}"
                assert page_billed == lines_billed == reference, where
                assert Decimal(api["billed_usd"]) == reference, where
                assert api["billed_basis"] == basis, where
                assert Decimal(row[header.index("billed_usd")]) == reference, where
                assert row[header.index("basis")] == basis, where
                raw, billed, margin = (
                    Decimal(row[header.index(k)]) for k in ("raw_usd", "billed_usd", "margin_usd")
                )
                assert raw + margin == billed, where
                assert Decimal(api["cost_usd"]) == raw, where
                assert re.search(
                    rf'data-client="{client.slug}"[^>]*>.*?class="num col-billed">'
                    rf"\${billed:,}<",
                    overview,
                    re.S,
                ), where
                for key in column_sums:
                    column_sums[key] += Decimal(row[header.index(key)])
                checked += 1
            for key, value in column_sums.items():
                assert Decimal(total[header.index(key)]) == value, (label, key)
            assert f'data-testid="total-billed">${column_sums["billed_usd"]:,}<' in overview
        assert checked >= 4 * 3
