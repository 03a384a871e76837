"""Clients metered from the provider's report: their report rows become their usage events.

A client whose ``usage_source`` is the provider report posts nothing; the provider's daily
usage report (``ProviderReportRow``, synced by ``tracking.provider_reports``) is its
usage. ``apply_report_rows`` turns the rows of the synced days into ``UsageEvent`` rows,
one per report row the client owns, so markup, rollups, budgets, alerts, dashboards and
invoices work on them unchanged:

* **Whose row.** A row belongs to the client its API key is mapped to
  (``ProviderAccount`` kind api_key, same provider); only when its API key is not mapped,
  to the client its workspace (OpenAI: project) is mapped to. The more specific mapping
  wins, so a row is never counted for two clients. A row whose owner posts events
  (``usage_source`` events) becomes nobody's usage: that owner's events already count it.
* **Priced like an event.** The row's disjoint token buckets go through
  ``tracking.pricing.report_usage`` and the same ``pricing_fields`` as ingest, at the
  rate of the row's day: batch, service tier, the context window (long context), the
  inference geo and speed all apply; a model without a rate stays unpriced (NULL, never
  $0) until re-pricing finds a rate. The provider's own ``amount`` and ``list_amount``
  (exact fractional cents) are kept in the event's ``metadata``.
* **The day.** A report day is a UTC day; its event is dated 12:00 on the agency's clock
  on the same calendar date, so the day (and month) billed is the day the report names,
  in any agency time zone.
* **Idempotent.** The event id is derived from the row's identity (day, model, API key,
  workspace, pricing dimensions), the fingerprint from its content: re-applying the same
  rows writes nothing. A revised row updates its event in place, a row gone from a
  re-synced day deletes its event; the touched days are marked dirty for the rollups and
  ``usage_recorded`` is sent after commit, as ingest does.
* **Invoiced months.** A revision of a day whose month is invoiced (``ClosedPeriod``)
  changes the event like a late event changes a month: the next invoice bills the
  difference once, as an adjustment line (``billing.selectors.lines``). Such a revised
  event keeps the rate it was invoiced at.
* **Never twice.** Ingest refuses events for a report-sourced client, and a day on which
  the client has posted events (before it was switched) is left to those events: its
  report rows are skipped and counted in ``ApplyResult.skipped_posted_days``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from agency.calendar import current_month, day_bounds, local_day, local_moment, month_start
from agency.models import Client, UsageSource
from tracking.ingest.store import _insert_returning
from tracking.models import (
    AccountKind,
    ClosedPeriod,
    ModelRate,
    ProviderAccount,
    ProviderReportRow,
    UsageEvent,
)
from tracking.partitions import months_archived
from tracking.pricing import report_usage
from tracking.rates import RateBook, Resolution
from tracking.services import (
    PRICING_FIELDS,
    dirty_days_mark,
    event_fingerprint,
    pricing_fields,
    usage_fields,
)
from tracking.signals import usage_recorded

# What ``UsageEvent.metadata["source"]`` says on an event made from a report row.
SOURCE = "provider_report"
# A report day's event is dated noon on the agency's clock of the same date.
BOOKED_AT = time(12, 0)
# The columns of a row that identify it within its day (with ``model``), and those summed.
IDENTITY = (
    "model",
    "api_key_id",
    "workspace_id",
    "service_tier",
    "context_window",
    "inference_geo",
    "speed",
    "batch",
)
COUNTS = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "web_search_requests",
    "requests",
)
AMOUNTS = ("amount_cents", "list_amount_cents")
# Columns a revision rewrites (besides the pricing ones).
_REVISED_FIELDS = (
    "fingerprint",
    "usage",
    "metadata",
    "received_at",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "web_search_requests",
    "service_tier",
    "inference_geo",
    "speed",
)


class ReportUsageError(Exception):
    """A change that would count the same usage from both sources."""


@dataclass
class ApplyResult:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    unpriced: int = 0
    # (client id, local day) pairs left to the events the client posted that day.
    skipped_posted_days: set[tuple[int, date]] = field(default_factory=set)
    # Days of archived months (tracking.partitions): their events are detached, the
    # report's revision of them is not applied.
    archived_days: set[date] = field(default_factory=set)
    client_ids: set[int] = field(default_factory=set)


def is_report_event(event: UsageEvent) -> bool:
    return isinstance(event.metadata, dict) and event.metadata.get("source") == SOURCE


def booked_at(day: date) -> datetime:
    """The ``occurred_at`` of the events of a report day."""
    return local_moment(day, BOOKED_AT)


def event_id_for(provider: str, day: date, identity: tuple[Any, ...]) -> str:
    digest = hashlib.sha256(json.dumps([provider, *identity]).encode()).hexdigest()[:24]
    return f"report:{provider}:{day.isoformat()}:{digest}"


# --- whose row ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Owners:
    """Provider accounts by external id, and the clients metered from the report."""

    by_key: dict[str, int]
    by_workspace: dict[str, int]
    report_clients: set[int]

    @classmethod
    def load(cls, provider: str) -> Owners:
        by_key: dict[str, int] = {}
        by_workspace: dict[str, int] = {}
        for kind, external_id, client_id in ProviderAccount.objects.filter(
            provider=provider
        ).values_list("kind", "external_id", "client_id"):
            target = by_key if kind == AccountKind.API_KEY else by_workspace
            target[external_id] = client_id
        report_clients = set(
            Client.objects.filter(usage_source=UsageSource.PROVIDER_REPORT).values_list(
                "pk", flat=True
            )
        )
        return cls(by_key, by_workspace, report_clients)

    def owner(self, api_key_id: str, workspace_id: str) -> int | None:
        """The client a row belongs to: its API key's, else its workspace's (None: nobody's)."""
        if api_key_id and api_key_id in self.by_key:
            return self.by_key[api_key_id]
        if workspace_id and workspace_id in self.by_workspace:
            return self.by_workspace[workspace_id]
        return None

    def report_owner(self, api_key_id: str, workspace_id: str) -> int | None:
        """The report-sourced client whose usage a row is, or None."""
        client_id = self.owner(api_key_id, workspace_id)
        return client_id if client_id in self.report_clients else None


# --- the service ----------------------------------------------------------------------------


def apply_report_rows(provider: str, days: Iterable[date], *, notify: bool = True) -> ApplyResult:
    """Make the report rows of ``provider`` for these UTC ``days`` the usage events of the
    report-sourced clients that own them (see the module docstring). Called by the sync
    after each successful sync; safe to run twice, or concurrently (serialized per
    provider). ``notify=False`` skips ``usage_recorded`` (the demo rebuilds everything
    itself)."""
    wanted_days = sorted(set(days))
    result = ApplyResult()
    if not wanted_days:
        return result
    with transaction.atomic():
        _lock(provider)
        _apply(provider, wanted_days, result, now=timezone.now())
        if result.client_ids and notify:
            client_ids = set(result.client_ids)
            transaction.on_commit(
                lambda: usage_recorded.send(sender=UsageEvent, client_ids=client_ids)
            )
    return result


def _lock(provider: str) -> None:
    """Two applications for one provider at once would both insert the same new events."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"report_usage:{provider}"]
            )


def _apply(provider: str, days: list[date], result: ApplyResult, *, now: datetime) -> None:
    owners = Owners.load(provider)
    if not owners.report_clients:
        return
    closed = set(
        ClosedPeriod.objects.filter(client_id__in=owners.report_clients).values_list(
            "client_id", "month"
        )
    )
    book = RateBook.load()
    archived = months_archived()
    # One day at a time: a month of a large report stays a day's worth of rows in memory.
    for day in days:
        if month_start(day) in archived:
            result.archived_days.add(day)
            continue
        _apply_day(provider, day, owners, closed, book, result, now=now)


def _apply_day(
    provider: str,
    day: date,
    owners: Owners,
    closed: set[tuple[int, date]],
    book: RateBook,
    result: ApplyResult,
    *,
    now: datetime,
) -> None:
    wanted = _wanted_events(provider, day, owners)
    posted = _posted_clients(owners.report_clients, day)
    # The day's report events: only what tells a changed one apart (full rows are only
    # needed for writing, and a re-sync mostly changes nothing).
    existing = {
        (client_id, event_id): (pk, fingerprint, rate_id)
        for pk, client_id, event_id, fingerprint, rate_id in UsageEvent.objects.filter(
            client_id__in=owners.report_clients,
            occurred_at=booked_at(day),
            event_id__startswith=f"report:{provider}:",
            metadata__source=SOURCE,
        ).values_list("pk", "client_id", "event_id", "fingerprint", "rate_id")
    }
    rates: dict[int, ModelRate] = {}
    touched: set[int] = set()
    to_create: list[dict[str, Any]] = []
    to_update: list[UsageEvent] = []
    for (client_id, event_id), values in sorted(wanted.items()):
        if client_id in posted:
            result.skipped_posted_days.add((client_id, day))
            continue
        old = existing.pop((client_id, event_id), None)
        if old is not None and old[2] is not None and (client_id, month_start(day)) in closed:
            # The month is invoiced at this rate: a revision bills its difference at it too.
            if old[2] not in rates:
                rates[old[2]] = ModelRate.objects.get(pk=old[2])
            resolution: Resolution | None = Resolution(rates[old[2]], "invoiced")
        else:
            resolution = book.resolve(provider, values["model"], day)
        fields = _event_fields(provider, client_id, day, values, resolution, now=now)
        if fields["pricing_status"] != "priced":
            result.unpriced += 1
        if old is None:
            to_create.append(
                {
                    **fields,
                    "client_id": client_id,
                    "event_id": event_id,
                    "provider": provider,
                    "model": values["model"],
                    "occurred_at": booked_at(day),
                }
            )
        elif (old[1], old[2]) == (fields["fingerprint"], fields["rate_id"]):
            result.unchanged += 1
            continue
        else:
            to_update.append(UsageEvent(pk=old[0], **fields))
        touched.add(client_id)
    # What is left was in the re-synced day and is no longer in the report.
    gone = [(pk, client_id) for (client_id, _), (pk, _, _) in existing.items()]
    gone = [(pk, client_id) for pk, client_id in gone if client_id not in posted]
    if gone:
        UsageEvent.objects.filter(pk__in=[pk for pk, _ in gone]).delete()
        touched.update(client_id for _, client_id in gone)
    if to_create:
        # Ingest's staged insert (COPY on PostgreSQL): Django's bulk_create spent ~0.9 ms
        # per event binding parameters in Python (profiled, 10,000 events).
        inserted = _insert_returning(to_create)
        if len(inserted) != len(to_create):
            raise ReportUsageError("an event id of the report was already taken")
    if to_update:
        UsageEvent.objects.bulk_update(
            to_update, [*_REVISED_FIELDS, *PRICING_FIELDS], batch_size=1000
        )
    result.created += len(to_create)
    result.updated += len(to_update)
    result.deleted += len(gone)
    # The agency-local day the events are booked on: the same calendar date.
    dirty_days_mark(((c, local_day(booked_at(day))) for c in sorted(touched)), now=now)
    result.client_ids.update(touched)


def _wanted_events(
    provider: str, day: date, owners: Owners
) -> dict[tuple[int, str], dict[str, Any]]:
    """The day's report rows of report-sourced clients, summed per event (a row identity
    that comes twice, say from two pages, is one event)."""
    wanted: dict[tuple[int, str], dict[str, Any]] = {}
    rows = ProviderReportRow.objects.filter(provider=provider, day=day).values(
        *IDENTITY, *COUNTS, *AMOUNTS
    )
    for row in rows.iterator(chunk_size=5000):
        client_id = owners.report_owner(row["api_key_id"], row["workspace_id"])
        if client_id is None:
            continue
        identity = tuple(row[name] for name in IDENTITY)
        key = (client_id, event_id_for(provider, day, identity))
        if key not in wanted:
            wanted[key] = {name: row[name] for name in IDENTITY}
        values = wanted[key]
        for name in COUNTS:
            values[name] = values.get(name, 0) + row[name]
        for name in AMOUNTS:
            if row[name] is not None:
                values[name] = values.get(name) or Decimal(0)
                values[name] += row[name]
            else:
                values.setdefault(name, None)
    return {
        key: values
        for key, values in wanted.items()
        if any(values[name] for name in COUNTS) or any(values[name] for name in AMOUNTS)
    }


def _posted_clients(client_ids: set[int], day: date) -> set[int]:
    """The report-sourced clients that have events of their own on this day (posted before
    their switch): the day stays counted by those events."""
    start, end = day_bounds(day)
    # Told apart by the metadata the report's events carry (an app may use any event id);
    # a report-sourced client's events are few (one per report row), so read in Python.
    events = UsageEvent.objects.filter(
        client_id__in=client_ids, occurred_at__gte=start, occurred_at__lt=end
    ).values_list("client_id", "metadata")
    return {
        client_id
        for client_id, metadata in events
        if not (isinstance(metadata, dict) and metadata.get("source") == SOURCE)
    }


def _event_fields(
    provider: str,
    client_id: int,
    day: date,
    values: dict[str, Any],
    resolution: Resolution | None,
    *,
    now: datetime,
) -> dict[str, Any]:
    """The columns of one report row's event that a revision may change."""
    usage_json = {
        **{name: values[name] for name in IDENTITY if name != "model"},
        **{name: values[name] for name in COUNTS},
    }
    normalized = report_usage(values)
    metadata = {
        "source": SOURCE,
        "report_day": day.isoformat(),
        "api_key_id": values["api_key_id"],
        "workspace_id": values["workspace_id"],
        "requests": values["requests"],
        # The provider's own figures, exact (fractional cents as decimal text).
        "provider_amount_cents": _text(values["amount_cents"]),
        "provider_list_amount_cents": _text(values["list_amount_cents"]),
    }
    fields: dict[str, Any] = {
        **usage_fields(normalized),
        **pricing_fields(normalized, resolution, now=now),
        "fingerprint": event_fingerprint(
            client_id=client_id,
            provider=provider,
            model=values["model"],
            usage={**usage_json, **{k: metadata[k] for k in metadata if k.startswith("provider_")}},
            occurred_at=booked_at(day),
            service_tier=normalized.service_tier,
        ),
        "usage": usage_json,
        "metadata": metadata,
        "received_at": now,
    }
    fields["pricing_status"] = str(fields["pricing_status"])
    return fields


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else format(amount.normalize(), "f")


# --- the rules of switching ------------------------------------------------------------------


def usage_source_switch_problem(client: Client, *, now: datetime | None = None) -> str | None:
    """Why ``client`` may not be switched to the provider report now, or None.

    A client that posted events this month (agency-local) is switched from the 1st of a
    month on, so that no month mixes both sources and no day is counted twice. (Days it
    posted events on are skipped by ``apply_report_rows`` anyway.)"""
    if client.pk is None:
        return None
    month = current_month(now)
    posted = (
        UsageEvent.objects.filter(client=client, occurred_at__gte=local_moment(month))
        .exclude(event_id__startswith="report:", metadata__source=SOURCE)
        .order_by("-occurred_at")
        .values_list("occurred_at", flat=True)
    )
    last = posted.first()
    if last is None:
        return None
    return (
        f"{client.name} posted usage events this month (last on {local_day(last):%Y-%m-%d}). "
        "Switch it to the provider report on the 1st of next month, once it has stopped "
        "sending events, so that no day is counted from both sources."
    )
