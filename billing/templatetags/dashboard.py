"""Display filters for the dashboards: money, percentages and token counts.

Money goes through ``agency.money.format_usd`` (and so ``round_money``); percentages and
ratios are not money and are quantized here for display only.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import template

from agency.money import format_usd

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
