"""Reconciliation figures: coverage, untracked spend and rate drift, computed exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from agency.models import Client, UsageSource
from billing.selectors.reconciliation import Figures, reconciliation_for
from billing.services.rollups import model_rollups_refresh, rollups_rebuild_period
from tests.factories import ClientFactory, DailyRollupFactory, priced_event
from tracking.models import AccountKind, ModelRate, ProviderAccount, ProviderReportRow
from tracking.pricing import RateCard, price_report_row
from tracking.provider_reports.summaries import report_summaries_refresh

NOVEMBER = date(2026, 11, 1)


def rate(model: str, **prices: str) -> ModelRate:
    fields: dict[str, Any] = {
        "input_usd_per_mtok": Decimal(prices.get("input", "3")),
        "output_usd_per_mtok": Decimal(prices.get("output", "15")),
        "cache_read_usd_per_mtok": Decimal("0.3"),
        "cache_write_5m_usd_per_mtok": Decimal("3.75"),
        "cache_write_1h_usd_per_mtok": Decimal("6"),
    }
    return ModelRate.objects.create(
        provider="anthropic", model=model, effective_from=date(2026, 1, 1), **fields
    )


def report(day: date, model: str, amount: str, list_amount: str | None = None, **fields: Any):
    """A report row, with its day's sums refreshed as a sync does."""
    row = ProviderReportRow.objects.create(
        provider=fields.pop("provider", "anthropic"),
        day=day,
        model=model,
        amount_cents=Decimal(amount),
        list_amount_cents=Decimal(list_amount if list_amount is not None else amount),
        **fields,
    )
    report_summaries_refresh(provider=row.provider, since=day, until=day)
    return row


@pytest.fixture
def book(db: None) -> dict[str, Client]:
    return make_book()


def make_book() -> dict[str, Client]:
    """November 2026: one events client, one report-sourced client, a drifting model
    (the other reconciliation test modules use it too)."""
    rate("recon-model")
    rate("drift-model", input="1", output="5")
    acme = ClientFactory.create(name="Acme", slug="acme")
    sourced = ClientFactory.create(
        name="Sourced", slug="sourced", usage_source=UsageSource.PROVIDER_REPORT
    )
    ProviderAccount.objects.create(
        provider="anthropic", kind=AccountKind.API_KEY, external_id="apikey_s", client=sourced
    )
    ProviderAccount.objects.create(
        provider="anthropic",
        kind=AccountKind.WORKSPACE,
        external_id="wrkspc_acme",
        client=acme,
        label="Acme workspace",
    )
    # The provider's books. The dated id resolves to recon-model like an event's would.
    report(
        date(2026, 11, 3),
        "recon-model-20261001",
        "450",
        api_key_id="apikey_a",
        workspace_id="wrkspc_acme",
        input_tokens=1_000_000,
        output_tokens=100_000,
    )
    report(
        date(2026, 11, 4),
        "recon-model",
        "600",
        api_key_id="apikey_x",
        input_tokens=2_000_000,
    )
    # Our price $1.00, the provider's list price $0.99: drift of 1.0101…%.
    report(
        date(2026, 11, 4),
        "drift-model",
        "90",
        "99",
        api_key_id="apikey_x",
        input_tokens=1_000_000,
    )
    # A report-sourced client's row: set aside, with its events.
    report(
        date(2026, 11, 3),
        "recon-model",
        "200",
        api_key_id="apikey_s",
        input_tokens=500_000,
        output_tokens=33_333,
    )
    # What ClientMeter tracked (raw cost), in rollups.
    DailyRollupFactory.create(
        client=acme,
        day=date(2026, 11, 3),
        model="recon-model",
        input_tokens=1_000_000,
        output_tokens=100_000,
        cost_usd=Decimal("4.5"),
    )
    DailyRollupFactory.create(
        client=acme,
        day=date(2026, 11, 4),
        model="recon-model",
        project="web",
        input_tokens=1_000_000,
        output_tokens=0,
        cost_usd=Decimal("3"),
    )
    DailyRollupFactory.create(
        client=sourced,
        day=date(2026, 11, 3),
        model="recon-model",
        input_tokens=500_000,
        output_tokens=33_333,
        cost_usd=Decimal("2"),
    )
    # Not in the report: Google has no report, and 20 November is not synced yet.
    DailyRollupFactory.create(
        client=acme,
        day=date(2026, 11, 3),
        provider="google",
        model="gemini-2.5-pro",
        cost_usd=Decimal("5"),
    )
    DailyRollupFactory.create(
        client=acme,
        day=date(2026, 11, 20),
        model="recon-model",
        cost_usd=Decimal("7"),
    )
    # Written by hand, not by the rebuild: derive the per-model rollups the page reads.
    model_rollups_refresh(start=NOVEMBER, end=date(2026, 11, 30))
    return {"acme": acme, "sourced": sourced}  # fmt: skip


