from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from agency.calendar import MonthError, parse_month
from agency.models import Client
from billing.services.invoices import invoices_generate_month, previous_month_of
from billing.services.month_end import month_end_run


class Command(BaseCommand):
    help = (
        "Create or replace the draft invoice of every client with usage in a month "
        "(default: last month). Safe to run again: drafts are replaced, never duplicated."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--month", help="YYYY-MM, agency time zone (default: last month)")
        parser.add_argument("--client", help="Only this client's slug")

    def handle(self, *args: Any, month: str | None, client: str | None, **options: Any) -> None:
        try:
            first_day = parse_month(month) if month else previous_month_of(timezone.now())
        except MonthError as exc:
            raise CommandError(str(exc)) from None
        if client and not Client.objects.filter(slug=client).exists():
            raise CommandError(f"no client {client!r}")
        if client:
            result = invoices_generate_month(month=first_day, client_slug=client)
        else:  # every client: the month-end run, recorded like the beat job's
            result = month_end_run(month=first_day)
        self.stdout.write(
            f"{first_day:%Y-%m}: {result.generated} draft(s) generated, "
            f"{result.skipped_issued} already issued, {result.empty} with nothing to bill"
        )
