"""Existing rollups get their per-model sums (ModelDailyRollup) here, in one grouped pass
over ``DailyRollup``; from now on the rollup rebuild keeps them current."""

from typing import Any

from django.db import migrations
from django.db.models import Sum

import agency.db

TOKENS = (
    "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
    "output_tokens", "web_search_requests",
)  # fmt: skip

_SQL = """
INSERT INTO billing_modeldailyrollup (
    client_id, day, provider, model, events, unpriced_events, cost_usd, {tokens}
)
SELECT r.client_id, r.day, r.provider, r.model, SUM(r.events), SUM(r.unpriced_events),
       SUM(r.cost_usd), {sums}
FROM billing_dailyrollup r
GROUP BY r.client_id, r.day, r.provider, r.model
"""


def backfill(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _SQL.format(tokens=", ".join(TOKENS), sums=", ".join(f"SUM(r.{t})" for t in TOKENS))
            )
            cursor.execute("ANALYZE billing_modeldailyrollup")
        return
    model = apps.get_model("billing", "ModelDailyRollup")
    groups = (
        apps.get_model("billing", "DailyRollup")
        .objects.order_by()
        .values("client_id", "day", "provider", "model")
        .annotate(
            n=Sum("events"),
            u=Sum("unpriced_events"),
            c=agency.db.ExactSum("cost_usd"),
            **{f"s_{t}": Sum(t) for t in TOKENS},
        )
    )
    model.objects.bulk_create(
        [
            model(
                client_id=g["client_id"],
                day=g["day"],
                provider=g["provider"],
                model=g["model"],
                events=g["n"] or 0,
                unpriced_events=g["u"] or 0,
                cost_usd=g["c"] or 0,
                **{t: g[f"s_{t}"] or 0 for t in TOKENS},
            )  # fmt: skip
            for g in groups
        ],
        batch_size=1000,
    )


def forget(apps: Any, schema_editor: Any) -> None:
    apps.get_model("billing", "ModelDailyRollup").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0013_recon_model_rollup"),
    ]

    operations = [
        migrations.RunPython(backfill, forget, elidable=True),
    ]
