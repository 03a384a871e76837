from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from tests.factories import new_client
from tracking.keys import (
    ApiKeyError,
    api_key_create,
    api_key_lookup,
    api_key_revoke,
    api_key_rotate,
    hash_key,
)
from tracking.models import ApiKey

pytestmark = pytest.mark.django_db


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
    # POST/redirect/GET: reloading the page that shows the key posts nothing again.
    assert (response.status_code, response["Location"]) == (302, "/admin/tracking/apikey/created/")
    page = admin_client.get(response["Location"]).content.decode()
    raw_key = re.search(r"cm_live_[A-Za-z0-9]{8}_[A-Za-z0-9]{32}", page)
    assert raw_key is not None
    key = api_key_lookup(raw_key.group(0))
    assert key is not None
    assert key.client == acme
    assert 'class="button copy-key"' in page
    assert f"export CLIENTMETER_API_KEY={raw_key.group(0)}" in page
    assert f'meter.wrap(anthropic.Anthropic(), client="{acme.slug}"' in page


def test_reloading_the_new_key_page_neither_creates_nor_shows_a_key_again(admin_client):
    acme = new_client()
    response = admin_client.post(
        "/admin/tracking/apikey/add/", {"name": "from admin", "client": acme.pk}
    )
    first = admin_client.get(response["Location"]).content.decode()
    again = admin_client.get(response["Location"]).content.decode()
    assert re.search(r"cm_live_[A-Za-z0-9]{8}_", first)
    assert not re.search(r"cm_live_[A-Za-z0-9]{8}_", again)
    assert "There is no new key to show" in again
    assert ApiKey.objects.filter(client=acme).count() == 1


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


# --- the lookup cache never outlives the key (issue 10, item 4) ----------------------------


@pytest.fixture
def cached_lookups(settings):
    """The production setting with a shared cache: lookups are cached for a minute."""
    settings.API_KEY_CACHE_SECONDS = 60


def test_a_deleted_key_is_refused_at_once_even_when_cached(cached_lookups):
    key, raw_key = api_key_create(name="app", client=new_client())
    assert api_key_lookup(raw_key) is not None  # now cached
    key.delete()
    assert api_key_lookup(raw_key) is None


def test_admins_bulk_delete_refuses_the_keys_at_once(cached_lookups, admin_client, client):
    key, raw_key = api_key_create(name="app", client=new_client())
    headers = {"Authorization": f"Bearer {raw_key}"}
    # Authenticated (then refused for the empty batch): the lookup is now cached.
    assert post_usage(client, headers).status_code == 400
    response = admin_client.post(
        "/admin/tracking/apikey/",
        {"action": "delete_selected", "_selected_action": [key.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not ApiKey.objects.filter(pk=key.pk).exists()
    assert post_usage(client, headers).status_code == 401


def test_deleting_a_client_refuses_its_keys_at_once(cached_lookups):
    acme = new_client()
    _, raw_key = api_key_create(name="app", client=acme)
    assert api_key_lookup(raw_key) is not None
    acme.delete()  # cascades to its keys
    assert api_key_lookup(raw_key) is None


def test_rotating_a_key_refuses_the_old_one_at_once_and_the_new_one_works(cached_lookups):
    acme = new_client()
    old, old_raw = api_key_create(name="app", client=acme)
    assert api_key_lookup(old_raw) is not None
    new, new_raw = api_key_rotate(key=old)
    assert api_key_lookup(old_raw) is None
    found = api_key_lookup(new_raw)
    assert found == new
    assert (found.name, found.client) == ("app", acme)
    old.refresh_from_db()
    assert old.revoked_at is not None


def test_a_revoked_key_cannot_be_rotated():
    key, _ = api_key_create(name="app", client=new_client())
    api_key_revoke(key=key)
    with pytest.raises(ApiKeyError, match="already revoked"):
        api_key_rotate(key=key)


def test_admin_rotate_action_shows_each_new_key_once(cached_lookups, admin_client):
    acme = new_client()
    first, first_raw = api_key_create(name="bot", client=acme)
    second, second_raw = api_key_create(name="etl", client=None)
    response = admin_client.post(
        "/admin/tracking/apikey/",
        {"action": "rotate", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    assert response.status_code == 200
    # Each once in its field (the SDK snippet repeats the first).
    shown = re.findall(
        r'value="(cm_live_[A-Za-z0-9]{8}_[A-Za-z0-9]{32})"', response.content.decode()
    )
    assert len(shown) == 2
    assert api_key_lookup(first_raw) is None
    assert api_key_lookup(second_raw) is None
    found = [api_key_lookup(raw) for raw in shown]
    assert sorted(key.name for key in found if key is not None) == ["bot", "etl"]


def test_without_a_shared_cache_lookups_are_not_cached(settings, django_assert_num_queries):
    # Each process would keep its own copy: a key revoked in one worker would live on in
    # the others. The default is therefore no caching unless REDIS_URL is set.
    settings.API_KEY_CACHE_SECONDS = 0
    _, raw_key = api_key_create(name="app", client=new_client())
    for _ in range(2):
        with django_assert_num_queries(1):
            assert api_key_lookup(raw_key) is not None


def post_usage(client, headers):
    return client.post(USAGE_URL, {"events": []}, content_type="application/json", headers=headers)


# A second process (a gunicorn worker elsewhere): it reads lines of raw keys on stdin and
# answers whether its own lookup accepts each one.
_OTHER_PROCESS = """
import sys
import django
django.setup()
from tracking.keys import api_key_lookup
for line in sys.stdin:
    print("accepted" if api_key_lookup(line.strip()) else "refused", flush=True)
"""


@pytest.fixture
def other_process(settings):
    """Another process with its own cache client, on the same database and Redis."""
    db = connection.settings_dict
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("a second process needs a shared database and cache: PostgreSQL and Redis")
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "agency.settings_test",
        "DATABASE_URL": url,
        "API_KEY_CACHE_SECONDS": "60",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    def ask(raw_key: str) -> str:
        stdin.write(raw_key + "\n")
        stdin.flush()
        return stdout.readline().strip()

    yield ask
    stdin.close()
    process.wait(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_a_key_deleted_in_admin_is_refused_by_every_process(other_process, admin_client):
    key, raw_key = api_key_create(name="app", client=new_client())
    assert other_process(raw_key) == "accepted"  # cached over there now
    admin_client.post(
        "/admin/tracking/apikey/",
        {"action": "delete_selected", "_selected_action": [key.pk], "post": "yes"},
    )
    assert other_process(raw_key) == "refused"


@pytest.mark.django_db(transaction=True)
def test_a_key_revoked_or_rotated_here_is_refused_by_every_process(other_process):
    revoked, revoked_raw = api_key_create(name="one", client=new_client())
    rotated, rotated_raw = api_key_create(name="two", client=new_client())
    assert [other_process(revoked_raw), other_process(rotated_raw)] == ["accepted"] * 2
    api_key_revoke(key=revoked)
    _, new_raw = api_key_rotate(key=rotated)
    assert [other_process(revoked_raw), other_process(rotated_raw)] == ["refused"] * 2
    assert other_process(new_raw) == "accepted"
