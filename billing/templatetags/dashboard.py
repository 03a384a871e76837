"""Display filters for the dashboards: money, percentages and token counts; the budget
meter and the overview's table rows.

Money goes through ``agency.money.format_usd`` (and so ``round_money``); percentages and
ratios are not money and are quantized here for display only.

The budget meter and the overview rows are built in Python rather than as templates:
the overview draws 200 rows, and a ``{% include %}`` plus a dozen filter lookups per row
cost ~150 ms of template rendering per request (profiled on the 200-client benchmark).
They are f-strings with every value escaped by ``html.escape`` (what Django's
``escape`` calls) rather than ``format_html``: its lazy-string wrapper and
``conditional_escape`` per argument were half of the remaining ~40 ms (issue 14).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from html import escape as _e
from typing import TYPE_CHECKING

from django import template
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from agency.money import format_usd
from billing import charts

if TYPE_CHECKING:
    from billing.selectors.budgets import BudgetPosition
    from billing.selectors.dashboard import OverviewRow
    from billing.selectors.lines import BillLine

register = template.Library()

ONE_PLACE = Decimal("0.1")


@register.filter
def usd(amount: Decimal | None) -> str:
    return format_usd(amount)


@register.filter
def pct(value: Decimal | None) -> str:
    """A percentage to one place, e.g. ``84.3%``; ``—`` when unknown."""
    if value is None:
        return "—"
    return f"{Decimal(value).quantize(ONE_PLACE, rounding=ROUND_HALF_UP):,}%"


@register.filter
def ratio_pct(value: Decimal | None) -> str:
    """A 0–1 ratio shown as a percentage."""
    if value is None:
        return "—"
    return pct(Decimal(value) * 100)


@register.filter
def signed_pct(value: Decimal | None) -> str:
    """A change with its sign, e.g. ``+12.0%`` or ``-3.5%``; ``—`` when unknown."""
    if value is None:
        return "—"
    text = pct(value)
    return text if text.startswith("-") else f"+{text}"


@register.filter
def tokens(value: int | Decimal | None) -> str:
    if value is None:
        return "—"
    return f"{Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP):,}"


@register.filter
def bar_width(value: Decimal | None) -> str:
    """A CSS width for a meter: the percentage capped to 0–100."""
    if value is None:
        return "0%"
    clamped = min(max(Decimal(value), Decimal(0)), Decimal(100))
    return f"{clamped.quantize(ONE_PLACE, rounding=ROUND_HALF_UP)}%"


STATUS_LABELS = {"green": "On track", "yellow": "Near budget", "red": "Over budget"}


@register.filter
def status_label(status: str | None) -> str:
    """Budget status in words, so it reads without its colour."""
    return STATUS_LABELS.get(status or "", "No budget")


@register.filter
def per_minute(value: Decimal | None) -> str:
    """Calls per minute over a prompt's first-to-last span: ``—`` for a single call,
    ``<0.1`` for ordinary traffic, one place otherwise (a storm shows in the tens)."""
    if value is None:
        return "—"
    if value < ONE_PLACE:
        return "<0.1"
    return f"{Decimal(value).quantize(ONE_PLACE, rounding=ROUND_HALF_UP):,}"


NO_BUDGET = mark_safe('<span class="muted" data-status="none">No budget set</span>')


TOO_EARLY = mark_safe(
    '<span class="muted too-early" title="Less than a day of this month: a burn rate would be '
    'noise">Too early to project</span>'
)


def projection(budget: BudgetPosition | None) -> SafeString:
    """Projected month end and its status, or "Too early to project" in a month's first
    day (the rule the projected alerts follow)."""
    if budget is None:
        return mark_safe("—")
    if not budget.projectable:
        return TOO_EARLY
    status = ""
    if budget.projected_status:
        projected = _e(budget.projected_status)
        status = (
            f' <span class="status-text status-{projected}">'
            f"{_e(status_label(budget.projected_status))}</span>"
        )
    return mark_safe(f"{_e(usd(budget.projected_billed_usd))}{status}")  # noqa: S308 - escaped


def one_place(value: Decimal | None) -> str:
    """``floatformat(value, 1)`` of a Decimal (``84.3``; ``""`` for None) without the
    template filter's machinery: 200 budget meters per overview. A test compares the two."""
    if value is None:
        return ""
    rounded = Decimal(value).quantize(ONE_PLACE, rounding=ROUND_HALF_UP)
    return f"{abs(rounded) if rounded == 0 else rounded:f}"


@register.simple_tag
def budget_meter(
    budget: BudgetPosition | None, compact: bool = False, details: bool = True
) -> SafeString:
    """A client's budget used as a green/yellow/red bar that also says its status and
    percentage in words; ``compact`` (the overview) leaves out billed and projection;
    without ``details`` (a client's own user, unless the client sees pricing details)
    calls to models not yet priced are not mentioned."""
    if budget is None or not budget.status:
        return NO_BUDGET
    status = _e(budget.status)
    more = ""
    if not compact:
        basis = " (estimate)" if budget.billed_basis == "estimate" else " (invoiced)"
        more = (
            f'\n<div class="meter-text muted">{_e(usd(budget.billed_usd))} billed{basis} · '
            f"projected month end {projection(budget)}</div>"
        )
    unknown = ""
    if budget.unknown_spend and details:
        calls = budget.unpriced_events
        unknown = (
            f'\n<div class="meter-text warning-text">+ {_e(tokens(calls))} call'
            f"{_plural(calls)} not priced: spend is higher than shown</div>"
        )
    return mark_safe(  # noqa: S308 - every value escaped
        f'<div class="meter-wrap status-{status}{" compact" if compact else ""}" '
        f'data-status="{status}">\n'
        '<div class="meter" role="meter" aria-valuemin="0" aria-valuemax="100" '
        f'aria-valuenow="{_e(one_place(budget.percent_used))}" aria-label="Budget used">\n'
        f'<div class="meter-fill" style="width: {_e(bar_width(budget.percent_used))}"></div>'
        "\n</div>\n"
        f'<div class="meter-text">\n<span class="status-text status-{status}">'
        f"{_e(status_label(budget.status))}</span>\n"
        f"{_e(pct(budget.percent_used))} of {_e(usd(budget.budget_usd))}\n</div>{more}{unknown}"
        "\n</div>"
    )


def _plural(count: int) -> str:
    """``pluralize`` of a count: "s" unless it is 1."""
    return "" if count == 1 else "s"


def _overview_row(row: OverviewRow, url: str) -> str:
    badges = ""
    if row.unpriced_events or row.untagged_events:
        unpriced = untagged = ""
        if row.unpriced_events:
            unpriced = (
                '\n<span class="badge warning" title="Calls to models without a rate: in no '
                f'figure yet">{_e(tokens(row.unpriced_events))} call'
                f"{_plural(row.unpriced_events)} not priced</span>"
            )
        if row.untagged_events:
            untagged = (
                '\n<span class="badge muted" title="Calls without a project">'
                f"{_e(tokens(row.untagged_events))} without a project</span>"
            )
        badges = f'\n<div class="row-badges">{unpriced}{untagged}\n</div>'
    budget = row.budget
    basis = "invoiced" if row.basis == "invoice" else "estimate"
    name = row.client.name
    return (
        f'<tr data-client="{_e(row.client.slug)}" data-name="{_e(name.lower())}" '
        f'data-status="{_e((budget.status if budget else None) or "none")}">\n'
        f'<th scope="row">\n<a href="{_e(url)}">{_e(name)}</a>{badges}\n</th>\n'
        f'<td class="num col-billed">{_e(usd(row.billed_usd))}'
        f'<div class="basis muted small">{basis}</div></td>\n'
        f'<td class="budget-cell">{budget_meter(budget, compact=True)}</td>\n'
        f'<td class="num col-raw">{_e(usd(row.raw_usd))}</td>\n'
        f'<td class="num col-margin">{_e(usd(row.margin_usd))}</td>\n'
        f'<td class="num col-projected">\n{projection(budget)}\n</td>\n'
        f'<td class="spark-cell">{charts.usd_sparkline(row.spark)}</td>\n</tr>\n'
    )


@dataclass(frozen=True)
class SortHeader:
    key: str
    label: str
    numeric: bool
    next_sort: str  # what a click asks for
    aria_sort: str  # "ascending", "descending" or "none"


# The overview's sortable columns (keys of billing.selectors.dashboard.SORT_KEYS).
# Client, billed and budget status first: on a phone those are the columns in view.
COLUMNS = (
    ("name", "Client", False),
    ("billed", "Billed", True),
    ("budget", "Budget used", False),
    ("raw", "Raw cost", True),
    ("margin", "Margin", True),
    ("projected", "Projected month end", True),
)


@register.simple_tag
def sort_headers(sort: str) -> dict[str, SortHeader]:
    """Header links for the overview table: a click on the sorted column reverses it; a
    first click sorts names A–Z and amounts largest first."""
    headers = {}
    for key, label, numeric in COLUMNS:
        if sort == key:
            next_sort, aria = f"-{key}", "ascending"
        elif sort == f"-{key}":
            next_sort, aria = key, "descending"
        else:
            next_sort, aria = (f"-{key}" if key != "name" else key), "none"
        headers[key] = SortHeader(key, label, numeric, next_sort, aria)
    return headers


@register.simple_tag
def overview_rows(rows: Iterable[OverviewRow], month: date | None = None) -> SafeString:
    """The overview table's body rows: name and badges, money, budget meter, projection
    and a 30-day sparkline per client; links open the client page at ``month``."""
    query = f"?month={month:%Y-%m}" if month else ""
    # One reverse() for all rows: the client page's URL with the slug in its place. A
    # slug is ASCII letters, digits, "-" and "_" (SlugField), which reverse() would not
    # quote; a test compares every row's link with reverse()'s.
    head, _, tail = reverse("client_detail", args=["0"]).rpartition("/0/")
    return mark_safe(  # noqa: S308 - every value of a row is escaped
        "".join(_overview_row(row, f"{head}/{row.client.slug}/{tail}{query}") for row in rows)
    )


INVOICE_BADGES = {
    "draft": "badge-draft",
    "finalized": "badge-finalized",
    "sent": "badge-sent",
    "paid": "badge-paid",
    "void": "badge-void",
}


@register.simple_tag
def invoice_badge(status: str, label: str) -> SafeString:
    """An invoice status as a badge with a colour of its own (and its name in words)."""
    return format_html(
        '<span class="badge {}" data-invoice-status="{}">{}</span>',
        INVOICE_BADGES.get(status, ""),
        status,
        label,
    )


@register.filter
def line_label(line: BillLine) -> str:
    """A bill line in a client's words: "No project" rather than an empty project."""
    label = line.label
    if " — " in label:
        label = label.rsplit(" — ", 1)[0]
    if line.project or " — " in line.label:
        return f"{label} — {line.project or 'No project'}"
    return label
