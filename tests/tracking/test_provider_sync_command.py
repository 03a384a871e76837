"""``manage.py sync_provider_usage``, the scheduled task and the read-only admin."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, cast

import pytest
import time_machine
from celery.schedules import crontab
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from tests.factories import ClientMembershipFactory, StaffFactory
from tests.standin import AnthropicRecord, OpenAIRecord, standin_fixture  # noqa: F401 (the fixture "standin")
from tracking.models import ProviderReportRow, ProviderSyncRun, SyncStatus
from tracking.tasks import provider_usage_sync_recent_task, provider_usage_sync_task

pytestmark = pytest.mark.django_db

NOV1, NOV2 = date(2026, 11, 1), date(2026, 11, 2)


def _data(standin) -> None:
    standin.anthropic = [
        AnthropicRecord(day=NOV1, model="claude-x", output_tokens=5, amount="1", list_amount="1")
    ]
    standin.openai = [OpenAIRecord(day=NOV2, model="gpt-5", output_tokens=3)]


def test_command_syncs_every_configured_provider(standin, capsys):
    _data(standin)
    call_command("sync_provider_usage", "--since", "2026-11-01", "--until", "2026-11-02")
    out = capsys.readouterr().out
    assert "anthropic 2026-11-01..2026-11-02: 1 rows from 12 pages" in out
    assert "openai 2026-11-01..2026-11-02: 1 rows from 2 pages" in out
    assert set(ProviderReportRow.objects.values_list("provider", flat=True)) == {
        "anthropic",
        "openai",
    }
    assert set(ProviderSyncRun.objects.values_list("trigger", flat=True)) == {"command"}


def test_command_syncs_one_provider(standin):
    _data(standin)
    call_command(
        "sync_provider_usage",
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-02",
        "--provider",
        "openai",
    )
    assert list(ProviderReportRow.objects.values_list("provider", flat=True)) == ["openai"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-13-01"], "--since: expected a day as YYYY-MM-DD, got '2026-13-01'"),
        (
            ["--since", "2026-11-01", "--until", "yesterday"],
            "--until: expected a day as YYYY-MM-DD",
        ),
        (
            ["--since", "2026-11-02", "--until", "2026-11-01"],
            "--until (2026-11-01) is before --since",
        ),
    ],
)
def test_command_refuses_bad_days(standin, args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("sync_provider_usage", *args)
    assert not ProviderSyncRun.objects.exists()


def test_command_refuses_a_provider_without_its_key(standin, settings):
    settings.OPENAI_ADMIN_API_KEY = ""
    with pytest.raises(CommandError, match="OPENAI_ADMIN_API_KEY is not set"):
        call_command("sync_provider_usage", "--since", "2026-11-01", "--provider", "openai")


def test_command_without_any_key_says_which_to_set(settings):
    settings.ANTHROPIC_ADMIN_API_KEY = settings.OPENAI_ADMIN_API_KEY = ""
    with pytest.raises(CommandError, match="set ANTHROPIC_ADMIN_API_KEY or OPENAI_ADMIN_API_KEY"):
        call_command("sync_provider_usage", "--since", "2026-11-01")


def test_command_fails_loudly_when_a_sync_fails(standin):
    _data(standin)
    standin.fail("/analytics/usage", 403, message="admin key lacks permission")
    with pytest.raises(
        CommandError, match=r"anthropic \(run \d+\): HTTP 403: admin key lacks permission"
    ):
        call_command("sync_provider_usage", "--since", "2026-11-01", "--until", "2026-11-02")
    # The other provider still synced.
    assert list(ProviderReportRow.objects.values_list("provider", flat=True)) == ["openai"]


def test_task_takes_plain_arguments_and_returns_the_run(standin):
    _data(standin)
    run_id = provider_usage_sync_task.delay("anthropic", "2026-11-01", "2026-11-01").get()
    run = ProviderSyncRun.objects.get(pk=run_id)
    assert (run.status, run.trigger, run.rows) == (SyncStatus.SUCCEEDED, "schedule", 1)


def test_scheduled_job_pulls_the_last_three_days_of_each_configured_provider(standin, settings):
    _data(standin)
    settings.OPENAI_ADMIN_API_KEY = ""
    with time_machine.travel(datetime(2026, 11, 3, 9, 0, tzinfo=UTC), tick=False):
        assert provider_usage_sync_recent_task.delay().get() == ["anthropic"]
    run = ProviderSyncRun.objects.get()
    assert (run.provider, run.since, run.until, run.status) == (
        "anthropic",
        NOV1,
        date(2026, 11, 3),
        "succeeded",
    )


def test_beat_runs_the_sync_every_four_hours():
    entry = django_settings.CELERY_BEAT_SCHEDULE["provider-usage-sync"]
    assert entry["task"] == "tracking.tasks.provider_usage_sync_recent_task"
    schedule = entry["schedule"]
    assert isinstance(schedule, crontab)
    assert cast(Any, schedule).hour == {0, 4, 8, 12, 16, 20}  # celery-types omits .hour


# --- admin ---------------------------------------------------------------------------


def _failed_run() -> ProviderSyncRun:
    return ProviderSyncRun.objects.create(
        provider="anthropic", since=NOV1, until=NOV2, status=SyncStatus.FAILED,
        started_at=datetime(2026, 11, 3, tzinfo=UTC), finished_at=datetime(2026, 11, 3, 0, 1, tzinfo=UTC),
        error="Anthropic usage report 2026-11-01..2026-11-03: HTTP 429: slow down (gave up after 5 attempts)",
    )  # fmt: skip


def test_admin_shows_failed_runs_and_their_error(client):
    _failed_run()
    client.force_login(StaffFactory(is_superuser=True))
    page = client.get("/admin/tracking/providersyncrun/").content.decode()
    assert "✖ failed" in page
    assert "HTTP 429: slow down (gave up after 5 attempts)" in page
    failed_only = client.get("/admin/tracking/providersyncrun/?status__exact=failed")
    assert failed_only.status_code == 200


def test_admin_runs_and_rows_are_read_only(client):
    run = _failed_run()
    client.force_login(StaffFactory(is_superuser=True))
    assert client.get("/admin/tracking/providersyncrun/add/").status_code == 403
    assert (
        client.post(
            f"/admin/tracking/providersyncrun/{run.pk}/change/", {"status": "succeeded"}
        ).status_code
        == 403
    )
    run.refresh_from_db()
    assert run.status == SyncStatus.FAILED
    assert client.get(f"/admin/tracking/providersyncrun/{run.pk}/delete/").status_code == 403
    assert client.get("/admin/tracking/providerreportrow/").status_code == 200
    assert client.get("/admin/tracking/providerreportrow/add/").status_code == 403


def test_admin_refuses_client_users_and_anonymous(client):
    _failed_run()
    assert client.get("/admin/tracking/providersyncrun/").status_code == 302
    client.force_login(ClientMembershipFactory().user)
    response = client.get("/admin/tracking/providersyncrun/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]
