"""Monthly partitions of the event table (PostgreSQL): the idempotency key holds across
months, partitions are created ahead (moving rows out of the default partition), and an
archived month leaves invoices, rollups and keys as they were.

``transaction=True``: attaching and detaching partitions is refused while the same
transaction has deferred foreign-key checks pending, which is how a real run differs
from a test wrapped in one transaction.
"""

from __future__ import annotations

import csv
import gzip
import importlib
from collections.abc import Iterator
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction

from agency.calendar import current_month
from agency.models import Client
from billing.models import DailyRollup, Invoice
from billing.services.invoices import invoice_finalize, invoice_generate
from billing.services.rollups import rollups_rebuild_dirty, rollups_rebuild_period
from tests.clock import AGENCY_TZ
from tests.factories import ClientFactory, UsageEventFactory
from tracking.ingest import usage_ingest
from tracking.models import ArchivedMonth, DirtyDay, UsageEvent, UsageEventKey
from tracking.partitions import (
    DEFAULT,
    PartitionError,
    is_partitioned,
    month_archive,
    partition_name,
    partitions_ensure,
    partitions_list,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="partitions are PostgreSQL's"),
]

NOW = datetime(2026, 12, 4, 12, tzinfo=AGENCY_TZ)


@pytest.fixture(autouse=True)
def _partitions_as_they_were(transactional_db: None) -> Iterator[None]:
    """Partitions are DDL, which a transactional test commits: drop those a test created,
    so every test (here and elsewhere) starts from the migration's partitions."""
    before = {p.name for p in partitions_list()}
    yield
    with connection.cursor() as cursor:
        for partition in partitions_list():
            if partition.name not in before:
                cursor.execute(f'DROP TABLE "{partition.name}"')


def _event(event_id: str, occurred_at: str, *, tokens: int = 10, **extra: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "model": "claude-sonnet-4-5",
        "occurred_at": occurred_at,
        "usage": {"input_tokens": tokens, "output_tokens": 5},
        **extra,
    }


def _statuses(client: Client, events: list[dict[str, Any]], **kwargs: Any) -> list[str]:
    outcome = usage_ingest(events=events, client=client, now=NOW, **kwargs)
    return [r.status if r.status != "rejected" else r.errors[0]["code"] for r in outcome.results]


def _partition_of(event: UsageEvent) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM tracking_usageevent WHERE id = %s", [event.pk]
        )
        return str(cursor.fetchone()[0])


def test_same_id_in_another_month_is_a_duplicate_or_a_conflict_never_a_second_row(rates):
    partitions_ensure(now=NOW)
    acme = cast(Client, ClientFactory())

    first = _statuses(acme, [_event("e1", "2026-11-20T10:00:00Z")])
    replay = _statuses(acme, [_event("e1", "2026-11-20T10:00:00Z")])
    other_month = _statuses(acme, [_event("e1", "2026-12-02T10:00:00Z")])
    other_content = _statuses(acme, [_event("e1", "2026-11-20T10:00:00Z", tokens=11)])

    assert (first, replay, other_month, other_content) == (
        ["accepted"],
        ["duplicate"],
        ["conflict"],
        ["conflict"],
    )
    event = UsageEvent.objects.get(client=acme)
    assert _partition_of(event) == partition_name(date(2026, 11, 1))
    assert list(UsageEventKey.objects.values_list("client_id", "event_id", "row_id")) == [
        (acme.pk, "e1", event.pk)
    ]
    # Another client may use the same id, in any month.
    beta = cast(Client, ClientFactory())
    assert _statuses(beta, [_event("e1", "2026-12-02T10:00:00Z")]) == ["accepted"]


def test_a_direct_insert_of_a_taken_key_fails_like_the_unique_constraint(rates):
    acme = cast(Client, ClientFactory())
    UsageEventFactory(
        client=acme, event_id="k", occurred_at=datetime(2026, 11, 3, tzinfo=AGENCY_TZ)
    )
    taken = pytest.raises(IntegrityError, match="usageevent_unique_client_event_id")
    with taken, transaction.atomic():
        UsageEventFactory(
            client=acme, event_id="k", occurred_at=datetime(2025, 1, 3, tzinfo=AGENCY_TZ)
        )
    assert UsageEvent.objects.filter(client=acme).count() == 1


