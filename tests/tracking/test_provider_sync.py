"""Pulling the providers' usage and cost reports into ProviderReportRow, against the
loopback stand-in (tests/standin.py): pages, revisions, errors, rate limits, exact cents."""

from __future__ import annotations

import sys
import time
import types
from datetime import date
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import msgspec
import pytest
from anthropic.pagination import SyncReportPageCursor
from anthropic.types.beta.organization.analytics import (
    BetaAnalyticsCostItem,
    BetaAnalyticsUsageItem,
)
from openai.types.admin.organization import UsageCompletionsResponse, UsageCostsResponse

from tests.standin import (  # noqa: F401 (standin_fixture: the fixture "standin")
    ANTHROPIC_ADMIN_KEY,
    OPENAI_ADMIN_KEY,
    AnthropicRecord,
    OpenAIRecord,
    ProviderStandIn,
    standin_fixture,
)
from tracking.models import (
    ProviderReportRow,
    ProviderSyncRun,
    ReportAccountDay,
    ReportModelDay,
    SyncStatus,
)
from tracking.provider_reports import anthropic_report, openai_report
from tracking.provider_reports.retry import MAX_ATTEMPTS, retry_after_seconds
from tracking.provider_reports.services import provider_report_sync

pytestmark = pytest.mark.django_db

NOV1, NOV2, NOV3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)


def _anthropic_records() -> list[AnthropicRecord]:
    return [
        AnthropicRecord(
            day=NOV1, model="claude-sonnet-4-6", api_key_id="apikey_a", workspace_id="wrkspc_1",
            uncached_input_tokens=1_520_340, cache_write_5m_tokens=420_000, cache_write_1h_tokens=7,
            cache_read_input_tokens=9_800_000, output_tokens=310_552, web_search_requests=12,
            requests=40, amount="1234.567890123", list_amount="1300.000000001",
        ),
        AnthropicRecord(
            day=NOV1, model="claude-opus-4-6", api_key_id="apikey_b", inference_geo="us",
            speed="fast", service_tier="priority", context_window="200k-1M",
            uncached_input_tokens=100, output_tokens=50, requests=1,
            amount="0.000000000001", list_amount="0.5",
        ),
        AnthropicRecord(
            day=NOV2, model="claude-sonnet-4-6", api_key_id="apikey_a", workspace_id="wrkspc_1",
            inference_geo=None, service_tier="batch",
            uncached_input_tokens=10, output_tokens=20, requests=2, amount="3.3", list_amount="6.6",
        ),
        AnthropicRecord(
            day=NOV2, model="claude-haiku-4-5", api_key_id="apikey_c",
            uncached_input_tokens=5, output_tokens=5, requests=1, amount="0.25", list_amount="0.25",
        ),
        # Code execution: cost with no model, no context window.
        AnthropicRecord(
            day=NOV3, model=None, api_key_id="apikey_a", service_tier=None, context_window=None,
            amount="100", list_amount="100",
        ),
    ]  # fmt: skip


def _rows(provider: str = "anthropic") -> dict[tuple[Any, ...], tuple[Any, ...]]:
    fields = [
        "day", "model", "api_key_id", "workspace_id", "service_tier", "context_window",
        "inference_geo", "speed", "batch",
    ]  # fmt: skip
    figures = [
        "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
        "output_tokens", "web_search_requests", "requests", "amount_cents", "list_amount_cents",
    ]  # fmt: skip
    result = {}
    for row in ProviderReportRow.objects.filter(provider=provider).values(*fields, *figures):
        key = tuple(row[f] for f in fields)
        assert key not in result, f"duplicate row {key}"
        result[key] = tuple(row[f] for f in figures)
    return result


def _sync(provider: str = "anthropic", since: date = NOV1, until: date = NOV3) -> ProviderSyncRun:
    return provider_report_sync(provider=provider, since=since, until=until)


# --- the stand-in answers in the SDKs' own shapes -------------------------------------


