"""Tests that kill the mutants of tracking/pricing.py the mutation run left (bin/mutate;
README, "Mutation testing"): OpenAI and Gemini usage read field by field, and each
refusal naming its field and saying why."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from agency.money import ZERO
from tests.tracking.test_pricing import OPUS_46, SONNET_45
from tracking.models import ModelRate, ProviderReportRow
from tracking.pricing import (
    CostBreakdown,
    NormalizedUsage,
    RateCard,
    UsageError,
    normalize_usage,
    price_report_row,
    price_usage,
    report_usage,
)


@pytest.mark.parametrize(
    ("usage", "field", "message"),
    [
        # Chat Completions
        ({"prompt_tokens": None, "completion_tokens": 5}, "usage.prompt_tokens", "is required"),
        ({"prompt_tokens": 10}, "usage.completion_tokens", "is required"),
        ({"prompt_tokens": "10", "completion_tokens": 5}, "usage.prompt_tokens", "must be a non-negative integer"),
        ({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": 3}, "usage.prompt_tokens_details", "must be an object"),
        ({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": -1}}, "usage.prompt_tokens_details.cached_tokens", "must be a non-negative integer"),
        ({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cache_write_tokens": 1.0}}, "usage.prompt_tokens_details.cache_write_tokens", "must be a non-negative integer"),
        ({"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": []}, "usage.completion_tokens_details", "must be an object"),
        ({"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": True}}, "usage.completion_tokens_details.reasoning_tokens", "must be a non-negative integer"),
        ({"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 6}}, "usage.completion_tokens_details.reasoning_tokens", "exceeds the output token count"),
        ({"prompt_tokens": 10, "completion_tokens": 5, "service_tier": 1}, "usage.service_tier", "must be a string"),
        # Responses API
        ({"output_tokens": 5}, "usage.input_tokens", "is required"),
        ({"input_tokens": 10}, "usage.output_tokens", "is required"),
        ({"input_tokens": 10, "output_tokens": -5}, "usage.output_tokens", "must be a non-negative integer"),
        ({"input_tokens": 10, "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 6}}, "usage.output_tokens_details.reasoning_tokens", "exceeds the output token count"),
    ],
)  # fmt: skip
def test_openai_usage_refusals_name_their_field(usage: dict[str, Any], field: str, message: str):
    with pytest.raises(UsageError) as refused:
        normalize_usage("openai", usage)

    assert (refused.value.field, refused.value.message) == (field, message)


def test_openai_chat_usage_reads_every_bucket():
    normalized = normalize_usage(
        "openai",
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 20},
            "completion_tokens_details": {"reasoning_tokens": 40},
            "service_tier": "flex",
        },
    )

    assert (
        normalized.input_tokens,
        normalized.cache_read_tokens,
        normalized.cache_write_5m_tokens,
        normalized.output_tokens,
        normalized.reasoning_tokens,
        normalized.context_tokens,
        normalized.service_tier,
    ) == (50, 30, 20, 50, 40, 100, "flex")


def test_openai_responses_usage_reads_reasoning_from_output_details():
    normalized = normalize_usage(
        "openai",
        {"input_tokens": 10, "output_tokens": 8, "output_tokens_details": {"reasoning_tokens": 8}},
    )

    assert (normalized.reasoning_tokens, normalized.context_tokens) == (8, 10)


@pytest.mark.parametrize(
    ("usage", "field", "message"),
    [
        ({"promptTokenCount": -1}, "usage.promptTokenCount", "must be a non-negative integer"),
        ({"prompt_token_count": "9"}, "usage.prompt_token_count", "must be a non-negative integer"),
        ({"promptTokenCount": 5, "cachedContentTokenCount": 6}, "usage.cachedContentTokenCount", "exceeds promptTokenCount"),
    ],
)  # fmt: skip
def test_gemini_usage_refusals_name_their_field(usage: dict[str, Any], field: str, message: str):
    with pytest.raises(UsageError) as refused:
        normalize_usage("google", usage)

    assert (refused.value.field, refused.value.message) == (field, message)


def test_gemini_usage_reads_every_bucket():
    # A fully cached prompt is allowed; tool-use prompt tokens are billed as input.
    normalized = normalize_usage(
        "google",
        {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 100,
            "candidatesTokenCount": 30,
            "thoughtsTokenCount": 12,
            "toolUsePromptTokenCount": 7,
        },
    )

    assert (
        normalized.input_tokens,
        normalized.cache_read_tokens,
        normalized.output_tokens,
        normalized.reasoning_tokens,
        normalized.context_tokens,
    ) == (7, 100, 42, 12, 100)


def test_a_cost_breakdown_as_text_per_component_and_total():
    breakdown = CostBreakdown(
        input=Decimal("0.003"),
        output=Decimal("0.015"),
        cache_write_5m=Decimal("0.00375"),
        cache_write_1h=Decimal("0.006"),
        cache_read=Decimal("0.0003"),
        web_search=Decimal("0.01"),
        discount=Decimal("-0.001"),
    )

    assert breakdown.as_dict() == {
        "input": "0.003",
        "output": "0.015",
        "cache_write_5m": "0.00375",
        "cache_write_1h": "0.006",
        "cache_read": "0.0003",
        "web_search": "0.01",
        "discount": "-0.001",
        "total": "0.03705",
    }


def test_a_rate_card_is_built_from_every_price_of_a_rate_row():
    rate = ModelRate(
        provider="anthropic",
        model="claude-sonnet-4-5",
        input_usd_per_mtok=Decimal("3"),
        output_usd_per_mtok=Decimal("15"),
        cache_write_5m_usd_per_mtok=Decimal("3.75"),
        cache_write_1h_usd_per_mtok=Decimal("6"),
        cache_read_usd_per_mtok=Decimal("0.30"),
        long_context_threshold=200_000,
        long_context_input_usd_per_mtok=Decimal("6"),
        long_context_output_usd_per_mtok=Decimal("22.50"),
        long_context_cache_write_5m_usd_per_mtok=Decimal("7.50"),
        long_context_cache_write_1h_usd_per_mtok=Decimal("12"),
        long_context_cache_read_usd_per_mtok=Decimal("0.60"),
        batch_discount_pct=Decimal("50"),
        web_search_usd_per_1k=Decimal("10"),
        us_inference_multiplier=Decimal("1.1"),
        fast_multiplier=Decimal("6"),
    )

    card = RateCard.from_rate(rate)

    assert card == replace(
        SONNET_45, us_inference_multiplier=Decimal("1.1"), fast_multiplier=Decimal("6")
    )
    # A fast call from the US: 1,000 input at $3 and 100 output at $15, × 1.1 × 6.
    fast_us = normalize_usage(
        "anthropic",
        {"input_tokens": 1000, "output_tokens": 100, "inference_geo": "us", "speed": "fast"},
    )
    assert price_usage(fast_us, card).total == Decimal("0.02970")


def _report_row(**fields: Any) -> ProviderReportRow:
    return ProviderReportRow(
        provider="anthropic",
        model="claude-sonnet-4-5",
        input_tokens=1000,
        cache_write_5m_tokens=200,
        cache_write_1h_tokens=100,
        cache_read_tokens=3000,
        output_tokens=500,
        web_search_requests=4,
        **fields,
    )


def test_a_report_row_of_the_short_context_range_reads_every_bucket():
    # The range's start is read with the spaces around it.
    row = _report_row(context_window=" 0 - 200k")

    assert report_usage(row) == NormalizedUsage(
        input_tokens=1000,
        cache_write_5m_tokens=200,
        cache_write_1h_tokens=100,
        cache_read_tokens=3000,
        output_tokens=500,
        web_search_requests=4,
    )
    # 1,000 × $3 + 200 × $3.75 + 100 × $6 + 3,000 × $0.30 + 500 × $15 per million, and
    # 4 searches at $10 per thousand.
    priced = price_report_row(row, SONNET_45)
    assert (priced.total, priced.long_context, priced.discount) == (
        Decimal("0.05275"),
        False,
        ZERO,
    )


def test_a_report_row_of_the_long_context_range_is_priced_at_the_long_context_tier():
    priced = price_report_row(_report_row(context_window="200k-1M"), SONNET_45)

    # 1,000 × $6 + 200 × $7.50 + 100 × $12 + 3,000 × $0.60 + 500 × $22.50 per million + $0.04.
    assert (priced.total, priced.long_context) == (Decimal("0.06175"), True)


def test_a_batch_report_row_gets_the_batch_discount():
    row = _report_row(context_window="0-200k", batch=True, service_tier="standard")

    assert report_usage(row).service_tier == "batch"
    priced = price_report_row(row, SONNET_45)
    # Half of the $0.01275 of tokens off; the searches are not discounted.
    assert (priced.discount, priced.total) == (Decimal("-0.006375"), Decimal("0.046375"))


def test_a_grouped_report_row_prices_its_tier_region_and_speed():
    # A grouped ``values()`` row: a mapping with only the sums it has, no context range.
    row = {
        "input_tokens": 2_000_000,
        "output_tokens": 100_000,
        "cache_read_tokens": None,
        "service_tier": "priority",
        "inference_geo": "us",
        "speed": "fast",
    }

    assert report_usage(row) == NormalizedUsage(
        input_tokens=2_000_000,
        output_tokens=100_000,
        service_tier="priority",
        inference_geo="us",
        speed="fast",
    )
    # (2M × $5 + 100k × $25 per million) × 1.1 × 6 = $12.50 × 6.6.
    priced = price_report_row(row, OPUS_46)
    assert (priced.total, priced.priced_at_list) == (Decimal("82.5"), True)


def test_a_sum_over_no_report_rows_costs_nothing():
    # ``aggregate(Sum(...))`` over no rows gives None for every sum.
    row = dict.fromkeys(
        (
            "input_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "cache_read_tokens",
            "output_tokens",
            "web_search_requests",
            "context_window",
            "batch",
            "service_tier",
            "inference_geo",
            "speed",
        )
    )

    assert report_usage(row) == NormalizedUsage()
    assert price_report_row(row, SONNET_45).total == ZERO
