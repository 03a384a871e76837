"""The usage buckets are declared once (tracking.buckets); every consumer derives from it,
so adding a bucket is one entry there plus a migration."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.db import models

from agency.db import CostField
from billing.management.commands import seed_benchmark
from billing.models import DailyRollup, HourlyRollup, InvoiceLine
from tracking import buckets as declaration
from tracking import models as tracking_models
from tracking.buckets import BUCKETS, Bucket, Reach, cost_columns, token_columns
from tracking.models import ModelRate, UsageEvent

ROOT = Path(__file__).resolve().parents[2]
# Every module that stores, sums, bills, exports or shows the buckets.
CONSUMERS = [
    "tracking/models.py",
    "tracking/services.py",
    "billing/models.py",
    "billing/admin.py",
    "billing/csv_export.py",
    "billing/pdf.py",
    "billing/services/rollups.py",
    "billing/services/invoices.py",
    "billing/management/commands/seed_benchmark.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "billing/selectors").rglob("*.py")),
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "billing/templatetags").rglob("*.py")),
]
COLUMNS = {name for b in BUCKETS for name in (b.token_column, b.cost_column) if name}


def bucket_columns(model: type[models.Model]) -> list[str]:
    return [f.name for f in model._meta.concrete_fields if f.name in COLUMNS]


def test_each_model_stores_the_buckets_that_reach_it() -> None:
    assert bucket_columns(UsageEvent) == [*token_columns(Reach.EVENT), *cost_columns(Reach.EVENT)]
    assert bucket_columns(DailyRollup) == [
        *token_columns(Reach.ROLLUP),
        *cost_columns(Reach.ROLLUP),
    ]
    assert bucket_columns(InvoiceLine) == [
        *token_columns(Reach.INVOICE),
        *cost_columns(Reach.INVOICE),
    ]
    assert bucket_columns(HourlyRollup) == []


def test_what_reaches_where_is_as_the_invoices_and_rollups_need_it() -> None:
    # Reasoning is inside output: rolled up for the record, never billed on its own.
    # Web fetches are free: kept on the event only. The discount has no quantity.
    assert "reasoning_tokens" in token_columns(Reach.ROLLUP)
    assert "reasoning_tokens" not in token_columns(Reach.INVOICE)
    assert "web_fetch_requests" not in token_columns(Reach.ROLLUP)
    assert len(token_columns(Reach.EVENT)) == 8
    assert len(token_columns(Reach.ROLLUP)) == 7
    assert len(token_columns(Reach.INVOICE)) == 6
    assert len(cost_columns(Reach.INVOICE)) == 7


def test_every_price_field_is_a_column_of_the_rate_table() -> None:
    rate_fields = {f.name for f in ModelRate._meta.concrete_fields}
    assert {b.price_field for b in BUCKETS if b.price_field} <= rate_fields


@pytest.mark.parametrize("path", CONSUMERS)
def test_no_consumer_spells_a_bucket_column(path: str) -> None:
    """A column name written out (a string, an attribute, a keyword) would be one more
    place to edit when a bucket is added: consumers read the declaration instead."""
    tree = ast.parse((ROOT / path).read_text())
    spelled = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in COLUMNS:
            spelled.add(f"{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr in COLUMNS:
            spelled.add(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.keyword) and node.arg in COLUMNS:
            spelled.add(f"{node.lineno}: {node.arg}=")
    assert sorted(spelled) == []


def test_a_new_bucket_gets_its_columns_and_seed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    audio = Bucket(
        "audio_input", "Audio input", declaration.MTOK, Reach.INVOICE, "audio_input_tokens",
        "cost_audio_input_usd", "audio_input_usd_per_mtok", group="input",
    )  # fmt: skip
    monkeypatch.setattr(declaration, "BUCKETS", (*BUCKETS, audio))

    event = tracking_models._bucket_mixin("AudioEvent", Reach.EVENT, per_event=True)
    line = tracking_models._bucket_mixin("AudioLine", Reach.INVOICE, per_event=False)
    event_fields = {f.name: f for f in event._meta.local_fields}
    line_fields = {f.name: f for f in line._meta.local_fields}

    assert isinstance(event_fields["audio_input_tokens"], models.BigIntegerField)
    assert isinstance(event_fields["cost_audio_input_usd"], CostField)
    assert event_fields["cost_audio_input_usd"].null
    assert line_fields["cost_audio_input_usd"].default == 0
    assert "audio_input_tokens" in token_columns(Reach.INVOICE)
    sql = seed_benchmark.bucket_sql()
    columns = sql["bucket_columns"].split(", ")
    assert columns[-2:] == ["audio_input_tokens", "cost_audio_input_usd"]
    assert len(columns) == len(sql["bucket_values"].split(", "))


def test_request_counts_stay_four_byte_integers_on_events() -> None:
    web_search = next(b for b in BUCKETS if b.name == "web_search")
    assert web_search.unit.requests
    assert isinstance(UsageEvent._meta.get_field("web_search_requests"), models.IntegerField)
    assert not isinstance(UsageEvent._meta.get_field("web_search_requests"), models.BigIntegerField)
    assert isinstance(DailyRollup._meta.get_field("web_search_requests"), models.BigIntegerField)
