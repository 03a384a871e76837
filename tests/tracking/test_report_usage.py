"""Report-sourced clients: their provider report rows become their usage events."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from agency.calendar import local_day
from agency.models import Client
from billing.models import DailyRollup, Invoice, InvoiceLineKind
from billing.services.invoices import invoice_finalize, invoices_generate_month
from billing.services.rollups import rollups_rebuild_dirty
from tests.factories import at, new_client, priced_event
from tracking.ingest import usage_ingest
from tracking.models import (
    AccountKind,
    ModelRate,
    ProviderAccount,
    ProviderReportRow,
    UsageEvent,
)
from tracking.report_usage import apply_report_rows, booked_at
from tracking.services import usage_events_reprice

pytestmark = pytest.mark.django_db

OCT = date(2026, 10, 1)
NOV = date(2026, 11, 1)
DAY = date(2026, 10, 14)


@pytest.fixture
def globex(rates: None, time_machine: Any) -> Client:
    """Globex, metered from the provider report through its own Anthropic API key, on
    20 October 2026."""
    time_machine.move_to(at(10, 20), tick=False)
    client = new_client(
        slug="globex", name="Globex", markup_pct=Decimal("25"), usage_source="provider_report"
    )
    ProviderAccount.objects.create(
        provider="anthropic", kind=AccountKind.API_KEY, external_id="apikey_globex", client=client
    )
    return client


def report_row(day: date = DAY, **fields: Any) -> ProviderReportRow:
    values: dict[str, Any] = {
        "provider": "anthropic",
        "day": day,
        "model": "claude-sonnet-4-5",
        "api_key_id": "apikey_globex",
        "workspace_id": "wrkspc_default",
        "service_tier": "standard",
        "context_window": "0-200k",
        "input_tokens": 1_000_000,
        "output_tokens": 100_000,
        "requests": 40,
        "amount_cents": Decimal("450.000000001"),
        "list_amount_cents": Decimal("450"),
        **fields,
    }
    return ProviderReportRow.objects.create(**values)


def posted_cost(client: Client, model: str, usage: dict[str, Any], **event: Any) -> Decimal:
    """What ingest charges for one posted event with this usage, on DAY."""
    outcome = usage_ingest(
        events=[
            {
                "id": f"posted-{UsageEvent.objects.count()}",
                "model": model,
                "occurred_at": "2026-10-14T12:00:00Z",
                "usage": usage,
                **event,
            }
        ],
        client=client,
        backfill_allowed=True,
    )
    result = outcome.results[0]
    assert result.status == "accepted", result.errors
    assert result.cost_usd is not None
    return result.cost_usd


def the_event(client: Client) -> UsageEvent:
    return UsageEvent.objects.get(client=client)


# --- priced like a posted event ------------------------------------------------------------

CASES = [
    pytest.param(
        "claude-sonnet-4-5",
        {
            "input_tokens": 12_345,
            "cache_write_5m_tokens": 2_000,
            "cache_write_1h_tokens": 3_000,
            "cache_read_tokens": 40_000,
            "output_tokens": 6_789,
            "web_search_requests": 7,
        },
        {
            "input_tokens": 12_345,
            "cache_creation_input_tokens": 5_000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 2_000,
                "ephemeral_1h_input_tokens": 3_000,
            },
            "cache_read_input_tokens": 40_000,
            "output_tokens": 6_789,
            "server_tool_use": {"web_search_requests": 7},
        },
        {},
        id="every-bucket",
    ),
    pytest.param(
        "claude-sonnet-4-5",
        {"input_tokens": 250_000, "output_tokens": 1_000, "context_window": "200k-1M"},
        {"input_tokens": 250_000, "output_tokens": 1_000},
        {},
        id="long-context",
    ),
    pytest.param(
        "claude-sonnet-4-5",
        {"input_tokens": 50_000, "output_tokens": 9_000, "batch": True},
        {"input_tokens": 50_000, "output_tokens": 9_000},
        {"service_tier": "batch"},
        id="batch",
    ),
    pytest.param(
        "claude-opus-4-7",
        {"input_tokens": 50_000, "output_tokens": 9_000, "inference_geo": "us", "speed": "fast"},
        {"input_tokens": 50_000, "output_tokens": 9_000, "inference_geo": "us", "speed": "fast"},
        {},
        id="us-geo-and-fast",
    ),
]


@pytest.mark.parametrize(("model", "row_fields", "usage", "event_fields"), CASES)
def test_a_row_costs_exactly_what_the_same_posted_event_costs(
    globex, model, row_fields, usage, event_fields
):
    report_row(model=model, **row_fields)
    apply_report_rows("anthropic", [DAY])
    event = the_event(globex)
    acme = new_client(slug="acme")
    assert event.cost_usd == posted_cost(acme, model, usage, **event_fields)
    assert event.pricing_status == "priced"
    assert event.cost_usd > 0


def test_the_event_keeps_the_providers_own_amounts_and_the_report_day(globex):
    report_row()
    apply_report_rows("anthropic", [DAY])
    event = the_event(globex)
    assert event.metadata["source"] == "provider_report"
    assert event.metadata["provider_amount_cents"] == "450.000000001"
    assert event.metadata["provider_list_amount_cents"] == "450"
    assert event.metadata["requests"] == 40
    assert event.occurred_at == booked_at(DAY)
    assert local_day(event.occurred_at) == DAY
    # $3 × 1M input + $15 × 0.1M output.
    assert event.cost_usd == Decimal("4.5")


def test_a_model_without_a_rate_stays_unpriced_until_a_rate_is_added(globex):
    report_row(model="claude-experimental-9")
    apply_report_rows("anthropic", [DAY])
    event = the_event(globex)
    assert (event.pricing_status, event.cost_usd) == ("unpriced", None)
    ModelRate.objects.create(
        provider="anthropic",
        model="claude-experimental-9",
        effective_from=date(2026, 1, 1),
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("2"),
    )
    usage_events_reprice(unpriced_only=True)
    event.refresh_from_db()
    assert (event.pricing_status, event.cost_usd) == ("priced", Decimal("1.2"))


def test_repricing_keeps_the_reports_context_window(globex):
    """Re-pricing reads the stored report buckets, not a usage object: a day's 250k
    tokens in the short window stay short-context."""
    report_row(input_tokens=250_000, output_tokens=0)
    apply_report_rows("anthropic", [DAY])
    before = the_event(globex).cost_usd
    UsageEvent.objects.update(pricing_status="unpriced", cost_usd=None, rate=None)
    usage_events_reprice(unpriced_only=True)
    event = the_event(globex)
    assert event.cost_usd == before == Decimal("0.75")
    assert not event.long_context


# --- whose row ---------------------------------------------------------------------------


def test_an_api_key_mapping_beats_a_workspace_mapping(globex):
    initech = new_client(slug="initech", usage_source="provider_report")
    ProviderAccount.objects.create(
        provider="anthropic", kind=AccountKind.WORKSPACE, external_id="wrkspc_default",
        client=initech,
    )  # fmt: skip
    report_row()  # key → Globex, workspace → Initech
    report_row(api_key_id="apikey_other", output_tokens=0)  # unmapped key → Initech
    apply_report_rows("anthropic", [DAY])
    assert UsageEvent.objects.get(client=globex).output_tokens == 100_000
    assert UsageEvent.objects.get(client=initech).output_tokens == 0
    assert UsageEvent.objects.count() == 2


def test_a_row_of_a_key_whose_client_posts_events_is_nobodys_usage(globex):
    acme = new_client(slug="acme")  # events
    ProviderAccount.objects.create(
        provider="anthropic", kind=AccountKind.API_KEY, external_id="apikey_acme", client=acme
    )
    ProviderAccount.objects.create(
        provider="anthropic", kind=AccountKind.WORKSPACE, external_id="wrkspc_default",
        client=globex,
    )  # fmt: skip
    report_row(api_key_id="apikey_acme")
    report_row(api_key_id="apikey_unmapped", provider="openai")
    apply_report_rows("anthropic", [DAY])
    apply_report_rows("openai", [DAY])
    assert not UsageEvent.objects.exists()


def test_only_the_given_days_and_provider_are_applied(globex):
    report_row()
    report_row(day=date(2026, 10, 15))
    apply_report_rows("anthropic", [DAY])
    assert UsageEvent.objects.count() == 1
    apply_report_rows("openai", [date(2026, 10, 15)])
    assert UsageEvent.objects.count() == 1


def test_a_day_the_client_posted_events_on_is_left_to_those_events(globex):
    priced_event(globex, at=at(10, 14, 9))  # before the switch
    report_row()
    report_row(day=date(2026, 10, 15))
    result = apply_report_rows("anthropic", [DAY, date(2026, 10, 15)])
    assert result.skipped_posted_days == {(globex.pk, DAY)}
    assert UsageEvent.objects.filter(client=globex).count() == 2  # posted + the 15th


# --- idempotence and revisions --------------------------------------------------------------


def _events() -> list[dict[str, Any]]:
    return [dict(row) for row in UsageEvent.objects.order_by("pk").values()]


def test_applying_the_same_rows_twice_changes_nothing(globex):
    report_row()
    report_row(model="claude-haiku-4-5", output_tokens=0)
    first = apply_report_rows("anthropic", [DAY])
    before = _events()
    rollups_rebuild_dirty()
    second = apply_report_rows("anthropic", [DAY])
    assert (first.created, second.created, second.updated, second.deleted) == (2, 0, 0, 0)
    assert second.unchanged == 2
    assert _events() == before
    assert second.client_ids == set()


def test_a_re_synced_day_with_the_same_rows_changes_nothing(globex):
    """The sync replaces a day's rows (new ids, same content): the events stay."""
    report_row()
    apply_report_rows("anthropic", [DAY])
    before = _events()
    ProviderReportRow.objects.all().delete()
    report_row()
    apply_report_rows("anthropic", [DAY])
    assert _events() == before


