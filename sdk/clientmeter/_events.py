"""Turning provider responses into ClientMeter ingest events."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from clientmeter._tags import TAG_FIELDS, Tags

log = logging.getLogger("clientmeter")


# The ingest API's limits (README, "Raw HTTP"): an event over them would be rejected and its
# cost lost, so tags are trimmed to fit instead (with one warning per process).
MAX_TAG_LENGTH = 200
MAX_METADATA_KEYS = 20
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 200
_warned_trim = False


def _warn_trimmed() -> None:
    global _warned_trim
    if not _warned_trim:
        _warned_trim = True
        log.warning("ClientMeter: tags or metadata were trimmed to fit the API's limits")


def _fit(text: str, limit: int) -> str:
    """``text`` without NUL characters (the database refuses them), cut to ``limit``."""
    fitted = text.replace("\x00", "")[:limit]
    if fitted != text:
        _warn_trimmed()
    return fitted


def _fit_metadata(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_KEYS:
        _warn_trimmed()
    return {
        _fit(key, MAX_METADATA_KEY_LENGTH): _fit(value, MAX_METADATA_VALUE_LENGTH)
        for key, value in list(metadata.items())[:MAX_METADATA_KEYS]
    }


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Call:
    """What is known when the app makes a call: its tags and start time."""

    tags: Tags
    model: str | None = None
    # The request's parameters, kept while the call is in flight (Anthropic: which cache
    # TTL a revised cache write belongs to).
    body: Any = None
    started: float = field(default_factory=time.monotonic)

    def elapsed_ms(self) -> int:
        return max(0, int((time.monotonic() - self.started) * 1000))


def build_event(
    *,
    call: Call,
    client: str | None,
    provider: str = "anthropic",
    event_id: str | None,
    model: str | None,
    usage: dict[str, Any],
    request_id: str | None = None,
    latency_ms: int | None = None,
    status_code: int | None = 200,
    service_tier: str | None = None,
    occurred_at: str | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        # Without a response id: a UUID drawn once, here, before the event is spooled; every
        # resend carries the spooled copy, so the same id.
        "id": event_id or str(uuid.uuid4()),
        "provider": provider,
        "model": model or call.model or "unknown",
        "usage": usage,
        "occurred_at": occurred_at or now_rfc3339(),
    }
    if client:
        event["client"] = client
    for name in TAG_FIELDS:
        value = call.tags.values.get(name)
        if value:
            event[name] = _fit(value, MAX_TAG_LENGTH)
    optional = {
        "request_id": request_id,
        "latency_ms": latency_ms,
        "status_code": status_code,
        "service_tier": service_tier,
    }
    event.update({key: value for key, value in optional.items() if value is not None})
    # The SDK's own keys (batch id, custom id) come first and win, so they survive the limit.
    metadata = dict(extra_metadata or {})
    for key, value in call.tags.metadata.items():
        metadata.setdefault(key, value)
    if metadata:
        event["metadata"] = _fit_metadata(metadata)
    return event
