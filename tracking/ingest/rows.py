"""Step 2: from valid events to ``UsageEvent`` rows: whose they are, when, what they cost.

An event can still be refused here: it names a client the key may not post for, repeats
an id of the same request, falls outside the time window, has a usage object that cannot
be priced as sent, or carries a string longer than the column it would be stored in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
from django.conf import settings
from django.db import models

from agency.calendar import local_day, month_range, month_start, shift_month
from agency.models import Client, UsageSource
from tracking.ingest.results import EventOutcome
from tracking.ingest.validate import ValidEvent
from tracking.models import PricingStatus, UsageEvent
from tracking.partitions import months_archived
from tracking.pricing import NormalizedUsage, UsageError, normalize_usage
from tracking.rates import RateBook, Resolution
from tracking.schema import Event
from tracking.services import event_fingerprint, pricing_fields, usage_fields

FUTURE_TOLERANCE = timedelta(minutes=5)
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
# The fingerprint of an event sent without occurred_at: its content as sent has no time,
# so a retry of it (stamped with a later "now") is still the same event, not a conflict.
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Row:
    index: int
    values: dict[str, Any]
    project: str | None


def bucket_columns(
    usage: NormalizedUsage, resolution: Resolution | None, *, now: datetime
) -> dict[str, Any]:
    """The token and cost columns of a row: the one place ingest names them, so that it
    can be pointed at a single declaration of the usage buckets."""
    return {**usage_fields(usage), **pricing_fields(usage, resolution, now=now)}


def _text_columns() -> list[tuple[str, int, str]]:
    """(column, length, the event field it comes from) for each varchar of a row whose
    value the ``Event`` declaration does not already hold within the column's length
    (tests/tracking/test_schema.py proves the declared ones fit)."""
    sources = {column: name for name, column in TAG_FIELDS.items()}
    sources.update(event_id="id", speed="usage.speed", inference_geo="usage.inference_geo")
    sources["service_tier"] = "usage.service_tier"  # an event's own is declared to fit
    declared = msgspec.json.schema(Event)["$defs"]["Event"]["properties"]

    def bounded(field: str, limit: int) -> bool:
        options = declared[field].get("anyOf", [declared[field]]) if field in declared else []
        lengths = [
            max(map(len, o["enum"])) if "enum" in o else o.get("maxLength")
            for o in options
            if o.get("type") == "string" or "enum" in o
        ]
        return bool(lengths) and all(n is not None and n <= limit for n in lengths)

    return [
        (f.attname, f.max_length, source)
        for f in UsageEvent._meta.concrete_fields
        if isinstance(f, models.CharField) and f.max_length and f.attname not in COMPUTED_TEXT
        for source in [sources.get(f.attname, f.attname)]
        if not bounded(source, f.max_length)
    ]


# Text columns ingest fills itself, never from the event as sent: a SHA-256 hex digest and
# a pricing status (tests/tracking/test_schema.py checks that they fit).
COMPUTED_TEXT = {"fingerprint": 64, "pricing_status": max(map(len, PricingStatus.values))}


_TEXT_COLUMNS = _text_columns()


def report_sourced_message(client: Client) -> str:
    """Why a report-sourced client's events are refused: one meter per client."""
    return (
        f"client {client.slug!r} is metered from the provider's usage report; its events "
        "are refused so that no usage is counted twice"
    )


def events_assign_clients(
    events: list[ValidEvent], key_client: Client | None, outcomes: list[EventOutcome]
) -> list[tuple[ValidEvent, Client]]:
    """Each event with the client it is for; those it may not post for, that are for a
    client metered from the provider report, or that repeat an id of the same request,
    are rejected."""
    slugs = {e.event.client for e in events if e.event.client and key_client is None}
    by_slug = {c.slug: c for c in Client.objects.filter(slug__in=slugs)} if slugs else {}
    owned: list[tuple[ValidEvent, Client]] = []
    first_index: dict[tuple[int, str], int] = {}
    for valid in events:
        slug, outcome = valid.event.client, outcomes[valid.index]
        if key_client is not None and slug is not None and slug != key_client.slug:
            message = "this key may only post for its own client"
            outcome.reject(f"events[{valid.index}].client", message, "forbidden_client")
            continue
        if key_client is None and not slug:
            message = "is required with an agency-wide key"
            outcome.reject(f"events[{valid.index}].client", message, "required")
            continue
        client = key_client or by_slug.get(slug or "")
        if client is None:
            outcome.reject(f"events[{valid.index}].client", "no such client", "unknown_client")
            continue
        if client.usage_source == UsageSource.PROVIDER_REPORT:
            outcome.reject(
                f"events[{valid.index}].client",
                report_sourced_message(client),
                "report_sourced_client",
            )
            continue
        first = first_index.setdefault((client.pk, valid.event.id), valid.index)
        if first != valid.index:
            message = f"repeats the id of events[{first}] in this request"
            outcome.reject(f"events[{valid.index}].id", message, "duplicate_id")
            continue
        owned.append((valid, client))
    return owned


