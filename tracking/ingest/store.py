"""Step 3: store the rows and tell each event accepted, duplicate or conflict.

SQLite: ``INSERT … ON CONFLICT (client_id, event_id) DO NOTHING RETURNING`` in
multi-row chunks, so only rows that come back are accepted. PostgreSQL, where the table
is partitioned by month and the key lives in ``tracking_usageeventkey`` (tracking
0006): the batch is COPYed into a staging table and moved with one ``INSERT … SELECT``
of the rows whose key is not taken; a trigger claims each key, so a concurrent insert of
the same key waits on the key's index and then fails with ``unique_violation``, and the
statement is retried from a savepoint (it then sees the other's commit). Either way
there is no check-then-insert race, and one SELECT of (event_id, fingerprint) then
classifies the rest. Values are adapted with the backend adapters ``get_db_prep_save``
ends in (JSON, datetimes, CostField), so the same code writes correct rows on PostgreSQL
and SQLite.
"""

from __future__ import annotations

import functools
import operator
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from django.db import connection, models

from agency.models import Project
from tracking.ingest.results import EventOutcome
from tracking.ingest.rows import Row
from tracking.models import UsageEvent, UsageEventKey


def rows_store(rows: list[Row], outcomes: list[EventOutcome]) -> None:
    """Insert the rows and set each outcome to accepted, duplicate or conflict."""
    projects = _projects({(r.values["client_id"], r.project) for r in rows if r.project})
    for row in rows:
        if row.project:
            row.values["project_id"] = projects[(row.values["client_id"], row.project)]
    # A fixed insert order, so two requests with overlapping ids lock index entries in the
    # same order.
    ordered = sorted((r.values for r in rows), key=lambda v: (v["client_id"], v["event_id"]))
    inserted = _insert_returning(ordered)
    rest: dict[int, list[str]] = defaultdict(list)
    for row in rows:
        key = (row.values["client_id"], row.values["event_id"])
        if key not in inserted:
            rest[key[0]].append(key[1])
    stored = _stored_fingerprints(rest) if rest else {}
    for row in rows:
        key = (row.values["client_id"], row.values["event_id"])
        outcome = outcomes[row.index]
        if key in inserted:
            outcome.status = "accepted"
            continue
        outcome.warnings, outcome.cost_usd = [], None
        if stored.get(key) == row.values["fingerprint"]:
            outcome.status = "duplicate"
        else:
            outcome.reject(
                f"events[{row.index}].id",
                "an event with this id and different content was already recorded",
                "conflict",
            )


