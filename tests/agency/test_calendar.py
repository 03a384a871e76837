"""agency.calendar: the agency's days and months, and the one month parser."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from agency.calendar import (
    MonthError,
    MonthOutOfRange,
    current_month,
    day_bounds,
    local_day,
    month_bounds,
    month_range,
    next_month,
    parse_month,
    previous_month,
    shift_month,
)


@pytest.mark.parametrize(
    ("text", "month"),
    [
        ("2026-11", date(2026, 11, 1)),
        (" 2000-01 ", date(2000, 1, 1)),
        ("2100-12", date(2100, 12, 1)),
    ],
)
def test_parse_month_reads_yyyy_mm_within_the_range(text: str, month: date) -> None:
    assert parse_month(text) == month


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1", "November", "", "2026-11-01"])
def test_parse_month_refuses_what_is_not_a_month(text: str) -> None:
    with pytest.raises(MonthError, match="YYYY-MM") as error:
        parse_month(text)
    assert not isinstance(error.value, MonthOutOfRange)


@pytest.mark.parametrize("text", ["1999-12", "2101-01", "0000-01", "0001-01", "9999-12"])
def test_parse_month_refuses_months_out_of_range(text: str) -> None:
    with pytest.raises(MonthOutOfRange, match="2000-01 to 2100-12"):
        parse_month(text)


def test_month_arithmetic_crosses_years() -> None:
    assert next_month(date(2026, 12, 1)) == date(2027, 1, 1)
    assert previous_month(date(2026, 1, 1)) == date(2025, 12, 1)
    assert shift_month(date(2026, 11, 1), -23) == date(2024, 12, 1)
    assert month_bounds(date(2028, 2, 17)) == (date(2028, 2, 1), date(2028, 2, 29))


def test_days_and_months_are_the_agency_zones(settings: object) -> None:
    settings.TIME_ZONE = "America/New_York"  # type: ignore[attr-defined]
    start, end = (moment.astimezone(UTC) for moment in day_bounds(date(2026, 11, 1)))
    assert (start, end - start) == (  # DST ends: a 25-hour day
        datetime(2026, 11, 1, 4, tzinfo=UTC),
        timedelta(hours=25),
    )
    assert local_day(datetime(2026, 11, 1, 3, 59, tzinfo=UTC)) == date(2026, 10, 31)
    assert current_month(datetime(2026, 12, 1, 4, 59, tzinfo=UTC)) == date(2026, 11, 1)
    first, last = month_range(date(2026, 11, 15))
    assert (first.astimezone(UTC), last.astimezone(UTC)) == (
        datetime(2026, 11, 1, 4, tzinfo=UTC),
        datetime(2026, 12, 1, 5, tzinfo=UTC),
    )
