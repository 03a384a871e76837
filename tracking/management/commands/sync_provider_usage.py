from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracking.models import SyncStatus
from tracking.provider_reports.services import (
    SYNC_PROVIDERS,
    ProviderSyncError,
    admin_key_setting,
    provider_report_sync,
    providers_configured,
)


def _day(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option}: expected a day as YYYY-MM-DD, got {value!r}") from None


class Command(BaseCommand):
    help = (
        "Pull the providers' usage and cost reports for a range of UTC days and replace "
        "their report rows (every provider whose admin key is set, or --provider)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="first UTC day, YYYY-MM-DD")
        parser.add_argument("--until", help="last UTC day, YYYY-MM-DD (default: today)")
        parser.add_argument("--provider", choices=SYNC_PROVIDERS)

    def handle(
        self, *args: Any, since: str, until: str | None, provider: str | None, **options: Any
    ) -> None:
        first = _day("--since", since)
        last = _day("--until", until) if until else datetime.now(UTC).date()
        if last < first:
            raise CommandError(f"--until ({last}) is before --since ({first})")
        if provider:
            if provider not in providers_configured():
                raise CommandError(f"{admin_key_setting(provider)} is not set")
            providers = [provider]
        else:
            providers = providers_configured()
            if not providers:
                names = " or ".join(admin_key_setting(p) for p in SYNC_PROVIDERS)
                raise CommandError(f"no provider to sync: set {names}")
        failed = []
        for name in providers:
            try:
                run = provider_report_sync(
                    provider=name, since=first, until=last, trigger="command"
                )
            except ProviderSyncError as exc:
                raise CommandError(str(exc)) from exc
            if run.status == SyncStatus.SUCCEEDED:
                self.stdout.write(
                    f"{name} {first}..{last}: {run.rows:,} rows from {run.pages:,} pages (run {run.pk})"
                )
            else:
                failed.append(f"{name} (run {run.pk}): {run.error}")
        if failed:
            raise CommandError("sync failed, previous rows kept: " + "; ".join(failed))
