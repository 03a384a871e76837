"""Reconciliation alerts: coverage below the threshold and drifting models, once each,
through the budget alerts' channels; shown on the staff alerts page."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.core import mail
from django.test import TestCase

from agency.models import Client
from billing.models import Alert, AlertDelivery, AlertKind
from billing.services.alerts import alert_fire
from billing.services.reconciliation import recon_alerts_evaluate
from billing.tasks import recon_alerts_task
from tests.billing.test_reconciliation import make_book
from tests.factories import StaffFactory


@pytest.fixture
def book(db: None) -> dict[str, Client]:
    return make_book()


NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
NOVEMBER = date(2026, 11, 1)


@pytest.fixture
def alert_settings(settings: Any) -> Any:
    settings.AGENCY_ALERT_EMAILS = ["ops@agency.example"]
    settings.AGENCY_SLACK_WEBHOOK_URL = ""
    settings.SITE_URL = "https://meter.example"
    settings.RECON_COVERAGE_ALERT_PCT = Decimal("98")
    return settings


def evaluate(month: date = NOVEMBER) -> list[Alert]:
    with (
        time_machine.travel(NOW, tick=False),
        TestCase.captureOnCommitCallbacks(execute=True),
    ):
        return recon_alerts_evaluate(month=month, now=NOW)


def test_low_coverage_and_a_drifting_model_alert_the_agency(
    book: dict[str, Client], alert_settings: Any
) -> None:
    fired = evaluate()

    assert {(a.kind, a.key) for a in fired} == {
        (AlertKind.RECON_COVERAGE, "coverage<98"),
        (AlertKind.RECON_DRIFT, "anthropic:drift-model"),
    }
    assert all(a.client is None for a in fired)
    subjects = sorted(m.subject for m in mail.outbox)
    assert subjects == [
        "Reconciliation: drift-model priced +1.01% off the provider's list price",
        "Reconciliation: tracked 65.8% of the provider's November 2026 spend (threshold 98%)",
    ]
    assert all(m.to == ["ops@agency.example"] for m in mail.outbox)
    coverage = next(m for m in mail.outbox if "tracked" in m.subject)
    assert "Untracked: $3.90" in coverage.body
    assert "https://meter.example/reconciliation/?month=2026-11" in coverage.body


def test_each_alert_fires_once(book: dict[str, Client], alert_settings: Any) -> None:
    evaluate()
    assert evaluate() == []
    assert Alert.objects.filter(client=None).count() == 2
    assert AlertDelivery.objects.count() == 2
    assert len(mail.outbox) == 2


def test_the_database_refuses_a_second_copy(book: dict[str, Client], alert_settings: Any) -> None:
    """A concurrent worker that missed the first row still cannot insert it again."""
    first = evaluate()[0]
    duplicate = Alert(
        client=None,
        month=first.month,
        kind=first.kind,
        threshold=first.threshold,
        key=first.key,
        subject="again",
        message="again",
        created_at=NOW,
    )
    assert alert_fire(duplicate, deliver=True, now=NOW) is False


def test_coverage_above_the_threshold_is_quiet(
    book: dict[str, Client], alert_settings: Any
) -> None:
    alert_settings.RECON_COVERAGE_ALERT_PCT = Decimal("65")
    fired = evaluate()
    assert [a.kind for a in fired] == [AlertKind.RECON_DRIFT]


def test_a_month_without_a_report_fires_nothing(
    book: dict[str, Client], alert_settings: Any
) -> None:
    assert evaluate(date(2026, 10, 1)) == []
    assert mail.outbox == []


def test_the_task_checks_last_month_in_the_first_days(
    book: dict[str, Client], alert_settings: Any
) -> None:
    with (
        time_machine.travel(datetime(2026, 12, 2, 12, tzinfo=UTC), tick=False),
        TestCase.captureOnCommitCallbacks(execute=True),
    ):
        assert recon_alerts_task() == 2
        assert recon_alerts_task() == 0


def test_staff_alerts_page_lists_them(
    client: Any, book: dict[str, Client], alert_settings: Any
) -> None:
    evaluate()
    client.force_login(StaffFactory.create())
    html = client.get("/alerts/").content.decode()
    assert "Agency (reconciliation)" in html
    assert "drift-model priced +1.01%" in html
