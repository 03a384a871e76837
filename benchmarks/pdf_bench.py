"""Invoice PDF render benchmark: before (a fresh WeasyPrint per invoice, the stylesheet
of ``--before-ref`` in the HTML, flex layout, default URL fetcher) and after
(``billing.pdf``: renderer prepared once per process, float layout) in the same run,
interleaved, on the same invoices.

    .venv/bin/python benchmarks/pdf_bench.py --database-url URL [--month 2026-11]
        [--pdfs 40] [--rounds 2]

On a ``manage.py seed_benchmark`` database, with the clock fixed to the 15th of the
month after ``--month`` at 12:00 UTC (time-machine), production settings. The month's
drafts are read; if there are none, the month-end run makes them first and they are
committed (run it on a scratch copy of the benchmark database, not a shared one). The
``--pdfs`` drafts with the most lines are rendered ``--rounds`` times each way; p50, p95
and max per way, and the load average before and after. Target: p95 < 300 ms. There
is no COPY floor for a PDF; the floor printed is the template rendering alone (the HTML
every way starts from).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
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
    os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="pdf-bench-"))
    import django

    django.setup()


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def _figures(label: str, values: list[float]) -> str:
    return (
        f"{label}: p50 {statistics.median(values):.0f} ms, p95 {_p95(values):.0f} ms, "
        f"max {max(values):.0f} ms"
    )


def _stylesheet_at(ref: str) -> str:
    """The invoice stylesheet as it was at a git commit (inline in the template then)."""
    template = subprocess.run(
        ["git", "show", f"{ref}:templates/billing/invoice_pdf.html"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent,
    ).stdout
    return template.split("<style>", 1)[1].split("</style>", 1)[0]


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    import time_machine
    from django.conf import settings
    from django.db.models import Count

    from agency.calendar import next_month, parse_month
    from billing.models import Invoice, InvoiceStatus
    from billing.pdf import STYLESHEET, invoice_pdf_html, invoice_pdf_render
    from billing.services.invoices import invoices_generate_month

    month = parse_month(args.month)
    moment = dt.datetime.combine(next_month(month).replace(day=15), dt.time(12), dt.UTC)
    print(f"{_load()}; clock fixed to {moment:%Y-%m-%d %H:%M} UTC")
    with time_machine.travel(moment, tick=True):
        drafts = Invoice.objects.filter(month=month, status=InvoiceStatus.DRAFT)
        if not drafts.exists():
            began = time.perf_counter()
            made = invoices_generate_month(month=month)
            print(
                f"made {made.generated} drafts of {month:%Y-%m} (committed) in "
                f"{time.perf_counter() - began:.1f} s"
            )
        ids = list(
            drafts.annotate(n=Count("lines")).order_by("-n", "pk").values_list("pk", flat=True)
        )[: args.pdfs]
        invoices = [Invoice.objects.select_related("client").get(pk=pk) for pk in ids]
        most = invoices[0].lines.count()
        print(f"{len(invoices)} drafts of {month:%Y-%m}, up to {most} lines each")

        css = _stylesheet_at(args.before_ref) if args.before_ref else STYLESHEET.read_text()

        def before(invoice: Invoice) -> bytes:
            from weasyprint import HTML

            html = invoice_pdf_html(invoice).replace("</head>", f"<style>{css}</style></head>")
            pdf = HTML(string=html, base_url=str(settings.BASE_DIR)).write_pdf()
            assert pdf is not None
            return bytes(pdf)

        # Warm-up, both ways: imports, Pango and fontconfig, the template loader.
        before(invoices[-1])
        invoice_pdf_render(invoices[-1])
        timings: dict[str, list[float]] = {"before": [], "after": [], "template": []}
        sizes: dict[str, int] = {"before": 0, "after": 0}
        for _ in range(args.rounds):
            for invoice in invoices:
                began = time.perf_counter()
                invoice_pdf_html(invoice)
                timings["template"].append((time.perf_counter() - began) * 1000)
                for name, render in (("before", before), ("after", invoice_pdf_render)):
                    began = time.perf_counter()
                    pdf = render(invoice)
                    timings[name].append((time.perf_counter() - began) * 1000)
                    sizes[name] = max(sizes[name], len(pdf))
    print(_figures("before: fresh WeasyPrint per invoice", timings["before"]))
    after_p95 = _p95(timings["after"])
    print(
        _figures("after:  renderer prepared once", timings["after"])
        + f"  (target p95 < 300 ms: {'met' if after_p95 < 300 else 'MISSED'})"
    )
    floor = statistics.median(timings["template"])
    print(
        f"floor:  the template alone: p50 {floor:.0f} ms; after p95 / before p95 = "
        f"{after_p95 / _p95(timings['before']):.2f}; largest PDF {sizes['before'] / 1024:.0f} "
        f"KiB before, {sizes['after'] / 1024:.0f} KiB after"
    )
    print(_load())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--month", default="2026-11")
    parser.add_argument("--pdfs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--before-ref",
        default="e184c2a",
        help="Commit whose stylesheet 'before' uses ('' for today's stylesheet).",
    )
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url (or BENCH_DATABASE_URL) is required")
    _setup(args.database_url)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
