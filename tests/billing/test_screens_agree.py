"""Issue 13, screens: every page, the overview CSV and the budget API show a month's billed
figure as the invoice computes it (round per line, then sum), labelled an estimate until
the invoice is issued; never $0 for calls without a rate; no projection from the first
hours of a month. Each test has the user who must be refused where a page is involved."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from billing.selectors.lines import month_bill
from billing.services.invoices import invoice_finalize, invoice_generate
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    DailyRollupFactory,
    StaffFactory,
    at,
)
from tracking.keys import api_key_create

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_cache")]

NOW = at(11, 20)
NOVEMBER = dt.date(2026, 11, 1)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def acme():
    """Two models each billed $1.005: per line $1.01 + $1.01 = $2.02, while rounding the
    month's sum would say $2.01 (the issue's $87.79 against $87.80)."""
    client = ClientFactory.create(
        name="Acme", slug="acme", markup_pct=Decimal("0"), monthly_budget_usd=Decimal("4.04")
    )
    for model in ("claude-sonnet-4-5", "claude-haiku-4-5"):
        DailyRollupFactory.create(
            client=client, day=dt.date(2026, 11, 3), model=model, cost_usd=Decimal("1.005")
        )
    return client


def _staff(client):
    client.force_login(StaffFactory.create())


def _budget_api(http, client_obj, month="2026-11"):
    _, key = api_key_create(client=client_obj, name="k")
    response = http.get(
        "/api/v1/budget", {"month": month}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200
    return json.loads(response.content)


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


def _billed_on_page(content: str) -> str:
    match = re.search(r'data-testid="billed-total">([^<]+)<', content)
    assert match, "no billed figure on the page"
    return match.group(1).strip()


def test_the_estimate_rounds_per_line_like_the_invoice(acme, frozen):
    bill = month_bill(acme, NOVEMBER)
    assert bill.is_estimate
    assert bill.billed_usd == Decimal("2.02")


def test_client_page_overview_and_api_show_the_per_line_estimate(client, acme, frozen):
    _staff(client)
    page = client.get(reverse("client_detail", args=["acme"])).content.decode()
    assert _billed_on_page(page) == "$2.02"
    assert "estimate" in page.lower()
    overview = client.get(reverse("overview")).content.decode()
    assert re.search(r'class="num col-billed">\$2\.02<', overview)
    assert 'data-testid="total-billed">$2.02<' in overview
    body = _budget_api(client, acme)
    assert body["billed_usd"] == "2.02"
    assert body["billed_basis"] == "estimate"
    assert body["percent_used"] == "50.0"  # 2.02 of 4.04: on the same billed basis


def test_once_issued_every_screen_shows_the_invoice(client, acme, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    with time_machine.travel(at(12, 2), tick=False):
        invoice = invoice_generate(client_id=acme.pk, month=NOVEMBER)
        assert invoice is not None
        invoice = invoice_finalize(invoice_id=invoice.pk)
        # A late event after issue changes the rollups, not what was invoiced.
        DailyRollupFactory.create(
            client=acme, day=dt.date(2026, 11, 29), model="gpt-4.1", cost_usd=Decimal("0.5")
        )
        _staff(client)
        page = client.get(reverse("client_detail", args=["acme"]) + "?month=2026-11")
        content = page.content.decode()
        assert _billed_on_page(content) == "$2.02" == f"${invoice.subtotal_usd}"
        assert invoice.number in content
        body = _budget_api(client, acme)
        assert body["billed_usd"] == "2.02"
        assert body["billed_basis"] == "invoice"
        rows = _csv(client.get("/overview.csv?month=2026-11"))
        acme_row = next(r for r in rows if r[0] == "Acme")
        header = rows[0]
        assert acme_row[header.index("billed_usd")] == "2.02"
        assert acme_row[header.index("basis")] == "invoice"


def test_overview_rows_add_up_and_raw_plus_margin_is_billed(client, frozen):
    # Raw $1.004 + $1.004 + ... at 40%: rounded per row the parts must still add up.
    for name, raws in (("A", ("1.844", "0.4")), ("B", ("2.296", "0.004")), ("C", ("1.8449",))):
        c = ClientFactory.create(name=name, markup_pct=Decimal("40"))
        for i, raw in enumerate(raws):
            DailyRollupFactory.create(
                client=c, day=dt.date(2026, 11, 3), model=f"m{i}", cost_usd=Decimal(raw)
            )
    _staff(client)
    rows = _csv(client.get("/overview.csv"))
    header, body = rows[0], rows[1:]
    raw_i, billed_i, margin_i = (header.index(k) for k in ("raw_usd", "billed_usd", "margin_usd"))
    clients = [r for r in body if r[0] != "Total"]
    total = next(r for r in body if r[0] == "Total")
    for r in clients:
        assert Decimal(r[raw_i]) + Decimal(r[margin_i]) == Decimal(r[billed_i])
    for i in (raw_i, billed_i, margin_i):
        assert sum(Decimal(r[i]) for r in clients) == Decimal(total[i])
    # The page shows the same figures as the CSV.
    page = client.get(reverse("overview")).content.decode()
    assert f"${Decimal(total[raw_i]):,}" in page
    assert f"${Decimal(total[billed_i]):,}" in page


def test_overview_csv_is_staff_only(client, acme, frozen):
    client.force_login(ClientMembershipFactory.create(client=acme).user)
    assert client.get("/overview.csv").status_code == 404
    client.logout()
    assert client.get("/overview.csv").status_code == 302


# --- never $0 ------------------------------------------------------------------------------


@pytest.fixture
def unpriced(acme):
    DailyRollupFactory.create(
        client=acme,
        day=dt.date(2026, 11, 4),
        model="claude-experimental-9",
        events=3,
        unpriced_events=3,
        cost_usd=Decimal("0"),
    )
    return acme


def test_a_model_without_a_rate_is_not_priced_on_the_client_page(client, unpriced, frozen):
    _staff(client)
    content = client.get(reverse("client_detail", args=["acme"])).content.decode()
    row = re.search(r"<tr[^>]*>\s*<th[^>]*>claude-experimental-9.*?</tr>", content, re.S)
    assert row, "the unpriced model has no row"
    assert "not priced" in row.group(0)
    assert "$0.00" not in row.group(0)
    assert "3 calls" in row.group(0)


def test_the_api_and_overview_csv_say_not_priced(client, unpriced, frozen):
    body = _budget_api(client, unpriced)
    assert body["not_priced"] == {"calls": 3}
    _staff(client)
    rows = _csv(client.get("/overview.csv"))
    header = rows[0]
    acme_row = next(r for r in rows if r[0] == "Acme")
    assert acme_row[header.index("not_priced_calls")] == "3"


def test_the_api_says_null_when_everything_is_priced(client, acme, frozen):
    assert _budget_api(client, acme)["not_priced"] is None


# --- too early to project -----------------------------------------------------------------


def test_no_projection_in_the_first_day_of_a_month(client, acme):
    DailyRollupFactory.create(
        client=acme, day=dt.date(2026, 12, 1), model="claude-sonnet-4-5", cost_usd=Decimal("3")
    )
    with time_machine.travel(at(12, 1, 21), tick=False):
        body = _budget_api(client, acme, month="2026-12")
        assert body["projected_billed_usd"] is None
        assert body["projected_status"] is None
        assert body["status"] == "green"
        _staff(client)
        page = client.get(reverse("client_detail", args=["acme"])).content.decode()
        assert "Too early to project" in page
        overview = client.get(reverse("overview")).content.decode()
        projected = re.search(r'<td class="num col-projected">(.*?)</td>', overview, re.S)
        assert projected and "Too early to project" in projected.group(1)


def test_a_projection_after_the_first_day(client, acme):
    DailyRollupFactory.create(
        client=acme, day=dt.date(2026, 12, 1), model="claude-sonnet-4-5", cost_usd=Decimal("3")
    )
    with time_machine.travel(at(12, 2, 12), tick=False):
        body = _budget_api(client, acme, month="2026-12")
        assert body["projected_billed_usd"] is not None


def test_project_and_feature_tables_add_up_to_the_bill(acme, frozen):
    from billing.selectors import dashboard

    for feature, project in (("chat", "a"), ("search", "b"), ("", "")):
        DailyRollupFactory.create(
            client=acme,
            day=dt.date(2026, 11, 5),
            model="claude-sonnet-4-5",
            project=project,
            feature=feature,
            cost_usd=Decimal("0.3333"),
        )
    bill = month_bill(acme, NOVEMBER)
    data = dashboard.client_month(acme, month=NOVEMBER, today=NOW.date(), bill=bill)
    for table in (data.by_project, data.by_feature):
        assert sum(g.billed_usd for g in table) == bill.billed_usd
        assert sum(g.raw_usd for g in table) == bill.raw_usd


# --- calls counted alike on every table of the page ---------------------------------------


def _calls_on_the_page(content):
    """The Calls card, the bill's total row, and the sums of each usage table's Calls."""
    card = re.search(
        r'<div class="kpi-label">Calls</div>\s*<div class="kpi-value num">([\d,]+)<', content
    )
    lines_total = re.search(
        r"<tfoot>\s*<tr>\s*<th scope=\"row\">Total</th>\s*<td class=\"num\">([\d,]+)<", content
    )
    tables = {}
    for title, body in re.findall(r"<h3>([^<]+)</h3>.*?<tbody>(.*?)</tbody>", content, re.S):
        if title.startswith("Billed by line"):
            continue  # "4 calls" per line: its total row is the figure compared
        cells = re.findall(r"</th>\s*<td class=\"num\">([\d,]+)</td>", body)
        tables[title] = sum(int(c.replace(",", "")) for c in cells)
    assert card and lines_total, "the page lost its Calls card or its bill total"
    return int(card.group(1).replace(",", "")), int(lines_total.group(1).replace(",", "")), tables


@pytest.mark.parametrize("who", ["staff", "client user"])
def test_every_calls_figure_counts_the_same_calls(client, rates, frozen, who):
    """4 priced calls and 3 to a model without a rate: staff count all 7 in every Calls
    figure (and are told 3 are not priced); a client user not shown pricing details,
    whose bill leaves the unpriced line out, sees the 4 billed calls in every one of them
    (card, bill total, models, projects, features, end users), not 7 here and 4 there."""
    from billing.services.rollups import rollups_rebuild_period
    from tests.factories import priced_event
    from tracking.models import UsageEvent

    globex = ClientFactory.create(name="Globex", slug="globex", show_pricing_details=False)
    for hour in range(4):
        priced_event(globex, at=at(11, 3, 9 + hour))
    for hour in range(3):
        priced_event(globex, at=at(11, 4, 9 + hour), model="claude-experimental-9")
    UsageEvent.objects.filter(client=globex).update(feature="chat", end_user="u-1")
    assert UsageEvent.objects.filter(client=globex, pricing_status="unpriced").count() == 3
    rollups_rebuild_period(start=NOVEMBER, end=dt.date(2026, 11, 30), client_id=globex.pk)
    if who == "staff":
        _staff(client)
        expected = 7
    else:
        client.force_login(ClientMembershipFactory.create(client=globex).user)
        expected = 4
    content = client.get(reverse("client_detail", args=["globex"]), {"top": "1"}).content.decode()

    card, lines_total, tables = _calls_on_the_page(content)
    assert card == lines_total == expected
    assert set(tables) >= {"Tokens by model", "By project", "By feature, with cache hit ratio",
                           "Top end users"}  # fmt: skip
    assert tables == dict.fromkeys(tables, expected)
    assert ("3 not priced yet" in content) is (who == "staff")
    # The user who must be refused: another client's user sees none of it.
    other = ClientMembershipFactory.create(client=ClientFactory.create(slug="initech")).user
    client.force_login(other)
    assert client.get(reverse("client_detail", args=["globex"])).status_code == 404
