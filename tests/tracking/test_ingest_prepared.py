"""The event INSERT is a prepared statement on PostgreSQL, and only it (Django keeps
psycopg's preparation off for everything else)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from django.db import connection

from agency.models import Client
from tests.factories import ClientFactory
from tracking.ingest import usage_ingest

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL"),
]


def _events(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}{i}",
            "model": "claude-sonnet-4-5",
            "occurred_at": "2026-11-23T09:00:00Z",
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }
        for i in range(count)
    ]


def _prepared_inserts() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements "
            "WHERE statement LIKE 'INSERT INTO \"tracking_usageevent\"%%'"
        )
        return [row[0] for row in cursor.fetchall()]


def test_event_insert_is_prepared_and_the_connection_setting_restored(rates):
    acme = cast(Client, ClientFactory())
    connection.ensure_connection()
    before = connection.connection.prepare_threshold

    outcome = usage_ingest(events=_events("a", 20), client=acme)

    assert {r.status for r in outcome.results} == {"accepted"}
    assert len(_prepared_inserts()) == 1
    assert connection.connection.prepare_threshold == before


def test_second_batch_reuses_the_prepared_insert(rates):
    acme = cast(Client, ClientFactory())
    usage_ingest(events=_events("a", 20), client=acme)

    outcome = usage_ingest(events=[*_events("a", 5), *_events("b", 5)], client=acme)

    assert [r.status for r in outcome.results] == ["duplicate"] * 5 + ["accepted"] * 5
    assert len(_prepared_inserts()) == 1


@pytest.mark.django_db(transaction=True)
def test_the_staged_insert_refuses_to_run_outside_a_transaction():
    # In autocommit, ON COMMIT DELETE ROWS would empty the staging table between the COPY
    # and the INSERT, and the batch would vanish without an error.
    from tracking.ingest.store import _insert_returning

    assert not connection.in_atomic_block
    with pytest.raises(RuntimeError, match="inside a transaction"):
        _insert_returning([])
