"""A loopback stand-in for the providers' usage and cost report APIs.

A real HTTP server on 127.0.0.1 (a thread of the test process) that answers like
Anthropic's ``/v1/organizations/analytics/usage`` and ``/cost`` (the ``anthropic`` SDK's
``BetaAnalyticsUsageItem``/``BetaAnalyticsCostItem`` rows in a report page cursor) and
OpenAI's ``/v1/organization/usage/completions`` and ``/v1/organization/costs`` (the
``openai`` package's ``UsageCompletionsResponse``/``UsageCostsResponse``). It keeps the
APIs' rules that a client can get wrong: at most 5 ``group_by`` dimensions and 1,000 rows
a page for Anthropic, at most 31 daily buckets a page for OpenAI's usage, a 31-day range,
the admin key, the beta header, and cursors that only this server understands.

Tests give it the "true" usage as records with every dimension; it filters, groups and
pages them as asked. ``fail()`` queues error answers (a 429 with ``Retry-After``, a 500,
a 400) for the next matching requests.

    with ProviderStandIn() as standin:
        standin.anthropic = [AnthropicRecord(day=date(2026, 11, 1), model="claude-x", ...)]
        settings.ANTHROPIC_BASE_URL = standin.anthropic_base_url
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

ANTHROPIC_ADMIN_KEY = "sk-ant-admin01-standin"
OPENAI_ADMIN_KEY = "sk-admin-standin"
ANTHROPIC_BETA = "analytics-usage-cost-2026-08-24"
ANTHROPIC_DIMENSIONS = (
    "model", "api_key_id", "workspace_id", "service_tier", "context_window", "inference_geo",
    "speed",
)  # fmt: skip
OPENAI_USAGE_DIMENSIONS = ("model", "project_id", "api_key_id", "batch", "user_id", "service_tier")
OPENAI_COST_DIMENSIONS = ("project_id", "api_key_id", "line_item", "user_id")


@dataclass(slots=True)
class AnthropicRecord:
    """One day of usage for one combination of every dimension, with its cost."""

    day: date
    model: str | None
    api_key_id: str | None = None
    workspace_id: str | None = None
    service_tier: str | None = "standard"
    context_window: str | None = "0-200k"
    inference_geo: str | None = "global"  # None: what inference_geos[]=not_available matches
    speed: str = "standard"
    uncached_input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 0
    web_search_requests: int = 0
    requests: int = 0
    amount: str = "0"  # fractional cents, as the API writes them
    list_amount: str = "0"


@dataclass
class OpenAIRecord:
    """One day of completions usage for one model, project, key and batch flag."""

    day: date
    model: str
    project_id: str | None = None
    api_key_id: str | None = None
    batch: bool = False
    input_tokens: int = 0  # including cached and cache-written tokens, as OpenAI counts
    input_cached_tokens: int = 0
    input_cache_write_tokens: int = 0
    output_tokens: int = 0
    num_model_requests: int = 0
    input_cost_usd: Decimal = Decimal(0)
    output_cost_usd: Decimal = Decimal(0)

    def line_items(self) -> list[tuple[str, Decimal]]:
        suffix = " (batch)" if self.batch else ""
        return [
            (f"{self.model}, input{suffix}", self.input_cost_usd),
            (f"{self.model}, output{suffix}", self.output_cost_usd),
        ]


@dataclass
class _Failure:
    path: str
    status: int
    times: int
    retry_after: str | None
    message: str


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    status: int = 200


def _iso(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _parse_moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _BadRequest(Exception):
    pass


class ProviderStandIn:
    """The stand-in server; a context manager that starts and stops it."""

    def __init__(self) -> None:
        self.anthropic: list[AnthropicRecord] = []
        self.openai: list[OpenAIRecord] = []
        # Serve pages smaller than asked, to make several pages of a small data set.
        self.page_size: int | None = None
        self.openai_page_buckets: int | None = None
        self.seen: list[Seen] = []
        self._failures: list[_Failure] = []
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self._cursor_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._encoder = msgspec.json.Encoder(decimal_format="number")
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> ProviderStandIn:
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def anthropic_base_url(self) -> str:
        return self.url  # the SDK appends /v1/…

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"  # as OPENAI_BASE_URL is written for the openai SDK

    # -- test controls ---------------------------------------------------------------

    def fail(
        self,
        path: str,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
        message: str = "",
    ) -> None:
        """Answer the next ``times`` requests whose path contains ``path`` with an error."""
        with self._lock:
            self._failures.append(
                _Failure(path, status, times, retry_after, message or f"stand-in error {status}")
            )

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if path in s.path]

    # -- answering -------------------------------------------------------------------

    def answer(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any
    ) -> tuple[int, dict[str, str], bytes]:
        anthropic = path.startswith("/v1/organizations/analytics/")
        with self._lock:
            seen = Seen(path, query)
            self.seen.append(seen)
            failure = next((f for f in self._failures if f.path in path), None)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
        if failure is not None:
            seen.status = failure.status
            extra = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            return failure.status, extra, self._error(anthropic, failure.status, failure.message)
        try:
            if method != "GET":
                raise _BadRequest(f"method {method} not allowed")
            if anthropic:
                # The installed SDK sends the key as a bearer token; older ones as x-api-key.
                sent = {headers.get("x-api-key"), headers.get("authorization")}
                if not sent & {ANTHROPIC_ADMIN_KEY, f"Bearer {ANTHROPIC_ADMIN_KEY}"}:
                    seen.status = 401
                    return 401, {}, self._error(True, 401, "invalid admin API key")
                if ANTHROPIC_BETA not in (headers.get("anthropic-beta") or ""):
                    raise _BadRequest(f"this endpoint requires the beta header {ANTHROPIC_BETA}")
                body = self._anthropic(path.rsplit("/", 1)[-1], query)
            elif path.startswith("/v1/organization/"):
                if headers.get("authorization") != f"Bearer {OPENAI_ADMIN_KEY}":
                    seen.status = 401
                    return 401, {}, self._error(False, 401, "Incorrect API key provided")
                body = self._openai(path, query)
            else:
                seen.status = 404
                return 404, {}, self._error(anthropic, 404, f"no route {path}")
        except _BadRequest as exc:
            seen.status = 400
            return 400, {}, self._error(anthropic, 400, str(exc))
        return 200, {}, self._encoder.encode(body)

    def _error(self, anthropic: bool, status: int, message: str) -> bytes:
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            429: "rate_limit_error",
        }.get(status, "api_error")
        if anthropic:
            return self._encoder.encode(
                {"type": "error", "error": {"type": kind, "message": message}}
            )
        return self._encoder.encode(
            {"error": {"message": message, "type": kind, "param": None, "code": None}}
        )

    def _page(
        self, query: dict[str, list[str]], limit: int, build: Any, render: Any
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a listing: the whole result is built on the first request and kept
        under an opaque cursor, as the real APIs' cursors pin a snapshot. Its entries
        become JSON objects (``render``) only when their page is served."""
        cursor = query.get("page", [None])[0]
        if cursor:
            name, _, offset_text = cursor.partition(":")
            with self._lock:
                results = self._cursors.get(name)
            if results is None or not offset_text.isdigit():
                raise _BadRequest(f"page: unknown cursor {cursor!r}")
            offset = int(offset_text)
        else:
            results = build()
            name = f"c{next(self._cursor_ids)}"
            with self._lock:
                self._cursors[name] = results
            offset = 0
        end = offset + limit
        if end >= len(results):
            with self._lock:
                self._cursors.pop(name, None)
        next_page = f"{name}:{end}" if end < len(results) else None
        return [render(entry) for entry in results[offset:end]], next_page

    # -- Anthropic -------------------------------------------------------------------

    def _anthropic(self, endpoint: str, query: dict[str, list[str]]) -> dict[str, Any]:
        if endpoint not in ("usage", "cost"):
            raise _BadRequest(f"unknown report {endpoint!r}")
        group_by = query.get("group_by[]", [])
        if len(group_by) > 5:
            raise _BadRequest(f"group_by: at most 5 dimensions, got {len(group_by)}")
        if bad := [g for g in group_by if g not in ANTHROPIC_DIMENSIONS]:
            raise _BadRequest(f"group_by: unsupported here {bad}")
        if query.get("time_bucket_width", [None])[0] != "1d":
            raise _BadRequest("time_bucket_width: the stand-in serves 1d buckets only")
        limit = int(query.get("limit", ["20"])[0])
        if not 1 <= limit <= 1000:
            raise _BadRequest("limit: must be 1-1000")
        try:
            start = _parse_moment(query["starting_at"][0])
            end = _parse_moment(query["ending_at"][0])
        except (KeyError, ValueError) as exc:
            raise _BadRequest(f"starting_at/ending_at: {exc}") from exc
        if end - start > timedelta(days=31):
            raise _BadRequest("the range may span at most 31 days")
        if start.time() != time(0) or end.time() != time(0):
            raise _BadRequest("daily buckets: starting_at and ending_at at midnight UTC")
        first, after = start.astimezone(UTC).date(), end.astimezone(UTC).date()
        geos = query.get("inference_geos[]")
        speeds = query.get("speeds[]")

        def build() -> list[tuple[tuple[Any, ...], list[Any]]]:
            sums: dict[tuple[Any, ...], list[Any]] = {}
            for r in self.anthropic:
                if not first <= r.day < after:
                    continue
                if geos is not None and (r.inference_geo or "not_available") not in geos:
                    continue
                if speeds is not None and r.speed not in speeds:
                    continue
                key = (r.day, *(getattr(r, g) for g in group_by))
                acc = sums.get(key)
                if acc is None:
                    acc = sums[key] = [0, 0, 0, 0, 0, 0, 0, Decimal(0), Decimal(0)]
                acc[0] += r.uncached_input_tokens
                acc[1] += r.cache_write_5m_tokens
                acc[2] += r.cache_write_1h_tokens
                acc[3] += r.cache_read_input_tokens
                acc[4] += r.output_tokens
                acc[5] += r.web_search_requests
                acc[6] += r.requests
                acc[7] += Decimal(r.amount)
                acc[8] += Decimal(r.list_amount)
            return sorted(
                sums.items(), key=lambda kv: tuple("" if v is None else str(v) for v in kv[0])
            )

        def render(entry: tuple[tuple[Any, ...], list[Any]]) -> dict[str, Any]:
            key, acc = entry
            day = key[0]
            group = dict.fromkeys(ANTHROPIC_DIMENSIONS)
            group.update(zip(group_by, key[1:], strict=True))
            item: dict[str, Any] = {
                "starting_at": _iso(day),
                "ending_at": _iso(day + timedelta(days=1)),
                "group": group,
            }
            if endpoint == "usage":
                item["usage"] = {
                    "uncached_input_tokens": acc[0],
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": acc[1],
                        "ephemeral_1h_input_tokens": acc[2],
                    },
                    "cache_read_input_tokens": acc[3],
                    "output_tokens": acc[4],
                    "server_tool_use": {"web_search_requests": acc[5]},
                    "requests": acc[6],
                    "total_tokens": acc[0] + acc[1] + acc[2] + acc[3] + acc[4],
                }
            else:
                item["cost"] = {
                    "amount": str(acc[7]),
                    "list_amount": str(acc[8]),
                    "currency": "USD",
                    "requests": acc[6],
                }
            return item

        data, next_page = self._page(query, min(limit, self.page_size or limit), build, render)
        return {
            "data": data,
            "has_more": next_page is not None,
            "next_page": next_page,
            "data_refreshed_at": "2026-12-01T00:00:00Z",
        }

    # -- OpenAI ----------------------------------------------------------------------

    def _openai(self, path: str, query: dict[str, list[str]]) -> dict[str, Any]:
        costs = path == "/v1/organization/costs"
        if not costs and path != "/v1/organization/usage/completions":
            raise _BadRequest(f"unknown report {path}")
        group_by = query.get("group_by[]", []) or query.get("group_by", [])
        allowed = OPENAI_COST_DIMENSIONS if costs else OPENAI_USAGE_DIMENSIONS
        if bad := [g for g in group_by if g not in allowed]:
            raise _BadRequest(f"group_by: unsupported {bad}")
        if query.get("bucket_width", ["1d"])[0] != "1d":
            raise _BadRequest("bucket_width: the stand-in serves 1d buckets only")
        limit = int(query.get("limit", ["7"])[0])
        if not 1 <= limit <= (180 if costs else 31):
            raise _BadRequest(f"limit: {limit} out of range")
        try:
            start = datetime.fromtimestamp(int(query["start_time"][0]), UTC).date()
            end_ts = query.get("end_time")
            end = (
                datetime.fromtimestamp(int(end_ts[0]), UTC).date()
                if end_ts
                else start + timedelta(days=limit)
            )
        except (KeyError, ValueError) as exc:
            raise _BadRequest(f"start_time/end_time: {exc}") from exc

        def build() -> list[dict[str, Any]]:
            buckets = []
            day = start
            while day < end:
                buckets.append(self._openai_bucket(day, group_by, costs))
                day += timedelta(days=1)
            return buckets

        data, next_page = self._page(
            query, min(limit, self.openai_page_buckets or limit), build, lambda bucket: bucket
        )
        return {
            "object": "page",
            "data": data,
            "has_more": next_page is not None,
            "next_page": next_page,
        }

    def _openai_bucket(self, day: date, group_by: list[str], costs: bool) -> dict[str, Any]:
        sums: dict[tuple[Any, ...], list[Any]] = {}
        for r in self.openai:
            if r.day != day:
                continue
            if costs:
                for line_item, usd in r.line_items():
                    values = {
                        "project_id": r.project_id,
                        "api_key_id": r.api_key_id,
                        "line_item": line_item,
                    }
                    key = tuple(values.get(g) for g in group_by)
                    sums.setdefault(key, [Decimal(0)])[0] += usd
                continue
            key = tuple(getattr(r, g, None) for g in group_by)
            acc = sums.setdefault(key, [0, 0, 0, 0, 0])
            acc[0] += r.input_tokens
            acc[1] += r.input_cached_tokens
            acc[2] += r.input_cache_write_tokens
            acc[3] += r.output_tokens
            acc[4] += r.num_model_requests
        results = []
        for key in sorted(sums, key=lambda k: tuple("" if v is None else str(v) for v in k)):
            acc = sums[key]
            if costs:
                result: dict[str, Any] = {
                    "object": "organization.costs.result",
                    "amount": {"value": acc[0], "currency": "usd"},
                    **dict.fromkeys(OPENAI_COST_DIMENSIONS),
                }
            else:
                result = {
                    "object": "organization.usage.completions.result",
                    "input_tokens": acc[0],
                    "input_cached_tokens": acc[1],
                    "input_cache_write_tokens": acc[2],
                    "output_tokens": acc[3],
                    "num_model_requests": acc[4],
                    **dict.fromkeys(OPENAI_USAGE_DIMENSIONS),
                }
            result.update(zip(group_by, key, strict=True))
            results.append(result)
        start = datetime.combine(day, time(0), tzinfo=UTC)
        return {
            "object": "bucket",
            "start_time": int(start.timestamp()),
            "end_time": int((start + timedelta(days=1)).timestamp()),
            "results": results,
        }


class _Handler(BaseHTTPRequestHandler):
    standin: ProviderStandIn
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        status, headers, body = self.standin.answer(method, parts.path, query, self.headers)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests read ``standin.seen`` instead


@pytest.fixture(name="standin")
def standin_fixture(settings: Any) -> Iterator[ProviderStandIn]:
    """A running stand-in, with the admin keys and base URLs pointing at it.

    Import ``standin_fixture`` into a test module to use it as ``standin``."""
    with ProviderStandIn() as server:
        settings.ANTHROPIC_ADMIN_API_KEY = ANTHROPIC_ADMIN_KEY
        settings.OPENAI_ADMIN_API_KEY = OPENAI_ADMIN_KEY
        settings.ANTHROPIC_BASE_URL = server.anthropic_base_url
        settings.OPENAI_BASE_URL = server.openai_base_url
        yield server


__all__ = [
    "ANTHROPIC_ADMIN_KEY", "OPENAI_ADMIN_KEY", "AnthropicRecord", "OpenAIRecord", "ProviderStandIn",
    "standin_fixture",
]  # fmt: skip