def rows_build(
    owned: list[tuple[ValidEvent, Client]],
    outcomes: list[EventOutcome],
    *,
    backfill_allowed: bool,
    now: datetime,
    book: RateBook,
) -> list[Row]:
    """Price each event at the rate of its day into a row; refuse what cannot be stored."""
    oldest = now - timedelta(days=settings.INGEST_BACKFILL_DAYS)
    archive = _Archive(now)
    rows = []
    for valid, client in owned:
        event, outcome = valid.event, outcomes[valid.index]
        try:
            occurred_at = _in_window(valid, oldest, now, backfill_allowed=backfill_allowed)
            archive.check(occurred_at)
            usage = normalize_usage(event.provider, event.usage, service_tier=event.service_tier)
            resolution = book.resolve(event.provider, event.model, occurred_at)
            values = _row_values(valid, client, usage, resolution, occurred_at, now)
            _fits_columns(values)
        except (UsageError, _Refused) as exc:
            code = exc.code if isinstance(exc, _Refused) else "invalid"
            outcome.reject(f"events[{valid.index}].{exc.field}", exc.message, code)
            continue
        rows.append(Row(valid.index, values, event.project or None))
        _priced(outcome, values["cost_usd"], event, resolution, usage)
    return rows


class _Refused(Exception):
    def __init__(self, field: str, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.field, self.message, self.code = field, message, code


class _Archive:
    """Refuses events of archived months (tracking.partitions): their rows are detached,
    so a new one could never be rolled up or invoiced. Only months before the previous
    one can be archived, so the archived months are read (once) only for such events."""

    def __init__(self, now: datetime) -> None:
        self.recent = month_range(shift_month(local_day(now), -1))[0]
        self.months: set[date] | None = None

    def check(self, occurred_at: datetime) -> None:
        if occurred_at >= self.recent:
            return
        if self.months is None:
            self.months = months_archived()
        month = month_start(local_day(occurred_at))
        if month in self.months:
            raise _Refused(
                "occurred_at",
                f"falls in {month:%Y-%m}, whose events are archived; nothing more can be "
                "recorded for that month",
                "archived_month",
            )


def _in_window(
    valid: ValidEvent, oldest: datetime, now: datetime, *, backfill_allowed: bool
) -> datetime:
    occurred_at = valid.occurred_at or now
    if occurred_at > now + FUTURE_TOLERANCE:
        raise _Refused("occurred_at", "is more than 5 minutes in the future", "in_future")
    if occurred_at < oldest and not (backfill_allowed and valid.event.backfill):
        raise _Refused(
            "occurred_at",
            f"is older than {settings.INGEST_BACKFILL_DAYS} days; an agency-wide key may "
            'send it with "backfill": true',
            "too_old",
        )
    return occurred_at


def _row_values(
    valid: ValidEvent,
    client: Client,
    usage: NormalizedUsage,
    resolution: Resolution | None,
    occurred_at: datetime,
    now: datetime,
) -> dict[str, Any]:
    event = valid.event
    values = bucket_columns(usage, resolution, now=now)
    values.update(
        client_id=client.pk,
        event_id=event.id,
        fingerprint=event_fingerprint(
            client_id=client.pk,
            provider=event.provider,
            model=event.model,
            usage=event.usage,
            occurred_at=valid.occurred_at or _NO_TIME,
            service_tier=event.service_tier or "",
            usage_text=valid.usage_text,
        ),
        provider=event.provider,
        model=event.model,
        occurred_at=occurred_at,
        received_at=now,
        # Its JSON text, encoded once in validation (the insert writes bytes as they are).
        usage=valid.usage_text,
        metadata=event.metadata or {},
        status_code=event.status_code,
        latency_ms=event.latency_ms,
    )
    values["pricing_status"] = str(values["pricing_status"])
    for name, column in TAG_FIELDS.items():
        tag = getattr(event, name)
        if tag and name != "project":
            values[column] = tag
    return values


def _fits_columns(values: dict[str, Any]) -> None:
    """PostgreSQL refuses a longer string for the whole batch; refuse it for this event."""
    for column, limit, source in _TEXT_COLUMNS:
        value = values.get(column)
        if value is not None and len(value) > limit:
            raise _Refused(source, f"must be at most {limit} characters")


def _priced(
    outcome: EventOutcome,
    cost_usd: Any,
    event: Any,
    resolution: Resolution | None,
    usage: NormalizedUsage,
) -> None:
    outcome.cost_usd = cost_usd
    outcome.priced = resolution is not None
    if resolution is None:
        outcome.warnings.append(
            {
                "code": "unpriced_model",
                "message": f"no rate for {event.provider} model {event.model!r}; stored "
                "unpriced and priced once a rate is added",
            }
        )
    if usage.needs_review:
        outcome.warnings.append(
            {"code": "needs_review", "message": "; ".join(usage.review_reasons)}
        )
