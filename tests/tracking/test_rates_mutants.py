"""Tests that kill the mutants of tracking/rates.py the first mutation run left (bin/mutate;
README, "Mutation testing"): the words of a sanity refusal."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from tracking.models import ModelRate
from tracking.rates import PriceWarning, RateBook, RateSanityError, model_rates_load

pytestmark = pytest.mark.django_db

HEADER = "provider,model,effective_from,input,output\n"


def test_a_warning_without_a_line_names_only_its_column():
    # Admin's form has no line: its warning starts at the column.
    warning = PriceWarning(
        "input", Decimal("300"), Decimal("100"), "the reference price", Decimal("3.000")
    )

    assert str(warning) == "input: 300 differs 100× from the reference price (3)"


def test_a_refusal_keeps_and_lists_every_warning():
    model_rates_load(text=HEADER + "anthropic,claude-x,2026-01-01,3,15\n")
    with pytest.raises(RateSanityError) as refused:
        model_rates_load(text=HEADER + "anthropic,claude-x,2026-06-01,300,1500\n")

    first = (
        "line 2, column input: 300 differs 100× from anthropic claude-x's row from 2026-01-01 (3)"
    )
    second = (
        "line 2, column output: 1500 differs 100× from anthropic claude-x's row from "
        "2026-01-01 (15)"
    )
    assert [str(w) for w in refused.value.warnings] == [first, second]
    assert str(refused.value) == (
        f"{first}; if it is right, load with --force; {second}; if it is right, load with --force"
    )


def test_a_row_is_compared_with_the_latest_earlier_row_of_its_model():
    # 3 → 30 → 300: each 10× its predecessor (allowed), 100× the first (refused if it were
    # compared with that one).
    result = model_rates_load(
        text=HEADER
        + "anthropic,claude-x,2026-01-01,3,15\n"
        + "anthropic,claude-x,2026-03-01,30,15\n"
        + "anthropic,claude-x,2026-06-01,300,15\n"
    )

    assert (result.created, result.forced) == (3, ())


def test_an_exact_model_id_resolves_as_the_model(rates):
    resolution = RateBook.load().resolve("anthropic", "claude-sonnet-4-5", date(2026, 11, 2))

    assert resolution is not None
    assert (resolution.rate.model, resolution.matched_by) == ("claude-sonnet-4-5", "model")


def test_a_price_with_as_many_decimal_places_as_its_column_loads_exactly():
    # Prices are stored with 9 decimal places: 9 fit, 10 are refused (test_rates.py).
    model_rates_load(text=HEADER + "anthropic,claude-x,2026-01-01,3.123456789,15\n")

    assert ModelRate.objects.get(model="claude-x").input_usd_per_mtok == Decimal("3.123456789")
