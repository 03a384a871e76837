"""The events CSV through ``COPY … TO STDOUT`` (PostgreSQL) gives the bytes of the ORM
path (``csv.writer`` over ``.iterator()``): same columns, timestamps, exact decimals,
quoting and line ends."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.urls import reverse

from agency.models import Client
from billing.csv_export import csv_lines, event_csv, event_rows
from billing.selectors.invoices import month_events
from billing.services.rollups import rollups_rebuild_period
from tests.clock import AGENCY_TZ
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    ProjectFactory,
    StaffFactory,
    UsageEventFactory,
)
from tracking.models import PricingStatus

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        "connection.vendor != 'postgresql'", reason="COPY is PostgreSQL's; SQLite has one path"
    ),
]

NOVEMBER = date(2026, 11, 1)
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def acme() -> Client:
    """A month of awkward events: text needing quotes (comma, quote, newline, CR), empty
    and unset fields, unpriced calls, 15-place and whole costs, timestamps with and
    without microseconds, a markup change mid-month and a day without rollups."""
    with time_machine.travel(NOW, tick=False):
        client = ClientFactory.create(slug="acme", markup_pct=Decimal("12.50"))
        project = ProjectFactory.create(client=client, name='Search, "beta"')
        base = datetime(2026, 11, 3, 8, 0, tzinfo=AGENCY_TZ)
        texts = ["plain", "a,b", 'say "hi"', "two\nlines", "cr\rhere", "", " spaced "]
        costs = ["0.000012500000000", "1", "0", "123.456000000000001", None, "0.1"]
        for i in range(42):
            cost = costs[i % len(costs)]
            UsageEventFactory.create(
                client=client,
                project=project if i % 2 else None,
                occurred_at=base + timedelta(days=i % 9, minutes=i, microseconds=i % 3 * 7),
                feature=texts[i % len(texts)],
                end_user=texts[(i + 1) % len(texts)],
                team=texts[(i + 2) % len(texts)],
                service_tier="priority" if i % 5 == 0 else "",
                input_tokens=1000 * i,
                output_tokens=7 * i,
                cost_usd=None if cost is None else Decimal(cost),
                pricing_status=PricingStatus.UNPRICED if cost is None else PricingStatus.PRICED,
            )
        rollups_rebuild_period(start=NOVEMBER, end=date(2026, 11, 30))
    # The markup changed on the 7th: the days from then carry the new one.
    client.daily_rollups.filter(day__gte=date(2026, 11, 7)).update(markup_pct=Decimal("40.00"))
    return client


def _orm_bytes(client: Client, **flags: bool) -> bytes:
    rows = event_rows(
        month_events(client, NOVEMBER),
        client_id=client.pk,
        days=(NOVEMBER, date(2026, 12, 1)),
        **flags,
    )
    return "".join(csv_lines(rows)).encode()


def _copy_bytes(client: Client, **flags: bool) -> bytes:
    pieces = event_csv(
        month_events(client, NOVEMBER),
        client_id=client.pk,
        days=(NOVEMBER, date(2026, 12, 1)),
        **flags,
    )
    return b"".join(p if isinstance(p, bytes) else p.encode() for p in pieces)


@pytest.mark.parametrize(
    "flags",
    [
        {"show_cost": True, "show_billed": True},
        {"show_cost": False, "show_billed": True},
        {"show_cost": False, "show_billed": False},
    ],
    ids=["staff", "member-with-pricing", "member"],
)
def test_copy_and_orm_give_the_same_bytes(acme, flags):
    expected = _orm_bytes(acme, **flags)
    assert expected.count(b"\r\n") >= 43  # header and 42 events (more inside quotes)
    assert b'"two\nlines"' in expected and b'"Search, ""beta"""' in expected
    if flags["show_cost"]:
        assert b",123.456000000000001,12.50,138.888000000000001125\r\n" in expected
        assert b",123.456000000000001,40.00,172.8384000000000014\r\n" in expected
    assert _copy_bytes(acme, **flags) == expected


def test_a_day_without_rollups_has_no_markup_and_no_billed_amount_on_both_paths(acme):
    acme.daily_rollups.filter(day=date(2026, 11, 5)).delete()
    expected = _orm_bytes(acme, show_cost=True, show_billed=True)
    assert _copy_bytes(acme, show_cost=True, show_billed=True) == expected


def test_the_copy_path_is_the_one_the_view_serves_and_scoped_to_the_client(acme, client):
    other = ClientFactory.create(slug="other")
    UsageEventFactory.create(
        client=other, end_user="mallory", occurred_at=datetime(2026, 11, 4, tzinfo=AGENCY_TZ)
    )
    client.force_login(StaffFactory.create())
    url = reverse("usage_month_csv", kwargs={"slug": "acme", "month": "2026-11"})
    with time_machine.travel(NOW, tick=False):
        response = client.get(url)
        served = b"".join(response.streaming_content)
    assert served == _orm_bytes(acme, show_cost=True, show_billed=True)
    assert b"mallory" not in served
    assert connection.vendor == "postgresql"


def test_the_events_csv_refuses_another_clients_user_and_the_anonymous(acme, client):
    url = reverse("usage_month_csv", kwargs={"slug": "acme", "month": "2026-11"})
    assert client.get(url).status_code == 302  # anonymous: sent to sign in
    other = ClientFactory.create(slug="other")
    client.force_login(ClientMembershipFactory.create(client=other).user)
    assert client.get(url).status_code == 404
