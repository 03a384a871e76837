"""POST /api/v1/usage over HTTP: status codes, error bodies, and tenant isolation."""

from __future__ import annotations

import http.client
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
import time_machine
from django.core.cache import cache

from tests.factories import new_client
from tracking.keys import api_key_create
from tracking.models import UsageEvent

pytestmark = pytest.mark.django_db


URL = "/api/v1/usage"
# Events sent without occurred_at happen now, and are priced at the rates in force now:
# tests that assert a cost pin the clock to a day the shipped rates cover.
PRICED_AT = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()


@pytest.fixture
def acme():
    return new_client(slug="acme")


@pytest.fixture
def acme_key(acme):
    return api_key_create(name="acme app", client=acme)[1]


def post(client, key, body, *, content_type="application/json", **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(
        URL, data, content_type=content_type, headers={"Authorization": f"Bearer {key}"}, **extra
    )


def event(event_id="e1", **fields):
    return {
        "id": event_id,
        "model": "claude-sonnet-4-5",
        "usage": {"input_tokens": 1200, "output_tokens": 450},
        **fields,
    }


@time_machine.travel(PRICED_AT, tick=False)
def test_post_usage_returns_results_in_order(client, rates, acme_key):
    UsageEvent.objects.all().delete()
    post(client, acme_key, {"events": [event("b")]})
    response = post(
        client,
        acme_key,
        {"events": [event("a"), event("b"), event("c", usage={"input_tokens": -5})]},
    )
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 1,
        "duplicates": 1,
        "rejected": 1,
        "results": [
            {"id": "a", "status": "accepted", "cost_usd": "0.01035"},
            {"id": "b", "status": "duplicate"},
            {
                "id": "c",
                "status": "rejected",
                "errors": [
                    {
                        "code": "invalid",
                        "field": "events[2].usage.input_tokens",
                        "message": "must be a non-negative integer",
                    }
                ],
            },
        ],
    }


