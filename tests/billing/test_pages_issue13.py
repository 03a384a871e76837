"""Issue 13, pages: what a client's own user may see (pricing details off by default),
the staff alerts page, the month picker and the past months' alert history. Each view
test has the user who must be refused."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from billing.models import Alert, AlertDelivery, AlertKind, DeliveryChannel
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    DailyRollupFactory,
    StaffFactory,
    at,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_cache", "frozen")]

NOW = at(11, 20)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def acme():
    client = ClientFactory.create(
        name="Acme", slug="acme", markup_pct=Decimal("25"), monthly_budget_usd=Decimal("10")
    )
    DailyRollupFactory.create(client=client, day=dt.date(2026, 11, 3), cost_usd=Decimal("2"))
    # No project, and a model without a rate.
    DailyRollupFactory.create(
        client=client,
        day=dt.date(2026, 11, 4),
        model="claude-experimental-9",
        events=4,
        unpriced_events=4,
        cost_usd=Decimal("0"),
    )
    DailyRollupFactory.create(
        client=client, day=dt.date(2026, 9, 4), project="", cost_usd=Decimal("87.8")
    )
    return client


@pytest.fixture
def globex():
    return ClientFactory.create(name="Globex", slug="globex")


def _page(http, slug="acme", **query) -> str:
    url = reverse("client_detail", args=[slug])
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    response = http.get(url)
    assert response.status_code == 200
    return response.content.decode()


def _visible(html: str) -> str:
    """The page's text as a person reads it: no tags, attributes or scripts."""
    html = re.sub(r"<script.*?</script>", " ", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", html)


# --- the client portal's privacy -------------------------------------------------------------


def test_a_clients_user_sees_no_markup_no_untagged_and_no_unpriced_gaps(client, acme):
    client.force_login(ClientMembershipFactory.create(client=acme).user)
    for month in ("2026-11", "2026-09"):
        text = _visible(_page(client, month=month)).lower()
        assert "markup" not in text
        assert "untagged" not in text
        assert "not priced" not in text
        assert "unpriced" not in text
        assert "claude-experimental-9" not in text
        assert "per mtok" not in text and "/ mtok" not in text
    assert "No project" in _visible(_page(client, month="2026-09"))
    # The lines' total counts the lines shown: 1 priced call here, not the 4 unpriced.
    lines = re.search(r'data-testid="bill-lines">.*?</table>', _page(client), re.S)
    assert lines is not None
    assert re.search(r"<th scope=\"row\">Total</th>\s*<td class=\"num\">1</td>", lines.group(0))


def test_a_client_set_to_see_pricing_details_sees_the_gaps(client, acme):
    acme.show_pricing_details = True
    acme.save()
    client.force_login(ClientMembershipFactory.create(client=acme).user)
    text = _visible(_page(client))
    assert "not priced" in text
    assert "claude-experimental-9" in text


def test_staff_always_see_everything(client, acme):
    client.force_login(StaffFactory.create())
    text = _visible(_page(client))
    assert "markup 25" in text
    assert "not priced" in text
    assert "4 calls" in text


def test_another_clients_user_is_refused(client, acme, globex):
    client.force_login(ClientMembershipFactory.create(client=globex).user)
    assert client.get(reverse("client_detail", args=["acme"])).status_code == 404


# --- month picker -----------------------------------------------------------------------------


def test_the_month_picker_offers_months_with_data_and_shows_the_month_viewed(client, acme):
    client.force_login(StaffFactory.create())
    html = _page(client, month="2026-10")  # a month without data, still shown
    options = re.findall(r'<option value="(\d{4}-\d\d)"( selected)?>', html)
    assert [m for m, _ in options] == ["2026-11", "2026-10", "2026-09"]
    assert [m for m, sel in options if sel] == ["2026-10"]
    assert "No usage in October 2026" in html


def test_the_client_picker_never_offers_a_future_month(client, acme):
    DailyRollupFactory.create(client=acme, day=dt.date(2027, 2, 1))
    client.force_login(StaffFactory.create())
    assert "2027-02" not in re.findall(r'<option value="([\d-]+)"', _page(client)).__repr__()


def test_the_overview_has_the_same_picker_and_shows_a_past_month(client, acme):
    client.force_login(StaffFactory.create())
    html = client.get(reverse("overview") + "?month=2026-09").content.decode()
    options = re.findall(r'<option value="(\d{4}-\d\d)"( selected)?>', html)
    assert [m for m, _ in options] == ["2026-11", "2026-09"]
    assert [m for m, sel in options if sel] == ["2026-09"]
    # September's $87.80 raw at 25%: $109.75 billed.
    assert 'class="num col-billed">$109.75<' in html


def test_the_overview_filters_by_name_and_status(client, acme, globex):
    client.force_login(StaffFactory.create())
    html = client.get(reverse("overview") + "?q=glob").content.decode()
    assert 'data-client="globex"' in html and 'data-client="acme"' not in html
    html = client.get(reverse("overview") + "?status=none").content.decode()
    assert 'data-client="globex"' in html and 'data-client="acme"' not in html
    html = client.get(reverse("overview") + "?status=green").content.decode()
    assert 'data-client="acme"' in html and 'data-client="globex"' not in html


# --- alerts ------------------------------------------------------------------------------------


@pytest.fixture
def alerts(acme, globex):
    made = []
    for c, month, created in (
        (acme, dt.date(2026, 9, 1), at(9, 20)),
        (globex, dt.date(2026, 11, 1), at(11, 10)),
    ):
        alert = Alert.objects.create(
            client=c,
            month=month,
            kind=AlertKind.ACTUAL,
            threshold=80,
            subject=f"{c.name} reached 80% of its budget",
            message="…",
            created_at=created,
        )
        AlertDelivery.objects.create(
            alert=alert,
            channel=DeliveryChannel.EMAIL,
            target="ops@agency.example",
            updated_at=created,
        )
        made.append(alert)
    return made


def test_the_alerts_page_lists_every_alert_newest_first_with_deliveries(client, alerts):
    client.force_login(StaffFactory.create())
    response = client.get(reverse("alerts"))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index("Globex reached 80%") < html.index("Acme reached 80%")
    assert html.count("ops@agency.example") == 2


def test_the_alerts_page_is_refused_to_client_users_and_anonymous(client, alerts, acme):
    client.force_login(ClientMembershipFactory.create(client=acme).user)
    assert client.get(reverse("alerts")).status_code == 404
    client.logout()
    assert client.get(reverse("alerts")).status_code == 302


def test_a_past_month_far_over_budget_never_says_no_alerts(client, acme):
    # September: $109.75 billed of a $10 budget (1097.5%), loaded after the fact: no alert
    # was recorded then. Its history says which thresholds were crossed.
    client.force_login(StaffFactory.create())
    text = _visible(_page(client, month="2026-09"))
    assert "No alerts" not in text
    for threshold in (50, 80, 100):
        assert f"Reached {threshold}% of the budget" in text


def test_a_month_shows_its_own_recorded_alerts(client, alerts):
    client.force_login(StaffFactory.create())
    text = _visible(_page(client, month="2026-09"))
    assert "Acme reached 80% of its budget" in text
    assert "Reached 80% of the budget" not in text  # recorded, not repeated
