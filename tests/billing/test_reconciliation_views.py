"""The staff reconciliation page and the overview's one line; refused users."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine

from agency.models import Client
from billing.selectors.reconciliation import reconciliation_for
from billing.services.rollups import model_rollups_refresh
from tests.billing.test_reconciliation import make_book, rate, report
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    DailyRollupFactory,
    StaffFactory,
    UserFactory,
)


@pytest.fixture
def book(db: None) -> dict[str, Client]:
    return make_book()


URL = "/reconciliation/"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(autouse=True)
def frozen() -> Any:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def staff(client: Any, db: None) -> Any:
    client.force_login(StaffFactory.create())
    return client


def test_staff_see_the_months_figures(staff: Any, book: dict[str, Client]) -> None:
    response = staff.get(URL, {"month": "2026-11"})

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="coverage">65.8%<' in html
    assert 'data-testid="provider-cost">$11.40<' in html
    assert 'data-testid="untracked">$3.90<' in html
    assert 'data-testid="drift-count">1 model drifting<' in html
    assert 'data-model="drift-model"' in html
    assert "Acme workspace" in html
    assert "metered from the report" in html
    assert "Set aside: $2.00" in html
    assert "Not compared: $12.00" in html
    assert '<svg class="chart' in html


def test_a_sync_shows_at_once_through_the_cache(staff: Any, book: dict[str, Client]) -> None:
    assert (
        'data-testid="provider-cost">$11.40<'
        in staff.get(URL, {"month": "2026-11"}).content.decode()
    )
    report(date(2026, 11, 5), "recon-model", "1000", input_tokens=1_000)
    html = staff.get(URL, {"month": "2026-11"}).content.decode()
    assert 'data-testid="provider-cost">$21.40<' in html


def test_a_month_without_a_report_says_so(staff: Any, book: dict[str, Client]) -> None:
    html = staff.get(URL, {"month": "2026-10"}).content.decode()
    assert "No provider report for October 2026." in html
    assert 'data-testid="coverage"' not in html
    assert "0.0%" not in html


def test_htmx_month_picker_gets_the_body_alone(staff: Any, book: dict[str, Client]) -> None:
    response = staff.get(URL, {"month": "2026-11"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="recon-body">')
    assert "<html" not in html


def test_an_unreadable_month_shows_the_current_one(staff: Any, book: dict[str, Client]) -> None:
    response = staff.get(URL, {"month": "soon"})
    assert response.status_code == 200
    assert 'data-testid="month-shown">November 2026<' in response.content.decode()


def test_a_month_out_of_range_is_a_404(staff: Any, db: None) -> None:
    assert staff.get(URL, {"month": "1999-12"}).status_code == 404


def test_a_client_user_is_refused(client: Any, book: dict[str, Client]) -> None:
    membership = ClientMembershipFactory.create(client=book["acme"])
    client.force_login(membership.user)
    assert client.get(URL, {"month": "2026-11"}).status_code == 404


def test_a_user_without_staff_rights_is_refused(client: Any, db: None) -> None:
    client.force_login(UserFactory.create())
    assert client.get(URL).status_code == 404


def test_anonymous_is_sent_to_login(client: Any, db: None) -> None:
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_overview_links_the_coverage_line(staff: Any, book: dict[str, Client]) -> None:
    html = staff.get("/overview/", {"month": "2026-11"}).content.decode()
    assert "Tracked 65.8% of the provider's spend this month" in html
    assert 'href="/reconciliation/?month=2026-11"' in html


def test_overview_has_no_line_without_a_report(staff: Any, book: dict[str, Client]) -> None:
    html = staff.get("/overview/", {"month": "2026-10"}).content.decode()
    assert 'data-testid="recon-line"' not in html


def _cents(text: str) -> Decimal:
    return Decimal(text.replace("$", "").replace(",", ""))


def test_the_pages_money_adds_up_to_the_cent(staff: Any, db: None) -> None:
    """Fractional cents on both sides: each model's figures are rounded to the cent, the
    cards add up those rows, and untracked is provider − tracked as shown (the rule of the
    invoice). Exactly: provider $2.008, tracked $1.0008, which round to $2.01 and $1.00
    whose difference is not the $1.0072 untracked rounded ($1.01) either way."""
    rate("recon-model")
    rate("drift-model")
    acme = ClientFactory.create(name="Acme", slug="acme")
    for model in ("recon-model", "drift-model"):
        report(date(2026, 11, 3), model, "100.4", api_key_id="apikey_x", input_tokens=1_000)
        DailyRollupFactory.create(
            client=acme, day=date(2026, 11, 3), model=model, cost_usd=Decimal("0.5004")
        )
    model_rollups_refresh(start=date(2026, 11, 3), end=date(2026, 11, 3))

    html = staff.get(URL, {"month": "2026-11"}).content.decode()

    cards = {
        name: _cents(re.search(rf'data-testid="{name}">([^<]+)<', html).group(1))  # type: ignore[union-attr]
        for name in ("provider-cost", "tracked-cost", "untracked")
    }
    rows = re.findall(
        r'<tr data-model="[^"]+">.*?<td class="num">([^<]+)</td>\s*'
        r'<td class="num">([^<]+)</td>\s*<td class="num">[^<]+</td>\s*'
        r'<td class="num">([^<]+)</td>',
        html,
        re.S,
    )
    assert len(rows) == 2
    provider, tracked, untracked = (sum(_cents(row[i]) for row in rows) for i in range(3))
    assert cards == {
        "provider-cost": provider,
        "tracked-cost": tracked,
        "untracked": untracked,
    }
    assert cards["untracked"] == cards["provider-cost"] - cards["tracked-cost"]
    assert [row[2] for row in rows] == ["$0.50", "$0.50"]  # $1.00 − $0.50 on each row
    # The exact figures stay the selector's (and so the API's).
    total = reconciliation_for(date(2026, 11, 1)).total
    assert (total.provider_cost_usd, total.tracked_cost_usd) == (
        Decimal("2.008"),
        Decimal("1.0008"),
    )