def test_keys_follow_updates_moves_and_deletes(rates):
    partitions_ensure(now=NOW)
    acme = cast(Client, ClientFactory())
    event = cast(
        UsageEvent,
        UsageEventFactory(
            client=acme, event_id="m", occurred_at=datetime(2026, 11, 3, tzinfo=AGENCY_TZ)
        ),
    )
    # Moved to December's partition by a change of month: the same row, the same key.
    event.occurred_at = datetime(2026, 12, 3, tzinfo=AGENCY_TZ)
    event.save()
    assert _partition_of(event) == partition_name(date(2026, 12, 1))
    key = UsageEventKey.objects.get(client_id=acme.pk, event_id="m")
    assert (key.row_id, key.occurred_at) == (event.pk, event.occurred_at)
    # A new id releases the old one.
    event.event_id = "m2"
    event.save()
    assert set(UsageEventKey.objects.values_list("event_id", flat=True)) == {"m2"}
    assert _statuses(acme, [_event("m", "2026-11-20T10:00:00Z")]) == ["accepted"]
    # Deleting the row releases its key.
    event.delete()
    assert set(UsageEventKey.objects.values_list("event_id", flat=True)) == {"m"}
    assert _statuses(acme, [_event("m2", "2026-11-20T10:00:00Z")]) == ["accepted"]


def test_ensure_creates_months_ahead_and_moves_rows_out_of_the_default_partition(rates):
    acme = cast(Client, ClientFactory())
    old = cast(
        UsageEvent,
        UsageEventFactory(
            client=acme, event_id="old", occurred_at=datetime(2024, 3, 9, tzinfo=AGENCY_TZ)
        ),
    )
    assert _partition_of(old) == DEFAULT

    created = partitions_ensure(now=NOW, since=date(2024, 3, 1), ahead=4)

    assert partition_name(date(2024, 3, 1)) in created
    assert partition_name(date(2027, 4, 1)) in {p.name for p in partitions_list()}
    assert _partition_of(old) == partition_name(date(2024, 3, 1))
    # Its key came along: a replay is still a duplicate-or-conflict, not a new row.
    assert UsageEventKey.objects.filter(client_id=acme.pk, event_id="old", row_id=old.pk).exists()
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageEventFactory(client=acme, event_id="old", occurred_at=NOW)
    assert partitions_ensure(now=NOW, since=date(2024, 3, 1), ahead=4) == []


def _september(client: Client) -> None:
    """Three priced September events through ingest (backfill), rolled up."""
    events = [
        _event(f"s{i}", f"2026-09-{10 + i}T10:00:00Z", tokens=1000 * (i + 1), backfill=True)
        for i in range(3)
    ]
    assert _statuses(client, events, backfill_allowed=True) == ["accepted"] * 3
    rollups_rebuild_dirty()
    DirtyDay.objects.all().delete()


