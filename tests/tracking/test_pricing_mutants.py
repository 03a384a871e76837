"""Tests that kill the mutants of tracking/pricing.py the mutation run left (bin/mutate;
README, "Mutation testing"): OpenAI and Gemini usage read field by field, and each
refusal naming its field and saying why."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tracking.pricing import CostBreakdown, UsageError, normalize_usage


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
