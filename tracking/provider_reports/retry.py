"""Errors of a provider's report API, and the bounded retry around each page request."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

T = TypeVar("T")

# Five tries per page: a rate limit or a provider's bad minute rarely outlasts that, and a
# sync that gives up is recorded as failed and re-run by the next schedule anyway.
MAX_ATTEMPTS = 5
# A Retry-After longer than this fails the run instead of holding a worker for it.
MAX_WAIT_SECONDS = 120.0


class ProviderError(Exception):
    """The provider's report could not be read; the message is shown on the failed run."""


class RetryableError(ProviderError):
    """A rate limit (429), a server error (5xx) or a dropped connection: worth retrying."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (it may also be an HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def with_retries(
    fetch: Callable[[], T], *, what: str, sleep: Callable[[float], None] = time.sleep
) -> T:
    """``fetch()``, retried on ``RetryableError`` at most ``MAX_ATTEMPTS`` times in all.

    Waits what the provider's ``Retry-After`` asks (a rate limit), else backs off
    exponentially (1, 2, 4, 8 s). Gives up with a ``ProviderError`` naming ``what``.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return fetch()
        except RetryableError as exc:
            if attempt == MAX_ATTEMPTS:
                raise ProviderError(f"{what}: {exc} (gave up after {attempt} attempts)") from exc
            wait = exc.retry_after if exc.retry_after is not None else float(2 ** (attempt - 1))
            if wait > MAX_WAIT_SECONDS:
                raise ProviderError(
                    f"{what}: {exc}; the provider asks to wait {wait:.0f} s, more than "
                    f"{MAX_WAIT_SECONDS:.0f} s"
                ) from exc
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
