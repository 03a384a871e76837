"""Run the suite at another instant: ``--instant`` (or ``CLIENTMETER_TEST_INSTANT``).

Every test then starts with the clock moved (time-machine, ticking) to that instant, so a
test that reads the real clock instead of pinning its own is caught on any day, not only on
the day of the month it happens to break. Tests that pin the clock themselves are
unaffected: their ``time_machine.travel`` nests inside this one and wins. Tests marked
``real_clock`` (another process on the real clock talks to this one) are left alone.

The value is an ISO datetime. Without an offset it is a wall-clock time in the agency's
zone (``CLIENTMETER_TIME_ZONE``); a repeated wall-clock hour (the end of summer time) is
read as its second occurrence, so ``2026-10-25T02:30`` in Europe/Berlin is 01:30 UTC.
``bin/instants`` runs the time-sensitive tests at each instant CI checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine

ENV = "CLIENTMETER_TEST_INSTANT"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--instant",
        default=os.environ.get(ENV, ""),
        help=f"Start every test at this ISO datetime (agency-local without an offset; ${ENV}).",
    )


def instant(value: str, zone: str) -> datetime:
    """The aware moment ``value`` names, naive values read in ``zone``."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone), fold=1)
    return moment


def pytest_report_header(config: pytest.Config) -> str | None:
    value = config.getoption("--instant")
    if not value:
        return None
    from django.conf import settings

    moment = instant(value, settings.TIME_ZONE)
    return f"instant: every test starts at {moment.isoformat()} ({settings.TIME_ZONE})"


@pytest.fixture(autouse=True)
def _travel_to_instant(request: pytest.FixtureRequest) -> Iterator[None]:
    value = request.config.getoption("--instant")
    if not value or request.node.get_closest_marker("real_clock"):
        yield
        return
    from django.conf import settings

    with time_machine.travel(instant(value, settings.TIME_ZONE), tick=True):
        yield
