"""The ingest path: ``usage_ingest`` validates, prices and stores a batch of usage events.

Semantics:

* Per-event results in request order; one bad event never sinks the others.
* The event ``id`` is the idempotency key, unique per client, remembered forever by the
  ``(client, event_id)`` unique constraint. Same id and same billing content: ``duplicate``
  (nothing changes). Same id, different content: ``rejected`` with ``conflict`` (never an
  overwrite). A later event repeating an id of the same request: ``rejected``.
* Accepted events are committed in one transaction before the caller answers.

One module per step, in the order the batch goes through them: ``validate`` (the shape
declared in tracking/schema.py), ``rows`` (client, time window, price, column limits),
``store`` (insert, duplicates and conflicts); marking the touched days dirty is here.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from agency.models import Client
from tracking.ingest.results import EventOutcome, IngestOutcome, RequestError
from tracking.ingest.rows import Row, events_assign_clients, rows_build
from tracking.ingest.store import rows_store
from tracking.ingest.validate import events_validate, parse_events_body
from tracking.models import UsageEvent
from tracking.rates import RateBook
from tracking.schema import Event
from tracking.services import dirty_days_mark, local_day
from tracking.signals import usage_recorded

__all__ = ["IngestOutcome", "RequestError", "parse_events_body", "usage_ingest"]


@transaction.atomic
def usage_ingest(
    *,
    events: list[Any],
    client: Client | None,
    backfill_allowed: bool = False,
    now: datetime | None = None,
    book: RateBook | None = None,
) -> IngestOutcome:
    """Validate, price and store a batch of usage events; one result per event, in order.

    ``client`` is the key's client, or None for an agency-wide key (each event then names
    its client). Events older than ``INGEST_BACKFILL_DAYS`` are ``too_old`` unless
    ``backfill_allowed`` and the event says ``"backfill": true``. Marks the touched
    (client, day) rollups dirty in the same transaction and sends ``usage_recorded``
    after commit.
    """
    now = now or timezone.now()
    outcomes = [EventOutcome(id=_given_id(raw)) for raw in events]
    valid = events_validate(events, outcomes)
    owned = events_assign_clients(valid, client, outcomes)
    rows = rows_build(
        owned, outcomes, backfill_allowed=backfill_allowed, now=now, book=book or RateBook.current()
    )
    if rows:
        rows_store(rows, outcomes)
    client_ids = days_mark_dirty(rows, outcomes, now=now)
    if client_ids:
        transaction.on_commit(lambda: usage_recorded.send(sender=UsageEvent, client_ids=client_ids))
    return IngestOutcome(results=outcomes, client_ids=set(client_ids))


def _given_id(raw: Any) -> str | None:
    """The id to echo in a result: the event's own when it is a string at all."""
    if isinstance(raw, Event):
        return raw.id
    event_id = raw.get("id") if isinstance(raw, dict) else None
    return event_id if isinstance(event_id, str) else None


def days_mark_dirty(rows: list[Row], outcomes: list[EventOutcome], *, now: datetime) -> set[int]:
    """Mark the (client, local day) rollups of the accepted rows dirty; their client ids."""
    memo: dict[datetime, date] = {}
    touched = {
        (row.values["client_id"], _local_day(row.values["occurred_at"], memo))
        for row in rows
        if outcomes[row.index].status == "accepted"
    }
    # One statement for all, in (client, day) order (see dirty_days_mark): a statement
    # per pair cost a round trip and an ORM insert each (3-10 ms a request, measured).
    dirty_days_mark(touched, now=now)
    return {client_id for client_id, _ in touched}


def _local_day(moment: datetime, memo: dict[datetime, date]) -> date:
    """``local_day`` memoised per 15-minute UTC bucket (it was ~5% of a batch's CPU).
    Every time zone's UTC offset is a multiple of 15 minutes, so a local midnight never
    falls inside a bucket."""
    bucket = moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)
    day = memo.get(bucket)
    if day is None:
        day = memo[bucket] = local_day(bucket)
    return day
