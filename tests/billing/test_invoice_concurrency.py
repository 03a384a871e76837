"""Invoices under real concurrency: threads on PostgreSQL, a Celery worker on Redis, and
the database triggers that keep an issued invoice frozen."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from billing.models import Invoice, InvoiceLine, InvoiceStatus
from billing.services.invoices import (
    invoice_finalize,
    invoices_finalize_due,
    invoices_generate_month,
    previous_month_of,
)
from tests.factories import ClientFactory, priced_event

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite has no row locks (SELECT … FOR UPDATE is a no-op) and serialises all "
    "writers: concurrent finalization is only meaningful on PostgreSQL",
)


def _drafts(count: int) -> list[int]:
    for i in range(count):
        client = ClientFactory.create(slug=f"c{i}", markup_pct=Decimal("10"))
        priced_event(client, at=datetime(2026, 10, 3 + i, 12, tzinfo=UTC))
    return invoices_generate_month(month=date(2026, 10, 1)).invoice_ids


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_finalizations_get_distinct_gapless_numbers(rates):
    ids = _drafts(8)
    assert len(ids) == 8
    barrier = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def finalize(invoice_id: int) -> None:
        try:
            barrier.wait()
            invoice_finalize(invoice_id=invoice_id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=finalize, args=(pk,)) for pk in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    year = timezone.localdate().year
    numbers = sorted(str(n) for n in Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-{year}-{seq:05d}" for seq in range(1, 9)]


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_racing_finalizations_of_one_invoice_issue_one_number(rates):
    (invoice_id,) = _drafts(1)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def finalize() -> None:
        try:
            barrier.wait()
            invoice_finalize(invoice_id=invoice_id)
            outcomes.append("finalized")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
        finally:
            connection.close()

    threads = [threading.Thread(target=finalize) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["InvoiceError"] * 3 + ["finalized"]
    assert Invoice.objects.get().seq == 1


def _waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        # pg_locks, not pg_stat_activity: the latter is a snapshot fixed for the
        # transaction that reads it.
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return cursor.fetchone()[0] > 0


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_draft_finalized_by_staff_during_the_daily_run_is_skipped_not_the_rest(rates):
    # The daily job has listed the three drafts; staff are finalizing the second (its row
    # locked) when the job comes to regenerate it. The job waits, finds it issued, and goes
    # on to the third.
    first, second, third = _drafts(3)
    later = timezone.now() + timedelta(days=40)  # every draft past its grace period
    listed, outcome = threading.Event(), {}

    def staff() -> None:
        try:
            with transaction.atomic():
                Invoice.objects.select_for_update().get(pk=second)
                listed.set()
                _wait_for(_waiting_for_a_lock, seconds=30)
                invoice_finalize(invoice_id=second, now=later)
        finally:
            connection.close()

    def daily_job() -> None:
        try:
            listed.wait(30)
            outcome["result"] = invoices_finalize_due(now=later)
        finally:
            connection.close()

    threads = [threading.Thread(target=staff), threading.Thread(target=daily_job)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    result = outcome["result"]
    assert (result.refreshed, result.finalized, result.failed) == (2, [first, third], [])
    numbers = dict(Invoice.objects.values_list("pk", "seq"))
    assert numbers == {second: 1, first: 2, third: 3}


@postgres_only
@pytest.mark.django_db
def test_the_database_refuses_changing_an_issued_invoices_money(rates):
    (invoice_id,) = _drafts(1)
    invoice_finalize(invoice_id=invoice_id)
    with pytest.raises(DatabaseError, match="frozen"), transaction.atomic():
        Invoice.objects.filter(pk=invoice_id).update(total_usd=Decimal("1000"))
    with pytest.raises(DatabaseError, match="frozen"), transaction.atomic():
        InvoiceLine.objects.filter(invoice_id=invoice_id).update(amount_usd=Decimal("1000"))
    with pytest.raises(DatabaseError, match="frozen"), transaction.atomic():
        InvoiceLine.objects.filter(invoice_id=invoice_id).delete()


# --- a real worker -------------------------------------------------------------------------


@pytest.fixture
def invoice_worker(transactional_db) -> Iterator[None]:
    """A Celery worker thread consuming the Redis broker, tasks not eager."""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL: a real broker for a real worker")
    from celery.contrib.testing.worker import start_worker

    import billing.tasks  # noqa: F401  (registers the tasks with the app)
    from agency.celery import app

    app.conf.task_always_eager = False
    try:
        # The worker consumes every queue of the settings, as bin/worker does: the
        # month-end tasks go through their own ("documents"), as in production. (Named:
        # a worker started before in this process may have narrowed the app's queues.)
        queues = [queue.name for queue in settings.CELERY_TASK_QUEUES]
        with start_worker(
            app, pool="solo", queues=queues, perform_ping_check=False, loglevel="WARNING"
        ):
            yield
    finally:
        app.conf.task_always_eager = True


def _wait_for(condition: object, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("the worker did not get there in time")


@pytest.mark.worker
def test_month_end_runs_through_the_worker(rates, invoice_worker, settings):
    from billing.tasks import invoices_finalize_due_task, invoices_generate_task

    settings.INVOICE_GRACE_DAYS = 0
    month = previous_month_of(timezone.now())
    client = ClientFactory.create(markup_pct=Decimal("25"))
    occurred = timezone.make_aware(datetime.combine(month + timedelta(days=4), datetime.min.time()))
    priced_event(client, at=occurred)

    invoices_generate_task.delay(month.isoformat())
    invoices_generate_task.delay(month.isoformat())  # twice: still one draft
    _wait_for(lambda: Invoice.objects.filter(client=client).exists())
    invoices_finalize_due_task.delay()
    _wait_for(lambda: Invoice.objects.filter(status=InvoiceStatus.FINALIZED).exists())
    invoice = Invoice.objects.get()
    assert invoice.number is not None
    assert invoice.total_usd == Decimal("0.01")
    assert invoice.pdf_sha256
