"""Two requests racing with the same ids and a new project (PostgreSQL only: SQLite
serialises writers, so there is no race to test)."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest
from django.db import connection

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
