"""Budget recompute benchmark: all clients, on data made by ``manage.py seed_benchmark``.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/budget_bench10m \\
        .venv/bin/python benchmarks/budget_bench.py

Prints, in milliseconds:
- a full recompute of every client (month totals from the rollups, snapshot upserts,
  threshold checks, anomaly baselines), first run and the median of repeated runs;
- the month-to-date totals query alone, and the same figure from raw events for scale;
- a dirty-day rebuild of today's rollups for every client (what the debounced task does
  after a burst of ingest touching all clients).
Target: a recompute of 200 clients in under 2 s.

The clock is fixed (time-machine) to noon on the 15th of last month, which the seed fills
in full (``floor.mid_month``). Beside the recompute it prints its floor, ``COPY … TO
STDOUT`` of the month's daily rollup rows the recompute reads, the ratio and the load
average.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agency.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")
# Alerts fired by the first run go to memory, not to real inboxes or webhooks.
os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
os.environ.pop("AGENCY_SLACK_WEBHOOK_URL", None)
os.environ.pop("REDIS_URL", None)  # eager Celery: deliveries run in-process

import django
import time_machine
from floor import copy_out_ms, load_average, mid_month, versus_floor

django.setup()

from django.db import connection  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.utils import timezone  # noqa: E402

from agency.calendar import current_month, month_bounds, month_range, today  # noqa: E402
from agency.db import ExactSum  # noqa: E402
from agency.models import Client  # noqa: E402
from billing.models import DailyRollup  # noqa: E402
from billing.selectors.rollups import month_totals  # noqa: E402
from billing.services.budgets import budgets_recompute  # noqa: E402
from billing.services.rollups import rollups_rebuild_dirty  # noqa: E402
from tracking.models import DirtyDay, UsageEvent  # noqa: E402


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return (time.perf_counter() - began) * 1000


def runs(action: Callable[[], object], count: int) -> list[float]:
    return [timed(action) for _ in range(count)]


def main() -> None:
    if connection.vendor != "postgresql":
        sys.exit("Run against the PostgreSQL database seeded by seed_benchmark.")
    moment = mid_month()
    print(f"clock fixed to {moment:%Y-%m-%d %H:%M} UTC; {load_average()}")
    with time_machine.travel(moment, tick=True):
        measure()


def measure() -> None:
    clients = Client.objects.count()
    events = UsageEvent.objects.count()
    rollups = DailyRollup.objects.count()
    month = current_month()
    print(f"{clients} clients, {events:,} events, {rollups:,} daily rollup rows")

    first = timed(budgets_recompute)
    steady = runs(budgets_recompute, 7)
    print(f"full recompute, first run:                {first:8.1f} ms")
    print(
        f"full recompute, steady state:           {statistics.median(steady):8.1f} ms median "
        f"(min {min(steady):.1f}, max {max(steady):.1f})"
    )
    first_day, last_day = month_bounds(month)
    rows = DailyRollup.objects.filter(day__gte=first_day, day__lte=last_day)
    sql, params = rows.query.sql_with_params()
    floors = [copy_out_ms(sql, params)[0] for _ in range(3)]
    print(
        f"  beside it: COPY TO STDOUT of the month's {rows.count():,} rollup rows: "
        + versus_floor(statistics.median(steady), min(floors))
    )

    totals = runs(lambda: month_totals(month=month), 7)
    print(f"month totals from rollups:              {statistics.median(totals):8.1f} ms median")
    start, end = month_range(month)

    def raw() -> object:
        return list(
            UsageEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
            .values("client_id")
            .annotate(cost=ExactSum("cost_usd"), n=Count("pk"))
        )

    print(f"month totals from raw events:           {timed(raw):8.1f} ms (for scale)")

    day = today()
    now = timezone.now()
    DirtyDay.objects.bulk_create(
        [
            DirtyDay(client_id=pk, day=day, marked_at=now)
            for pk in Client.objects.values_list("pk", flat=True)
        ],
        update_conflicts=True,
        unique_fields=["client", "day"],
        update_fields=["marked_at"],
    )
    rebuild = timed(rollups_rebuild_dirty)
    print(f"rebuild today's rollups, all clients:   {rebuild:8.1f} ms")
    DirtyDay.objects.filter(day=day).delete()


if __name__ == "__main__":
    main()
