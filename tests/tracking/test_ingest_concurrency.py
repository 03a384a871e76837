"""Two requests racing with the same ids and a new project (PostgreSQL only: SQLite
serialises writers, so there is no race to test)."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest
from django.db import connection, transaction

from agency.models import Client, Project
from tests.factories import ClientFactory
from tracking.ingest import usage_ingest
from tracking.models import UsageEvent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL"),
]


def _event(event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "model": "claude-sonnet-4-5",
        "project": "brand-new",
        "occurred_at": "2026-11-23T09:00:00Z",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


def test_racing_requests_store_each_event_once_and_one_project(rates):
    acme = cast(Client, ClientFactory())
    events = [_event(f"e{i}") for i in range(300)]
    barrier = threading.Barrier(2)
    outcomes: list[list[str]] = []
    failures: list[BaseException] = []

    def send(batch: list[dict[str, Any]]) -> None:
        try:
            barrier.wait()
            outcome = usage_ingest(events=batch, client=acme)
            outcomes.append([f"{r.id}:{r.status}" for r in outcome.results])
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=send, args=(events,)),
        threading.Thread(target=send, args=(list(reversed(events)),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    statuses = sorted(s for outcome in outcomes for s in outcome)
    assert statuses == sorted(
        [f"e{i}:accepted" for i in range(300)] + [f"e{i}:duplicate" for i in range(300)]
    )
    assert UsageEvent.objects.filter(client=acme).count() == 300
    assert Project.objects.filter(client=acme, name="brand-new").count() == 1


def test_a_key_another_request_stores_meanwhile_is_retried_not_lost(rates):
    """Request A's insert meets a key request B has stored and not yet committed: A waits
    on the key, fails with unique_violation when B commits, and retries from its savepoint;
    the retry skips that key. Nothing is lost, nothing is stored twice, and A's
    transaction goes on."""
    acme = cast(Client, ClientFactory())
    Project.objects.create(client=acme, name="brand-new")  # else A would wait on B's project
    b_stored, b_may_commit = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def request_b() -> None:
        try:
            with transaction.atomic():
                usage_ingest(events=[_event("e1")], client=acme)
                b_stored.set()
                b_may_commit.wait(30)
        finally:
            connection.close()

    def request_a() -> None:
        try:
            outcome = usage_ingest(events=[_event("e1"), _event("e2")], client=acme)
            results["a"] = [r.status for r in outcome.results]
        except BaseException as exc:
            results["error"] = exc
        finally:
            connection.close()

    b = threading.Thread(target=request_b)
    b.start()
    assert b_stored.wait(30)
    a = threading.Thread(target=request_a)
    a.start()
    try:
        _wait_for_an_insert_waiting_on_a_lock()
    finally:
        b_may_commit.set()
        b.join(30)
        a.join(30)

    assert "error" not in results, results.get("error")
    assert results["a"] == ["duplicate", "accepted"]
    assert sorted(UsageEvent.objects.filter(client=acme).values_list("event_id", flat=True)) == [
        "e1",
        "e2",
    ]


def _wait_for_an_insert_waiting_on_a_lock() -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%%INSERT INTO \"tracking_usageevent\"%%'"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.02)
    raise AssertionError("request A never waited on request B's key")
