"""Every per-event error the ingest schema gives, exactly: code, field path and message.

One fault per event, each beside a valid neighbour that must still be stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest
import time_machine

from agency.models import Client
from tests.factories import ClientFactory
from tracking.ingest import usage_ingest
from tracking.models import UsageEvent

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
NUL = "must not contain NUL (U+0000) or unpaired surrogate characters"
MISSING = object()


def event(**fields: Any) -> dict[str, Any]:
    data = {
        "id": "bad",
        "model": "claude-sonnet-4-5",
        "occurred_at": "2026-11-23T09:00:00Z",
        "usage": {"input_tokens": 1200, "output_tokens": 450},
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not MISSING}


CASES = [
    ({"id": MISSING}, "required", "id", "is required"),
    ({"id": None}, "required", "id", "is required"),
    ({"id": 7}, "invalid", "id", "must be 1 to 128 printable ASCII characters"),
    ({"id": ""}, "invalid", "id", "must be 1 to 128 printable ASCII characters"),
    ({"id": "é"}, "invalid", "id", "must be 1 to 128 printable ASCII characters"),
    ({"id": "x" * 129}, "invalid", "id", "must be 1 to 128 printable ASCII characters"),
    ({"model": MISSING}, "required", "model", "is required"),
    ({"model": None}, "required", "model", "is required"),
    ({"model": 3}, "invalid", "model", "must be a string of 1 to 128 chars"),
    ({"model": ""}, "invalid", "model", "must be a string of 1 to 128 chars"),
    ({"model": "m" * 129}, "invalid", "model", "must be a string of 1 to 128 chars"),
    ({"model": "a\x00"}, "invalid", "model", NUL),
    ({"usage": MISSING}, "required", "usage", "is required"),
    ({"usage": None}, "required", "usage", "is required"),
    ({"usage": "x"}, "invalid", "usage", "must be an object"),
    ({"usage": {"input_tokens": 1, "output_tokens": 1, "k\x00": 1}}, "invalid", "usage", NUL),
    (
        {"usage": {"input_tokens": 1, "output_tokens": 1, "x": {"y": ["\ud800"]}}},
        "invalid",
        "usage.x.y[0]",
        NUL,
    ),
    ({"provider": "mistral"}, "invalid", "provider", "must be one of anthropic, openai, google"),
    ({"provider": None}, "invalid", "provider", "must be one of anthropic, openai, google"),
    ({"client": 5}, "invalid", "client", "must be a string"),
    ({"client": "a\x00"}, "invalid", "client", NUL),
    ({"backfill": 1}, "invalid", "backfill", "must be true or false"),
    ({"backfill": None}, "invalid", "backfill", "must be true or false"),
    ({"project": 1}, "invalid", "project", "must be a string"),
    ({"feature": "f" * 201}, "invalid", "feature", "must be at most 200 characters"),
    ({"user": ["u"]}, "invalid", "user", "must be a string"),
    ({"team": "t\x00"}, "invalid", "team", NUL),
    ({"deploy_sha": "d" * 201}, "invalid", "deploy_sha", "must be at most 200 characters"),
    ({"prompt_hash": False}, "invalid", "prompt_hash", "must be a string"),
    ({"request_id": "r" * 201}, "invalid", "request_id", "must be at most 200 characters"),
    ({"occurred_at": 5}, "invalid", "occurred_at", "must be an RFC 3339 date-time with an offset"),
    (
        {"occurred_at": "2026-11-23T09:00:00"},
        "invalid",
        "occurred_at",
        "must be an RFC 3339 date-time with an offset",
    ),
    ({"occurred_at": "2026-13-23T09:00:00Z"}, "invalid", "occurred_at", "is not a valid date-time"),
    ({"service_tier": 1}, "invalid", "service_tier", "must be a string"),
    ({"service_tier": "s" * 33}, "invalid", "service_tier", "must be at most 32 characters"),
    ({"service_tier": "\x00"}, "invalid", "service_tier", NUL),
    ({"status_code": -1}, "invalid", "status_code", "must be a non-negative integer"),
    ({"status_code": True}, "invalid", "status_code", "must be a non-negative integer"),
    ({"status_code": 2.0}, "invalid", "status_code", "must be a non-negative integer"),
    ({"status_code": 2**31}, "invalid", "status_code", "must be at most 2147483647"),
    ({"latency_ms": "5"}, "invalid", "latency_ms", "must be a non-negative integer"),
    ({"latency_ms": 2**31}, "invalid", "latency_ms", "must be at most 2147483647"),
    ({"metadata": []}, "invalid", "metadata", "must be an object"),
    (
        {"metadata": {f"k{i}": "v" for i in range(21)}},
        "invalid",
        "metadata",
        "must have at most 20 keys",
    ),
    ({"metadata": {"": "v"}}, "invalid", "metadata", "keys must be 1 to 64 characters"),
    ({"metadata": {"k" * 65: "v"}}, "invalid", "metadata", "keys must be 1 to 64 characters"),
    ({"metadata": {"k\x00": "v"}}, "invalid", "metadata", NUL),
    ({"metadata": {"k": "v\x00"}}, "invalid", "metadata", NUL),
    (
        {"metadata": {"ok": "v", "k": 3}},
        "invalid",
        "metadata.k",
        "must be a string of at most 200 chars",
    ),
    (
        {"metadata": {"k": "v" * 201}},
        "invalid",
        "metadata.k",
        "must be a string of at most 200 chars",
    ),
    (
        {"usage": {"input_tokens": -1, "output_tokens": 1}},
        "invalid",
        "usage.input_tokens",
        "must be a non-negative integer",
    ),
    ({"usage": {"output_tokens": 1}}, "invalid", "usage.input_tokens", "is required"),
    (
        {"occurred_at": "2026-11-23T10:05:01Z"},
        "in_future",
        "occurred_at",
        "is more than 5 minutes in the future",
    ),
]


@pytest.mark.parametrize(("fields", "code", "where", "message"), CASES)
def test_a_bad_event_gets_its_exact_error_and_its_neighbour_is_stored(
    rates, fields, code, where, message
):
    acme = cast(Client, ClientFactory())
    with time_machine.travel(NOW, tick=False):
        outcome = usage_ingest(events=[event(id="good"), event(**fields)], client=acme)

    assert outcome.results[1].as_dict()["errors"] == [
        {"code": code, "field": f"events[1].{where}", "message": message}
    ]
    assert [r.status for r in outcome.results] == ["accepted", "rejected"]
    assert list(UsageEvent.objects.filter(client=acme).values_list("event_id", flat=True)) == [
        "good"
    ]


def test_an_event_that_is_not_an_object_is_rejected_at_its_index(rates):
    acme = cast(Client, ClientFactory())
    outcome = usage_ingest(events=[event(id="good"), ["not", "an", "event"]], client=acme)

    assert outcome.results[1].as_dict() == {
        "id": None,
        "status": "rejected",
        "errors": [{"code": "invalid", "field": "events[1]", "message": "must be an object"}],
    }