def test_accepted_events_are_committed(client, rates, acme, acme_key):
    post(client, acme_key, {"events": [event()]})
    assert UsageEvent.objects.filter(client=acme, event_id="e1").exists()


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        '{"events": [{"id": "a", "model": "m", "usage": {"input_tokens": NaN}}]}',
        '{"events": [{"id": "a", "model": "m", "usage": {"input_tokens": Infinity}}]}',
        '{"events": [{"id": "a", "model": "m", "usage": {"input_tokens": 1e400}}]}',
        '{"events": [{"id": "a", "model": "m", "usage": {"input_tokens": ' + "9" * 5000 + "}}]}",
        "[" * 100_000,
        b"\xff\xfe{",
    ],
)
def test_malformed_json_is_400(client, acme_key, body):
    response = post(client, acme_key, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize("body", [[], {"event": []}, {"events": {}}, {"events": []}, "null"])
def test_body_that_is_not_a_non_empty_events_list_is_400(client, acme_key, body):
    response = post(client, acme_key, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_body"


def test_more_than_1000_events_is_413(client, acme_key):
    response = post(client, acme_key, {"events": [event(f"e{i}") for i in range(1001)]})
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "too_many_events",
        "message": "At most 1000 events per request (got 1001).",
        "field": "events",
    }


def test_body_over_one_mib_is_413(client, acme_key):
    body = json.dumps({"events": [event(metadata={"pad": "x" * 200})] * 5000})
    assert len(body) > 1_048_576
    response = post(client, acme_key, body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_declared_length_over_the_limit_is_413_before_reading(client, acme_key):
    response = post(client, acme_key, "{}", CONTENT_LENGTH="2000000")
    assert response.status_code == 413


def test_non_json_content_type_is_415(client, acme_key):
    response = post(client, acme_key, "events=1", content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@time_machine.travel(PRICED_AT, tick=False)
def test_json_content_type_with_charset_is_accepted(client, rates, acme, acme_key):
    response = post(
        client, acme_key, {"events": [event()]}, content_type="application/json; charset=utf-8"
    )
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": 0,
        "results": [{"id": "e1", "status": "accepted", "cost_usd": "0.01035"}],
    }
    stored = UsageEvent.objects.get(client=acme, event_id="e1")
    assert (stored.input_tokens, stored.output_tokens) == (1200, 450)


def test_get_is_405_with_json_body(client, acme_key):
    response = client.get(URL, headers={"Authorization": f"Bearer {acme_key}"})
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_too_many_requests_is_429_with_retry_after(client, rates, acme_key, settings):
    settings.INGEST_RATE_LIMIT_PER_MINUTE = 2
    codes = [post(client, acme_key, {"events": [event()]}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    response = post(client, acme_key, {"events": [event()]})
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["error"]["code"] == "rate_limited"


@time_machine.travel(PRICED_AT, tick=False)
def test_rate_limit_is_per_key(client, rates, acme, acme_key, settings):
    settings.INGEST_RATE_LIMIT_PER_MINUTE = 1
    other_key = api_key_create(name="second", client=acme)[1]
    assert post(client, acme_key, {"events": [event("e1")]}).json()["accepted"] == 1
    spent = post(client, acme_key, {"events": [event("e2")]})
    assert (spent.status_code, spent.json()["error"]["code"]) == (429, "rate_limited")

    response = post(client, other_key, {"events": [event("e2")]})

    assert (response.status_code, response.json()["accepted"]) == (200, 1)
    assert sorted(UsageEvent.objects.filter(client=acme).values_list("event_id", flat=True)) == [
        "e1",
        "e2",
    ]


def test_agency_key_posts_for_a_named_client(client, rates, acme):
    agency_key = api_key_create(name="agency", client=None)[1]
    response = post(client, agency_key, {"events": [event(client="acme")]})
    assert response.json()["accepted"] == 1
    assert UsageEvent.objects.filter(client=acme).count() == 1


def test_openapi_document_is_served(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert {"/usage", "/budget"} <= set(document["paths"])


# --- the outsider: client A's key never changes client B's rows ---------------------


OUTSIDER_SHAPES = [
    pytest.param({"client": "globex"}, id="names-B"),
    pytest.param({"client": "globex", "project": "b-secret"}, id="names-B-with-project"),
    pytest.param({"client": "globex", "backfill": True}, id="names-B-backfill"),
    pytest.param({"client": "GLOBEX"}, id="names-B-other-case"),
    pytest.param({"client": "globex", "id": "b-existing"}, id="names-B-existing-id"),
]


@pytest.mark.parametrize("fields", OUTSIDER_SHAPES)
def test_client_key_never_writes_another_clients_rows(client, rates, acme_key, fields):
    globex = new_client(slug="globex")
    own_key = api_key_create(name="globex app", client=globex)[1]
    post(client, own_key, {"events": [event("b-existing")]})
    before = list(UsageEvent.objects.filter(client=globex).values())
    projects_before = list(globex.projects.values_list("name", flat=True))

    response = post(client, acme_key, {"events": [{**event("x"), **fields}]})

    result = response.json()["results"][0]
    assert result["status"] == "rejected"
    assert result["errors"][0]["code"] == "forbidden_client"
    assert list(UsageEvent.objects.filter(client=globex).values()) == before
    assert list(globex.projects.values_list("name", flat=True)) == projects_before


def test_same_id_as_another_clients_event_lands_in_own_client(client, rates, acme, acme_key):
    globex = new_client(slug="globex")
    globex_key = api_key_create(name="globex app", client=globex)[1]
    post(client, globex_key, {"events": [event("shared")]})
    before = list(UsageEvent.objects.filter(client=globex).values())

    response = post(
        client,
        acme_key,
        {"events": [event("shared", usage={"input_tokens": 1, "output_tokens": 1})]},
    )

    assert response.json()["accepted"] == 1
    assert list(UsageEvent.objects.filter(client=globex).values()) == before
    assert UsageEvent.objects.filter(client=acme, event_id="shared").count() == 1


def test_late_event_for_a_finalized_month_is_accepted_and_becomes_a_later_adjustment(
    client, rates, time_machine
):
    """Over HTTP: the late event is accepted, the finalized invoice does not move, and the
    next month's invoice carries it as an adjustment line for its own month."""
    from datetime import UTC, date, datetime
    from decimal import Decimal

    from billing.models import Invoice, InvoiceLineKind
    from billing.services.invoices import invoice_finalize, invoices_generate_month

    time_machine.move_to(datetime(2026, 9, 20, tzinfo=UTC), tick=False)
    acme = new_client(slug="acme", markup_pct=Decimal("25"))
    key = api_key_create(name="acme app", client=acme)[1]
    time_machine.move_to(datetime(2026, 10, 3, 12, tzinfo=UTC), tick=False)
    assert post(client, key, {"events": [event("oct-1")]}).json()["accepted"] == 1
    time_machine.move_to(datetime(2026, 11, 4, 2, tzinfo=UTC), tick=False)
    october = invoice_finalize(
        invoice_id=invoices_generate_month(month=date(2026, 10, 1)).invoice_ids[0]
    )
    frozen = (october.total_usd, list(october.lines.values_list("amount_usd", flat=True)))

    time_machine.move_to(datetime(2026, 11, 5, 12, tzinfo=UTC), tick=False)
    late = event("oct-late", occurred_at="2026-10-30T12:00:00Z")
    body = post(client, key, {"events": [late]}).json()

    assert body["results"] == [{"id": "oct-late", "status": "accepted", "cost_usd": "0.01035"}]
    time_machine.move_to(datetime(2026, 12, 4, 2, tzinfo=UTC), tick=False)
    november = Invoice.objects.get(
        pk=invoices_generate_month(month=date(2026, 11, 1)).invoice_ids[0]
    )
    october.refresh_from_db()
    assert (october.total_usd, list(october.lines.values_list("amount_usd", flat=True))) == frozen
    (line,) = november.lines.filter(kind=InvoiceLineKind.ADJUSTMENT)
    assert (line.usage_month, line.events, line.raw_cost_usd) == (
        date(2026, 10, 1),
        1,
        Decimal("0.01035"),
    )


# --- the OpenAPI document agrees with the server ---------------------------------------


def test_openapi_budget_client_is_optional_and_month_refuses_0000_00(client):
    document = client.get("/api/v1/openapi.json").json()
    parameters = {p["name"]: p for p in document["paths"]["/budget"]["get"]["parameters"]}
    assert parameters["client"]["required"] is False
    pattern = re.compile(parameters["month"]["schema"]["pattern"])
    assert [
        m for m in ["0000-00", "2026-00", "2026-13", "2026-1", "0000-01"] if pattern.search(m)
    ] == []
    assert all(pattern.search(f"2026-{m:02d}") for m in range(1, 13))


# --- hostile input over HTTP ----------------------------------------------------------


def test_chunked_body_without_content_length_is_411(client, acme_key):
    # Django reads a body without Content-Length as empty: this was 400 malformed_json.
    response = post(
        client, acme_key, {"events": [event()]}, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked"
    )
    assert response.status_code == 411
    assert response.json()["error"] == {
        "code": "length_required",
        "message": "Send the body with a Content-Length header (not chunked).",
    }
    assert not UsageEvent.objects.exists()


def test_deeply_nested_usage_is_rejected_alone_over_http(client, rates, acme_key):
    deep: dict[str, Any] = {}
    for _ in range(20):
        deep = {"a": deep}
    body = {
        "events": [
            event("ok"),
            event("deep", usage={"input_tokens": 1, "output_tokens": 1, "x": deep}),
        ]
    }
    response = post(client, acme_key, body)
    assert response.status_code == 200
    assert response.json()["results"][1] == {
        "id": "deep",
        "status": "rejected",
        "errors": [
            {
                "code": "invalid",
                "field": "events[1].usage",
                "message": "must be at most 8 levels deep",
            }
        ],
    }
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == ["ok"]


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_chunked_body_over_a_socket_is_411(live_server):
    acme = new_client(slug="acme")
    key = api_key_create(name="acme app", client=acme)[1]
    address = urlsplit(live_server.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    body = iter([json.dumps({"events": [event()]}).encode()])
    conn.request(
        "POST",
        URL,
        body=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 411
    assert json.loads(response.read())["error"]["code"] == "length_required"
    conn.close()
    assert not UsageEvent.objects.exists()
