"""Anthropic's usage and cost report, through the installed ``anthropic`` SDK.

``client.beta.organization.analytics.usage.list`` and ``.cost.list`` (the "Usage and Cost
Analytics" beta), in daily buckets. The API breaks a report out by at most 5 dimensions
per request (``group_by``; the SDK's ``UsageListParams``/``CostListParams``), and the
report has 7 that matter here. So each range is read in 6 passes, one per inference
region (``global``, ``us``, and ``not_available`` for rows with none) and speed (every
row is ``fast`` or ``standard``), each grouped by the other 5 and labelled with its
pass's values: together the passes cover every row exactly once.

Pages are read through ``.with_raw_response`` and decoded with msgspec into the structs
below: validating each row with the SDK's pydantic models costs about 1 ms per row, too
slow for a month of a large organization. The structs' field names and types are those
of ``BetaAnalyticsUsageItem``/``BetaAnalyticsCostItem`` and of the report page cursor
(``SyncReportPageCursor``: ``data``, ``has_more``, ``next_page``); a test holds them to
the SDK's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import anthropic
import msgspec

from tracking.provider_reports.retry import (
    ProviderError,
    RetryableError,
    retry_after_seconds,
    with_retries,
)
from tracking.provider_reports.rows import ReportRows

# The API's limits (UsageListParams): at most 5 group_by dimensions, 1,000 rows a page,
# and a range of at most 31 days.
GROUP_BY = ["model", "api_key_id", "workspace_id", "service_tier", "context_window"]
PAGE_LIMIT = 1000
MAX_DAYS = 31
INFERENCE_GEOS = ("global", "us", "not_available")
SPEEDS = ("standard", "fast")


class CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int


class ServerToolUse(msgspec.Struct):
    web_search_requests: int


class UsageMetrics(msgspec.Struct):
    uncached_input_tokens: int
    cache_creation: CacheCreation
    cache_read_input_tokens: int
    output_tokens: int
    server_tool_use: ServerToolUse
    requests: int | None = None


class Group(msgspec.Struct):
    model: str | None = None
    api_key_id: str | None = None
    workspace_id: str | None = None
    service_tier: str | None = None
    context_window: str | None = None
    inference_geo: str | None = None
    speed: str | None = None


class UsageItem(msgspec.Struct):
    starting_at: datetime
    group: Group
    usage: UsageMetrics


class CostMetrics(msgspec.Struct):
    # Fractional cents as decimal strings: decoded straight to Decimal, never a float.
    amount: Decimal
    list_amount: Decimal
    currency: str


class CostItem(msgspec.Struct):
    starting_at: datetime
    group: Group
    cost: CostMetrics


class UsagePage(msgspec.Struct):
    data: list[UsageItem]
    has_more: bool | None = None
    next_page: str | None = None


class CostPage(msgspec.Struct):
    data: list[CostItem]
    has_more: bool | None = None
    next_page: str | None = None


_USAGE_PAGE = msgspec.json.Decoder(UsagePage)
_COST_PAGE = msgspec.json.Decoder(CostPage)


def windows(since: date, until: date) -> Iterator[tuple[date, date]]:
    """``since..until`` (inclusive) in ranges of at most ``MAX_DAYS`` days."""
    start = since
    while start <= until:
        end = min(until, start + timedelta(days=MAX_DAYS - 1))
        yield start, end
        start = end + timedelta(days=1)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()


def report_read(*, api_key: str, base_url: str, since: date, until: date) -> ReportRows:
    """Anthropic's usage and cost report for the UTC days ``since..until``, merged by key.

    Raises ``ProviderError`` when a page cannot be read.
    """
    client = anthropic.Anthropic(
        api_key=api_key,
        base_url=base_url or None,
        # Retries are ours (tracking.provider_reports.retry): bounded, Retry-After honoured.
        max_retries=0,
        timeout=120.0,
    )
    analytics = client.beta.organization.analytics
    rows = ReportRows()
    # The cost listing of each pass is read in a second thread while this one reads and
    # merges the usage listing: waiting for the provider overlaps with decoding.
    with client, ThreadPoolExecutor(max_workers=1, thread_name_prefix="anthropic-cost") as costs:
        for start, end in windows(since, until):
            for geo in INFERENCE_GEOS:
                for speed in SPEEDS:
                    params: dict[str, Any] = {
                        "starting_at": _midnight(start),
                        "ending_at": _midnight(end + timedelta(days=1)),
                        "time_bucket_width": "1d",
                        "group_by": GROUP_BY,
                        "inference_geos": [geo],
                        "speeds": [speed],
                        "limit": PAGE_LIMIT,
                    }
                    label = ("" if geo == "not_available" else geo, speed)
                    cost_pages = costs.submit(
                        _all_pages,
                        analytics.cost.with_raw_response.list,
                        params,
                        _COST_PAGE,
                        "cost",
                    )
                    for usage_page in _pages(
                        analytics.usage.with_raw_response.list, params, _USAGE_PAGE, "usage"
                    ):
                        rows.pages += 1
                        _add_usage(rows, usage_page.data, label)
                    for cost_page in cost_pages.result():
                        rows.pages += 1
                        _add_costs(rows, cost_page.data, label)
    return rows


def _all_pages(
    list_raw: Callable[..., Any],
    params: dict[str, Any],
    decoder: msgspec.json.Decoder[Any],
    what: str,
) -> list[Any]:
    return list(_pages(list_raw, params, decoder, what))


def _pages(
    list_raw: Callable[..., Any],
    params: dict[str, Any],
    decoder: msgspec.json.Decoder[Any],
    what: str,
) -> Iterator[Any]:
    """Every page of one listing, following the cursor (``next_page`` while ``has_more``)."""
    cursor: str | None = None
    described = (
        f"Anthropic {what} report {params['starting_at']:%Y-%m-%d}..{params['ending_at']:%Y-%m-%d}"
    )
    while True:
        kwargs = params if cursor is None else {**params, "page": cursor}
        body = with_retries(functools.partial(_get, list_raw, kwargs), what=described)
        try:
            page = decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise ProviderError(f"{described}: unexpected response ({exc})") from exc
        yield page
        if page.has_more is False or not page.next_page:
            return
        cursor = page.next_page


def _get(list_raw: Callable[..., Any], kwargs: dict[str, Any]) -> bytes:
    try:
        return list_raw(**kwargs).read()
    except anthropic.APIStatusError as exc:
        message = f"HTTP {exc.status_code}: {exc.api_message or exc.message}"
        if exc.status_code == 429 or exc.status_code >= 500:
            raise RetryableError(
                message, retry_after=retry_after_seconds(exc.response.headers.get("retry-after"))
            ) from exc
        raise ProviderError(message) from exc
    except anthropic.APIConnectionError as exc:
        raise RetryableError(f"connection failed: {exc}") from exc


def _add_usage(rows: ReportRows, items: list[UsageItem], label: tuple[str, str]) -> None:
    geo, speed = label
    for item in items:
        g, u = item.group, item.usage
        key = (
            _day(item.starting_at), g.model or "", g.api_key_id or "", g.workspace_id or "",
            g.service_tier or "", g.context_window or "", geo, speed, g.service_tier == "batch",
        )  # fmt: skip
        rows.add_usage(
            key,
            (
                u.uncached_input_tokens,
                u.cache_creation.ephemeral_5m_input_tokens,
                u.cache_creation.ephemeral_1h_input_tokens,
                u.cache_read_input_tokens,
                u.output_tokens,
                u.server_tool_use.web_search_requests,
                u.requests or 0,
            ),
        )


def _add_costs(rows: ReportRows, items: list[CostItem], label: tuple[str, str]) -> None:
    geo, speed = label
    for item in items:
        g, c = item.group, item.cost
        if c.currency != "USD":
            raise ProviderError(f"Anthropic cost report: currency {c.currency!r}, expected USD")
        key = (
            _day(item.starting_at), g.model or "", g.api_key_id or "", g.workspace_id or "",
            g.service_tier or "", g.context_window or "", geo, speed, g.service_tier == "batch",
        )  # fmt: skip
        rows.add_cost(key, c.amount, c.list_amount)
