"""The event INSERT is planned for the key table as it is now (PostgreSQL).

It used to be prepared once per connection: a connection whose first batch met a small
key table (a new database) kept a plan that read and sorted the whole key table on every
later batch. The key lookups must stay index probes however the table grew.
"""

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


def _key_table_seq_scans() -> int:
    """Sequential scans of the key table in this transaction (the test's own)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'tracking_usageeventkey'"
        )
        return int(cursor.fetchone()[0])


def test_a_batch_after_the_key_table_grew_probes_its_index(rates):
    acme = cast(Client, ClientFactory())
    # The connection's first batch, on the key table the migration left empty.
    usage_ingest(events=_events("a", 20), client=acme)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tracking_usageeventkey (client_id, event_id, row_id, occurred_at) "
            "SELECT %s, 'grown-' || g, -g, now() FROM generate_series(1, 50000) g",
            [acme.pk],
        )
    before = _key_table_seq_scans()

    outcome = usage_ingest(events=[*_events("a", 5), *_events("b", 5)], client=acme)

    assert [r.status for r in outcome.results] == ["duplicate"] * 5 + ["accepted"] * 5
    assert _key_table_seq_scans() == before


def test_the_staged_insert_leaves_no_prepared_statement_behind(rates):
    acme = cast(Client, ClientFactory())
    usage_ingest(events=_events("a", 20), client=acme)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_the_staged_insert_refuses_to_run_outside_a_transaction():
    # In autocommit, ON COMMIT DELETE ROWS would empty the staging table between the COPY
    # and the INSERT, and the batch would vanish without an error.
    from tracking.ingest.store import _insert_returning

    assert not connection.in_atomic_block
    with pytest.raises(RuntimeError, match="inside a transaction"):
        _insert_returning([])
