"""Events CSV benchmark: a client's month of raw events as the CSV the pages serve.

    .venv/bin/python benchmarks/export_bench.py --database-url URL [--month 2026-11]
        [--client bench-001] [--runs 3] [--skip-orm]

On a ``manage.py seed_benchmark`` database (read only: everything runs in transactions
that are rolled back), with the clock fixed to the 15th of the month at 12:00 UTC
(time-machine), production settings. Prints, for the largest client's month:

- the floor: ``COPY (SELECT <the same columns, unformatted>) TO STDOUT WITH (FORMAT csv)``
  read to the end and discarded;
- the COPY path the views serve on PostgreSQL (``billing.csv_export.event_csv``):
  rows/s, its share of the floor (target: ≥ 40 %), resident memory growth;
- the ORM path (``csv_lines(event_rows(…))``, SQLite's path and PostgreSQL's before
  issue 14), the same way, unless ``--skip-orm`` (it takes about a minute);
- the load average before and after.
Each figure is the median of ``--runs`` runs (the ORM path: one run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _setup(url: str) -> None:
    os.environ.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="agency.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="bench-" + "k" * 60,
    )
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="export-bench-"))
    import django

    django.setup()


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _drain(pieces: Iterable[str | bytes]) -> tuple[int, int, float]:
    """Consume a stream: (bytes, lines, resident memory growth in MiB)."""
    before = peak = _rss_mib()
    size = lines = 0
    for index, piece in enumerate(pieces):
        data = piece if isinstance(piece, bytes) else piece.encode()
        size += len(data)
        lines += data.count(b"\r\n")
        if index % 256 == 0:
            peak = max(peak, _rss_mib())
    return size, lines, max(peak, _rss_mib()) - before


def _timed(make: Callable[[], Iterable[str | bytes]]) -> tuple[float, int, int, float]:
    from django.db import transaction

    with transaction.atomic():  # server-side cursors live in a transaction
        began = time.perf_counter()
        size, lines, growth = _drain(make())
        seconds = time.perf_counter() - began
        transaction.set_rollback(True)
    return seconds, size, lines, growth


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    import time_machine
    from django.db import connection, transaction

    from agency.calendar import next_month, parse_month
    from agency.models import Client
    from billing.csv_export import EVENT_COLUMNS, csv_lines, event_csv, event_rows
    from billing.selectors.invoices import month_events

    month = parse_month(args.month)
    client = Client.objects.get(slug=args.client)
    days = (month, next_month(month))
    events = month_events(client, month)
    print(f"{_load()}; clock fixed to {month:%Y-%m}-15 12:00 UTC")
    with time_machine.travel(dt.datetime.combine(month.replace(day=15), dt.time(12), dt.UTC)):
        count = events.count()
        print(f"{client.slug}, {month:%Y-%m}: {count:,} events")

        def floor() -> Iterable[bytes]:
            sql, params = events.values_list(*EVENT_COLUMNS).query.sql_with_params()
            with (
                connection.cursor() as cursor,
                cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy,
            ):
                for block in copy:
                    yield bytes(block)

        def copy_path() -> Iterable[str | bytes]:
            return event_csv(events, client_id=client.pk, days=days, show_cost=True)

        def orm_path() -> Iterable[str]:
            return csv_lines(event_rows(events, client_id=client.pk, days=days, show_cost=True))

        results: dict[str, list[tuple[float, int, int, float]]] = {"floor": [], "copy": []}
        with transaction.atomic():
            for _ in range(args.runs):
                results["floor"].append(_timed(floor))
                results["copy"].append(_timed(copy_path))
            if not args.skip_orm:
                results["orm"] = [_timed(orm_path)]
            transaction.set_rollback(True)

    def median(name: str) -> tuple[float, int, int, float]:
        runs = results[name]
        seconds = statistics.median(r[0] for r in runs)
        return seconds, runs[0][1], runs[0][2], max(r[3] for r in runs)

    floor_s, floor_size, _, _ = median("floor")
    print(
        f"floor: plain COPY TO STDOUT of the same columns: {floor_s:.2f} s, "
        f"{count / floor_s:,.0f} rows/s, {floor_size / 1e6:.0f} MB"
    )
    for name, label in (("copy", "COPY path (served)"), ("orm", "ORM path (before)")):
        if name not in results:
            continue
        seconds, size, lines, growth = median(name)
        assert lines - 1 >= count, (name, lines, count)
        share = floor_s / seconds * 100
        print(
            f"{label}: {seconds:.2f} s, {count / seconds:,.0f} rows/s = {share:.0f}% of the "
            f"floor, {size / 1e6:.0f} MB, resident memory +{growth:.0f} MiB"
            + ("  (target ≥ 40%: " + ("met" if share >= 40 else "MISSED") + ")")
            * (name == "copy")
        )
    if "orm" in results:
        print(f"COPY path vs ORM path: {median('orm')[0] / median('copy')[0]:.1f}x faster")
    print(_load())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--month", default="2026-11")
    parser.add_argument("--client", default="bench-001", help="Slug; bench-001 is the largest.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-orm", action="store_true")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url (or BENCH_DATABASE_URL) is required")
    _setup(args.database_url)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
