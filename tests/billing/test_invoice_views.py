"""Invoice downloads: PDF, lines CSV, events CSVs; staff, the client's user, the outsider."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date
from decimal import Decimal

import pytest
from django.http import StreamingHttpResponse
from django.urls import reverse

from agency.models import Client
from billing.models import Invoice
from billing.services.invoices import invoice_finalize, invoices_generate_month
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    StaffFactory,
    UserFactory,
    at,
    priced_event,
)
from tracking.models import UsageEvent

pytestmark = pytest.mark.django_db

OCT = date(2026, 10, 1)


@pytest.fixture
def acme(acme: Client, time_machine) -> Client:
    """Acme (tests/billing/conftest.py) with two October calls and October's draft."""
    client = acme
    priced_event(client, at=at(10, 3))
    priced_event(client, at=at(10, 4), model="claude-haiku-4-5")
    time_machine.move_to(at(11, 1, 2), tick=False)
    invoices_generate_month(month=OCT)
    return client


@pytest.fixture
def issued(acme) -> Invoice:
    return invoice_finalize(invoice_id=Invoice.objects.get(client=acme).pk)


@pytest.fixture
def owner(acme, client):
    membership = ClientMembershipFactory.create(client=acme)
    client.force_login(membership.user)
    return membership.user


@pytest.fixture
def outsider(acme, client):
    membership = ClientMembershipFactory.create(client=ClientFactory.create(slug="globex"))
    client.force_login(membership.user)
    return membership.user


@pytest.fixture
def staff(client):
    user = StaffFactory.create()
    client.force_login(user)
    return user


def urls(invoice: Invoice) -> list[str]:
    kwargs = {"slug": "acme", "pk": invoice.pk}
    return [
        reverse("invoice_pdf", kwargs=kwargs),
        reverse("invoice_lines_csv", kwargs=kwargs),
        reverse("invoice_events_csv", kwargs=kwargs),
        reverse("usage_month_csv", kwargs={"slug": "acme", "month": "2026-10"}),
    ]


def body(response) -> str:
    if isinstance(response, StreamingHttpResponse):
        return b"".join(response.streaming_content).decode()  # type: ignore[arg-type]
    return response.content.decode()


def rows(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body(response))))


def test_url_shapes(issued):
    assert urls(issued) == [
        f"/clients/acme/invoices/{issued.pk}.pdf",
        f"/clients/acme/invoices/{issued.pk}.csv",
        f"/clients/acme/invoices/{issued.pk}/events.csv",
        "/clients/acme/usage/2026-10.csv",
    ]


def test_the_outsider_gets_404_on_every_url(issued, outsider, client):
    for url in urls(issued):
        assert client.get(url).status_code == 404, url


def test_the_outsider_gets_404_with_their_own_slug_and_acmes_invoice(issued, outsider, client):
    url = reverse("invoice_pdf", kwargs={"slug": "globex", "pk": issued.pk})
    assert client.get(url).status_code == 404


def test_a_user_of_no_client_gets_404_on_every_url(issued, client):
    client.force_login(UserFactory.create())
    for url in urls(issued):
        assert client.get(url).status_code == 404, url


def test_anonymous_is_sent_to_login(issued, client):
    response = client.get(urls(issued)[0])
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_the_clients_user_downloads_the_stored_pdf(issued, owner, client):
    response = client.get(urls(issued)[0])
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    content = b"".join(response.streaming_content)
    assert content == issued.pdf.open("rb").read()
    assert issued.number in response["Content-Disposition"]


def test_the_clients_user_cannot_see_a_draft(acme, owner, client):
    draft = Invoice.objects.get(client=acme)
    assert client.get(urls(draft)[0]).status_code == 404
    assert client.get(urls(draft)[1]).status_code == 404


def test_staff_preview_a_draft_pdf(acme, staff, client):
    draft = Invoice.objects.get(client=acme)
    response = client.get(urls(draft)[0])
    assert response.status_code == 200
    assert response.content.startswith(b"%PDF")


def test_lines_csv_adds_up_and_shows_no_raw_cost_by_default(issued, owner, client):
    data = rows(client.get(urls(issued)[1]))
    lines = [row for row in data if row["kind"] in ("usage", "adjustment")]
    assert [row["description"] for row in lines] == ["Claude Haiku 4.5", "Claude Sonnet 4.5"]
    assert "raw_cost_usd" not in data[0]
    total = next(row for row in data if row["kind"] == "total")
    assert Decimal(total["amount_usd"]) == sum(Decimal(row["amount_usd"]) for row in lines)
    assert Decimal(total["amount_usd"]) == issued.total_usd


