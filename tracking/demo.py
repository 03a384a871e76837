"""Realistic demo usage: provider usage objects shaped exactly as the APIs return them."""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta
from typing import Any

ANTHROPIC_MODELS = [
    ("claude-sonnet-4-5-20250929", 30),
    ("claude-sonnet-4-6", 25),
    ("claude-haiku-4-5-20251001", 30),
    ("claude-opus-4-7", 8),
    ("claude-opus-4-1-20250805", 2),
]
FEATURES = ["chat", "summarize", "classify", "extract", "search"]


def anthropic_usage(
    rng: random.Random, *, batch: bool = False, search: bool = False
) -> dict[str, Any]:
    """A Messages API ``usage`` object with cache reads and 5m/1h cache writes."""
    uncached = rng.randint(20, 3000)
    cached_prefix = rng.choice([0, 0, 2048, 4096, 12000, 30000])
    read = write_5m = write_1h = 0
    if cached_prefix:
        if rng.random() < 0.8:
            read = cached_prefix
        elif rng.random() < 0.7:
            write_5m = cached_prefix
        else:
            write_1h = cached_prefix
    output = rng.randint(40, 1800)
    usage: dict[str, Any] = {
        "input_tokens": uncached,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": write_5m,
            "ephemeral_1h_input_tokens": write_1h,
        },
        "output_tokens": output,
        "service_tier": "batch" if batch else "standard",
    }
    if search:
        usage["server_tool_use"] = {
            "web_search_requests": rng.randint(1, 3),
            "web_fetch_requests": 0,
        }
    return usage


def openai_usage(rng: random.Random) -> dict[str, Any]:
    """A Chat Completions ``usage`` object (cached tokens are inside prompt_tokens)."""
    prompt = rng.randint(200, 6000)
    cached = rng.choice([0, 0, 1024, 1920]) if prompt > 2000 else 0
    completion = rng.randint(50, 1200)
    reasoning = rng.randint(0, completion // 2)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def gemini_usage(rng: random.Random) -> dict[str, Any]:
    """A Gemini ``usageMetadata`` object (REST camelCase)."""
    prompt = rng.randint(300, 8000)
    cached = rng.choice([0, 0, 2048]) if prompt > 3000 else 0
    candidates = rng.randint(50, 900)
    thoughts = rng.randint(0, 600)
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "thoughtsTokenCount": thoughts,
        "totalTokenCount": prompt + candidates + thoughts,
    }
    if cached:
        usage["cachedContentTokenCount"] = cached
    return usage


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def spread(rng: random.Random, day_start: datetime, count: int) -> list[datetime]:
    """Working-hours-heavy timestamps within one day."""
    moments = []
    for _ in range(count):
        hour = min(23, max(0, int(rng.gauss(14, 4))))
        moments.append(
            day_start
            + timedelta(hours=hour, minutes=rng.randint(0, 59), seconds=rng.randint(0, 59))
        )
    return moments
