"""The API declaration (tracking/schema.py) agrees with the columns it fills and with the
README's field table."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
from django.db.models import CharField

from agency.calendar import MonthError, parse_month
from agency.models import Project
from tracking.ingest.rows import _TEXT_COLUMNS, COMPUTED_TEXT, TAG_FIELDS
from tracking.models import PricingStatus, UsageEvent
from tracking.models import Provider as ProviderChoices
from tracking.pricing import PROVIDERS
from tracking.schema import MAX_JSON_BYTES, MAX_JSON_DEPTH, MONTH, Event, Provider
from tracking.services import event_fingerprint

README = Path(__file__).resolve().parents[2] / "README.md"
EVENT_SCHEMA: dict[str, Any] = msgspec.json.schema(Event)["$defs"]["Event"]


def declared(name: str) -> dict[str, Any]:
    """A field's schema, without the ``null`` a optional field also admits."""
    prop = EVENT_SCHEMA["properties"][name]
    return next(s for s in prop.get("anyOf", [prop]) if s.get("type") != "null")


def column_length(model: Any, name: str) -> int:
    field = model._meta.get_field(name)
    assert isinstance(field, CharField) and field.max_length
    return field.max_length


def readme_event_table() -> dict[str, str]:
    """Field name → its rule, from the table after "Each event:" in the README."""
    text = README.read_text()
    table = text[text.index("Each event:") :].split("\n\n")[1]
    rows: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        names, rule = line.strip("|").split("|", 1)
        for name in re.findall(r"`([a-z_]+)`", names):
            rows[name] = rule.strip()
    return rows


def test_the_providers_are_the_models_and_the_pricing_engines():
    assert get_args(Provider) == PROVIDERS == tuple(ProviderChoices.values)


@pytest.mark.parametrize(
    ("field", "model", "column"),
    [
        ("id", UsageEvent, "event_id"),
        ("model", UsageEvent, "model"),
        ("service_tier", UsageEvent, "service_tier"),
        ("project", Project, "name"),
        *((name, UsageEvent, column) for name, column in TAG_FIELDS.items() if name != "project"),
    ],
)
def test_a_declared_string_fits_the_column_it_is_stored_in(field, model, column):
    limit = declared(field).get("maxLength") or int(
        re.findall(r"\{1,(\d+)\}", declared(field)["pattern"])[0]
    )
    assert limit <= column_length(model, column)


def test_the_readme_table_lists_exactly_the_declared_fields():
    assert set(readme_event_table()) == set(EVENT_SCHEMA["properties"])


def test_the_readme_says_which_fields_are_required():
    table = readme_event_table()
    required = {name for name, rule in table.items() if rule.startswith("required")}
    assert required == set(EVENT_SCHEMA["required"])


def test_the_readme_gives_each_declared_limit():
    table = readme_event_table()
    for name in EVENT_SCHEMA["properties"]:
        schema = declared(name)
        limits = [schema.get(k) for k in ("maxLength", "maxProperties", "maximum")]
        limits += [schema.get("additionalProperties", {}).get("maxLength")]
        for limit in filter(None, limits):
            assert str(limit) in table[name] or f"{limit:,}" in table[name], (name, limit)


def test_the_readme_gives_the_json_bounds():
    table = readme_event_table()
    assert f"{MAX_JSON_BYTES // 1024} KiB" in table["usage"]
    assert f"{MAX_JSON_DEPTH} levels" in table["usage"]
    # metadata is flat (string values), so only its size is bounded beyond its keys.
    assert f"{MAX_JSON_BYTES // 1024} KiB" in table["metadata"]


def test_only_the_usage_strings_are_measured_per_event():
    # Everything else is bounded by the declaration (msgspec checks it in C) or filled
    # by ingest itself.
    assert {source for _, _, source in _TEXT_COLUMNS} == {
        "usage.service_tier",
        "usage.inference_geo",
        "usage.speed",
    }


def test_the_text_ingest_computes_fits_its_columns():
    fingerprint = event_fingerprint(
        client_id=1,
        provider="anthropic",
        model="m",
        usage={},
        occurred_at=datetime(2026, 11, 1, tzinfo=UTC),
        service_tier="",
    )
    assert len(fingerprint) == COMPUTED_TEXT["fingerprint"]
    assert max(len(v) for v in PricingStatus.values) == COMPUTED_TEXT["pricing_status"]
    for column, length in COMPUTED_TEXT.items():
        assert length <= column_length(UsageEvent, column)


def test_the_readme_gives_the_column_limits_of_usage_strings():
    rule = readme_event_table()["usage"]
    checked = [(s.removeprefix("usage."), n) for _, n, s in _TEXT_COLUMNS if s.startswith("usage.")]
    assert {name for name, _ in checked} == {"service_tier", "inference_geo", "speed"}
    for name, limit in checked:
        assert f"`{name}`" in rule and str(limit) in rule, (name, limit)


@pytest.mark.parametrize(
    "month", ["1999-12", "2000-01", "2026-11", "2099-12", "2100-12", "2101-01", "0000-00"]
)
def test_the_documented_month_pattern_is_the_calendars_range(month: str) -> None:
    try:
        parse_month(month)
        parses = True
    except MonthError:
        parses = False
    assert bool(re.match(MONTH, month)) is parses
