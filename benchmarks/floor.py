"""What the benchmarks print beside their figures: the floor and the machine's load.

The floor is the time PostgreSQL needs only to move the rows a path reads (``COPY … TO
STDOUT``, read to the end and discarded) or writes (``COPY … FROM STDIN``). On a shared
machine the figure and its floor move together, so their ratio, printed in the same run,
is what compares from one run to the next. Imported by the benchmark scripts (run as
``python benchmarks/<name>.py``, which puts this folder on the import path).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any


def mid_month(months_ago: int = 1) -> dt.datetime:
    """The clock the benchmarks fix (time-machine): noon UTC on the 15th of last month,
    which ``seed_benchmark`` (the last months up to now) fills in full; ``months_ago=0``
    for this month (e.g. to invoice last month). A figure then never depends on the day
    of the month the benchmark was run."""
    day = dt.datetime.now(dt.UTC).date().replace(day=15)
    for _ in range(months_ago):
        day = (day.replace(day=1) - dt.timedelta(days=1)).replace(day=15)
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def copy_out_ms(sql: str, params: list[Any] | tuple[Any, ...] = ()) -> tuple[float, int]:
    """Milliseconds to ``COPY (sql) TO STDOUT`` and read it all, and the bytes read."""
    from django.db import connection

    began = time.perf_counter()
    size = 0
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy,
    ):
        for block in copy:
            size += len(block)
    return (time.perf_counter() - began) * 1000, size


def versus_floor(figure_ms: float, floor_ms: float) -> str:
    return f"floor {floor_ms:.1f} ms, {figure_ms / floor_ms:.2f}× the floor; {load_average()}"
