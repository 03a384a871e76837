"""The event fingerprint's text is json.dumps's, whichever encoder writes it.

Stored fingerprints decide duplicate against conflict for every retry, so the canonical
text must never change: ``canonical_json`` (msgspec where its bytes are the same) is
compared with the json.dumps it replaced, on generated and on awkward JSON.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from hashlib import sha256
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracking import services
from tracking.services import canonical_json, event_fingerprint, json_sorted


def json_dumps(value: Any) -> bytes:
    """The fingerprint's text as it was first written (the reference)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@given(json_values)
def test_canonical_json_is_json_dumps_for_any_json_value(value: Any) -> None:
    assert canonical_json(value) == json_dumps(value)


@given(
    st.dictionaries(
        st.text(alphabet=st.characters(codec="ascii"), max_size=6),
        st.integers(min_value=0, max_value=10**9) | st.text(st.characters(codec="ascii")),
        max_size=8,
    )
)
def test_canonical_json_is_json_dumps_for_ascii_token_counts(value: dict[str, Any]) -> None:
    assert canonical_json(value) == json_dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": {"d": [{"z": 1, "y": 2}], "c": None}, "B": True, "_": False},
        {"a b": 1, "aa": 2, "a": 3, "": 4},
        {"big": 2**64, "negative": -(2**63) - 1, "zero": 0, "minus": -1},
        {"floats": [1e16, 1e-05, 0.1, 1.5, 100.0, -0.0, 1.7976931348623157e308, 5e-324]},
        {"text": "caf\u00e9 \u65e5\u672c \U0001f600"},
        {"del": "a\x7fb"},
        {"controls": "\x00\x01\n\t\r\b\f\x1f", "quote": '"', "slash": "\\/"},
        {"lone surrogate": "\ud800", "\udfff": 1},
        {"\u00e9": 1, "e": 2, "z": 3},
        {"empty": {}, "list": [], "string": ""},
        [1, "two", [3, {"four": 4}]],
    ],
)
def test_canonical_json_is_json_dumps_for_awkward_json(value: Any) -> None:
    assert canonical_json(value) == json_dumps(value)


@given(
    usage=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    model=st.text(max_size=12),
    provider=st.text(max_size=10),
    service_tier=st.text(max_size=6),
    client_id=st.integers(min_value=1, max_value=2**62),
)
def test_the_fingerprint_put_together_around_the_usage_text_is_the_same(
    usage: dict[str, Any], model: str, provider: str, service_tier: str, client_id: int
) -> None:
    # Ingest hands over the usage object as validation encoded it: msgspec, sorted keys.
    try:
        usage_text = json_sorted(usage)
    except UnicodeEncodeError:  # a lone surrogate: refused by validation before this
        return
    fields: dict[str, Any] = {
        "client_id": client_id,
        "provider": provider,
        "model": model,
        "usage": usage,
        "occurred_at": datetime(2026, 12, 4, 21, 30, 5, 123000, tzinfo=UTC),
        "service_tier": service_tier,
    }
    reference = json_dumps(
        {
            "client": client_id,
            "provider": provider,
            "model": model,
            "usage": usage,
            "occurred_at": "2026-12-04T21:30:05.123000+00:00",
            "service_tier": service_tier,
        }
    )

    assert event_fingerprint(**fields, usage_text=usage_text) == sha256(reference).hexdigest()
    assert event_fingerprint(**fields) == sha256(reference).hexdigest()


def test_a_usage_object_of_token_counts_is_written_without_json_dumps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("json.dumps was called")

    monkeypatch.setattr(services.json, "dumps", refuse)
    usage = {
        "input_tokens": 570,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 12000},
        "output_tokens": 562,
        "service_tier": "standard",
        "server_tool_use": None,
    }

    assert canonical_json({"usage": usage, "model": "claude-sonnet-4-5"}).startswith(b'{"model"')


def test_with_the_usage_text_a_plain_event_is_not_encoded_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    usage = {"input_tokens": 570, "cache_creation": {"ephemeral_1h_input_tokens": 12}}
    expected = event_fingerprint(**KNOWN, usage=usage)

    def refuse(value: Any) -> bytes:
        raise AssertionError("the whole event was encoded")

    monkeypatch.setattr(services, "canonical_json", refuse)
    usage_text = json_sorted(usage)
    assert event_fingerprint(**KNOWN, usage=usage, usage_text=usage_text) == expected


KNOWN: dict[str, Any] = {
    "client_id": 7,
    "provider": "anthropic",
    "model": "claude-sonnet-4-5",
    "occurred_at": datetime(2026, 12, 4, 21, 30, tzinfo=UTC),
    "service_tier": "",
}


def test_the_fingerprint_of_a_known_event_never_changes() -> None:
    """Pinned from the json.dumps implementation: stored fingerprints must still match."""
    fingerprint = event_fingerprint(
        client_id=7,
        provider="anthropic",
        model="claude-sonnet-4-5-20250929",
        usage={
            "input_tokens": 570,
            "cache_creation_input_tokens": 12000,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 12000},
            "output_tokens": 562,
            "service_tier": "standard",
        },
        occurred_at=datetime(2026, 12, 4, 21, 30, 5, 123000, tzinfo=timezone(timedelta(hours=1))),
        service_tier="",
    )

    assert fingerprint == PINNED_FINGERPRINT


def test_the_fingerprint_of_an_event_with_a_float_and_an_accent_never_changes() -> None:
    fingerprint = event_fingerprint(
        client_id=7,
        provider="openai",
        model="gpt-4.1",
        usage={"prompt_tokens": 10, "ratio": 1e16, "note": "caf\u00e9"},
        occurred_at=datetime(2026, 12, 4, 21, 30, tzinfo=UTC),
        service_tier="batch",
    )

    assert fingerprint == PINNED_FLOAT_FINGERPRINT


PINNED_FINGERPRINT = "d73ea3aa1ae8fc707ce526b3fb74d6a504b6b1fb0e4b6c640f44d4fffd846c35"
PINNED_FLOAT_FINGERPRINT = "a9f2883e85f3092880f23813dd1a8e5123e31ede08eeb60f8d9ac961ff7e98e2"
