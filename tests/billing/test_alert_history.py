"""Alert history where people look for it: the client's page and admin, including a
delivery that failed (visible with its error) and admin's retry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.test import TestCase
from django.urls import reverse

from agency.models import Client
from billing.models import Alert, AlertDelivery, DeliveryChannel, DeliveryStatus
from billing.services.budgets import budgets_recompute
from tests.billing.test_alerts import Webhook
from tests.clock import AGENCY_TZ
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    DailyRollupFactory,
    StaffFactory,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 23, 0, tzinfo=AGENCY_TZ)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(status=500)
    yield hook
    hook.close()


def over_budget(name: str, slug: str, **fields: Any) -> Client:
    """A client billed $85 of a $100 budget: the 50% and 80% alerts are due."""
    client = ClientFactory.create(
        name=name, slug=slug, monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"), **fields
    )
    DailyRollupFactory.create(client=client, day=date(2026, 11, 2), cost_usd=Decimal("85"))
    return client


def recompute(settings: Any) -> None:
    settings.AGENCY_ALERT_EMAILS = ["ops@agency.example"]
    settings.AGENCY_SLACK_WEBHOOK_URL = ""
    with TestCase.captureOnCommitCallbacks(execute=True):
        budgets_recompute(now=NOW)


def page(client: Any, slug: str) -> Any:
    return client.get(reverse("client_detail", args=[slug]))


def test_client_page_lists_its_alerts_for_staff(client, settings):
    acme = over_budget("Acme", "acme")
    recompute(settings)
    client.force_login(StaffFactory.create())

    body = page(client, "acme").content.decode()

    assert "Alerts in November 2026" in body
    for alert in Alert.objects.filter(client=acme):
        assert alert.subject in body
    assert "Acme reached 80% of its November 2026 budget" in body


def test_client_page_shows_its_member_only_their_own_alerts(client, settings):
    acme = over_budget("Acme", "acme")
    over_budget("Globex", "globex")
    recompute(settings)
    client.force_login(ClientMembershipFactory.create(client=acme).user)

    body = page(client, "acme").content.decode()

    assert "Acme reached 80% of its November 2026 budget" in body
    assert "Globex" not in body


def test_client_page_alerts_are_404_for_the_outsider(client, settings):
    over_budget("Acme", "acme")
    globex = over_budget("Globex", "globex")
    recompute(settings)
    client.force_login(ClientMembershipFactory.create(client=globex).user)

    assert page(client, "acme").status_code == 404


def test_admin_lists_one_clients_alert_history(admin_client, settings):
    acme = over_budget("Acme", "acme")
    over_budget("Globex", "globex")
    recompute(settings)

    response = admin_client.get(f"/admin/billing/alert/?client__id__exact={acme.pk}")

    listed = {alert.client.slug for alert in response.context["cl"].result_list}
    assert listed == {"acme"}
    assert response.context["cl"].result_count == 2


def test_a_failed_delivery_is_visible_in_admin_and_retried_from_there(
    admin_client, settings, webhook
):
    over_budget("Acme", "acme", slack_webhook_url=webhook.url)
    recompute(settings)  # the webhook answers 500 to every attempt
    delivery = AlertDelivery.objects.get(channel=DeliveryChannel.SLACK)
    assert delivery.status in (DeliveryStatus.FAILED, DeliveryStatus.GAVE_UP)
    assert "HTTP Error 500" in delivery.last_error

    alert_page = admin_client.get(f"/admin/billing/alert/{delivery.alert_id}/change/")
    assert "HTTP Error 500" in alert_page.content.decode()
    listing = admin_client.get("/admin/billing/alertdelivery/?status__exact=" + delivery.status)
    assert [d.pk for d in listing.context["cl"].result_list] == [delivery.pk]

    webhook.status = 200
    admin_client.post(
        "/admin/billing/alertdelivery/",
        {"action": "retry_now", "_selected_action": [delivery.pk]},
    )

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT
    assert webhook.received[-1]["text"].startswith("*Acme reached 80% of its November 2026")
