"""The pricing engine: a provider's usage object and a rate card in, an exact cost out.

Pure functions over Decimal, no database and no rounding. The rules, per provider, in
short:

* Anthropic counts cache reads and writes *on top of* ``input_tokens``; writes are split
  5-minute/1-hour by ``cache_creation``; ``output_tokens`` already includes thinking.
* OpenAI counts cached (and written) tokens *inside* ``prompt_tokens``/``input_tokens``;
  reasoning is inside ``completion_tokens``.
* Gemini counts cached tokens inside ``promptTokenCount``; thinking (``thoughtsTokenCount``)
  is billed as output on top of ``candidatesTokenCount``.

Every usage object is first normalised into disjoint buckets (uncached input, cache write
5m, cache write 1h, cache read, output), so no token can be priced twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from agency.money import MILLION, ONE_HUNDRED, ZERO

# "Absurd" is more than 100 million tokens in one call: no model's context plus output
# comes near it, so such an event is a bug or an attack, never real spend. Capped per
# field and on the call's total (every field can be under the cap while the sum is not).
MAX_TOKENS_PER_FIELD = 100_000_000
MAX_TOKENS_PER_CALL = 100_000_000
PROVIDERS = ("anthropic", "openai", "google")
BATCH_TIERS = {"batch", "flex"}
PRIORITY_TIERS = {"priority", "priority_on_demand", "scale"}
THOUSAND = Decimal("1000")


class UsageError(ValueError):
    """A usage object that cannot be priced as sent; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RateCard:
    """Prices in USD per million tokens (web search per 1,000). ``None``: not applicable."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    cache_read: Decimal | None = None
    long_context_threshold: int | None = None
    long_context_input: Decimal | None = None
    long_context_output: Decimal | None = None
    long_context_cache_write_5m: Decimal | None = None
    long_context_cache_write_1h: Decimal | None = None
    long_context_cache_read: Decimal | None = None
    batch_discount_pct: Decimal = Decimal("50")
    web_search_per_1k: Decimal | None = None
    us_inference_multiplier: Decimal | None = None
    fast_multiplier: Decimal | None = None

    @classmethod
    def from_rate(cls, rate: Any) -> RateCard:
        """Build from a ``tracking.models.ModelRate`` (or anything with its fields)."""
        return cls(
            input=rate.input_usd_per_mtok,
            output=rate.output_usd_per_mtok,
            cache_write_5m=rate.cache_write_5m_usd_per_mtok,
            cache_write_1h=rate.cache_write_1h_usd_per_mtok,
            cache_read=rate.cache_read_usd_per_mtok,
            long_context_threshold=rate.long_context_threshold,
            long_context_input=rate.long_context_input_usd_per_mtok,
            long_context_output=rate.long_context_output_usd_per_mtok,
            long_context_cache_write_5m=rate.long_context_cache_write_5m_usd_per_mtok,
            long_context_cache_write_1h=rate.long_context_cache_write_1h_usd_per_mtok,
            long_context_cache_read=rate.long_context_cache_read_usd_per_mtok,
            batch_discount_pct=rate.batch_discount_pct,
            web_search_per_1k=rate.web_search_usd_per_1k,
            us_inference_multiplier=rate.us_inference_multiplier,
            fast_multiplier=rate.fast_multiplier,
        )


# NormalizedUsage and CostBreakdown are values, built once and never changed, but not
# frozen: ingest builds one of each per event, and a frozen dataclass's __init__ (a
# object.__setattr__ per field) took 1.8 and 1.3 µs where a slotted one takes ~0.5 µs
# (1.1 ms of a 500-event batch, measured).
@dataclass(slots=True)
class NormalizedUsage:
    """Disjoint token buckets plus the flags that change the price."""

    input_tokens: int = 0  # uncached input only
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0  # thinking/reasoning included
    reasoning_tokens: int = 0  # informational: already inside output_tokens
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    # Tokens the long-context threshold is measured against (the whole prompt).
    context_tokens: int = 0
    service_tier: str = ""
    inference_geo: str = ""
    speed: str = ""
    needs_review: bool = False
    review_reasons: tuple[str, ...] = field(default=())

    @property
    def total_tokens(self) -> int:
        """Every token of the call once: the buckets are disjoint (reasoning is output)."""
        return (
            self.input_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.cache_read_tokens
            + self.output_tokens
        )

    @property
    def is_batch(self) -> bool:
        return self.service_tier in BATCH_TIERS

    @property
    def is_priority(self) -> bool:
        return self.service_tier in PRIORITY_TIERS


@dataclass(slots=True)
class CostBreakdown:
    """USD per component, unrounded. ``total`` is their exact sum (``discount`` ≤ 0)."""

    input: Decimal = ZERO
    output: Decimal = ZERO
    cache_write_5m: Decimal = ZERO
    cache_write_1h: Decimal = ZERO
    cache_read: Decimal = ZERO
    web_search: Decimal = ZERO
    discount: Decimal = ZERO
    long_context: bool = False
    priced_at_list: bool = False

    @property
    def total(self) -> Decimal:
        return (
            self.input
            + self.output
            + self.cache_write_5m
            + self.cache_write_1h
            + self.cache_read
            + self.web_search
            + self.discount
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "cache_write_5m": str(self.cache_write_5m),
            "cache_write_1h": str(self.cache_write_1h),
            "cache_read": str(self.cache_read),
            "web_search": str(self.web_search),
            "discount": str(self.discount),
            "total": str(self.total),
        }


# --- normalisation -------------------------------------------------------------------


def _count(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> int:
    """A token count: a plain non-negative int no larger than the sanity cap."""
    value = obj.get(key)
    # The common case first, and the error's path built only for an error: ingest calls
    # this ~7 times an event.
    if type(value) is int and 0 <= value <= MAX_TOKENS_PER_FIELD:
        return value
    where = f"{path}.{key}"
    if value is None:
        if required:
            raise UsageError(where, "is required")
        return 0
    if type(value) is not int:  # rejects bool, float (even 1.0), str, Decimal
        raise UsageError(where, "must be a non-negative integer")
    if value < 0:
        raise UsageError(where, "must be a non-negative integer")
    raise UsageError(where, f"must be at most {MAX_TOKENS_PER_FIELD:,} (got {value:,})")


def _sub(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"{path}.{key}", "must be an object")
    return value


def _text(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UsageError(f"{path}.{key}", "must be a string")
    return value


def normalize_usage(
    provider: str, usage: Mapping[str, Any], *, service_tier: str | None = None
) -> NormalizedUsage:
    """Turn a provider's usage object, as its API returned it, into disjoint buckets.

    ``service_tier`` (from the event) overrides the tier in the usage object, e.g. to mark
    OpenAI or Gemini batch results. Unknown keys are ignored here (and kept by the caller).
    """
    if not isinstance(usage, Mapping):
        raise UsageError("usage", "must be an object")
    if provider == "anthropic":
        normalized = _normalize_anthropic(usage)
    elif provider == "openai":
        normalized = _normalize_openai(usage)
    elif provider == "google":
        normalized = _normalize_google(usage)
    else:
        raise UsageError("provider", f"must be one of {', '.join(PROVIDERS)}")
    total = normalized.total_tokens
    if total > MAX_TOKENS_PER_CALL:
        raise UsageError(
            "usage",
            f"counts {total:,} tokens in all; at most {MAX_TOKENS_PER_CALL:,} in one call",
        )
    if service_tier:
        normalized = replace(normalized, service_tier=service_tier)
    return normalized


def _normalize_anthropic(usage: Mapping[str, Any]) -> NormalizedUsage:
    p = "usage"
    input_tokens = _count(usage, "input_tokens", p, required=True)
    output_tokens = _count(usage, "output_tokens", p, required=True)
    cache_read = _count(usage, "cache_read_input_tokens", p)
    creation_total = _count(usage, "cache_creation_input_tokens", p)
    split = usage.get("cache_creation")
    if split is not None:
        split = _sub(usage, "cache_creation", p)
        write_5m = _count(split, "ephemeral_5m_input_tokens", f"{p}.cache_creation")
        write_1h = _count(split, "ephemeral_1h_input_tokens", f"{p}.cache_creation")
        if (
            usage.get("cache_creation_input_tokens") is not None
            and write_5m + write_1h != creation_total
        ):
            raise UsageError(
                f"{p}.cache_creation",
                f"ephemeral_5m_input_tokens + ephemeral_1h_input_tokens ({write_5m + write_1h:,}) "
                f"must equal cache_creation_input_tokens ({creation_total:,})",
            )
    else:
        # Before the 1-hour TTL existed every cache write was a 5-minute write.
        write_5m, write_1h = creation_total, 0
    context_tokens = input_tokens + cache_read + write_5m + write_1h

    tools = _sub(usage, "server_tool_use", p)
    web_search = _count(tools, "web_search_requests", f"{p}.server_tool_use")
    web_fetch = _count(tools, "web_fetch_requests", f"{p}.server_tool_use")
    thinking = _count(
        _sub(usage, "output_tokens_details", p), "thinking_tokens", f"{p}.output_tokens_details"
    )

    reasons: list[str] = []
    iterations = usage.get("iterations")
    if iterations is not None:
        if not isinstance(iterations, list):
            raise UsageError(f"{p}.iterations", "must be a list")
        for index, item in enumerate(iterations):
            ip = f"{p}.iterations[{index}]"
            if not isinstance(item, Mapping):
                raise UsageError(ip, "must be an object")
            kind = item.get("type")
            if kind == "compaction":
                # Compaction iterations are not in the top-level totals (SDK BetaUsage docs).
                input_tokens += _count(item, "input_tokens", ip)
                output_tokens += _count(item, "output_tokens", ip)
                cache_read += _count(item, "cache_read_input_tokens", ip)
                item_split = _sub(item, "cache_creation", ip)
                if item_split:
                    write_5m += _count(
                        item_split, "ephemeral_5m_input_tokens", f"{ip}.cache_creation"
                    )
                    write_1h += _count(
                        item_split, "ephemeral_1h_input_tokens", f"{ip}.cache_creation"
                    )
                else:
                    write_5m += _count(item, "cache_creation_input_tokens", ip)
            elif kind in ("advisor_message", "fallback_message"):
                reasons.append(f"{kind} iteration priced as part of the top-level model")

    return NormalizedUsage(
        input_tokens=input_tokens,
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        cache_read_tokens=cache_read,
        output_tokens=output_tokens,
        reasoning_tokens=thinking,
        web_search_requests=web_search,
        web_fetch_requests=web_fetch,
        context_tokens=context_tokens,
        service_tier=_text(usage, "service_tier", p),
        inference_geo=_text(usage, "inference_geo", p),
        speed=_text(usage, "speed", p),
        needs_review=bool(reasons),
        review_reasons=tuple(reasons),
    )


def _normalize_openai(usage: Mapping[str, Any]) -> NormalizedUsage:
    p = "usage"
    if "prompt_tokens" in usage:  # Chat Completions
        prompt = _count(usage, "prompt_tokens", p, required=True)
        output = _count(usage, "completion_tokens", p, required=True)
        in_key, out_key = "prompt_tokens_details", "completion_tokens_details"
    else:  # Responses API
        prompt = _count(usage, "input_tokens", p, required=True)
        output = _count(usage, "output_tokens", p, required=True)
        in_key, out_key = "input_tokens_details", "output_tokens_details"
    in_details = _sub(usage, in_key, p)
    cached = _count(in_details, "cached_tokens", f"{p}.{in_key}")
    written = _count(in_details, "cache_write_tokens", f"{p}.{in_key}")
    if cached + written > prompt:
        raise UsageError(
            f"{p}.{in_key}",
            f"cached_tokens + cache_write_tokens ({cached + written:,}) exceed the prompt ({prompt:,})",
        )
    reasoning = _count(_sub(usage, out_key, p), "reasoning_tokens", f"{p}.{out_key}")
    if reasoning > output:
        raise UsageError(f"{p}.{out_key}.reasoning_tokens", "exceeds the output token count")
    return NormalizedUsage(
        # Cached and written tokens are a subset of the prompt: take them out of "input".
        input_tokens=prompt - cached - written,
        cache_write_5m_tokens=written,
        cache_read_tokens=cached,
        output_tokens=output,
        reasoning_tokens=reasoning,
        context_tokens=prompt,
        service_tier=_text(usage, "service_tier", p),
    )


_GEMINI_KEYS = {
    "prompt": ("promptTokenCount", "prompt_token_count"),
    "cached": ("cachedContentTokenCount", "cached_content_token_count"),
    "candidates": ("candidatesTokenCount", "candidates_token_count"),
    "thoughts": ("thoughtsTokenCount", "thoughts_token_count"),
    "tool_prompt": ("toolUsePromptTokenCount", "tool_use_prompt_token_count"),
}


def _normalize_google(usage: Mapping[str, Any]) -> NormalizedUsage:
    """REST ``usageMetadata`` (camelCase) or the Python SDK's snake_case dump."""
    p = "usage"
    counts: dict[str, int] = {}
    for name, (camel, snake) in _GEMINI_KEYS.items():
        key = camel if camel in usage else snake
        counts[name] = _count(usage, key, p)
    if counts["cached"] > counts["prompt"]:
        raise UsageError(f"{p}.cachedContentTokenCount", "exceeds promptTokenCount")
    return NormalizedUsage(
        # Tool-use prompt tokens are fed back as input and billed at the input rate.
        input_tokens=counts["prompt"] - counts["cached"] + counts["tool_prompt"],
        cache_read_tokens=counts["cached"],
        output_tokens=counts["candidates"] + counts["thoughts"],
        reasoning_tokens=counts["thoughts"],
        context_tokens=counts["prompt"],
    )


