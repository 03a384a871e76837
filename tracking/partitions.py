"""Monthly partitions of the event table (PostgreSQL), and archiving an old month.

On PostgreSQL ``tracking_usageevent`` is partitioned by range of ``occurred_at``, one
partition per agency-local month (``tracking_usageevent_y2026m11``), plus a default
partition that takes any event no monthly partition covers, so an insert never fails for
want of a partition. ``partitions_ensure`` (daily beat job, and ``manage.py
usage_partitions ensure``) creates this month's and the next months' partitions ahead of
time; creating one for a month that already has rows in the default partition moves them
in. ``month_archive`` writes an old month's events to a gzipped CSV and detaches its
partition: rollups, invoices and the month's event keys (``UsageEventKey``, so a replay is
still a duplicate) stay, new events for the month are refused, its rollups are never
rebuilt again.

Idempotency across partitions: a unique index on a partitioned table must include the
partition key, so ``(client, event_id)`` is kept unique by ``tracking_usageeventkey`` and
triggers (migration tracking 0006). SQLite keeps a plain table with a unique constraint;
everything here is then a no-op or refused.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from agency.calendar import current_month, month_range, shift_month
from tracking.models import ArchivedMonth, DirtyDay, UsageEvent

TABLE = UsageEvent._meta.db_table
DEFAULT = f"{TABLE}_default"
# How many months after the current one ``partitions_ensure`` creates by default.
AHEAD = 3
_NAME = re.compile(rf"^{TABLE}_y(\d{{4}})m(\d{{2}})$")


class PartitionError(Exception):
    """A partition operation that cannot be done; the message says why."""


@dataclass(frozen=True)
class Partition:
    name: str
    month: date | None  # None: the default partition
    rows: int  # the planner's estimate (exact after ANALYZE)
    bytes: int


def partition_name(month: date) -> str:
    return f"{TABLE}_y{month:%Y}m{month:%m}"


def is_partitioned() -> bool:
    """Whether the event table is partitioned (PostgreSQL after tracking 0006)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = %s::regclass)",
            [TABLE],
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def partitions_list() -> list[Partition]:
    """The attached partitions, the default one first, then by month."""
    if not is_partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        found = cursor.fetchall()
    partitions = [
        Partition(name=name, month=_month_of(name), rows=rows, bytes=size)
        for name, rows, size in found
    ]
    return sorted(partitions, key=lambda p: (p.month is not None, p.month or date.min))


def _month_of(name: str) -> date | None:
    match = _NAME.match(name)
    return date(int(match[1]), int(match[2]), 1) if match else None


def months_archived() -> set[date]:
    """The archived months (first days)."""
    return set(ArchivedMonth.objects.values_list("month", flat=True))


def partitions_ensure(
    *, ahead: int = AHEAD, now: datetime | None = None, since: date | None = None
) -> list[str]:
    """Create the monthly partitions from ``since`` (default: the month of the oldest
    event ingest accepts without backfill, ``INGEST_BACKFILL_DAYS`` ago) to ``ahead``
    months after the current one that do not exist yet, skipping archived months.
    Returns the names created. Idempotent; a no-op where the table is not partitioned."""
    if not is_partitioned():
        return []
    now = now or timezone.now()
    oldest = current_month(now - timedelta(days=settings.INGEST_BACKFILL_DAYS))
    month, last = since or oldest, shift_month(current_month(now), ahead)
    archived = months_archived()
    created = []
    while month <= last:
        if month not in archived and partition_add(month):
            created.append(partition_name(month))
        month = shift_month(month, 1)
    return created


