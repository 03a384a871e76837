from __future__ import annotations

from celery import shared_task

from tracking.services import usage_events_reprice


# At least once (acknowledged when done, requeued if its worker dies): it is idempotent.
@shared_task(acks_late=True, reject_on_worker_lost=True)
def reprice_unpriced_task() -> int:
    """Price events whose model had no rate when they arrived. Idempotent."""
    return usage_events_reprice(unpriced_only=True).changed
