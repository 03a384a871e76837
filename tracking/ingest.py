"""The ingest path: the strict event schema, and ``usage_ingest``, which stores a batch.

Semantics (see ../shared/RELIABILITY.md §1.3):

* Per-event results in request order; one bad event never sinks the others.
* The event ``id`` is the idempotency key, unique per client, remembered forever by the
  ``(client, event_id)`` unique constraint. Same id and same billing content: ``duplicate``
  (nothing changes). Same id, different content: ``rejected`` with ``conflict`` (never an
  overwrite). A later event repeating an id of the same request: ``rejected``.
* Accepted events are committed in one transaction before the caller answers.

Speed: the insert is ``INSERT … ON CONFLICT (client_id, event_id) DO NOTHING RETURNING``
(on PostgreSQL from a COPYed staging table, multi-row chunks on SQLite), so only rows that
come back are accepted and there is no check-then-insert race; one SELECT of (event_id,
fingerprint) then classifies the rest.
A concurrent identical insert waits on the unique index and then returns nothing, which
makes it a duplicate (PostgreSQL's documented ON CONFLICT behaviour). Values are adapted
with the backend adapters ``get_db_prep_save`` ends in (JSON, datetimes, CostField), so
the same code writes correct rows on PostgreSQL and SQLite.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from agency.models import Client, Project
from tracking.models import UsageEvent
from tracking.pricing import PROVIDERS, UsageError, normalize_usage
from tracking.rates import RateBook
from tracking.services import (
    dirty_days_mark,
    event_fingerprint,
    local_day,
    pricing_fields,
    usage_fields,
)
from tracking.signals import usage_recorded

MAX_ID_LENGTH = 128
MAX_MODEL_LENGTH = 128
MAX_TAG_LENGTH = 200
MAX_SERVICE_TIER_LENGTH = 32
MAX_METADATA_KEYS = 20
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 200
MAX_INT4 = 2_147_483_647
FUTURE_TOLERANCE = timedelta(minutes=5)
NUL_MESSAGE = "must not contain NUL (U+0000) or unpaired surrogate characters"
# Characters PostgreSQL text/jsonb cannot store (NUL) or UTF-8 cannot encode (lone
# surrogates, which JSON's \\ud800 escapes can produce).
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
# Event field → UsageEvent column for the optional tags.
TAG_FIELDS = {
    "project": "project",
    "feature": "feature",
    "user": "end_user",
    "team": "team",
    "deploy_sha": "deploy_sha",
    "prompt_hash": "prompt_hash",
    "request_id": "request_id",
}
_ID_RE = re.compile(r"[\x20-\x7e]{1,128}")
_RFC3339_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
# The fingerprint of an event sent without occurred_at: its content as sent has no time,
# so a retry of it (stamped with a later "now") is still the same event, not a conflict.
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


class RequestError(Exception):
    """A whole-request failure: the view answers ``status`` with ``{"error": ...}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class _EventError(Exception):
    def __init__(self, field: str, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code


@dataclass
class EventResult:
    id: str | None
    status: str = "rejected"
    cost_usd: Decimal | None = None
    priced: bool = False
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.status == "accepted":
            data["cost_usd"] = _decimal_text(self.cost_usd) if self.priced else None
            if self.warnings:
                data["warnings"] = self.warnings
        elif self.status == "rejected":
            data["errors"] = self.errors
        return data


@dataclass
class IngestResult:
    results: list[EventResult]
    client_ids: set[int] = field(default_factory=set)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.count("accepted"),
            "duplicates": self.count("duplicate"),
            "rejected": self.count("rejected"),
            "results": [r.as_dict() for r in self.results],
        }


def _decimal_text(value: Decimal | None) -> str | None:
    """Fixed-point text without trailing zeros: never '1E-7'."""
    if value is None:
        return None
    return format(value.normalize(), "f") if value else "0"


# --- the request body ---------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def parse_events_body(body: bytes) -> list[Any]:
    """The ``events`` list of a request body, or RequestError (400/413).

    Strict JSON: NaN, Infinity and numbers that overflow a float are refused (Python's
    json accepts them by default), as is nesting deep enough to exhaust the stack.
    """
    try:
        data = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, "malformed_json", f"The body is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "events" not in data:
        raise RequestError(400, "invalid_body", 'The body must be {"events": [...]}.')
    events = data["events"]
    if not isinstance(events, list):
        raise RequestError(400, "invalid_body", "events must be a list.", field="events")
    if not events:
        raise RequestError(400, "invalid_body", "events must not be empty.", field="events")
    if len(events) > settings.INGEST_MAX_EVENTS:
        raise RequestError(
            413,
            "too_many_events",
            f"At most {settings.INGEST_MAX_EVENTS} events per request (got {len(events)}).",
            field="events",
        )
    return events


