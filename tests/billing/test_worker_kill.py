"""A real Celery worker SIGKILLed in the middle of a month-end run, on Redis and
PostgreSQL (issue 10, item 6): the month still completes, with one invoice per client
and no duplicate line, as soon as a worker is back, not after the broker's visibility
timeout.

To kill the run *in the middle*, deterministically, one client's draft exists already and
the test holds a row lock on it (``SELECT … FOR UPDATE``): the worker drafts the clients
before it, then waits to redraft that one. The test kills it there, then lets go.

- The worker's pool process is killed (as the OOM killer does): the task was acknowledged
  late and is rejected on worker loss, so it is back in the queue at once and a fresh
  process runs it again.
- The whole worker is killed (a lost machine): the message stays unacknowledged in Redis
  for the visibility timeout. A new worker runs the daily job, which sees the unfinished
  run and finishes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction

from agency.models import Client
from billing.models import Invoice, InvoiceLine, MonthEndRun
from billing.services.invoices import invoices_generate_month
from billing.services.rollups import rollups_rebuild_dirty
from tests.factories import ClientFactory, priced_event

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not os.environ.get("REDIS_URL"),
        reason="kills real worker processes: needs PostgreSQL and a Redis broker (REDIS_URL)",
    ),
]

OCT = date(2026, 10, 1)
CLIENTS = 6
LOCKED = 3  # the worker drafts the first LOCKED - 1 clients, then waits on this one's draft
ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Worker:
    """``celery worker`` in a process group of its own, on a queue of its own, against
    the test database."""

    def __init__(self, queue: str, log: Path) -> None:
        db = connection.settings_dict
        url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "agency.settings_test"}
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "agency", "worker",
                "--pool", "prefork", "--concurrency", "1", "--queues", queue,
                "--hostname", f"{queue}@%h", "--loglevel", "INFO",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_for(lambda: "ready." in log.read_text(errors="replace"), "the worker to start")

    def pool_process(self) -> int | None:
        """The pid of the worker's one pool process (None between two of them)."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return int(found.stdout.split()[0]) if found.stdout.strip() else None

    def kill_pool_process(self) -> int:
        pid = self.pool_process()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_everything(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill_everything()


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue nobody else consumes; afterwards, nothing of it is left in Redis (the
    whole-worker kill leaves its message unacknowledged there)."""
    name = f"test-kill-{uuid.uuid4().hex[:8]}"
    yield name
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    for tag, raw in broker.hgetall("unacked").items():
        if json.loads(raw)[2] == name:
            broker.hdel("unacked", tag)
            broker.zrem("unacked_index", tag)
    broker.delete(name)


@pytest.fixture
def workers(queue: str, tmp_path: Path) -> Iterator[Callable[[], Worker]]:
    started: list[Worker] = []

    def start() -> Worker:
        started.append(Worker(queue, tmp_path / "worker.log"))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def october(rates: None) -> list[Client]:
    """CLIENTS clients with October usage of two models, rollups built; the LOCKED-th
    client's draft already exists (made by hand, say)."""
    clients = []
    for i in range(CLIENTS):
        client = ClientFactory.create(slug=f"client-{i}", markup_pct=Decimal("25"))
        priced_event(client, at=datetime(2026, 10, 3, 12, tzinfo=UTC))
        priced_event(client, at=datetime(2026, 10, 4, 12, tzinfo=UTC), model="claude-haiku-4-5")
        clients.append(client)
    rollups_rebuild_dirty()
    invoices_generate_month(month=OCT, client_slug=clients[LOCKED - 1].slug)
    return clients


@contextmanager
def run_stopped_at_the_locked_draft(clients: list[Client], queue: str) -> Iterator[None]:
    """Start the month-end run and wait until it has drafted the clients before the
    LOCKED-th and waits for that one's draft, whose row lock is held inside the block."""
    with transaction.atomic():
        Invoice.objects.select_for_update().get(client=clients[LOCKED - 1], month=OCT)
        send("billing.tasks.invoices_generate_task", queue, OCT.isoformat())
        wait_for(lambda: drafted() == LOCKED, "the run to stop at the locked draft")
        yield


def send(task: str, queue: str, *args: Any) -> None:
    """Through the broker to the worker (the test settings make this process eager)."""
    from agency.celery import app

    eager, app.conf.task_always_eager = app.conf.task_always_eager, False
    try:
        app.send_task(task, args=list(args), queue=queue)
    finally:
        app.conf.task_always_eager = eager


def drafted() -> int:
    return Invoice.objects.filter(month=OCT).count()


def assert_the_month_is_complete_without_duplicates(clients: list[Client]) -> None:
    for client in clients:
        (invoice,) = Invoice.objects.filter(client=client, month=OCT)
        lines = list(invoice.lines.order_by("position").values_list("position", "model"))
        assert lines == [(1, "claude-haiku-4-5"), (2, "claude-sonnet-4-5")], client.slug
        # Sonnet $0.006 raw, $0.0075 billed at 25 %: $0.01; Haiku $0.002, $0.0025: $0.00.
        assert invoice.total_usd == Decimal("0.01"), client.slug
    assert InvoiceLine.objects.filter(invoice__month=OCT).count() == 2 * len(clients)
    run = MonthEndRun.objects.get(month=OCT)
    assert run.finished_at is not None


def test_killing_the_pool_process_mid_run_requeues_the_run_at_once(october, workers, queue):
    worker = workers()
    with run_stopped_at_the_locked_draft(october, queue):
        killed = worker.kill_pool_process()
        # The task comes back from the queue into a fresh pool process and drafts again
        # up to the lock: by then the killed process has been replaced.
        wait_for(lambda: worker.pool_process() not in (None, killed), "a fresh pool process")
        wait_for(
            lambda: "WorkerLostError" in worker.log.read_text(errors="replace"),
            "the worker to notice its process died",
        )
        assert MonthEndRun.objects.get(month=OCT).finished_at is None
    # The lock is gone: the requeued run finishes the month.
    wait_for(lambda: MonthEndRun.objects.get(month=OCT).finished_at is not None, "the run")
    assert_the_month_is_complete_without_duplicates(october)
    assert MonthEndRun.objects.get(month=OCT).attempts == 2


def test_after_losing_the_whole_worker_the_daily_job_finishes_the_month(october, workers, queue):
    worker = workers()
    with run_stopped_at_the_locked_draft(october, queue):
        worker.kill_everything()
    assert drafted() == LOCKED
    assert MonthEndRun.objects.get(month=OCT).finished_at is None
    # The run's message waits unacknowledged in Redis for the visibility timeout (15
    # minutes). A worker comes back; the daily job does not wait for it.
    started = time.monotonic()
    workers()
    send("billing.tasks.invoices_finalize_due_task", queue)
    wait_for(lambda: MonthEndRun.objects.get(month=OCT).finished_at is not None, "the run")
    assert time.monotonic() - started < 60
    assert_the_month_is_complete_without_duplicates(october)
