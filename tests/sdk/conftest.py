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
    ``script`` holds canned responses used first, e.g. a 503 before recovery. With
    ``keys`` (bearer key → client slug) it binds keys to clients as the server does: an
    event naming another client is rejected ``forbidden_client``, one naming none is
    stored under the key's client (``stored_under``). ``down`` refuses connections;
    ``poison(request)`` answering a response fails the whole batch with it.
    """

    def __init__(self, keys: dict[str, str] | None = None) -> None:
        self.keys = keys or {}
        self.down = False
        self.poison: Callable[[httpx2.Request], httpx2.Response | None] | None = None
        self.stored_under: dict[str, str] = {}
        self.posts_per_id: dict[str, int] = {}
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
        if self.down:
            raise httpx2.ConnectError("connection refused", request=request)
        with self.lock:
            self.requests.append(request)
            self.attempt_times.append(time.monotonic())
            if self.script:
                return self.script.pop(0)
            refused = self.poison(request) if self.poison is not None else None
            if refused is not None:
                return refused
            key = request.headers["Authorization"].removeprefix("Bearer ")
            results = [self._take(event, key) for event in json.loads(request.content)["events"]]
        return httpx2.Response(200, json={"results": results})

    def _take(self, event: dict[str, Any], key: str) -> dict[str, Any]:
        self.posts_per_id[event["id"]] = self.posts_per_id.get(event["id"], 0) + 1
        owner = self.keys.get(key)
        if owner is not None and event.get("client", owner) != owner:
            error = {"code": "forbidden_client", "field": "events[0].client", "message": "no"}
            return {"id": event["id"], "status": "rejected", "errors": [error]}
        status = "duplicate" if event["id"] in self.accepted else "accepted"
        self.accepted.setdefault(event["id"], event)
        if owner is not None:
            self.stored_under.setdefault(event["id"], owner)
        return {"id": event["id"], "status": status}

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
