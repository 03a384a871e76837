"""Provider report sync benchmark: a month of Anthropic's report for 50 models × 200 API
keys (300,000 rows) through the loopback stand-in, into PostgreSQL.

    .venv/bin/python benchmarks/recon_sync_bench.py [--models 50] [--keys 200] [--days 30]

What it does:

1. Drops and creates a scratch database (default ``bench_sync`` on the local PostgreSQL;
   ``--database-url`` to change) and migrates it. Dropped again at the end unless
   ``--keep``.
2. Starts the stand-in (tests/standin.py) in a child process, serving models × keys ×
   days rows of usage and cost (each with tokens of every kind and fractional cents).
   A child process so that building the provider's JSON does not share this process's
   interpreter lock: the provider's own work is not ours.
3. Runs ``provider_report_sync`` for the month: the SDK pages (1,000 rows each) of the 6
   passes × usage and cost, msgspec decoding, merging, and the replacement (DELETE +
   COPY in one transaction under the advisory lock). Then runs it again: the re-sync of
   a month replaces every row. Target: under 60 s each.
4. The floor: PostgreSQL COPY of the very same rows (the stored values, read back) into
   the same table, in one transaction, after the table is emptied. Prints it beside the
   sync, with the ratio.

Each figure line ends with the load average (1, 5, 15 minutes) when it was taken.
Everything runs on this machine, stand-in included, so the figures are conservative.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_sync"
FIRST_DAY = date(2026, 10, 1)


def load() -> str:
    return "[load " + " ".join(f"{v:.2f}" for v in os.getloadavg()) + "]"


def recreate_database(database_url: str, *, drop_only: bool = False) -> None:
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def serve_standin(models: int, keys: int, days: int, port_pipe: Any, stop: Any) -> None:
    """The child process: build the month's records and serve them until told to stop."""
    from tests.standin import AnthropicRecord, ProviderStandIn

    records = [
        AnthropicRecord(
            day=FIRST_DAY + timedelta(days=d),
            model=f"claude-bench-{m:02d}",
            api_key_id=f"apikey_bench{k:04d}",
            workspace_id=f"wrkspc_bench{k % 20:02d}",
            uncached_input_tokens=1000 + d + m + k,
            cache_write_5m_tokens=100 + k,
            cache_write_1h_tokens=10 + m,
            cache_read_input_tokens=5000 + d * k,
            output_tokens=300 + m * k,
            web_search_requests=k % 3,
            requests=1 + k % 7,
            amount=f"{1 + d}.{m:02d}{k:04d}123",
            list_amount=f"{2 + d}.{k:04d}{m:02d}789",
        )
        for d in range(days)
        for m in range(models)
        for k in range(keys)
    ]
    with ProviderStandIn() as standin:
        standin.anthropic = records
        port_pipe.send(standin.anthropic_base_url)
        stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    print(f"scratch database {urlsplit(args.database_url).path.lstrip('/')}: migrating…")
    recreate_database(args.database_url)
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agency.settings")
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + "k" * 60)
    os.environ.pop("REDIS_URL", None)

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction

    from tracking.models import ProviderReportRow, SyncStatus
    from tracking.provider_reports.rows import COLUMNS
    from tracking.provider_reports.services import provider_report_sync

    call_command("migrate", "-v0")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per page

    rows_expected = args.models * args.keys * args.days
    print(
        f"stand-in: {args.models} models × {args.keys} API keys × {args.days} days = {rows_expected:,} rows…"
    )
    # Spawned, not forked: a fork would share this process's open database connection.
    spawn = multiprocessing.get_context("spawn")
    receive, send = spawn.Pipe(duplex=False)
    stop = spawn.Event()
    child = spawn.Process(
        target=serve_standin, args=(args.models, args.keys, args.days, send, stop)
    )
    child.start()
    try:
        settings.ANTHROPIC_BASE_URL = receive.recv()
        from tests.standin import ANTHROPIC_ADMIN_KEY

        settings.ANTHROPIC_ADMIN_API_KEY = ANTHROPIC_ADMIN_KEY
        until = FIRST_DAY + timedelta(days=args.days - 1)
        figures = {}
        for label in ("first sync", "re-sync"):
            began = time.perf_counter()
            run = provider_report_sync(
                provider="anthropic", since=FIRST_DAY, until=until, trigger="bench"
            )
            took = time.perf_counter() - began
            if run.status != SyncStatus.SUCCEEDED or run.rows != rows_expected:
                raise SystemExit(f"{label} failed: {run.status} {run.rows} rows {run.error}")
            figures[label] = took
            print(
                f"{label:>10}: {took:6.2f} s for {run.rows:,} rows from {run.pages:,} pages "
                f"({run.rows / took:,.0f} rows/s; target < 60 s) {load()}"
            )
    finally:
        stop.set()
        child.join(timeout=30)

    # The floor: COPY the same rows, as stored, into the same table in one transaction.
    table = ProviderReportRow._meta.db_table
    columns = ["provider", "sync_run_id", *COLUMNS]
    stored = list(ProviderReportRow.objects.values_list(*columns))
    ProviderReportRow.objects.all().delete()
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    began = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor, cursor.copy(sql) as copy:
        for values in stored:
            copy.write_row(values)
    floor = time.perf_counter() - began
    print(
        f"COPY floor: {floor:6.2f} s for {len(stored):,} rows ({len(stored) / floor:,.0f} rows/s) {load()}"
    )
    for label, took in figures.items():
        print(f"{label:>10}: {took / floor:.1f}× the COPY floor")

    connection.close()
    if not args.keep:
        recreate_database(args.database_url, drop_only=True)
        print("scratch database dropped")


if __name__ == "__main__":
    main()
