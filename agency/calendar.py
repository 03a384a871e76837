"""Days and months in the agency's time zone: the one calendar every app uses.

Usage is stored in UTC; rollups, budgets and invoices count agency-local days and
months, in the zone ``CLIENTMETER_TIME_ZONE`` sets (``settings.TIME_ZONE``, read through
``timezone.get_default_timezone()``, never the per-request "current" zone). A day or
month becomes an aware ``[start, end)`` range for queries on ``occurred_at``; a local day
is 23 or 25 hours long across a DST change.

Months are ``date`` objects on their first day. ``parse_month`` is the one reader of a
month typed by a person (``YYYY-MM``) and accepts 2000-01 to 2100-12: nothing was billed
before 2000, and the cap keeps every range and neighbouring month far from the limits of
``date`` (year 1 and 9999), where arithmetic would overflow.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, tzinfo

from django.utils import timezone

FIRST_MONTH = date(2000, 1, 1)
LAST_MONTH = date(2100, 12, 1)
_MONTH = re.compile(r"(\d{4})-(\d{2})")


class MonthError(ValueError):
    """Text that is not a month (``YYYY-MM``), or a month outside the supported range."""


class MonthOutOfRange(MonthError):
    """A well-formed month before ``FIRST_MONTH`` or after ``LAST_MONTH``."""


def zone() -> tzinfo:
    """The agency's time zone (for the database's own date functions)."""
    return timezone.get_default_timezone()


def local_day(moment: datetime) -> date:
    """The agency-local day of an aware moment: the day rollups, budgets and invoices use."""
    return timezone.localdate(moment, zone())


def local_time(moment: datetime) -> datetime:
    """An aware moment as the agency's wall clock shows it."""
    return timezone.localtime(moment, zone())


def today(now: datetime | None = None) -> date:
    """The agency-local day of ``now`` (default: the current time)."""
    return local_day(now or timezone.now())


def local_moment(day: date, at: time = time.min) -> datetime:
    """The aware moment the agency's wall clock shows ``at`` on ``day``."""
    return datetime.combine(day, at, tzinfo=zone())


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The aware [start, end) of an agency-local day (23 or 25 hours long across DST)."""
    return local_moment(day), local_moment(day + timedelta(days=1))


def local_days(start: date, end: date) -> Iterator[date]:
    """Every day from ``start`` to ``end`` inclusive."""
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


def month_start(day: date) -> date:
    """The first day of the month containing ``day``: how a month is written."""
    return day.replace(day=1)


def current_month(now: datetime | None = None) -> date:
    """First day of the agency-local month of ``now`` (default: the current time)."""
    return month_start(today(now))


def shift_month(month: date, delta: int) -> date:
    """The first day of the month ``delta`` months after (or before) ``month``'s."""
    index = month.year * 12 + month.month - 1 + delta
    return date(index // 12, index % 12 + 1, 1)


def next_month(month: date) -> date:
    return shift_month(month, 1)


def previous_month(month: date) -> date:
    return shift_month(month, -1)


def month_bounds(month: date) -> tuple[date, date]:
    """First and last day (inclusive) of the month containing ``month``."""
    first = month_start(month)
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


def month_range(month: date) -> tuple[datetime, datetime]:
    """The aware [start, end) of the agency-local month containing ``month``."""
    first, last = month_bounds(month)
    return day_bounds(first)[0], day_bounds(last)[1]


def parse_month(text: str) -> date:
    """``YYYY-MM`` → the first day of that month, from 2000-01 to 2100-12.

    Raises MonthOutOfRange for a real month outside that range and MonthError for
    anything else; the messages say which and are fit to show to whoever typed it.
    """
    match = _MONTH.fullmatch(text.strip())
    if not match or not 1 <= int(match[2]) <= 12:
        raise MonthError(f"{text!r} is not a month: use YYYY-MM, e.g. 2026-11.")
    year, month = int(match[1]), int(match[2])
    # Compared as numbers first: date() itself refuses year 0.
    if (
        not (FIRST_MONTH.year, FIRST_MONTH.month)
        <= (year, month)
        <= (
            LAST_MONTH.year,
            LAST_MONTH.month,
        )
    ):
        raise MonthOutOfRange(
            f"{text.strip()} is outside the months ClientMeter keeps: "
            f"{FIRST_MONTH:%Y-%m} to {LAST_MONTH:%Y-%m}."
        )
    return date(year, month, 1)
