"""Budget alerts: thresholds on actual and projected spend, anomalies, delivery."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import time_machine
from django.core import mail
from django.db import connection, connections
from django.test import TestCase

from agency.models import Client
from billing.models import Alert, AlertDelivery, AlertKind, DeliveryChannel, DeliveryStatus
from billing.selectors.budgets import alerts_for
from billing.services.alerts import (
    AlertDeliveryError,
    alert_deliveries_due,
    alert_delivery_send,
    alert_fire,
)
from billing.services.budgets import budgets_recompute
from billing.services.rollups import rollups_rebuild_period
from tests.clock import AGENCY_TZ
from tests.factories import ClientFactory, UsageEventFactory
from tracking.models import UsageEvent

NOW = datetime(2026, 11, 15, 12, 30, tzinfo=AGENCY_TZ)  # 349 of 720 hours into November


class Webhook:
    """A local HTTP server standing in for a Slack incoming webhook."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                outer.received.append(json.loads(self.rfile.read(length)))
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def alert_settings(settings: Any) -> Any:
    settings.AGENCY_ALERT_EMAILS = ["ops@agency.example"]
    settings.AGENCY_SLACK_WEBHOOK_URL = ""
    settings.SITE_URL = "https://meter.example"
    return settings


def billed(
    client: Client, amount: str, *, at: datetime = datetime(2026, 11, 2, 12, tzinfo=AGENCY_TZ)
) -> None:
    """Raw spend (markup 0 clients: billed = raw), rolled up at once."""
    UsageEventFactory.create(client=client, occurred_at=at, cost_usd=Decimal(amount))
    rollups_rebuild_period(start=at.date(), end=at.date(), client_id=client.pk)


def recompute(now: datetime = NOW) -> None:
    """A recompute at ``now``, running the after-commit delivery tasks (eager Celery)."""
    with (
        time_machine.travel(now, tick=False),
        TestCase.captureOnCommitCallbacks(execute=True),
    ):
        budgets_recompute(now=now)


def fired(client: Client) -> set[tuple[str, int]]:
    return set(Alert.objects.filter(client=client).values_list("kind", "threshold"))


