"""The insert's column values: what the skipped backend adapters would have given."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import cast

import pytest
from django.db import connection, models

from agency.models import Client
from tests.factories import ClientFactory
from tracking.ingest import store, usage_ingest
from tracking.models import UsageEvent

pytestmark = pytest.mark.django_db


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's adapters")
def test_postgresql_datetime_and_decimal_adapters_return_the_value_itself():
    """The insert skips them on PostgreSQL because they change nothing: if Django ever
    adapts these values there, this fails and the skip must go."""
    ops = connection.ops
    moment = datetime(2026, 11, 23, 9, 0, 0, 123456, tzinfo=UTC)
    cost = Decimal("0.0103500000")

    assert ops.adapt_datetimefield_value(moment) is moment
    assert ops.adapt_decimalfield_value(cost, max_digits=20, decimal_places=10) is cost


def test_column_values_are_each_fields_own_adaptation():
    """Every column as ``get_db_prep_save`` adapts it, minus the re-validation: the same
    value, or for JSON the same document."""
    row = {
        "client_id": 1,
        "event_id": "e1",
        "fingerprint": "f" * 64,
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "occurred_at": datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
        "received_at": datetime(2026, 11, 23, 9, 1, tzinfo=UTC),
        "priced_at": datetime(2026, 11, 23, 9, 1, tzinfo=UTC),
        "usage": {"input_tokens": 1200, "output_tokens": 450},
        "metadata": {"source": "test"},
        "cost_usd": Decimal("0.01035"),
        "input_cost_usd": Decimal("0.0036"),
        "pricing_status": "priced",
    }
    connection.ensure_connection()
    (line,) = store._column_values([row])

    for field, value in zip(store._FIELDS, line, strict=True):
        expected = field.get_db_prep_save(row.get(field.attname, field.get_default()), connection)
        if isinstance(field, models.JSONField):
            assert _document(value) == _document(expected), field.attname
        elif isinstance(field, models.DateTimeField) and connection.vendor == "postgresql":
            # ISO 8601 text for the COPY: the same instant.
            assert value is None or datetime.fromisoformat(value) == expected, field.attname
        else:
            assert value == expected, field.attname
    assert len(line) == len(UsageEvent._meta.concrete_fields) - 1


def _document(adapted: object) -> object:
    """The JSON document an adapted JSON value stands for (Jsonb on PostgreSQL, text on
    SQLite)."""
    obj = getattr(adapted, "obj", None)
    return obj if obj is not None else json.loads(str(adapted))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the COPY is PostgreSQL's")
def test_datetimes_written_as_text_are_stored_as_the_same_instants(rates):
    acme = cast(Client, ClientFactory())
    now = datetime(2026, 11, 23, 9, 30, 0, 654321, tzinfo=UTC)
    events = [
        {
            "id": f"e{i}",
            "model": "claude-sonnet-4-5",
            "occurred_at": occurred,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }
        for i, occurred in enumerate(
            ["2026-11-23T09:00:00.123456Z", "2026-11-23T11:15:00+02:00", "2026-11-23T09:00:00Z"]
        )
    ]

    usage_ingest(events=events, client=acme, now=now)

    stored = list(
        UsageEvent.objects.order_by("event_id").values_list(
            "occurred_at", "received_at", "priced_at"
        )
    )
    assert stored == [
        (datetime(2026, 11, 23, 9, 0, 0, 123456, tzinfo=UTC), now, now),
        (datetime(2026, 11, 23, 9, 15, tzinfo=UTC), now, now),
        (datetime(2026, 11, 23, 9, 0, tzinfo=UTC), now, now),
    ]
