"""GET /api/v1/budget: figures, key scoping (another client's key gets 404), errors."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.core.cache import cache
from django.test import TestCase

from agency.models import Client
from billing.models import BudgetSnapshot
from billing.services.rollups import rollups_rebuild_period
from billing.tasks import RECOMPUTE_SCHEDULED_KEY
from tests.clock import AGENCY_TZ
from tests.factories import ClientFactory, ClientMembershipFactory, UsageEventFactory
from tracking.keys import api_key_create
from tracking.models import PricingStatus

pytestmark = pytest.mark.django_db

URL = "/api/v1/budget"
NOW = datetime(2026, 11, 11, 0, 30, tzinfo=AGENCY_TZ)  # 241 of 720 hours into November


@pytest.fixture
def acme() -> Client:
    client = ClientFactory.create(
        slug="acme", monthly_budget_usd=Decimal("900"), markup_pct=Decimal("25")
    )
    UsageEventFactory.create(
        client=client,
        occurred_at=datetime(2026, 11, 3, 12, tzinfo=AGENCY_TZ),
        cost_usd=Decimal("192.8"),
    )
    UsageEventFactory.create(
        client=client,
        occurred_at=datetime(2026, 10, 20, 12, tzinfo=AGENCY_TZ),
        cost_usd=Decimal("800"),
    )
    rollups_rebuild_period(start=date(2026, 10, 1), end=date(2026, 11, 30))
    return client


@pytest.fixture
def globex() -> Client:
    return ClientFactory.create(slug="globex", monthly_budget_usd=None)


def get(http: Any, key: str | None, **params: str) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with time_machine.travel(NOW, tick=False):
        return http.get(URL, params, headers=headers)


def test_client_key_reads_its_budget(client: Any, acme: Client) -> None:
    key = api_key_create(name="acme app", client=acme)[1]

    response = get(client, key, client="acme")

    assert response.status_code == 200
    assert response.json() == {
        "client": "acme",
        "month": "2026-11",
        "budget_usd": "900.00",
        "cost_usd": "192.80",
        "billed_usd": "241.00",
        "percent_used": "26.8",
        "status": "green",
        "projected_billed_usd": "720.00",
        "projected_status": "yellow",
        "unpriced_events": 0,
        "billed_basis": "estimate",
        "not_priced": None,
    }


def test_a_past_month_can_be_asked_for(client: Any, acme: Client) -> None:
    key = api_key_create(name="acme app", client=acme)[1]

    body = get(client, key, client="acme", month="2026-10").json()

    assert (body["month"], body["billed_usd"], body["status"]) == ("2026-10", "1000.00", "red")
    assert body["projected_billed_usd"] == "1000.00"


def test_another_clients_key_gets_404(client: Any, acme: Client, globex: Client) -> None:
    outsider_key = api_key_create(name="globex app", client=globex)[1]

    response = get(client, outsider_key, client="acme")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_unknown_client_gets_the_same_404(client: Any, acme: Client) -> None:
    key = api_key_create(name="agency", client=None)[1]

    response = get(client, key, client="nobody")

    assert response.status_code == 404


def test_agency_key_reads_any_client(client: Any, acme: Client, globex: Client) -> None:
    key = api_key_create(name="agency", client=None)[1]

    body = get(client, key, client="globex").json()

    assert body["client"] == "globex"
    assert (body["budget_usd"], body["status"], body["percent_used"]) == (None, None, None)
    assert body["projected_status"] is None


def test_agency_key_must_name_a_client(client: Any, acme: Client) -> None:
    key = api_key_create(name="agency", client=None)[1]

    response = get(client, key)

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "client"


def test_client_key_without_client_param_reads_its_own(client: Any, acme: Client) -> None:
    key = api_key_create(name="acme app", client=acme)[1]

    assert get(client, key).json()["client"] == "acme"


@pytest.mark.parametrize("month", ["2026-13", "November", "2026-1-01", "20261"])
def test_bad_month_is_400(client: Any, acme: Client, month: str) -> None:
    key = api_key_create(name="acme app", client=acme)[1]

    response = get(client, key, client="acme", month=month)

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "month"


def test_missing_key_is_401(client: Any, acme: Client) -> None:
    assert get(client, None, client="acme").status_code == 401


def test_signed_in_user_without_key_is_401(client: Any, acme: Client) -> None:
    membership = ClientMembershipFactory.create(client=acme)
    client.force_login(membership.user)

    assert get(client, None, client="acme").status_code == 401


def test_unpriced_events_are_reported(client: Any, acme: Client) -> None:
    UsageEventFactory.create(
        client=acme,
        occurred_at=datetime(2026, 11, 4, 12, tzinfo=AGENCY_TZ),
        pricing_status=PricingStatus.UNPRICED,
        cost_usd=None,
    )
    rollups_rebuild_period(start=date(2026, 11, 4), end=date(2026, 11, 4))
    key = api_key_create(name="acme app", client=acme)[1]

    assert get(client, key, client="acme").json()["unpriced_events"] == 1


def test_post_is_not_allowed(client: Any, acme: Client) -> None:
    key = api_key_create(name="acme app", client=acme)[1]

    response = client.post(URL, {}, headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response["Allow"] == "GET, HEAD"


def test_post_gets_json_405_even_with_csrf_checks_on(acme: Client) -> None:
    from django.test import Client as HttpClient

    response = HttpClient(enforce_csrf_checks=True).post(URL, {})

    assert (response.status_code, response.json()["error"]["code"]) == (
        405,
        "method_not_allowed",
    )


# Priced at the shipped rates in force at NOW (the event has no occurred_at).
@time_machine.travel(NOW, tick=False)
def test_ingested_usage_reaches_the_budget_after_the_debounced_recompute(
    client: Any, rates: None
) -> None:
    acme = ClientFactory.create(
        slug="acme", monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0")
    )
    key = api_key_create(name="acme app", client=acme)[1]
    cache.delete(RECOMPUTE_SCHEDULED_KEY)
    event = {
        "id": "call-1",
        "model": "claude-sonnet-4-5",
        "usage": {"input_tokens": 200_000, "output_tokens": 100_000},  # $0.60 + $1.50
    }

    with TestCase.captureOnCommitCallbacks(execute=True):
        posted = client.post(
            "/api/v1/usage",
            json.dumps({"events": [event]}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {key}"},
        )

    assert posted.status_code in (200, 201, 202)
    assert BudgetSnapshot.objects.get(client=acme).billed_usd == Decimal("2.1")
    body = client.get(URL, {"client": "acme"}, headers={"Authorization": f"Bearer {key}"}).json()
    assert (body["billed_usd"], body["percent_used"]) == ("2.10", "2.1")


@pytest.mark.parametrize("slug", ["acme\x00", "a" * 65, "ac me", "acme/../globex"])
def test_a_slug_that_is_not_a_slug_is_404(client: Any, acme: Client, slug: str) -> None:
    key = api_key_create(name="agency", client=None)[1]

    assert get(client, key, client=slug).status_code == 404