@pytest.mark.django_db
def test_reaching_thresholds_fires_actual_alerts(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    billed(client, "85")

    recompute(datetime(2026, 11, 30, 23, 0, tzinfo=AGENCY_TZ))

    assert fired(client) == {(AlertKind.ACTUAL, 50), (AlertKind.ACTUAL, 80)}


@pytest.mark.django_db
def test_an_alert_fires_once_across_recomputes(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    billed(client, "85")
    late = datetime(2026, 11, 30, 23, 0, tzinfo=AGENCY_TZ)

    recompute(late)
    recompute(late)

    assert Alert.objects.filter(client=client).count() == 2
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_only_the_highest_new_threshold_is_delivered(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    billed(client, "120")

    recompute(datetime(2026, 11, 30, 23, 0, tzinfo=AGENCY_TZ))

    delivered = AlertDelivery.objects.values_list("alert__threshold", flat=True)
    assert list(delivered) == [100]


@pytest.mark.django_db
def test_email_says_who_how_much_threshold_projection_and_links(alert_settings: Any) -> None:
    client = ClientFactory.create(
        name="Acme Corp", slug="acme", monthly_budget_usd=Decimal("900"), markup_pct=Decimal("0")
    )
    billed(client, "740.50")

    recompute()

    message = next(m for m in mail.outbox if "reached" in m.subject)
    assert message.to == ["ops@agency.example"]
    assert "Acme Corp" in message.subject
    assert "$740.50" in message.body and "$900.00" in message.body
    assert "threshold 80%" in message.body
    assert "Projected month-end: $1,527.68" in message.body
    assert "https://meter.example/clients/acme/" in message.body


@pytest.mark.django_db
def test_billing_contact_gets_alerts_when_opted_in(alert_settings: Any) -> None:
    client = ClientFactory.create(
        monthly_budget_usd=Decimal("100"),
        markup_pct=Decimal("0"),
        billing_email="ap@client.example",
        alert_billing_contact=True,
    )
    billed(client, "60")

    recompute(datetime(2026, 11, 30, 23, 0, tzinfo=AGENCY_TZ))

    assert sorted(m.to[0] for m in mail.outbox) == ["ap@client.example", "ops@agency.example"]


@pytest.mark.django_db
def test_projected_spend_fires_projected_alerts(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    billed(client, "45")  # 45 after 349 h → ~92.8 at month end

    recompute()

    assert fired(client) == {(AlertKind.PROJECTED, 50), (AlertKind.PROJECTED, 80)}


@pytest.mark.django_db
def test_no_projected_alert_in_the_first_day_of_a_month(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    billed(client, "10", at=datetime(2026, 11, 1, 1, tzinfo=AGENCY_TZ))

    recompute(datetime(2026, 11, 1, 5, 0, tzinfo=AGENCY_TZ))

    assert fired(client) == set()


@pytest.mark.django_db
def test_client_without_budget_gets_no_threshold_alerts(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=None, markup_pct=Decimal("0"))
    billed(client, "5000")

    recompute()

    assert fired(client) == set()


@pytest.mark.django_db
def test_thresholds_are_per_client(alert_settings: Any) -> None:
    client = ClientFactory.create(
        monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"), alert_thresholds="25, 90"
    )
    billed(client, "30")

    recompute(datetime(2026, 11, 30, 23, 0, tzinfo=AGENCY_TZ))

    assert fired(client) == {(AlertKind.ACTUAL, 25)}


@pytest.mark.django_db
def test_alert_fire_inserts_once_and_only_the_inserter_delivers(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"))

    def alert() -> Alert:
        return Alert(
            client=client, month=date(2026, 11, 1), kind=AlertKind.ACTUAL, threshold=80,
            subject="s", message="m", created_at=NOW,
        )  # fmt: skip

    assert alert_fire(alert(), deliver=True, now=NOW) is True
    assert alert_fire(alert(), deliver=True, now=NOW) is False
    assert AlertDelivery.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_fire_an_alert_once(alert_settings: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (SQLite serializes the whole file)")
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"))
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def worker() -> None:
        try:
            barrier.wait()
            alert = Alert(
                client=client, month=date(2026, 11, 1), kind=AlertKind.ACTUAL, threshold=100,
                subject="s", message="m", created_at=NOW,
            )  # fmt: skip
            results.append(alert_fire(alert, deliver=False, now=NOW))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False, False, False, True]
    assert Alert.objects.count() == 1


@pytest.mark.django_db
def test_slack_webhook_receives_the_alert(alert_settings: Any, webhook: Webhook) -> None:
    client = ClientFactory.create(
        name="Globex", monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"),
        slack_webhook_url=webhook.url,
    )  # fmt: skip
    billed(client, "100")

    recompute(datetime(2026, 11, 30, 23, 0, tzinfo=AGENCY_TZ))

    assert len(webhook.received) == 1
    assert webhook.received[0]["text"].startswith("*Globex reached 100% of its November 2026")
    delivery = AlertDelivery.objects.get(channel=DeliveryChannel.SLACK)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 1)


@pytest.mark.django_db
def test_agency_and_client_webhooks_each_receive_the_alert_once(
    alert_settings: Any, webhook: Webhook
) -> None:
    agency_hook = Webhook()
    try:
        alert_settings.AGENCY_SLACK_WEBHOOK_URL = agency_hook.url
        client = ClientFactory.create(
            name="Globex", monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"),
            slack_webhook_url=webhook.url,
        )  # fmt: skip
        billed(client, "100")

        recompute(datetime(2026, 11, 30, 23, 0, tzinfo=AGENCY_TZ))
        recompute(datetime(2026, 11, 30, 23, 30, tzinfo=AGENCY_TZ))
    finally:
        agency_hook.close()

    for hook in (agency_hook, webhook):
        assert [m["text"].split("\n")[0] for m in hook.received] == [
            "*Globex reached 100% of its November 2026 budget*"
        ]
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_failed_delivery_is_recorded_then_retried(alert_settings: Any, webhook: Webhook) -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"))
    alert = Alert.objects.create(
        client=client, month=date(2026, 11, 1), kind=AlertKind.ACTUAL, threshold=80,
        subject="s", message="m", created_at=NOW,
    )  # fmt: skip
    delivery = AlertDelivery.objects.create(
        alert=alert, channel=DeliveryChannel.SLACK, target=webhook.url, updated_at=NOW
    )
    webhook.status = 500

    with pytest.raises(AlertDeliveryError, match=r"^webhook failed: HTTP Error 500"):
        alert_delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 1)
    assert "500" in delivery.last_error

    webhook.status = 200
    assert alert_delivery_send(delivery_id=delivery.pk) == DeliveryStatus.SENT
    assert len(webhook.received) == 2


@pytest.mark.django_db
def test_a_sent_delivery_is_never_sent_again(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"))
    alert = Alert.objects.create(
        client=client, month=date(2026, 11, 1), kind=AlertKind.ACTUAL, threshold=80,
        subject="s", message="m", created_at=NOW,
    )  # fmt: skip
    delivery = AlertDelivery.objects.create(
        alert=alert, channel=DeliveryChannel.EMAIL, target="ops@agency.example", updated_at=NOW
    )

    alert_delivery_send(delivery_id=delivery.pk)
    alert_delivery_send(delivery_id=delivery.pk)

    assert len(mail.outbox) == 1


def hourly_history(client: Client, *, per_hour: str, hours: int = 14 * 24) -> None:
    """Steady spend every hour for the 14 days before NOW's previous hour."""
    start = NOW.replace(minute=0) - timedelta(hours=hours + 1)
    UsageEvent.objects.bulk_create(
        UsageEventFactory.build(
            client=client,
            occurred_at=start + timedelta(hours=i, minutes=10),
            cost_usd=Decimal(per_hour) + Decimal(i % 3) / 10,
        )
        for i in range(hours)
    )


@pytest.mark.django_db
def test_an_hour_far_above_the_baseline_fires_an_anomaly(alert_settings: Any) -> None:
    client = ClientFactory.create(name="Initech", monthly_budget_usd=None)
    hourly_history(client, per_hour="2")
    UsageEventFactory.create(
        client=client, occurred_at=NOW - timedelta(minutes=10), cost_usd=Decimal("40")
    )
    rollups_rebuild_period(start=date(2026, 10, 30), end=date(2026, 11, 15))

    recompute()

    alert = Alert.objects.get(client=client)
    assert (alert.kind, alert.key) == (AlertKind.ANOMALY, "2026-11-15")
    assert "$40.00" in alert.message and "Initech" in alert.message


@pytest.mark.django_db
def test_an_hour_within_the_baseline_is_no_anomaly(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=None)
    hourly_history(client, per_hour="2")
    UsageEventFactory.create(
        client=client, occurred_at=NOW - timedelta(minutes=10), cost_usd=Decimal("2.2")
    )
    rollups_rebuild_period(start=date(2026, 10, 30), end=date(2026, 11, 15))

    recompute()

    assert not Alert.objects.exists()


@pytest.mark.django_db
def test_a_new_client_has_no_baseline_yet(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=None)
    hourly_history(client, per_hour="2", hours=48)
    UsageEventFactory.create(
        client=client, occurred_at=NOW - timedelta(minutes=10), cost_usd=Decimal("40")
    )
    rollups_rebuild_period(start=date(2026, 11, 12), end=date(2026, 11, 15))

    recompute()

    assert not Alert.objects.exists()


@pytest.mark.django_db
def test_alert_history_lists_newest_first(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    other = ClientFactory.create(monthly_budget_usd=Decimal("100"), markup_pct=Decimal("0"))
    billed(client, "55")
    billed(other, "55")
    recompute(datetime(2026, 11, 30, 23, 0, tzinfo=AGENCY_TZ))
    billed(client, "30")
    recompute(datetime(2026, 11, 30, 23, 30, tzinfo=AGENCY_TZ))

    history = list(alerts_for(client, limit=10))

    assert [a.threshold for a in history] == [80, 50]


@pytest.mark.django_db
def test_failed_and_stuck_deliveries_are_due_for_retry(alert_settings: Any) -> None:
    client = ClientFactory.create(monthly_budget_usd=Decimal("100"))
    alert = Alert.objects.create(
        client=client, month=date(2026, 11, 1), kind=AlertKind.ACTUAL, threshold=80,
        subject="s", message="m", created_at=NOW,
    )  # fmt: skip
    old = NOW - timedelta(minutes=30)

    def delivery(target: str, status: str) -> int:
        return AlertDelivery.objects.create(
            alert=alert, channel=DeliveryChannel.EMAIL, target=target, status=status,
            updated_at=old,
        ).pk  # fmt: skip

    due = {
        delivery("a@x.example", DeliveryStatus.FAILED),
        delivery("b@x.example", DeliveryStatus.PENDING),
        delivery("c@x.example", DeliveryStatus.SENDING),
    }
    delivery("d@x.example", DeliveryStatus.SENT)
    delivery("e@x.example", DeliveryStatus.GAVE_UP)

    assert set(alert_deliveries_due(now=NOW)) == due
