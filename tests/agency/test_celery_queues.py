"""Celery queues: ingest-side work apart from documents, notifications and report syncs,
so a month-end of PDFs never holds up budget alerts. One worker consumes them all by
default (bin/worker); at scale each queue gets workers of its own (README, "Scaling")."""

from __future__ import annotations

import pytest
from django.conf import settings

from agency.celery import app

QUEUES = {
    "usage": [
        "tracking.tasks.reprice_unpriced_task",
        "billing.tasks.budgets_recompute_task",
        "billing.tasks.recon_outputs_refresh_task",
        "tracking.tasks.usage_partitions_ensure_task",
    ],
    "notify": [
        "billing.tasks.alert_delivery_send_task",
        "billing.tasks.alert_deliveries_retry_task",
        "billing.tasks.recon_alerts_task",
    ],
    "documents": [
        "billing.tasks.invoices_generate_task",
        "billing.tasks.invoices_finalize_due_task",
        "billing.tasks.invoice_pdf_prepare_task",
    ],
    "reports": [
        "tracking.tasks.provider_usage_sync_task",
        "tracking.tasks.provider_usage_sync_recent_task",
    ],
}


def _queue_of(task: str) -> str:
    route = app.amqp.router.route({}, task)
    return route["queue"].name


@pytest.mark.parametrize(("queue", "task"), [(q, t) for q, ts in QUEUES.items() for t in ts])
def test_each_task_goes_to_its_queue(queue: str, task: str) -> None:
    app.loader.import_default_modules()
    assert task in app.tasks, f"{task} is not a registered task"
    assert _queue_of(task) == queue


def test_every_registered_task_has_a_queue_a_default_worker_consumes() -> None:
    app.loader.import_default_modules()
    consumed = {queue.name for queue in settings.CELERY_TASK_QUEUES}
    ours = [name for name in app.tasks if name.split(".")[0] in ("agency", "tracking", "billing")]
    assert ours
    assert {_queue_of(name) for name in ours} <= consumed
    # bin/worker names the same queues (a worker started with -Q consumes only those).
    worker = (settings.BASE_DIR / "bin" / "worker").read_text()
    assert ",".join(sorted(consumed)) in worker


def test_every_periodic_job_is_a_registered_task() -> None:
    app.loader.import_default_modules()
    for name, job in settings.CELERY_BEAT_SCHEDULE.items():
        assert job["task"] in app.tasks, name
