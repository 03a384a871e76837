"""Sync a provider's usage and cost report into ``ProviderReportRow``.

A sync replaces the provider's rows for a range of UTC days with what the provider
reports now (providers revise recent days), in one transaction: the previous rows stay
until the new ones are complete, and a failed sync leaves them untouched. On PostgreSQL
the transaction holds an advisory lock per provider, so two syncs of the same provider at
once run their replacements one after the other (each deletes what the other inserted
before inserting its own): the result is one sync's rows, never both. Running a sync
twice changes nothing. Every sync is a ``ProviderSyncRun``; a failed one keeps its error.
"""

from __future__ import annotations

import importlib
import logging
import zlib
from dataclasses import dataclass
from datetime import date, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tracking.models import Provider, ProviderReportRow, ProviderSyncRun, SyncStatus
from tracking.provider_reports import anthropic_report, openai_report
from tracking.provider_reports.retry import ProviderError
from tracking.provider_reports.rows import COLUMNS, ReportRows
from tracking.provider_reports.summaries import report_summaries_refresh

logger = logging.getLogger(__name__)

SYNC_PROVIDERS = (Provider.ANTHROPIC.value, Provider.OPENAI.value)
# A run still "running" after this long belongs to a worker that died mid-sync.
ABANDONED_AFTER = timedelta(hours=1)


class ProviderSyncError(Exception):
    """A sync that cannot start: unknown provider, missing admin key, bad day range."""


@dataclass(frozen=True)
class _Source:
    key_setting: str
    base_url_setting: str


_SOURCES = {
    Provider.ANTHROPIC.value: _Source("ANTHROPIC_ADMIN_API_KEY", "ANTHROPIC_BASE_URL"),
    Provider.OPENAI.value: _Source("OPENAI_ADMIN_API_KEY", "OPENAI_BASE_URL"),
}


def admin_key_setting(provider: str) -> str:
    """The environment variable holding ``provider``'s admin key."""
    return _SOURCES[provider].key_setting


def providers_configured() -> list[str]:
    """The providers whose admin key is set, in a fixed order."""
    return [p for p in SYNC_PROVIDERS if getattr(settings, _SOURCES[p].key_setting, "")]


def _report_read(provider: str, since: date, until: date) -> ReportRows:
    source = _SOURCES[provider]
    kwargs = {
        "api_key": getattr(settings, source.key_setting),
        "base_url": getattr(settings, source.base_url_setting, ""),
        "since": since,
        "until": until,
    }
    if provider == Provider.ANTHROPIC:
        return anthropic_report.report_read(**kwargs)
    return openai_report.report_read(**kwargs)


def provider_report_sync(
    *, provider: str, since: date, until: date, trigger: str = "command"
) -> ProviderSyncRun:
    """Pull ``provider``'s report for the UTC days ``since..until`` and replace its rows.

    Returns the run: succeeded, or failed with the error (the previous rows intact).
    Raises ``ProviderSyncError`` before starting if the provider has no admin key or the
    range is empty. After a successful replacement, the days are handed to
    ``tracking.report_usage.apply_report_rows`` in the same transaction.
    """
    if provider not in _SOURCES:
        raise ProviderSyncError(
            f"unknown provider {provider!r}; expected one of {', '.join(SYNC_PROVIDERS)}"
        )
    if until < since:
        raise ProviderSyncError(f"the range ends ({until}) before it starts ({since})")
    if not getattr(settings, _SOURCES[provider].key_setting, ""):
        raise ProviderSyncError(f"{_SOURCES[provider].key_setting} is not set")
    _runs_abandoned_fail(provider)
    run = ProviderSyncRun.objects.create(
        provider=provider, since=since, until=until, trigger=trigger,
        status=SyncStatus.RUNNING, started_at=timezone.now(),
    )  # fmt: skip
    try:
        # Read before locking: the lock is held only for the replacement, not the HTTP.
        report = _report_read(provider, since, until)
        days = _days(since, until)
        with transaction.atomic():
            _lock(provider)
            ProviderReportRow.objects.filter(provider=provider, day__range=(since, until)).delete()
            _rows_insert(provider, report, run.pk, since=since, until=until)
            report_summaries_refresh(provider=provider, since=since, until=until)
            _apply_report_rows(provider, days)
            ProviderSyncRun.objects.filter(pk=run.pk).update(
                status=SyncStatus.SUCCEEDED, finished_at=timezone.now(),
                pages=report.pages, rows=len(report),
            )  # fmt: skip
    except Exception as exc:
        # Every failure is recorded on the run, so a gap is never silent; the traceback
        # goes to the log.
        logger.exception("provider report sync %s failed", run.pk)
        error = str(exc) if isinstance(exc, ProviderError) else f"{type(exc).__name__}: {exc}"
        ProviderSyncRun.objects.filter(pk=run.pk).update(
            status=SyncStatus.FAILED, finished_at=timezone.now(), error=error
        )
    run.refresh_from_db()
    return run


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


def _runs_abandoned_fail(provider: str) -> None:
    ProviderSyncRun.objects.filter(
        provider=provider,
        status=SyncStatus.RUNNING,
        started_at__lt=timezone.now() - ABANDONED_AFTER,
    ).update(
        status=SyncStatus.FAILED,
        finished_at=timezone.now(),
        error="abandoned: still running after an hour (its worker probably died)",
    )


def _lock(provider: str) -> None:
    """Serialize replacements of one provider's rows (PostgreSQL; SQLite has one writer)."""
    if connection.vendor == "postgresql":
        lock_id = zlib.crc32(f"clientmeter.provider_report_sync.{provider}".encode())
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])


def _rows_insert(
    provider: str, report: ReportRows, run_id: int, *, since: date, until: date
) -> None:
    # A provider's bucket outside the asked range would survive the next replacement of
    # its own day range twice over: refuse it instead of storing it.
    stray = sorted(d for d in report.days() if not since <= d <= until)
    if stray:
        raise ProviderError(f"the provider returned days outside {since}..{until}: {stray[0]}")
    if connection.vendor == "postgresql":
        table = ProviderReportRow._meta.db_table
        sql = f"COPY {table} (provider, sync_run_id, {', '.join(COLUMNS)}) FROM STDIN"
        with connection.cursor() as cursor, cursor.copy(sql) as copy:
            for values in report.tuples():
                copy.write_row((provider, run_id, *values))
        return
    ProviderReportRow.objects.bulk_create(
        (ProviderReportRow(provider=provider, sync_run_id=run_id, **dict(zip(COLUMNS, values, strict=True)))
         for values in report.tuples()),
        batch_size=500,
    )  # fmt: skip


def _apply_report_rows(provider: str, days: list[date]) -> None:
    """Hand the replaced days to the report-sourced clients' metering, if installed.

    ``tracking.report_usage`` (report-sourced clients) is written separately; until it
    exists there is nothing to apply. Only that module's absence is tolerated: an import
    error inside it fails the sync like any other error.
    """
    try:
        report_usage = importlib.import_module("tracking.report_usage")
    except ModuleNotFoundError as exc:
        if exc.name != "tracking.report_usage":
            raise
        return
    report_usage.apply_report_rows(provider, days)
