"""Existing per-model rollups get their billed sums and untagged calls here: every row is
written again from ``DailyRollup`` in one grouped pass, in day order as the rollup job
writes them (an UPDATE in place would leave one day's rows scattered over the table, and
the overview reads a day of every client at once); from now on the rollup rebuild
writes them."""

from typing import Any

from django.db import migrations
from django.db.models import Q, Sum

import agency.db

TOKENS = (
    "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
    "output_tokens", "web_search_requests",
)  # fmt: skip

_SQL = """
INSERT INTO billing_modeldailyrollup (
    client_id, day, provider, model, events, unpriced_events, cost_usd, billed_usd,
    untagged_events, {tokens}
)
SELECT r.client_id, r.day, r.provider, r.model, SUM(r.events), SUM(r.unpriced_events),
       SUM(r.cost_usd), SUM(r.billed_usd),
       COALESCE(SUM(r.events) FILTER (WHERE r.project = ''), 0), {sums}
FROM billing_dailyrollup r
GROUP BY r.client_id, r.day, r.provider, r.model
ORDER BY r.day, r.client_id, r.provider, r.model
"""


def backfill(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM billing_modeldailyrollup")
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
        .annotate(b=agency.db.ExactSum("billed_usd"), u=Sum("events", filter=Q(project="")))
    )
    for g in groups:
        model.objects.filter(
            client_id=g["client_id"], day=g["day"], provider=g["provider"], model=g["model"]
        ).update(billed_usd=g["b"] or 0, untagged_events=g["u"] or 0)


def forget(apps: Any, schema_editor: Any) -> None:
    apps.get_model("billing", "ModelDailyRollup").objects.update(billed_usd=0, untagged_events=0)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0018_overview2_model_rollup_billed"),
    ]

    operations = [
        migrations.RunPython(backfill, forget, elidable=True),
    ]
