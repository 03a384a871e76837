"""Who sees what on the dashboards: staff, a client's own user (the member) and the
outsider (a user of another client), who must get a 404 on every page and fragment."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from agency.calendar import local_day
from billing.services.rollups import rollups_rebuild_days
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    DailyRollupFactory,
    StaffFactory,
    UsageEventFactory,
    UserFactory,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("frozen", "private_cache"),
]

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def acme():
    client = ClientFactory.create(name="Acme", slug="acme", markup_pct=Decimal("25"))
    DailyRollupFactory.create(
        client=client, day=dt.date(2026, 11, 19), model="claude-sonnet-4-5", cost_usd=Decimal("80")
    )
    DailyRollupFactory.create(
        client=client, day=dt.date(2026, 10, 5), model="claude-opus-4-1", cost_usd=Decimal("4")
    )
    return client


@pytest.fixture
def globex():
    client = ClientFactory.create(name="Globex", slug="globex", markup_pct=Decimal("40"))
    DailyRollupFactory.create(
        client=client, day=dt.date(2026, 11, 18), model="gpt-4.1", cost_usd=Decimal("1000")
    )
    return client


@pytest.fixture
def staff(client):
    user = StaffFactory.create()
    client.force_login(user)
    return user


@pytest.fixture
def member(client, acme):
    user = ClientMembershipFactory.create(client=acme).user
    client.force_login(user)
    return user


@pytest.fixture
def outsider(client, acme, globex):
    """A user of Globex, looking at Acme."""
    user = ClientMembershipFactory.create(client=globex).user
    client.force_login(user)
    return user


def acme_url(**query):
    url = reverse("client_detail", args=["acme"])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


# --- sign-in and home ----------------------------------------------------------------


def test_anonymous_is_sent_to_sign_in_from_every_page(client, acme):
    for url in (reverse("home"), reverse("overview"), acme_url()):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))


def test_sign_in_page_renders(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b'name="password"' in response.content


def test_sign_in_lands_staff_on_the_overview(client):
    StaffFactory.create(username="boss")
    response = client.post(
        reverse("login"), {"username": "boss", "password": "pw-for-tests"}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("overview")


def test_home_sends_a_member_to_their_client_page(client, member):
    response = client.get(reverse("home"))
    assert response.url == acme_url()


def test_home_is_404_for_a_user_without_a_client(client):
    client.force_login(UserFactory.create())
    assert client.get(reverse("home")).status_code == 404


# --- overview --------------------------------------------------------------------------


def test_overview_lists_every_active_client_for_staff(client, staff, acme, globex):
    response = client.get(reverse("overview"))
    assert response.status_code == 200
    assert b"Acme" in response.content
    assert b"Globex" in response.content


def test_overview_shows_raw_billed_margin_and_provider_total(client, staff, acme, globex):
    content = client.get(reverse("overview")).content.decode()
    assert "$80.00" in content  # Acme raw, November only
    assert "$100.00" in content  # Acme billed at 25%
    assert "$1,080.00" in content  # raw total: what the provider's invoice should say


def test_overview_is_404_for_a_member(client, member):
    assert client.get(reverse("overview")).status_code == 404


def test_overview_fragment_is_404_for_a_member(client, member):
    assert client.get(reverse("overview") + "?sort=-billed", **HTMX).status_code == 404


def test_overview_htmx_sort_returns_only_the_table(client, staff, acme, globex):
    response = client.get(reverse("overview") + "?sort=-billed", **HTMX)
    content = response.content.decode()
    assert content.lstrip().startswith('<div id="overview-table"')
    assert "<html" not in content
    assert content.index("Globex") < content.index("Acme")


def test_overview_warns_about_unpriced_models_with_a_link_to_add_a_rate(client, staff, acme):
    DailyRollupFactory.create(
        client=acme,
        day=dt.date(2026, 11, 20),
        model="claude-experimental-9",
        unpriced_events=1,
        cost_usd=Decimal("0"),
    )
    content = client.get(reverse("overview")).content.decode()
    assert "claude-experimental-9" in content
    # The link prefills the model on the rate form (see tests/tracking/test_rate_admin.py).
    link = "/admin/tracking/modelrate/add/?provider=anthropic&amp;model=claude-experimental-9"
    assert f'href="{link}"' in content


def test_overview_warns_about_untagged_usage(client, staff, acme):
    DailyRollupFactory.create(client=acme, day=dt.date(2026, 11, 20), project="", events=12)
    assert b"Usage without a project" in client.get(reverse("overview")).content


def test_overview_escapes_client_names(client, staff):
    ClientFactory.create(name="<b>Bold</b> & Co")
    content = client.get(reverse("overview")).content.decode()
    assert "&lt;b&gt;Bold&lt;/b&gt; &amp; Co" in content
    assert "<b>Bold</b>" not in content


def test_overview_says_when_a_client_has_no_budget(client, staff):
    ClientFactory.create(name="Unbudgeted", monthly_budget_usd=None)
    content = client.get(reverse("overview")).content.decode()
    assert '<span class="muted" data-status="none">No budget set</span>' in content


# --- client page -----------------------------------------------------------------------


def test_client_page_renders_for_staff(client, staff, acme):
    response = client.get(acme_url())
    assert response.status_code == 200
    assert b"claude-sonnet-4-5" in response.content


def test_client_page_renders_for_its_member(client, member):
    response = client.get(acme_url())
    assert response.status_code == 200
    assert b"$100.00" in response.content


def test_client_page_is_404_for_the_outsider(client, outsider):
    assert client.get(acme_url()).status_code == 404


def test_client_page_fragment_is_404_for_the_outsider(client, outsider):
    assert client.get(acme_url(month="2026-10"), **HTMX).status_code == 404


def test_client_page_of_an_unknown_client_is_404(client, staff):
    assert client.get(reverse("client_detail", args=["nope"])).status_code == 404


def test_member_sees_billed_amounts_but_not_raw_cost_or_margin(client, member):
    content = client.get(acme_url()).content.decode()
    assert "$100.00" in content
    # The chart's axis may have an $80.00 tick; no table cell or summary holds raw cost.
    assert '<td class="num">$80.00</td>' not in content
    assert "raw $80.00" not in content
    assert "Raw cost" not in content
    assert "margin" not in content.lower()


def test_staff_see_raw_cost_and_margin_on_the_client_page(client, staff, acme):
    content = client.get(acme_url()).content.decode()
    assert "$80.00" in content
    assert "margin $20.00" in content


def test_month_picker_shows_the_chosen_month(client, staff, acme):
    content = client.get(acme_url(month="2026-10")).content.decode()
    assert "October 2026" in content
    assert "claude-opus-4-1" in content
    assert "claude-sonnet-4-5" not in content


def test_month_change_over_htmx_returns_only_the_month_body(client, staff, acme):
    content = client.get(acme_url(month="2026-10"), **HTMX).content.decode()
    assert content.lstrip().startswith('<div id="month-body"')
    assert "<html" not in content
    assert "claude-opus-4-1" in content


def test_month_links_work_without_javascript(client, staff, acme):
    content = client.get(acme_url()).content.decode()
    assert 'href="?month=2026-10"' in content
    assert 'hx-get="?month=2026-10"' in content


def test_client_page_never_shows_another_clients_usage(client, staff, acme, globex):
    content = client.get(acme_url()).content.decode()
    assert "gpt-4.1" not in content
    assert "$1,000.00" not in content


def test_overview_shows_budget_status_in_colour_and_in_words(client, staff):
    over = ClientFactory.create(name="Over", markup_pct=Decimal("25"), monthly_budget_usd=100)
    DailyRollupFactory.create(client=over, day=dt.date(2026, 11, 2), cost_usd=Decimal("100"))
    content = client.get(reverse("overview")).content.decode()
    assert 'data-status="red"' in content
    assert "Over budget" in content
    assert "125.0% of $100.00" in content


@pytest.mark.parametrize(
    ("budget", "cost", "status", "words", "figures"),
    [
        ("0", None, "green", "On track", "— of $0.00"),
        ("0", "0.01", "red", "Over budget", "— of $0.00"),
        ("1", "0.79", "green", "On track", "79.0% of $1.00"),
        ("1", "0.80", "yellow", "Near budget", "80.0% of $1.00"),
        ("1", "1", "red", "Over budget", "100.0% of $1.00"),
    ],
)
def test_overview_colours_zero_and_one_dollar_budgets(
    client, staff, budget, cost, status, words, figures
):
    tiny = ClientFactory.create(
        slug="tiny", markup_pct=Decimal("0"), monthly_budget_usd=Decimal(budget)
    )
    if cost is not None:
        DailyRollupFactory.create(client=tiny, day=dt.date(2026, 11, 2), cost_usd=Decimal(cost))
    response = client.get(reverse("overview"))
    assert response.status_code == 200
    row = response.content.decode().split('<tr data-client="tiny"')[1].split("</tr>")[0]
    meter = re.search(r'<div class="meter-wrap status-(\w+) compact" data-status="(\w+)">', row)
    assert meter is not None and meter.groups() == (status, status)
    assert f'<span class="status-text status-{status}">{words}</span>\n{figures}' in row


# --- every client-scoped URL, for the outsider -------------------------------------------


def _client_scoped_urls(slug: str, invoice_pk: int) -> list[str]:
    """Every route under /clients/<slug>/ (dashboards, invoices, CSV, PDF), built for
    ``slug``: new routes are covered without editing this test."""
    from django.urls import URLPattern, get_resolver

    urls = []
    for pattern in get_resolver().url_patterns:
        for sub in getattr(pattern, "url_patterns", [pattern]):
            if not isinstance(sub, URLPattern) or "slug" not in sub.pattern.converters:
                continue
            values = {"slug": slug, "pk": invoice_pk, "month": "2026-11"}
            kwargs = {k: values[k] for k in sub.pattern.converters}
            urls.append(reverse(sub.name, kwargs=kwargs))
    return urls


def test_outsider_gets_404_on_every_client_scoped_url(client, outsider, acme):
    from billing.models import Invoice

    invoice = Invoice.objects.create(client=acme, month=dt.date(2026, 10, 1))
    urls = _client_scoped_urls("acme", invoice.pk)
    assert reverse("client_detail", args=["acme"]) in urls
    assert len(urls) >= 2
    for url in urls:
        assert client.get(url).status_code == 404, url
        assert client.get(url, **HTMX).status_code == 404, url


def test_member_does_not_see_draft_invoices(client, member, acme):
    from billing.models import Invoice

    Invoice.objects.create(client=acme, month=dt.date(2026, 10, 1))
    assert b"No invoices yet." in client.get(acme_url()).content


def test_staff_see_draft_invoices_with_download_links(client, staff, acme):
    from billing.models import Invoice

    invoice = Invoice.objects.create(client=acme, month=dt.date(2026, 10, 1))
    content = client.get(acme_url()).content.decode()
    assert f'href="/clients/acme/invoices/{invoice.pk}.pdf"' in content
    assert f'href="/clients/acme/invoices/{invoice.pk}.csv"' in content
    assert f'href="/clients/acme/invoices/{invoice.pk}/events.csv"' in content


def test_member_page_has_no_admin_links(client, member):
    assert b"/admin/" not in client.get(acme_url()).content


@pytest.fixture
def acme_calls(acme):
    event = UsageEventFactory.create(client=acme, end_user="alice", prompt_hash="p-1")
    day = local_day(event.occurred_at)
    rollups_rebuild_days(client_id=acme.pk, days=[day])


def test_client_page_loads_top_lists_afterwards_when_not_cached(client, staff, acme_calls):
    content = client.get(acme_url()).content.decode()
    assert 'hx-get="/clients/acme/top/?month=2026-11"' in content
    assert 'href="?month=2026-11&amp;top=1"' in content
    assert "alice" not in content


def test_top_lists_fragment_shows_end_users_and_prompts(client, staff, acme_calls):
    content = client.get(reverse("client_top_lists", args=["acme"]) + "?month=2026-11").content
    assert content.decode().lstrip().startswith('<div id="top-lists"')
    assert b"alice" in content
    assert b"p-1" in content


def test_client_page_shows_cached_top_lists_inline(client, staff, acme_calls):
    client.get(reverse("client_top_lists", args=["acme"]) + "?month=2026-11")
    assert b"alice" in client.get(acme_url()).content


def test_no_javascript_link_computes_top_lists_in_the_page(client, member, acme_calls):
    assert b"alice" in client.get(acme_url(month="2026-11", top="1")).content


def test_top_lists_fragment_hides_raw_cost_from_a_member(client, member, acme_calls):
    content = client.get(reverse("client_top_lists", args=["acme"]) + "?month=2026-11").content
    assert b"alice" in content
    assert b"Raw cost" not in content


def test_top_lists_fragment_is_404_for_the_outsider(client, outsider, acme_calls):
    url = reverse("client_top_lists", args=["acme"]) + "?month=2026-11"
    assert client.get(url, **HTMX).status_code == 404


def test_top_lists_fragment_sends_the_anonymous_to_sign_in(client, acme_calls):
    response = client.get(reverse("client_top_lists", args=["acme"]) + "?month=2026-11")
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_outsider_sees_own_top_lists_never_acmes(client, outsider, acme_calls, globex):
    event = UsageEventFactory.create(client=globex, end_user="gus", prompt_hash="g-1")
    rollups_rebuild_days(client_id=globex.pk, days=[local_day(event.occurred_at)])
    content = client.get(reverse("client_top_lists", args=["globex"]) + "?month=2026-11").content
    assert b"gus" in content and b"g-1" in content
    assert b"alice" not in content and b"p-1" not in content
