"""Rate resolution and the model-rate CSV: which row prices a model id on a given day."""

from __future__ import annotations

import csv
import functools
import json
import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import connection, transaction

from tracking.models import ModelRate, Provider
from tracking.pricing import RateCard

DEFAULT_RATES_CSV = Path(__file__).resolve().parent / "data" / "model_rates.csv"
# Reference prices (USD per MTok) for the sanity check; see its _about.
REFERENCE_PRICES_JSON = Path(__file__).resolve().parent / "data" / "reference_prices.json"
# A price more than this many times off the model's previous row or the reference price is
# refused unless forced: a per-token price typed as per-million is 1,000,000 times off.
SANITY_FACTOR = Decimal(10)

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

    @classmethod
    def current(cls) -> RateBook:
        """The book of the rate table as it is now; on PostgreSQL one book per process,
        kept while no rate row changes.

        Loading the rows and building their cards was ~3 ms of CPU per 500-event ingest
        request (measured); a checksum of every row's text, computed by the database in
        one round trip, says whether the book held is still the table's. Any change, by
        any path (admin, load_model_rates, a queryset update, another process), changes
        the checksum: no signal or cache to forget.
        """
        if connection.vendor != "postgresql":
            return cls.load()
        checksum = _rates_checksum()
        held = _held_book
        # Its resolutions are remembered per (provider, model, day), and the model is
        # whatever a client sends: a held book is renewed before that grows without end.
        if held is not None and held[0] == checksum and len(held[1]._cache) < MAX_HELD:
            return held[1]
        book = cls.load()
        # Held only if no rate changed while it loaded: the book is then exactly the rows
        # this checksum stands for.
        if _rates_checksum() == checksum:
            _hold_book((checksum, book))
        return book

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


# Resolutions a held book remembers before RateBook.current starts a new one.
MAX_HELD = 20_000
_RATES_CHECKSUM = (
    f"SELECT md5(string_agg(r::text, ',' ORDER BY r.id)) FROM {ModelRate._meta.db_table} r"
)
# (checksum of the rate table, its book): what RateBook.current hands out while it holds.
_held_book: tuple[str | None, RateBook] | None = None


def _rates_checksum() -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(_RATES_CHECKSUM)
        row = cursor.fetchone()
    return row[0] if row else None


def _hold_book(held: tuple[str | None, RateBook]) -> None:
    global _held_book
    _held_book = held


# --- the CSV -------------------------------------------------------------------------


class RateFileError(ValueError):
    pass


@dataclass(frozen=True)
class PriceWarning:
    """A price more than SANITY_FACTOR times off what it is compared with."""

    column: str
    price: Decimal
    ratio: Decimal
    against: str  # "the reference price" or "<provider> <model>'s row from <date>"
    other: Decimal
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}" if self.line else self.column
        return (
            f"{where}: {self.price:f} differs {self.ratio:,.0f}× from {self.against} "
            f"({self.other.normalize():f})"
        )


class RateSanityError(RateFileError):
    def __init__(self, warnings: list[PriceWarning]) -> None:
        self.warnings = warnings
        super().__init__("; ".join(f"{w}; if it is right, load with --force" for w in warnings))


@dataclass
class LoadResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    changed_rate_ids: tuple[int, ...] = ()
    forced: tuple[PriceWarning, ...] = ()


# Price columns compared by the sanity check (the modifiers are not prices).
_COMPARED = {
    column: name
    for column, name in _PRICE_FIELDS.items()
    if name.endswith("_usd_per_mtok") or name == "web_search_usd_per_1k"
}
_REFERENCE_COLUMNS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


@functools.cache
def reference_prices() -> dict[tuple[str, str], dict[str, Decimal]]:
    """(provider, model) -> column -> USD per MTok, from the app's kept reference map."""
    document = json.loads(REFERENCE_PRICES_JSON.read_text(encoding="utf-8"))
    prices = {}
    for key, row in document["prices"].items():
        provider, model = key.split("/", 1)
        prices[(provider, model)] = {column: Decimal(price) for column, price in row.items()}
    return prices


def rate_price_warnings(
    fields: Mapping[str, Any], *, previous: Mapping[str, Any] | None, line: int | None = None
) -> list[PriceWarning]:
    """What is more than 10× off in a rate row (ModelRate field values): each price against
    the model's previous row (``previous``, the same fields) and then the reference price.
    A zero or missing price has nothing to compare with."""
    warnings = []
    reference = reference_prices().get((fields["provider"], fields["model"]), {})
    for column, name in _COMPARED.items():
        price: Decimal | None = fields.get(name)
        if not price:
            continue
        candidates: list[tuple[Decimal | None, str]] = []
        if previous is not None:
            row = f"{previous['provider']} {previous['model']}'s row"
            candidates.append((previous.get(name), f"{row} from {previous['effective_from']}"))
        candidates.append((reference.get(column), "the reference price"))
        for other, against in candidates:
            if not other:
                continue
            ratio = max(price, other) / min(price, other)
            if ratio > SANITY_FACTOR:
                warnings.append(PriceWarning(column, price, ratio, against, other, line))
                break
    return warnings


def _decimal(value: str, column: str, line: int) -> Decimal | None:
    value = value.strip()
    if value == "":
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise RateFileError(f"line {line}, column {column}: {value!r} is not a number") from None
    if not number.is_finite():
        raise RateFileError(f"line {line}, column {column}: {value!r} is not a finite number")
    if number < 0:
        raise RateFileError(f"line {line}, column {column}: must not be negative")
    return number


