"""OpenAI's organization usage (completions) and costs reports, through httpx.

``GET {OPENAI_BASE_URL}/organization/usage/completions`` grouped by model, project, API
key and batch, and ``GET …/organization/costs`` grouped by project, API key and line item,
both in daily buckets, following ``next_page``. The shapes are OpenAI's documented ones
(the ``openai`` package's ``UsageCompletionsResponse``/``UsageCostsResponse``).

Mapping to ``ProviderReportRow``: the project is the workspace; OpenAI counts cached and
cache-written tokens inside ``input_tokens``, so uncached input is what remains (as in
``tracking.pricing`` for events, cache writes go to the 5-minute column). Costs are in
dollars (JSON numbers, decoded exactly, never through a float) and become cents. A cost
line item names its model (``"<model>, <what>"``); a line item mentioning batch is the
batch row. OpenAI reports no list price: ``list_amount_cents`` stays empty.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx2 as httpx  # httpx as installed here: the anthropic and openai SDKs' client
import msgspec

from tracking.provider_reports.retry import (
    ProviderError,
    RetryableError,
    retry_after_seconds,
    with_retries,
)
from tracking.provider_reports.rows import ReportRows

DEFAULT_BASE_URL = "https://api.openai.com/v1"
USAGE_GROUP_BY = ["model", "project_id", "api_key_id", "batch"]
COST_GROUP_BY = ["project_id", "api_key_id", "line_item"]
# Buckets per page: 31 is the usage endpoint's maximum for daily buckets.
MAX_DAYS = 31
HUNDRED = Decimal(100)


class UsageResult(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    num_model_requests: int
    input_cached_tokens: int | None = None
    input_cache_write_tokens: int | None = None
    input_uncached_tokens: int | None = None
    model: str | None = None
    project_id: str | None = None
    api_key_id: str | None = None
    batch: bool | None = None
    service_tier: str | None = None


class Amount(msgspec.Struct):
    value: Decimal | None = None
    currency: str | None = None


class CostResult(msgspec.Struct):
    amount: Amount | None = None
    line_item: str | None = None
    project_id: str | None = None
    api_key_id: str | None = None


class UsageBucket(msgspec.Struct):
    start_time: int
    results: list[UsageResult]


class CostBucket(msgspec.Struct):
    start_time: int
    results: list[CostResult]


class UsagePage(msgspec.Struct):
    data: list[UsageBucket]
    has_more: bool
    next_page: str | None = None


class CostPage(msgspec.Struct):
    data: list[CostBucket]
    has_more: bool
    next_page: str | None = None


_USAGE_PAGE = msgspec.json.Decoder(UsagePage)
_COST_PAGE = msgspec.json.Decoder(CostPage)


def _timestamp(day: date) -> int:
    return int(datetime.combine(day, time(0), tzinfo=UTC).timestamp())


def _day(timestamp: int) -> date:
    return datetime.fromtimestamp(timestamp, UTC).date()


def report_read(*, api_key: str, base_url: str, since: date, until: date) -> ReportRows:
    """OpenAI's completions usage and costs for the UTC days ``since..until``, merged by key.

    Raises ``ProviderError`` when a page cannot be read.
    """
    rows = ReportRows()
    with httpx.Client(
        base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"),
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=120.0,
    ) as client:
        start = since
        while start <= until:
            end = min(until, start + timedelta(days=MAX_DAYS - 1))
            common = [
                ("start_time", _timestamp(start)),
                ("end_time", _timestamp(end + timedelta(days=1))),
                ("bucket_width", "1d"),
                ("limit", MAX_DAYS),
            ]
            what = f"{start}..{end}"
            usage_params = common + [("group_by[]", g) for g in USAGE_GROUP_BY]
            for page in _pages(
                client,
                "/organization/usage/completions",
                usage_params,
                _USAGE_PAGE,
                f"OpenAI usage {what}",
                rows,
            ):
                _add_usage(rows, page.data)
            cost_params = common + [("group_by[]", g) for g in COST_GROUP_BY]
            for cost_page in _pages(
                client, "/organization/costs", cost_params, _COST_PAGE, f"OpenAI costs {what}", rows
            ):
                _add_costs(rows, cost_page.data)
            start = end + timedelta(days=1)
    return rows


def _pages(
    client: Any,
    path: str,
    params: list[tuple[str, Any]],
    decoder: msgspec.json.Decoder[Any],
    what: str,
    rows: ReportRows,
) -> Iterator[Any]:
    cursor: str | None = None
    while True:
        query = params if cursor is None else [*params, ("page", cursor)]
        body = with_retries(functools.partial(_get, client, path, query), what=what)
        try:
            page = decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise ProviderError(f"{what}: unexpected response ({exc})") from exc
        rows.pages += 1
        yield page
        if not page.has_more or not page.next_page:
            return
        cursor = page.next_page


def _get(client: Any, path: str, query: list[tuple[str, Any]]) -> bytes:
    try:
        response = client.get(path, params=query)
    except httpx.TransportError as exc:
        raise RetryableError(f"connection failed: {exc}") from exc
    if response.status_code == 200:
        return bytes(response.content)
    message = f"HTTP {response.status_code}: {_error_message(response)}"
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableError(
            message, retry_after=retry_after_seconds(response.headers.get("retry-after"))
        )
    raise ProviderError(message)


def _error_message(response: Any) -> str:
    """OpenAI's ``{"error": {"message": ...}}``, else the start of the body."""
    try:
        body = msgspec.json.decode(response.content)
        return str(body["error"]["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return response.text[:300] or response.reason_phrase


def _add_usage(rows: ReportRows, buckets: list[UsageBucket]) -> None:
    for bucket in buckets:
        day = _day(bucket.start_time)
        for r in bucket.results:
            cached = r.input_cached_tokens or 0
            written = r.input_cache_write_tokens or 0
            uncached = r.input_uncached_tokens
            if uncached is None:
                uncached = r.input_tokens - cached - written
            key = (
                day,
                r.model or "",
                r.api_key_id or "",
                r.project_id or "",
                "",
                "",
                "",
                "",
                bool(r.batch),
            )
            rows.add_usage(
                key, (uncached, written, 0, cached, r.output_tokens, 0, r.num_model_requests)
            )


def _line_item_model(line_item: str) -> str:
    return line_item.split(",", 1)[0].strip()


def _add_costs(rows: ReportRows, buckets: list[CostBucket]) -> None:
    for bucket in buckets:
        day = _day(bucket.start_time)
        for r in bucket.results:
            if r.amount is None or r.amount.value is None:
                continue
            if (r.amount.currency or "usd").lower() != "usd":
                raise ProviderError(f"OpenAI costs: currency {r.amount.currency!r}, expected usd")
            line_item = r.line_item or ""
            key = (
                day, _line_item_model(line_item), r.api_key_id or "", r.project_id or "",
                "", "", "", "", "batch" in line_item.lower(),
            )  # fmt: skip
            rows.add_cost(key, r.amount.value * HUNDRED, None)
