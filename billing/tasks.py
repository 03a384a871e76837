"""Celery tasks of billing: thin wrappers over the services.

Delivery semantics are chosen per task (the README's table says why): every task here is
safe to run twice, so each is acknowledged late and requeued if its worker dies (at least
once). Emailing an invoice, the one effect that must not repeat, is not a task: admin
sends it in the request, so it happens at most once.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from agency.calendar import current_month, month_start, previous_month, today
from agency.models import Client
from billing.recon_outputs import recon_outputs_refresh
from billing.selectors import dashboard
from billing.services.alerts import (
    MAX_ATTEMPTS,
    AlertDeliveryError,
    alert_deliveries_due,
    alert_delivery_send,
)
from billing.services.budgets import budgets_recompute
from billing.services.finalize import invoice_pdf_prepare_for, invoices_finalize_due_parallel
from billing.services.invoices import previous_month_of
from billing.services.month_end import month_end_resume, month_end_run
from billing.services.reconciliation import recon_alerts_evaluate
from billing.services.rollups import rollups_rebuild_dirty

logger = logging.getLogger(__name__)

# Set while a debounced recompute is queued: a burst of ingest requests schedules one run.
RECOMPUTE_SCHEDULED_KEY = "billing:budgets-recompute-scheduled"

# At least once: acknowledged when done; a task whose worker process dies (SIGKILL, the
# OOM killer) goes straight back to the queue. A lost whole worker's task is redelivered
# after the broker's visibility timeout, and the beat reruns the periodic jobs anyway.
AT_LEAST_ONCE: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}


# --- rollups and budgets ---------------------------------------------------------------


@shared_task(**AT_LEAST_ONCE)
def budgets_recompute_task() -> int:
    """Bring rollups up to date, then recompute every client's budget and fire alerts."""
    # Cleared before reading: usage committed after this point schedules another run.
    cache.delete(RECOMPUTE_SCHEDULED_KEY)
    rollups_rebuild_dirty()
    positions = budgets_recompute()
    # Rebuilt rollups leave the month's stored reconciliation stale: store it again now
    # rather than on its next visitor's request.
    recon_outputs_refresh_task.delay_on_commit()
    # And the overview's sums of this month (staff would otherwise wait for them).
    overview_refresh_task.delay_on_commit()
    return len(positions)


@shared_task(**AT_LEAST_ONCE)
def overview_refresh_task() -> int:
    """Sum this month's overview figures for every active client (what agency staff
    see) unless they are cached under the rollups' current version. Returns 1 when they
    were summed, 0 when nothing had changed."""
    return int(dashboard.overview_prepare(Client.objects.all(), now=timezone.now()))


@shared_task(**AT_LEAST_ONCE)
def recon_outputs_refresh_task() -> int:
    """Store this month's and last month's reconciliation page and API answer again if
    an input changed since (a rollup rebuild, a sync, a rate edit, a key mapping).
    Returns how many months were computed (none when nothing changed)."""
    day = today()
    month = month_start(day)
    return sum(recon_outputs_refresh(month=m, day=day) for m in (month, previous_month(month)))


def budgets_recompute_soon(sender: Any = None, **kwargs: Any) -> None:
    """Receiver of ``tracking.signals.usage_recorded``: schedule one recompute a little
    later (debounced through a cache flag). Never raises: ingest has already committed
    and must answer, whatever happens here."""
    delay = settings.BUDGET_RECOMPUTE_DELAY_SECONDS
    try:
        if cache.add(RECOMPUTE_SCHEDULED_KEY, "1", timeout=delay + 120):
            budgets_recompute_task.apply_async(countdown=delay)
    except Exception:
        logger.exception("could not schedule a budget recompute; the beat schedule will")


# --- alert delivery --------------------------------------------------------------------


def alert_deliveries_enqueue(sender: Any = None, *, delivery_ids: list[int], **kwargs: Any) -> None:
    """Receiver of ``billing.signals.alert_deliveries_created`` (after commit): one send
    task per delivery. Never raises: the alert is stored and a failure here is retried."""
    for delivery_id in delivery_ids:
        try:
            alert_delivery_send_task.delay(delivery_id)
        except Exception:
            # Broker down (or, eagerly, the send failed every retry): the delivery row
            # stays unsent and alert_deliveries_retry_task picks it up.
            logger.exception("could not enqueue alert delivery %s", delivery_id)