def partition_add(month: date) -> bool:
    """Create and attach ``month``'s partition, moving in any of its rows the default
    partition holds; False if it already exists. One transaction."""
    name = partition_name(month)
    start, end = month_range(month)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        row = cursor.fetchone()
        if row and row[0]:
            return False
        # Attaching scans the default partition for rows of the new range under an ACCESS
        # EXCLUSIVE lock; taking it first also keeps such rows from arriving meanwhile.
        # Inserts routed to other partitions are not blocked.
        cursor.execute(f'LOCK TABLE "{DEFAULT}" IN ACCESS EXCLUSIVE MODE')
        cursor.execute(
            f'CREATE TABLE "{name}" (LIKE "{TABLE}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
        )
        # A statement on a partition itself fires none of the event table's key triggers
        # (statement-level, on the parent): the moved rows keep their keys as they are.
        cursor.execute(
            f'WITH moved AS (DELETE FROM "{DEFAULT}" WHERE occurred_at >= %s AND occurred_at < %s '
            f'RETURNING *) INSERT INTO "{name}" SELECT * FROM moved',
            [start, end],
        )
        cursor.execute(
            f'ALTER TABLE "{TABLE}" ATTACH PARTITION "{name}" FOR VALUES FROM (%s) TO (%s)',
            [start, end],
        )
    return True


@dataclass(frozen=True)
class Archived:
    month: date
    events: int
    file: Path | None
    table: str


def month_archive(
    month: date, *, to: Path | None, keep_table: bool = False, now: datetime | None = None
) -> Archived:
    """Write ``month``'s events to ``to`` (gzipped CSV with a header line, the table's
    columns) and detach its partition; drop the detached table unless ``keep_table``.

    Refused (PartitionError) unless the table is partitioned, the month is older than the
    previous month, has its own partition, is not archived yet and has no rollup waiting
    to be rebuilt, and unless the events go somewhere (a file, or the kept table).
    """
    now = now or timezone.now()
    _archive_check(month, to=to, keep_table=keep_table, now=now)
    name = partition_name(month)
    with transaction.atomic(), connection.cursor() as cursor:
        # Writes to this month wait until the commit; other months are not blocked while
        # the file is written. Detaching then takes the parent's lock only briefly.
        cursor.execute(f'LOCK TABLE "{name}" IN SHARE MODE')
        cursor.execute(f'SELECT count(*) FROM "{name}"')
        events = int(cursor.fetchone()[0])
        if to is not None:
            _copy_out(name, to)
        # The keys stay in UsageEventKey: detaching fires no delete trigger.
        cursor.execute(f'ALTER TABLE "{TABLE}" DETACH PARTITION "{name}"')
        if not keep_table:
            cursor.execute(f'DROP TABLE "{name}"')
        ArchivedMonth.objects.create(
            month=month,
            archived_at=now,
            events=events,
            file=str(to) if to is not None else "",
            table=name if keep_table else "",
        )
    return Archived(month=month, events=events, file=to, table=name if keep_table else "")


def _archive_check(month: date, *, to: Path | None, keep_table: bool, now: datetime) -> None:
    if not is_partitioned():
        raise PartitionError("the event table is not partitioned (PostgreSQL only)")
    if month >= shift_month(current_month(now), -1):
        raise PartitionError(
            f"{month:%Y-%m} is too recent: only months before the previous one can be archived"
        )
    if ArchivedMonth.objects.filter(month=month).exists():
        raise PartitionError(f"{month:%Y-%m} is already archived")
    if partition_name(month) not in {p.name for p in partitions_list()}:
        raise PartitionError(
            f"{month:%Y-%m} has no partition of its own (its events, if any, are in the "
            f"default partition): run `manage.py usage_partitions ensure --since "
            f"{month:%Y-%m}` first"
        )
    start, end = month_range(month)
    if DirtyDay.objects.filter(day__gte=start.date(), day__lt=end.date()).exists():
        raise PartitionError(
            f"{month:%Y-%m} has rollups waiting to be rebuilt: run the rollup job "
            "(`manage.py recompute_budgets`) first"
        )
    if to is None and not keep_table:
        raise PartitionError("say where the events go: a file (--to) or --keep-table")
    if to is not None and to.exists():
        raise PartitionError(f"{to} exists already; archives are never overwritten")


def _copy_out(table: str, to: Path) -> None:
    """COPY the table to a gzipped CSV file with a header line."""
    to.parent.mkdir(parents=True, exist_ok=True)
    raw: Any = connection.connection
    with (
        gzip.open(to, "xb") as out,
        raw.cursor() as cursor,
        cursor.copy(f'COPY "{table}" TO STDOUT WITH (FORMAT csv, HEADER true)') as copy,
    ):
        for block in copy:
            out.write(block)
