from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agency.models import Client
from tracking.ingest import usage_ingest
from tracking.ingest.validate import strict_json_loads
from tracking.rates import RateBook

CHUNK = 1000
_WHERE = re.compile(r"^events\[(\d+)\]\.?")
INT_COLUMNS = {"status_code", "latency_ms"}
JSON_COLUMNS = {"usage", "metadata"}


def _usage_from_columns(row: dict[str, str]) -> dict[str, Any]:
    """``usage.input_tokens``-style columns as a (nested) usage object; digits become ints."""
    usage: dict[str, Any] = {}
    for column, value in row.items():
        if not column or not column.startswith("usage.") or not value:
            continue
        *parents, leaf = column.removeprefix("usage.").split(".")
        target = usage
        for part in parents:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[leaf] = int(value) if value.isdigit() else value
    return usage


def row_to_event(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row as an ingest event (backfill: true); the ingest schema validates it."""
    event: dict[str, Any] = {"backfill": True}
    for column, value in row.items():
        if not column or not value or column.startswith("usage."):
            continue
        if column in JSON_COLUMNS:
            try:
                event[column] = strict_json_loads(value)
            except (ValueError, RecursionError):
                event[column] = value  # rejected by the schema with its field name
        elif column in INT_COLUMNS:
            event[column] = int(value) if value.isdigit() else value
        else:
            event[column] = value
    if "usage" not in event:
        event["usage"] = _usage_from_columns(row)
    return event


class Command(BaseCommand):
    help = (
        "Backfill usage from a CSV export through the ingest service (same validation and "
        "idempotency as the API: running it twice records nothing new)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path")
        parser.add_argument(
            "--client",
            metavar="SLUG",
            help="every row is this client's (otherwise each row names it in a client column)",
        )

    def _chunks(self, path: str) -> Iterator[list[tuple[int, dict[str, Any]]]]:
        if not Path(path).is_file():
            raise CommandError(f"cannot read {path}: no such file")
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "id" not in reader.fieldnames:
                raise CommandError(f"{path}: needs a header row with at least an id column")
            chunk: list[tuple[int, dict[str, Any]]] = []
            for row in reader:
                chunk.append((reader.line_num, row_to_event(row)))
                if len(chunk) == CHUNK:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

    def handle(self, *args: Any, path: str, client: str | None, **options: Any) -> None:
        owner = None
        if client:
            owner = Client.objects.filter(slug=client).first()
            if owner is None:
                raise CommandError(f"no client with slug {client!r}")
        book = RateBook.load()
        totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
        for chunk in self._chunks(path):
            outcome = usage_ingest(
                events=[event for _, event in chunk], client=owner, backfill_allowed=True, book=book
            )
            summary = outcome.as_dict()
            for name in totals:
                totals[name] += summary[name]
            for (line, _), result in zip(chunk, outcome.results, strict=True):
                for error in result.errors:
                    where = _WHERE.sub("", error["field"]) or "row"
                    self.stderr.write(f"line {line}: {where}: {error['message']}")
        self.stdout.write(
            f"{totals['accepted']} accepted, {totals['duplicates']} duplicates, "
            f"{totals['rejected']} rejected"
        )
        if totals["rejected"]:
            raise CommandError(f"{totals['rejected']} rows rejected (listed above)")
