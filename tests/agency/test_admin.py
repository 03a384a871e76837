"""Staff edit clients, markups and rates in admin; every change is kept with who made it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from agency.models import AgencyProfile, Client, ClientMembership
from tests.factories import ClientFactory
from tracking.models import ModelRate

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw")
    client.force_login(user)
    return user


def client_form(**overrides):
    data = {
        "name": "Acme",
        "slug": "acme",
        "active": "on",
        "markup_pct": "25",
        "monthly_budget_usd": "500",
        "billing_email": "ap@acme.example",
        "billing_name": "",
        "billing_address": "",
        "billing_tax_id": "",
        "tax_rate_pct": "0",
        "tax_label": "Tax",
        "alert_thresholds": "50,80,100",
        "slack_webhook_url": "",
        "projects-TOTAL_FORMS": "0",
        "projects-INITIAL_FORMS": "0",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "usage_source": "events",
        "provider_accounts-TOTAL_FORMS": "0",
        "provider_accounts-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def test_markup_change_in_admin_is_kept_in_history_with_its_author(client, staff):
    acme = Client.objects.create(name="Acme", slug="acme", markup_pct=Decimal("10"))
    response = client.post(f"/admin/agency/client/{acme.pk}/change/", client_form(markup_pct="25"))
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.markup_pct == Decimal("25")
    latest = acme.history.latest()
    assert (latest.markup_pct, latest.history_user) == (Decimal("25"), staff)
    assert [h.markup_pct for h in acme.history.order_by("history_date")] == [
        Decimal("10"),
        Decimal("25"),
    ]


def test_a_new_price_row_keeps_the_old_one(client, staff, rates):
    before = ModelRate.objects.filter(model="claude-haiku-4-5").count()
    response = client.post(
        "/admin/tracking/modelrate/add/",
        {
            "provider": "anthropic",
            "model": "claude-haiku-4-5",
            "display_name": "Claude Haiku 4.5",
            "aliases": "claude-haiku-4-5-20251001",
            "effective_from": "2026-12-01",
            "input_usd_per_mtok": "0.8",
            "output_usd_per_mtok": "4",
            "batch_discount_pct": "50",
            "notes": "",
        },
    )
    assert response.status_code == 302
    assert ModelRate.objects.filter(model="claude-haiku-4-5").count() == before + 1
    assert (
        ModelRate.objects.get(model="claude-haiku-4-5", effective_from="2026-12-01")
        .history.latest()
        .history_user
        == staff
    )


def test_searching_rates_for_a_dated_id_finds_the_row_it_resolves_to(client, staff, rates):
    response = client.get("/admin/tracking/modelrate/", {"q": "claude-sonnet-4-5-20250929"})
    assert response.status_code == 200
    results = list(response.context["cl"].result_list)
    assert [r.model for r in results] == ["claude-sonnet-4-5"]


def test_a_clients_user_cannot_open_admin(client):
    acme = Client.objects.create(name="Acme", slug="acme")
    user = get_user_model().objects.create_user("viewer", password="pw")
    ClientMembership.objects.create(user=user, client=acme)
    client.force_login(user)
    response = client.get("/admin/agency/client/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_the_rate_list_shows_prices_as_people_read_them(client, staff, rates):
    response = client.get("/admin/tracking/modelrate/", {"q": "claude-haiku-4-5"})
    row = response.content.decode()
    # Haiku 4.5: input $1, output $5, 5m write $1.25, cache read $0.10 per MTok.
    assert ">1.00<" in row and ">5.00<" in row and ">1.25<" in row and ">0.10<" in row
    assert "1.000000000" not in row


def test_alert_thresholds_are_edited_per_client_in_admin(client, staff):
    acme = Client.objects.create(name="Acme", slug="acme")
    response = client.post(
        f"/admin/agency/client/{acme.pk}/change/", client_form(alert_thresholds="25, 90,150")
    )
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.threshold_list() == [25, 90, 150]


@pytest.mark.parametrize("thresholds", ["50, 80%, 100", "fifty", "0,80", "50,1001", ", ,", "5²"])
def test_a_threshold_that_would_never_fire_is_refused_in_admin(client, staff, thresholds):
    acme = Client.objects.create(name="Acme", slug="acme")
    response = client.post(
        f"/admin/agency/client/{acme.pk}/change/", client_form(alert_thresholds=thresholds)
    )
    assert response.status_code == 200
    assert "alert_thresholds" in response.context["adminform"].form.errors
    acme.refresh_from_db()
    assert acme.alert_thresholds == "50,80,100"


def test_new_clients_start_with_the_default_thresholds_setting(settings):
    settings.DEFAULT_ALERT_THRESHOLDS = [60, 95]
    assert Client.objects.create(name="Acme", slug="acme").threshold_list() == [60, 95]


def _profile_form(terms: str) -> dict[str, str]:
    return {
        "name": "Northwind",
        "address": "",
        "tax_id": "",
        "email": "",
        "payment_terms_days": terms,
        "payment_instructions": "",
    }


def test_payment_terms_longer_than_a_year_are_refused_in_admin(client, staff):
    # 3,000,000 days puts the due date past the year 9999: every finalization would fail
    # with an OverflowError, and a draft's PDF with it.
    profile = AgencyProfile.load()
    url = f"/admin/agency/agencyprofile/{profile.pk}/change/"

    refused = client.post(url, _profile_form("3000000"))

    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["payment_terms_days"] == [
        "Ensure this value is less than or equal to 365."
    ]
    profile.refresh_from_db()
    assert (profile.name, profile.payment_terms_days) == ("Your Agency", 30)

    assert client.post(url, _profile_form("365")).status_code == 302
    profile.refresh_from_db()
    assert profile.payment_terms_days == 365


def test_the_database_refuses_payment_terms_longer_than_a_year():
    AgencyProfile.load()

    with pytest.raises(IntegrityError), transaction.atomic():
        AgencyProfile.objects.filter(pk=1).update(payment_terms_days=366)


def test_the_database_refuses_a_negative_tax_rate():
    """The form's validator is not the only guard: an invoice's tax is computed from this
    rate, and a negative one would lower what the client owes."""
    client = ClientFactory.create(tax_rate_pct=Decimal("20"))

    with pytest.raises(IntegrityError), transaction.atomic():
        Client.objects.filter(pk=client.pk).update(tax_rate_pct=Decimal("-0.001"))
    Client.objects.filter(pk=client.pk).update(tax_rate_pct=Decimal("0"))
