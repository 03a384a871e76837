"""Cross-check the shipped rate table against LiteLLM's price map.

LiteLLM is a cross-check, not the authority (its map has known errors): every
model both files cover must agree on the current row, or the difference must be explained
in the row's notes. The entries for our models are kept in data/litellm_prices_subset.json
so that the check runs in any checkout; given the full map (``LITELLM_PRICES_JSON``, the
path of LiteLLM's ``model_prices_and_context_window_backup.json``), a second test proves the
copy is faithful.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from tracking.rates import DEFAULT_RATES_CSV, parse_rates_csv

FULL_REFERENCE = Path(os.environ.get("LITELLM_PRICES_JSON") or "/nonexistent")
SUBSET = Path(__file__).resolve().parent / "data" / "litellm_prices_subset.json"
PREFIX = {"anthropic": "", "openai": "", "google": "gemini/"}
FIELDS = {
    "input_usd_per_mtok": "input_cost_per_token",
    "output_usd_per_mtok": "output_cost_per_token",
    "cache_write_5m_usd_per_mtok": "cache_creation_input_token_cost",
    "cache_write_1h_usd_per_mtok": "cache_creation_input_token_cost_above_1hr",
    "cache_read_usd_per_mtok": "cache_read_input_token_cost",
}


def current_rows() -> list[dict]:
    latest: dict[tuple[str, str], dict] = {}
    for row in parse_rates_csv(DEFAULT_RATES_CSV.read_text()):
        key = (row["provider"], row["model"])
        if key not in latest or row["effective_from"] > latest[key]["effective_from"]:
            latest[key] = row
    return list(latest.values())


def test_current_rates_agree_with_the_reference_or_explain_why():
    reference = json.loads(SUBSET.read_text())["models"]
    compared = 0
    for row in current_rows():
        entry = reference.get(PREFIX[row["provider"]] + row["model"])
        if entry is None:
            continue
        for ours, theirs in FIELDS.items():
            if row[ours] is None or theirs not in entry:
                continue
            their_price = Decimal(str(entry[theirs])) * 1_000_000
            if row[ours] != their_price:
                assert "LiteLLM" in row["notes"], (
                    f"{row['model']} {ours}: {row[ours]} vs {their_price}"
                )
            compared += 1
    assert compared > 60


@pytest.mark.skipif(not FULL_REFERENCE.exists(), reason="set LITELLM_PRICES_JSON to check the copy")
def test_the_kept_subset_is_a_faithful_copy_of_the_full_reference():
    full = json.loads(FULL_REFERENCE.read_text())
    subset = json.loads(SUBSET.read_text())["models"]
    assert len(subset) > 20
    for key, prices in subset.items():
        assert prices == {field: full[key][field] for field in prices}, key


def test_the_apps_reference_prices_are_the_kept_subset():
    """The app's own reference map (tracking/data, used by the loader's sanity check) holds
    the same prices as the test copy of LiteLLM's, in USD per million tokens."""
    from tracking.rates import REFERENCE_PRICES_JSON

    kept = json.loads(REFERENCE_PRICES_JSON.read_text())["prices"]
    subset = json.loads(SUBSET.read_text())["models"]
    names = {"input": FIELDS["input_usd_per_mtok"], "output": FIELDS["output_usd_per_mtok"]}
    names |= {
        "cache_write_5m": FIELDS["cache_write_5m_usd_per_mtok"],
        "cache_write_1h": FIELDS["cache_write_1h_usd_per_mtok"],
        "cache_read": FIELDS["cache_read_usd_per_mtok"],
    }
    assert len(kept) == len(subset)
    for key, prices in kept.items():
        provider, model = key.split("/")
        theirs = subset[PREFIX[provider] + model]
        assert {name: Decimal(price) for name, price in prices.items()} == {
            name: Decimal(str(theirs[field])) * 1_000_000
            for name, field in names.items()
            if field in theirs
        }, key
