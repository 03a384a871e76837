"""Login throttling with django-axes (issue 10, item 9): after LOGIN_FAILURE_LIMIT wrong
passwords for one username from one address, that username is locked out from that
address for LOGIN_COOLOFF_MINUTES, on the site's login page and admin's alike.

The test settings turn axes off (``AXES_ENABLED = False``, axes' documented setting for
test suites, so ``client.login`` keeps working); these tests turn it on.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.factories import ClientMembershipFactory, StaffFactory

pytestmark = pytest.mark.django_db

PASSWORD = "the-right-password"


@pytest.fixture(autouse=True)
def axes_on(settings: Any) -> None:
    settings.AXES_ENABLED = True


@pytest.fixture
def staff() -> Any:
    user = StaffFactory.create(username="boss")
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture
def viewer() -> Any:
    user = ClientMembershipFactory.create(user__username="viewer").user
    user.set_password(PASSWORD)
    user.save()
    return user


def sign_in(
    client: Any,
    username: str,
    password: str,
    *,
    ip: str = "203.0.113.5",
    url: str = "/accounts/login/",
) -> Any:
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=ip)


def fail(client: Any, username: str, times: int, **where: str) -> None:
    """Wrong passwords: the first four get the form again, the fifth the lockout."""
    for attempt in range(1, times + 1):
        response = sign_in(client, username, "wrong", **where)
        assert response.status_code == (200 if attempt < 5 else 429)


def signed_in(client: Any) -> bool:
    return "_auth_user_id" in client.session


def test_a_failed_sign_in_says_how_many_tries_there_are(client, staff):
    response = sign_in(client, "boss", "wrong")
    page = response.content.decode()
    assert "That username and password did not match." in page
    assert "After 5 failed attempts in a row, signing in is paused for 15 minutes." in page


def test_staff_are_locked_out_after_five_failures_even_with_the_right_password(client, staff):
    fail(client, "boss", 5)
    response = sign_in(client, "boss", PASSWORD)
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed attempts" in page
    assert "Signing in as boss from this address is paused for 15 minutes" in page
    assert not signed_in(client)
    # The explanation is on the sign-in page itself, with its form.
    assert 'id="id_username"' in page


def test_four_failures_then_the_right_password_signs_in(client, staff):
    fail(client, "boss", 4)
    response = sign_in(client, "boss", PASSWORD)
    assert response.status_code == 302
    assert signed_in(client)


def test_a_success_resets_the_count(client, staff):
    fail(client, "boss", 4)
    assert sign_in(client, "boss", PASSWORD).status_code == 302
    client.logout()
    fail(client, "boss", 4)
    assert sign_in(client, "boss", PASSWORD).status_code == 302


def test_a_client_user_is_locked_out_too(client, viewer):
    fail(client, "viewer", 5)
    response = sign_in(client, "viewer", PASSWORD)
    assert response.status_code == 429
    assert not signed_in(client)


def test_admins_login_counts_and_locks_the_same_way(client, staff):
    fail(client, "boss", 5, url="/admin/login/")
    response = sign_in(client, "boss", PASSWORD, url="/admin/login/")
    assert response.status_code == 429
    assert "Too many failed attempts" in response.content.decode()
    # And the lockout holds on the site's own login page.
    assert sign_in(client, "boss", PASSWORD).status_code == 429


def test_the_lockout_ends_after_the_cool_off(client, staff):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        fail(client, "boss", 5)
        assert sign_in(client, "boss", PASSWORD).status_code == 429
        clock.shift(timedelta(minutes=14))
        assert sign_in(client, "boss", PASSWORD).status_code == 429
        clock.shift(timedelta(minutes=16))
        assert sign_in(client, "boss", PASSWORD).status_code == 302
    assert signed_in(client)


def test_an_attacker_elsewhere_cannot_lock_the_user_out(client, staff):
    # Locking by username alone would let anyone lock staff out: the lock is per
    # username and address.
    fail(client, "boss", 5, ip="198.51.100.66")
    assert sign_in(client, "boss", PASSWORD, ip="203.0.113.5").status_code == 302


def test_other_usernames_from_the_locked_address_still_sign_in(client, staff, viewer):
    fail(client, "boss", 5)
    assert sign_in(client, "viewer", PASSWORD).status_code == 302


def test_lockouts_are_listed_in_admin(client, admin_client, staff):
    fail(client, "boss", 5)
    response = admin_client.get("/admin/axes/accessattempt/")
    assert response.status_code == 200
    assert "boss" in response.content.decode()


def test_the_test_client_still_logs_in_with_axes_off(client, staff, settings):
    settings.AXES_ENABLED = False
    assert client.login(username="boss", password=PASSWORD)
    assert get_user_model().objects.get(pk=client.session["_auth_user_id"]) == staff


def test_a_forged_forwarded_for_header_does_not_dodge_the_lockout(client, staff):
    # Without DJANGO_BEHIND_TLS_PROXY the address is REMOTE_ADDR only: a client making up
    # X-Forwarded-For on each try is still the same address.
    for attempt in range(1, 6):
        response = client.post(
            "/accounts/login/",
            {"username": "boss", "password": "wrong"},
            REMOTE_ADDR="203.0.113.5",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{attempt}",
        )
    assert response.status_code == 429
