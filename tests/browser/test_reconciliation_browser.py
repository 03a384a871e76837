"""The reconciliation page in a real browser: reached from the overview's line, the htmx
month picker, an empty month, the phone layout, and a client user refused. Screenshots
go to artifacts/screenshots (or $SHOTS_DIR)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine

from tests.billing.test_reconciliation import make_book
from tests.browser.conftest import SCREENSHOTS
from tests.factories import ClientMembershipFactory, StaffFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-for-tests"
SHOTS = Path(os.environ.get("SHOTS_DIR", str(SCREENSHOTS)))
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
WIDTHS = {"desktop": 1360, "phone": 390}


@pytest.fixture(autouse=True)
def pinned_clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=True):
        yield


@pytest.fixture(params=list(WIDTHS))
def view(request: Any, chromium: Any) -> Iterator[tuple[Any, str]]:
    context = chromium.new_context(viewport={"width": WIDTHS[request.param], "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page, request.param
    context.close()


@pytest.fixture
def world(live_server: Any) -> str:
    book = make_book()
    StaffFactory.create(username="staff")
    ClientMembershipFactory.create(
        client=book["acme"], user=UserFactory.create(username="acme-user")
    )
    return str(live_server.url)


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def shot(page: Any, name: str, size: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}-{size}.png"), full_page=True)


def test_reconciliation_page_from_the_overview_line(view: Any, world: str) -> None:
    page, size = view
    sign_in(page, world, "staff")
    page.goto(f"{world}/overview/?month=2026-11")
    line = page.locator("[data-testid=recon-line]")
    assert line.inner_text() == "Tracked 65.8% of the provider's spend this month"
    line.locator("a").click()
    page.wait_for_url("**/reconciliation/?month=2026-11")
    assert page.locator("[data-testid=coverage]").inner_text() == "65.8%"
    assert page.locator("[data-testid=provider-cost]").inner_text() == "$11.40"
    assert page.locator("[data-testid=untracked]").inner_text() == "$3.90"
    assert page.locator("[data-testid=drift-count]").inner_text() == "1 model drifting"
    drift_row = page.locator("tr[data-model=drift-model]")
    assert "+1.0%" in drift_row.inner_text()
    assert drift_row.locator("[data-testid=drifting]").count() == 1
    accounts = page.locator("[data-testid=accounts]").inner_text()
    assert "Acme workspace" in accounts and "metered from the report" in accounts
    assert page.locator("svg.chart").count() == 1
    # Tables scroll inside their cards; the page itself never scrolls sideways.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "40-reconciliation", size)

    # The month picker swaps the body through htmx and pushes the URL.
    assert page.locator("#month-select").input_value() == "2026-11"
    page.click("a[rel=prev]")
    page.wait_for_url("**/reconciliation/?month=2026-10")
    notice = page.locator("[data-testid=no-report]")
    notice.wait_for()
    assert "No provider report for October 2026." in notice.inner_text()
    assert page.locator("[data-testid=coverage]").count() == 0
    shot(page, "41-reconciliation-empty-month", size)


def test_a_client_user_is_refused(view: Any, world: str) -> None:
    page, _ = view
    sign_in(page, world, "acme-user")
    response = page.goto(f"{world}/reconciliation/?month=2026-11")
    assert response is not None and response.status == 404
