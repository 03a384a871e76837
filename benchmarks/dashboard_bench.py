"""Dashboard benchmark: server time of the agency overview and the client page.

    .venv/bin/python benchmarks/dashboard_bench.py [--database-url URL] [--requests 40]

What it does:

1. Uses a PostgreSQL database holding ``manage.py seed_benchmark`` data (200 clients, 10
   million events over two months, rollups built). If the database does not exist it is
   created, migrated and seeded first (``--clients``/``--events`` are passed through;
   that takes several minutes). An existing benchmark database is only read: the users
   this script needs are created inside a transaction that is rolled back at the end.
2. Renders each page in-process with Django's test client under production settings
   (DEBUG off, so no SQL logging and the cached template loader), after a warm-up, and
   prints p50, p95 and max server time per page, plus the number of SQL queries. "cold"
   is the median of ``--cold`` requests each made with an empty Django cache (what the
   first visitor after a rollup rebuild waits if ``overview_refresh_task`` has not yet
   summed the overview again: the overview keeps its sums under the rollups' version;
   the client page loads its top lists in a second request, the "top lists fragment",
   when they are not cached).

Like a web process (``agency/wsgi.py``), the script freezes the loaded application's
objects out of the garbage collector's reach before its first request
(``agency.startup.freeze_loaded_objects``); ``--no-gc-freeze`` measures without.

Pages: the overview (200 active clients), its htmx sort fragment, the client page of the
largest client (~9% of all events) and of a median one, the htmx month fragment of the
largest client's previous month, and the largest client's page as its own user.
Target: p95 under 200 ms for the overview and for a client page.

``--top-lists`` measures only the client page's top lists (issue 14), with the clock
fixed to 2026-11-15 12:00 UTC (time-machine) so every run reads the same month: the
largest client's November top end users and prompts, before (the raw-event scan the
page used to run, timed in the same run) and after (the top-list fragment, every
request with an empty Django cache), beside their floor (``COPY … TO STDOUT`` of the
top-list rollup rows the lists sum); then what the top-list rollups add to the rollup
job: one full day rebuilt for every client (``_rebuild_day_sql``), each statement timed,
rolled back. Needs migration ``billing.0012_scale_top_list_rollups`` applied (it fills
the top-list rollups from the existing events).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/dashboard_bench"


def _database_exists(url: str) -> bool:
    parts = urlsplit(url)
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [parts.path.lstrip("/")]
        ).fetchone()
        return row is not None


def _create_and_seed(url: str, clients: int, events: int) -> None:
    parts = urlsplit(url)
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{parts.path.lstrip("/")}"')
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_DEBUG": "1"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT)
    subprocess.run(
        [*manage, "seed_benchmark", "--clients", str(clients), "--events", str(events)],
        env=env,
        check=True,
        cwd=ROOT,
    )


# Django and the app are imported inside the functions below, after _setup_django: the
# database URL and production settings are only known once the arguments are read.
def _setup_django(url: str) -> None:
    os.environ.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="agency.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="bench-" + "k" * 60,
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_SECURE_COOKIES="0",
        ALLOWED_HOSTS="testserver",
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def _measure(
    http: Any, url: str, *, requests: int, headers: dict[str, str], cold: int
) -> dict[str, Any]:
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    cold_timings = []
    for _ in range(cold):  # an empty Django cache: what the first visitor waits
        cache.clear()
        began = time.perf_counter()
        response = http.get(url, **headers)
        cold_timings.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    for _ in range(3):  # warm-up: connection, template cache, PostgreSQL buffers
        response = http.get(url, **headers)
        assert response.status_code == 200, (url, response.status_code)
    timings = []
    for _ in range(requests):
        began = time.perf_counter()
        response = http.get(url, **headers)
        timings.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        http.get(url, **headers)
    return {
        "p50": statistics.median(timings),
        "p95": _percentile(timings, 95),
        "max": max(timings),
        "cold": statistics.median(cold_timings) if cold_timings else None,
        "queries": len(queries.captured_queries),
        "bytes": len(response.content),
    }


def run(requests: int, cold: int) -> int:
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.test import Client as HttpClient
    from django.test.utils import override_settings

    from agency.calendar import current_month, month_range, shift_month, today
    from agency.models import Client, ClientMembership
    from tracking.models import UsageEvent

    clients = list(Client.objects.filter(active=True).order_by("slug"))
    if len(clients) < 2:
        print("no benchmark clients in this database: run manage.py seed_benchmark first")
        return 1
    # seed_benchmark skews sizes by creation order: bench-001 is the largest client.
    largest = clients[0]
    median = clients[len(clients) // 2]
    total_events = UsageEvent.objects.count()
    largest_events = UsageEvent.objects.filter(client=largest).count()
    largest_month = UsageEvent.objects.filter(
        client=largest, occurred_at__gte=month_range(today())[0]
    ).count()
    print(
        f"{len(clients)} active clients, {total_events:,} events; largest client "
        f"{largest.slug}: {largest_events:,} events, {largest_month:,} this month"
    )
    previous = shift_month(current_month(), -1).strftime("%Y-%m")
    htmx = {"HTTP_HX_REQUEST": "true"}
    # Production settings minus the manifest storage (no collectstatic needed here).
    static = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    results = []
    with override_settings(STORAGES={**_storages(), "staticfiles": static}), transaction.atomic():
        user_model = get_user_model()
        staff = user_model.objects.create(username="bench-staff", is_staff=True)
        member = user_model.objects.create(username="bench-member")
        ClientMembership.objects.create(user=member, client=largest)
        as_staff, as_member = HttpClient(), HttpClient()
        as_staff.force_login(staff)
        as_member.force_login(member)
        pages = [
            ("overview (staff)", as_staff, "/overview/", {}),
            ("overview sort fragment (htmx)", as_staff, "/overview/?sort=-billed", htmx),
            (f"overview {previous} (staff)", as_staff, f"/overview/?month={previous}", {}),
            (f"client page, largest ({largest.slug})", as_staff, f"/clients/{largest.slug}/", {}),
            (f"client page, median ({median.slug})", as_staff, f"/clients/{median.slug}/", {}),
            (
                f"month fragment {previous}, largest (htmx)",
                as_staff,
                f"/clients/{largest.slug}/?month={previous}",
                htmx,
            ),
            ("client page, largest, as its user", as_member, f"/clients/{largest.slug}/", {}),
            (
                f"top lists fragment, largest ({largest_month:,} events)",
                as_staff,
                f"/clients/{largest.slug}/top/",
                htmx,
            ),
        ]
        for label, http, url, headers in pages:
            figures = _measure(http, url, requests=requests, headers=headers, cold=cold)
            results.append((label, figures))
            print(
                f"{label:<46} p50 {figures['p50']:7.1f} ms  p95 {figures['p95']:7.1f} ms  "
                f"max {figures['max']:7.1f} ms  cold {figures['cold'] or 0:7.1f} ms  "
                f"{figures['queries']:>2} queries  {figures['bytes'] / 1024:4.0f} KiB",
                flush=True,
            )
        transaction.set_rollback(True)
    worst = max(f["p95"] for label, f in results if not label.startswith("top lists"))
    verdict = "met" if worst < 200 else "MISSED"
    print(f"target p95 < 200 ms per page: {verdict} (worst p95 {worst:.1f} ms)")
    overview = results[0][1]
    live, every = _overview_floors(clients)
    print(
        f"overview floors (COPY TO STDOUT): warm requests read no rollup rows (the sums "
        f"are cached under the rollups' version), only the client rows: {live:.1f} ms, "
        f"p95 / floor = {overview['p95'] / live:.1f}x; cold (the first request after a "
        f"rollup rebuild, before overview_refresh_task): the month's and the sparkline's "
        f"per-model rollup rows: {every:.1f} ms, cold / floor = "
        f"{(overview['cold'] or 0) / every:.1f}x; target overview p95 < 100 ms: "
        f"{'met' if overview['p95'] < 100 else 'MISSED'}"
    )
    print(_load())
    return 0


def _overview_floors(clients: list[Any]) -> tuple[float, float]:
    """Median of 5 ``COPY … TO STDOUT`` of what an overview request reads: with its sums
    cached (every request until the next rollup rebuild), the active clients' rows; with
    an empty cache, also the per-model rollup rows of the sparkline's 30 days and the
    month so far (one window). Clients invoiced by project also read their daily rows;
    the seed has none."""
    from datetime import timedelta

    from agency.calendar import month_start, today
    from agency.models import Client
    from billing.models import ModelDailyRollup

    day = today()
    first = min(month_start(day), day - timedelta(days=29))
    ids = [c.pk for c in clients]
    window = ModelDailyRollup.objects.filter(client_id__in=ids, day__gte=first, day__lte=day)
    floors = []
    for rows in (Client.objects.filter(active=True), window):
        sql, params = rows.order_by().query.sql_with_params()
        floors.append(statistics.median(_copy_seconds(sql, list(params))[0] for _ in range(5)))
    return floors[0] * 1000, floors[1] * 1000


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _copy_seconds(sql: str, params: list[Any]) -> tuple[float, int]:
    """Time ``COPY (sql) TO STDOUT`` read to the end and discarded: the floor."""
    from django.db import connection

    began = time.perf_counter()
    size = 0
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy,
    ):
        for block in copy:
            size += len(block)
    return time.perf_counter() - began, size


def _raw_scan_top_lists(client: Any, month: Any) -> None:
    """What the page ran before issue 14: the month's raw events grouped by end user and
    by prompt hash (the queries of ``end_users``/``top_prompts`` as they were)."""
    from django.db.models import Count, FloatField, Max, Min, Q, Sum
    from django.db.models.functions import Cast

    from agency.calendar import month_range
    from agency.db import ExactSum
    from billing.selectors.dashboard.usage import TOKEN_COLUMNS
    from tracking.models import PricingStatus, UsageEvent

    start, end = month_range(month)
    events = UsageEvent.objects.filter(client=client, occurred_at__gte=start, occurred_at__lt=end)
    rank = Cast(ExactSum("cost_usd"), FloatField())
    list(
        events.values("end_user")
        .annotate(
            n=Count("id"),
            unpriced=Count("id", filter=Q(pricing_status=PricingStatus.UNPRICED)),
            **{f"sum_{name}": Sum(name) for name in TOKEN_COLUMNS},
            raw=ExactSum("cost_usd"),
            rank=rank,
        )
        .order_by("-rank", "-n", "end_user")[:20]
    )
    list(
        events.exclude(prompt_hash="")
        .values("prompt_hash")
        .annotate(
            n=Count("id"),
            raw=ExactSum("cost_usd"),
            first=Min("occurred_at"),
            last=Max("occurred_at"),
            rank=rank,
        )
        .order_by("-rank", "-n", "prompt_hash")[:10]
    )


def run_top_lists(requests: int, raw_runs: int) -> int:
    import datetime as dt

    import time_machine
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.db import connection, transaction
    from django.test import Client as HttpClient
    from django.test.utils import override_settings

    from agency.calendar import month_bounds, month_range
    from agency.models import Client
    from billing.models import EndUserDailyRollup, PromptDailyRollup
    from billing.services import rollups
    from tracking.models import UsageEvent

    moment = dt.datetime(2026, 11, 15, 12, tzinfo=dt.UTC)
    month = dt.date(2026, 11, 1)
    print(f"clock fixed to {moment:%Y-%m-%d %H:%M} UTC; {_load()}")
    largest = Client.objects.filter(active=True).order_by("slug").first()
    assert largest is not None
    start, end = month_range(month)
    events = UsageEvent.objects.filter(
        client=largest, occurred_at__gte=start, occurred_at__lt=end
    ).count()
    first, last = month_bounds(month)
    rows = [
        model.objects.filter(client=largest, day__gte=first, day__lte=last).count()
        for model in (EndUserDailyRollup, PromptDailyRollup)
    ]
    print(
        f"largest client {largest.slug}, {month:%Y-%m}: {events:,} events; top-list rollup "
        f"rows: {rows[0]:,} by end user, {rows[1]:,} by prompt hash"
    )
    static = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    with (
        time_machine.travel(moment, tick=True),
        override_settings(STORAGES={**_storages(), "staticfiles": static}),
        transaction.atomic(),
    ):
        raw = []
        for _ in range(raw_runs):
            began = time.perf_counter()
            _raw_scan_top_lists(largest, month)
            raw.append((time.perf_counter() - began) * 1000)
        staff = get_user_model().objects.create(username="bench-staff", is_staff=True)
        http = HttpClient()
        http.force_login(staff)
        url = f"/clients/{largest.slug}/top/?month={month:%Y-%m}"
        headers: dict[str, Any] = {"HTTP_HX_REQUEST": "true"}
        assert http.get(url, **headers).status_code == 200  # warm-up: templates, connection
        cold = []
        for _ in range(requests):
            cache.clear()
            began = time.perf_counter()
            response = http.get(url, **headers)
            cold.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200
        floors = []
        for _ in range(5):
            seconds = 0.0
            for model in (EndUserDailyRollup, PromptDailyRollup):
                sql, params = (
                    model.objects.filter(client=largest, day__gte=first, day__lte=last)
                    .order_by()
                    .query.sql_with_params()
                )
                seconds += _copy_seconds(sql, list(params))[0]
            floors.append(seconds * 1000)
        floor = statistics.median(floors)
        before = statistics.median(raw)
        p50, p95 = statistics.median(cold), _percentile(cold, 95)
        print(
            f"before: raw-event scan, median of {raw_runs}: {before:,.0f} ms "
            f"({before / floor:,.0f}x the floor)"
        )
        print(
            f"after:  top lists fragment, empty cache, {requests} requests: p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms, max {max(cold):.1f} ms  (target < 200 ms cold: "
            f"{'met' if p95 < 200 else 'MISSED'})"
        )
        print(
            f"floor:  COPY TO STDOUT of those {sum(rows):,} rollup rows: {floor:.1f} ms; "
            f"fragment p95 / floor = {p95 / floor:.1f}x; before / after p95 = {before / p95:,.0f}x"
        )
        transaction.set_rollback(True)

    # What the top-list rollups cost the rollup job: one full day, every client.
    day = dt.date(2026, 11, 14)
    timings: dict[str, float] = {}

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            key = "other"
            for table in ("dailyrollup", "hourlyrollup", "enduserdailyrollup", "promptdailyrollup"):
                if sql.lstrip().startswith(f"INSERT INTO billing_{table}"):
                    key = table
            timings[key] = timings.get(key, 0.0) + (time.perf_counter() - began) * 1000

    day_events = UsageEvent.objects.filter(
        occurred_at__gte=dt.datetime.combine(day, dt.time.min, dt.UTC),
        occurred_at__lt=dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, dt.UTC),
    ).count()
    with time_machine.travel(moment, tick=True), transaction.atomic():
        rollups._rebuild_day_sql(day, None)  # warm: the day's events in shared buffers
        with connection.execute_wrapper(timed):
            began = time.perf_counter()
            rollups._rebuild_day_sql(day, None)
            total = (time.perf_counter() - began) * 1000
        transaction.set_rollback(True)
    top = timings.get("enduserdailyrollup", 0) + timings.get("promptdailyrollup", 0)
    print(
        f"rollup job, {day} rebuilt for every client ({day_events:,} events): {total:,.0f} ms; "
        f"daily {timings.get('dailyrollup', 0):,.0f} ms, hourly "
        f"{timings.get('hourlyrollup', 0):,.0f} ms, by end user "
        f"{timings.get('enduserdailyrollup', 0):,.0f} ms, by prompt "
        f"{timings.get('promptdailyrollup', 0):,.0f} ms, deletes and locks "
        f"{timings.get('other', 0):,.0f} ms: the top-list rollups add {top:,.0f} ms "
        f"({top / max(total - top, 1) * 100:.0f}% on top of the rest)"
    )
    print(_load())
    return 0


def _storages() -> dict[str, Any]:
    from django.conf import settings

    return dict(settings.STORAGES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--cold", type=int, default=3, help="Requests with an empty cache.")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--top-lists", action="store_true", help="Only the top lists.")
    parser.add_argument("--raw-runs", type=int, default=2, help="Raw scans timed (before).")
    parser.add_argument(
        "--day",
        default="",
        help="Fix the clock (time-machine) to YYYY-MM-DD 12:00 UTC for the page run, e.g. "
        "the first, the middle or the last day of a month (default: the real clock).",
    )
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="Leave the loaded application's objects to the garbage collector (agency/wsgi.py "
        "freezes them at start-up; by default this script does the same).",
    )
    args = parser.parse_args()
    if not _database_exists(args.database_url):
        print(f"seeding {args.database_url} ({args.clients} clients, {args.events:,} events)")
        _create_and_seed(args.database_url, args.clients, args.events)
    _setup_django(args.database_url)
    if not args.no_gc_freeze:
        from agency.startup import freeze_loaded_objects

        freeze_loaded_objects()  # what agency/wsgi.py does before a web process serves
    print(
        f"gc: {'default (no freeze)' if args.no_gc_freeze else 'loaded objects frozen, as agency/wsgi.py'}"
    )
    if args.top_lists:
        return run_top_lists(args.requests, args.raw_runs)
    if args.day:
        import datetime as dt

        import time_machine

        try:
            day = dt.date.fromisoformat(args.day)
        except ValueError:
            parser.error(f"--day: {args.day!r} is not a date (YYYY-MM-DD)")
        moment = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC)
        print(f"clock fixed to {moment.isoformat()} (time-machine)")
        with time_machine.travel(moment, tick=True):
            return run(args.requests, args.cold)
    return run(args.requests, args.cold)


if __name__ == "__main__":
    raise SystemExit(main())
