"""Admin and the invoice a client downloads, driven in Chromium on a laptop (1360 px) and a
phone (390 px). Screenshots go to artifacts/screenshots/ (docs-*), the PDF pages rendered
to PNG with pdftoppm beside them, for a person to look at."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import time_machine

from agency.models import Client
from billing.models import Invoice, InvoiceStatus
from billing.services.invoices import invoice_finalize, invoices_generate_month
from tests.browser.conftest import SCREENSHOTS
from tests.clock import AGENCY_TZ
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    ProjectFactory,
    StaffFactory,
    UsageEventFactory,
    priced_event,
)
from tracking.models import ApiKey, PricingStatus
from tracking.services import dirty_days_mark

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-for-tests"
OCT = date(2026, 10, 1)
PHONE = {"width": 390, "height": 844}


@pytest.fixture(autouse=True)
def pinned_clock() -> Iterator[None]:
    with time_machine.travel(datetime(2026, 11, 20, 12, tzinfo=AGENCY_TZ), tick=True):
        yield


@pytest.fixture
def seeded(live_server: Any, rates: None) -> dict[str, Any]:
    """Acme (pricing details off, a VAT note) with October's usage: one invoice issued,
    one draft (Globex, details on); staff, Acme's user and Globex's user."""
    acme = ClientFactory.create(
        slug="acme", name="Acme Corp", markup_pct=Decimal("25"), billing_name="Acme AP",
        billing_address="1 Main Street\nSpringfield", tax_rate_pct=Decimal("20"),
        tax_label="VAT", invoice_note="Reverse charge: VAT to be accounted for by the recipient.",
        invoice_split_by_project=True,
    )  # fmt: skip
    globex = ClientFactory.create(
        slug="globex", name="Globex", markup_pct=Decimal("40"), show_pricing_details=True
    )
    bot = ProjectFactory.create(client=acme, name="support-bot")
    for day in range(1, 29):
        at = datetime(2026, 10, day, 10, tzinfo=AGENCY_TZ)
        priced_event(acme, at=at, input_tokens=4_000_000, output_tokens=900_000, project=bot)
        priced_event(acme, at=at, model="claude-haiku-4-5", input_tokens=7_000_000)
        priced_event(globex, at=at, input_tokens=123_456, output_tokens=7_890)
    UsageEventFactory.create(
        client=globex, model="claude-experimental-9", pricing_status=PricingStatus.UNPRICED,
        cost_usd=None, occurred_at=datetime(2026, 11, 3, 9, tzinfo=AGENCY_TZ),
    )  # fmt: skip
    dirty_days_mark([(globex.pk, date(2026, 11, 3))])
    invoices_generate_month(month=OCT)
    issued = invoice_finalize(invoice_id=Invoice.objects.get(client=acme).pk)
    StaffFactory.create(username="staff", password=PASSWORD, is_superuser=True)
    ClientMembershipFactory.create(client=acme, user__username="acme-user", user__password=PASSWORD)
    ClientMembershipFactory.create(
        client=globex, user__username="globex-user", user__password=PASSWORD
    )
    return {
        "url": live_server.url,
        "acme": acme,
        "issued": issued,
        "draft": Invoice.objects.get(client=globex),
    }


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"docs-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def pdf_pages(pdf: bytes, name: str) -> tuple[int, str]:
    """The PDF's page count and text, its pages rendered to PNG beside the screenshots."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"docs-{name}.pdf"
    path.write_bytes(pdf)
    if shutil.which("pdftoppm"):
        subprocess.run(["pdftoppm", "-r", "70", "-png", str(path), str(path.with_suffix(""))])
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True).stdout
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True)
    pages = re.search(r"Pages:\s+(\d+)", info)
    assert pages is not None
    return int(pages.group(1)), text.stdout


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_admin_invoice_list_reads_like_money_and_months(page, seeded, viewport):
    if viewport == "phone":
        page.set_viewport_size(PHONE)
    sign_in(page, seeded["url"], "staff")
    page.goto(f"{seeded['url']}/admin/billing/invoice/")
    issued = seeded["issued"]
    row = page.locator("tr", has_text="INV-2026-00001")
    assert f"${issued.total_usd:,.2f}" in row.inner_text()
    assert "October 2026" in row.inner_text()
    # The number is one line, whatever the width.
    number = row.locator("span", has_text="INV-2026-00001")
    assert number.evaluate("el => el.getClientRects().length") == 1
    shot(page, f"admin-invoices-{viewport}")


def test_admin_finalize_asks_for_confirmation_first(page, seeded):
    sign_in(page, seeded["url"], "staff")
    page.goto(f"{seeded['url']}/admin/billing/invoice/?status__exact=draft")
    page.locator("input.action-select").first.check()
    page.select_option("select[name=action]", "finalize")
    page.click("button[name=index]")
    page.wait_for_selector("text=Finalizing is irreversible")
    shot(page, "admin-finalize-confirm")
    draft = seeded["draft"]
    draft.refresh_from_db()
    assert draft.status == InvoiceStatus.DRAFT
    page.click("input[name=confirm]")
    page.wait_for_selector("text=1 invoice(s) finalized")
    draft.refresh_from_db()
    assert draft.status == InvoiceStatus.FINALIZED


def test_admin_marks_paid_with_the_day_and_the_client_downloads_a_paid_pdf(chromium, page, seeded):
    sign_in(page, seeded["url"], "staff")
    page.goto(f"{seeded['url']}/admin/billing/invoice/")
    page.locator("tr", has_text="INV-2026-00001").locator("input.action-select").check()
    page.select_option("select[name=action]", "mark_paid")
    page.click("button[name=index]")
    page.fill("#paid_on", "2026-11-20")
    shot(page, "admin-mark-paid")
    page.click("input[name=confirm]")
    page.wait_for_selector("text=1 invoice(s) marked paid")
    issued = seeded["issued"]
    issued.refresh_from_db()
    assert (issued.status, issued.paid_on) == (InvoiceStatus.PAID, date(2026, 11, 20))
    phone = chromium.new_context(viewport=PHONE, accept_downloads=True)
    try:
        client_page = phone.new_page()
        sign_in(client_page, seeded["url"], "acme-user")
        client_page.goto(f"{seeded['url']}/clients/acme/")
        row = client_page.locator("tr", has_text="INV-2026-00001")
        with client_page.expect_download() as download:
            row.get_by_role("link", name="PDF").click()
        pdf = Path(download.value.path()).read_bytes()
        shot(client_page, "client-invoices-phone")
    finally:
        phone.close()
    pages, text = pdf_pages(pdf, "invoice-paid")
    assert pages == 1
    assert re.search(r"P\s*A\s*I\s*D", text)  # letter-spaced in the PDF
    assert "Paid on 20 Nov 2026" in text
    assert re.search(r"Amount due\s+\$0\.00", text)
    assert "Reverse charge" in text
    assert "Claude Haiku 4.5 — No project" in text and "untagged" not in text
    # Pricing details are off for Acme: amounts per line only.
    assert "markup" not in text.lower() and "MTok" not in text


def test_the_client_downloads_the_invoice_on_a_laptop_and_another_client_is_refused(
    chromium, page, seeded
):
    sign_in(page, seeded["url"], "acme-user")
    page.goto(f"{seeded['url']}/clients/acme/")
    shot(page, "client-invoices-desktop")
    row = page.locator("tr", has_text="INV-2026-00001")
    with page.expect_download() as download:
        row.get_by_role("link", name="PDF").click()
    pages, text = pdf_pages(Path(download.value.path()).read_bytes(), "invoice-private")
    assert pages == 1
    assert "support-bot" in text and "Amount due" in text
    pdf_url = row.get_by_role("link", name="PDF").get_attribute("href")
    other = chromium.new_context()
    try:
        outsider = other.new_page()
        sign_in(outsider, seeded["url"], "globex-user")
        assert outsider.request.get(f"{seeded['url']}{pdf_url}").status == 404
    finally:
        other.close()


def test_new_api_key_page_copies_the_key_and_a_reload_creates_none(chromium, seeded):
    context = chromium.new_context(viewport={"width": 1360, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=seeded["url"])
    page = context.new_page()
    try:
        sign_in(page, seeded["url"], "staff")
        page.goto(f"{seeded['url']}/admin/tracking/apikey/add/")
        page.fill("#id_name", "support-bot")
        page.select_option("#id_client", label="Acme Corp")
        page.click("input[name=_save]")
        page.wait_for_url("**/admin/tracking/apikey/created/")
        key = page.input_value("#api-key")
        assert key.startswith("cm_live_")
        assert "meter.wrap(anthropic.Anthropic()" in page.content()
        page.click("button.copy-key")
        page.wait_for_selector("text=Copied")
        assert page.evaluate("navigator.clipboard.readText()") == key
        shot(page, "admin-key-created")
        page.reload()
        assert "There is no new key to show" in page.content()
        assert key not in page.content()
        assert ApiKey.objects.filter(name="support-bot").count() == 1
    finally:
        context.close()


def test_saving_an_unchanged_client_adds_no_history(page, seeded):
    acme: Client = seeded["acme"]
    before = acme.history.count()
    sign_in(page, seeded["url"], "staff")
    page.goto(f"{seeded['url']}/admin/agency/client/{acme.pk}/change/")
    assert page.locator("label", has_text="Slack webhook URL").count() == 1
    page.click("input[name=_save]")
    page.wait_for_selector("text=was changed successfully")
    assert acme.history.count() == before


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_add_a_model_rate_from_the_unpriced_warning_prefills_the_model(page, seeded, viewport):
    if viewport == "phone":
        page.set_viewport_size(PHONE)
    sign_in(page, seeded["url"], "staff")
    page.goto(f"{seeded['url']}/overview/")
    page.get_by_role("link", name="add a model rate").click()
    page.wait_for_url("**/modelrate/add/**")
    assert page.input_value("#id_model") == "claude-experimental-9"
    assert page.input_value("#id_effective_from") == "2026-11-03"
    assert page.locator("label", has_text="US inference multiplier").count() == 1
    shot(page, f"admin-rate-prefilled-{viewport}")