def _projects(wanted: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """Project ids by (client id, name), creating missing ones. Safe under concurrency:
    the create ignores rows another request created meanwhile, then everything is read
    back (under READ COMMITTED a new statement sees the other request's commit)."""
    if not wanted:
        return {}

    pairs = sorted(wanted)

    def lookup() -> dict[tuple[int, str], int]:
        # Plain SQL: the ORM spent ~0.7 ms a batch compiling an OR of the pairs.
        with connection.cursor() as cursor:
            cursor.execute(
                f"{_PROJECTS} WHERE (client_id, name) IN ({', '.join(['(%s, %s)'] * len(pairs))})",
                [v for pair in pairs for v in pair],
            )
            return {(c, n): pk for pk, c, n in cursor.fetchall()}

    found = lookup()
    missing = sorted(wanted - found.keys())
    if missing:
        Project.objects.bulk_create(
            [Project(client_id=c, name=n) for c, n in missing], ignore_conflicts=True
        )
        found = lookup()
    return found


def _stored_fingerprints(wanted: dict[int, list[str]]) -> dict[tuple[int, str], str]:
    """Fingerprints of already-stored events, by (client id, event id)."""
    stored: dict[tuple[int, str], str] = {}
    for client_id, event_ids in wanted.items():
        if connection.vendor == "postgresql":
            # One array parameter, bound server-side, instead of 500 literals in the SQL.
            with _server_side_cursor() as raw:
                raw.execute(_PG_FINGERPRINTS, [client_id, event_ids])
                rows = raw.fetchall()
        else:
            rows = list(
                UsageEvent.objects.filter(client_id=client_id, event_id__in=event_ids).values_list(
                    "event_id", "fingerprint"
                )
            )
        stored.update(((client_id, event_id), fingerprint) for event_id, fingerprint in rows)
    return stored


@contextmanager
def _server_side_cursor() -> Iterator[psycopg.Cursor[Any]]:
    """A server-side-binding psycopg cursor on Django's connection (same transaction).

    Django's default ClientCursor merges every parameter into the SQL text in Python,
    which profiled at ~0.2 s per 500-event batch; Django's wrapper would also drop
    ``RETURNING`` rows of the staged insert.
    """
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as raw:
        yield raw


# --- the insert -------------------------------------------------------------------------


def _insert_columns() -> list[models.Field[Any, Any]]:
    return [f for f in UsageEvent._meta.concrete_fields if not f.primary_key]


_FIELDS = _insert_columns()
_encode_json = msgspec.json.Encoder().encode


def _json_text(value: Any) -> str:
    """A JSON column's text. A value given as bytes is that text already (rows_build
    passes each usage object as the text validation encoded): JSON never decodes to
    bytes, so no other value is bytes."""
    if type(value) is bytes:
        return value.decode()
    return _encode_json(value).decode()


def _text_or(adapt: Any) -> Any:
    """``adapt``, but bytes (JSON text already, see ``_json_text``) are taken as they are."""

    def adapter(value: Any) -> Any:
        return value.decode() if type(value) is bytes else adapt(value)

    return adapter


_DEFAULTS = {f.attname: f.get_default() for f in _FIELDS}
_PICK = operator.itemgetter(*(f.attname for f in _FIELDS))


def _adapters() -> dict[str, Any]:
    """Per column that needs it, the backend adaptation ``get_db_prep_save`` would do.

    Called directly (the backend's ``adapt_*_value`` hooks) because our values already
    have the right Python types: the full ``get_db_prep_save`` chain re-validates every
    Decimal and cost ~0.2 s per 500-event batch (profiled). The result is the same: JSON
    text on both backends, naive UTC text for SQLite datetimes (``_column_values`` writes
    PostgreSQL's as ISO 8601 text), Decimals for CostField (stored as exact text on SQLite
    by the driver adapter Django registers).
    """
    ops = connection.ops
    adapters: dict[str, Any] = {}
    for f in _FIELDS:
        if isinstance(f, models.JSONField) and connection.vendor == "postgresql" and not f.encoder:
            # JSON text, which the COPY hands to jsonb's own parser: msgspec writes it where
            # Django's adapter calls json.dumps (0.3 against 2.9 µs per usage object), and
            # a plain string skips psycopg's Jsonb wrapper (0.5 ms a 500-event batch).
            # jsonb keeps the parsed value, not the text, so the spelling (1e16 or 1e+16,
            # é raw or escaped) changes nothing.
            adapters[f.attname] = _json_text
        elif isinstance(f, models.JSONField):
            adapters[f.attname] = _text_or(
                functools.partial(ops.adapt_json_value, encoder=f.encoder)
            )
        elif connection.vendor == "postgresql":
            # Its datetime and decimal hooks return the value as it is (psycopg adapts
            # it): 8,000 calls a 500-event batch that change nothing.
            continue
        elif isinstance(f, models.DateTimeField):
            adapters[f.attname] = ops.adapt_datetimefield_value
        elif isinstance(f, models.DecimalField):
            adapters[f.attname] = functools.partial(
                ops.adapt_decimalfield_value,
                max_digits=f.max_digits,
                decimal_places=f.decimal_places,
            )
    return adapters


def _column_values(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Each row's column values in ``_FIELDS`` order, defaults filled in and adapted.

    The defaults are merged and the columns picked in C (dict merge, itemgetter); only
    the columns with an adapter are touched one by one. Same values as a per-column
    ``row.get(name, default)`` loop, which was ~10% of a batch's CPU.
    """
    adapters = _adapters()
    if connection.vendor == "postgresql":
        # Datetimes as ISO 8601 text, which the COPY's timestamptz input reads as the same
        # instant: psycopg's datetime dumper took 1.2 µs a value (1.8 ms a 500-event
        # batch). A batch's rows share their received_at and priced_at (the request's
        # "now"), so each distinct instant is formatted once.
        texts: dict[datetime, str] = {}

        def instant(value: datetime) -> str:
            text = texts.get(value)
            if text is None:
                text = texts[value] = value.isoformat()
            return text

        for f in _FIELDS:
            if isinstance(f, models.DateTimeField):
                adapters[f.attname] = instant
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

    PostgreSQL: the rows are COPYed into a session-local staging table, then one
    ``INSERT … SELECT … RETURNING`` of the rows whose key is not taken moves them. Measured per
    500-event batch in-process, this cut the client-side CPU of the insert by about a third
    against the previous pipelined single-row INSERTs (psycopg bound 500 × 43 parameters
    in Python; COPY formats rows in its C extension). One ``unnest`` of 40 arrays measured
    slower still (array parameters are dumped element by element in Python). SQLite
    (in-process, no round trips, and its executemany cannot return rows): multi-row VALUES
    chunked to its bind-variable limit.
    """
    values = _column_values(rows)
    if connection.vendor == "postgresql":
        return _insert_postgresql(values)
    return _insert_sqlite(values)


def _insert_postgresql(values: list[list[Any]]) -> set[tuple[int, str]]:
    # ON COMMIT DELETE ROWS would empty the stage between autocommitted statements.
    if not connection.in_atomic_block:
        raise RuntimeError("the staged insert must run inside a transaction")
    with _server_side_cursor() as raw:
        # Statements without parameters go in one round trip each (psycopg sends them as
        # one simple query): the stage made sure of and emptied (it is empty already,
        # unless an outer transaction made several calls); later the savepoint, the insert
        # and the release. Django's atomic() took a round trip and ~0.3 ms of Python each
        # for the savepoint and its release.
        raw.execute(f"{_PG_STAGE_CREATE}; DELETE FROM {_STAGE}")
        with raw.copy(_PG_STAGE_COPY) as copy:
            for line in values:
                copy.write_row(line)
        # Planned per batch, not prepared once per connection: a plan made while the key
        # table was small (a new database) seq-scanned and sorted the whole key table on
        # every later batch, until an ANALYZE happened to invalidate it (measured: 552 such
        # scans on the benchmark's fresh database). Planning costs ~0.3 ms a batch.
        for attempt in range(_RETRIES):
            try:
                raw.execute(_PG_STAGE_INSERT_IN_SAVEPOINT)
            except psycopg.errors.UniqueViolation:
                # A concurrent request stored one of these keys after our statement
                # began; it has committed now (the trigger waited for it), so the retry
                # skips that key and the caller classifies it. The failed insert ended the
                # query before the release: back to the savepoint, and on.
                raw.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE SAVEPOINT {_SAVEPOINT}")
                if attempt == _RETRIES - 1:
                    raise
                continue
            raw.nextset()  # from the savepoint's result to the insert's
            return {(c, e) for c, e in raw.fetchall()}
    raise AssertionError("unreachable")


def _insert_sqlite(values: list[list[Any]]) -> set[tuple[int, str]]:
    inserted: set[tuple[int, str]] = set()
    with connection.cursor() as cursor:
        limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        size = max(1, limit // len(_FIELDS))
        for start in range(0, len(values), size):
            chunk = values[start : start + size]
            sql = _SQLITE_INSERT.format(rows=", ".join([_SQLITE_ROW] * len(chunk)))
            cursor.execute(sql, [value for line in chunk for value in line])
            inserted.update((c, e) for c, e in cursor.fetchall())
    return inserted


_TABLE = f'"{UsageEvent._meta.db_table}"'
_PROJECTS = f'SELECT id, client_id, name FROM "{Project._meta.db_table}"'
_STAGE = "ingest_stage"
_COLUMNS = ", ".join(f'"{f.column}"' for f in _FIELDS)
# The batch is COPYed into a per-session staging table, then moved with one INSERT. The
# table lives as long as the connection (IF NOT EXISTS makes each transaction sure of it,
# also behind a transaction-mode pooler) and ON COMMIT DELETE ROWS empties it.
_PG_STAGE_CREATE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ON COMMIT DELETE ROWS AS "
    f"SELECT {_COLUMNS} FROM {_TABLE} WITH NO DATA"
)
_PG_STAGE_COPY = f"COPY {_STAGE} ({_COLUMNS}) FROM STDIN"
_ON_CONFLICT = 'ON CONFLICT ("client_id", "event_id") DO NOTHING RETURNING "client_id", "event_id"'
_KEYS = f'"{UsageEventKey._meta.db_table}"'
_RETRIES = 5
_PG_STAGE_INSERT = (
    f"INSERT INTO {_TABLE} ({_COLUMNS}) SELECT {_COLUMNS} FROM {_STAGE} s "
    f"WHERE NOT EXISTS (SELECT 1 FROM {_KEYS} k "
    "WHERE k.client_id = s.client_id AND k.event_id = s.event_id) "
    # Rows are taken in key order, so two requests with overlapping ids lock index entries
    # in the same order and cannot deadlock.
    'ORDER BY "client_id", "event_id" RETURNING "client_id", "event_id"'
)
_SAVEPOINT = "ingest_insert"
_PG_STAGE_INSERT_IN_SAVEPOINT = (
    f"SAVEPOINT {_SAVEPOINT}; {_PG_STAGE_INSERT}; RELEASE SAVEPOINT {_SAVEPOINT}"
)
# Through the key (unpartitioned, one index probe) to the row in its partition. A key
# whose month is archived finds no row: its fingerprint is then unknown, and the event is
# a conflict (a true replay of an archived event is refused earlier, by its month).
_PG_FINGERPRINTS = (
    f"SELECT k.event_id, e.fingerprint FROM {_KEYS} k "
    f"JOIN {_TABLE} e ON e.id = k.row_id AND e.occurred_at = k.occurred_at "
    "WHERE k.client_id = %s AND k.event_id = ANY(%s)"
)
# SQLite: multi-row VALUES, as many rows per statement as its bind-variable limit allows.
_SQLITE_INSERT = f"INSERT INTO {_TABLE} ({_COLUMNS}) VALUES {{rows}} {_ON_CONFLICT}"
_SQLITE_ROW = "(" + ", ".join(["%s"] * len(_FIELDS)) + ")"
