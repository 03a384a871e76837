"""Month-end invoicing benchmark, on data made by ``manage.py seed_benchmark`` (200 clients,
10 million events over the last two months, rollups built):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/invoice_bench10m \\
        .venv/bin/python benchmarks/invoice_bench.py [--month YYYY-MM] [--pdfs 40]

Prints:
- the month-end run: drafts for every client with usage in the month (rollups refreshed
  first), then the same run again (drafts replaced), in seconds. Target: under 60 s.
- finalizing every draft (gapless numbers, snapshots, closed periods, PDF rendered and
  stored), inside a transaction that is rolled back so the database can be reused;
- PDF render time per invoice (median, p95, max over a sample). Target: under 1 s.
The events CSV, which streams through ``COPY`` on PostgreSQL, has its own benchmark
beside its floor: ``benchmarks/export_bench.py``; parallel finalization with PDFs:
``benchmarks/finalize_bench.py``.

Production settings (DEBUG off: no SQL logging, the cached template loader), as the
worker that runs the month-end job has them. The clock is fixed (time-machine) to noon on
the 15th of this month, so last month (filled in full by the seed) is invoiced whatever
the day of the run; the month-end run is printed beside its floor, ``COPY … TO STDOUT`` of
the month's daily rollup rows it reads, with the ratio and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agency.settings")
os.environ["DJANGO_DEBUG"] = "0"
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + "k" * 60)
os.environ.pop("REDIS_URL", None)
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="invoice-bench-"))

import django
import time_machine
from floor import copy_out_ms, load_average, mid_month, versus_floor

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.utils import timezone  # noqa: E402

from agency.calendar import month_bounds, month_range, parse_month  # noqa: E402
from agency.models import Client  # noqa: E402
from billing.models import DailyRollup, Invoice, InvoiceLine, InvoiceStatus  # noqa: E402
from billing.pdf import invoice_pdf_render  # noqa: E402
from billing.services.invoices import (  # noqa: E402
    invoice_finalize,
    invoices_generate_month,
    previous_month_of,
)
from tracking.models import UsageEvent  # noqa: E402


class Rollback(Exception):
    pass


def seconds(began: float) -> float:
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--month", help="YYYY-MM (default: last month)")
    parser.add_argument("--pdfs", type=int, default=40, help="Invoices in the PDF sample")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("Run against the PostgreSQL database made by manage.py seed_benchmark.")
    moment = mid_month(months_ago=0)
    print(f"clock fixed to {moment:%Y-%m-%d %H:%M} UTC; {load_average()}")
    with time_machine.travel(moment, tick=True):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    month = parse_month(args.month) if args.month else previous_month_of(timezone.now())
    first_moment, last_moment = month_range(month)
    events = UsageEvent.objects.filter(
        occurred_at__gte=first_moment, occurred_at__lt=last_moment
    ).count()
    issued = Invoice.objects.filter(month=month).exclude(status=InvoiceStatus.DRAFT).count()
    if issued:
        sys.exit(f"{issued} invoices of {month:%Y-%m} are already issued; use another month.")
    print(f"month {month:%Y-%m}: {events:,} events, {Client.objects.count()} clients")

    began = time.perf_counter()
    first = invoices_generate_month(month=month)
    first_s = seconds(began)
    began = time.perf_counter()
    again = invoices_generate_month(month=month)
    again_s = seconds(began)
    lines = InvoiceLine.objects.filter(invoice__month=month).count()
    print(f"month-end run (drafts for {first.generated} clients, {lines:,} lines): {first_s:.2f} s")
    print(f"same run again (drafts replaced, {again.generated} invoices): {again_s:.2f} s")
    first_day, last_day = month_bounds(month)
    rows = DailyRollup.objects.filter(day__gte=first_day, day__lte=last_day)
    sql, params = rows.query.sql_with_params()
    floor_ms = min(copy_out_ms(sql, params)[0] for _ in range(3))
    print(
        f"  beside it: COPY TO STDOUT of the month's {rows.count():,} rollup rows: "
        + versus_floor(again_s * 1000, floor_ms)
    )
    print("  target: under 60 s")

    ids = list(
        Invoice.objects.filter(month=month, status=InvoiceStatus.DRAFT)
        .annotate(n=Count("lines"))
        .order_by("-n", "pk")
        .values_list("pk", flat=True)
    )
    began = time.perf_counter()
    try:
        with transaction.atomic():
            for invoice_id in ids:
                invoice_finalize(invoice_id=invoice_id)
            finalize_s = seconds(began)
            raise Rollback
    except Rollback:
        pass
    print(
        f"finalize {len(ids)} invoices (numbers, snapshots, PDF stored; rolled back): "
        f"{finalize_s:.2f} s, {finalize_s / max(len(ids), 1) * 1000:.0f} ms each"
    )

    sample = ids[: args.pdfs]
    invoice_pdf_render(Invoice.objects.get(pk=sample[-1]))  # fonts and CSS warm-up
    renders = []
    for invoice_id in sample:
        invoice = Invoice.objects.select_related("client").get(pk=invoice_id)
        began = time.perf_counter()
        invoice_pdf_render(invoice)
        renders.append(seconds(began))
    renders.sort()
    p95 = renders[min(len(renders) - 1, int(len(renders) * 0.95))]
    biggest = Invoice.objects.get(pk=ids[0])
    print(
        f"PDF render per invoice ({len(renders)} invoices, up to "
        f"{biggest.lines.count()} lines): median {statistics.median(renders) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, max {renders[-1] * 1000:.0f} ms  (target: under 1 s)"
    )


if __name__ == "__main__":
    main()
