"""Existing per-model rollups get the reconciliation's sums of them (TrackedModelDay per
day and model, TrackedClientMonth per client, month and provider) here, in one grouped
pass each; from now on the rollup rebuild keeps them current."""

from typing import Any

from django.db import migrations
from django.db.models import Count, Sum

import agency.db

TOKENS = (
    "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
    "output_tokens", "web_search_requests",
)  # fmt: skip

_DAYS_SQL = """
INSERT INTO billing_trackedmodelday (
    day, provider, model, rows, events, unpriced_events, cost_usd, {tokens}
)
SELECT r.day, r.provider, r.model, COUNT(*), SUM(r.events), SUM(r.unpriced_events),
       SUM(r.cost_usd), {sums}
FROM billing_modeldailyrollup r
GROUP BY r.day, r.provider, r.model
"""

_MONTHS_SQL = """
INSERT INTO billing_trackedclientmonth (client_id, month, provider, rows, cost_usd)
SELECT r.client_id, date_trunc('month', r.day)::date, r.provider, COUNT(*), SUM(r.cost_usd)
FROM billing_modeldailyrollup r
GROUP BY r.client_id, date_trunc('month', r.day)::date, r.provider
"""


def backfill(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _DAYS_SQL.format(
                    tokens=", ".join(TOKENS), sums=", ".join(f"SUM(r.{t})" for t in TOKENS)
                )
            )
            cursor.execute(_MONTHS_SQL)
            cursor.execute("ANALYZE billing_trackedmodelday")
            cursor.execute("ANALYZE billing_trackedclientmonth")
        return
    rollups = apps.get_model("billing", "ModelDailyRollup").objects.order_by()
    days = apps.get_model("billing", "TrackedModelDay")
    groups = rollups.values("day", "provider", "model").annotate(
        n=Count("pk"),
        e=Sum("events"),
        u=Sum("unpriced_events"),
        c=agency.db.ExactSum("cost_usd"),
        **{f"s_{t}": Sum(t) for t in TOKENS},
    )
    days.objects.bulk_create(
        [
            days(
                day=g["day"], provider=g["provider"], model=g["model"], rows=g["n"],
                events=g["e"] or 0, unpriced_events=g["u"] or 0, cost_usd=g["c"] or 0,
                **{t: g[f"s_{t}"] or 0 for t in TOKENS},
            )  # fmt: skip
            for g in groups
        ],
        batch_size=1000,
    )
    months = apps.get_model("billing", "TrackedClientMonth")
    sums: dict[tuple[int, Any, str], list[Any]] = {}
    for client_id, day, provider, cost in rollups.values_list(
        "client_id", "day", "provider", "cost_usd"
    ):
        entry = sums.setdefault((client_id, day.replace(day=1), provider), [0, 0])
        entry[0] += 1
        entry[1] += cost
    months.objects.bulk_create(
        [
            months(client_id=client_id, month=month, provider=provider, rows=n, cost_usd=cost)
            for (client_id, month, provider), (n, cost) in sums.items()
        ],
        batch_size=1000,
    )


def forget(apps: Any, schema_editor: Any) -> None:
    apps.get_model("billing", "TrackedModelDay").objects.all().delete()
    apps.get_model("billing", "TrackedClientMonth").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0016_reconfast_tracked_sums"),
    ]

    operations = [
        migrations.RunPython(backfill, forget, elidable=True),
    ]
