"""Staff and a client's user drive the dashboards in a real browser."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from agency.calendar import local_day, shift_month
from billing.models import EndUserDailyRollup, PromptDailyRollup
from billing.services.invoices import invoice_finalize, invoice_generate
from billing.services.rollups import _end_user_rows, _prompt_rows
from tests.clock import AGENCY_TZ
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    DailyRollupFactory,
    StaffFactory,
    UsageEventFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-for-tests"


@pytest.fixture(autouse=True)
def pinned_clock() -> Iterator[None]:
    """Mid-month for the app (the live server runs in this process), so a run that starts
    just before midnight on a month's last day does not seed one month and show the next.
    Chromium keeps the real clock; cookies still work, as they carry a Max-Age."""
    with time_machine.travel(datetime(2026, 11, 20, 12, tzinfo=AGENCY_TZ), tick=True):
        yield


@pytest.fixture
def seeded(live_server: Any) -> dict[str, Any]:
    """Three clients this month: green (10% of budget), yellow (90%), red (150%); last
    month's usage and a finalized invoice for the green one; staff and a green user."""
    today = timezone.localdate()
    last_month = shift_month(today.replace(day=1), -1)
    clients = {}
    for slug, name, raw in (
        ("green", "Green Co", "80"),
        ("yellow", "Yellow Co", "720"),
        ("red", "Red Co", "1200"),
    ):
        client = ClientFactory.create(
            slug=slug, name=name, markup_pct=Decimal("25"), monthly_budget_usd=Decimal("1000")
        )
        DailyRollupFactory.create(
            client=client, day=today, model="claude-sonnet-4-5", cost_usd=Decimal(raw)
        )
        clients[slug] = client
    DailyRollupFactory.create(
        client=clients["green"],
        day=last_month.replace(day=12),
        model="claude-opus-4-1",
        cost_usd=Decimal("42"),
    )
    invoice = invoice_generate(client_id=clients["green"].pk, month=last_month)
    assert invoice is not None
    invoice = invoice_finalize(invoice_id=invoice.pk)
    alice = UsageEventFactory.create(client=clients["green"], end_user="alice", prompt_hash="p-1")
    # The top lists read their own daily rollups: build them for alice's day only.
    alice_day = local_day(alice.occurred_at)
    EndUserDailyRollup.objects.bulk_create(_end_user_rows(clients["green"].pk, alice_day))
    PromptDailyRollup.objects.bulk_create(_prompt_rows(clients["green"].pk, alice_day))
    StaffFactory.create(username="staff")
    ClientMembershipFactory.create(
        user=UserFactory.create(username="green-user"), client=clients["green"]
    )
    return {
        "clients": clients,
        "last_month": last_month,
        "invoice": invoice,
        "url": live_server.url,
    }


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_sign_in_page(page, seeded, screenshot):
    page.goto(f"{seeded['url']}/accounts/login/")
    assert page.locator("h1").inner_text() == "Sign in"
    screenshot("01-sign-in")


def test_staff_overview_colours_each_client_by_budget_status(page, seeded, screenshot):
    sign_in(page, seeded["url"], "staff")
    assert page.url.endswith("/overview/")
    statuses = {}
    for slug in ("green", "yellow", "red"):
        meter = page.locator(f"tr[data-client={slug}] .meter-wrap")
        fill = meter.locator(".meter-fill")
        statuses[slug] = (
            meter.get_attribute("data-status"),
            meter.locator(".status-text").inner_text().strip(),
            fill.evaluate("el => getComputedStyle(el).backgroundColor"),
        )
    assert [s[0] for s in statuses.values()] == ["green", "yellow", "red"]
    assert [s[1].lower() for s in statuses.values()] == ["on track", "near budget", "over budget"]
    assert statuses["green"][2] == "rgb(26, 127, 55)"
    assert statuses["yellow"][2] == "rgb(227, 160, 8)"
    assert statuses["red"][2] == "rgb(180, 35, 24)"
    screenshot("02-staff-overview")


def test_staff_sorts_the_overview_without_reloading(page, seeded):
    sign_in(page, seeded["url"], "staff")
    page.evaluate("window.__marker = 'still here'")
    page.click("#overview-table th >> text=Billed")
    page.wait_for_url("**/overview/?*sort=-billed")
    first = page.locator("#overview-table tbody tr").first.get_attribute("data-client")
    assert first == "red"
    assert page.evaluate("window.__marker") == "still here"


def test_staff_changes_month_through_htmx_without_a_full_reload(page, seeded, screenshot):
    sign_in(page, seeded["url"], "staff")
    page.click("text=Green Co")
    page.wait_for_url("**/clients/green/?month=*")
    assert "claude-sonnet-4-5" in page.locator("#month-body").inner_text()
    # Top end users and prompts arrive in a second request after the page.
    page.locator("#top-lists").get_by_text("alice").wait_for()
    screenshot("03-staff-client-page")
    page.evaluate("window.__marker = 'still here'")
    page.click("a[rel=prev]")
    label = seeded["last_month"].strftime("%Y-%m")
    page.wait_for_url(f"**/clients/green/?month={label}")
    page.wait_for_function(
        "document.querySelector('#month-body').innerText.includes('claude-opus-4-1')"
    )
    assert page.evaluate("window.__marker") == "still here"
    assert page.locator("h1").count() == 1
    screenshot("04-staff-client-previous-month")


def test_staff_downloads_the_invoice_csv_and_pdf(page, seeded):
    sign_in(page, seeded["url"], "staff")
    page.goto(f"{seeded['url']}/clients/green/")
    number = seeded["invoice"].number
    row = page.locator("tr", has_text=number)
    with page.expect_download() as csv_download:
        row.get_by_role("link", name="Lines CSV").click()
    csv_text = Path(csv_download.value.path()).read_text(encoding="utf-8")
    assert "claude" in csv_text.lower()
    with page.expect_download() as events_download:
        row.get_by_role("link", name="Events CSV").click()
    events_csv = Path(events_download.value.path()).read_text(encoding="utf-8")
    assert events_csv.startswith("event_id,")
    pdf_url = row.locator("text=PDF").get_attribute("href")
    response = page.request.get(f"{seeded['url']}{pdf_url}")
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.body().startswith(b"%PDF-")


def test_client_user_sees_only_their_client(page, seeded, screenshot):
    sign_in(page, seeded["url"], "green-user")
    assert page.url.endswith("/clients/green/")
    text = page.locator("main").inner_text()
    assert "Green Co" in text
    assert "Raw cost" not in text
    assert "Yellow Co" not in text and "Red Co" not in text
    screenshot("05-client-user-page")
    for url in ("/clients/red/", "/clients/yellow/", "/overview/"):
        response = page.goto(f"{seeded['url']}{url}")
        assert response is not None and response.status == 404, url
    invoice = seeded["invoice"]
    response = page.request.get(f"{seeded['url']}/clients/red/invoices/{invoice.pk}.pdf")
    assert response.status == 404


def test_client_user_month_change_keeps_the_page(page, seeded, screenshot):
    sign_in(page, seeded["url"], "green-user")
    page.evaluate("window.__marker = 1")
    page.select_option("#month-select", seeded["last_month"].strftime("%Y-%m"))
    page.wait_for_function(
        "document.querySelector('#month-body').innerText.includes('claude-opus-4-1')"
    )
    assert page.evaluate("window.__marker") == 1
    screenshot("06-client-user-previous-month")
