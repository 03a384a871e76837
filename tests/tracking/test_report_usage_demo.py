"""The demo ships a reconciliation month: partial coverage, one drifting model and one
client metered from the provider report, all without network."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command

from agency.models import Client
from tracking.demo_reports import DRIFTING_MODEL, UNMAPPED_KEY
from tracking.models import ProviderAccount, ProviderReportRow, UsageEvent
from tracking.pricing import price_report_row
from tracking.rates import RateBook


def cents(rows: Iterable[ProviderReportRow]) -> Decimal:
    return sum((r.list_amount_cents or Decimal(0) for r in rows), Decimal(0))


@pytest.fixture
def seeded(db, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    with time_machine.travel("2026-11-23T10:00:00Z", tick=False):
        call_command("seed_demo", "--admin-password", "demo-pw", stdout=StringIO())
        yield


def test_the_demo_reports_spend_nobody_mapped(seeded):
    assert not ProviderAccount.objects.filter(external_id=UNMAPPED_KEY).exists()
    unmapped = ProviderReportRow.objects.filter(api_key_id=UNMAPPED_KEY)
    total = cents(ProviderReportRow.objects.filter(provider="anthropic"))
    share = cents(unmapped) / total
    assert Decimal("0.015") < share < Decimal("0.035")
    # Every other row's key is mapped to a client.
    mapped = set(ProviderAccount.objects.values_list("external_id", flat=True))
    others = ProviderReportRow.objects.exclude(api_key_id=UNMAPPED_KEY)
    assert set(others.values_list("api_key_id", flat=True)) <= mapped


def test_the_demo_has_exactly_one_drifting_model(seeded):
    book = RateBook.load()
    ours: dict[str, Decimal] = defaultdict(Decimal)
    theirs: dict[str, Decimal] = defaultdict(Decimal)
    for row in ProviderReportRow.objects.all():
        resolution = book.resolve(row.provider, row.model, row.day)
        if resolution is None:
            continue
        ours[row.model] += price_report_row(row, resolution.card).total * 100
        theirs[row.model] += row.list_amount_cents or Decimal(0)
    drifting = {
        model for model in ours if abs(theirs[model] - ours[model]) > ours[model] * Decimal("0.005")
    }
    assert drifting == {DRIFTING_MODEL}


def test_the_report_sourced_client_has_its_rows_as_usage(seeded):
    hooli = Client.objects.get(slug="hooli")
    assert hooli.usage_source == "provider_report"
    (account,) = hooli.provider_accounts.all()
    rows = ProviderReportRow.objects.filter(api_key_id=account.external_id)
    events = UsageEvent.objects.filter(client=hooli)
    assert rows.count() == events.count() > 20
    assert sum(r.output_tokens for r in rows) == sum(e.output_tokens for e in events)
    assert all(e.metadata["source"] == "provider_report" for e in events)
    book = RateBook.load()
    expected = Decimal(0)
    for row in rows:
        resolution = book.resolve(row.provider, row.model, row.day)
        assert resolution is not None
        expected += price_report_row(row, resolution.card).total
    assert sum(e.cost_usd or Decimal(0) for e in events) == expected
    assert not events.filter(cost_usd__isnull=True).exists()
