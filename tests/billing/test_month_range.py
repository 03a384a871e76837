"""Months outside the supported range (agency.calendar) get a clean answer everywhere a
month comes from a URL: 400 with a JSON error from the API, 404 from pages and exports."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.urls import reverse

from agency.models import Client
from tests.factories import ClientFactory, DailyRollupFactory, StaffFactory
from tracking.keys import api_key_create

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
EDGES = ["9999-12", "0001-01", "1999-12", "2101-01"]


@pytest.fixture(autouse=True)
def pinned_clock(time_machine: Any) -> None:
    """The whole test at NOW, sign-in included: a session started at another instant
    (bin/instants) may have expired by NOW."""
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def acme() -> Client:
    client: Client = ClientFactory.create(slug="acme", monthly_budget_usd=Decimal("100"))
    DailyRollupFactory.create(client=client, day=dt.date(2026, 11, 19))
    return client


@pytest.fixture
def staff(client: Any) -> None:
    client.force_login(StaffFactory.create())


@pytest.mark.parametrize("month", EDGES)
def test_budget_api_answers_400_for_a_month_out_of_range(
    client: Any, acme: Client, month: str
) -> None:
    key = api_key_create(name="agency", client=None)[1]
    with time_machine.travel(NOW, tick=False):
        response = client.get(
            "/api/v1/budget",
            {"client": "acme", "month": month},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "month"
    assert "2000-01" in response.json()["error"]["message"]


@pytest.mark.parametrize("month", EDGES)
@pytest.mark.parametrize("view", ["client_detail", "client_top_lists"])
def test_client_pages_answer_404_for_a_month_out_of_range(
    client: Any, staff: None, acme: Client, view: str, month: str
) -> None:
    with time_machine.travel(NOW, tick=False):
        response = client.get(reverse(view, args=["acme"]), {"month": month})
    assert response.status_code == 404


@pytest.mark.parametrize("month", EDGES)
def test_usage_csv_answers_404_for_a_month_out_of_range(
    client: Any, staff: None, acme: Client, month: str
) -> None:
    with time_machine.travel(NOW, tick=False):
        response = client.get(reverse("usage_month_csv", args=["acme", month]))
    assert response.status_code == 404


@pytest.mark.parametrize("month", ["2000-01", "2100-12"])
def test_the_first_and_last_supported_months_render(
    client: Any, staff: None, acme: Client, month: str
) -> None:
    with time_machine.travel(NOW, tick=False):
        page = client.get(reverse("client_detail", args=["acme"]), {"month": month})
        csv = client.get(reverse("usage_month_csv", args=["acme", month]))
    assert page.status_code == 200
    assert csv.status_code == 200
    assert b"".join(csv.streaming_content).startswith(b"event_id,")
