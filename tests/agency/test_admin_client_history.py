"""Saving a client in admin without changing anything records no history row: the
client's history lists real edits only."""

from __future__ import annotations

from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model

from agency.models import Client, Project
from tests.factories import ClientMembershipFactory

pytestmark = pytest.mark.django_db


class _Form(HTMLParser):
    """The values a browser would submit from the page's main form, as rendered."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None
        self._in_form = False
        self.textareas: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id", "").endswith("_form"):
            self._in_form = True
        if not self._in_form or "name" not in a:
            if tag == "option" and self._select and "selected" in a:
                self.data.setdefault(self._select, []).append(a.get("value", ""))
            return
        name = a["name"]
        if tag == "input":
            kind = a.get("type", "text")
            if kind in {"checkbox", "radio"} and "checked" not in a:
                return
            if kind not in {"submit", "button", "file"}:
                default = "on" if kind in {"checkbox", "radio"} else ""
                self.data.setdefault(name, []).append(a.get("value", default))
        elif tag == "select":
            self._select = name
        elif tag == "textarea":
            self._textarea = name
            self.textareas.add(name)
            self.data.setdefault(name, []).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form":
            self._in_form = False

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.data[self._textarea][-1] += data


def form_as_rendered(html: str) -> dict[str, list[str]]:
    parser = _Form()
    parser.feed(html)
    # A textarea's first newline is not part of its value (the HTML parsing rules), and a
    # browser submits its line breaks as CRLF.
    textareas = parser.textareas
    return {
        k: [v.removeprefix("\n").replace("\n", "\r\n") if k in textareas else v for v in vs]
        for k, vs in parser.data.items()
    }


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw")
    client.force_login(user)
    return user


@pytest.fixture
def acme() -> Client:
    acme = Client.objects.create(
        name="Acme",
        slug="acme",
        markup_pct=Decimal("25"),
        monthly_budget_usd=Decimal("500"),
        billing_address="1 Main Street\nSpringfield",
        slack_webhook_url="https://hooks.example/acme",
        tax_rate_pct=Decimal("20"),
    )
    Project.objects.create(client=acme, name="support-bot")
    ClientMembershipFactory.create(client=acme)
    return acme


def test_saving_an_unchanged_client_records_no_history(client, staff, acme):
    url = f"/admin/agency/client/{acme.pk}/change/"
    before = acme.history.count()
    data = form_as_rendered(client.get(url).content.decode())
    assert data["markup_pct"] == ["25.00"]
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert acme.history.count() == before


def test_line_breaks_sent_by_a_browser_are_stored_as_they_were(client, staff, acme):
    url = f"/admin/agency/client/{acme.pk}/change/"
    data = form_as_rendered(client.get(url).content.decode())
    assert data["billing_address"] == ["1 Main Street\r\nSpringfield"]
    data["billing_name"] = ["Acme AP"]
    assert client.post(url, data).status_code == 302
    acme.refresh_from_db()
    assert (acme.billing_name, acme.billing_address) == ("Acme AP", "1 Main Street\nSpringfield")


def test_a_real_change_is_still_recorded(client, staff, acme):
    url = f"/admin/agency/client/{acme.pk}/change/"
    before = acme.history.count()
    data = form_as_rendered(client.get(url).content.decode())
    data["tax_label"] = ["VAT"]
    assert client.post(url, data).status_code == 302
    assert acme.history.count() == before + 1
    assert acme.history.latest().tax_label == "VAT"