def test_a_revised_day_replaces_the_open_months_figures(globex):
    row = report_row()
    gone = report_row(model="claude-haiku-4-5")
    apply_report_rows("anthropic", [DAY])
    rollups_rebuild_dirty()
    row.output_tokens = 200_000
    row.save()
    gone.delete()
    result = apply_report_rows("anthropic", [DAY])
    assert (result.updated, result.deleted, result.created) == (1, 1, 0)
    event = the_event(globex)
    assert event.cost_usd == Decimal("6")  # $3 + 0.2M × $15
    rollups_rebuild_dirty()
    rollup = DailyRollup.objects.get(client=globex, day=DAY)
    assert (rollup.output_tokens, rollup.cost_usd) == (200_000, Decimal("6"))


def invoice(month: date) -> Any:
    result = invoices_generate_month(month=month)
    (invoice_id,) = result.invoice_ids
    return invoice_finalize(invoice_id=invoice_id)


def test_a_report_sourced_client_is_invoiced_to_the_cent(globex, time_machine):
    report_row()  # $4.50
    report_row(day=date(2026, 10, 3), model="claude-haiku-4-5", output_tokens=33_333)
    apply_report_rows("anthropic", [DAY, date(2026, 10, 3)])
    time_machine.move_to(at(11, 5), tick=False)
    october = invoice(OCT)
    lines = {line.model: line.amount_usd for line in october.lines.all()}
    # Sonnet: 4.50 × 1.25 = 5.625 → 5.63. Haiku: (1M × $1 + 33,333 × $5) = 1.166665 →
    # × 1.25 = 1.45833125 → 1.46.
    assert lines == {"claude-sonnet-4-5": Decimal("5.63"), "claude-haiku-4-5": Decimal("1.46")}
    assert october.total_usd == Decimal("7.09")


