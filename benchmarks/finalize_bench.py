"""Finalization benchmark: a month's drafts finalized one after another (before) and as a
batch whose PDFs are rendered ahead by Celery workers (after), in the same run.

    .venv/bin/python benchmarks/finalize_bench.py --database-url URL \\
        --redis-url redis://127.0.0.1:6379/4 [--month 2026-11] [--workers 2]

On a ``manage.py seed_benchmark`` database holding the month's drafts (``pdf_bench.py``
makes them on a scratch copy), with the clock fixed to the 15th of the next month at
12:00 UTC (time-machine), production settings. Both ways run inside a transaction that
is rolled back, so the drafts stay drafts and the database can be reused. "After" starts
``--workers`` Celery worker processes (prefork, concurrency 1 each) on the Redis database
given (broker and cache; use your own, it is flushed), and this process is the daily
job: it enqueues one ``invoice_pdf_prepare_task`` per invoice, waits for them (rendering
the stragglers itself) and finalizes in order, the counter lock in each finalizing
transaction. Prints both times, the ratio, how many PDFs the workers prepared, the
number range (gapless), and the load average. Target: 200 finalizations under 30 s.
There is no COPY floor here; the floor printed is the finalizations alone with every PDF
already prepared (the part the counter lock serializes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _env(url: str, redis_url: str, media: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "agency.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "bench-" + "k" * 60,
        "MEDIA_ROOT": media,
    }


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


class Rollback(Exception):
    pass


def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    import datetime as dt

    import django

    os.environ.update(env)
    django.setup()

    import time_machine
    from django.core.cache import cache
    from django.db import transaction
    from django.db.models import Count

    from agency.calendar import next_month, parse_month
    from billing.models import Invoice, InvoiceStatus
    from billing.services.finalize import invoice_pdf_prepare_for, invoices_finalize_batch
    from billing.services.invoices import invoice_finalize
    from billing.tasks import invoice_pdf_prepare_task

    month = parse_month(args.month)
    moment = dt.datetime.combine(next_month(month).replace(day=15), dt.time(12), dt.UTC)
    ids = list(
        Invoice.objects.filter(month=month, status=InvoiceStatus.DRAFT)
        .annotate(n=Count("lines"))
        .order_by("pk")
        .values_list("pk", flat=True)
    )[: args.invoices]
    if not ids:
        print(f"no drafts of {month:%Y-%m}: run benchmarks/pdf_bench.py on this database first")
        return 1
    print(f"{_load()}; clock fixed to {moment:%Y-%m-%d %H:%M} UTC; {len(ids)} drafts")

    def serial() -> float:
        began = time.perf_counter()
        try:
            with transaction.atomic():
                for invoice_id in ids:
                    invoice_finalize(invoice_id=invoice_id, now=moment)
                raise Rollback
        except Rollback:
            pass
        return time.perf_counter() - began

    def batch(prepare: object) -> tuple[float, list[int], list[int]]:
        began = time.perf_counter()
        try:
            with transaction.atomic():
                result = invoices_finalize_batch(ids, prepare=prepare, now=moment)  # type: ignore[arg-type]
                seqs = sorted(
                    Invoice.objects.filter(pk__in=ids).values_list("seq", flat=True)  # type: ignore[type-var]
                )
                assert not result.failed and len(result.finalized) == len(ids), result
                raise Rollback(time.perf_counter() - began, result.stragglers, seqs)
        except Rollback as done:
            seconds, stragglers, seqs = done.args
        return seconds, stragglers, seqs

    with time_machine.travel(moment, tick=True):
        from billing.pdf import pdf_renderer

        pdf_renderer()  # prepared before the clock starts, both ways
        cache.clear()
        before = serial() if not args.skip_before else None
        if before is not None:
            print(f"before: {len(ids)} finalizations one after another: {before:.1f} s")

        command = [
            sys.executable, "-m", "celery", "-A", "agency", "worker", "--concurrency", "1",
            "--loglevel", "WARNING", "--without-heartbeat", "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        workers = [
            subprocess.Popen(
                [*command, "-n", f"bench{i}@%h"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(args.workers)
        ]
        try:
            # Workers up and warm: each renders one PDF before the clock starts (under
            # numbers never used, so these stay unused; the cache is not cleared while
            # workers run: the broker's queues live in the same Redis database).
            for i in range(args.workers * 2):
                invoice_pdf_prepare_task.delay(ids[0], 999_000 + i, moment.isoformat())
            time.sleep(args.warmup)

            def enqueue(invoice_id: int, seq: int, moment_iso: str) -> None:
                invoice_pdf_prepare_task.delay(invoice_id, seq, moment_iso)

            after, stragglers, seqs = batch(enqueue)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=30)

        # The floor: the same batch with every PDF already in the cache.
        def inline(invoice_id: int, seq: int, moment_iso: str) -> None:
            invoice_pdf_prepare_for(invoice_id=invoice_id, seq=seq, moment=moment)

        cache.clear()
        for position, invoice_id in enumerate(ids, start=1):
            base = seqs[0] - 1
            inline(invoice_id, base + position, moment.isoformat())
        floor, _, _ = batch(lambda *a: None)
        cache.clear()

    gapless = seqs == list(range(seqs[0], seqs[0] + len(ids)))
    print(
        f"after:  {len(ids)} finalizations, PDFs ahead on {args.workers} workers + this job: "
        f"{after:.1f} s; {len(ids) - len(stragglers)} PDFs prepared by the workers, "
        f"{len(stragglers)} by the job; numbers {seqs[0]}–{seqs[-1]} "
        f"{'gapless' if gapless else 'WITH GAPS'}  (target < 30 s: "
        f"{'met' if after < 30 else 'MISSED'})"
    )
    print(f"floor:  the finalizations alone, every PDF prepared: {floor:.1f} s")
    if before is not None:
        print(f"before / after = {before / after:.1f}x; after / floor = {after / floor:.1f}x")
    print(_load())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--month", default="2026-11")
    parser.add_argument("--invoices", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=8.0, help="Seconds for workers to start.")
    parser.add_argument("--skip-before", action="store_true")
    args = parser.parse_args()
    if not args.database_url or not args.redis_url:
        parser.error("--database-url and --redis-url are required")
    env = _env(args.database_url, args.redis_url, tempfile.mkdtemp(prefix="finalize-bench-"))
    return run(args, env)


if __name__ == "__main__":
    raise SystemExit(main())
