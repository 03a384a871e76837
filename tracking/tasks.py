from __future__ import annotations

from celery import shared_task

from tracking.services import usage_events_reprice


@shared_task
def reprice_unpriced_task() -> int:
    """Price events whose model had no rate when they arrived. Idempotent."""
    return usage_events_reprice(unpriced_only=True).changed
