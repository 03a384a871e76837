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
- streaming the raw-event CSV of the biggest client's month: rows per second and the
  process's resident memory growth while streaming (it must not grow with the row count).

Production settings (DEBUG off: no SQL logging, the cached template loader), as the
worker that runs the month-end job has them.
"""

from __future__ import annotations

import argparse
import os
import resource
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

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.utils import timezone  # noqa: E402

from agency.calendar import month_range, next_month, parse_month  # noqa: E402
from agency.models import Client  # noqa: E402
from billing.csv_export import csv_lines, event_rows  # noqa: E402
from billing.models import Invoice, InvoiceLine, InvoiceStatus  # noqa: E402
from billing.pdf import invoice_pdf_render  # noqa: E402
from billing.selectors.invoices import month_events  # noqa: E402
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


def rss_mib() -> float:
    """Current resident memory. Not ``ru_maxrss``: that is the high-water mark of the
    whole run, which the PDF rendering before has already raised."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--month", help="YYYY-MM (default: last month)")
    parser.add_argument("--pdfs", type=int, default=40, help="Invoices in the PDF sample")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("Run against the PostgreSQL database made by manage.py seed_benchmark.")
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

    client = Client.objects.filter(invoices__month=month).order_by("-invoices__total_usd").first()
    assert client is not None
    queryset = month_events(client, month)
    days = (month, next_month(month))
    rss_before = rss_peak = rss_mib()
    began = time.perf_counter()
    count = size = 0
    with transaction.atomic():  # a server-side cursor lives in a transaction
        for line in csv_lines(event_rows(queryset, client_id=client.pk, days=days, show_cost=True)):
            count += 1
            size += len(line)
            if count % 10_000 == 0:
                rss_peak = max(rss_peak, rss_mib())
    csv_s = seconds(began)
    rss_growth = max(rss_peak, rss_mib()) - rss_before
    print(
        f"events CSV of {client.slug}'s month: {count - 1:,} rows, {size / 1e6:.0f} MB in "
        f"{csv_s:.1f} s ({(count - 1) / csv_s:,.0f} rows/s), RSS growth {rss_growth:.0f} MiB"
    )


if __name__ == "__main__":
    main()
