from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import clientmeter
import httpx2
import pytest

from tests.sdk.anthropic_api import AnthropicAPI

METER_URL = "https://meter.test"


class MeterServer:
    """ClientMeter's ingest endpoint as the SDK sees it (the real one is in the live tests).

    Answers per the ingest contract: per-event results, ``duplicate`` for a known id.
    ``script`` holds canned responses used first, e.g. a 503 before recovery.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[httpx2.Request] = []
        self.attempt_times: list[float] = []
        self.accepted: dict[str, dict[str, Any]] = {}
        self.script: list[httpx2.Response] = []
        # GET /api/v1/budget answers this body with this status.
        self.budget: dict[str, Any] = {"status": "green"}
        self.budget_status_code = 200
        self.budget_requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/api/v1/budget":
            self.budget_requests.append(request)
            return httpx2.Response(self.budget_status_code, json=self.budget)
        with self.lock:
            self.requests.append(request)
            self.attempt_times.append(time.monotonic())
            if self.script:
                return self.script.pop(0)
            results = []
            for event in json.loads(request.content)["events"]:
                status = "duplicate" if event["id"] in self.accepted else "accepted"
                self.accepted.setdefault(event["id"], event)
                results.append({"id": event["id"], "status": status})
        return httpx2.Response(200, json={"results": results})

    @property
    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.accepted.values())

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.events


def process_exit(timeout: float = 0.5) -> None:
    """What the end of the app's process does to the SDK: a last flush, then no senders."""
    with clientmeter._registry_lock:
        senders = list(clientmeter._all_senders)
        clientmeter._all_senders.clear()
        clientmeter._shared_senders.clear()
    for sender in senders:
        sender.close(timeout=timeout)


@pytest.fixture(autouse=True)
def _isolated_senders() -> Iterator[None]:
    """Each test gets its own senders: stop the ones a test created, forget them."""
    yield
    process_exit()


@pytest.fixture
def anthropic_api() -> AnthropicAPI:
    return AnthropicAPI()


@pytest.fixture
def meter_server() -> MeterServer:
    return MeterServer()


@pytest.fixture
def meter_options(meter_server: MeterServer, tmp_path: Any) -> dict[str, Any]:
    """Keyword arguments for wrap(): the fake ClientMeter and a spool of the test's own."""
    return {
        "url": METER_URL,
        "api_key": "cm_live_AbCdEfGh_" + "x" * 32,
        "spool_dir": tmp_path / "spool",
        "http_client": httpx2.Client(transport=httpx2.MockTransport(meter_server)),
    }


@pytest.fixture
def wrapped(anthropic_api: AnthropicAPI, meter_options: dict[str, Any]) -> Callable[..., Any]:
    def make(**kwargs: Any) -> Any:
        return clientmeter.wrap(
            anthropic_api.client(), client="acme", project="support-bot", **meter_options, **kwargs
        )

    return make
