"""Liveness, readiness, and a clean 503 when the database or Redis is down (issue 10,
item 5).

"Down" is real here: the default connection is pointed at a closed TCP port (PostgreSQL)
or a database file that cannot be opened (SQLite), and Redis at a closed port. The shared
servers are never touched.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.migrations.recorder import MigrationRecorder

from tests.factories import ClientFactory, ClientMembershipFactory, StaffFactory
from tracking.keys import api_key_create

pytestmark = pytest.mark.django_db

EVENT = {"id": "msg_1", "model": "claude-haiku-4-5", "usage": {"input_tokens": 1}}


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def database_down() -> Iterator[None]:
    """Every query of this thread fails to connect, as when the server is down."""
    original = connections[DEFAULT_DB_ALIAS]
    broken_settings = {**original.settings_dict}
    if original.vendor == "postgresql":
        broken_settings.update(HOST="127.0.0.1", PORT=str(closed_port()))
    else:
        broken_settings["NAME"] = "/nonexistent-clientmeter-dir/db.sqlite3"
    broken = original.__class__(broken_settings, alias=DEFAULT_DB_ALIAS)
    connections[DEFAULT_DB_ALIAS] = broken
    try:
        yield
    finally:
        broken.close()
        connections[DEFAULT_DB_ALIAS] = original


@pytest.fixture
def raw_key() -> str:
    cache.clear()
    return api_key_create(name="app", client=ClientFactory.create(slug="acme"))[1]


def post_usage(client: Any, raw_key: str) -> Any:
    return client.post(
        "/api/v1/usage", {"events": [EVENT]}, content_type="application/json",
        headers={"Authorization": f"Bearer {raw_key}"},
    )  # fmt: skip


def assert_json_503(response: Any) -> None:
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "30"
    assert json.loads(response.content) == {
        "error": {
            "code": "unavailable",
            "message": "The service is briefly unavailable; retry the same request later.",
        }
    }


def test_ingest_answers_json_503_when_the_database_is_down(client, raw_key):
    with database_down():
        response = post_usage(client, raw_key)
    assert_json_503(response)


def test_ingest_with_a_cached_key_answers_json_503_when_the_database_is_down(
    client, raw_key, settings
):
    # The key is found in the cache; the failure comes from the ingest's own queries.
    settings.API_KEY_CACHE_SECONDS = 60
    assert post_usage(client, raw_key).status_code == 200
    with database_down():
        response = post_usage(client, raw_key)
    assert_json_503(response)


def test_budget_api_answers_json_503_when_the_database_is_down(client, raw_key):
    with database_down():
        response = client.get("/api/v1/budget", headers={"Authorization": f"Bearer {raw_key}"})
    assert_json_503(response)


def test_a_page_answers_a_plain_503_page_when_the_database_is_down(client):
    client.force_login(StaffFactory.create())
    with database_down():
        response = client.get("/overview/")
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert "temporarily unavailable" in response.content.decode()


def test_the_login_page_answers_503_when_the_database_is_down(client):
    with database_down():
        response = client.post("/accounts/login/", {"username": "a", "password": "b"})
    assert response.status_code == 503


def test_ingest_answers_json_503_when_redis_is_down(client, raw_key, settings):
    # The rate limit counts in the shared cache: Redis refusing must not be a 500 either.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
        }
    }
    assert_json_503(post_usage(client, raw_key))


# --- probes ----------------------------------------------------------------------------


def test_healthz_is_liveness_only_and_stays_ok_without_a_database(client):
    with database_down():
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"ok": True})


def test_readyz_is_ok_with_database_migrations_and_redis(client, settings):
    response = client.get("/readyz")
    assert response.status_code == 200
    redis = "ok" if settings.REDIS_URL else "not configured"
    assert response.json() == {
        "ok": True,
        "checks": {"database": "ok", "migrations": "ok", "redis": redis},
    }


def test_readyz_answers_503_when_the_database_is_down(client):
    with database_down():
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    body = response.json()
    assert body["ok"] is False
    assert (body["checks"]["database"], body["checks"]["migrations"]) == ("unavailable", "unknown")


def test_readyz_answers_503_while_a_migration_is_not_applied(client):
    MigrationRecorder(connection).migration_qs.filter(app="billing").latest("id").delete()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == "1 unapplied"


def test_readyz_answers_503_when_redis_is_down(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == "unavailable"


def test_a_client_user_sees_the_same_503_page(client):
    membership = ClientMembershipFactory.create()
    client.force_login(membership.user)
    with database_down():
        response = client.get(f"/clients/{membership.client.slug}/")
    assert response.status_code == 503


def test_an_outage_raised_outside_a_view_is_a_503_too(rf):
    # Django calls handler500 while it handles the exception (a middleware's session
    # save, say): the outage is in sys.exc_info().
    from django.db import OperationalError

    from agency.views import server_error

    try:
        raise OperationalError("the server closed the connection")
    except OperationalError:
        api, page = server_error(rf.post("/api/v1/usage")), server_error(rf.get("/overview/"))
    assert_json_503(api)
    assert (page.status_code, page["Retry-After"]) == (503, "30")


def test_any_other_error_outside_a_view_is_still_a_500(rf):
    from agency.views import server_error

    try:
        raise ValueError("a bug")
    except ValueError:
        response = server_error(rf.get("/overview/"))
    assert response.status_code == 500


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_whatever_host_the_orchestrator_uses(client, settings, path):
    """docker-compose's healthcheck asks 127.0.0.1 from inside the container; production's
    ALLOWED_HOSTS names the public host only. The probes must answer anyway, and nothing
    else may."""
    settings.ALLOWED_HOSTS = ["clientmeter.example.com"]
    assert client.get(path, HTTP_HOST="127.0.0.1:8000").status_code == 200
    assert client.get("/accounts/login/", HTTP_HOST="127.0.0.1:8000").status_code == 400
    assert client.get(f"{path}/x", HTTP_HOST="127.0.0.1:8000").status_code == 400
