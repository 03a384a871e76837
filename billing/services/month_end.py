"""The month-end run: drafting every client's invoice of a month, recorded so that a run
cut short (a worker killed halfway) is noticed and finished by the daily job.

Drafting is idempotent (one invoice per client and month, drafts replaced, issued ones
left alone), so finishing a run is simply running it again; two runs of one month at
once are safe too (each client's generation locks the client's row).
"""

from __future__ import annotations

from datetime import date, datetime

from django.db.models import F
from django.utils import timezone

from billing.models import MonthEndRun
from billing.services.invoices import RunResult, invoices_generate_month, previous_month_of


def month_end_run(*, month: date, now: datetime | None = None) -> RunResult:
    """Draft (or redraft) every client's invoice of ``month``, recording the run: marked
    unfinished first, finished only once every client is done."""
    started = now or timezone.now()
    run, _ = MonthEndRun.objects.get_or_create(month=month, defaults={"started_at": started})
    MonthEndRun.objects.filter(pk=run.pk).update(
        started_at=started, finished_at=None, attempts=F("attempts") + 1
    )
    result = invoices_generate_month(month=month, now=now)
    MonthEndRun.objects.filter(pk=run.pk).update(finished_at=now or timezone.now())
    return result


def month_end_unfinished(*, now: datetime | None = None) -> list[date]:
    """Months whose run started and never finished, plus last month if its run never
    started at all (the 1st's job missed: beat or every worker down)."""
    months = set(
        MonthEndRun.objects.filter(finished_at__isnull=True).values_list("month", flat=True)
    )
    last_month = previous_month_of(now or timezone.now())
    if not MonthEndRun.objects.filter(month=last_month).exists():
        months.add(last_month)
    return sorted(months)


def month_end_resume(*, now: datetime | None = None) -> list[date]:
    """Finish every unfinished or missed month-end run (the daily job's first step).
    Returns the months it ran."""
    months = month_end_unfinished(now=now)
    for month in months:
        month_end_run(month=month, now=now)
    return months
