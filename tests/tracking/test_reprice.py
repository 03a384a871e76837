"""Unpriced events are stored, then priced once a rate exists; closed months keep prices."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.management import call_command

from agency.models import Client
from tracking.models import ClosedPeriod, DirtyDay, ModelRate, PricingStatus, UsageEvent
from tracking.pricing import normalize_usage
from tracking.rates import RateBook
from tracking.services import event_fingerprint, pricing_fields, usage_events_reprice, usage_fields

pytestmark = pytest.mark.django_db

USAGE = {"input_tokens": 1_000_000, "output_tokens": 100_000}
WHEN = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)


def store_event(client: Client, model: str, event_id: str, when: datetime = WHEN) -> UsageEvent:
    """Store an event the way ingest does: normalised, priced if a rate resolves."""
    usage = normalize_usage("anthropic", USAGE)
    resolution = RateBook.load().resolve("anthropic", model, when)
    return UsageEvent.objects.create(
        client=client,
        event_id=event_id,
        provider="anthropic",
        model=model,
        occurred_at=when,
        received_at=when,
        usage=USAGE,
        fingerprint=event_fingerprint(
            client_id=client.pk,
            provider="anthropic",
            model=model,
            usage=USAGE,
            occurred_at=when,
            service_tier="",
        ),
        **usage_fields(usage),
        **pricing_fields(usage, resolution, now=when),
    )


def add_rate(model: str, input_price: str, effective: date = date(2026, 1, 1)) -> ModelRate:
    return ModelRate.objects.create(
        provider="anthropic",
        model=model,
        effective_from=effective,
        input_usd_per_mtok=Decimal(input_price),
        output_usd_per_mtok=Decimal("10"),
    )


@pytest.fixture
def client_() -> Client:
    return Client.objects.create(name="Acme", slug="acme")


def test_event_without_a_rate_is_stored_unpriced_not_free(client_):
    event = store_event(client_, "claude-new-model", "e1")
    assert event.pricing_status == PricingStatus.UNPRICED
    assert event.cost_usd is None


def test_adding_a_rate_prices_waiting_events_and_marks_their_day(client_):
    store_event(client_, "claude-new-model", "e1")
    add_rate("claude-new-model", "2")

    result = usage_events_reprice(unpriced_only=True)

    event = UsageEvent.objects.get(event_id="e1")
    assert result.changed == 1
    assert event.pricing_status == PricingStatus.PRICED
    assert event.cost_usd == Decimal("3")  # 1M × $2 + 100k × $10
    assert DirtyDay.objects.filter(client=client_, day=date(2026, 10, 15)).exists()


def test_repricing_twice_changes_nothing_the_second_time(client_):
    store_event(client_, "claude-new-model", "e1")
    add_rate("claude-new-model", "2")
    usage_events_reprice(unpriced_only=True)
    assert usage_events_reprice(unpriced_only=True).changed == 0


def test_corrected_rate_reprices_its_events_but_not_in_closed_months(client_):
    rate = add_rate("claude-x", "2")
    store_event(client_, "claude-x", "october")
    store_event(client_, "claude-x", "november", when=datetime(2026, 11, 3, tzinfo=UTC))
    ClosedPeriod.objects.create(client=client_, month=date(2026, 10, 1))
    rate.input_usd_per_mtok = Decimal("4")
    rate.save()

    result = usage_events_reprice(rate_ids=[rate.pk])

    assert result.skipped_closed == 1
    assert UsageEvent.objects.get(event_id="october").cost_usd == Decimal("3")
    assert UsageEvent.objects.get(event_id="november").cost_usd == Decimal("5")


def test_unpriced_event_in_a_closed_month_is_still_priced(client_):
    store_event(client_, "claude-late-rate", "e1")
    ClosedPeriod.objects.create(client=client_, month=date(2026, 10, 1))
    add_rate("claude-late-rate", "1")
    usage_events_reprice(unpriced_only=True)
    assert UsageEvent.objects.get(event_id="e1").cost_usd == Decimal("2")


def test_load_model_rates_command_prices_events_of_a_new_model(client_, tmp_path):
    store_event(client_, "claude-brand-new", "e1")
    path = tmp_path / "rates.csv"
    path.write_text(
        "provider,model,aliases,effective_from,input,output\n"
        "anthropic,claude-brand-new,,2026-01-01,3,15\n"
    )
    call_command("load_model_rates", str(path))
    assert UsageEvent.objects.get(event_id="e1").cost_usd == Decimal("4.5")


def test_rate_used_is_recorded_on_the_event(client_):
    rate = add_rate("claude-y", "1")
    assert store_event(client_, "claude-y", "e1").rate == rate