def _get(
    standin: ProviderStandIn, path: str, params: list[tuple[str, Any]], headers: dict[str, str]
) -> Any:
    response = httpx2.get(f"{standin.url}{path}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_standin_anthropic_pages_validate_as_the_sdk_types(standin):
    standin.anthropic = _anthropic_records()
    headers = {
        "x-api-key": ANTHROPIC_ADMIN_KEY,
        "anthropic-beta": "analytics-usage-cost-2026-08-24",
    }
    params = [
        ("starting_at", "2026-11-01T00:00:00Z"), ("ending_at", "2026-11-04T00:00:00Z"),
        ("time_bucket_width", "1d"), ("limit", "1000"),
        *[("group_by[]", g) for g in ["model", "api_key_id", "workspace_id", "service_tier", "context_window"]],
    ]  # fmt: skip
    for endpoint, item_type in (("usage", BetaAnalyticsUsageItem), ("cost", BetaAnalyticsCostItem)):
        page = _get(standin, f"/v1/organizations/analytics/{endpoint}", params, headers)
        assert set(page) <= set(SyncReportPageCursor.model_fields)
        assert page["data"]
        for item in page["data"]:
            # No field the SDK does not know (a made-up name would pass the lenient model).
            assert set(item) <= set(item_type.model_fields)
            group_type: Any = item_type.model_fields["group"].annotation
            assert set(item["group"]) <= set(group_type.model_fields)
            item_type.model_validate(item, strict=False)


def test_standin_openai_pages_validate_as_the_openai_types(standin):
    standin.openai = [
        OpenAIRecord(day=NOV1, model="gpt-5", input_tokens=10, output_cost_usd=Decimal("0.5"))
    ]
    headers = {"Authorization": f"Bearer {OPENAI_ADMIN_KEY}"}
    common = [("start_time", "1793491200"), ("end_time", "1793577600"), ("bucket_width", "1d")]
    usage = _get(
        standin, "/v1/organization/usage/completions", [*common, ("group_by[]", "model")], headers
    )
    UsageCompletionsResponse.model_validate(usage)
    assert usage["data"][0]["results"][0]["model"] == "gpt-5"
    costs = _get(standin, "/v1/organization/costs", [*common, ("group_by[]", "line_item")], headers)
    UsageCostsResponse.model_validate(costs)
    assert costs["data"][0]["results"]


@pytest.mark.parametrize(
    ("struct", "sdk_type"),
    [
        (anthropic_report.UsageItem, BetaAnalyticsUsageItem),
        (anthropic_report.CostItem, BetaAnalyticsCostItem),
        (anthropic_report.UsagePage, SyncReportPageCursor),
        (anthropic_report.CostPage, SyncReportPageCursor),
    ],
)
def test_decoders_read_the_sdk_field_names(struct, sdk_type):
    assert set(struct.__struct_fields__) <= set(sdk_type.model_fields)


def test_decoder_nested_fields_are_the_sdk_field_names():
    usage_fields = BetaAnalyticsUsageItem.model_fields
    metrics = usage_fields["usage"].annotation
    group = usage_fields["group"].annotation
    cost = BetaAnalyticsCostItem.model_fields["cost"].annotation
    assert set(anthropic_report.UsageMetrics.__struct_fields__) <= set(metrics.model_fields)  # type: ignore[union-attr]
    assert set(anthropic_report.Group.__struct_fields__) <= set(group.model_fields)  # type: ignore[union-attr]
    assert set(anthropic_report.CostMetrics.__struct_fields__) <= set(cost.model_fields)  # type: ignore[union-attr]
    assert set(openai_report.UsagePage.__struct_fields__) <= set(
        UsageCompletionsResponse.model_fields
    )


def test_the_sdk_itself_follows_the_standins_cursor(standin):
    standin.anthropic = _anthropic_records()
    standin.page_size = 2
    client = anthropic.Anthropic(api_key=ANTHROPIC_ADMIN_KEY, base_url=standin.anthropic_base_url)
    items = list(
        client.beta.organization.analytics.usage.list(
            starting_at="2026-11-01T00:00:00Z", ending_at="2026-11-04T00:00:00Z",
            time_bucket_width="1d", group_by=["model", "api_key_id"], limit=1000,
        )
    )  # fmt: skip
    assert len(items) == 5
    assert all(isinstance(i, BetaAnalyticsUsageItem) for i in items)
    assert len(standin.requests_to("/analytics/usage")) == 3


def test_more_than_five_dimensions_are_refused_as_the_api_does(standin):
    client = anthropic.Anthropic(
        api_key=ANTHROPIC_ADMIN_KEY, base_url=standin.anthropic_base_url, max_retries=0
    )
    with pytest.raises(anthropic.BadRequestError, match="at most 5"):
        client.beta.organization.analytics.usage.list(
            starting_at="2026-11-01T00:00:00Z", ending_at="2026-11-02T00:00:00Z", time_bucket_width="1d",
            group_by=["model", "api_key_id", "workspace_id", "service_tier", "context_window", "speed"],
        )  # fmt: skip


# --- Anthropic ---------------------------------------------------------------------


def test_anthropic_sync_stores_every_dimension_and_exact_cents(standin):
    standin.anthropic = _anthropic_records()
    run = _sync()
    assert run.status == SyncStatus.SUCCEEDED, run.error
    rows = _rows()
    assert rows == {
        (NOV1, "claude-sonnet-4-6", "apikey_a", "wrkspc_1", "standard", "0-200k", "global", "standard", False): (
            1_520_340, 420_000, 7, 9_800_000, 310_552, 12, 40,
            Decimal("1234.567890123"), Decimal("1300.000000001"),
        ),
        (NOV1, "claude-opus-4-6", "apikey_b", "", "priority", "200k-1M", "us", "fast", False): (
            100, 0, 0, 0, 50, 0, 1, Decimal("0.000000000001"), Decimal("0.5"),
        ),
        (NOV2, "claude-sonnet-4-6", "apikey_a", "wrkspc_1", "batch", "0-200k", "", "standard", True): (
            10, 0, 0, 0, 20, 0, 2, Decimal("3.3"), Decimal("6.6"),
        ),
        (NOV2, "claude-haiku-4-5", "apikey_c", "", "standard", "0-200k", "global", "standard", False): (
            5, 0, 0, 0, 5, 0, 1, Decimal("0.25"), Decimal("0.25"),
        ),
        (NOV3, "", "apikey_a", "", "", "", "global", "standard", False): (
            0, 0, 0, 0, 0, 0, 0, Decimal("100"), Decimal("100"),
        ),
    }  # fmt: skip
    assert (run.rows, run.since, run.until) == (5, NOV1, NOV3)
    assert set(ProviderReportRow.objects.values_list("sync_run", flat=True)) == {run.pk}


def test_anthropic_sync_follows_several_pages(standin):
    standin.anthropic = _anthropic_records()
    standin.page_size = 1
    run = _sync()
    assert run.status == SyncStatus.SUCCEEDED, run.error
    assert len(_rows()) == 5
    # The busiest pass (global, standard) has 3 rows: 3 pages of usage, 3 of cost.
    usage = [s for s in standin.requests_to("/analytics/usage") if s.query["inference_geos[]"] == ["global"]
             and s.query["speeds[]"] == ["standard"]]  # fmt: skip
    assert len(usage) == 3
    assert [("page" in s.query) for s in usage] == [False, True, True]
    # 6 passes × (usage + cost), plus the extra pages.
    assert run.pages == len(standin.seen) == 12 + 2 * 2


def test_anthropic_requests_keep_within_the_apis_limits(standin):
    standin.anthropic = _anthropic_records()
    assert _sync(since=date(2026, 9, 1), until=date(2026, 11, 30)).status == SyncStatus.SUCCEEDED
    assert all(len(s.query["group_by[]"]) <= 5 and s.status == 200 for s in standin.seen)
    # 91 days in windows of at most 31: 3 windows × 6 passes × 2 listings.
    assert len(standin.seen) == 36


def test_resync_replaces_a_revised_day_and_keeps_the_others(standin):
    standin.anthropic = _anthropic_records()
    first = _sync()
    before = _rows()
    # The provider revises Nov 2: one row's tokens and cost change, another disappears.
    standin.anthropic[2].output_tokens = 25
    standin.anthropic[2].amount = "3.45"
    del standin.anthropic[3]
    second = _sync(since=NOV2, until=NOV2)
    after = _rows()
    assert second.status == SyncStatus.SUCCEEDED
    revised = (
        NOV2,
        "claude-sonnet-4-6",
        "apikey_a",
        "wrkspc_1",
        "batch",
        "0-200k",
        "",
        "standard",
        True,
    )
    assert after[revised] == (10, 0, 0, 0, 25, 0, 2, Decimal("3.45"), Decimal("6.6"))
    assert len(after) == 4
    assert {k: v for k, v in after.items() if k[0] != NOV2} == {
        k: v for k, v in before.items() if k[0] != NOV2
    }
    assert set(ProviderReportRow.objects.filter(day=NOV1).values_list("sync_run", flat=True)) == {
        first.pk
    }


def test_syncing_twice_changes_nothing(standin):
    standin.anthropic = _anthropic_records()
    _sync()
    once = _rows()
    _sync()
    assert _rows() == once
    assert ProviderReportRow.objects.count() == 5


def test_a_provider_error_fails_the_run_and_keeps_the_previous_rows(standin):
    standin.anthropic = _anthropic_records()
    first = _sync()
    standin.anthropic[0].output_tokens = 1
    standin.fail("/analytics/cost", 400, message="starting_at must be no earlier than 2026-01-01")
    run = _sync()
    assert run.status == SyncStatus.FAILED
    assert "HTTP 400: starting_at must be no earlier than 2026-01-01" in run.error
    assert run.finished_at is not None
    assert len(_rows()) == 5
    assert set(ProviderReportRow.objects.values_list("sync_run", flat=True)) == {first.pk}


def test_a_rate_limit_waits_what_retry_after_asks_then_succeeds(standin):
    standin.anthropic = _anthropic_records()
    standin.fail("/analytics/usage", 429, retry_after="1")
    started = time.monotonic()
    run = _sync()
    assert run.status == SyncStatus.SUCCEEDED, run.error
    assert time.monotonic() - started >= 1.0
    first_two = standin.requests_to("/analytics/usage")[:2]
    assert [s.status for s in first_two] == [429, 200]
    assert first_two[0].query == first_two[1].query
    assert len(_rows()) == 5


def test_a_server_error_is_retried(standin):
    standin.anthropic = _anthropic_records()
    standin.fail("/analytics/cost", 503, retry_after="0", times=2)
    run = _sync()
    assert run.status == SyncStatus.SUCCEEDED, run.error
    assert [s.status for s in standin.requests_to("/analytics/cost")][:3] == [503, 503, 200]


def test_retries_are_bounded(standin):
    standin.anthropic = _anthropic_records()
    standin.fail("/analytics/usage", 429, retry_after="0", times=100)
    run = _sync()
    assert run.status == SyncStatus.FAILED
    assert f"gave up after {MAX_ATTEMPTS} attempts" in run.error
    assert "HTTP 429" in run.error
    assert len(standin.requests_to("/analytics/usage")) == MAX_ATTEMPTS
    assert not ProviderReportRow.objects.exists()


def test_a_retry_after_too_long_fails_instead_of_holding_the_worker(standin):
    standin.fail("/analytics/usage", 429, retry_after="3600")
    run = _sync()
    assert run.status == SyncStatus.FAILED
    assert "wait 3600 s" in run.error


def test_retry_after_reads_seconds_and_http_dates():
    from datetime import UTC, datetime

    now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now=now) == 7.0
    assert retry_after_seconds("Sun, 01 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("soon", now=now) is None
    assert retry_after_seconds(None) is None


def test_a_wrong_admin_key_fails_the_run_with_the_providers_message(standin, settings):
    settings.ANTHROPIC_ADMIN_API_KEY = "sk-ant-admin01-wrong"
    run = _sync()
    assert run.status == SyncStatus.FAILED
    assert "HTTP 401" in run.error
    # Not retried (the cost listing of the pass, read alongside, is refused once too).
    assert [s.status for s in standin.requests_to("/analytics/usage")] == [401]
    assert [s.status for s in standin.requests_to("/analytics/cost")] in ([], [401])


# --- OpenAI --------------------------------------------------------------------------


def _openai_records() -> list[OpenAIRecord]:
    return [
        OpenAIRecord(
            day=NOV1, model="gpt-5", project_id="proj_1", api_key_id="key_a", input_tokens=1000,
            input_cached_tokens=600, input_cache_write_tokens=100, output_tokens=50,
            num_model_requests=3, input_cost_usd=Decimal("0.000123456789"),
            output_cost_usd=Decimal("0.0005"),
        ),
        OpenAIRecord(
            day=NOV1, model="gpt-5", project_id="proj_1", api_key_id="key_a", batch=True,
            input_tokens=10, output_tokens=10, num_model_requests=1,
            input_cost_usd=Decimal("0.01"), output_cost_usd=Decimal("0.02"),
        ),
        OpenAIRecord(
            day=NOV2, model="gpt-5-mini", project_id="proj_2", api_key_id="key_b", input_tokens=7,
            output_tokens=3, num_model_requests=1, input_cost_usd=Decimal("1.5"),
        ),
    ]  # fmt: skip


def test_openai_sync_merges_usage_and_costs_in_exact_cents(standin):
    standin.openai = _openai_records()
    standin.openai_page_buckets = 1  # one day a page: three pages of each listing
    run = _sync("openai")
    assert run.status == SyncStatus.SUCCEEDED, run.error
    assert _rows("openai") == {
        (NOV1, "gpt-5", "key_a", "proj_1", "", "", "", "", False): (
            300, 100, 0, 600, 50, 0, 3, Decimal("0.0623456789"), None,
        ),
        (NOV1, "gpt-5", "key_a", "proj_1", "", "", "", "", True): (
            10, 0, 0, 0, 10, 0, 1, Decimal("3"), None,
        ),
        (NOV2, "gpt-5-mini", "key_b", "proj_2", "", "", "", "", False): (
            7, 0, 0, 0, 3, 0, 1, Decimal("150"), None,
        ),
    }  # fmt: skip
    assert run.pages == 6
    usage = standin.requests_to("/usage/completions")[0]
    assert usage.query["group_by[]"] == ["model", "project_id", "api_key_id", "batch"]


def test_openai_rate_limit_and_error(standin):
    standin.openai = _openai_records()
    standin.fail("/organization/costs", 429, retry_after="0")
    assert _sync("openai").status == SyncStatus.SUCCEEDED
    standin.fail("/organization/usage", 400, message="invalid group_by")
    run = _sync("openai")
    assert run.status == SyncStatus.FAILED
    assert "HTTP 400: invalid group_by" in run.error
    assert len(_rows("openai")) == 3


def test_providers_rows_are_replaced_separately(standin):
    standin.anthropic = _anthropic_records()
    standin.openai = _openai_records()
    _sync("anthropic")
    _sync("openai")
    standin.openai = []
    _sync("openai")
    assert len(_rows("anthropic")) == 5
    assert _rows("openai") == {}


# --- report-sourced clients ------------------------------------------------------------


def test_each_sync_hands_its_days_to_report_usage(standin, monkeypatch):
    calls: list[tuple[str, list[date]]] = []
    module = types.ModuleType("tracking.report_usage")
    module.apply_report_rows = lambda provider, days: calls.append((provider, days))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tracking.report_usage", module)
    standin.anthropic = _anthropic_records()
    _sync()
    assert calls == [("anthropic", [NOV1, NOV2, NOV3])]


def test_a_failure_applying_the_rows_rolls_the_replacement_back(standin, monkeypatch):
    standin.anthropic = _anthropic_records()
    first = _sync()

    def broken(provider: str, days: list[date]) -> None:
        raise ValueError("no rate for claude-x")

    module = types.ModuleType("tracking.report_usage")
    module.apply_report_rows = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tracking.report_usage", module)
    run = _sync()
    assert run.status == SyncStatus.FAILED
    assert run.error == "ValueError: no rate for claude-x"
    assert set(ProviderReportRow.objects.values_list("sync_run", flat=True)) == {first.pk}


def test_msgspec_reads_cents_without_a_float():
    page = msgspec.json.decode(
        b'{"data":[{"starting_at":"2026-11-01T00:00:00Z","group":{},"cost":'
        b'{"amount":"0.1000000000000000055511151231257827","list_amount":"1","currency":"USD"}}]}',
        type=anthropic_report.CostPage,
    )
    assert page.data[0].cost.amount == Decimal("0.1000000000000000055511151231257827")


def test_a_run_left_running_by_a_dead_worker_is_marked_failed_by_the_next(standin):
    from datetime import UTC, datetime, timedelta

    stale = ProviderSyncRun.objects.create(
        provider="anthropic",
        since=NOV1,
        until=NOV1,
        started_at=datetime.now(UTC) - timedelta(hours=2),
    )
    recent = ProviderSyncRun.objects.create(
        provider="anthropic", since=NOV1, until=NOV1, started_at=datetime.now(UTC)
    )
    _sync()
    stale.refresh_from_db()
    recent.refresh_from_db()
    assert stale.status == SyncStatus.FAILED
    assert "abandoned" in stale.error
    assert recent.status == SyncStatus.RUNNING  # perhaps still at work: left alone


def _day_sums() -> dict[tuple[Any, ...], tuple[Any, ...]]:
    figures = ("rows", "input_tokens", "output_tokens", "requests", "amount_cents",
               "list_amount_cents")  # fmt: skip
    return {
        (row.day, row.model, row.service_tier): tuple(getattr(row, f) for f in figures)
        for row in ReportModelDay.objects.all()
    }


def test_a_sync_replaces_the_day_sums_the_reconciliation_reads(standin):
    """The day sums (ReportModelDay, ReportAccountDay) follow every replacement of a
    day's rows, in the same transaction: a revision replaces them, other days stay."""
    standin.anthropic = _anthropic_records()
    _sync()
    standin.anthropic[2].output_tokens = 25
    standin.anthropic[2].amount = "3.45"
    del standin.anthropic[3]
    _sync(since=NOV2, until=NOV2)
    sums = _day_sums()
    assert sums[(NOV2, "claude-sonnet-4-6", "batch")] == (
        1, 10, 25, 2, Decimal("3.45"), Decimal("6.6"),
    )  # fmt: skip
    assert sums[(NOV1, "claude-opus-4-6", "priority")] == (
        1, 100, 50, 1, Decimal("0.000000000001"), Decimal("0.5"),
    )  # fmt: skip
    assert sum(s[0] for s in sums.values()) == ProviderReportRow.objects.count()
    by_key = {
        (a.day, a.api_key_id): a.amount_cents
        for a in ReportAccountDay.objects.filter(provider="anthropic")
    }
    assert by_key[(NOV1, "apikey_a")] == Decimal("1234.567890123")
    assert by_key[(NOV2, "apikey_a")] == Decimal("3.45")
