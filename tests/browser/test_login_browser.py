"""Signing in with a wrong password, then being locked out, as a person sees it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import StaffFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_lockout_is_explained_on_the_sign_in_page(page, live_server, settings, screenshot):
    settings.AXES_ENABLED = True
    StaffFactory.create(username="staff")

    def try_password(password: str) -> Any:
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("#id_username", "staff")
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        return page.locator("[role=alert]").inner_text()

    first = try_password("wrong")
    assert first.startswith("That username and password did not match.")
    assert "After 5 failed attempts in a row, signing in is paused for 15 minutes." in first
    screenshot("login-01-wrong-password")
    for _ in range(4):
        message = try_password("wrong")
    assert message.startswith("Too many failed attempts.")
    # Even the right password is refused now, and the page says why and for how long.
    message = try_password("pw-for-tests")
    assert "Signing in as staff from this address is paused for 15 minutes" in message
    assert page.url.endswith("/accounts/login/")
    screenshot("login-02-locked-out")
