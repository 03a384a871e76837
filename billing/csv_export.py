"""CSV exports: an invoice's lines, and the raw events behind an invoice or a month.

Event exports stream: rows come from ``.iterator(chunk_size=…)`` (a server-side cursor on
PostgreSQL) through a generator into a ``StreamingHttpResponse``, so a million events
never sit in memory. Money is written from Decimal as plain strings, never via float.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, date
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet

from agency.calendar import local_day
from agency.money import ZERO, apply_markup
from billing.models import DailyRollup, Invoice, InvoiceStatus
from tracking.buckets import Reach, token_columns
from tracking.models import UsageEvent

CHUNK_SIZE = 5000


class _Echo:
    """A file-like object whose write() returns the line: csv.writer into a generator."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    for row in rows:
        yield writer.writerow(row)


def money(value: Decimal | None) -> str:
    """A Decimal as plain text (no exponent, no float): '12.50'."""
    return "" if value is None else f"{value:f}"


def exact(value: Decimal | None) -> str:
    """A full-precision cost as plain text without trailing zeros ('0.0000125'): the same
    on PostgreSQL (NUMERIC(30, 15)) and SQLite (text). normalize() only drops zeros."""
    return "" if value is None else f"{value.normalize():f}"


def invoice_lines_rows(invoice: Invoice) -> Iterator[list[Any]]:
    """Header, one row per line, then the rows below the lines as the PDF prints them:
    subtotal, tax (whenever the invoice has a tax rate, even if it comes to $0.00), total,
    and once paid the payment and the amount due; last the client's note, if any.

    The same document for everyone who may read it (it is the client's invoice): token
    counts and the unrounded billed figure only with pricing details on, raw cost and
    markup only when the invoice shows markup too; otherwise amounts per line only.
    """
    details = invoice.show_pricing_details
    show = invoice.show_markup and details
    quantities = token_columns(Reach.INVOICE) if details else ()
    header = [
        "invoice", "line", "kind", "usage_month", "description", "provider", "model",
        "project", "calls", *quantities,
    ]  # fmt: skip
    if show:
        header += ["raw_cost_usd", "markup_pct"]
    if details:
        header += ["billed_usd"]
    header += ["amount_usd"]
    yield header
    number = invoice.number or f"draft-{invoice.pk}"
    for line in invoice.lines.order_by("position"):
        row = [
            number, line.position, line.kind, f"{line.usage_month:%Y-%m}", line.description,
            line.provider, line.model, line.project, line.events,
            *(getattr(line, name) for name in quantities),
        ]  # fmt: skip
        if show:
            row += [exact(line.raw_cost_usd), money(line.markup_pct)]
        if details:
            row += [exact(line.billed_usd)]
        yield [*row, money(line.amount_usd)]
    width = len(header)

    def summary(kind: str, amount: Decimal | None, note: str = "") -> list[Any]:
        return [number, "", kind, "", note, *[""] * (width - 6), money(amount)]

    yield summary("subtotal", invoice.subtotal_usd)
    if invoice.tax_rate_pct > 0:
        rate = f"{invoice.tax_rate_pct.normalize():f}"
        yield summary("tax", invoice.tax_usd, f"{invoice.tax_label} ({rate} %)")
    yield summary("total", invoice.total_usd)
    if invoice.status == InvoiceStatus.PAID:
        paid_on = invoice.paid_day
        yield summary("paid", -invoice.total_usd, f"Paid on {paid_on:%Y-%m-%d}" if paid_on else "")
        yield summary("amount_due", ZERO)
    if invoice.invoice_note:
        yield summary("note", None, invoice.invoice_note)


def _markups(client_id: int, days: tuple[date, date]) -> dict[date, Decimal]:
    """The markup of each day, as the rollups (and so the invoices) applied it."""
    rows = DailyRollup.objects.filter(client_id=client_id, day__gte=days[0], day__lte=days[1])
    return dict(rows.values_list("day", "markup_pct").distinct())


EVENT_COLUMNS = (
    "event_id", "occurred_at", "received_at", "project__name", "feature", "end_user", "team",
    "provider", "model", "service_tier", *token_columns(Reach.ROLLUP), "pricing_status",
    "cost_usd",
)  # fmt: skip


def event_rows(
    events: QuerySet[UsageEvent],
    *,
    client_id: int,
    days: tuple[date, date],
    show_cost: bool,
    show_billed: bool = True,
) -> Iterator[list[Any]]:
    """Header then one row per event, streamed. ``billed_usd`` is the event's raw cost
    under its day's markup, unrounded, only when ``show_billed`` (one call's tokens and
    price give away its unit prices); ``cost_usd`` (raw) only when ``show_cost``."""
    markups = _markups(client_id, days)
    header = [c.replace("project__name", "project") for c in EVENT_COLUMNS[:-1]]
    if show_cost:
        header += ["cost_usd", "markup_pct"]
    yield [*header, *(["billed_usd"] if show_billed else [])]
    for values in events.values_list(*EVENT_COLUMNS).iterator(chunk_size=CHUNK_SIZE):
        row = list(values)
        cost = row.pop()
        row[1] = row[1].astimezone(UTC).isoformat()
        row[2] = row[2].astimezone(UTC).isoformat()
        row[3] = row[3] or ""
        markup = markups.get(local_day(values[1]))
        billed = apply_markup(cost, markup) if cost is not None and markup is not None else None
        if show_cost:
            row += [exact(cost), money(markup)]
        yield [*row, exact(billed)] if show_billed else row
