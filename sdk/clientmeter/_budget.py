"""The opt-in budget guard: refuse a call while the client's budget status is red."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from clientmeter._http import httpx
from clientmeter._sender import USER_AGENT

log = logging.getLogger("clientmeter")


class BudgetExceeded(Exception):
    """Raised before an Anthropic call when the client's month-to-date spend is at 100% or more."""

    def __init__(self, client: str, budget: dict[str, Any]) -> None:
        self.client = client
        self.budget = budget
        super().__init__(
            f"ClientMeter: client {client!r} is over its budget for {budget.get('month')}: "
            f"billed {budget.get('billed_usd')} USD of {budget.get('budget_usd')} USD "
            f"({budget.get('percent_used')}%)"
        )


class BudgetGuard:
    """Checks ``GET /api/v1/budget?client=SLUG``, cached for ``ttl`` seconds.

    Fails open: if the check itself fails (network, 5xx, bad key) the call goes ahead and
    the failure is logged; the failure is cached too, so an outage costs one timeout per
    ``ttl``, not one per call.
    """

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        client: str,
        ttl: float = 60.0,
        timeout: float = 2.0,
        http_client: Any = None,
    ) -> None:
        self.endpoint = f"{url.rstrip('/')}/api/v1/budget"
        self.api_key = api_key
        self.client = client
        self.ttl = ttl
        self.timeout = timeout
        self._http = http_client
        self._lock = threading.Lock()
        self._status: dict[str, Any] | None = None
        self._checked_at: float | None = None

    def check(self) -> None:
        """Raise BudgetExceeded if the (cached) status is red."""
        self._raise_if_red(self._current())

    async def acheck(self) -> None:
        if self._fresh():
            self._raise_if_red(self._status)
            return
        # The HTTP check is blocking; run it off the event loop.
        self._raise_if_red(await asyncio.to_thread(self._current))

    def _fresh(self) -> bool:
        return self._checked_at is not None and time.monotonic() - self._checked_at < self.ttl

    def _current(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._fresh():
                self._status = self._fetch()
                self._checked_at = time.monotonic()
            return self._status

    def _fetch(self) -> dict[str, Any] | None:
        try:
            http = self._http or httpx.Client(timeout=self.timeout)
            self._http = http
            response = http.get(
                self.endpoint,
                params={"client": self.client},
                headers={"Authorization": f"Bearer {self.api_key}", "User-Agent": USER_AGENT},
                timeout=self.timeout,
            )
            if response.status_code != 200:
                log.warning(
                    "ClientMeter budget check answered %s: %s; letting calls through",
                    response.status_code,
                    response.text[:300],
                )
                return None
            status = response.json()
            return status if isinstance(status, dict) else None
        except Exception as exc:
            log.warning("ClientMeter budget check failed (%r); letting calls through", exc)
            return None

    def _raise_if_red(self, status: dict[str, Any] | None) -> None:
        if status is not None and status.get("status") == "red":
            raise BudgetExceeded(self.client, status)