def test_a_revision_after_the_month_is_invoiced_is_billed_once_as_an_adjustment(
    globex, time_machine
):
    row = report_row()
    apply_report_rows("anthropic", [DAY])
    time_machine.move_to(at(11, 5), tick=False)
    october = invoice(OCT)
    assert october.total_usd == Decimal("5.63")
    # The provider revises 14 October: 100k more output tokens ($1.50 raw).
    ProviderReportRow.objects.filter(pk=row.pk).update(output_tokens=200_000)
    result = apply_report_rows("anthropic", [DAY])
    assert result.updated == 1
    apply_report_rows("anthropic", [DAY])  # the next sync re-applies it: nothing more
    report_row(day=date(2026, 11, 2), output_tokens=0)  # November's own usage, $3
    apply_report_rows("anthropic", [date(2026, 11, 2)])
    time_machine.move_to(at(12, 5), tick=False)
    november = invoice(NOV)
    usage, adjustment = november.lines.order_by("position")
    assert (usage.kind, usage.amount_usd) == (InvoiceLineKind.USAGE, Decimal("3.75"))
    assert (adjustment.kind, adjustment.usage_month) == (InvoiceLineKind.ADJUSTMENT, OCT)
    # October now bills round(6 × 1.25) = 7.50, of which 5.63 was invoiced.
    assert adjustment.amount_usd == Decimal("1.87")
    assert adjustment.output_tokens == 100_000
    # Billed once: December has no adjustment for it.
    apply_report_rows("anthropic", [DAY])
    report_row(day=date(2026, 12, 1), output_tokens=0)
    apply_report_rows("anthropic", [date(2026, 12, 1)])
    time_machine.move_to(at(12, 31), tick=False)
    december = invoices_generate_month(month=date(2026, 12, 1))
    (december_id,) = december.invoice_ids
    lines = Invoice.objects.get(pk=december_id).lines.all()
    assert [line.kind for line in lines] == [InvoiceLineKind.USAGE]