def test_month_totals_are_exact(book: dict[str, Client]) -> None:
    recon = reconciliation_for(NOVEMBER)
    assert recon.has_report
    assert recon.total.provider_cost_usd == Decimal("11.4")  # 4.50 + 6.00 + 0.90
    assert recon.total.tracked_cost_usd == Decimal("7.5")
    assert recon.total.untracked_cost_usd == Decimal("3.9")
    assert recon.total.coverage_pct == Decimal("7.5") * 100 / Decimal("11.4")
    assert recon.total.untracked_tokens["input_tokens"] == 2_000_000  # 4M reported, 2M tracked
    assert recon.total.untracked_tokens["output_tokens"] == 0


def test_model_rows_compare_canonical_models(book: dict[str, Client]) -> None:
    recon = reconciliation_for(NOVEMBER)
    models = {m.model: m.figures for m in recon.by_model}
    assert set(models) == {"recon-model", "drift-model"}
    recon_model = models["recon-model"]
    assert recon_model.provider_cost_usd == Decimal("10.5")
    assert recon_model.tracked_cost_usd == Decimal("7.5")
    assert recon_model.provider_tokens["input_tokens"] == 3_000_000
    assert recon_model.tracked_tokens["input_tokens"] == 2_000_000
    assert models["drift-model"].tracked_cost_usd == 0
    assert models["drift-model"].coverage_pct == 0


def test_a_model_priced_off_the_providers_list_price_drifts(book: dict[str, Client]) -> None:
    models = {m.model: m.figures for m in reconciliation_for(NOVEMBER).by_model}
    drift = models["drift-model"]
    assert drift.our_price_usd == Decimal("1")
    assert drift.list_cost_usd == Decimal("0.99")
    assert drift.drift_pct == Decimal("0.01") * 100 / Decimal("0.99")
    assert drift.drifting
    # recon-model's rows, the report-sourced one included: ours $12.499995, list $12.50.
    assert models["recon-model"].our_price_usd == Decimal("12.499995")
    assert models["recon-model"].drift_pct == Decimal("-0.00004")
    assert not models["recon-model"].drifting


def test_days_pair_the_providers_utc_day_with_the_local_day_of_the_same_date(
    book: dict[str, Client],
) -> None:
    recon = reconciliation_for(NOVEMBER)
    assert len(recon.by_day) == 30
    third = recon.by_day[2]
    assert third.day == date(2026, 11, 3)
    assert third.figures.provider_cost_usd == Decimal("4.5")
    assert third.figures.tracked_cost_usd == Decimal("4.5")
    assert third.figures.coverage_pct == 100
    fourth = recon.by_day[3]
    assert fourth.figures.coverage_pct == Decimal("3") * 100 / Decimal("6.9")
    assert [m.model for m in fourth.models] == ["drift-model", "recon-model"]
    assert recon.by_day[0].figures.coverage_pct is None  # nothing reported: no 0%


def test_report_sourced_clients_are_set_aside_on_both_sides(book: dict[str, Client]) -> None:
    recon = reconciliation_for(NOVEMBER)
    assert recon.report_sourced.provider_cost_usd == Decimal("2")
    assert recon.report_sourced.tracked_cost_usd == Decimal("2")
    assert recon.report_sourced.provider_tokens["output_tokens"] == 33_333


def test_tracked_spend_the_provider_did_not_report_is_kept_apart(book: dict[str, Client]) -> None:
    recon = reconciliation_for(NOVEMBER)
    # Google (no report) on the 3rd and Anthropic on the 20th (not synced).
    assert recon.not_in_report.tracked_cost_usd == Decimal("12")


