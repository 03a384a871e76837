"""The agency overview's query count does not grow with the number of clients, for the
month in progress and for a past month (whose budgets come from the clients' history),
and a past month's budget is the one in force at its end."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agency.models import Client
from billing.selectors.budgets import budget_of
from billing.selectors.dashboard.overview import budgets_of
from tests.factories import ClientFactory, DailyRollupFactory, StaffFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen", "private_cache")]

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def _clients(n: int, tag: str) -> list[Client]:
    made = []
    for i in range(n):
        client = ClientFactory.create(
            name=f"{tag} {i}", slug=f"{tag}-{i}", monthly_budget_usd=Decimal("100")
        )
        for day in (dt.date(2026, 10, 5), dt.date(2026, 11, 19), dt.date(2026, 11, 20)):
            DailyRollupFactory.create(client=client, day=day, cost_usd=Decimal("3"))
        made.append(client)
    return made


def _queries(client, month: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(reverse("overview"), {"month": month})
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("month", ["2026-10", "2026-11"])
def test_overview_queries_do_not_grow_with_clients(client, month):
    client.force_login(StaffFactory.create())
    _clients(3, "few")
    few = _queries(client, month)
    # The cache key holds the client ids, so the wider set is summed afresh.
    _clients(27, "many")
    many = _queries(client, month)
    assert many == few


def test_past_month_budget_is_the_one_in_force_at_its_end():
    # History records: the budget at creation in October, then an edit now (November).
    with time_machine.travel(dt.datetime(2026, 10, 10, tzinfo=dt.UTC), tick=False):
        edited, unedited = _clients(2, "b")
    edited.monthly_budget_usd = Decimal("250")
    edited.save()
    late = ClientFactory.create(name="late", slug="late", monthly_budget_usd=Decimal("7"))
    clients = list(Client.objects.filter(pk__in=[edited.pk, unedited.pk, late.pk]))
    past = budgets_of(clients, dt.date(2026, 10, 1), NOW)
    # The budget in force when October ended; no history then: the current budget.
    assert past == {edited.pk: Decimal("100"), unedited.pk: Decimal("100"), late.pk: Decimal("7")}
    assert past == {c.pk: budget_of(c, dt.date(2026, 10, 1), NOW) for c in clients}
    current = budgets_of(clients, dt.date(2026, 11, 1), NOW)
    assert current == {
        edited.pk: Decimal("250"),
        unedited.pk: Decimal("100"),
        late.pk: Decimal("7"),
    }
