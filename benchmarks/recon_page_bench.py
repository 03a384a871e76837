"""Reconciliation benchmark: server time of /reconciliation/ and GET /api/v1/reconciliation.

    .venv/bin/python benchmarks/recon_page_bench.py [--database-url URL] [--requests 40]

What it does:

1. Uses a PostgreSQL database holding ``manage.py seed_benchmark`` data (200 clients, 10
   million events, rollups built); default ``bench_recon``, a scratch copy (``CREATE
   DATABASE bench_recon TEMPLATE <a seeded database>`` is the quick way to get one). If the
   database does not exist it is created and seeded first (several minutes). It is
   migrated (``manage.py migrate``: the reconciliation's migrations), then everything else
   happens in one transaction that is rolled back at the end.
2. In that transaction, a provider report for the seed's last full month and its current
   month: per day, each seeded Anthropic/OpenAI model's rollups become one report row per
   client's API key (2% more than tracked: untracked spend), and filler models bring the
   report to ``--models`` models × ``--keys`` API keys × every day (about 300,000 rows for
   a 30-day month); three quarters of the keys are mapped to their clients, ten clients are
   metered from the report, and one model's rate is off by 1% (drift). Then the report's
   day sums are refreshed as a sync does (timed: what they add to a sync).
3. With the clock fixed on the 15th of the seed's current month, renders each page
   in-process with Django's test client under production settings (DEBUG off) and the
   shared cache in Redis (``--redis-url``), and prints p50/p95/max *recomputed* (the
   cache flushed and the stored outputs deleted before each of ``--cold`` requests: what
   the first request after an input change computes), *cold* (``--cold`` requests, the
   cache flushed before each: the stored page or answer read back from the database) and
   *warm* (from the cache), the queries per request, and beside them the floor:
   PostgreSQL ``COPY … TO STDOUT`` of the rows a computation reads (the report's day
   sums and the tracked sums), the ratios to that floor, the COPY of the stored output a
   cold request reads, and the load average.
4. ``--rebuild``: what the per-model rollup (``ModelDailyRollup``) and the
   reconciliation's sums of it (``TrackedModelDay``, ``TrackedClientMonth``, the month's
   version) add to the rollup job: one full day rebuilt for every client
   (``_rebuild_day_sql``), timed, rolled back.

Target: p95 under 100 ms for the page and the API, cold as well as warm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_recon"
DEFAULT_REDIS = "redis://127.0.0.1:6379/2"
TOKEN_COLUMNS = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "web_search_requests",
)


def _database_exists(url: str) -> bool:
    parts = urlsplit(url)
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [parts.path.lstrip("/")]
        ).fetchone()
        return row is not None


def _manage(url: str, *args: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_DEBUG": "1"}
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, check=True, cwd=ROOT)


def _create_and_seed(url: str) -> None:
    parts = urlsplit(url)
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{parts.path.lstrip("/")}"')
    _manage(url, "migrate", "-v0")
    _manage(url, "seed_benchmark")


def _setup_django(url: str, redis_url: str) -> None:
    os.environ.update(
        DATABASE_URL=url,
        REDIS_URL=redis_url,
        DJANGO_SETTINGS_MODULE="agency.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="bench-" + "k" * 60,
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_SECURE_COOKIES="0",
        ALLOWED_HOSTS="testserver",
    )
    import django

    django.setup()


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def _seed_report(full: date, current: date, clock: date, *, models: int, keys: int) -> int:
    """Report rows for ``full`` (every day) and ``current`` (up to the day before the
    clock), as described in the module docstring. Returns the number of rows."""
    from django.db import connection

    from agency.calendar import month_bounds

    first = full
    last = clock.replace(day=clock.day - 1)
    tokens = ", ".join(TOKEN_COLUMNS)
    sums = ", ".join(f"(SUM(r.{c}) * 1.02)::bigint" for c in TOKEN_COLUMNS)
    with connection.cursor() as cursor:
        # Seeded models: the clients' rollups, 2% more (what bypassed the meter).
        cursor.execute(
            f"""
            INSERT INTO tracking_providerreportrow (
                provider, day, model, api_key_id, workspace_id, service_tier,
                context_window, inference_geo, speed, batch, {tokens}, requests,
                amount_cents, list_amount_cents)
            SELECT r.provider, r.day, r.model, 'apikey_bench_' || r.client_id, '',
                   'standard', '0-200k', '', '', false, {sums}, SUM(r.events),
                   SUM(r.cost_usd) * 102, SUM(r.cost_usd) * 102
            FROM billing_dailyrollup r
            JOIN tracking_modelrate m ON m.provider = r.provider AND m.model = r.model
            WHERE r.day BETWEEN %s AND %s AND r.provider IN ('anthropic', 'openai')
            GROUP BY r.provider, r.day, r.model, r.client_id
            """,
            [first, last],
        )
        cursor.execute(
            "SELECT COUNT(DISTINCT model) FROM tracking_providerreportrow WHERE day >= %s", [first]
        )
        (seeded_models,) = cursor.fetchone()
        # Filler models: the other rated models, then unrated names, every key, every day.
        cursor.execute(
            """
            SELECT provider, model FROM tracking_modelrate
            WHERE provider IN ('anthropic', 'openai')
              AND model NOT IN (SELECT DISTINCT model FROM tracking_providerreportrow)
            GROUP BY provider, model ORDER BY model
            """
        )
        filler = list(cursor.fetchall())
        filler += [("anthropic", f"bench-report-{i:02d}") for i in range(models)]
        filler = filler[: max(0, models - seeded_models)]
        for provider, model in filler:
            cursor.execute(
                """
                INSERT INTO tracking_providerreportrow (
                    provider, day, model, api_key_id, workspace_id, service_tier,
                    context_window, inference_geo, speed, batch, input_tokens,
                    cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens,
                    output_tokens, web_search_requests, requests, amount_cents,
                    list_amount_cents)
                SELECT %s, d::date, %s, 'apikey_filler_' || k, 'wrkspc_bench', 'standard',
                       '0-200k', '', '', false, 1000 + k, 0, 0, 500, 100 + k, 0, 3,
                       (1000 + k) * 0.0003, (1000 + k) * 0.0003
                FROM generate_series(%s::date, %s::date, '1 day') d,
                     generate_series(1, %s) k
                """,
                [provider, model, first, last, keys],
            )
        # One model priced 1% off: our rate table drifts from the provider's list price.
        cursor.execute(
            """
            UPDATE tracking_providerreportrow SET list_amount_cents = list_amount_cents / 1.01
            WHERE model = 'claude-haiku-4-5' AND day BETWEEN %s AND %s
            """,
            [first, last],
        )
        # Three quarters of the clients' keys mapped; ten clients metered from the report.
        cursor.execute(
            """
            INSERT INTO tracking_provideraccount (provider, kind, external_id, client_id,
                                                  label, created_at)
            SELECT p.provider, 'api_key', 'apikey_bench_' || c.id, c.id, '', now()
            FROM agency_client c CROSS JOIN (VALUES ('anthropic'), ('openai')) p (provider)
            WHERE c.slug LIKE 'bench-%%' AND c.id %% 4 <> 0
            """,
            [],
        )
        cursor.execute(
            """
            UPDATE agency_client SET usage_source = 'provider_report'
            WHERE id IN (SELECT id FROM agency_client WHERE slug LIKE 'bench-%%'
                         ORDER BY slug DESC LIMIT 10)
            """,
            [],
        )
        cursor.execute("ANALYZE tracking_providerreportrow")
        cursor.execute("ANALYZE tracking_provideraccount")
    # What a sync does after replacing the rows: the day sums the page reads.
    from tracking.provider_reports.summaries import report_summaries_refresh

    began = time.perf_counter()
    for provider in ("anthropic", "openai"):
        report_summaries_refresh(provider=provider, since=first, until=last)
    print(
        f"day sums of the report refreshed ({first}..{last}, both providers): "
        f"{(time.perf_counter() - began) * 1000:,.0f} ms",
        flush=True,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tracking_reportmodelday")
        cursor.execute("ANALYZE tracking_reportaccountday")
        cursor.execute(
            "SELECT COUNT(*) FROM tracking_providerreportrow WHERE day BETWEEN %s AND %s",
            [first, month_bounds(full)[1]],
        )
        (rows,) = cursor.fetchone()
    return int(rows)


def _floor(month: date, *, repeat: int = 5) -> float:
    """COPY out of the rows a computation of ``month`` reads: the report's day sums (per
    model, per key) and the tracked sums (per day and model, per client and month),
    median of ``repeat`` runs, in ms. (The report-sourced clients' own report rows and
    per-model rollups, read through their indexes, are left out: a few thousand rows.)"""
    from django.db import connection

    from agency.calendar import month_bounds

    first, last = month_bounds(month)
    report = (
        "COPY (SELECT day, provider, model, service_tier, context_window, inference_geo, "
        f"speed, batch, rows, amount_rows, list_rows, {', '.join(TOKEN_COLUMNS)}, requests, "
        "amount_cents, list_amount_cents FROM tracking_reportmodelday "
        f"WHERE day BETWEEN '{first}' AND '{last}') TO STDOUT"
    )
    accounts = (
        "COPY (SELECT provider, api_key_id, workspace_id, amount_cents "
        f"FROM tracking_reportaccountday WHERE day BETWEEN '{first}' AND '{last}') TO STDOUT"
    )
    rollups = (
        "COPY (SELECT day, provider, model, rows, cost_usd, unpriced_events, "
        f"{', '.join(TOKEN_COLUMNS)} FROM billing_trackedmodelday "
        f"WHERE day BETWEEN '{first}' AND '{last}') TO STDOUT"
    )
    clients = (
        "COPY (SELECT provider, client_id, rows, cost_usd FROM billing_trackedclientmonth "
        f"WHERE month = '{first}') TO STDOUT"
    )
    timings = []
    for _ in range(repeat):
        began = time.perf_counter()
        with connection.cursor() as cursor:
            raw = cursor.cursor  # psycopg's own cursor: COPY
            for statement in (report, accounts, rollups, clients):
                with raw.copy(statement) as copy:
                    for _block in copy:
                        pass
        timings.append((time.perf_counter() - began) * 1000)
    return statistics.median(timings)


def _stored_floor(month: date, what: str, *, repeat: int = 5) -> float:
    """COPY out of the month's stored output (what a cold request reads), median, ms."""
    from django.db import connection

    statement = (
        f"COPY (SELECT content FROM billing_reconciliationoutput WHERE month = '{month}') TO STDOUT"
    )
    timings = []
    for _ in range(repeat):
        began = time.perf_counter()
        with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
            for _block in copy:
                pass
        timings.append((time.perf_counter() - began) * 1000)
    return statistics.median(timings)


