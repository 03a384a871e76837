"""The demo data behind the README's first command (bin/start). Seeding takes ~20 s, so
the outcomes are checked in two tests rather than one per fact."""

from __future__ import annotations

from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client as HttpClient

from agency.models import Client, ClientMembership
from billing.models import DailyRollup, Invoice, InvoiceStatus
from tracking.models import DirtyDay, PricingStatus, UsageEvent


@pytest.fixture
def seeded(db, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    out = StringIO()
    # 60 days back from 23 November reach into September.
    with time_machine.travel("2026-11-23 10:00Z", tick=False):
        call_command("seed_demo", "--admin-password", "demo-pw", stdout=out)
    return out.getvalue()


def test_the_demo_shows_every_kind_of_usage_logins_and_invoices(seeded):
    events = UsageEvent.objects.all()
    assert Client.objects.count() == 5  # Hooli: metered from the provider report
    assert events.filter(cache_write_5m_tokens__gt=0).exists()
    assert events.filter(cache_write_1h_tokens__gt=0).exists()
    assert events.filter(cache_read_tokens__gt=0).exists()
    assert events.filter(service_tier="batch").count() >= 120
    assert events.filter(web_search_requests__gt=0).exists()
    assert {"anthropic", "openai", "google"} <= set(events.values_list("provider", flat=True))
    # One model without a rate: stored, shown as unpriced, never $0.
    unpriced = events.filter(pricing_status=PricingStatus.UNPRICED)
    assert set(unpriced.values_list("model", flat=True)) == {"claude-experimental-9"}
    assert not unpriced.filter(cost_usd__isnull=False).exists()
    # Rollups are built in one pass and nothing is left to rebuild.
    assert DailyRollup.objects.filter(day__lt="2026-10-01").exists()
    assert not DirtyDay.objects.exists()

    assert "admin / demo-pw" in seeded
    assert HttpClient().login(username="admin", password="demo-pw")
    assert HttpClient().login(username="acme-viewer", password="demo-pw")
    assert ClientMembership.objects.get(user__username="acme-viewer").client.slug == "acme"

    # October issued with numbers and stored PDFs in every state; September in draft, and
    # the voided October invoice's correction in draft.
    issued = Invoice.objects.exclude(status=InvoiceStatus.DRAFT)
    assert sorted(str(i.number) for i in issued) == [f"INV-2026-0000{n}" for n in range(1, 6)]
    assert all(i.pdf and i.month.isoformat() == "2026-10-01" for i in issued)
    assert {i.client.slug: i.status for i in issued} == {
        "acme": InvoiceStatus.PAID,
        "globex": InvoiceStatus.SENT,
        "initech": InvoiceStatus.VOID,
        "umbrella": InvoiceStatus.FINALIZED,
        "hooli": InvoiceStatus.FINALIZED,
    }
    drafts = Invoice.objects.filter(status=InvoiceStatus.DRAFT)
    assert sorted((d.month.isoformat(), d.client.slug) for d in drafts) == [
        *[("2026-09-01", slug) for slug in ("acme", "globex", "initech", "umbrella")],
        ("2026-10-01", "initech"),
    ]


def test_running_it_again_adds_nothing(seeded):
    counts = (UsageEvent.objects.count(), Invoice.objects.count(), DailyRollup.objects.count())
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "already present" in out.getvalue()
    assert (
        UsageEvent.objects.count(),
        Invoice.objects.count(),
        DailyRollup.objects.count(),
    ) == counts