# --- one event ----------------------------------------------------------------------


@dataclass(slots=True)
class _Event:
    index: int
    event_id: str
    client_slug: str | None
    provider: str
    model: str
    usage: dict[str, Any]
    occurred_at: datetime | None
    service_tier: str
    tags: dict[str, str]
    status_code: int | None
    latency_ms: int | None
    metadata: dict[str, str]
    backfill: bool


def _opt_str(event: dict[str, Any], key: str, path: str, max_length: int) -> str | None:
    value = event.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _EventError(f"{path}.{key}", "must be a string")
    if len(value) > max_length:
        raise _EventError(f"{path}.{key}", f"must be at most {max_length} characters")
    if _bad_chars(value):
        raise _EventError(f"{path}.{key}", NUL_MESSAGE)
    return value


def _bad_chars(text: str) -> bool:
    return _BAD_CHARS.search(text) is not None


def _nul_path(value: Any, path: str) -> str | None:
    """Where a character the database cannot store hides in a JSON value, if anywhere:
    such an event is refused rather than failing the whole insert.

    Numbers, booleans and nulls are skipped without a call or a path string: a usage
    object is mostly token counts, and recursing into each was ~10% of a batch's CPU.
    """
    if isinstance(value, str):
        return path if _bad_chars(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _bad_chars(key):
                return path
            if isinstance(item, (str, dict, list)):
                found = _nul_path(item, f"{path}.{key}")
                if found:
                    return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, (str, dict, list)):
                found = _nul_path(item, f"{path}[{index}]")
                if found:
                    return found
    return None


def _opt_int(event: dict[str, Any], key: str, path: str) -> int | None:
    value = event.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise _EventError(f"{path}.{key}", "must be a non-negative integer")
    if value > MAX_INT4:
        raise _EventError(f"{path}.{key}", f"must be at most {MAX_INT4}")
    return value


def _occurred_at(value: Any, path: str) -> datetime | None:
    if value is None:
        return None
    where = f"{path}.occurred_at"
    if not isinstance(value, str) or not _RFC3339_RE.fullmatch(value):
        raise _EventError(where, "must be an RFC 3339 date-time with an offset")
    try:
        # fromisoformat takes at most 6 fractional digits; nanoseconds are cut, not rounded.
        text = re.sub(r"(\.\d{6})\d+", r"\1", value)
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise _EventError(where, "is not a valid date-time") from None


