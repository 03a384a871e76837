"""Existing report rows get their per-day sums (ReportModelDay, ReportAccountDay) here,
one grouped pass each; from now on whatever replaces a day's rows refreshes them."""

from typing import Any

from django.db import migrations
from django.db.models import Count, Sum

import agency.db

DIMENSIONS = ("service_tier", "context_window", "inference_geo", "speed", "batch")
TOKENS = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "web_search_requests",
)


def backfill(apps: Any, schema_editor: Any) -> None:
    rows = apps.get_model("tracking", "ProviderReportRow").objects.order_by()
    by_model = apps.get_model("tracking", "ReportModelDay")
    by_account = apps.get_model("tracking", "ReportAccountDay")
    by_model.objects.bulk_create(
        (
            by_model(
                provider=g["provider"],
                day=g["day"],
                model=g["model"],
                **{d: g[d] for d in DIMENSIONS},
                rows=g["n"],
                amount_rows=g["na"],
                list_rows=g["nl"],
                requests=g["r"] or 0,
                amount_cents=g["a"],
                list_amount_cents=g["la"],
                **{t: g[f"s_{t}"] or 0 for t in TOKENS},
            )
            for g in rows.values("provider", "day", "model", *DIMENSIONS).annotate(
                n=Count("pk"),
                na=Count("amount_cents"),
                nl=Count("list_amount_cents"),
                r=Sum("requests"),
                a=agency.db.ExactSum("amount_cents"),
                la=agency.db.ExactSum("list_amount_cents"),
                **{f"s_{t}": Sum(t) for t in TOKENS},
            )
        ),
        batch_size=2000,
    )
    by_account.objects.bulk_create(
        (
            by_account(
                provider=g["provider"],
                day=g["day"],
                api_key_id=g["api_key_id"],
                workspace_id=g["workspace_id"],
                amount_cents=g["a"],
            )
            for g in rows.values("provider", "day", "api_key_id", "workspace_id").annotate(
                a=agency.db.ExactSum("amount_cents")
            )
        ),
        batch_size=2000,
    )


def forget(apps: Any, schema_editor: Any) -> None:
    apps.get_model("tracking", "ReportModelDay").objects.all().delete()
    apps.get_model("tracking", "ReportAccountDay").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tracking", "0004_recon_report_summaries"),
    ]

    operations = [
        migrations.RunPython(backfill, forget, elidable=True),
    ]
