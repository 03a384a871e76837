from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from celery import shared_task

from tracking.partitions import partitions_ensure
from tracking.provider_reports.services import provider_report_sync, providers_configured
from tracking.services import usage_events_reprice


# At least once (acknowledged when done, requeued if its worker dies): it is idempotent.
@shared_task(acks_late=True, reject_on_worker_lost=True)
def reprice_unpriced_task() -> int:
    """Price events whose model had no rate when they arrived. Idempotent."""
    return usage_events_reprice(unpriced_only=True).changed


@shared_task(acks_late=True, reject_on_worker_lost=True)
def provider_usage_sync_task(
    provider: str, since: str, until: str, trigger: str = "schedule"
) -> int:
    """Replace ``provider``'s report rows for the ISO days ``since..until``; the run's id.

    Safe to run twice, even at once: a sync replaces the days' rows under a lock.
    """
    run = provider_report_sync(
        provider=provider,
        since=date.fromisoformat(since),
        until=date.fromisoformat(until),
        trigger=trigger,
    )
    return run.pk


@shared_task(acks_late=True, reject_on_worker_lost=True)
def provider_usage_sync_recent_task(days: int = 3) -> list[str]:
    """Queue a sync of the last ``days`` UTC days (today included) for each provider whose
    admin key is set; the providers queued."""
    until = datetime.now(UTC).date()
    since = until - timedelta(days=days - 1)
    providers = providers_configured()
    for provider in providers:
        provider_usage_sync_task.delay(provider, since.isoformat(), until.isoformat())
    return providers


@shared_task(acks_late=True, reject_on_worker_lost=True)
def usage_partitions_ensure_task() -> list[str]:
    """Create the event table's missing monthly partitions ahead of time (PostgreSQL);
    the names created. Idempotent."""
    return partitions_ensure()
