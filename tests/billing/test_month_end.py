"""The month-end run is recorded; the daily job finishes one cut short or missed (issue
10, item 6). Delivery semantics per task, as the README's table states them.

The same with a real worker killed mid-run: tests/billing/test_worker_kill.py.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings as django_settings

from billing.models import Invoice, InvoiceLine, MonthEndRun
from billing.services.invoices import invoices_generate_month
from billing.services.month_end import month_end_resume, month_end_run, month_end_unfinished
from tests.factories import ClientFactory, priced_event

pytestmark = pytest.mark.django_db

OCT, NOV = date(2026, 10, 1), date(2026, 11, 1)


def at(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


@pytest.fixture
def clients(rates, time_machine) -> list[Any]:
    """Three clients with October usage: two models each."""
    time_machine.move_to(at(10, 1), tick=False)
    made = []
    for slug in ("acme", "globex", "initech"):
        client = ClientFactory.create(slug=slug, markup_pct=Decimal("25"))
        priced_event(client, at=at(10, 3))
        priced_event(client, at=at(10, 4), model="claude-haiku-4-5")
        made.append(client)
    time_machine.move_to(at(11, 1, 1), tick=False)
    return made


def assert_one_complete_draft_each(clients: list[Any], month: date = OCT) -> None:
    for client in clients:
        (invoice,) = Invoice.objects.filter(client=client, month=month)
        assert sorted(invoice.lines.values_list("model", flat=True)) == [
            "claude-haiku-4-5",
            "claude-sonnet-4-5",
        ]
    assert InvoiceLine.objects.filter(invoice__month=month).count() == 2 * len(clients)


def test_a_run_is_recorded_from_start_to_finish(clients, time_machine):
    result = month_end_run(month=OCT)
    run = MonthEndRun.objects.get(month=OCT)
    assert (result.generated, run.attempts) == (3, 1)
    assert run.started_at == run.finished_at == at(11, 1, 1)
    assert_one_complete_draft_each(clients)


def test_the_daily_job_finishes_a_run_cut_short(clients):
    # A worker died after the first client: its draft exists, the run is unfinished.
    MonthEndRun.objects.create(month=OCT, started_at=at(11, 1, 1), attempts=1)
    invoices_generate_month(month=OCT, client_slug="acme")
    assert month_end_unfinished() == [OCT]
    first = Invoice.objects.get(client=clients[0]).pk

    assert month_end_resume() == [OCT]

    assert_one_complete_draft_each(clients)
    assert Invoice.objects.get(client=clients[0]).pk == first  # redrafted, not duplicated
    run = MonthEndRun.objects.get(month=OCT)
    assert (run.finished_at is not None, run.attempts) == (True, 2)
    assert month_end_unfinished() == []


def test_the_daily_job_runs_a_month_end_that_never_started(clients):
    # Beat (or every worker) was down at 01:30 on the 1st.
    assert month_end_unfinished() == [OCT]
    assert month_end_resume() == [OCT]
    assert_one_complete_draft_each(clients)


def test_a_finished_run_is_left_alone(clients):
    month_end_run(month=OCT)
    Invoice.objects.get(client=clients[1]).delete()  # staff deleted a draft on purpose
    assert month_end_resume() == []
    assert not Invoice.objects.filter(client=clients[1]).exists()


def test_the_daily_task_resumes_before_it_finalizes(clients, settings):
    from billing.tasks import invoices_finalize_due_task

    settings.INVOICE_GRACE_DAYS = 0
    MonthEndRun.objects.create(month=OCT, started_at=at(11, 1, 1))
    finalized = invoices_finalize_due_task.delay().get()
    assert len(finalized) == 3
    assert set(Invoice.objects.values_list("status", flat=True)) == {"finalized"}
    assert MonthEndRun.objects.get(month=OCT).finished_at is not None


def test_the_generate_command_records_the_run(clients):
    from django.core.management import call_command

    call_command("generate_invoices", "--month", "2026-10")
    assert MonthEndRun.objects.get(month=OCT).finished_at is not None
    assert_one_complete_draft_each(clients)


# --- delivery semantics per task --------------------------------------------------------


def test_each_task_has_the_delivery_semantics_the_readme_states():
    from agency.celery import app

    app.loader.import_default_modules()
    at_least_once = (True, True)
    expected = {
        "tracking.tasks.reprice_unpriced_task": at_least_once,
        "billing.tasks.budgets_recompute_task": at_least_once,
        "billing.tasks.recon_outputs_refresh_task": at_least_once,
        "billing.tasks.overview_refresh_task": at_least_once,
        "billing.tasks.alert_delivery_send_task": at_least_once,
        "billing.tasks.alert_deliveries_retry_task": at_least_once,
        "billing.tasks.invoices_generate_task": at_least_once,
        "billing.tasks.invoices_finalize_due_task": at_least_once,
        "billing.tasks.recon_alerts_task": at_least_once,
        "tracking.tasks.provider_usage_sync_task": at_least_once,
        "tracking.tasks.provider_usage_sync_recent_task": at_least_once,
        "billing.tasks.invoice_pdf_prepare_task": at_least_once,
        "tracking.tasks.usage_partitions_ensure_task": at_least_once,
    }
    ours = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}
    assert {name: (t.acks_late, t.reject_on_worker_lost) for name, t in ours.items()} == expected


def test_the_visibility_timeout_outlasts_the_longest_task_but_not_by_hours():
    timeout = django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert timeout == 900
    assert django_settings.CELERY_TASK_TIME_LIMIT == 840


def test_staff_see_month_end_runs_in_admin_and_cannot_edit_them(admin_client, client):
    MonthEndRun.objects.create(month=OCT, started_at=at(11, 1, 1), attempts=2)
    MonthEndRun.objects.create(
        month=NOV, started_at=at(12, 1, 1), finished_at=at(12, 1, 2), attempts=1
    )

    page = admin_client.get("/admin/billing/monthendrun/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "October 2026" in text and "unfinished" in text and "November 2026" in text
    run = MonthEndRun.objects.get(month=OCT)
    change = admin_client.post(f"/admin/billing/monthendrun/{run.pk}/change/", {"attempts": 9})
    assert change.status_code == 403
    assert MonthEndRun.objects.get(month=OCT).attempts == 2
    # Not staff: sent to the admin login.
    assert client.get("/admin/billing/monthendrun/").status_code == 302