def test_archiving_a_month_keeps_invoices_rollups_and_keys(rates, tmp_path: Path):
    partitions_ensure(now=NOW, since=date(2026, 9, 1))
    acme = cast(Client, ClientFactory(markup_pct=Decimal("20")))
    _september(acme)
    invoice = invoice_generate(client_id=acme.pk, month=date(2026, 9, 1), now=NOW)
    assert invoice is not None
    invoice = invoice_finalize(invoice_id=invoice.pk, now=NOW)
    before_invoice = (invoice.number, invoice.total_usd, list(invoice.lines.values()))
    before_rollups = list(DailyRollup.objects.order_by("pk").values())
    stored = list(
        UsageEvent.objects.filter(client=acme)
        .order_by("event_id")
        .values_list("event_id", "cost_usd")
    )

    archived = month_archive(date(2026, 9, 1), to=tmp_path / "2026-09.csv.gz", now=NOW)

    assert archived.events == 3
    assert partition_name(date(2026, 9, 1)) not in {p.name for p in partitions_list()}
    assert UsageEvent.objects.filter(client=acme).count() == 0
    with gzip.open(tmp_path / "2026-09.csv.gz", "rt", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted((r["event_id"], Decimal(r["cost_usd"])) for r in rows) == stored
    assert ArchivedMonth.objects.get().events == 3
    # Invoices and rollups are untouched, and a rebuild of the month keeps the rollups.
    invoice = Invoice.objects.get(pk=invoice.pk)
    assert (invoice.number, invoice.total_usd, list(invoice.lines.values())) == before_invoice
    rollups_rebuild_period(start=date(2026, 9, 1), end=date(2026, 9, 30))
    assert list(DailyRollup.objects.order_by("pk").values()) == before_rollups
    # The month takes no new event; its keys still tell a replay in another month apart.
    assert _statuses(
        acme, [_event("s9", "2026-09-20T10:00:00Z", backfill=True)], backfill_allowed=True
    ) == ["archived_month"]
    assert _statuses(acme, [_event("s0", "2026-11-20T10:00:00Z")]) == ["conflict"]
    assert UsageEvent.objects.filter(client=acme).count() == 0
    # Nothing waits to be rebuilt, and nothing is lost on a second rebuild.
    assert not DirtyDay.objects.exists()


def test_archive_refuses_what_it_cannot_do_safely(rates, tmp_path: Path):
    partitions_ensure(now=NOW, since=date(2026, 8, 1))
    acme = cast(Client, ClientFactory())
    with pytest.raises(PartitionError, match="too recent"):
        month_archive(date(2026, 11, 1), to=tmp_path / "a.csv.gz", now=NOW)
    with pytest.raises(PartitionError, match="no partition of its own"):
        month_archive(date(2025, 2, 1), to=tmp_path / "a.csv.gz", now=NOW)
    with pytest.raises(PartitionError, match="a file"):
        month_archive(date(2026, 8, 1), to=None, now=NOW)
    (tmp_path / "taken.csv.gz").write_bytes(b"")
    with pytest.raises(PartitionError, match="never overwritten"):
        month_archive(date(2026, 8, 1), to=tmp_path / "taken.csv.gz", now=NOW)
    UsageEventFactory(client=acme, occurred_at=datetime(2026, 8, 5, tzinfo=AGENCY_TZ))
    DirtyDay.objects.create(client=acme, day=date(2026, 8, 5), marked_at=NOW)
    with pytest.raises(PartitionError, match="waiting to be rebuilt"):
        month_archive(date(2026, 8, 1), to=tmp_path / "a.csv.gz", now=NOW)
    # Nothing was detached by the refusals.
    assert partition_name(date(2026, 8, 1)) in {p.name for p in partitions_list()}
    assert not ArchivedMonth.objects.exists()


def test_the_command_lists_ensures_and_archives(rates, tmp_path: Path, capsys):
    call_command("usage_partitions", "ensure", "--since", "2026-07")
    out = capsys.readouterr().out
    assert partition_name(date(2026, 7, 1)) in out
    call_command("usage_partitions", "list")
    out = capsys.readouterr().out
    assert "default" in out and "2026-07" in out
    call_command("usage_partitions", "archive", "2026-07", "--to", str(tmp_path / "jul.csv.gz"))
    assert "2026-07: 0 events archived" in capsys.readouterr().out
    with pytest.raises(CommandError, match="already archived"):
        call_command("usage_partitions", "archive", "2026-07", "--to", str(tmp_path / "b.csv.gz"))
    with pytest.raises(CommandError, match="2026-13"):
        call_command("usage_partitions", "archive", "2026-13", "--to", str(tmp_path / "c.csv.gz"))


def test_the_migration_keeps_every_row_and_key_both_ways(rates):
    """tracking 0006 copies the table into the partitioned one (and back when reversed):
    same rows and ids, keys for all of them, ids continuing after the largest."""
    migration = importlib.import_module("tracking.migrations.0006_partitioned_usage_events")
    editor = SimpleNamespace(connection=connection)
    acme = cast(Client, ClientFactory())
    months = [date(2025, 6, 1), date(2026, 11, 1), date(2026, 12, 1)]
    for month in months:
        UsageEventFactory(client=acme, occurred_at=datetime.combine(month, time(9), AGENCY_TZ))
    rows = list(UsageEvent.objects.order_by("pk").values_list("pk", "event_id", "occurred_at"))

    with transaction.atomic():
        migration.unpartition(None, editor)
    assert not is_partitioned()
    assert (
        list(UsageEvent.objects.order_by("pk").values_list("pk", "event_id", "occurred_at")) == rows
    )
    taken = pytest.raises(IntegrityError, match="usageevent_unique_client_event_id")
    with taken, transaction.atomic():
        UsageEventFactory(client=acme, event_id=rows[0][1])

    with transaction.atomic():
        migration.partition(None, editor)
    assert is_partitioned()
    assert (
        list(UsageEvent.objects.order_by("pk").values_list("pk", "event_id", "occurred_at")) == rows
    )
    assert set(UsageEventKey.objects.values_list("event_id", "row_id")) == {
        (event_id, pk) for pk, event_id, _ in rows
    }
    for event in UsageEvent.objects.all():
        assert _partition_of(event) == partition_name(current_month(event.occurred_at))
    newest = cast(UsageEvent, UsageEventFactory(client=acme, occurred_at=NOW))
    assert newest.pk > rows[-1][0]
    with taken, transaction.atomic():
        UsageEventFactory(client=acme, event_id=rows[0][1], occurred_at=NOW)
