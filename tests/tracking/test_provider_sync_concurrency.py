"""Two syncs of one provider at once (PostgreSQL): the replacements take turns under the
advisory lock, so the days end up with one sync's rows, never both."""

from __future__ import annotations

import threading
import time
import zlib
from datetime import date, timedelta

import pytest
from django.db import connection, connections

from tests.standin import AnthropicRecord, standin_fixture  # noqa: F401 (the fixture "standin")
from tracking.models import ProviderReportRow, ProviderSyncRun, SyncStatus
from tracking.provider_reports.services import provider_report_sync

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="advisory locks are PostgreSQL's"),
]

NOV1 = date(2026, 11, 1)


def _records() -> list[AnthropicRecord]:
    return [
        AnthropicRecord(
            day=NOV1 + timedelta(days=d), model=f"claude-{m}", api_key_id=f"apikey_{k}",
            uncached_input_tokens=d + m + k, output_tokens=1, amount="1.5", list_amount="1.5",
        )
        for d in range(3) for m in range(10) for k in range(40)
    ]  # fmt: skip


def _sync_in_thread(results: list[ProviderSyncRun]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(
                provider_report_sync(
                    provider="anthropic", since=NOV1, until=NOV1 + timedelta(days=2)
                )
            )
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_two_syncs_at_once_leave_one_set_of_rows(standin):
    standin.anthropic = _records()
    for _ in range(3):
        results: list[ProviderSyncRun] = []
        threads = [_sync_in_thread(results), _sync_in_thread(results)]
        for thread in threads:
            thread.join(timeout=120)
        assert [r.status for r in results] == [SyncStatus.SUCCEEDED] * 2, [r.error for r in results]
        assert ProviderReportRow.objects.count() == 1200
        # Every row from a single run: the later replacement deleted the earlier's rows.
        assert ProviderReportRow.objects.values("sync_run").distinct().count() == 1


def test_a_sync_waits_for_the_providers_lock(standin):
    standin.anthropic = _records()[:10]
    lock_id = zlib.crc32(b"clientmeter.provider_report_sync.anthropic")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [lock_id])
    results: list[ProviderSyncRun] = []
    thread = _sync_in_thread(results)
    try:
        time.sleep(2)
        assert thread.is_alive()
        assert ProviderSyncRun.objects.get().status == SyncStatus.RUNNING
        assert not ProviderReportRow.objects.exists()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id])
    thread.join(timeout=60)
    assert results[0].status == SyncStatus.SUCCEEDED
    assert ProviderReportRow.objects.count() == 10