def test_lines_csv_shows_raw_cost_when_the_invoice_shows_markup(acme, staff, client):
    acme.invoice_show_markup = acme.show_pricing_details = True
    acme.save()
    invoice = invoice_finalize(invoice_id=Invoice.objects.get(client=acme).pk)
    sonnet = next(
        row for row in rows(client.get(urls(invoice)[1])) if row["model"] == "claude-sonnet-4-5"
    )
    assert (sonnet["raw_cost_usd"], sonnet["markup_pct"]) == ("0.006", "25.00")
    assert (sonnet["billed_usd"], sonnet["amount_usd"]) == ("0.0075", "0.01")


def test_month_events_csv_streams_every_event_without_floats(issued, owner, client):
    # A call's billed price is shown to clients set to see pricing details (see
    # tests/billing/test_invoice_document.py for those who are not).
    Client.objects.filter(pk=issued.client_id).update(show_pricing_details=True)
    response = client.get(urls(issued)[3])
    assert isinstance(response, StreamingHttpResponse)
    data = rows(response)
    assert len(data) == 2
    assert "cost_usd" not in data[0]  # the agency's raw cost is not the client's business
    # 0.006 raw × 1.25, exact
    assert data[0]["billed_usd"] == "0.0075"
    assert data[0]["occurred_at"] == at(10, 3).astimezone(UTC).isoformat()


def test_staff_see_raw_cost_and_markup_in_the_events_csv(issued, staff, client):
    data = rows(client.get(urls(issued)[2]))
    assert (data[0]["cost_usd"], data[0]["markup_pct"]) == ("0.006", "25.00")


def test_invoice_events_csv_includes_late_events_of_adjusted_months(
    issued, acme, owner, client, time_machine
):
    time_machine.move_to(at(11, 10), tick=False)
    priced_event(acme, at=at(10, 20), received_at=at(11, 10))
    priced_event(acme, at=at(11, 12))
    time_machine.move_to(at(12, 1, 2), tick=False)
    invoices_generate_month(month=date(2026, 11, 1))
    november = invoice_finalize(invoice_id=Invoice.objects.get(client=acme, month="2026-11-01").pk)
    client.force_login(owner)  # a month later: the first session has expired
    data = rows(
        client.get(reverse("invoice_events_csv", kwargs={"slug": "acme", "pk": november.pk}))
    )
    assert [row["occurred_at"][:10] for row in data] == ["2026-10-20", "2026-11-12"]


def test_a_bad_month_is_404(issued, owner, client):
    assert client.get("/clients/acme/usage/2026-13.csv").status_code == 404
    assert client.get("/clients/acme/usage/october.csv").status_code == 404


def test_events_csv_streams_in_chunks_instead_of_loading_the_month(
    issued, acme, staff, client, monkeypatch
):
    """Peak memory while streaming N events stays far below holding all N rows: with
    chunks of 50, only a chunk of rows is alive at a time."""
    import tracemalloc

    from billing import csv_export

    monkeypatch.setattr(csv_export, "CHUNK_SIZE", 50)
    template = UsageEvent.objects.filter(client=acme).first()
    assert template is not None
    fields = {f.attname: getattr(template, f.attname) for f in UsageEvent._meta.concrete_fields}
    copies = [
        UsageEvent(**{**fields, "id": None, "event_id": f"bulk-{i}", "fingerprint": f"{i:064x}"})
        for i in range(10_000)
    ]
    UsageEvent.objects.bulk_create(copies)
    url = reverse("usage_month_csv", kwargs={"slug": "acme", "month": "2026-10"})

    response = client.get(url)  # the first request also builds the handler: not measured
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        count = 0
        for piece in response.streaming_content:  # lines (ORM path) or pieces (COPY)
            count += (piece if isinstance(piece, bytes) else piece.encode()).count(b"\r\n")
        streamed = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        everything = UsageEvent.objects.filter(client=acme)
        held = list(
            csv_export.event_rows(
                everything, client_id=acme.pk, days=(OCT, date(2026, 11, 1)), show_cost=True
            )
        )
        loaded = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert count == len(held) == 1 + 10_002  # header, the fixture's two events, the copies
    assert streamed * 5 < loaded, (streamed, loaded)
