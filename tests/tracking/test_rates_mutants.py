"""Tests that kill the mutants of tracking/rates.py the mutation runs left (bin/mutate;
README, "Mutation testing"): the words of a sanity refusal, the optional columns read as
written (or empty when absent), the bounds of a price and of the batch discount."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from tracking.models import ModelRate
from tracking.rates import (
    PriceWarning,
    RateBook,
    RateFileError,
    RateSanityError,
    model_rates_load,
    parse_rates_csv,
    rate_price_warnings,
)

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


# --- the optional columns ----------------------------------------------------------------


def test_optional_text_columns_are_read_as_written():
    (row,) = parse_rates_csv(
        "provider,model,aliases,display_name,effective_from,input,output,notes\n"
        "anthropic,claude-x,claude-x-latest   claude-x-2026,Claude X,2026-01-01,3,15,list price\n"
    )

    assert (row["aliases"], row["display_name"], row["notes"]) == (
        "claude-x-latest claude-x-2026",
        "Claude X",
        "list price",
    )


def test_absent_optional_text_columns_are_empty():
    (row,) = parse_rates_csv(HEADER + "anthropic,claude-x,2026-01-01,3,15\n")

    assert (row["aliases"], row["display_name"], row["notes"]) == ("", "", "")


def test_every_unknown_column_is_named():
    with pytest.raises(RateFileError) as refused:
        parse_rates_csv(
            "provider,model,effective_from,input,output,cache_reed,colour\n"
            "anthropic,claude-x,2026-01-01,3,15,0.3,red\n"
        )

    assert str(refused.value) == "unknown columns: cache_reed, colour"


def test_the_long_context_threshold_is_read():
    (row,) = parse_rates_csv(
        "provider,model,effective_from,input,output,long_context_threshold,long_context_input\n"
        "anthropic,claude-x,2026-01-01,3,15,200000,6\n"
    )

    assert (row["long_context_threshold"], row["long_context_input_usd_per_mtok"]) == (
        200000,
        Decimal("6"),
    )


# --- bounds ------------------------------------------------------------------------------


def test_a_free_model_loads_with_zero_prices():
    (row,) = parse_rates_csv(HEADER + "anthropic,claude-free,2026-01-01,0,0\n")

    assert (row["input_usd_per_mtok"], row["output_usd_per_mtok"]) == (Decimal("0"), Decimal("0"))


def _discount(value: str) -> Decimal:
    (row,) = parse_rates_csv(
        "provider,model,effective_from,input,output,batch_discount_pct\n"
        f"anthropic,claude-x,2026-01-01,3,15,{value}\n"
    )
    return row["batch_discount_pct"]


def test_a_batch_discount_of_100_percent_loads():
    assert _discount("100") == Decimal("100")


def test_a_batch_discount_over_100_percent_is_refused_with_its_line():
    with pytest.raises(RateFileError) as refused:
        _discount("100.5")

    assert str(refused.value) == "line 2, column batch_discount_pct: must be at most 100"


def test_a_batch_discount_that_is_not_a_number_is_refused_with_its_line():
    with pytest.raises(RateFileError) as refused:
        _discount("half")

    assert str(refused.value) == "line 2, column batch_discount_pct: 'half' is not a number"


def test_a_long_context_threshold_that_is_not_an_integer_is_refused_with_its_line():
    with pytest.raises(RateFileError) as refused:
        parse_rates_csv(
            "provider,model,effective_from,input,output,long_context_threshold\n"
            "anthropic,claude-x,2026-01-01,3,15,200k\n"
        )

    assert str(refused.value) == "line 2, column long_context_threshold: must be an integer"


# --- the sanity check goes on past a price it cannot compare -----------------------------

FABLE = {"provider": "anthropic", "model": "claude-fable-5"}  # reference: input 10, output 50


def test_a_missing_price_does_not_stop_the_check_of_the_next_ones():
    # No input price (a zero is the same): the output price is still checked.
    fields = {**FABLE, "input_usd_per_mtok": None, "output_usd_per_mtok": Decimal("5000")}

    warnings = rate_price_warnings(fields, previous=None, line=4)

    assert [str(w) for w in warnings] == [
        "line 4, column output: 5000 differs 100× from the reference price (50)"
    ]


def test_a_price_the_previous_row_lacks_is_still_checked_against_the_reference():
    # The previous row had no cache read price: nothing to compare there, so the
    # reference (1) is next, and 100 is 100× that.
    previous = {
        **FABLE,
        "effective_from": date(2026, 1, 1),
        "input_usd_per_mtok": Decimal("10"),
        "output_usd_per_mtok": Decimal("50"),
        "cache_read_usd_per_mtok": None,
    }
    fields = {**previous, "cache_read_usd_per_mtok": Decimal("100")}

    warnings = rate_price_warnings(fields, previous=previous)

    assert [str(w) for w in warnings] == [
        "cache_read: 100 differs 100× from the reference price (1)"
    ]
