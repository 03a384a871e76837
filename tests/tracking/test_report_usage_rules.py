"""Nothing counted from both sources: ingest refuses a report-sourced client's events,
admin refuses switching a client that posts events, and the client page says which
source a client uses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.urls import reverse

from agency.models import Client, ClientMembership
from tests.factories import at, new_client, priced_event
from tracking.keys import api_key_create
from tracking.models import AccountKind, ProviderAccount, UsageEvent

pytestmark = pytest.mark.django_db

URL = "/api/v1/usage"


@pytest.fixture(autouse=True)
def _clock(time_machine: Any) -> None:
    time_machine.move_to(at(11, 20), tick=False)
    cache.clear()


@pytest.fixture
def acme(rates: None) -> Client:
    return new_client(slug="acme", name="Acme")


@pytest.fixture
def globex(rates: None) -> Client:
    return new_client(slug="globex", name="Globex", usage_source="provider_report")


def post(http: Any, key: str, events: list[dict[str, Any]]) -> Any:
    return http.post(
        URL,
        json.dumps({"events": events}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "model": "claude-sonnet-4-5",
        "usage": {"input_tokens": 1200, "output_tokens": 450},
        **fields,
    }


# --- ingest ------------------------------------------------------------------------------


def test_ingest_refuses_an_event_for_a_report_sourced_client_and_keeps_the_rest(
    client, acme, globex
):
    _, key = api_key_create(name="agency", client=None)
    response = post(
        client,
        key,
        [event("a", client="acme"), event("g", client="globex"), event("b", client="acme")],
    )
    assert response.status_code == 200
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    (error,) = body["results"][1]["errors"]
    assert error["code"] == "report_sourced_client"
    assert error["field"] == "events[1].client"
    assert "provider's usage report" in error["message"]
    assert UsageEvent.objects.filter(client=acme).count() == 2
    assert not UsageEvent.objects.filter(client=globex).exists()


def test_a_report_sourced_clients_own_key_has_each_event_refused(client, globex):
    """Per event, as every refusal of an event: the SDK then files them as dead letters
    with this answer in one request (a whole-request 4xx would make it halve the batch
    down to single events)."""
    _, key = api_key_create(name="globex app", client=globex)
    response = post(client, key, [event("g1"), event("g2")])
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (0, 2)
    errors = [result["errors"][0] for result in body["results"]]
    assert [(e["code"], e["field"]) for e in errors] == [
        ("report_sourced_client", "events[0].client"),
        ("report_sourced_client", "events[1].client"),
    ]
    assert "'globex' is metered from the provider's usage report" in errors[0]["message"]
    assert not UsageEvent.objects.exists()


def test_the_refusal_code_is_documented(client):
    document = client.get("/api/v1/openapi.json").json()
    assert "report_sourced_client" in json.dumps(document["components"]["schemas"])


# --- admin ---------------------------------------------------------------------------------


@pytest.fixture
def staff(client: Any) -> Any:
    user = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw")
    client.force_login(user)
    return user


def client_form(target: Client, **overrides: str) -> dict[str, str]:
    data = {
        "name": target.name,
        "slug": target.slug,
        "active": "on",
        "markup_pct": str(target.markup_pct),
        "monthly_budget_usd": "",
        "billing_email": "",
        "billing_name": "",
        "billing_address": "",
        "billing_tax_id": "",
        "tax_rate_pct": "0",
        "tax_label": "Tax",
        "alert_thresholds": "50,80,100",
        "slack_webhook_url": "",
        "usage_source": target.usage_source,
        "projects-TOTAL_FORMS": "0",
        "projects-INITIAL_FORMS": "0",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "provider_accounts-TOTAL_FORMS": "0",
        "provider_accounts-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def change(http: Any, target: Client, **overrides: str) -> Any:
    return http.post(f"/admin/agency/client/{target.pk}/change/", client_form(target, **overrides))


def test_admin_refuses_switching_a_client_that_posted_events_this_month(client, staff, acme):
    priced_event(acme, at=at(11, 18))
    response = change(client, acme, usage_source="provider_report")
    assert response.status_code == 200
    assert "posted usage events this month (last on 2026-11-18)" in response.content.decode()
    acme.refresh_from_db()
    assert acme.usage_source == "events"


def test_admin_switches_a_client_whose_events_stopped_before_this_month(client, staff, acme):
    priced_event(acme, at=at(10, 30))
    response = change(client, acme, usage_source="provider_report")
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.usage_source == "provider_report"


def test_admin_maps_an_api_key_inline_on_the_client(client, staff, globex):
    response = change(
        client,
        globex,
        **{
            "provider_accounts-TOTAL_FORMS": "1",
            "provider_accounts-0-provider": "anthropic",
            "provider_accounts-0-kind": "api_key",
            "provider_accounts-0-external_id": "apikey_01globex",
            "provider_accounts-0-label": "production",
        },
    )
    assert response.status_code == 302
    account = ProviderAccount.objects.get()
    assert (account.client, account.kind, account.external_id) == (
        globex,
        AccountKind.API_KEY,
        "apikey_01globex",
    )


def test_mapping_a_key_to_a_client_that_posts_events_warns(client, staff, acme):
    response = client.post(
        "/admin/tracking/provideraccount/add/",
        {
            "provider": "anthropic",
            "kind": "api_key",
            "external_id": "apikey_01acme",
            "client": str(acme.pk),
            "label": "",
        },
    )
    assert response.status_code == 302
    warnings = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("count in the reconciliation only" in w for w in warnings)
    assert ProviderAccount.objects.get().client == acme


def test_the_provider_account_list_shows_the_clients_source(client, staff, globex):
    ProviderAccount.objects.create(
        provider="anthropic", kind=AccountKind.API_KEY, external_id="apikey_g", client=globex
    )
    page = client.get("/admin/tracking/provideraccount/").content.decode()
    assert "apikey_g" in page
    assert "Provider report (no code change)" in page


def test_a_clients_user_cannot_open_the_provider_account_admin(client, acme):
    user = get_user_model().objects.create_user("viewer", password="pw")
    ClientMembership.objects.create(user=user, client=acme)
    client.force_login(user)
    response = client.get("/admin/tracking/provideraccount/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]


# --- the client page -------------------------------------------------------------------------


def page(http: Any, target: Client) -> Any:
    return http.get(reverse("client_detail", args=[target.slug]))


def member_of(target: Client, name: str) -> Any:
    user = get_user_model().objects.create_user(name, password="pw")
    ClientMembership.objects.create(user=user, client=target)
    return user


def test_the_client_page_says_a_report_sourced_client_is_metered_from_the_report(client, globex):
    client.force_login(member_of(globex, "globex-viewer"))
    text = page(client, globex).content.decode()
    assert "Usage source: the provider's daily usage report" in text


def test_the_client_page_says_an_events_client_sends_events(client, staff, acme):
    text = page(client, acme).content.decode()
    assert "Usage source: events sent by Acme's apps" in text


def test_the_client_page_is_refused_to_another_clients_user_and_anonymous(client, acme, globex):
    assert page(client, globex).status_code == 302  # anonymous: to sign in
    client.force_login(member_of(acme, "acme-viewer"))
    assert page(client, globex).status_code == 404
