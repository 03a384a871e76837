"""Generated months, ids, slugs and query strings against every page and export with a
month or an id in its URL, as staff, as each client's user, as a user of no client and
signed out (issue 10).

For every request: no 5xx (streamed CSVs are read to the end); a client's user gets a 200
only for their own client, and for an invoice only for their own issued one, and never
sees the other client's name; signed out, nothing but the way to sign in.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.fuzz.conftest import World
from tests.fuzz.hostile import PERCENT_JUNK, fuzz_settings, months, odd_text, queries

pytestmark = pytest.mark.django_db

# Staff and the clients' users twice as often: they are the ones who get past the door.
USERS = ["staff", "staff", "acme", "acme", "globex", "globex", "none", "anonymous"]
NAMES = {"acme": b"Acme", "globex": b"Globex"}
SLUGS = st.one_of(
    # Mostly the real clients' slugs: the other answer for a junk slug is always 404.
    st.sampled_from(["acme", "globex"]),
    st.sampled_from(["acme", "globex"]),
    st.sampled_from(["no-such", "ACME", "a" * 300, "-", "_"]),
    odd_text.map(lambda t: quote(t.encode("utf-8", "surrogatepass"), safe="")),
    st.sampled_from(PERCENT_JUNK),
)
PAGE_PARAMS = ["month", "top", "sort", "page"]
page_values = st.one_of(
    months, st.sampled_from(["1", "0", "name", "-billed", "spend", "budget", "true", ""])
)


def sign_in(http: Any, world: World, user: str) -> None:
    http.logout()
    if user != "anonymous":
        http.force_login(world.users[user])


def fetch(http: Any, url: str, **headers: Any) -> tuple[int, bytes]:
    response = http.get(url, **headers)
    # A streamed CSV fails, if at all, while it is read.
    body = b"".join(response.streaming_content) if response.streaming else response.content
    event(f"HTTP {response.status_code}")
    return response.status_code, body


def check_scope(world: World, user: str, slug: str | None, status: int, body: bytes) -> None:
    assert status < 500
    if user == "anonymous":
        assert status in (302, 400, 404), status  # to the sign-in page, or a bad URL
        return
    if status != 200 or user == "staff":
        return
    assert user in NAMES, f"{user} was shown a client page"
    assert slug == user, f"{user}'s user got another client's page"
    other = NAMES["globex" if user == "acme" else "acme"]
    assert other not in body, f"{user}'s page names the other client"


@fuzz_settings(150)
@given(
    user=st.sampled_from(USERS),
    slug=SLUGS,
    route=st.sampled_from(["client_detail", "top", "overview", "home"]),
    query=queries(PAGE_PARAMS, page_values),
    htmx=st.booleans(),
)
def test_pages_answer_any_month_and_query_and_only_to_their_client(
    client, fuzz_world_invoiced, user, slug, route, query, htmx
):
    world = fuzz_world_invoiced
    sign_in(client, world, user)
    path = {
        "client_detail": f"/clients/{slug}/",
        "top": f"/clients/{slug}/top/",
        "overview": "/overview/",
        "home": "/",
    }[route]
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    status, body = fetch(client, f"{path}?{query}", **headers)

    if route == "overview":
        assert status < 500
        assert status != 200 or user == "staff"
    elif route == "home":
        assert status < 500
    else:
        check_scope(world, user, slug, status, body)


@fuzz_settings(100)
@given(
    user=st.sampled_from(USERS),
    slug=SLUGS,
    month=st.one_of(
        st.sampled_from(["2026-11", "2026-10", "2000-01", "2100-12"]),
        months.map(lambda m: quote(m.encode("utf-8", "surrogatepass"), safe="")),
        st.sampled_from(PERCENT_JUNK),
    ),
)
def test_usage_csv_answers_any_month_and_only_to_its_client(
    client, fuzz_world_invoiced, user, slug, month
):
    world = fuzz_world_invoiced
    sign_in(client, world, user)
    status, body = fetch(client, f"/clients/{slug}/usage/{month}.csv")

    check_scope(world, user, slug, status, body)


INVOICE_KINDS = ["acme-issued", "acme-draft", "globex-issued", "globex-draft"]


@fuzz_settings(100)
@given(
    user=st.sampled_from(USERS),
    slug=SLUGS,
    pk=st.one_of(
        st.sampled_from(INVOICE_KINDS),
        st.sampled_from(["0", "00", "999999", str(2**31), str(2**63), str(10**30), "1" * 200]),
    ),
    export=st.sampled_from(["{pk}.csv", "{pk}/events.csv", "{pk}.pdf"]),
)
def test_invoice_exports_answer_any_id_and_only_to_their_client(
    client, fuzz_world_invoiced, user, slug, pk, export
):
    world = fuzz_world_invoiced
    kind = pk if pk in INVOICE_KINDS else None
    if kind is not None:
        pk = str(world.invoices[kind][0])
    sign_in(client, world, user)
    status, body = fetch(client, f"/clients/{slug}/invoices/" + export.format(pk=pk))

    check_scope(world, user, slug, status, body)
    if user in NAMES and status == 200:
        assert kind == f"{user}-issued", "a client's user got a draft or another's invoice"
    if user in NAMES and slug == user and kind == f"{user}-issued":
        assert status == 200, "a client's user was refused their own issued invoice"
    if user == "staff" and kind is not None and slug == kind.split("-")[0]:
        assert status == 200


ADMIN_MODELS = [
    "agency/client", "agency/project", "agency/clientmembership", "agency/agencyprofile",
    "tracking/modelrate", "tracking/usageevent", "tracking/apikey", "billing/budgetsnapshot",
    "billing/alert", "billing/alertdelivery", "billing/invoice",
]  # fmt: skip
ADMIN_PARAMS = ["q", "o", "p", "e", "all", "client__id__exact", "status__exact", "month", "_changelist_filters"]  # fmt: skip


@fuzz_settings(100)
@given(
    user=st.sampled_from(["admin", "staff", "acme", "anonymous"]),
    model=st.sampled_from(ADMIN_MODELS),
    pk=st.one_of(
        st.sampled_from(["1", "2", "0", "-1", "abc", str(2**63), str(10**30), "%00", "1%2F2"]),
        odd_text.map(lambda t: quote(t.encode("utf-8", "surrogatepass"), safe="")),
    ),
    page=st.sampled_from(["change", "delete", "history", "list"]),
    query=queries(ADMIN_PARAMS, st.one_of(months, odd_text, st.sampled_from(["1", "-1", "0.1"]))),
)
def test_admin_answers_any_id_and_query(client, fuzz_world_invoiced, user, model, pk, page, query):
    """Admin's pages of one object (the id in the URL) and its lists (filters, search,
    sort and page in the query): staff only, and never a 5xx."""
    sign_in(client, fuzz_world_invoiced, user)
    path = f"/admin/{model}/" if page == "list" else f"/admin/{model}/{pk}/{page}/"
    status, _ = fetch(client, f"{path}?{query}")

    assert status < 500
    if user in ("acme", "anonymous"):
        assert status != 200
