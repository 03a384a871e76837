"""CSV exports: an invoice's lines, and the raw events behind an invoice or a month.

Event exports stream, so a million events never sit in memory. On PostgreSQL the rows
come from ``COPY (SELECT …) TO STDOUT WITH (FORMAT csv)``, formatted by the database
(``event_csv``); elsewhere from ``.iterator(chunk_size=…)`` through ``csv.writer``
(``event_rows``). Both give the same bytes (a test compares them): the same columns,
timestamps as ``isoformat()`` in UTC, costs as exact decimals without trailing zeros,
never via float, ``\r\n`` line ends.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connections
from django.db.models import (
    Case,
    DecimalField,
    ExpressionWrapper,
    F,
    Func,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import NullIf

from agency.calendar import day_bounds, local_day
from agency.money import ZERO, apply_markup
from billing.models import DailyRollup, Invoice, InvoiceStatus
from tracking.buckets import Reach, token_columns
from tracking.models import UsageEvent

CHUNK_SIZE = 5000
# COPY rows gathered into one streamed piece: few, large writes, memory flat.
COPY_BUFFER_BYTES = 256 * 1024


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


def event_csv(
    events: QuerySet[UsageEvent],
    *,
    client_id: int,
    days: tuple[date, date],
    show_cost: bool,
    show_billed: bool = True,
) -> Iterator[str | bytes]:
    """The events CSV, streamed: header then one line per event, the bytes of
    ``csv_lines(event_rows(…))``. On PostgreSQL the rows come from ``COPY … TO STDOUT``
    (the database formats them; Python only joins them into large pieces)."""
    if connections[events.db].vendor != "postgresql":
        yield from csv_lines(
            event_rows(
                events,
                client_id=client_id,
                days=days,
                show_cost=show_cost,
                show_billed=show_billed,
            )
        )
        return
    markups = _markups(client_id, days)
    header = [c.replace("project__name", "project") for c in EVENT_COLUMNS[:-1]]
    if show_cost:
        header += ["cost_usd", "markup_pct"]
    yield from csv_lines([[*header, *(["billed_usd"] if show_billed else [])]])
    sql, params = _copy_select(events, markups, show_cost=show_cost, show_billed=show_billed)
    connection = connections[events.db]
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy,
    ):
        buffer: list[bytes] = []
        size = 0
        # The server sends one message per row, each ending in "\n" (a newline inside
        # a quoted value is never at a message's end): csv.writer ends rows in "\r\n".
        for row in copy:
            line = bytes(row[:-1]) + b"\r\n"
            buffer.append(line)
            size += len(line)
            if size >= COPY_BUFFER_BYTES:
                yield b"".join(buffer)
                buffer, size = [], 0
        if buffer:
            yield b"".join(buffer)


def _utc_iso(column: str) -> Func:
    """``datetime.astimezone(UTC).isoformat()`` in SQL: microseconds only when not 0."""
    return Func(
        F(column),
        template=(
            "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
            "CASE WHEN date_trunc('second', %(expressions)s) = %(expressions)s THEN '' "
            "ELSE to_char(%(expressions)s AT TIME ZONE 'UTC', '.US') END || '+00:00'"
        ),
    )


def _markup_spans(markups: dict[date, Decimal]) -> list[tuple[datetime, datetime, Decimal]]:
    """Runs of consecutive local days with the same markup, as [start, end) instants: a
    month at one markup is one range test per row, not one per day."""
    spans: list[tuple[date, date, Decimal]] = []
    for day, pct in sorted(markups.items()):
        if spans and spans[-1][1] == day and spans[-1][2] == pct:
            spans[-1] = (spans[-1][0], day + timedelta(days=1), pct)
        else:
            spans.append((day, day + timedelta(days=1), pct))
    return [(day_bounds(first)[0], day_bounds(after)[0], pct) for first, after, pct in spans]


def _copy_select(
    events: QuerySet[UsageEvent],
    markups: dict[date, Decimal],
    *,
    show_cost: bool,
    show_billed: bool,
) -> tuple[str, list[Any]]:
    """The SELECT whose CSV is ``event_rows``'s, line for line: text as is ('' sent as
    NULL, which COPY writes unquoted and empty as csv.writer does), costs through
    ``trim_scale`` (what ``Decimal.normalize()`` prints), the day's markup from the
    rollups (a CASE over runs of local days with one markup), billed = cost × (100 + markup)
    × 0.01: PostgreSQL multiplies exactly, as ``apply_markup`` does within Decimal's 28
    digits (an event's cost has ≤ 18 significant digits, a markup ≤ 7)."""
    texts = {"project__name", "feature", "end_user", "team", "provider", "model"}
    texts |= {"service_tier", "event_id", "pricing_status"}
    columns: dict[str, Any] = {}
    for name in EVENT_COLUMNS[:-1]:
        if name in ("occurred_at", "received_at"):
            columns[f"c_{name}"] = _utc_iso(name)
        elif name in texts:
            columns[f"c_{name}"] = NullIf(F(name), Value(""))
        else:
            columns[f"c_{name}"] = F(name)
    markup = Case(
        *(
            When(occurred_at__gte=start, occurred_at__lt=end, then=Value(pct))
            for start, end, pct in _markup_spans(markups)
        ),
        default=None,
        output_field=DecimalField(),
    )
    billed = Func(
        ExpressionWrapper(
            F("cost_usd") * (Value(100) + markup) * Value(Decimal("0.01")),
            output_field=DecimalField(),
        ),
        function="trim_scale",
        output_field=DecimalField(),
    )
    if show_cost:
        columns.update(
            c_cost=Func(F("cost_usd"), function="trim_scale", output_field=DecimalField()),
            c_markup=markup,
        )
    if show_billed:
        columns.update(c_billed=billed)
    query = events.order_by("occurred_at", "pk").annotate(**columns).values_list(*columns)
    sql, query_params = query.query.sql_with_params()
    return sql, list(query_params)