# At least once: a delivery is claimed by a conditional UPDATE, so a redelivered task
# does not send again while the claim is fresh; a send cut off by a dead worker is
# retried by the sweep after SENDING_TIMEOUT (a rare duplicate alert beats a lost one).
@shared_task(bind=True, max_retries=MAX_ATTEMPTS, **AT_LEAST_ONCE)
def alert_delivery_send_task(self: Any, delivery_id: int) -> str:
    """Send one alert delivery; on failure retry with backoff (1, 2, 4 … minutes)."""
    try:
        return alert_delivery_send(delivery_id=delivery_id)
    except AlertDeliveryError as exc:
        raise self.retry(exc=exc, countdown=60 * 2**self.request.retries) from exc


@shared_task(**AT_LEAST_ONCE)
def alert_deliveries_retry_task() -> int:
    """Re-enqueue deliveries that failed or whose task was lost. Idempotent: a delivery
    is claimed by a conditional UPDATE, so a duplicate task does nothing."""
    due = alert_deliveries_due()
    for delivery_id in due:
        alert_delivery_send_task.delay(delivery_id)
    return len(due)


# --- reconciliation ------------------------------------------------------------------

# The provider revises its last days for a while: last month is checked this long into
# the new one.
RECON_PREVIOUS_MONTH_DAYS = 3


@shared_task(**AT_LEAST_ONCE)
def recon_alerts_task(month_iso: str | None = None) -> int:
    """Fire the reconciliation alerts of a month (``YYYY-MM-DD`` of its first day;
    default this month, and last month in the first days of this one). Idempotent: each
    alert fires once."""
    now = timezone.now()
    if month_iso:
        months = [date.fromisoformat(month_iso).replace(day=1)]
    else:
        months = [current_month(now)]
        if today(now).day <= RECON_PREVIOUS_MONTH_DAYS:
            months.append(previous_month(months[0]))
    return sum(len(recon_alerts_evaluate(month=month, now=now)) for month in months)


# --- invoices --------------------------------------------------------------------------


@shared_task(**AT_LEAST_ONCE)
def invoices_generate_task(month_iso: str | None = None) -> list[int]:
    """The month-end run: create or replace the drafts of a month (``YYYY-MM-DD`` of its
    first day; default last month). Idempotent: drafts are replaced, issued invoices left
    alone; the run is recorded, so one cut short is finished by the daily job."""
    month = date.fromisoformat(month_iso) if month_iso else previous_month_of(timezone.now())
    return month_end_run(month=month.replace(day=1)).invoice_ids


@shared_task(**AT_LEAST_ONCE)
def invoices_finalize_due_task() -> list[int]:
    """The daily job: finish any month-end run cut short (or missed), refresh past
    months' drafts and finalize those past the grace period, their PDFs rendered ahead
    by one ``invoice_pdf_prepare_task`` per invoice over the workers (the job waits for
    them, rendering the stragglers itself, and reports them). Idempotent: finalizing needs a draft, and a
    finalized invoice is none."""
    month_end_resume()
    result = invoices_finalize_due_parallel(prepare=_prepare_on_a_worker)
    if result.stragglers or result.failed:
        logger.warning(
            "finalized %s invoices; PDFs the job rendered itself: %s; failed: %s",
            len(result.finalized),
            result.stragglers,
            result.failed,
        )
    return result.finalized


def _prepare_on_a_worker(invoice_id: int, seq: int, moment_iso: str) -> None:
    invoice_pdf_prepare_task.delay(invoice_id, seq, moment_iso)


# At least once, and cheap to repeat: the PDF is kept in the cache under its HTML's hash,
# and only a finalization that would print exactly that document uses it.
@shared_task(**AT_LEAST_ONCE)
def invoice_pdf_prepare_task(invoice_id: int, seq: int, moment_iso: str) -> str | None:
    """Render ahead the PDF a draft will have once finalized as number ``seq`` of its
    year at that moment (``billing.services.finalize``)."""
    return invoice_pdf_prepare_for(
        invoice_id=invoice_id, seq=seq, moment=datetime.fromisoformat(moment_iso)
    )
