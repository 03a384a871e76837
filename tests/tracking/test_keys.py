from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import time_machine
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone

from agency.models import Client
from tests.factories import ClientFactory
from tracking.keys import api_key_create, api_key_lookup, api_key_revoke, hash_key
from tracking.models import ApiKey

pytestmark = pytest.mark.django_db


def new_client(**fields: Any) -> Client:
    return cast(Client, ClientFactory(**fields))


USAGE_URL = "/api/v1/usage"


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()


def test_key_has_the_documented_format():
    _, raw_key = api_key_create(name="app", client=new_client())
    assert re.fullmatch(r"cm_live_[A-Za-z0-9]{8}_[A-Za-z0-9]{32}", raw_key)


def test_only_prefix_and_hash_are_stored():
    key, raw_key = api_key_create(name="app", client=new_client())
    key.refresh_from_db()
    assert raw_key.split("_")[2] == key.prefix
    assert key.key_hash == hash_key(raw_key)
    assert raw_key.split("_")[3] not in key.key_hash


def test_lookup_finds_the_key():
    key, raw_key = api_key_create(name="app", client=new_client())
    assert api_key_lookup(raw_key) == key


def test_lookup_refuses_a_wrong_secret_with_a_real_prefix():
    _, raw_key = api_key_create(name="app", client=new_client())
    forged = raw_key[:-1] + ("A" if raw_key[-1] != "A" else "B")
    assert api_key_lookup(forged) is None


def test_lookup_refuses_garbage():
    assert api_key_lookup("not-a-key") is None


def test_revoked_key_is_refused_at_once_even_when_cached():
    key, raw_key = api_key_create(name="app", client=new_client())
    assert api_key_lookup(raw_key) is not None  # now cached
    api_key_revoke(key=key)
    assert api_key_lookup(raw_key) is None


def test_revoked_key_gets_401(client):
    key, raw_key = api_key_create(name="app", client=new_client())
    api_key_revoke(key=key)
    response = client.post(
        USAGE_URL, {"events": []}, content_type="application/json",
        headers={"Authorization": f"Bearer {raw_key}"},
    )  # fmt: skip
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_missing_key_gets_json_401(client):
    response = client.post(USAGE_URL, {"events": []}, content_type="application/json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"


def test_a_session_login_is_not_a_key(client, admin_user):
    client.force_login(admin_user)
    response = client.post(USAGE_URL, {"events": []}, content_type="application/json")
    assert response.status_code == 401


def test_use_records_last_used_at(client):
    key, raw_key = api_key_create(name="app", client=new_client())
    used_at = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
    with time_machine.travel(used_at, tick=False):
        client.post(
            USAGE_URL, {"events": []}, content_type="application/json",
            headers={"Authorization": f"Bearer {raw_key}"},
        )  # fmt: skip
    key.refresh_from_db()
    assert key.last_used_at == used_at


def test_last_used_at_is_written_at_most_once_a_minute(client):
    key, raw_key = api_key_create(name="app", client=new_client())
    headers = {"Authorization": f"Bearer {raw_key}"}
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        client.post(USAGE_URL, {"events": []}, content_type="application/json", headers=headers)
        first = ApiKey.objects.get(pk=key.pk).last_used_at
        traveller.shift(timedelta(seconds=20))
        client.post(USAGE_URL, {"events": []}, content_type="application/json", headers=headers)
        assert ApiKey.objects.get(pk=key.pk).last_used_at == first


def test_create_api_key_command_prints_a_working_client_key(capsys):
    acme = new_client(slug="acme")
    call_command("create_api_key", "--client", "acme", "--name", "support bot")
    raw_key = capsys.readouterr().out.strip()
    key = api_key_lookup(raw_key)
    assert key is not None
    assert (key.client, key.name) == (acme, "support bot")


def test_create_api_key_command_makes_agency_keys(capsys):
    call_command("create_api_key", "--agency")
    key = api_key_lookup(capsys.readouterr().out.strip())
    assert key is not None
    assert key.is_agency_wide


def test_admin_add_shows_the_full_key_once(admin_client):
    acme = new_client()
    response = admin_client.post(
        "/admin/tracking/apikey/add/", {"name": "from admin", "client": acme.pk}
    )
    assert response.status_code == 200
    raw_key = re.search(r"cm_live_[A-Za-z0-9]{8}_[A-Za-z0-9]{32}", response.content.decode())
    assert raw_key is not None
    key = api_key_lookup(raw_key.group(0))
    assert key is not None
    assert key.client == acme


def test_admin_change_page_never_shows_the_key(admin_client):
    key, raw_key = api_key_create(name="app", client=new_client())
    response = admin_client.get(f"/admin/tracking/apikey/{key.pk}/change/")
    assert response.status_code == 200
    assert raw_key not in response.content.decode()


def test_admin_revoke_action_revokes(admin_client):
    key, raw_key = api_key_create(name="app", client=new_client())
    admin_client.post("/admin/tracking/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api_key_lookup(raw_key) is None
