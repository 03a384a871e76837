from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracking.rates import DEFAULT_RATES_CSV, RateFileError, model_rates_load
from tracking.services import usage_events_reprice


class Command(BaseCommand):
    help = "Load model rates from a CSV file (default: the shipped tracking/data/model_rates.csv)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", default=str(DEFAULT_RATES_CSV))
        parser.add_argument(
            "--force",
            action="store_true",
            help="Load rows whose prices are more than 10x off the model's previous row or "
            "the reference price (refused otherwise).",
        )

    def handle(self, *args: Any, path: str, force: bool, **options: Any) -> None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        try:
            result = model_rates_load(text=text, force=force)
        except RateFileError as exc:
            raise CommandError(f"{path}: {exc}") from exc
        self.stdout.write(
            f"{result.created} created, {result.updated} updated, {result.unchanged} unchanged"
        )
        for warning in result.forced:
            self.stdout.write(f"loaded with --force: {warning}")
        # New rates may price events that arrived before them; corrected rates re-price
        # the events they priced (closed months excepted).
        repriced = usage_events_reprice(rate_ids=result.changed_rate_ids)
        if repriced.changed:
            self.stdout.write(f"{repriced.changed} events re-priced")
