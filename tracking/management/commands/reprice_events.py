from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tracking.services import usage_events_reprice


class Command(BaseCommand):
    help = "Price unpriced events (and, with --rate, re-price the events of those rates)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rate", type=int, action="append", dest="rate_ids")

    def handle(self, *args: Any, rate_ids: list[int] | None, **options: Any) -> None:
        result = usage_events_reprice(rate_ids=rate_ids)
        self.stdout.write(
            f"{result.examined} examined, {result.changed} changed, "
            f"{result.still_unpriced} still unpriced, {result.skipped_closed} in closed months"
        )
