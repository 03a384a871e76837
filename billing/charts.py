"""Server-rendered SVG charts: no JavaScript, no CDN, readable offline and in tests.

Each helper takes plain values and returns a ``SafeString`` of inline SVG. Amounts arrive as
``Decimal``; they are turned into floats only to compute pixel positions, never for money
arithmetic or display (labels go through ``agency.money.format_usd``). Every chart carries
``role="img"`` and an ``aria-label`` summary, and every bar or point a ``<title>`` tooltip,
so the figures can be read without seeing the colours.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from decimal import ROUND_CEILING, Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from agency.money import format_usd

# A palette that stays distinguishable for the common colour-vision deficiencies
# (Okabe–Ito), in the order series are assigned.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
)
OTHER_COLOUR = "#9aa3ae"


def series_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def series_colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per series name that stays the same across months and pages: each name
    has a home slot in the palette (from a hash of the name, not of its position); when
    two names of one chart share a slot, the later (in name order) takes the next free
    one. Beyond the palette's size, colours repeat."""
    colours: dict[str, str] = {}
    taken: set[int] = set()
    for name in sorted(names):
        slot = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % len(PALETTE)
        if len(taken) < len(PALETTE):
            while slot in taken:
                slot = (slot + 1) % len(PALETTE)
        taken.add(slot)
        colours[name] = PALETTE[slot]
    return colours


def nice_step(value: Decimal, *, min_step: Decimal | None = None) -> Decimal:
    """The smallest 1/2/5 × 10^n at or above ``value``: a round distance between ticks."""
    if value <= 0:
        return min_step or Decimal("1")
    exponent = value.adjusted()
    for step in (Decimal("1"), Decimal("2"), Decimal("5"), Decimal("10")):
        candidate = step.scaleb(exponent)
        if candidate >= value:
            return max(candidate, min_step) if min_step else candidate
    return Decimal("10").scaleb(exponent)  # pragma: no cover - the loop always returns


def axis_ticks(peak: Decimal, *, most: int = 5, min_step: Decimal | None = None) -> list[Decimal]:
    """Round tick values from 0 to the first at or above ``peak``: at most ``most``
    steps of a 1/2/5 × 10^n size (so $0.50 steps, never $0.625)."""
    step = nice_step(peak / most, min_step=min_step)
    count = max(1, int((peak / step).to_integral_value(rounding=ROUND_CEILING)))
    return [step * i for i in range(count + 1)]


