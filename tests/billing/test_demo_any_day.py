"""Issue 13: the demo shows the product whatever today's date is: every budget colour, a
projection (once a day of the month has passed), alerts this month and in past months,
invoices in every state, and an API key for the README's curl example. Seeding takes
~20 s, so each date is one test with every check."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client as HttpClient
from django.utils import timezone

from agency.calendar import local_moment, month_start, previous_month, today
from agency.models import Client
from billing.models import Alert, Invoice, InvoiceStatus
from billing.selectors.budgets import budget_status_for


@pytest.mark.parametrize(
    "moment",
    [
        "2026-12-01T00:30:00Z",  # the first half hour of a month
        "2026-11-23T10:00:00Z",
        "2027-03-31T23:10:00Z",  # the last hour of a month
    ],
)
def test_the_demo_shows_everything_on_any_day(db, settings, tmp_path, moment):
    settings.MEDIA_ROOT = tmp_path
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"demo-{moment}",
        }
    }
    out = StringIO()
    with time_machine.travel(moment, tick=False):
        call_command("seed_demo", "--admin-password", "demo-pw", stdout=out)
        now = timezone.now()
        month = month_start(today(now))
        statuses = {c.slug: budget_status_for(c, month, now=now) for c in Client.objects.all()}
        assert {s.status for s in statuses.values()} == {"green", "yellow", "red", None}
        projectable = [s for s in statuses.values() if s.projectable and s.status]
        early = now - local_moment(month) < timedelta(hours=24)
        assert bool(projectable) is not early
        # Alerts this month, and in the past months the demo loaded after the fact.
        assert Alert.objects.filter(month=month).exists()
        assert Alert.objects.filter(month=previous_month(month)).exists()
        statuses_seen = set(Invoice.objects.values_list("status", flat=True))
        assert statuses_seen == {
            InvoiceStatus.DRAFT,
            InvoiceStatus.FINALIZED,
            InvoiceStatus.SENT,
            InvoiceStatus.PAID,
            InvoiceStatus.VOID,
        }
        key = re.search(r"API key \(Acme\)[^:]*: (\S+)", out.getvalue())
        assert key, out.getvalue()
        response = HttpClient().get(
            "/api/v1/budget", headers={"Authorization": f"Bearer {key.group(1)}"}
        )
        assert response.status_code == 200
        assert response.json()["client"] == "acme"
        assert response.json()["status"] == "yellow"
