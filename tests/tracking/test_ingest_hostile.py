"""Hostile events (issue 10): strings longer than their column, deep or huge JSON, odd
but valid RFC 3339 spellings. Each bad one is refused alone; its valid neighbours are
stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import time_machine
from django.db.models import CharField

from agency.models import Client
from tests.factories import ClientFactory
from tracking.ingest import IngestOutcome, parse_events_body, usage_ingest
from tracking.models import UsageEvent

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def acme() -> Client:
    return cast(Client, ClientFactory(slug="acme"))


@pytest.fixture(params=["objects", "body"])
def ingest(request: pytest.FixtureRequest) -> Any:
    """``usage_ingest`` on events given as Python objects (each converted on its own), or
    on a posted body, decoded in one pass (a body without ``\\u`` escapes by
    ``CleanEvent``, whose usage is walked only when its brackets could nest too deep)."""

    def run(events: list[dict[str, Any]], client: Client) -> IngestOutcome:
        if request.param == "body":
            return usage_ingest(
                events=parse_events_body(json.dumps({"events": events}).encode()), client=client
            )
        return usage_ingest(events=events, client=client)

    return run


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "model": "claude-sonnet-4-5",
        "occurred_at": "2026-11-30T10:00:00Z",
        "usage": {"input_tokens": 1200, "output_tokens": 450},
        **fields,
    }


def usage(**fields: Any) -> dict[str, Any]:
    return {"input_tokens": 1200, "output_tokens": 450, **fields}


def nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` objects deep, counting itself."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def stored_ids(client: Client) -> set[str]:
    return set(UsageEvent.objects.filter(client=client).values_list("event_id", flat=True))


@pytest.mark.parametrize(
    ("key", "length", "limit"),
    [("speed", 17, 16), ("service_tier", 40, 32), ("inference_geo", 33, 32)],
)
def test_usage_string_longer_than_its_column_is_rejected_alone(rates, acme, key, length, limit):
    outcome = usage_ingest(
        events=[event("ok-1"), event("long", usage=usage(**{key: "x" * length})), event("ok-2")],
        client=acme,
    )

    assert [r.status for r in outcome.results] == ["accepted", "rejected", "accepted"]
    assert outcome.results[1].errors == [
        {
            "code": "invalid",
            "field": f"events[1].usage.{key}",
            "message": f"must be at most {limit} characters",
        }
    ]
    assert stored_ids(acme) == {"ok-1", "ok-2"}


@pytest.mark.parametrize("key", ["speed", "service_tier", "inference_geo"])
def test_usage_string_as_long_as_its_column_is_stored(rates, acme, key):
    column = UsageEvent._meta.get_field(key)
    assert isinstance(column, CharField)
    limit = column.max_length
    assert isinstance(limit, int)
    outcome = usage_ingest(events=[event("fits", usage=usage(**{key: "x" * limit}))], client=acme)

    assert [r.status for r in outcome.results] == ["accepted"]
    assert getattr(UsageEvent.objects.get(client=acme), key) == "x" * limit


@pytest.mark.parametrize("levels", [9, 40, 900, 937, 950])
def test_usage_nested_deeper_than_8_levels_is_rejected_alone(rates, acme, ingest, levels):
    outcome = ingest([event("ok"), event("deep", usage=usage(extra=nested(levels - 1)))], acme)

    assert [r.status for r in outcome.results] == ["accepted", "rejected"]
    assert outcome.results[1].errors == [
        {"code": "invalid", "field": "events[1].usage", "message": "must be at most 8 levels deep"}
    ]
    assert stored_ids(acme) == {"ok"}


def test_usage_nested_8_levels_is_stored_and_loads_back(rates, acme, ingest):
    deep = usage(extra=nested(7))
    outcome = ingest([event("deep8", usage=deep)], acme)

    assert [r.status for r in outcome.results] == ["accepted"]
    assert UsageEvent.objects.get(client=acme).usage == deep


def test_arrays_count_as_levels(rates, acme, ingest):
    # usage → list → list → … : 9 containers in all.
    value: Any = 1
    for _ in range(8):
        value = [value]
    outcome = ingest([event("lists", usage=usage(extra=value))], acme)

    assert outcome.results[0].errors[0]["message"] == "must be at most 8 levels deep"


def test_usage_over_16_kib_as_json_is_rejected_alone(rates, acme, ingest):
    big = usage(note="x" * 16_384)
    outcome = ingest([event("ok"), event("big", usage=big)], acme)

    assert [r.status for r in outcome.results] == ["accepted", "rejected"]
    (error,) = outcome.results[1].errors
    assert (error["field"], error["message"]) == (
        "events[1].usage",
        "must be at most 16384 bytes as JSON",
    )
    assert stored_ids(acme) == {"ok"}


def test_usage_of_exactly_16_kib_as_json_is_stored(rates, acme, ingest):
    compact = '{"input_tokens":1200,"output_tokens":450,"note":""}'
    note = "x" * (16_384 - len(compact))
    outcome = ingest([event("edge", usage=usage(note=note))], acme)

    assert [r.status for r in outcome.results] == ["accepted"]


def test_metadata_over_16_kib_as_json_is_rejected(rates, acme):
    # 20 keys of 64 characters and values of 200 four-byte characters: within the key and
    # length limits, but 20 × (64 + 800) bytes.
    metadata = {f"{i:02d}".ljust(64, "k"): "\U0001f600" * 200 for i in range(20)}
    outcome = usage_ingest(events=[event("meta", metadata=metadata)], client=acme)

    assert outcome.results[0].errors == [
        {
            "code": "invalid",
            "field": "events[0].metadata",
            "message": "must be at most 16384 bytes as JSON",
        }
    ]


@pytest.mark.parametrize(
    "occurred_at",
    ["2026-11-30T10:00:00z", "2026-11-30t10:00:00Z", "2026-11-30t10:00:00.5z"],
)
def test_lowercase_t_and_z_are_valid_rfc3339(rates, acme, occurred_at):
    outcome = usage_ingest(events=[event("e", occurred_at=occurred_at)], client=acme)

    assert [r.status for r in outcome.results] == ["accepted"]
    assert UsageEvent.objects.get(client=acme).occurred_at == datetime(
        2026, 11, 30, 10, tzinfo=UTC
    ) + (timedelta(milliseconds=500) if ".5" in occurred_at else timedelta())
