"""Rate resolution and the model-rate CSV: which row prices a model id on a given day."""

from __future__ import annotations

import csv
import functools
import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import transaction

from tracking.models import ModelRate, Provider
from tracking.pricing import RateCard

DEFAULT_RATES_CSV = Path(__file__).resolve().parent / "data" / "model_rates.csv"

# A trailing release date: claude-sonnet-4-5-20250929, gpt-4o-2024-08-06, name@20251001.
_DATE_SUFFIX = re.compile(r"(?:[-@]\d{8}|-\d{4}-\d{2}-\d{2})$")

CSV_COLUMNS = [
    "provider", "model", "aliases", "display_name", "effective_from",
    "input", "output", "cache_write_5m", "cache_write_1h", "cache_read",
    "long_context_threshold", "long_context_input", "long_context_output",
    "long_context_cache_write_5m", "long_context_cache_write_1h", "long_context_cache_read",
    "batch_discount_pct", "web_search_per_1k", "us_inference_multiplier", "fast_multiplier",
    "notes",
]  # fmt: skip
# CSV column -> ModelRate field, for the price columns.
_PRICE_FIELDS = {
    "input": "input_usd_per_mtok",
    "output": "output_usd_per_mtok",
    "cache_write_5m": "cache_write_5m_usd_per_mtok",
    "cache_write_1h": "cache_write_1h_usd_per_mtok",
    "cache_read": "cache_read_usd_per_mtok",
    "long_context_input": "long_context_input_usd_per_mtok",
    "long_context_output": "long_context_output_usd_per_mtok",
    "long_context_cache_write_5m": "long_context_cache_write_5m_usd_per_mtok",
    "long_context_cache_write_1h": "long_context_cache_write_1h_usd_per_mtok",
    "long_context_cache_read": "long_context_cache_read_usd_per_mtok",
    "web_search_per_1k": "web_search_usd_per_1k",
    "us_inference_multiplier": "us_inference_multiplier",
    "fast_multiplier": "fast_multiplier",
}
_REQUIRED = {"provider", "model", "effective_from", "input", "output"}


def strip_date_suffix(model: str) -> str:
    return _DATE_SUFFIX.sub("", model)


@dataclass(frozen=True)
class Resolution:
    rate: ModelRate
    matched_by: str  # "model", "alias" or "date suffix"

    @functools.cached_property
    def card(self) -> RateCard:
        """The rate's card, built once: a RateBook hands out one Resolution per (provider,
        model, day), so a batch no longer builds a card per event."""
        return RateCard.from_rate(self.rate)


class RateBook:
    """All rates in memory, indexed by provider and every name they answer to.

    Resolution order: the canonical model id, then an explicit alias, then the id with
    its release-date suffix removed (again model, then alias). Never a loose prefix:
    ``claude-3-5-haiku`` must not price as ``claude-3-5-haiku-latest``'s stale row.
    """

    def __init__(self, rates: Iterable[ModelRate]) -> None:
        by_model: dict[tuple[str, str], list[ModelRate]] = defaultdict(list)
        by_alias: dict[tuple[str, str], list[ModelRate]] = defaultdict(list)
        for rate in rates:
            by_model[(rate.provider, rate.model)].append(rate)
            for alias in rate.alias_list():
                by_alias[(rate.provider, alias)].append(rate)
        self._by_model = {k: self._sorted(v) for k, v in by_model.items()}
        self._by_alias = {k: self._sorted(v) for k, v in by_alias.items()}
        self._cache: dict[tuple[str, str, date], Resolution | None] = {}

    @staticmethod
    def _sorted(rates: list[ModelRate]) -> tuple[list[date], list[ModelRate]]:
        rates.sort(key=lambda r: r.effective_from)
        return [r.effective_from for r in rates], rates

    @classmethod
    def load(cls) -> RateBook:
        return cls(ModelRate.objects.all())

    @staticmethod
    def _pick(entry: tuple[list[date], list[ModelRate]] | None, day: date) -> ModelRate | None:
        if entry is None:
            return None
        days, rates = entry
        index = bisect_right(days, day)
        return rates[index - 1] if index else None

    def resolve(self, provider: str, model: str, when: datetime | date) -> Resolution | None:
        day = when.date() if isinstance(when, datetime) else when
        key = (provider, model, day)
        if key not in self._cache:
            self._cache[key] = self._resolve(provider, model, day)
        return self._cache[key]

    def _resolve(self, provider: str, model: str, day: date) -> Resolution | None:
        candidates = [(model, "")]
        stripped = strip_date_suffix(model)
        if stripped != model:
            candidates.append((stripped, "date suffix"))
        for name, how in candidates:
            rate = self._pick(self._by_model.get((provider, name)), day)
            if rate is not None:
                return Resolution(rate, how or "model")
            rate = self._pick(self._by_alias.get((provider, name)), day)
            if rate is not None:
                return Resolution(rate, how or "alias")
        return None


# --- the CSV -------------------------------------------------------------------------


class RateFileError(ValueError):
    pass


@dataclass
class LoadResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    changed_rate_ids: tuple[int, ...] = ()


def _decimal(value: str, column: str, line: int) -> Decimal | None:
    value = value.strip()
    if value == "":
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise RateFileError(f"line {line}, column {column}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise RateFileError(f"line {line}, column {column}: must be a non-negative number")
    return number


def parse_rates_csv(text: str) -> list[dict[str, Any]]:
    """Parse and validate the rate CSV into ModelRate field dicts. Raises RateFileError."""
    reader = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    missing = _REQUIRED - set(reader.fieldnames or [])
    if missing:
        raise RateFileError(f"missing columns: {', '.join(sorted(missing))}")
    rows = []
    seen: set[tuple[str, str, date]] = set()
    for line, raw in enumerate(reader, start=2):
        row = {k: (v or "").strip() for k, v in raw.items() if k}
        provider = row["provider"]
        if provider not in Provider.values:
            raise RateFileError(f"line {line}, column provider: unknown provider {provider!r}")
        if not row["model"]:
            raise RateFileError(f"line {line}, column model: is required")
        try:
            effective = date.fromisoformat(row["effective_from"])
        except ValueError:
            raise RateFileError(
                f"line {line}, column effective_from: {row['effective_from']!r} is not YYYY-MM-DD"
            ) from None
        key = (provider, row["model"], effective)
        if key in seen:
            raise RateFileError(f"line {line}: {row['model']} from {effective} appears twice")
        seen.add(key)
        fields: dict[str, Any] = {
            "provider": provider,
            "model": row["model"],
            "effective_from": effective,
            "aliases": " ".join(row.get("aliases", "").split()),
            "display_name": row.get("display_name", ""),
            "notes": row.get("notes", ""),
        }
        for column, field_name in _PRICE_FIELDS.items():
            fields[field_name] = _decimal(row.get(column, ""), column, line)
        for column in ("input", "output"):
            if fields[_PRICE_FIELDS[column]] is None:
                raise RateFileError(f"line {line}, column {column}: is required")
        discount = _decimal(row.get("batch_discount_pct", ""), "batch_discount_pct", line)
        fields["batch_discount_pct"] = discount if discount is not None else Decimal("0")
        threshold = row.get("long_context_threshold", "")
        if threshold and not threshold.isdigit():
            raise RateFileError(f"line {line}, column long_context_threshold: must be an integer")
        fields["long_context_threshold"] = int(threshold) if threshold else None
        rows.append(fields)
    return rows


@transaction.atomic
def model_rates_load(*, text: str) -> LoadResult:
    """Create or update rate rows from CSV text; loading the same file twice changes nothing.

    A row is identified by (provider, model, effective_from). Correcting a price on an
    existing row is recorded in the rate history and reported, so its events can be
    re-priced; a price *change* should be a new row with a later effective_from.
    """
    result = LoadResult()
    changed: list[int] = []
    existing = {(r.provider, r.model, r.effective_from): r for r in ModelRate.objects.all()}
    for fields in parse_rates_csv(text):
        key = (fields["provider"], fields["model"], fields["effective_from"])
        rate = existing.get(key)
        if rate is None:
            ModelRate.objects.create(**fields)
            result.created += 1
            continue
        diffs = {name: value for name, value in fields.items() if getattr(rate, name) != value}
        if not diffs:
            result.unchanged += 1
            continue
        for name, value in diffs.items():
            setattr(rate, name, value)
        rate.save()
        changed.append(rate.pk)
        result.updated += 1
    result.changed_rate_ids = tuple(changed)
    return result
