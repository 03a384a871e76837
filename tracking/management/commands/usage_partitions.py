"""``manage.py usage_partitions list|ensure|archive``: the event table's monthly
partitions on PostgreSQL (tracking.partitions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agency.calendar import MonthError, parse_month
from tracking.partitions import (
    AHEAD,
    PartitionError,
    is_partitioned,
    month_archive,
    months_archived,
    partitions_ensure,
    partitions_list,
)


class Command(BaseCommand):
    help = "List, create ahead, or archive the monthly partitions of the event table."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("list", help="The partitions, their rows and sizes.")
        ensure = actions.add_parser(
            "ensure", help="Create missing partitions up to --ahead months from now."
        )
        ensure.add_argument("--ahead", type=int, default=AHEAD)
        ensure.add_argument("--since", help="YYYY-MM: also create partitions from this month on.")
        archive = actions.add_parser(
            "archive", help="Write a month's events to a file and detach its partition."
        )
        archive.add_argument("month", help="YYYY-MM, older than the previous month.")
        archive.add_argument("--to", type=Path, help="A new .csv.gz file for the events.")
        archive.add_argument(
            "--keep-table",
            action="store_true",
            help="Keep the detached partition as a plain table instead of dropping it.",
        )

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if not is_partitioned():
            raise CommandError("The event table is not partitioned (PostgreSQL only).")
        try:
            if action == "list":
                self._list()
            elif action == "ensure":
                since = _month(options["since"]) if options["since"] else None
                created = partitions_ensure(ahead=options["ahead"], since=since)
                self.stdout.write(f"{len(created)} created" + "".join(f"\n  {n}" for n in created))
            else:
                done = month_archive(
                    _month(options["month"]), to=options["to"], keep_table=options["keep_table"]
                )
                where = f" to {done.file}" if done.file else ""
                kept = f"; kept as table {done.table}" if done.table else "; table dropped"
                self.stdout.write(
                    f"{done.month:%Y-%m}: {done.events:,} events archived{where}{kept}"
                )
        except PartitionError as exc:
            raise CommandError(str(exc)) from exc

    def _list(self) -> None:
        for partition in partitions_list():
            label = f"{partition.month:%Y-%m}" if partition.month else "default"
            self.stdout.write(
                f"{label:8} {partition.name:36} ~{partition.rows:>12,} rows "
                f"{partition.bytes / 1e6:>10,.1f} MB"
            )
        for month in sorted(months_archived()):
            self.stdout.write(f"{month:%Y-%m}  archived")


def _month(text: str) -> Any:
    try:
        return parse_month(text)
    except MonthError as exc:
        raise CommandError(f"{text!r}: {exc}") from exc
