"""Reads behind the agency overview and the client page.

Everything here reads the daily rollups, except two small top-N lists (end users and
prompt hashes) that the rollups do not carry: those read the raw events of one client and
one month through the ``(client, occurred_at)`` index, and are cached (see
``top_lists``). Callers pass clients that already went through
``agency.selectors.clients_for`` / ``client_for``; nothing here widens scope, and every
cache key carries the client ids it was computed for.
"""

from __future__ import annotations

from billing.selectors.dashboard.client_page import (
    TOP_LISTS_CACHE_SECONDS,
    TOP_N,
    ClientMonth,
    PromptHashRow,
    TopLists,
    WeekOverWeek,
    client_month,
    end_users,
    month_watermark,
    months_with_data,
    months_with_usage,
    rounded_shares,
    top_lists,
    top_prompts,
)
from billing.selectors.dashboard.overview import (
    SORT_KEYS,
    SPARK_DAYS,
    Overview,
    OverviewRow,
    UnpricedModel,
    normalise_sort,
    overview,
    overview_prepare,
    overview_table,
)
from billing.selectors.dashboard.usage import TREND_CACHE_SECONDS, UsageTotals

__all__ = [
    "SORT_KEYS",
    "SPARK_DAYS",
    "TOP_LISTS_CACHE_SECONDS",
    "TOP_N",
    "TREND_CACHE_SECONDS",
    "ClientMonth",
    "Overview",
    "OverviewRow",
    "PromptHashRow",
    "TopLists",
    "UnpricedModel",
    "UsageTotals",
    "WeekOverWeek",
    "client_month",
    "end_users",
    "month_watermark",
    "months_with_data",
    "months_with_usage",
    "normalise_sort",
    "overview",
    "overview_prepare",
    "overview_table",
    "rounded_shares",
    "top_lists",
    "top_prompts",
]
