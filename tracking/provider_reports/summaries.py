"""The provider's report summed per day for the reconciliation (``ReportModelDay``,
``ReportAccountDay``).

Whatever replaces a day's ``ProviderReportRow``s refreshes that day's sums in the same
transaction (the sync, the demo data): the reconciliation then reads ~1,500 sums for a
month instead of the 300,000 rows of 50 models × 200 API keys, and shows a sync as soon
as it commits.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, Sum

from agency.db import ExactSum
from tracking.models import (
    REPORT_PRICE_DIMENSIONS,
    REPORT_TOKEN_COLUMNS,
    DataKind,
    ProviderReportRow,
    ReportAccountDay,
    ReportModelDay,
)
from tracking.services import month_versions_touch


@transaction.atomic
def report_summaries_refresh(*, provider: str, since: date, until: date) -> None:
    """Replace the sums of ``provider``'s report for the UTC days ``since..until`` with
    the sums of its current rows. Idempotent."""
    days = {"provider": provider, "day__range": (since, until)}
    ReportModelDay.objects.filter(**days).delete()
    ReportAccountDay.objects.filter(**days).delete()
    rows = ProviderReportRow.objects.filter(**days).order_by()
    by_model = rows.values("day", "model", *REPORT_PRICE_DIMENSIONS).annotate(
        n_rows=Count("pk"),
        n_amount=Count("amount_cents"),
        n_list=Count("list_amount_cents"),
        n_requests=Sum("requests"),
        amount=ExactSum("amount_cents"),
        list_amount=ExactSum("list_amount_cents"),
        **{f"sum_{name}": Sum(name) for name in REPORT_TOKEN_COLUMNS},
    )
    models = []
    for values in by_model:
        group: dict[str, Any] = dict(values)
        models.append(
            ReportModelDay(
                provider=provider,
                day=group["day"],
                model=group["model"],
                **{name: group[name] for name in REPORT_PRICE_DIMENSIONS},
                rows=group["n_rows"],
                amount_rows=group["n_amount"],
                list_rows=group["n_list"],
                requests=group["n_requests"] or 0,
                amount_cents=group["amount"],
                list_amount_cents=group["list_amount"],
                **{name: group[f"sum_{name}"] or 0 for name in REPORT_TOKEN_COLUMNS},
            )
        )
    ReportModelDay.objects.bulk_create(models, batch_size=2000)
    by_account = rows.values("day", "api_key_id", "workspace_id").annotate(
        amount=ExactSum("amount_cents")
    )
    ReportAccountDay.objects.bulk_create(
        (
            ReportAccountDay(
                provider=provider,
                day=group["day"],
                api_key_id=group["api_key_id"],
                workspace_id=group["workspace_id"],
                amount_cents=group["amount"],
            )
            for group in by_account
        ),
        batch_size=2000,
    )
    # What was computed from these months (the stored reconciliation) is now stale.
    replaced = [since + timedelta(days=n) for n in range((until - since).days + 1)]
    month_versions_touch(kind=DataKind.REPORT, days=replaced)
