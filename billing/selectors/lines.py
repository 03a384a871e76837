"""Invoice lines from the rollups: the one rule behind every billed figure.

The invoice service saves these lines; the dashboards, the budget API and the overview
CSV show them before an invoice is issued (an *estimate*: what the invoice would say
today) and read the issued invoice's own lines after. One rule computes every line, for
the invoiced month and for late usage of earlier months alike:

    line amount = round_money(current rollup billed for the key)
                  − amounts other live invoices already billed for that key

where a key is (usage month, provider, model[, project]). For the invoiced month nothing
else has billed it, so a line is simply its rounded billed amount. For an earlier, already
invoiced month the result is the late usage, as an adjustment line priced at that month's
rates and markup (the rollup rows carry both). Across all invoices the amounts billed for a
key always add up to the rounded billed amount of the key's events: nothing is billed
twice and nothing is lost, to the cent. A month's billed figure is the sum of its rounded
lines (never the rounded sum of its events).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from django.db.models import Min, Q, Sum
from django.db.models.functions import TruncMonth

from agency.calendar import next_month
from agency.db import ExactSum
from agency.models import Client
from agency.money import ZERO, round_money
from billing.models import (
    DailyRollup,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceStatus,
    ModelDailyRollup,
)
from tracking.buckets import Reach, cost_columns, token_columns
from tracking.models import ModelRate

# What a line bills per bucket; its raw cost (the rollups' cost_usd) is raw_cost_usd.
TOKEN_FIELDS = token_columns(Reach.INVOICE)
COST_FIELDS = cost_columns(Reach.INVOICE)
# Invoices that bill something: everything but void ones.
LIVE_STATUSES = (
    InvoiceStatus.DRAFT, InvoiceStatus.FINALIZED, InvoiceStatus.SENT, InvoiceStatus.PAID,
)  # fmt: skip
ISSUED_STATUSES = (InvoiceStatus.FINALIZED, InvoiceStatus.SENT, InvoiceStatus.PAID)


Key = tuple[date, str, str, str]  # usage month, provider, model, project ('' when not split)


@dataclass
class Figures:
    """Summed quantities and unrounded money of one line key."""

    events: int = 0
    unpriced_events: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_FIELDS, 0))
    costs: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(COST_FIELDS, ZERO))
    raw_cost_usd: Decimal = ZERO
    billed_usd: Decimal = ZERO
    amount_usd: Decimal = ZERO  # already rounded amounts (billed side only)
    markups: set[Decimal] = field(default_factory=set)


@dataclass(slots=True)
class LineSums:
    """What a bill's line shows of one key, summed from the rollups: calls and
    unrounded money (no tokens, costs per bucket or markups: ``Figures`` carries those
    for the invoice). ``untagged_events`` counts the calls without a project."""

    events: int = 0
    unpriced_events: int = 0
    untagged_events: int = 0
    raw_cost_usd: Decimal = ZERO
    billed_usd: Decimal = ZERO

    def add(self, part: LineSums) -> None:
        self.events += part.events
        self.unpriced_events += part.unpriced_events
        self.untagged_events += part.untagged_events
        self.raw_cost_usd += part.raw_cost_usd
        self.billed_usd += part.billed_usd


# --- reading figures ---------------------------------------------------------------------


def _rollup_figures(client: Client, *, start: date, end: date) -> dict[Key, Figures]:
    """Rollup sums per key for the months in [start, end)."""
    group = ["usage_month", "provider", "model"]
    if client.invoice_split_by_project:
        group.append("project")
    rows = (
        DailyRollup.objects.filter(client=client, day__gte=start, day__lt=end)
        .annotate(usage_month=TruncMonth("day"))
        .values(*group, "markup_pct")
        .annotate(
            n_events=Sum("events"),
            n_unpriced=Sum("unpriced_events"),
            **{f"t_{name}": Sum(name) for name in TOKEN_FIELDS},
            **{f"c_{name}": ExactSum(name) for name in COST_FIELDS},
            raw=ExactSum("cost_usd"),
            billed=ExactSum("billed_usd"),
        )
    )
    figures: dict[Key, Figures] = defaultdict(Figures)
    for row in rows:
        month = row["usage_month"]
        month = month.date() if isinstance(month, datetime) else month
        key = (month, row["provider"], row["model"], row.get("project", ""))
        fig = figures[key]
        fig.events += row["n_events"] or 0
        fig.unpriced_events += row["n_unpriced"] or 0
        for name in TOKEN_FIELDS:
            fig.tokens[name] += row[f"t_{name}"] or 0
        for name in COST_FIELDS:
            fig.costs[name] += row[f"c_{name}"] or ZERO
        fig.raw_cost_usd += row["raw"] or ZERO
        fig.billed_usd += row["billed"] or ZERO
        fig.markups.add(row["markup_pct"])
    return figures


def _billed_figures(
    client: Client, *, start: date, end: date, exclude_invoice_id: int | None
) -> dict[Key, Figures]:
    """What other live invoices already bill per key, for usage months in [start, end)."""
    group = ["usage_month", "provider", "model"]
    if client.invoice_split_by_project:
        group.append("project")
    lines = InvoiceLine.objects.filter(
        invoice__client=client,
        invoice__status__in=LIVE_STATUSES,
        usage_month__gte=start,
        usage_month__lt=end,
    )
    if exclude_invoice_id is not None:
        lines = lines.exclude(invoice_id=exclude_invoice_id)
    rows = lines.values(*group).annotate(
        n_events=Sum("events"),
        n_unpriced=Sum("unpriced_events"),
        **{f"t_{name}": Sum(name) for name in TOKEN_FIELDS},
        **{f"c_{name}": ExactSum(name) for name in COST_FIELDS},
        raw=ExactSum("raw_cost_usd"),
        billed=ExactSum("billed_usd"),
        amount=ExactSum("amount_usd"),
    )
    figures: dict[Key, Figures] = {}
    for row in rows:
        fig = Figures(
            events=row["n_events"] or 0,
            unpriced_events=row["n_unpriced"] or 0,
            tokens={name: row[f"t_{name}"] or 0 for name in TOKEN_FIELDS},
            costs={name: row[f"c_{name}"] or ZERO for name in COST_FIELDS},
            raw_cost_usd=row["raw"] or ZERO,
            billed_usd=row["billed"] or ZERO,
            amount_usd=row["amount"] or ZERO,
        )
        figures[(row["usage_month"], row["provider"], row["model"], row.get("project", ""))] = fig
    return figures


def _adjustable_start(client: Client, month: date) -> date:
    """First month whose late usage may be adjusted on this month's invoice: the client's
    first issued monthly invoice (usage from before invoicing began is history, not debt)."""
    first = (
        Invoice.objects.filter(
            client=client, kind=InvoiceKind.MONTHLY, status__in=ISSUED_STATUSES, month__lt=month
        )
        .aggregate(first=Min("month"))
        .get("first")
    )
    return first or month


def _display_names() -> dict[tuple[str, str], str]:
    names: dict[tuple[str, str], str] = {}
    for provider, model, display in ModelRate.objects.order_by("effective_from").values_list(
        "provider", "model", "display_name"
    ):
        if display:
            names[(provider, model)] = display
    return names


def _line(
    key: Key,
    current: Figures,
    billed: Figures | None,
    *,
    invoice_month: date,
    split: bool,
    names: dict[tuple[str, str], str],
) -> InvoiceLine | None:
    """The line that bills what ``current`` holds beyond ``billed``; None if nothing."""
    month, provider, model, project = key
    billed = billed or Figures()
    amount = round_money(current.billed_usd) - billed.amount_usd
    tokens = {name: current.tokens[name] - billed.tokens[name] for name in TOKEN_FIELDS}
    events = current.events - billed.events
    if amount == ZERO and not any(tokens.values()) and events == 0:
        return None
    label = names.get((provider, model), model)
    markup = next(iter(current.markups)) if len(current.markups) == 1 else None
    return InvoiceLine(
        kind=InvoiceLineKind.USAGE if month == invoice_month else InvoiceLineKind.ADJUSTMENT,
        usage_month=month,
        provider=provider,
        model=model,
        project=project,
        description=f"{label} — {project or 'No project'}" if split else label,
        events=events,
        unpriced_events=current.unpriced_events - billed.unpriced_events,
        **tokens,
        **{name: current.costs[name] - billed.costs[name] for name in COST_FIELDS},
        raw_cost_usd=current.raw_cost_usd - billed.raw_cost_usd,
        markup_pct=markup,
        billed_usd=current.billed_usd - billed.billed_usd,
        amount_usd=amount,
    )


def invoice_lines_compute(
    *, client: Client, month: date, exclude_invoice_id: int | None = None
) -> list[InvoiceLine]:
    """Unsaved lines of ``client``'s invoice for ``month``: its own usage, then adjustments
    for late usage of earlier invoiced months that have no draft (or, once voided, no
    correction yet) of their own."""
    start = _adjustable_start(client, month)
    end = next_month(month)
    current = _rollup_figures(client, start=start, end=end)
    billed = _billed_figures(client, start=start, end=end, exclude_invoice_id=exclude_invoice_id)
    # An earlier month with a draft of its own absorbs its late usage there. So does a
    # month whose invoice was voided and awaits its correction: without this, the next
    # month's invoice would bill the whole voided month as "late usage".
    earlier = Invoice.objects.filter(client=client, kind=InvoiceKind.MONTHLY, month__lt=month)
    drafts = set(earlier.filter(status=InvoiceStatus.DRAFT).values_list("month", flat=True))
    voided = set(earlier.filter(status=InvoiceStatus.VOID).values_list("month", flat=True))
    live = set(earlier.filter(status__in=LIVE_STATUSES).values_list("month", flat=True))
    elsewhere = drafts | (voided - live)
    names = _display_names()
    lines = []
    for key in sorted(set(current) | set(billed)):
        if key[0] in elsewhere:
            continue
        line = _line(
            key,
            current.get(key, Figures()),
            billed.get(key),
            invoice_month=month,
            split=client.invoice_split_by_project,
            names=names,
        )
        if line is not None:
            lines.append(line)
    # Usage first, then adjustments by month; each by description.
    lines.sort(key=lambda ln: (ln.kind != InvoiceLineKind.USAGE, ln.usage_month, ln.description))
    for position, line in enumerate(lines, start=1):
        line.position = position
    return lines


# --- a month's billed figure, as every screen shows it -----------------------------------

ESTIMATE = "estimate"
INVOICE = "invoice"


@dataclass
class BillLine:
    """One displayed row of a month: money rounded per row, as the invoice rounds it."""

    provider: str
    model: str
    project: str
    label: str
    events: int
    unpriced_events: int
    raw_usd: Decimal  # round_money of the line's raw cost
    billed_usd: Decimal  # the line amount (already rounded)

    @property
    def margin_usd(self) -> Decimal:
        # Billed minus raw as displayed, so raw + margin = billed on every row.
        return self.billed_usd - self.raw_usd

    @property
    def priced_events(self) -> int:
        return self.events - self.unpriced_events

    @property
    def not_priced(self) -> bool:
        """Every call of the line lacks a rate: its amount is unknown, not $0."""
        return self.events > 0 and self.unpriced_events == self.events


@dataclass
class MonthBill:
    """A client's month as the invoice says it (``basis`` "invoice", once one is issued)
    or would say it today ("estimate"). Totals are sums of the displayed rows."""

    client_id: int
    month: date
    basis: str
    invoice: Invoice | None
    lines: list[BillLine]

    @property
    def billed_usd(self) -> Decimal:
        return sum((line.billed_usd for line in self.lines), ZERO)

    @property
    def raw_usd(self) -> Decimal:
        return sum((line.raw_usd for line in self.lines), ZERO)

    @property
    def margin_usd(self) -> Decimal:
        return self.billed_usd - self.raw_usd

    @property
    def events(self) -> int:
        return sum(line.events for line in self.lines)

    @property
    def priced_events(self) -> int:
        """Calls with a price: the total under a table that leaves out the calls not
        priced (a client's view without pricing details)."""
        return self.events - self.unpriced_events

    @property
    def unpriced_events(self) -> int:
        """Calls without a rate: in no figure yet (shown as "not priced", never $0)."""
        return sum(line.unpriced_events for line in self.lines)

    @property
    def is_estimate(self) -> bool:
        return self.basis == ESTIMATE

    def not_priced_models(self) -> list[tuple[str, int]]:
        """(model, calls) of the models with calls that have no rate, most calls first."""
        calls: dict[str, int] = defaultdict(int)
        for line in self.lines:
            if line.unpriced_events:
                calls[line.model] += line.unpriced_events
        return sorted(calls.items(), key=lambda item: (-item[1], item[0]))


def _bill_line(line: InvoiceLine) -> BillLine:
    return BillLine(
        provider=line.provider,
        model=line.model,
        project=line.project,
        label=line.description,
        events=line.events,
        unpriced_events=line.unpriced_events,
        raw_usd=round_money(line.raw_cost_usd),
        billed_usd=line.amount_usd,
    )


_IN_LIST_MOST = 20


def _issued_lines(clients: list[Client], month: date) -> dict[int, tuple[Invoice, list[BillLine]]]:
    """The issued invoice of each client's month, with the lines billing that month's
    usage (its own, and adjustments for it on later issued invoices)."""
    ids = {c.pk for c in clients}
    issued = Invoice.objects.filter(
        month=month, kind=InvoiceKind.MONTHLY, status__in=ISSUED_STATUSES
    )
    if len(ids) <= _IN_LIST_MOST:
        issued = issued.filter(client_id__in=ids)
    # Many clients (the overview): the month's issued invoices (one per client at most,
    # by the (status, month) index) are kept here, not matched against hundreds of
    # literals in the SQL (which cost more to build than the query took).
    invoices = {inv.client_id: inv for inv in issued if inv.client_id in ids}
    if not invoices:
        return {}
    lines: dict[int, list[BillLine]] = defaultdict(list)
    for line in (
        InvoiceLine.objects.filter(
            invoice__client_id__in=list(invoices),
            invoice__status__in=ISSUED_STATUSES,
            usage_month=month,
        )
        .select_related("invoice")
        .order_by("invoice__month", "position")
    ):
        lines[line.invoice.client_id].append(_bill_line(line))
    return {client_id: (inv, lines[client_id]) for client_id, inv in invoices.items()}


def _estimate_line(
    key: Key, sums: LineSums, *, split: bool, names: dict[tuple[str, str], str]
) -> BillLine | None:
    """The displayed row of an estimated line: what ``_bill_line(_line(...))`` gives for
    a key nothing else has billed yet, without building an ``InvoiceLine`` (the overview
    builds ~2,000 of these per request). ``_line``'s "nothing to bill" test also looks at
    tokens; rollup sums with no calls have no tokens either, so calls and amount decide.
    A test compares the two paths on the same sums."""
    _month, provider, model, project = key
    amount = round_money(sums.billed_usd)
    if amount == ZERO and sums.events == 0:
        return None
    label = names.get((provider, model), model)
    return BillLine(
        provider=provider,
        model=model,
        project=project,
        label=f"{label} — {project or 'No project'}" if split else label,
        events=sums.events,
        unpriced_events=sums.unpriced_events,
        raw_usd=round_money(sums.raw_cost_usd),
        billed_usd=amount,
    )


def issued_bills(clients: Iterable[Client], month: date) -> dict[int, MonthBill]:
    """The bills of the clients whose ``month`` has an issued invoice (its lines)."""
    return {
        client_id: MonthBill(client_id, month, INVOICE, invoice, lines)
        for client_id, (invoice, lines) in _issued_lines(list(clients), month).items()
    }


def month_bills(
    clients: Iterable[Client],
    month: date,
    *,
    figures: Mapping[int, Mapping[Key, LineSums]] | None = None,
    labels: bool = True,
    issued: bool = True,
) -> dict[int, MonthBill]:
    """Each client's bill for ``month``: the issued invoice's lines, or else the lines
    its invoice would have today (the month's own usage, by the invoice's rule).

    ``figures`` (rollup sums per client and line key, as ``month_line_sums`` returns
    them) lets a caller that already summed the month (the overview) skip the query;
    without ``labels`` estimated lines are labelled by model id (no rate-table query);
    without ``issued`` every bill is the estimate (the overview keeps the estimates and
    reads issued invoices apart, ``issued_bills``).
    """
    client_list = list(clients)
    issued_lines = _issued_lines(client_list, month) if issued else {}
    pending = [c for c in client_list if c.pk not in issued_lines]
    if figures is None:
        figures = month_line_sums(pending, month)
    names = _display_names() if pending and labels else {}
    bills: dict[int, MonthBill] = {}
    for client in client_list:
        if client.pk in issued_lines:
            invoice, lines = issued_lines[client.pk]
            bills[client.pk] = MonthBill(client.pk, month, INVOICE, invoice, lines)
            continue
        split = client.invoice_split_by_project
        keyed = _split(split, figures.get(client.pk, {}))
        estimate = []
        for key in sorted(keyed):
            line = _estimate_line(key, keyed[key], split=split, names=names)
            if line is not None:
                estimate.append(line)
        estimate.sort(key=lambda ln: ln.label)
        bills[client.pk] = MonthBill(client.pk, month, ESTIMATE, None, estimate)
    return bills


def month_bill(client: Client, month: date) -> MonthBill:
    return month_bills([client], month)[client.pk]


def _split(split: bool, figures: Mapping[Key, LineSums]) -> Mapping[Key, LineSums]:
    """Merge keys by project unless the client's invoices are split by project (keys
    from ``line_rows`` are merged already: then they are returned as they are)."""
    if split or all(project == "" for _m, _p, _model, project in figures):
        return figures
    merged: dict[Key, LineSums] = {}
    for (month, provider, model, _project), sums in figures.items():
        key = (month, provider, model, "")
        total = merged.get(key)
        if total is None:
            merged[key] = LineSums(
                sums.events,
                sums.unpriced_events,
                sums.untagged_events,
                sums.raw_cost_usd,
                sums.billed_usd,
            )
        else:
            total.add(sums)
    return merged


def figures_add(total: Figures, part: Figures) -> None:
    total.events += part.events
    total.unpriced_events += part.unpriced_events
    for name in TOKEN_FIELDS:
        total.tokens[name] += part.tokens[name]
    for name in COST_FIELDS:
        total.costs[name] += part.costs[name]
    total.raw_cost_usd += part.raw_cost_usd
    total.billed_usd += part.billed_usd
    total.markups |= part.markups


LineRow = tuple[int, str, str, str, int, int, int, Decimal, Decimal]
_WHOLE_COLUMNS = (
    "client_id", "provider", "model", "n_events", "n_unpriced", "n_untagged", "raw", "billed",
)  # fmt: skip
_SPLIT_COLUMNS = (
    "client_id", "provider", "model", "project", "n_events", "n_unpriced", "n_untagged",
    "raw", "billed",
)  # fmt: skip
_LINE_SUMS = {
    "n_events": Sum("events"),
    "n_unpriced": Sum("unpriced_events"),
    "raw": ExactSum("cost_usd"),
    "billed": ExactSum("billed_usd"),
}


def line_rows(clients: Iterable[Client], *, start: date, end: date) -> list[LineRow]:
    """Rollup sums per client and invoice-line key for the days [start, end), as plain
    tuples (client id, provider, model, project, calls, calls not priced, calls without a
    project, raw cost, billed).

    A client not invoiced by project has one line per provider and model: its sums come
    from ``ModelDailyRollup`` (the day's DailyRollup rows summed per model in the rollup
    job's transaction: ~8 rows per client and day instead of ~130). A client invoiced by
    project is read from ``DailyRollup``, grouped by project. Two grouped queries at
    most; NUMERIC sums are exact, so the figures are those of the stored daily rows.
    """
    client_list = list(clients)
    if not client_list or end <= start:
        return []
    whole = [c.pk for c in client_list if not c.invoice_split_by_project]
    split = [c.pk for c in client_list if c.invoice_split_by_project]
    rows: list[LineRow] = []
    if whole:
        grouped = (
            ModelDailyRollup.objects.filter(client_id__in=whole, day__gte=start, day__lt=end)
            .values("client_id", "provider", "model")
            .annotate(**_LINE_SUMS, n_untagged=Sum("untagged_events"))
            .order_by()
            .values_list(*_WHOLE_COLUMNS)
        )
        rows.extend(
            (c, p, m, "", n, u, t, raw, billed) for c, p, m, n, u, t, raw, billed in grouped
        )
    if split:
        by_project = (
            DailyRollup.objects.filter(client_id__in=split, day__gte=start, day__lt=end)
            .values("client_id", "provider", "model", "project")
            .annotate(**_LINE_SUMS, n_untagged=Sum("events", filter=Q(project="")))
            .order_by()
            .values_list(*_SPLIT_COLUMNS)
        )
        # A group's untagged sum is NULL when its rows all have a project.
        rows.extend((*row[:6], row[6] or 0, *row[7:]) for row in by_project)
    return rows


def line_sums_add(
    into: dict[int, dict[Key, LineSums]], rows: Iterable[LineRow], month: date
) -> dict[int, dict[Key, LineSums]]:
    """Add ``line_rows`` of ``month`` into per client and key sums (and return them)."""
    for client_id, provider, model, project, events, unpriced, untagged, raw, billed in rows:
        keys = into.setdefault(client_id, {})
        key = (month, provider, model, project)
        sums = keys.get(key)
        if sums is None:
            keys[key] = LineSums(events, unpriced, untagged, raw, billed)
        else:
            sums.events += events
            sums.unpriced_events += unpriced
            sums.untagged_events += untagged
            sums.raw_cost_usd += raw
            sums.billed_usd += billed
    return into


def month_line_sums(
    clients: Iterable[Client], month: date, *, start: date | None = None, end: date | None = None
) -> dict[int, dict[Key, LineSums]]:
    """Rollup sums per client and invoice-line key for the days [start, end) of
    ``month`` (all of it by default): one grouped query (``line_rows``)."""
    rows = line_rows(clients, start=start or month, end=end or next_month(month))
    return line_sums_add({}, rows, month)
