"""Issue 13 in a real browser, at desktop width and on a 390 px phone: figures that agree
(estimate vs invoiced, totals = sums of rows), "not priced", "too early to project", the
alert history of a past month, the staff alerts page, month pickers, the overview filter
and CSV, sortable tables, invoice badges, the favicon, the phone layout, and what a
client's own user may see. Screenshots go to artifacts/screenshots (or $SHOTS_DIR) for a person to look at."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import time_machine

from billing.models import Alert, AlertDelivery, AlertKind, DeliveryChannel
from billing.services.invoices import (
    invoice_finalize,
    invoice_generate,
    invoice_mark_paid,
    invoice_send,
    invoice_void,
)
from tests.browser.conftest import SCREENSHOTS
from tests.clock import AGENCY_TZ
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    DailyRollupFactory,
    StaffFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-for-tests"
# artifacts/screenshots, or SHOTS_DIR when set (e.g. outside the worktree).
SHOTS = Path(os.environ.get("SHOTS_DIR", str(SCREENSHOTS)))
NOW = datetime(2026, 11, 20, 12, tzinfo=AGENCY_TZ)
WIDTHS = {"desktop": 1360, "phone": 390}


@pytest.fixture(autouse=True)
def pinned_clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=True):
        yield


@pytest.fixture(params=list(WIDTHS))
def view(request: Any, chromium: Any) -> Iterator[tuple[Any, str]]:
    width = WIDTHS[request.param]
    context = chromium.new_context(viewport={"width": width, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page, request.param
    context.close()


def shot(page: Any, name: str, size: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}-{size}.png"), full_page=True)


def _month(year: int, month: int) -> date:
    return date(year, month, 1)


@pytest.fixture
def world(live_server: Any, settings: Any, tmp_path: Path) -> dict[str, Any]:
    """Acme (yellow, with a model without a rate and usage without a project; invoices in
    every state over past months; September far over budget with no alert on record),
    Globex (red), Initech (green); staff, an Acme user and a Globex user."""
    settings.MEDIA_ROOT = tmp_path
    acme = ClientFactory.create(
        name="Acme Corp",
        slug="acme",
        markup_pct=Decimal("25"),
        monthly_budget_usd=Decimal("100"),
        billing_email="ap@acme.example",
    )
    globex = ClientFactory.create(
        name="Globex", slug="globex", markup_pct=Decimal("40"), monthly_budget_usd=Decimal("50")
    )
    initech = ClientFactory.create(
        name="Initech", slug="initech", markup_pct=Decimal("15"), monthly_budget_usd=Decimal("900")
    )
    day = date(2026, 11, 3)
    # Two lines of $1.005 billed each at 0%... here at 25%: raw 34.804 + 34.804.
    for model in ("claude-sonnet-4-5", "claude-haiku-4-5"):
        DailyRollupFactory.create(
            client=acme, day=day, model=model, project="support-bot", cost_usd=Decimal("34.804")
        )
    DailyRollupFactory.create(
        client=acme, day=day, model="claude-sonnet-4-5", cost_usd=Decimal("1")
    )
    DailyRollupFactory.create(
        client=acme,
        day=date(2026, 11, 4),
        model="claude-experimental-9",
        events=5,
        unpriced_events=5,
        cost_usd=Decimal("0"),
    )
    DailyRollupFactory.create(client=globex, day=day, model="gpt-4.1", cost_usd=Decimal("50"))
    DailyRollupFactory.create(
        client=initech, day=day, model="gemini-2.5-pro", cost_usd=Decimal("30")
    )
    # Past months: Jun draft, Jul void, Aug sent, Sep paid (878% of budget), Oct finalized.
    past = {6: "10", 7: "12", 8: "14", 9: "702.4", 10: "20"}
    for m, raw in past.items():
        DailyRollupFactory.create(
            client=acme, day=date(2026, m, 10), model="claude-opus-4-1", cost_usd=Decimal(raw)
        )
    invoices = {}
    for m in past:
        invoice = invoice_generate(client_id=acme.pk, month=_month(2026, m))
        assert invoice is not None
        invoices[m] = invoice
    for m in (7, 8, 9, 10):
        invoice_finalize(invoice_id=invoices[m].pk)
    invoice_void(invoice_id=invoices[7].pk, reason="Wrong address")
    invoice_send(invoice_id=invoices[8].pk)
    invoice_mark_paid(invoice_id=invoices[9].pk)
    alert = Alert.objects.create(
        client=globex,
        month=_month(2026, 11),
        kind=AlertKind.ACTUAL,
        threshold=100,
        budget_usd=Decimal("50"),
        billed_usd=Decimal("70"),
        subject="Globex reached 100% of its November 2026 budget",
        message="…",
        created_at=NOW,
    )
    AlertDelivery.objects.create(
        alert=alert, channel=DeliveryChannel.EMAIL, target="ops@agency.example", updated_at=NOW
    )
    StaffFactory.create(username="staff")
    ClientMembershipFactory.create(user=UserFactory.create(username="acme-user"), client=acme)
    ClientMembershipFactory.create(user=UserFactory.create(username="globex-user"), client=globex)
    return {"url": live_server.url, "invoices": invoices}


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def money(text: str) -> Decimal:
    return Decimal(text.split("\n")[0].replace("$", "").replace(",", "").strip())


def no_sideways_scroll(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_overview_figures_add_up_with_filter_picker_and_csv(view, world):
    page, size = view
    sign_in(page, world["url"], "staff")
    assert page.url.endswith("/overview/")
    rows = page.locator("#overview-table tbody tr[data-client]")
    assert rows.count() == 3
    billed = [money(rows.nth(i).locator(".col-billed").inner_text()) for i in range(3)]
    assert money(page.locator("[data-testid=total-billed]").inner_text()) == sum(billed)
    acme = page.locator("tr[data-client=acme]")
    # 34.804 × 1.25 = 43.505 → $43.51 per line, twice, + $1.25: $88.27 (not $88.26).
    assert money(acme.locator(".col-billed").inner_text()) == Decimal("88.27")
    assert "estimate" in acme.locator(".col-billed").inner_text()
    assert "5 calls not priced" in acme.inner_text()
    assert "$0.00" not in acme.locator(".col-billed").inner_text()
    if size == "desktop":
        for i in range(3):
            row = rows.nth(i)
            raw = money(row.locator(".col-raw").inner_text())
            margin = money(row.locator(".col-margin").inner_text())
            assert raw + margin == money(row.locator(".col-billed").inner_text())
    else:
        # Client, billed and budget status are the columns in view on a phone.
        headers = page.locator("#overview-table thead th:visible")
        names = [h.inner_text().split()[0].lower() for h in headers.all()]
        assert names[:3] == ["client", "billed", "budget"]
        assert not page.locator("tr[data-client=acme] .col-raw").is_visible()
        no_sideways_scroll(page)
    shot(page, "10-overview", size)
    # Filter by name as you type, then by status (a reload through the form).
    page.fill("input[name=q]", "glob")
    assert page.locator("tr[data-client=acme]").is_hidden()
    assert page.locator("tr[data-client=globex]").is_visible()
    page.fill("input[name=q]", "")
    page.select_option("select[name=status]", "red")
    page.wait_for_url("**status=red**")
    assert [r.get_attribute("data-client") for r in rows.all()] == ["globex"]
    shot(page, "11-overview-filtered-red", size)
    # The month picker: months with data only, never a future one; a past month.
    page.goto(f"{world['url']}/overview/")
    options = page.locator("select[name=month] option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["2026-11", "2026-10", "2026-09", "2026-08", "2026-07", "2026-06"]
    page.select_option("select[name=month]", "2026-09")
    page.wait_for_url("**month=2026-09**")
    assert page.locator("select[name=month]").input_value() == "2026-09"
    sept = page.locator("tr[data-client=acme] .col-billed").inner_text()
    # 702.4 × 1.25 = $878.00, as the paid invoice says.
    assert money(sept) == Decimal("878.00") and "invoiced" in sept
    shot(page, "12-overview-september", size)
    with page.expect_download() as download:
        page.click("text=Download CSV")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    table = list(csv.reader(io.StringIO(text)))
    acme_row = next(r for r in table if r[1] == "acme")
    assert acme_row[table[0].index("billed_usd")] == "878.00"


def test_client_page_estimate_lines_sorting_badges_and_favicon(view, world):
    page, size = view
    sign_in(page, world["url"], "staff")
    page.goto(f"{world['url']}/clients/acme/")
    assert money(page.locator("[data-testid=billed-total]").inner_text()) == Decimal("88.27")
    assert "estimate" in page.locator(".kpi").first.inner_text().lower()
    assert money(page.locator("[data-testid=lines-billed]").inner_text()) == Decimal("88.27")
    lines = page.locator("[data-testid=bill-lines] tbody tr")
    amounts = [
        money(t)
        for t in lines.locator("td:last-child").all_inner_texts()
        if t.strip().startswith("$")
    ]
    assert sum(amounts) == Decimal("88.27")
    unpriced = page.locator("[data-testid=bill-lines] tr[data-line=claude-experimental-9]")
    assert "not priced" in unpriced.inner_text() and "5 calls" in unpriced.inner_text()
    assert "$0.00" not in unpriced.inner_text()
    # Lines are named in plain words: no "untagged".
    assert "untagged" not in page.locator("main").inner_text().lower()
    # Sort the lines by amount (progressive enhancement).
    page.locator("[data-testid=bill-lines] thead th").last.locator("button").click()
    page.locator("[data-testid=bill-lines] thead th").last.locator("button").click()
    first = lines.first.locator("td:last-child").inner_text()
    assert money(first) == max(amounts)
    # Too early? Not on the 20th: a projection.
    assert "projected month end $" in page.locator(".kpi-wide").inner_text()
    # Invoice badges: five states, five colours; the download links are not clipped.
    badges = page.locator("table.invoices [data-invoice-status]")
    colours = {
        b.get_attribute("data-invoice-status"): b.evaluate(
            "el => getComputedStyle(el).backgroundColor"
        )
        for b in badges.all()
    }
    assert set(colours) == {"draft", "finalized", "sent", "paid", "void"}
    assert len(set(colours.values())) == 5
    for cell in page.locator("table.invoices td.downloads").all():
        assert cell.evaluate("el => el.scrollWidth <= el.clientWidth + 1")
    favicon = page.locator("link[rel=icon]").get_attribute("href")
    assert page.request.get(f"{world['url']}{favicon}").status == 200
    if size == "phone":
        no_sideways_scroll(page)
        # The chart is drawn across the screen, its labels still readable.
        chart = page.locator("svg.chart-bars")
        box = chart.bounding_box()
        assert box is not None and box["width"] >= 330
        font = chart.locator("text.axis").first.evaluate("el => el.getBoundingClientRect().height")
        assert font >= 9  # pixels on screen: readable
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("section.card", has=chart).screenshot(path=str(SHOTS / "23-chart-phone.png"))
    shot(page, "20-client-page", size)


def test_past_month_alert_history_and_empty_month(view, world):
    page, size = view
    sign_in(page, world["url"], "staff")
    page.goto(f"{world['url']}/clients/acme/?month=2026-09")
    assert page.locator("[data-testid=month-shown]").inner_text() == "September 2026"
    assert page.locator("#month-select").input_value() == "2026-09"
    history = page.locator("#alert-history").inner_text()
    assert "No alerts" not in history
    assert "Reached 100% of the budget (878.0% used in all)" in history
    assert money(page.locator("[data-testid=billed-total]").inner_text()) == Decimal("878.00")
    inv = world["invoices"][9]
    inv.refresh_from_db()
    assert inv.number in page.locator(".kpi").first.inner_text()
    shot(page, "21-client-september-878pct", size)
    # A month without data says so instead of drawing an axis of "1, 0, 0".
    page.goto(f"{world['url']}/clients/globex/?month=2026-10")
    body = page.locator("#month-body").inner_text()
    assert "No usage in October 2026" in body
    assert page.locator("svg.chart-line").count() == 0
    shot(page, "22-client-empty-month", size)


def test_staff_alerts_page_and_refusals(view, world):
    page, size = view
    sign_in(page, world["url"], "staff")
    page.click("header >> text=Alerts")
    page.wait_for_url("**/alerts/")
    row = page.locator("tr[data-alert]").first
    assert "Globex reached 100%" in row.inner_text()
    assert "ops@agency.example" in row.inner_text()
    if size == "phone":
        assert page.evaluate(
            "document.querySelector('header').scrollWidth <= window.innerWidth + 1"
        )
    shot(page, "30-alerts", size)
    page.context.clear_cookies()
    sign_in(page, world["url"], "acme-user")
    for url in ("/alerts/", "/overview/", "/overview.csv", "/clients/globex/"):
        response = page.goto(f"{world['url']}{url}")
        assert response is not None and response.status == 404, url


def test_client_user_sees_billed_amounts_without_pricing_details(view, world):
    page, size = view
    sign_in(page, world["url"], "acme-user")
    assert page.url.endswith("/clients/acme/")
    text = page.locator("main").inner_text().lower()
    for word in (
        "markup",
        "untagged",
        "not priced",
        "unpriced",
        "claude-experimental-9",
        "raw cost",
    ):
        assert word not in text, word
    assert money(page.locator("[data-testid=billed-total]").inner_text()) == Decimal("88.27")
    # Drafts are not shown to the client; issued invoices are.
    badges = page.locator("table.invoices [data-invoice-status]").evaluate_all(
        "bs => bs.map(b => b.dataset.invoiceStatus)"
    )
    assert "draft" not in badges and "paid" in badges
    if size == "phone":
        no_sideways_scroll(page)
        assert page.evaluate(
            "document.querySelector('header').scrollWidth <= window.innerWidth + 1"
        )
    shot(page, "40-client-user", size)