# --- pricing -------------------------------------------------------------------------


def _per_token(tokens: int, usd_per_mtok: Decimal) -> Decimal:
    if tokens == 0:
        return ZERO
    return Decimal(tokens) * usd_per_mtok / MILLION


def price_usage(usage: NormalizedUsage, rate: RateCard) -> CostBreakdown:
    """Exact cost of one call. Empty cache prices fall back to the input price."""
    long_context = (
        rate.long_context_threshold is not None
        and rate.long_context_input is not None
        and usage.context_tokens > rate.long_context_threshold
    )
    if long_context:
        # The whole request, output included, moves to the long-context tier.
        input_rate = rate.long_context_input or rate.input
        output_rate = rate.long_context_output or rate.output
        write_5m_rate = rate.long_context_cache_write_5m
        write_1h_rate = rate.long_context_cache_write_1h
        read_rate = rate.long_context_cache_read
    else:
        input_rate, output_rate = rate.input, rate.output
        write_5m_rate, write_1h_rate = rate.cache_write_5m, rate.cache_write_1h
        read_rate = rate.cache_read

    multiplier = Decimal(1)
    scaled = False
    if usage.inference_geo == "us" and rate.us_inference_multiplier is not None:
        multiplier *= rate.us_inference_multiplier
        scaled = True
    if usage.speed == "fast" and rate.fast_multiplier is not None:
        multiplier *= rate.fast_multiplier
        scaled = True

    def cost(tokens: int, usd_per_mtok: Decimal | None) -> Decimal:
        amount = _per_token(tokens, usd_per_mtok if usd_per_mtok is not None else input_rate)
        # × Decimal(1) gives the very same digits and exponent, so it is skipped when no
        # multiplier applies (most calls). A rate's own multiplier, even "1.0", still applies.
        return amount * multiplier if scaled else amount

    input_cost = cost(usage.input_tokens, input_rate)
    output_cost = cost(usage.output_tokens, output_rate)
    write_5m_cost = cost(usage.cache_write_5m_tokens, write_5m_rate)
    write_1h_cost = cost(usage.cache_write_1h_tokens, write_1h_rate)
    read_cost = cost(usage.cache_read_tokens, read_rate)

    discount = ZERO
    if usage.is_batch and rate.batch_discount_pct:
        tokens_total = input_cost + output_cost + write_5m_cost + write_1h_cost + read_cost
        discount = -(tokens_total * rate.batch_discount_pct / ONE_HUNDRED)

    web_search = ZERO
    if usage.web_search_requests and rate.web_search_per_1k is not None:
        web_search = Decimal(usage.web_search_requests) * rate.web_search_per_1k / THOUSAND

    return CostBreakdown(
        input=input_cost,
        output=output_cost,
        cache_write_5m=write_5m_cost,
        cache_write_1h=write_1h_cost,
        cache_read=read_cost,
        web_search=web_search,
        discount=discount,
        long_context=long_context,
        priced_at_list=usage.is_priority,
    )


