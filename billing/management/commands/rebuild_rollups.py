from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agency.calendar import current_month, today
from agency.models import Client
from billing.services.rollups import rollups_rebuild_dirty, rollups_rebuild_period


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"not a date (YYYY-MM-DD): {value!r}") from None


class Command(BaseCommand):
    help = (
        "Rebuild daily and hourly rollups from the raw events for a period (agency-local "
        "days, inclusive), or only the days marked dirty with --dirty."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--start", help="First day, YYYY-MM-DD (default: this month's 1st).")
        parser.add_argument("--end", help="Last day, YYYY-MM-DD (default: today).")
        parser.add_argument("--client", help="Only this client (slug).")
        parser.add_argument("--dirty", action="store_true", help="Only the days marked dirty.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["dirty"]:
            count = rollups_rebuild_dirty()
            self.stdout.write(f"rebuilt {count} dirty client-days")
            return
        start = _day(options["start"]) if options["start"] else current_month()
        end = _day(options["end"]) if options["end"] else today()
        client_id = None
        if options["client"]:
            client = Client.objects.filter(slug=options["client"]).first()
            if client is None:
                raise CommandError(f"no client with slug {options['client']!r}")
            client_id = client.pk
        written = rollups_rebuild_period(start=start, end=end, client_id=client_id)
        self.stdout.write(f"rebuilt {start}…{end}: {written} daily rollup rows")
