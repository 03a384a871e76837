"""Invariants of the pricing engine, over generated usage and rates (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agency.money import COST_PLACES
from tracking.pricing import RateCard, normalize_usage, price_usage
from tracking.rates import DEFAULT_RATES_CSV, parse_rates_csv

ANTHROPIC_KEYS = {
    "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
    "cache_creation", "server_tool_use", "service_tier", "inference_geo", "speed",
    "output_tokens_details", "iterations",
}  # fmt: skip
# Five buckets of at most 20M each: every valid call, up to the 100M-tokens-per-call cap.
tokens = st.integers(min_value=0, max_value=20_000_000)
prices = st.decimals(min_value="0", max_value="100", places=6)
optional_prices = st.none() | prices


@st.composite
def rate_cards(draw: st.DrawFn, *, long_context: bool = True) -> RateCard:
    card = RateCard(
        input=draw(prices),
        output=draw(prices),
        cache_write_5m=draw(optional_prices),
        cache_write_1h=draw(optional_prices),
        cache_read=draw(optional_prices),
        batch_discount_pct=draw(st.sampled_from([Decimal("0"), Decimal("50")])),
        web_search_per_1k=draw(optional_prices),
        us_inference_multiplier=draw(st.none() | st.just(Decimal("1.1"))),
        fast_multiplier=draw(st.none() | st.sampled_from([Decimal("2"), Decimal("6")])),
    )
    if long_context and draw(st.booleans()):
        from dataclasses import replace

        card = replace(
            card,
            long_context_threshold=draw(st.integers(1, 1_000_000)),
            long_context_input=draw(prices),
            long_context_output=draw(prices),
            long_context_cache_read=draw(optional_prices),
        )
    return card


@st.composite
def anthropic_usages(draw: st.DrawFn) -> dict:
    half = st.integers(min_value=0, max_value=20_000_000)
    write_5m, write_1h = draw(half), draw(half)
    usage = {
        "input_tokens": draw(tokens),
        "output_tokens": draw(tokens),
        "cache_read_input_tokens": draw(tokens),
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_creation": {
            "ephemeral_5m_input_tokens": write_5m,
            "ephemeral_1h_input_tokens": write_1h,
        },
        "server_tool_use": {"web_search_requests": draw(st.integers(0, 100))},
        "service_tier": draw(st.sampled_from(["standard", "batch", "priority"])),
        "inference_geo": draw(st.sampled_from(["global", "us", "not_available"])),
        "speed": draw(st.sampled_from(["standard", "fast"])),
    }
    return usage


@given(anthropic_usages(), rate_cards())
def test_cost_is_never_negative(usage, rate):
    assert price_usage(normalize_usage("anthropic", usage), rate).total >= 0


@given(anthropic_usages(), rate_cards())
def test_total_is_the_sum_of_its_components(usage, rate):
    result = price_usage(normalize_usage("anthropic", usage), rate)
    parts = [result.input, result.output, result.cache_write_5m, result.cache_write_1h]
    parts += [result.cache_read, result.web_search, result.discount]
    assert result.total == sum(parts, Decimal(0))


@given(anthropic_usages(), rate_cards(long_context=False), st.integers(0, 5))
def test_cost_is_linear_in_token_counts(usage, rate, factor):
    scaled = {
        **usage,
        "input_tokens": usage["input_tokens"] * factor,
        "output_tokens": usage["output_tokens"] * factor,
        "cache_read_input_tokens": usage["cache_read_input_tokens"] * factor,
        "cache_creation_input_tokens": usage["cache_creation_input_tokens"] * factor,
        "cache_creation": {k: v * factor for k, v in usage["cache_creation"].items()},
        "server_tool_use": {
            "web_search_requests": usage["server_tool_use"]["web_search_requests"] * factor
        },
    }
    counted = ("input_tokens", "output_tokens", "cache_read_input_tokens")
    if sum(scaled[k] for k in counted) + scaled["cache_creation_input_tokens"] > 100_000_000:
        return  # over the per-call cap: rejected, not priced
    one = price_usage(normalize_usage("anthropic", usage), rate).total
    many = price_usage(normalize_usage("anthropic", scaled), rate).total
    assert many == one * factor


@given(anthropic_usages(), rate_cards())
def test_batch_is_exactly_half_of_the_token_cost(usage, rate):
    from dataclasses import replace

    rate = replace(rate, batch_discount_pct=Decimal("50"))
    standard = price_usage(
        normalize_usage("anthropic", {**usage, "service_tier": "standard"}), rate
    )
    batch = price_usage(normalize_usage("anthropic", {**usage, "service_tier": "batch"}), rate)
    assert batch.total - batch.web_search == (standard.total - standard.web_search) / 2


@given(
    anthropic_usages(),
    rate_cards(),
    st.dictionaries(
        st.text(min_size=1).filter(lambda k: k not in ANTHROPIC_KEYS), st.integers() | st.text()
    ),
)
def test_unknown_fields_are_ignored_by_pricing_and_left_in_the_object(usage, rate, extra):
    with_extra = {**usage, **extra}
    before = dict(with_extra)
    assert price_usage(normalize_usage("anthropic", with_extra), rate) == price_usage(
        normalize_usage("anthropic", usage), rate
    )
    assert with_extra == before  # normalisation never edits the raw object it keeps


@pytest.mark.parametrize(
    "row",
    parse_rates_csv(DEFAULT_RATES_CSV.read_text()),
    ids=lambda r: f"{r['model']}@{r['effective_from']}",
)
@settings(max_examples=40)
@given(usage=anthropic_usages())
def test_storage_scale_never_alters_a_cost_at_shipped_rates(row, usage):
    """NUMERIC(30, 15) holds every cost the shipped rates can produce, exactly."""
    card = RateCard(
        input=row["input_usd_per_mtok"],
        output=row["output_usd_per_mtok"],
        cache_write_5m=row["cache_write_5m_usd_per_mtok"],
        cache_write_1h=row["cache_write_1h_usd_per_mtok"],
        cache_read=row["cache_read_usd_per_mtok"],
        long_context_threshold=row["long_context_threshold"],
        long_context_input=row["long_context_input_usd_per_mtok"],
        long_context_output=row["long_context_output_usd_per_mtok"],
        long_context_cache_write_5m=row["long_context_cache_write_5m_usd_per_mtok"],
        long_context_cache_write_1h=row["long_context_cache_write_1h_usd_per_mtok"],
        long_context_cache_read=row["long_context_cache_read_usd_per_mtok"],
        batch_discount_pct=row["batch_discount_pct"],
        web_search_per_1k=row["web_search_usd_per_1k"],
        us_inference_multiplier=row["us_inference_multiplier"],
        fast_multiplier=row["fast_multiplier"],
    )
    result = price_usage(normalize_usage("anthropic", usage), card)
    for amount in (result.input, result.output, result.cache_read, result.discount, result.total):
        assert amount.quantize(COST_PLACES) == amount