def _metadata(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    where = f"{path}.metadata"
    if not isinstance(value, dict):
        raise _EventError(where, "must be an object")
    if len(value) > MAX_METADATA_KEYS:
        raise _EventError(where, f"must have at most {MAX_METADATA_KEYS} keys")
    for key, item in value.items():
        if _bad_chars(key) or (isinstance(item, str) and _bad_chars(item)):
            raise _EventError(where, NUL_MESSAGE)
        if not key or len(key) > MAX_METADATA_KEY_LENGTH:
            raise _EventError(where, f"keys must be 1 to {MAX_METADATA_KEY_LENGTH} characters")
        if not isinstance(item, str) or len(item) > MAX_METADATA_VALUE_LENGTH:
            raise _EventError(
                f"{where}.{key}", f"must be a string of at most {MAX_METADATA_VALUE_LENGTH} chars"
            )
    return value


def _parse_event(raw: Any, index: int) -> _Event:
    """Validate one event's shape (not its usage numbers, nor who may post it)."""
    path = f"events[{index}]"
    if not isinstance(raw, dict):
        raise _EventError(path, "must be an object")
    event_id = raw.get("id")
    if event_id is None:
        raise _EventError(f"{path}.id", "is required", "required")
    if not isinstance(event_id, str) or not _ID_RE.fullmatch(event_id):
        raise _EventError(f"{path}.id", "must be 1 to 128 printable ASCII characters")
    model = raw.get("model")
    if model is None:
        raise _EventError(f"{path}.model", "is required", "required")
    if not isinstance(model, str) or not model or len(model) > MAX_MODEL_LENGTH:
        raise _EventError(f"{path}.model", f"must be a string of 1 to {MAX_MODEL_LENGTH} chars")
    if _bad_chars(model):
        raise _EventError(f"{path}.model", NUL_MESSAGE)
    usage = raw.get("usage")
    if usage is None:
        raise _EventError(f"{path}.usage", "is required", "required")
    if not isinstance(usage, dict):
        raise _EventError(f"{path}.usage", "must be an object")
    nul = _nul_path(usage, f"{path}.usage")
    if nul:
        raise _EventError(nul, NUL_MESSAGE)
    provider = raw.get("provider", "anthropic")
    if provider not in PROVIDERS:
        raise _EventError(f"{path}.provider", f"must be one of {', '.join(PROVIDERS)}")
    client_slug = raw.get("client")
    if client_slug is not None and not isinstance(client_slug, str):
        raise _EventError(f"{path}.client", "must be a string")
    if client_slug and _bad_chars(client_slug):
        raise _EventError(f"{path}.client", NUL_MESSAGE)
    backfill = raw.get("backfill", False)
    if not isinstance(backfill, bool):
        raise _EventError(f"{path}.backfill", "must be true or false")
    tags = {}
    for key, column in TAG_FIELDS.items():
        value = _opt_str(raw, key, path, MAX_TAG_LENGTH)
        if value:
            tags[column] = value
    return _Event(
        index=index,
        event_id=event_id,
        client_slug=client_slug,
        provider=provider,
        model=model,
        usage=usage,
        occurred_at=_occurred_at(raw.get("occurred_at"), path),
        service_tier=_opt_str(raw, "service_tier", path, MAX_SERVICE_TIER_LENGTH) or "",
        tags=tags,
        status_code=_opt_int(raw, "status_code", path),
        latency_ms=_opt_int(raw, "latency_ms", path),
        metadata=_metadata(raw.get("metadata"), path),
        backfill=backfill,
    )


# --- the batch ----------------------------------------------------------------------


def _insert_columns() -> list[models.Field[Any, Any]]:
    return [f for f in UsageEvent._meta.concrete_fields if not f.primary_key]


_FIELDS = _insert_columns()
_DEFAULTS = {f.attname: f.get_default() for f in _FIELDS}
_PICK = operator.itemgetter(*(f.attname for f in _FIELDS))


def _adapters() -> dict[str, Any]:
    """Per column that needs it, the backend adaptation ``get_db_prep_save`` would do.

    Called directly (the backend's ``adapt_*_value`` hooks) because our values already
    have the right Python types: the full ``get_db_prep_save`` chain re-validates every
    Decimal and cost ~0.2 s per 500-event batch (profiled). The result is the same: Jsonb
    on PostgreSQL and JSON text on SQLite, naive UTC text for SQLite datetimes, Decimals
    for CostField (stored as exact text on SQLite by the driver adapter Django registers).
    """
    ops = connection.ops
    adapters: dict[str, Any] = {}
    for f in _FIELDS:
        if isinstance(f, models.JSONField):
            adapters[f.attname] = functools.partial(ops.adapt_json_value, encoder=f.encoder)
        elif isinstance(f, models.DateTimeField):
            adapters[f.attname] = ops.adapt_datetimefield_value
        elif isinstance(f, models.DecimalField):
            adapters[f.attname] = functools.partial(
                ops.adapt_decimalfield_value,
                max_digits=f.max_digits,
                decimal_places=f.decimal_places,
            )
    return adapters


def _row_values(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Each row's column values in ``_FIELDS`` order, defaults filled in and adapted.

    The defaults are merged and the columns picked in C (dict merge, itemgetter); only
    the columns with an adapter are touched one by one. Same values as a per-column
    ``row.get(name, default)`` loop, which was ~10% of a batch's CPU.
    """
    adapters = _adapters()
    adapted = [(i, adapters[f.attname]) for i, f in enumerate(_FIELDS) if f.attname in adapters]
    values = []
    for row in rows:
        line = list(_PICK({**_DEFAULTS, **row}))
        for i, adapt in adapted:
            if line[i] is not None:
                line[i] = adapt(line[i])
        values.append(line)
    return values


def _insert_returning(rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """Insert rows, skipping (client, event_id) that exist; return the keys inserted.

    PostgreSQL: the rows are COPYed into a session-local staging table, then one prepared
    ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING`` moves them. Measured per
    500-event batch in-process, this cut the client-side CPU of the insert by about a third
    against the previous pipelined single-row INSERTs (psycopg bound 500 × 43 parameters
    in Python; COPY formats rows in its C extension). One ``unnest`` of 40 arrays measured
    slower still (array parameters are dumped element by element in Python). SQLite
    (in-process, no round trips, and its executemany cannot return rows): multi-row VALUES
    chunked to its bind-variable limit.
    """
    values = _row_values(rows)
    inserted: set[tuple[int, str]] = set()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A server-side-binding psycopg cursor on Django's connection (same transaction):
            # Django's default ClientCursor merges every parameter into the SQL text in
            # Python, which profiled at ~0.2 s per 500-event batch; Django's wrapper would
            # also drop `returning`.
            import psycopg

            # ON COMMIT DELETE ROWS would empty the stage between autocommitted statements.
            if not connection.in_atomic_block:
                raise RuntimeError("the staged insert must run inside a transaction")
            with psycopg.Cursor(connection.connection) as raw:
                raw.execute(_PG_STAGE_CREATE)
                # Empty already, unless an outer transaction made several calls.
                raw.execute("DELETE FROM ingest_stage")
                with raw.copy(_PG_STAGE_COPY) as copy:
                    for line in values:
                        copy.write_row(line)
                # Prepared once per connection, not parsed and planned per batch: Django
                # turns psycopg's statement preparation off for the whole connection
                # (prepare_threshold=None), so it is switched on for this statement only
                # (protocol-level prepared statements; PgBouncer >= 1.21 supports them).
                threshold = connection.connection.prepare_threshold
                connection.connection.prepare_threshold = 0
                try:
                    raw.execute(_PG_STAGE_INSERT)
                finally:
                    connection.connection.prepare_threshold = threshold
                inserted.update((c, e) for c, e in raw.fetchall())
            return inserted
        connection.ensure_connection()
        limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        size = max(1, limit // len(_FIELDS))
        for start in range(0, len(values), size):
            chunk = values[start : start + size]
            sql = _SQLITE_INSERT.format(rows=", ".join([_SQLITE_ROW] * len(chunk)))
            cursor.execute(sql, [value for line in chunk for value in line])
            inserted.update((c, e) for c, e in cursor.fetchall())
    return inserted


_TABLE = f'"{UsageEvent._meta.db_table}"'
_COLUMNS = ", ".join(f'"{f.column}"' for f in _FIELDS)
# The batch is COPYed into a per-session staging table, then moved with one INSERT. The
# table lives as long as the connection (IF NOT EXISTS makes each transaction sure of it,
# also behind a transaction-mode pooler) and ON COMMIT DELETE ROWS empties it.
_PG_STAGE_CREATE = (
    "CREATE TEMP TABLE IF NOT EXISTS ingest_stage ON COMMIT DELETE ROWS AS "
    f"SELECT {_COLUMNS} FROM {_TABLE} WITH NO DATA"
)
_PG_STAGE_COPY = f"COPY ingest_stage ({_COLUMNS}) FROM STDIN"
_ON_CONFLICT = 'ON CONFLICT ("client_id", "event_id") DO NOTHING RETURNING "client_id", "event_id"'
_PG_STAGE_INSERT = (
    f"INSERT INTO {_TABLE} ({_COLUMNS}) SELECT {_COLUMNS} FROM ingest_stage "
    # Rows are taken in key order, so two requests with overlapping ids lock index entries
    # in the same order and cannot deadlock.
    f'ORDER BY "client_id", "event_id" {_ON_CONFLICT}'
)
# SQLite: multi-row VALUES, as many rows per statement as its bind-variable limit allows.
_SQLITE_INSERT = f"INSERT INTO {_TABLE} ({_COLUMNS}) VALUES {{rows}} {_ON_CONFLICT}"
_SQLITE_ROW = "(" + ", ".join(["%s"] * len(_FIELDS)) + ")"


def _clients(
    events: list[_Event], key_client: Client | None, results: list[EventResult]
) -> dict[int, Client]:
    """Decide each event's client (event index → Client); reject those it may not use."""
    chosen: dict[int, Client] = {}
    if key_client is not None:
        for event in events:
            if event.client_slug is None or event.client_slug == key_client.slug:
                chosen[event.index] = key_client
            else:
                _reject(
                    results[event.index],
                    f"events[{event.index}].client",
                    "this key may only post for its own client",
                    "forbidden_client",
                )
        return chosen
    slugs = {e.client_slug for e in events if e.client_slug}
    by_slug = {c.slug: c for c in Client.objects.filter(slug__in=slugs)}
    for event in events:
        where = f"events[{event.index}].client"
        if not event.client_slug:
            _reject(results[event.index], where, "is required with an agency-wide key", "required")
        elif event.client_slug not in by_slug:
            _reject(results[event.index], where, "no such client", "unknown_client")
        else:
            chosen[event.index] = by_slug[event.client_slug]
    return chosen


def _projects(wanted: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """Project ids by (client id, name), creating missing ones. Safe under concurrency:
    the create ignores rows another request created meanwhile, then everything is read
    back (under READ COMMITTED a new statement sees the other request's commit)."""
    if not wanted:
        return {}

    def lookup() -> dict[tuple[int, str], int]:
        query = models.Q()
        for client_id, name in wanted:
            query |= models.Q(client_id=client_id, name=name)
        return {
            (c, n): pk
            for pk, c, n in Project.objects.filter(query).values_list("pk", "client_id", "name")
        }

    found = lookup()
    missing = sorted(wanted - found.keys())
    if missing:
        Project.objects.bulk_create(
            [Project(client_id=c, name=n) for c, n in missing], ignore_conflicts=True
        )
        found = lookup()
    return found


def _local_day(moment: datetime, memo: dict[datetime, date]) -> date:
    """``local_day`` memoised per 15-minute UTC bucket (it was ~5% of a batch's CPU).
    Every time zone's UTC offset is a multiple of 15 minutes, so a local midnight never
    falls inside a bucket."""
    bucket = moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)
    day = memo.get(bucket)
    if day is None:
        day = memo[bucket] = local_day(bucket)
    return day


def _reject(result: EventResult, where: str, message: str, code: str = "invalid") -> None:
    result.status = "rejected"
    result.errors.append({"code": code, "field": where, "message": message})


@transaction.atomic
def usage_ingest(
    *,
    events: list[Any],
    client: Client | None,
    backfill_allowed: bool = False,
    now: datetime | None = None,
    book: RateBook | None = None,
) -> IngestResult:
    """Validate, price and store a batch of usage events; one result per event, in order.

    ``client`` is the key's client, or None for an agency-wide key (each event then names
    its client). Events older than ``INGEST_BACKFILL_DAYS`` are ``too_old`` unless
    ``backfill_allowed`` and the event says ``"backfill": true``. Marks the touched
    (client, day) rollups dirty in the same transaction and sends ``usage_recorded``
    after commit.
    """
    now = now or timezone.now()
    book = book or RateBook.load()
    results = [
        EventResult(
            id=raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
        )
        for raw in events
    ]
    parsed: list[_Event] = []
    for index, raw in enumerate(events):
        try:
            parsed.append(_parse_event(raw, index))
        except _EventError as exc:
            _reject(results[index], exc.field, exc.message, exc.code)
    chosen = _clients(parsed, client, results)
    seen: dict[tuple[int, str], int] = {}
    for event in parsed:
        if event.index not in chosen:
            continue
        key = (chosen[event.index].pk, event.event_id)
        if key in seen:
            _reject(
                results[event.index],
                f"events[{event.index}].id",
                f"repeats the id of events[{seen[key]}] in this request",
                "duplicate_id",
            )
            del chosen[event.index]
        else:
            seen[key] = event.index

    oldest = now - timedelta(days=settings.INGEST_BACKFILL_DAYS)
    latest = now + FUTURE_TOLERANCE
    rows: list[dict[str, Any]] = []
    row_events: list[tuple[_Event, dict[str, Any]]] = []
    for event in parsed:
        if event.index not in chosen:
            continue
        result = results[event.index]
        path = f"events[{event.index}]"
        occurred_at = event.occurred_at or now
        if occurred_at > latest:
            _reject(
                result, f"{path}.occurred_at", "is more than 5 minutes in the future", "in_future"
            )
            continue
        if occurred_at < oldest and not (backfill_allowed and event.backfill):
            _reject(
                result,
                f"{path}.occurred_at",
                f"is older than {settings.INGEST_BACKFILL_DAYS} days; an agency-wide key may "
                'send it with "backfill": true',
                "too_old",
            )
            continue
        try:
            usage = normalize_usage(
                event.provider, event.usage, service_tier=event.service_tier or None
            )
        except UsageError as exc:
            _reject(result, f"{path}.{exc.field}", exc.message)
            continue
        event_client = chosen[event.index]
        try:
            fingerprint = event_fingerprint(
                client_id=event_client.pk,
                provider=event.provider,
                model=event.model,
                usage=event.usage,
                occurred_at=event.occurred_at or _NO_TIME,
                service_tier=event.service_tier,
            )
        except (RecursionError, ValueError):
            _reject(result, f"{path}.usage", "is nested too deeply")
            continue
        resolution = book.resolve(event.provider, event.model, occurred_at)
        row: dict[str, Any] = {
            "client_id": event_client.pk,
            "event_id": event.event_id,
            "fingerprint": fingerprint,
            "provider": event.provider,
            "model": event.model,
            "occurred_at": occurred_at,
            "received_at": now,
            "usage": event.usage,
            "metadata": event.metadata,
            "status_code": event.status_code,
            "latency_ms": event.latency_ms,
            **usage_fields(usage),
            **pricing_fields(usage, resolution, now=now),
        }
        row["pricing_status"] = str(row["pricing_status"])
        row.update((k, v) for k, v in event.tags.items() if k != "project")
        rows.append(row)
        row_events.append((event, row))
        result.cost_usd = row["cost_usd"]
        result.priced = resolution is not None
        if resolution is None:
            result.warnings.append(
                {
                    "code": "unpriced_model",
                    "message": f"no rate for {event.provider} model {event.model!r}; stored "
                    "unpriced and priced once a rate is added",
                }
            )
        if usage.needs_review:
            result.warnings.append(
                {"code": "needs_review", "message": "; ".join(usage.review_reasons)}
            )

    if rows:
        _store(rows, row_events, results)
    days: dict[datetime, date] = {}
    outcome = IngestResult(results=results)
    touched = {
        (row["client_id"], _local_day(row["occurred_at"], days))
        for event, row in row_events
        if results[event.index].status == "accepted"
    }
    # One statement per (client, day), in a fixed order: concurrent requests then lock
    # the same rows in the same order and cannot deadlock.
    for pair in sorted(touched):
        dirty_days_mark([pair], now=now)
    outcome.client_ids = {client_id for client_id, _ in touched}
    if outcome.client_ids:
        client_ids = set(outcome.client_ids)
        transaction.on_commit(lambda: usage_recorded.send(sender=UsageEvent, client_ids=client_ids))
    return outcome


def _stored_fingerprints(wanted: dict[int, list[str]]) -> dict[tuple[int, str], str]:
    """Fingerprints of already-stored events, by (client id, event id)."""
    stored: dict[tuple[int, str], str] = {}
    for client_id, event_ids in wanted.items():
        if connection.vendor == "postgresql":
            # One array parameter, bound server-side, instead of 500 literals in the SQL.
            import psycopg

            # ON COMMIT DELETE ROWS would empty the stage between autocommitted statements.
            if not connection.in_atomic_block:
                raise RuntimeError("the staged insert must run inside a transaction")
            with psycopg.Cursor(connection.connection) as raw:
                raw.execute(
                    "SELECT event_id, fingerprint FROM tracking_usageevent "
                    "WHERE client_id = %s AND event_id = ANY(%s)",
                    [client_id, event_ids],
                )
                rows = raw.fetchall()
        else:
            rows = list(
                UsageEvent.objects.filter(client_id=client_id, event_id__in=event_ids).values_list(
                    "event_id", "fingerprint"
                )
            )
        for event_id, fingerprint in rows:
            stored[(client_id, event_id)] = fingerprint
    return stored


def _store(
    rows: list[dict[str, Any]],
    row_events: list[tuple[_Event, dict[str, Any]]],
    results: list[EventResult],
) -> None:
    """Insert the rows and set each result to accepted, duplicate or conflict."""
    projects = _projects(
        {
            (row["client_id"], event.tags["project"])
            for event, row in row_events
            if "project" in event.tags
        }
    )
    for event, row in row_events:
        name = event.tags.get("project")
        if name:
            row["project_id"] = projects[(row["client_id"], name)]
    # A fixed insert order, so two requests with overlapping ids lock index entries in the
    # same order.
    inserted = _insert_returning(sorted(rows, key=lambda r: (r["client_id"], r["event_id"])))
    rest: dict[int, list[str]] = defaultdict(list)
    for _event, row in row_events:
        if (row["client_id"], row["event_id"]) not in inserted:
            rest[row["client_id"]].append(row["event_id"])
    stored = _stored_fingerprints(rest)
    for event, row in row_events:
        key = (row["client_id"], row["event_id"])
        result = results[event.index]
        if key in inserted:
            result.status = "accepted"
            continue
        result.warnings = []
        result.cost_usd = None
        if stored.get(key) == row["fingerprint"]:
            result.status = "duplicate"
        else:
            _reject(
                result,
                f"events[{event.index}].id",
                "an event with this id and different content was already recorded",
                "conflict",
            )