def test_untracked_spend_by_owner(book: dict[str, Client]) -> None:
    recon = reconciliation_for(NOVEMBER)
    rows = {(r.client.slug if r.client else r.accounts[0]): r for r in recon.accounts}
    # apikey_a sits in Acme's workspace: Acme's spend against Acme's tracked cost.
    acme = rows["acme"]
    assert acme.accounts == ["Acme workspace"]
    assert acme.provider_cost_usd == Decimal("4.5")
    assert acme.tracked_cost_usd == Decimal("7.5")
    assert acme.untracked_cost_usd == Decimal("-3")
    unmapped = rows["apikey_x"]
    assert unmapped.client is None
    assert unmapped.provider_cost_usd == Decimal("6.9")
    assert unmapped.untracked_cost_usd is None
    assert rows["sourced"].report_sourced
    assert rows["sourced"].tracked_cost_usd is None  # its usage is the report itself
    assert recon.unattributed_untracked_usd == Decimal("6.9")  # no unmapped client tracked


def test_a_month_without_report_rows_says_so(book: dict[str, Client]) -> None:
    recon = reconciliation_for(date(2026, 10, 1))
    assert not recon.has_report
    assert recon.total.coverage_pct is None
    assert recon.total.drift_pct is None
    assert recon.accounts == []


def test_drift_is_flagged_over_half_a_percent_only() -> None:
    assert not Figures(our_price_usd=Decimal("100.5"), list_cost_usd=Decimal("100")).drifting
    assert Figures(our_price_usd=Decimal("100.51"), list_cost_usd=Decimal("100")).drifting
    assert Figures(our_price_usd=Decimal("99.49"), list_cost_usd=Decimal("100")).drifting
    assert Figures(our_price_usd=Decimal("1"), list_cost_usd=Decimal("0")).drift_pct is None


def test_a_report_row_prices_through_the_rate_card() -> None:
    card = RateCard(
        input=Decimal("3"),
        output=Decimal("15"),
        cache_write_5m=Decimal("3.75"),
        cache_write_1h=Decimal("6"),
        cache_read=Decimal("0.3"),
        long_context_threshold=200_000,
        long_context_input=Decimal("6"),
        long_context_output=Decimal("22.5"),
        web_search_per_1k=Decimal("10"),
    )
    row = ProviderReportRow(
        input_tokens=1_000_000,
        cache_write_5m_tokens=1_000_000,
        cache_write_1h_tokens=1_000_000,
        cache_read_tokens=1_000_000,
        output_tokens=1_000_000,
        web_search_requests=1_000,
        context_window="0-200k",
    )
    assert (
        price_report_row(row, card).total
        == Decimal("3") + 15 + Decimal("3.75") + 6 + Decimal("0.3") + 10
    )
    row.context_window = "200k-1M"
    assert price_report_row(row, card).input == Decimal("6")
    row.batch = True
    assert price_report_row(row, card).discount < 0


def test_months_are_the_agencys_while_report_days_are_utc(
    settings: Any, rates: None, time_machine: Any
) -> None:
    """Tokyo: a call at 20:00 UTC on 30 November is 1 December there, so it is
    December's tracked spend; the provider's row for UTC 30 November stays November's."""
    settings.TIME_ZONE = "Asia/Tokyo"
    time_machine.move_to(datetime(2026, 12, 5, tzinfo=UTC), tick=False)
    client = ClientFactory.create()
    moment = datetime(2026, 11, 30, 20, tzinfo=UTC)
    priced_event(client, at=moment, input_tokens=100_000, output_tokens=0)
    rollups_rebuild_period(start=date(2026, 11, 1), end=date(2026, 12, 31))
    report(date(2026, 11, 30), "claude-sonnet-4-5", "30", input_tokens=100_000)
    report(date(2026, 12, 1), "claude-sonnet-4-5", "30", input_tokens=100_000)
    november = reconciliation_for(NOVEMBER)
    december = reconciliation_for(date(2026, 12, 1))
    assert november.total.provider_cost_usd == Decimal("0.3")
    assert november.total.tracked_cost_usd == 0
    assert december.total.tracked_cost_usd == Decimal("0.3")
    assert december.by_day[0].figures.coverage_pct == 100
