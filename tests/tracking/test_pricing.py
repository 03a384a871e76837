"""The pricing engine on real usage objects, with the figures worked out by hand."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from anthropic.types.beta import (
    BetaCacheCreation,
    BetaCompactionIterationUsage,
    BetaMessageIterationUsage,
    BetaUsage,
)

from tracking.pricing import RateCard, UsageError, normalize_usage, price_usage

SONNET_45 = RateCard(
    input=Decimal("3"),
    output=Decimal("15"),
    cache_write_5m=Decimal("3.75"),
    cache_write_1h=Decimal("6"),
    cache_read=Decimal("0.30"),
    long_context_threshold=200_000,
    long_context_input=Decimal("6"),
    long_context_output=Decimal("22.50"),
    long_context_cache_write_5m=Decimal("7.50"),
    long_context_cache_write_1h=Decimal("12"),
    long_context_cache_read=Decimal("0.60"),
    batch_discount_pct=Decimal("50"),
    web_search_per_1k=Decimal("10"),
)
OPUS_46 = RateCard(
    input=Decimal("5"),
    output=Decimal("25"),
    cache_write_5m=Decimal("6.25"),
    cache_write_1h=Decimal("10"),
    cache_read=Decimal("0.50"),
    web_search_per_1k=Decimal("10"),
    us_inference_multiplier=Decimal("1.1"),
    fast_multiplier=Decimal("6"),
)
GPT_4O = RateCard(input=Decimal("2.50"), output=Decimal("10"), cache_read=Decimal("1.25"))
GEMINI_25_PRO = RateCard(
    input=Decimal("1.25"),
    output=Decimal("10"),
    cache_read=Decimal("0.125"),
    long_context_threshold=200_000,
    long_context_input=Decimal("2.50"),
    long_context_output=Decimal("15"),
    long_context_cache_read=Decimal("0.25"),
)


def cost(provider: str, usage: dict, rate: RateCard, **kwargs: str):
    return price_usage(normalize_usage(provider, usage, **kwargs), rate)


def test_anthropic_cache_tokens_are_on_top_of_input_and_split_by_ttl():
    # The prompt-caching doc's 1-hour example.
    usage = {
        "input_tokens": 2048,
        "cache_read_input_tokens": 1800,
        "cache_creation_input_tokens": 248,
        "output_tokens": 503,
        "cache_creation": {"ephemeral_5m_input_tokens": 148, "ephemeral_1h_input_tokens": 100},
    }
    result = cost("anthropic", usage, SONNET_45)
    assert result.input == Decimal("0.006144")  # 2048 × $3/M
    assert result.cache_read == Decimal("0.00054")  # 1800 × $0.30/M
    assert result.cache_write_5m == Decimal("0.000555")  # 148 × $3.75/M
    assert result.cache_write_1h == Decimal("0.0006")  # 100 × $6/M, not the 5m price
    assert result.output == Decimal("0.007545")  # 503 × $15/M
    assert result.total == Decimal("0.015384")


def test_anthropic_cache_writes_without_split_are_five_minute_writes():
    usage = {"input_tokens": 10, "output_tokens": 0, "cache_creation_input_tokens": 1000}
    result = cost("anthropic", usage, SONNET_45)
    assert result.cache_write_5m == Decimal("0.00375")
    assert result.cache_write_1h == 0


def test_split_that_does_not_add_up_is_rejected_with_its_place():
    usage = {
        "input_tokens": 1,
        "output_tokens": 1,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 100},
    }
    with pytest.raises(
        UsageError,
        match=r"^usage\.cache_creation: ephemeral_5m_input_tokens \+ ephemeral_1h_input_tokens "
        r"\(200\) must equal cache_creation_input_tokens \(300\)$",
    ) as error:
        normalize_usage("anthropic", usage)
    assert error.value.field == "usage.cache_creation"


def test_web_search_is_ten_dollars_per_thousand_on_top_of_tokens():
    # The pricing page's web search example.
    usage = {
        "input_tokens": 105,
        "output_tokens": 6039,
        "cache_read_input_tokens": 7123,
        "cache_creation_input_tokens": 7345,
        "server_tool_use": {"web_search_requests": 1},
    }
    result = cost("anthropic", usage, SONNET_45)
    assert result.web_search == Decimal("0.01")
    tokens = Decimal(105 * 3 + 6039 * 15 + 7123 * Decimal("0.30") + 7345 * Decimal("3.75")) / 10**6
    assert result.total == tokens + Decimal("0.01")


def test_batch_halves_every_token_price_including_cache():
    usage = {
        "input_tokens": 1000,
        "output_tokens": 1000,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 500},
        "service_tier": "batch",
    }
    batch = cost("anthropic", usage, SONNET_45)
    standard = cost("anthropic", {**usage, "service_tier": "standard"}, SONNET_45)
    assert batch.total == standard.total / 2
    assert batch.discount == -standard.total / 2


def test_event_service_tier_overrides_the_usage_object():
    usage = {"prompt_tokens": 1000, "completion_tokens": 1000}
    assert cost("openai", usage, GPT_4O, service_tier="batch").total == Decimal("0.00625")


def test_long_context_counts_cache_and_reprices_the_whole_request():
    # 150k uncached + 60k cache read = 210k > 200k: every token at the premium tier.
    usage = {"input_tokens": 150_000, "cache_read_input_tokens": 60_000, "output_tokens": 1000}
    result = cost("anthropic", usage, SONNET_45)
    assert result.long_context
    assert result.input == Decimal("0.9")  # 150k × $6/M
    assert result.cache_read == Decimal("0.036")  # 60k × $0.60/M
    assert result.output == Decimal("0.0225")  # 1k × $22.50/M


def test_exactly_at_the_threshold_is_standard():
    usage = {"input_tokens": 200_000, "output_tokens": 0}
    result = cost("anthropic", usage, SONNET_45)
    assert not result.long_context
    assert result.input == Decimal("0.6")


def test_us_inference_and_fast_mode_multiply_every_token_price():
    usage = {"input_tokens": 1_000_000, "output_tokens": 0, "inference_geo": "us"}
    assert cost("anthropic", usage, OPUS_46).input == Decimal("5.5")
    fast = {"input_tokens": 1_000_000, "output_tokens": 0, "speed": "fast"}
    assert cost("anthropic", fast, OPUS_46).input == Decimal("30")


def test_priority_tier_is_flagged_as_list_price():
    usage = {"input_tokens": 10, "output_tokens": 10, "service_tier": "priority"}
    assert cost("anthropic", usage, SONNET_45).priced_at_list


def test_openai_cached_tokens_are_inside_the_prompt():
    # The prompt-caching guide's example: 2006 prompt tokens of which 1920 cached.
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    result = cost("openai", usage, GPT_4O)
    assert result.input == Decimal("0.000215")  # 86 uncached × $2.50/M
    assert result.cache_read == Decimal("0.0024")  # 1920 × $1.25/M
    assert result.output == Decimal("0.003")  # 300 × $10/M: reasoning is inside, not added


def test_openai_responses_api_usage():
    usage = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 400},
        "output_tokens": 100,
        "output_tokens_details": {"reasoning_tokens": 50},
        "total_tokens": 1100,
    }
    normalized = normalize_usage("openai", usage)
    assert (normalized.input_tokens, normalized.cache_read_tokens) == (600, 400)
    assert normalized.reasoning_tokens == 50


def test_gemini_thinking_is_output_and_cache_is_inside_the_prompt():
    usage = {
        "promptTokenCount": 10_000,
        "cachedContentTokenCount": 4_000,
        "candidatesTokenCount": 500,
        "thoughtsTokenCount": 1_500,
        "totalTokenCount": 12_000,
    }
    result = cost("google", usage, GEMINI_25_PRO)
    assert result.input == Decimal("0.0075")  # 6,000 uncached × $1.25/M
    assert result.cache_read == Decimal("0.0005")  # 4,000 × $0.125/M
    assert result.output == Decimal("0.02")  # (500 + 1,500) × $10/M


def test_gemini_snake_case_from_the_python_sdk_prices_the_same():
    camel = {"promptTokenCount": 300_000, "candidatesTokenCount": 10, "thoughtsTokenCount": 5}
    snake = {"prompt_token_count": 300_000, "candidates_token_count": 10, "thoughts_token_count": 5}
    assert cost("google", camel, GEMINI_25_PRO) == cost("google", snake, GEMINI_25_PRO)
    assert cost("google", camel, GEMINI_25_PRO).long_context


def test_compaction_iterations_are_added_and_advisor_iterations_flagged():
    usage = {
        "input_tokens": 100,
        "output_tokens": 50,
        "iterations": [
            {"type": "compaction", "input_tokens": 180_000, "output_tokens": 2_000},
            {"type": "message", "input_tokens": 100, "output_tokens": 50},
            {
                "type": "advisor_message",
                "model": "claude-opus-4-8",
                "input_tokens": 10,
                "output_tokens": 5,
            },
        ],
    }
    normalized = normalize_usage("anthropic", usage)
    assert normalized.input_tokens == 180_100
    assert normalized.output_tokens == 2_050
    assert normalized.needs_review


def test_cache_writes_inside_compaction_iterations_are_added_by_ttl():
    # A compaction iteration is not in the top-level totals (SDK BetaUsage docs); its cache
    # writes add to the call's, 5-minute and 1-hour each to their own bucket.
    usage = BetaUsage(
        input_tokens=100,
        output_tokens=50,
        cache_creation_input_tokens=300,
        cache_creation=BetaCacheCreation(
            ephemeral_5m_input_tokens=100, ephemeral_1h_input_tokens=200
        ),
        iterations=[
            BetaCompactionIterationUsage(
                type="compaction",
                input_tokens=1_000,
                output_tokens=20,
                cache_read_input_tokens=40,
                cache_creation_input_tokens=700,
                cache_creation=BetaCacheCreation(
                    ephemeral_5m_input_tokens=300, ephemeral_1h_input_tokens=400
                ),
            ),
            BetaMessageIterationUsage(
                type="message",
                input_tokens=100,
                output_tokens=50,
                cache_read_input_tokens=0,
                cache_creation_input_tokens=300,
            ),
        ],
    ).model_dump(mode="json", exclude_none=True)

    normalized = normalize_usage("anthropic", usage)

    assert (
        normalized.input_tokens,
        normalized.cache_write_5m_tokens,
        normalized.cache_write_1h_tokens,
        normalized.cache_read_tokens,
        normalized.output_tokens,
    ) == (1_100, 400, 600, 40, 70)
    result = price_usage(normalized, SONNET_45)
    assert result.cache_write_1h == Decimal("0.0036")  # 600 × $6/M
    assert result.cache_write_5m == Decimal("0.0015")  # 400 × $3.75/M


@pytest.mark.parametrize(
    ("details", "uncached", "read", "written", "total"),
    [
        # 1,000 prompt tokens: 700 read from the cache and 300 written to it, none uncached.
        # 700 × $1.25/M + 300 × $2.50/M (no cache write price: the input price) + output.
        ({"cached_tokens": 700, "cache_write_tokens": 300}, 0, 700, 300, "0.002625"),
        # The whole prompt read from the cache.
        ({"cached_tokens": 1000}, 0, 1000, 0, "0.00225"),
    ],
)
def test_openai_prompt_entirely_cached_or_written_is_accepted(
    details, uncached, read, written, total
):
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "total_tokens": 1100,
        "prompt_tokens_details": details,
    }
    normalized = normalize_usage("openai", usage)
    assert (
        normalized.input_tokens,
        normalized.cache_read_tokens,
        normalized.cache_write_5m_tokens,
    ) == (uncached, read, written)
    assert price_usage(normalized, GPT_4O).total == Decimal(total)


@pytest.mark.parametrize("details_key", ["prompt_tokens_details", "input_tokens_details"])
def test_openai_cache_counts_beyond_the_prompt_are_rejected(details_key):
    counts = (
        {"prompt_tokens": 1000, "completion_tokens": 1}
        if details_key == "prompt_tokens_details"
        else {"input_tokens": 1000, "output_tokens": 1}
    )
    usage = {**counts, details_key: {"cached_tokens": 600, "cache_write_tokens": 401}}
    with pytest.raises(
        UsageError,
        match=rf"^usage\.{details_key}: cached_tokens \+ cache_write_tokens \(1,001\) "
        r"exceed the prompt \(1,000\)$",
    ):
        normalize_usage("openai", usage)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "must be a non-negative integer"),
        (1.0, "must be a non-negative integer"),
        (True, "must be a non-negative integer"),
        ("12", "must be a non-negative integer"),
        (float("nan"), "must be a non-negative integer"),
        (100_000_001, "must be at most 100,000,000"),
    ],
)
def test_bad_token_counts_are_rejected_with_field_and_reason(value, message):
    with pytest.raises(UsageError, match=rf"^usage\.input_tokens: {re.escape(message)}") as error:
        normalize_usage("anthropic", {"input_tokens": value, "output_tokens": 1})
    assert error.value.field == "usage.input_tokens"


def test_missing_required_count_is_named():
    with pytest.raises(UsageError, match=r"^usage\.completion_tokens: is required$") as error:
        normalize_usage("openai", {"prompt_tokens": 5})
    assert error.value.field == "usage.completion_tokens"


def test_unknown_provider_is_rejected():
    with pytest.raises(
        UsageError, match=r"^provider: must be one of anthropic, openai, google$"
    ) as error:
        normalize_usage("mistral", {"input_tokens": 1})
    assert error.value.field == "provider"