def test_a_revision_of_an_invoiced_month_keeps_the_rate_it_was_invoiced_at(globex, time_machine):
    row = report_row(output_tokens=0)
    apply_report_rows("anthropic", [DAY])
    time_machine.move_to(at(11, 5), tick=False)
    invoice(OCT)
    # A price row for October added after the invoice (a correction of the rate table).
    ModelRate.objects.create(
        provider="anthropic",
        model="claude-sonnet-4-5",
        effective_from=date(2026, 10, 1),
        input_usd_per_mtok=Decimal("100"),
        output_usd_per_mtok=Decimal("100"),
    )
    ProviderReportRow.objects.filter(pk=row.pk).update(input_tokens=2_000_000)
    apply_report_rows("anthropic", [DAY])
    assert the_event(globex).cost_usd == Decimal("6")  # 2M × $3, October's invoiced rate


def test_a_posted_event_with_a_report_like_id_still_counts_as_posted(globex):
    """Report events are told apart by their metadata, not by an id an app could use."""
    event = priced_event(globex, at=booked_at(DAY))
    UsageEvent.objects.filter(pk=event.pk).update(event_id="report:anthropic:2026-10-14:x")
    report_row()
    result = apply_report_rows("anthropic", [DAY])
    assert result.skipped_posted_days == {(globex.pk, DAY)}
    assert UsageEvent.objects.filter(client=globex).count() == 1


def test_switching_back_to_events_keeps_the_report_usage_already_made(globex):
    report_row()
    apply_report_rows("anthropic", [DAY])
    Client.objects.filter(pk=globex.pk).update(usage_source="events")
    result = apply_report_rows("anthropic", [DAY])
    assert (result.created, result.deleted) == (0, 0)
    assert UsageEvent.objects.filter(client=globex).count() == 1


def test_a_row_withdrawn_after_the_month_is_invoiced_is_credited_once(globex, time_machine):
    report_row()  # $4.50 raw, 5.63 billed
    withdrawn = report_row(model="claude-haiku-4-5", output_tokens=0)  # $1 raw, 1.25 billed
    apply_report_rows("anthropic", [DAY])
    time_machine.move_to(at(11, 5), tick=False)
    assert invoice(OCT).total_usd == Decimal("6.88")
    withdrawn.delete()  # the provider's revised 14 October no longer has it
    assert apply_report_rows("anthropic", [DAY]).deleted == 1
    report_row(day=date(2026, 11, 2), output_tokens=0)  # $3 raw
    apply_report_rows("anthropic", [date(2026, 11, 2)])
    time_machine.move_to(at(12, 5), tick=False)
    november = invoice(NOV)
    adjustment = november.lines.get(kind=InvoiceLineKind.ADJUSTMENT)
    assert (adjustment.model, adjustment.amount_usd) == ("claude-haiku-4-5", Decimal("-1.25"))
    assert november.total_usd == Decimal("2.50")  # 3.75 − 1.25


def test_a_resync_of_an_archived_month_changes_nothing(globex):
    """Its events were detached (tracking.partitions): a revised report day of that month
    is skipped and said so, never written as new events nobody rolls up."""
    from tracking.models import ArchivedMonth

    report_row()
    apply_report_rows("anthropic", [DAY])
    before = list(UsageEvent.objects.values_list("pk", "fingerprint"))
    ArchivedMonth.objects.create(month=OCT, archived_at=at(12, 2), events=len(before))
    ProviderReportRow.objects.update(input_tokens=2_000_000)

    result = apply_report_rows("anthropic", [DAY])

    assert result.archived_days == {DAY}
    assert (result.created, result.updated, result.deleted) == (0, 0, 0)
    assert list(UsageEvent.objects.values_list("pk", "fingerprint")) == before
