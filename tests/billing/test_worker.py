"""The recompute-and-alert path on a real Celery worker, against Redis.

Usage posted through the ingest service sends ``usage_recorded`` after commit; the
debounced task goes through the broker to a real worker thread, which rebuilds the dirty rollups, recomputes the budget, fires the alert
and then, as a second task, posts it to a local HTTP server standing in for Slack.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from unittest import mock

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.core.cache import cache
from django.db import connections

from agency.celery import app
from billing.models import Alert, AlertDelivery, AlertKind, BudgetSnapshot, DeliveryStatus
from billing.tasks import RECOMPUTE_SCHEDULED_KEY
from tests.factories import ClientFactory
from tracking.ingest import usage_ingest

pytestmark = [
    pytest.mark.worker,
    pytest.mark.skipif(
        not os.environ.get("REDIS_URL"),
        reason="needs a Redis broker: set REDIS_URL (e.g. redis://127.0.0.1:6379/0)",
    ),
]


class SlackStandIn:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                outer.arrived.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    stand_in = SlackStandIn()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


def _close_worker_connections(**kwargs: Any) -> None:
    # The worker thread's own DB connection; left open it would block dropping the test DB.
    connections.close_all()


@pytest.fixture
def worker(settings: Any) -> Iterator[None]:
    """A real worker thread consuming a queue of its own on the Redis broker (so nothing
    else sharing that Redis picks up these tasks, and it picks up nothing else)."""
    settings.BUDGET_RECOMPUTE_DELAY_SECONDS = 1
    queue = f"test-budgets-{uuid.uuid4().hex[:8]}"
    # The broker is REDIS_URL already (settings: CELERY_BROKER_URL = REDIS_URL).
    previous = (app.conf.task_always_eager, app.conf.task_default_queue)
    app.conf.task_always_eager = False
    app.conf.task_default_queue = queue
    task_postrun.connect(_close_worker_connections, weak=False)
    try:
        # Every task to the private queue, past the settings' routes ("usage", "notify").
        with (
            mock.patch.object(app.amqp.router, "routes", []),
            start_worker(
                app, pool="solo", queues=[queue], perform_ping_check=False, shutdown_timeout=10
            ),
        ):
            yield
    finally:
        task_postrun.disconnect(_close_worker_connections)
        app.conf.task_always_eager, app.conf.task_default_queue = previous


def wait_for(condition: Any, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.django_db(transaction=True)
def test_new_usage_is_recomputed_and_alerted_by_a_real_worker(
    settings: Any, worker: None, slack: SlackStandIn, rates: None
) -> None:
    settings.AGENCY_ALERT_EMAILS = []
    settings.SITE_URL = "https://meter.example"
    client = ClientFactory.create(
        name="Globex",
        slug="globex",
        monthly_budget_usd=Decimal("100"),
        markup_pct=Decimal("25"),
        slack_webhook_url=slack.url,
    )
    cache.delete(RECOMPUTE_SCHEDULED_KEY)

    # The real ingest path: it commits, marks the day dirty and sends usage_recorded after
    # commit, whose receiver schedules the debounced task on the broker.
    outcome = usage_ingest(
        events=[
            {
                "id": "msg_worker_1",
                "model": "claude-haiku-4-5",
                # $40 input + $50 output = $90 raw, $112.50 billed at 25 %.
                "usage": {"input_tokens": 40_000_000, "output_tokens": 10_000_000},
            }
        ],
        client=client,
    )
    assert outcome.count("accepted") == 1

    assert slack.arrived.wait(timeout=60), "the webhook never received the alert"
    assert wait_for(lambda: AlertDelivery.objects.filter(status=DeliveryStatus.SENT).exists()), (
        "the delivery was not marked sent"
    )
    snapshot = BudgetSnapshot.objects.get(client=client)
    assert (snapshot.billed_usd, snapshot.status) == (Decimal("112.5"), "red")
    assert set(Alert.objects.values_list("kind", "threshold")) >= {
        (AlertKind.ACTUAL, 50),
        (AlertKind.ACTUAL, 80),
        (AlertKind.ACTUAL, 100),
    }
    assert len(slack.received) == 1
    text = slack.received[0]["text"]
    assert text.startswith("*Globex reached 100% of its ")
    assert "$112.50 of its $100.00 budget" in text
    assert "https://meter.example/clients/globex/" in text
