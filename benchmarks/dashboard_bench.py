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
   first visitor after a cache expiry waits: the overview caches sums of past days for
   five minutes; the client page loads its raw-event top lists in a second request,
   the "top lists fragment", when they are not cached).

Pages: the overview (200 active clients), its htmx sort fragment, the client page of the
largest client (~9% of all events) and of a median one, the htmx month fragment of the
largest client's previous month, and the largest client's page as its own user.
Target: p95 under 200 ms for the overview and for a client page.
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
    args = parser.parse_args()
    if not _database_exists(args.database_url):
        print(f"seeding {args.database_url} ({args.clients} clients, {args.events:,} events)")
        _create_and_seed(args.database_url, args.clients, args.events)
    _setup_django(args.database_url)
    return run(args.requests, args.cold)


if __name__ == "__main__":
    raise SystemExit(main())
