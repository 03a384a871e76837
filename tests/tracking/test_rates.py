from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from tracking.models import ModelRate
from tracking.pricing import RateCard, normalize_usage, price_usage
from tracking.rates import DEFAULT_RATES_CSV, RateBook, RateFileError, model_rates_load

pytestmark = pytest.mark.django_db


def test_loading_the_shipped_csv_twice_changes_nothing():
    text = DEFAULT_RATES_CSV.read_text()
    first = model_rates_load(text=text)
    second = model_rates_load(text=text)
    assert first.created == ModelRate.objects.count() > 30
    assert (second.created, second.updated, second.unchanged) == (0, 0, first.created)


def test_dated_model_id_resolves_through_its_alias(rates):
    resolution = RateBook.load().resolve(
        "anthropic", "claude-sonnet-4-5-20250929", date(2026, 11, 2)
    )
    assert resolution is not None
    assert resolution.rate.model == "claude-sonnet-4-5"
    assert resolution.matched_by == "alias"


def test_unknown_dated_id_falls_back_to_the_model_without_its_date(rates):
    resolution = RateBook.load().resolve("anthropic", "claude-opus-4-7-20270101", date(2026, 11, 2))
    assert resolution is not None
    assert (resolution.rate.model, resolution.matched_by) == ("claude-opus-4-7", "date suffix")


def test_no_loose_prefix_match(rates):
    assert (
        RateBook.load().resolve("anthropic", "claude-3-5-haiku-latest", date(2026, 11, 2)) is None
    )
    assert RateBook.load().resolve("anthropic", "claude-sonnet", date(2026, 11, 2)) is None


def test_rate_effective_on_the_day_of_the_event_wins(rates):
    book = RateBook.load()
    before = book.resolve("anthropic", "claude-sonnet-5-5", date(2026, 10, 6))
    after = book.resolve("anthropic", "claude-sonnet-5-5", date(2026, 10, 7))
    assert before is not None and after is not None
    assert before.rate.cache_read_usd_per_mtok == Decimal("0.2")
    assert after.rate.cache_read_usd_per_mtok == Decimal("0.1")


def test_no_rate_before_the_first_effective_date(rates):
    assert RateBook.load().resolve("anthropic", "claude-haiku-4-5", date(2025, 9, 30)) is None


def test_bad_csv_says_line_and_column():
    text = "provider,model,effective_from,input,output\nanthropic,x,2026-01-01,abc,1\n"
    with pytest.raises(RateFileError, match="line 2, column input"):
        model_rates_load(text=text)


def test_correcting_a_price_updates_the_row_and_keeps_history(rates):
    text = DEFAULT_RATES_CSV.read_text().replace(
        "anthropic,claude-haiku-4-5,claude-haiku-4-5-20251001,Claude Haiku 4.5,2025-10-01,1,5,",
        "anthropic,claude-haiku-4-5,claude-haiku-4-5-20251001,Claude Haiku 4.5,2025-10-01,1.5,5,",
    )
    result = model_rates_load(text=text)
    rate = ModelRate.objects.get(model="claude-haiku-4-5")
    assert result.updated == 1
    assert rate.input_usd_per_mtok == Decimal("1.5")
    assert [h.input_usd_per_mtok for h in rate.history.order_by("history_date")] == [
        Decimal("1"),
        Decimal("1.5"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        # The column left empty, and the column missing altogether.
        "provider,model,effective_from,input,output,batch_discount_pct\n"
        "openai,ft-model,2026-01-01,2,8,\n",
        "provider,model,effective_from,input,output\nopenai,ft-model,2026-01-01,2,8\n",
    ],
)
def test_a_rate_row_without_a_batch_discount_has_none(text):
    model_rates_load(text=text)
    rate = ModelRate.objects.get(model="ft-model")
    assert rate.batch_discount_pct == Decimal("0")
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 0}
    batch = price_usage(
        normalize_usage("openai", usage, service_tier="batch"), RateCard.from_rate(rate)
    )
    assert (batch.discount, batch.total) == (Decimal("0"), Decimal("2"))