def _measure(http: Any, url: str, *, requests: int, headers: dict[str, str], cold: int) -> Any:
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.models import ReconciliationOutput

    # Nothing stored and nothing cached: what the first request after an input change
    # (a sync, a rollup rebuild of the month, a rate edit, a key mapping) computes.
    fresh_timings = []
    for _ in range(cold):
        cache.clear()
        ReconciliationOutput.objects.all().delete()
        began = time.perf_counter()
        response = http.get(url, **headers)
        fresh_timings.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    cold_timings = []
    for _ in range(cold):
        cache.clear()
        began = time.perf_counter()
        response = http.get(url, **headers)
        cold_timings.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    for _ in range(3):
        assert http.get(url, **headers).status_code == 200
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
        "cold": statistics.median(cold_timings),
        "cold_p95": _percentile(cold_timings, 95),
        "cold_max": max(cold_timings),
        "fresh": statistics.median(fresh_timings),
        "fresh_p95": _percentile(fresh_timings, 95),
        "queries": len(queries.captured_queries),
        "bytes": len(response.content),
    }


def run(args: argparse.Namespace) -> int:
    import time_machine
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.test import Client as HttpClient
    from django.test.utils import override_settings

    from agency.calendar import local_moment, month_start, shift_month
    from tracking.keys import api_key_create
    from tracking.models import UsageEvent

    last_event = UsageEvent.objects.order_by("-occurred_at").values_list("occurred_at", flat=True)
    latest = last_event.first()
    if latest is None:
        print("no events in this database: run manage.py seed_benchmark first")
        return 1
    current = month_start(latest.date())
    full = shift_month(current, -1)
    clock = current.replace(day=15)
    static = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    from django.conf import settings

    storages = {**settings.STORAGES, "staticfiles": static}
    worst = 0.0
    with (
        time_machine.travel(local_moment(clock, datetime.min.time().replace(hour=12)), tick=True),
        override_settings(STORAGES=storages),
        transaction.atomic(),
    ):
        began = time.perf_counter()
        rows = _seed_report(full, current, clock, models=args.models, keys=args.keys)
        print(
            f"{UsageEvent.objects.count():,} events; report for {full:%B %Y}: {rows:,} rows "
            f"({args.models} models × {args.keys} keys × every day), seeded in "
            f"{time.perf_counter() - began:.1f} s; clock fixed at {clock}",
            flush=True,
        )
        staff = get_user_model().objects.create(username="bench-recon-staff", is_staff=True)
        as_staff = HttpClient()
        as_staff.force_login(staff)
        agency_key = api_key_create(name="bench recon", client=None)[1]
        api = {"HTTP_AUTHORIZATION": f"Bearer {agency_key}"}
        htmx = {"HTTP_HX_REQUEST": "true"}
        floors = {month: _floor(month) for month in (full, current)}
        pages = [
            (f"/reconciliation/ {full:%Y-%m} (full month)", f"/reconciliation/?month={full:%Y-%m}", {}, full),
            (f"/reconciliation/ {current:%Y-%m} (htmx, this month)", f"/reconciliation/?month={current:%Y-%m}", htmx, current),
            (f"GET /api/v1/reconciliation {full:%Y-%m}", f"/api/v1/reconciliation?month={full:%Y-%m}", api, full),
            ("/overview/ this month (with the coverage line)", "/overview/", {}, current),
        ]  # fmt: skip
        if args.profile:
            import cProfile
            import pstats

            from django.core.cache import cache

            from billing.models import ReconciliationOutput

            # Recomputed requests (nothing cached, nothing stored): where the time goes.
            for label, url, headers, _month in pages[:3:2]:
                http: Any = HttpClient() if headers is api else as_staff
                http.get(url, **headers)
                profiler = cProfile.Profile()
                for _ in range(5):
                    cache.clear()
                    ReconciliationOutput.objects.all().delete()
                    profiler.enable()
                    http.get(url, **headers)
                    profiler.disable()
                print(f"--- {label}: 5 recomputed requests")
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
            transaction.set_rollback(True)
            return 0
        # The selector alone, cold, before (the wide DailyRollup) and after.
        from billing.selectors.reconciliation import _reconciliation, reconciliation_for

        for name, build in (
            ("before: report rows, DailyRollup", lambda: _reconciliation(full, legacy=True)),
            ("after: report day sums, ModelDailyRollup", lambda: reconciliation_for(full)),
        ):
            timings = []
            for _ in range(args.selector_runs):
                began = time.perf_counter()
                build()
                timings.append((time.perf_counter() - began) * 1000)
            print(
                f"selector {full:%Y-%m}, {name}: median {statistics.median(timings):7.1f} ms, "
                f"max {max(timings):7.1f} ms ({len(timings)} runs)",
                flush=True,
            )
        for label, url, headers, month in pages:
            http = HttpClient() if headers is api else as_staff
            figures = _measure(http, url, requests=args.requests, headers=headers, cold=args.cold)
            floor = floors[month]
            load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            print(
                f"{label}\n  warm p50 {figures['p50']:6.1f} ms  p95 {figures['p95']:6.1f} ms  "
                f"max {figures['max']:6.1f} ms | cold p50 {figures['cold']:6.1f} ms  "
                f"p95 {figures['cold_p95']:6.1f} ms  max {figures['cold_max']:6.1f} ms "
                f"({args.cold} requests) | {figures['queries']:>2} queries warm | floor (COPY) "
                f"{floor:6.1f} ms  warm p95/floor {figures['p95'] / floor:4.2f}  cold "
                f"p95/floor {figures['cold_p95'] / floor:4.2f} | load {load}\n"
                f"  recomputed (nothing stored, nothing cached) p50 {figures['fresh']:6.1f} ms  "
                f"p95 {figures['fresh_p95']:6.1f} ms  p95/floor {figures['fresh_p95'] / floor:4.2f}"
                f" | stored output read (COPY) {_stored_floor(month, 'api' if '/api/' in url else 'page:%'):5.1f} ms",
                flush=True,
            )
            if not label.startswith("/overview/"):
                worst = max(worst, figures["p95"], figures["cold_p95"])
        transaction.set_rollback(True)
    verdict = "met" if worst < 100 else "MISSED"
    print(
        f"target p95 < 100 ms (page and API, cold and warm): {verdict} (worst p95 {worst:.1f} ms)"
    )
    return 0


def rebuild(args: argparse.Namespace) -> int:
    """What the per-model rollup adds to the rollup job (see the module docstring)."""
    from django.db import connection, transaction

    from billing.services import rollups
    from tracking.models import UsageEvent

    latest = UsageEvent.objects.order_by("-occurred_at").values_list("occurred_at", flat=True)
    first = latest.first()
    if first is None:
        print("no events in this database: run manage.py seed_benchmark first")
        return 1
    from agency.calendar import day_bounds, local_day

    day = local_day(first) - timedelta(days=3)  # a full day
    start, end = day_bounds(day)
    events = UsageEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end).count()
    tables = ("modeldailyrollup", "dailyrollup", "hourlyrollup", "enduserdailyrollup",
              "promptdailyrollup")  # fmt: skip
    runs: list[dict[str, float]] = []

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            key = next(
                (t for t in tables if sql.lstrip().startswith(f"INSERT INTO billing_{t} ")),
                "other",
            )
            runs[-1][key] = runs[-1].get(key, 0.0) + (time.perf_counter() - began) * 1000

    refresh = rollups._recon_sums_refresh

    def sums_timed(*args: Any) -> None:
        # The reconciliation's sums (TrackedModelDay, TrackedClientMonth) and the
        # month's version, re-summed after the per-model rows: timed apart.
        began = time.perf_counter()
        refresh(*args)
        runs[-1]["sums"] = runs[-1].get("sums", 0.0) + (time.perf_counter() - began) * 1000

    with transaction.atomic():
        rollups._rebuild_day_sql(day, None)  # warm: the day's events in shared buffers
        rollups._recon_sums_refresh = sums_timed  # type: ignore[assignment]
        try:
            for _ in range(args.rebuild):
                runs.append({})
                with connection.execute_wrapper(timed):
                    began = time.perf_counter()
                    rollups._rebuild_day_sql(day, None)
                    runs[-1]["total"] = (time.perf_counter() - began) * 1000
        finally:
            rollups._recon_sums_refresh = refresh
        transaction.set_rollback(True)
    sums = statistics.median(run.get("sums", 0.0) for run in runs)
    total = statistics.median(run["total"] for run in runs)
    model = statistics.median(run.get("modeldailyrollup", 0.0) for run in runs)
    rows = " ".join(
        f"{t} {statistics.median(run.get(t, 0.0) for run in runs):,.0f} ms"
        for t in (*tables[1:], "other")
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"rollup job, {day} rebuilt for every client ({events:,} events), median of "
        f"{len(runs)}: {total:,.0f} ms with the per-model rollup, {total - model:,.0f} ms "
        f"without it: it adds {model:,.1f} ms ({model / max(total - model, 1) * 100:.1f}%). "
        f"Per statement: per-model {model:,.1f} ms, {rows}. The reconciliation's sums "
        f"and the month's version after them (in 'other'): {sums:,.1f} ms "
        f"({sums / max(total - sums, 1) * 100:.1f}%). load {load}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--cold", type=int, default=20, help="Requests with an empty cache.")
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Profile 5 recomputed requests of the page and the API.",
    )
    parser.add_argument("--selector-runs", type=int, default=3, help="Selector timings.")
    parser.add_argument(
        "--rebuild", type=int, default=0, metavar="N",
        help="Only time N rebuilds of a day (what the per-model rollup adds), rolled back.",
    )  # fmt: skip
    args = parser.parse_args()
    if not _database_exists(args.database_url):
        print(f"seeding {args.database_url} (200 clients, 10,000,000 events)")
        _create_and_seed(args.database_url)
    _manage(args.database_url, "migrate", "-v0")
    _setup_django(args.database_url, args.redis_url)
    return rebuild(args) if args.rebuild else run(args)


if __name__ == "__main__":
    raise SystemExit(main())