def _num(value: Decimal | int | float) -> float:
    # Pixel geometry only; see the module docstring.
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1/2/2.5/5 × 10^n at or above ``value``: a round top for the y axis."""
    if value <= 0:
        return Decimal("1")
    exponent = value.adjusted()
    for step in (Decimal("1"), Decimal("2"), Decimal("2.5"), Decimal("5"), Decimal("10")):
        candidate = step.scaleb(exponent)
        if candidate >= value:
            return candidate
    return Decimal("10").scaleb(exponent)  # pragma: no cover - the loop always returns


def stacked_bars(
    days: Sequence[date],
    series: Mapping[str, Sequence[Decimal]],
    *,
    width: int = 1100,
    height: int = 260,
    label: str = "Daily spend by model",
    value_format: Callable[[Decimal], str] = format_usd,
) -> SafeString:
    """One bar per day, stacked by series (e.g. model), with a y axis and a legend.

    ``series`` maps a name to one value per day, in the order of ``days``.
    """
    left, right, top, bottom = 64, 8, 10, 26
    plot_w = width - left - right
    plot_h = height - top - bottom
    totals = [sum((values[i] for values in series.values()), Decimal(0)) for i in range(len(days))]
    peak = max(totals, default=Decimal(0))
    ticks = axis_ticks(peak)
    ceiling = ticks[-1]
    colours = series_colours([name for name, values in series.items() if any(values)])
    parts = [
        f'<svg class="chart chart-bars" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}: total {escape(value_format(sum(totals, Decimal(0))))} '
        f'over {len(days)} days" preserveAspectRatio="xMinYMin meet">'
    ]
    for tick in ticks:
        y = top + plot_h - _num(tick / ceiling) * plot_h
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{_fmt(y)}" y2="{_fmt(y)}"/>'
            f'<text class="axis" x="{left - 6}" y="{_fmt(y + 4)}" text-anchor="end">'
            f"{escape(value_format(tick))}</text>"
        )
    if days:
        slot = plot_w / len(days)
        bar_w = max(slot * 0.72, 1.0)
        label_every = max(1, round(len(days) / 10))
        for i, day in enumerate(days):
            x = left + i * slot + (slot - bar_w) / 2
            base = float(top + plot_h)
            for name, values in series.items():
                value = values[i]
                if value <= 0:
                    continue
                h = _num(value / ceiling) * plot_h
                base -= h
                parts.append(
                    f'<rect x="{_fmt(x)}" y="{_fmt(base)}" width="{_fmt(bar_w)}" '
                    f'height="{_fmt(h)}" fill="{colours[name]}">'
                    f"<title>{day:%b %-d} · {escape(name)}: {escape(value_format(value))}"
                    f"</title></rect>"
                )
            if i % label_every == 0:
                parts.append(
                    f'<text class="axis" x="{_fmt(x + bar_w / 2)}" y="{height - 8}" '
                    f'text-anchor="middle">{day:%-d}</text>'
                )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped


def legend(names: Sequence[str]) -> list[tuple[str, str]]:
    """(name, colour) pairs in the colours ``stacked_bars`` gives the same series."""
    colours = series_colours(names)
    return [(name, colours[name]) for name in names]


@functools.cache
def _spark_xs(width: int, pad: int, count: int) -> tuple[str, ...]:
    step = (width - 2 * pad) / (count - 1)
    return tuple(_fmt(pad + i * step) for i in range(count))


def sparkline(
    values: Sequence[Decimal],
    *,
    width: int = 120,
    height: int = 28,
    label: str = "Last 30 days",
    value_format: Callable[[Decimal], str] = format_usd,
) -> SafeString:
    """A small trend line with the last point marked; flat at the bottom when all zero."""
    pad = 2
    peak = max(values, default=Decimal(0))
    total = sum(values, Decimal(0))
    aria = f"{label}: total {value_format(total)}, peak day {value_format(peak)}"
    if len(values) < 2:
        return mark_safe(  # noqa: S308 - escaped
            f'<svg class="spark" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(aria)}"></svg>'
        )
    # Geometry in floats, one division per chart, x positions formatted once per width and
    # length: the overview draws 200 of these per request.
    scale = (height - 2 * pad) / _num(peak) if peak > 0 else 0.0
    xs = _spark_xs(width, pad, len(values))
    ys = [_fmt(height - pad - _num(value) * scale) for value in values]
    path = " ".join([f"{x},{y}" for x, y in zip(xs, ys, strict=True)])
    last_x, last_y = xs[-1], ys[-1]
    return mark_safe(  # noqa: S308 - escaped
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(aria)}"><title>{escape(aria)}</title>'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{path}"/>'
        f'<circle cx="{last_x}" cy="{last_y}" r="2" fill="currentColor"/></svg>'
    )


@functools.lru_cache(maxsize=4096)
def _usd_sparkline(values: tuple[Decimal, ...]) -> SafeString:
    return sparkline(values)


def usd_sparkline(values: Sequence[Decimal]) -> SafeString:
    """``sparkline`` of billed dollars with its defaults, kept per values (per process):
    the overview draws the same 200 trends on every request until the rollups change.
    Equal values draw the same chart (even ``1.0`` and ``1.00``: the label rounds them to
    cents and the geometry uses floats), so the values are the whole key."""
    return _usd_sparkline(tuple(values))


def line_chart(
    days: Sequence[date],
    values: Sequence[Decimal | None],
    *,
    width: int = 1100,
    height: int = 170,
    label: str = "Average input tokens per call",
    value_format: Callable[[Decimal], str] = lambda v: f"{v:,.0f}",
) -> SafeString:
    """A line over days with a y axis; ``None`` (no calls that day) breaks the line."""
    left, right, top, bottom = 64, 8, 10, 26
    plot_w = width - left - right
    plot_h = height - top - bottom
    present = [v for v in values if v is not None]
    # Whole tokens: a step below 1 would print as repeated labels ("1, 0, 0").
    ticks = axis_ticks(max(present, default=Decimal(0)), most=2, min_step=Decimal("1"))
    ceiling = ticks[-1]
    parts = [
        f'<svg class="chart chart-line" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="xMinYMin meet">'
    ]
    for tick in ticks:
        y = top + plot_h - _num(tick / ceiling) * plot_h
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{_fmt(y)}" y2="{_fmt(y)}"/>'
            f'<text class="axis" x="{left - 6}" y="{_fmt(y + 4)}" text-anchor="end">'
            f"{escape(value_format(tick))}</text>"
        )
    if days:
        slot = plot_w / len(days)
        label_every = max(1, round(len(days) / 10))
        segments: list[list[tuple[float, float]]] = [[]]
        dots: list[str] = []
        for i, (day, value) in enumerate(zip(days, values, strict=True)):
            x = left + i * slot + slot / 2
            if i % label_every == 0:
                parts.append(
                    f'<text class="axis" x="{_fmt(x)}" y="{height - 8}" '
                    f'text-anchor="middle">{day:%-d}</text>'
                )
            if value is None:
                segments.append([])
                continue
            y = top + plot_h - _num(value / ceiling) * plot_h
            segments[-1].append((x, y))
            dots.append(
                f'<circle cx="{_fmt(x)}" cy="{_fmt(y)}" r="2.5" class="point">'
                f"<title>{day:%b %-d}: {escape(value_format(value))}</title></circle>"
            )
        for segment in segments:
            if len(segment) > 1:
                path = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in segment)
                parts.append(f'<polyline class="line" fill="none" points="{path}"/>')
        parts.extend(dots)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped
