from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

from billing import charts

DAYS = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]


def test_nice_ceiling_rounds_up_to_a_round_axis_top():
    assert charts.nice_ceiling(Decimal("7.3")) == Decimal("10")
    assert charts.nice_ceiling(Decimal("183")) == Decimal("200")
    assert charts.nice_ceiling(Decimal("0.42")) == Decimal("0.5")
    assert charts.nice_ceiling(Decimal("0")) == Decimal("1")


def test_stacked_bars_draw_one_segment_per_non_zero_value():
    svg = charts.stacked_bars(
        DAYS,
        {
            "claude-sonnet-4-5": [Decimal("1"), Decimal("0"), Decimal("2")],
            "gpt-4.1": [Decimal("0.5"), Decimal("0"), Decimal("0")],
        },
    )
    assert svg.count("<rect") == 3


def test_stacked_bars_tooltips_carry_day_model_and_formatted_amount():
    svg = charts.stacked_bars(DAYS, {"gpt-4.1": [Decimal("1234.5"), Decimal(0), Decimal(0)]})
    assert "<title>Nov 1 · gpt-4.1: $1,234.50</title>" in svg


def test_stacked_bars_escape_series_names():
    svg = charts.stacked_bars(DAYS, {"<script>x</script>": [Decimal(1), Decimal(1), Decimal(1)]})
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg


def test_stacked_bar_heights_are_proportional_to_values():
    svg = charts.stacked_bars(DAYS, {"m": [Decimal("1"), Decimal("2"), Decimal("0")]})
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert heights[1] == 2 * heights[0]


def test_legend_colours_are_the_bars_colours():
    series = {"a": [Decimal("1")], "b": [Decimal("2")]}
    svg = charts.stacked_bars([date(2026, 11, 1)], series)
    for name, colour in charts.legend(list(series)):
        assert re.search(rf'fill="{colour}"><title>[^<]*{name}:', svg)


def test_sparkline_has_one_point_per_value():
    svg = charts.sparkline([Decimal(v) for v in ("0", "1", "3", "2")])
    points = re.search(r'points="([^"]+)"', svg)
    assert points is not None
    assert len(points.group(1).split()) == 4


def test_sparkline_label_states_total_for_screen_readers():
    svg = charts.sparkline([Decimal("1.5"), Decimal("2.5")])
    assert 'aria-label="Last 30 days: total $4.00, peak day $2.50"' in svg


def test_line_chart_breaks_the_line_on_days_without_calls():
    svg = charts.line_chart(
        [*DAYS, date(2026, 11, 4)], [Decimal(10), Decimal(12), None, Decimal(11)]
    )
    # Two points before the gap make a line; the single point after it does not.
    assert svg.count("<polyline") == 1
    assert svg.count("<circle") == 3


# --- issue 13: round ticks, stable colours -------------------------------------------------


def _ticks(svg: str) -> list[str]:
    return re.findall(r'text-anchor="end">([^<]+)</text>', svg)


def test_axis_ticks_are_round_values():
    # A peak of $2.30 used to give a $2.50 top split in quarters: $0.625, $1.25, $1.875.
    svg = charts.stacked_bars([date(2026, 11, 1)], {"m": [Decimal("2.30")]})
    assert _ticks(svg) == ["$0.00", "$0.50", "$1.00", "$1.50", "$2.00", "$2.50"]
    svg = charts.stacked_bars([date(2026, 11, 1)], {"m": [Decimal("4.2")]})
    assert _ticks(svg) == ["$0.00", "$1.00", "$2.00", "$3.00", "$4.00", "$5.00"]


def test_token_axis_never_repeats_a_label():
    # An almost empty month drew "1, 0, 0": ticks of 0.5 shown without decimals.
    svg = charts.line_chart([date(2026, 11, 1)], [Decimal("0.4")])
    ticks = _ticks(svg)
    assert len(ticks) == len(set(ticks))


def test_a_model_keeps_its_colour_whatever_else_is_in_the_month():
    alone = dict(charts.legend(["claude-opus-4-7"]))
    together = dict(charts.legend(["claude-haiku-4-5", "gpt-4.1", "claude-opus-4-7"]))
    assert alone["claude-opus-4-7"] == together["claude-opus-4-7"]
    assert len(set(together.values())) == 3


def test_usd_sparkline_draws_what_sparkline_draws_for_equal_values():
    values = [Decimal("0"), Decimal("1.5"), Decimal("3.25")]
    drawn = charts.usd_sparkline(values)
    assert drawn == charts.sparkline(values)
    # Equal values spelled otherwise find the same chart, which is still theirs.
    respelled = [Decimal("0.000"), Decimal("1.50"), Decimal("3.250000")]
    assert charts.usd_sparkline(respelled) == charts.sparkline(respelled) == drawn
    assert charts.usd_sparkline([*values[:2], Decimal("3.26")]) != drawn
