"""Display filters for the dashboards: money, percentages and token counts; the budget
meter and the overview's table rows.

Money goes through ``agency.money.format_usd`` (and so ``round_money``); percentages and
ratios are not money and are quantized here for display only.

The budget meter and the overview rows are built in Python with ``format_html`` rather
than as templates: the overview draws 200 rows, and a ``{% include %}`` plus a dozen
filter lookups per row cost ~150 ms of template rendering per request (profiled on the
200-client benchmark); built here they cost a few milliseconds. Both escape every value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from django import template
from django.template.defaultfilters import floatformat, pluralize
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
        status = format_html(
            ' <span class="status-text status-{}">{}</span>',
            budget.projected_status,
            status_label(budget.projected_status),
        )
    return format_html("{}{}", usd(budget.projected_billed_usd), status)


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
    status = budget.status
    more = ""
    if not compact:
        more = format_html(
            '\n<div class="meter-text muted">{} billed{} · projected month end {}</div>',
            usd(budget.billed_usd),
            " (estimate)" if budget.billed_basis == "estimate" else " (invoiced)",
            projection(budget),
        )
    unknown = ""
    if budget.unknown_spend and details:
        unknown = format_html(
            '\n<div class="meter-text warning-text">+ {} call{} not priced: spend is higher '
            "than shown</div>",
            tokens(budget.unpriced_events),
            pluralize(budget.unpriced_events),
        )
    return format_html(
        '<div class="meter-wrap status-{}{}" data-status="{}">\n'
        '<div class="meter" role="meter" aria-valuemin="0" aria-valuemax="100" '
        'aria-valuenow="{}" aria-label="Budget used">\n'
        '<div class="meter-fill" style="width: {}"></div>\n</div>\n'
        '<div class="meter-text">\n<span class="status-text status-{}">{}</span>\n'
        "{} of {}\n</div>{}{}\n</div>",
        status,
        " compact" if compact else "",
        status,
        floatformat(budget.percent_used, 1),
        bar_width(budget.percent_used),
        status,
        status_label(status),
        pct(budget.percent_used),
        usd(budget.budget_usd),
        more,
        unknown,
    )


def _overview_row(row: OverviewRow, url: str) -> SafeString:
    badges = ""
    if row.unpriced_events or row.untagged_events:
        unpriced = untagged = ""
        if row.unpriced_events:
            unpriced = format_html(
                '\n<span class="badge warning" title="Calls to models without a rate: in no '
                'figure yet">{} call{} not priced</span>',
                tokens(row.unpriced_events),
                pluralize(row.unpriced_events),
            )
        if row.untagged_events:
            untagged = format_html(
                '\n<span class="badge muted" title="Calls without a project">{} without a '
                "project</span>",
                tokens(row.untagged_events),
            )
        badges = format_html('\n<div class="row-badges">{}{}\n</div>', unpriced, untagged)
    budget = row.budget
    basis = "invoiced" if row.basis == "invoice" else "estimate"
    return format_html(
        '<tr data-client="{}" data-name="{}" data-status="{}">\n<th scope="row">\n'
        '<a href="{}">{}</a>{}\n</th>\n'
        '<td class="num col-billed">{}<div class="basis muted small">{}</div></td>\n'
        '<td class="budget-cell">{}</td>\n'
        '<td class="num col-raw">{}</td>\n<td class="num col-margin">{}</td>\n'
        '<td class="num col-projected">\n{}\n</td>\n'
        '<td class="spark-cell">{}</td>\n</tr>\n',
        row.client.slug,
        row.client.name.lower(),
        (budget.status if budget else None) or "none",
        url,
        row.client.name,
        badges,
        usd(row.billed_usd),
        basis,
        budget_meter(budget, compact=True),
        usd(row.raw_usd),
        usd(row.margin_usd),
        projection(budget),
        charts.sparkline(row.spark),
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
    return mark_safe(  # noqa: S308 - each row is built by format_html
        "".join(
            _overview_row(row, reverse("client_detail", args=[row.client.slug]) + query)
            for row in rows
        )
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