# --- the provider's own report --------------------------------------------------------

# A report row's ``context_window`` is a range label ("0-200k", "200k-1M"); a range that
# does not start at 0 is the long-context tier.
_SHORT_CONTEXT_STARTS = {"", "0"}


def report_usage(row: Any) -> NormalizedUsage:
    """The disjoint buckets of one row of a provider's usage report (a
    ``tracking.models.ProviderReportRow``, or a mapping with its field names, e.g. a
    grouped ``values()`` row that sums several).

    The report counts the same disjoint buckets as ``NormalizedUsage`` (uncached input,
    cache writes 5m/1h, cache reads, output, web searches); a batch row prices as the
    batch tier. A report only says which context-window range its tokens fell in, not the
    size of each prompt, so the long-context tier is chosen from that range: the
    context size is set just past any threshold for a long range and to 0 otherwise.
    """

    def get(name: str) -> Any:
        if isinstance(row, Mapping):
            return row.get(name)
        return getattr(row, name)

    window = str(get("context_window") or "")
    # The range's start is the text before its first "-" ("0-200k": "0"; "200k-1M": "200k").
    long_context = window.split("-")[0].strip() not in _SHORT_CONTEXT_STARTS
    tier = "batch" if get("batch") else str(get("service_tier") or "")
    return NormalizedUsage(
        input_tokens=int(get("input_tokens") or 0),
        cache_write_5m_tokens=int(get("cache_write_5m_tokens") or 0),
        cache_write_1h_tokens=int(get("cache_write_1h_tokens") or 0),
        cache_read_tokens=int(get("cache_read_tokens") or 0),
        output_tokens=int(get("output_tokens") or 0),
        web_search_requests=int(get("web_search_requests") or 0),
        context_tokens=_LONG_CONTEXT if long_context else 0,
        service_tier=tier,
        inference_geo=str(get("inference_geo") or ""),
        speed=str(get("speed") or ""),
    )


# Larger than any long-context threshold (they are prompt sizes, at most a few million).
_LONG_CONTEXT = 10**15


def price_report_row(row: Any, rate: RateCard) -> CostBreakdown:
    """Our price, exact, for exactly the tokens of a provider report row under ``rate``:
    what reconciliation sets against the provider's ``list_amount`` (rate drift), and
    what a report-sourced client's usage costs. No rounding, no markup."""
    return price_usage(report_usage(row), rate)