def _fits(number: Decimal | None, name: str, *, text: str, column: str, line: int) -> None:
    """Refuse what the column cannot store exactly (it would fail or be rounded on save)."""
    if number is None:
        return
    field = ModelRate._meta.get_field(name)
    places = field.decimal_places  # type: ignore[union-attr]
    whole_digits = field.max_digits - places  # type: ignore[union-attr]
    exponent = number.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise RateFileError(
            f"line {line}, column {column}: {text} has more than {places} decimal places"
        )
    if number >= Decimal(10) ** whole_digits:
        raise RateFileError(
            f"line {line}, column {column}: {text} is too large "
            f"(at most {whole_digits} digits before the decimal point)"
        )


def _number(row: dict[str, str], column: str, name: str, line: int) -> Decimal | None:
    text = row.get(column, "")
    number = _decimal(text, column, line)
    _fits(number, name, text=text.strip(), column=column, line=line)
    return number


def _rows(text: str) -> tuple[csv.DictReader[str], list[int]]:
    """A reader over the non-comment lines, and each such line's number in the file."""
    kept = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if not line.startswith("#")
    ]
    return csv.DictReader(line for _, line in kept), [number for number, _ in kept]


def _parse(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader, numbers = _rows(text)
    columns = set(reader.fieldnames or [])
    missing = _REQUIRED - columns
    if missing:
        raise RateFileError(f"missing columns: {', '.join(sorted(missing))}")
    unknown = columns - set(CSV_COLUMNS)
    if unknown:
        # A misspelt optional column would otherwise be ignored: cache_reed left empty
        # prices cache reads at the input price.
        raise RateFileError(f"unknown columns: {', '.join(sorted(unknown))}")
    rows = []
    seen: dict[tuple[str, str, date], int] = {}
    for raw in reader:
        line = numbers[reader.line_num - 1]
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
            raise RateFileError(
                f"line {line}: {provider} {row['model']} from {effective} "
                f"is also on line {seen[key]}"
            )
        seen[key] = line
        fields: dict[str, Any] = {
            "provider": provider,
            "model": row["model"],
            "effective_from": effective,
            "aliases": " ".join(row.get("aliases", "").split()),
            "display_name": row.get("display_name", ""),
            "notes": row.get("notes", ""),
        }
        for column, field_name in _PRICE_FIELDS.items():
            fields[field_name] = _number(row, column, field_name, line)
        for column in ("input", "output"):
            if fields[_PRICE_FIELDS[column]] is None:
                raise RateFileError(f"line {line}, column {column}: is required")
        discount = _number(row, "batch_discount_pct", "batch_discount_pct", line)
        if discount is not None and discount > 100:
            raise RateFileError(f"line {line}, column batch_discount_pct: must be at most 100")
        fields["batch_discount_pct"] = discount if discount is not None else Decimal("0")
        threshold = row.get("long_context_threshold", "")
        if threshold and not threshold.isdigit():
            raise RateFileError(f"line {line}, column long_context_threshold: must be an integer")
        fields["long_context_threshold"] = int(threshold) if threshold else None
        rows.append((line, fields))
    return rows


def parse_rates_csv(text: str) -> list[dict[str, Any]]:
    """Parse and validate the rate CSV into ModelRate field dicts. Raises RateFileError."""
    return [fields for _, fields in _parse(text)]


def _rate_fields(rate: ModelRate) -> dict[str, Any]:
    names = ["provider", "model", "effective_from", *_PRICE_FIELDS.values()]
    return {name: getattr(rate, name) for name in names}


def _previous(
    rows: dict[tuple[str, str, date], dict[str, Any]], fields: dict[str, Any]
) -> dict[str, Any] | None:
    """The same model's row in force just before this one's effective date."""
    earlier = [
        row
        for (provider, model, day), row in rows.items()
        if (provider, model) == (fields["provider"], fields["model"])
        and day < fields["effective_from"]
    ]
    return max(earlier, key=lambda row: row["effective_from"], default=None)


@transaction.atomic
def model_rates_load(*, text: str, force: bool = False) -> LoadResult:
    """Create or update rate rows from CSV text; loading the same file twice changes nothing.

    A row is identified by (provider, model, effective_from). Correcting a price on an
    existing row is recorded in the rate history and reported, so its events can be
    re-priced; a price *change* should be a new row with a later effective_from.

    Every row created or changed is checked against the model's previous row and the
    reference price: more than 10× off raises RateSanityError (nothing is stored) unless
    ``force``, which loads it and lists what was overridden in ``LoadResult.forced``.
    """
    result = LoadResult()
    changed: list[int] = []
    existing = {(r.provider, r.model, r.effective_from): r for r in ModelRate.objects.all()}
    parsed = _parse(text)
    # The table as it will be: stored rows, overlaid by the file's.
    table = {key: _rate_fields(rate) for key, rate in existing.items()}
    for _, fields in parsed:
        table[(fields["provider"], fields["model"], fields["effective_from"])] = fields
    warnings: list[PriceWarning] = []
    for line, fields in parsed:
        key = (fields["provider"], fields["model"], fields["effective_from"])
        rate = existing.get(key)
        if rate is None:
            ModelRate.objects.create(**fields)
            result.created += 1
        else:
            diffs = {name: value for name, value in fields.items() if getattr(rate, name) != value}
            if not diffs:
                result.unchanged += 1
                continue
            for name, value in diffs.items():
                setattr(rate, name, value)
            rate.save()
            changed.append(rate.pk)
            result.updated += 1
        warnings += rate_price_warnings(fields, previous=_previous(table, fields), line=line)
    if warnings and not force:
        raise RateSanityError(warnings)  # rolls back every row of the file
    result.changed_rate_ids = tuple(changed)
    result.forced = tuple(warnings)
    return result
