from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tracking.models import ModelRate
from tracking.pricing import RateCard, normalize_usage, price_usage
from tracking.rates import (
    DEFAULT_RATES_CSV,
    LoadResult,
    RateBook,
    RateFileError,
    RateSanityError,
    model_rates_load,
)

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


# --- every mistake in a rate file is refused, with where and why (issue 10, item 11) -------

HEADER = "provider,model,effective_from,input,output\n"


def load(rows: str, header: str = HEADER, **options: bool) -> LoadResult:
    return model_rates_load(text=header + rows, **options)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("anthropc,claude-x,2026-01-01,1,5\n", "line 2, column provider: unknown provider 'anthropc'"),
        ("anthropic,,2026-01-01,1,5\n", "line 2, column model: is required"),
        ("anthropic,claude-x,2026-13-01,1,5\n", "line 2, column effective_from: '2026-13-01' is not YYYY-MM-DD"),
        ("anthropic,claude-x,2026-01-01,-1,5\n", "line 2, column input: must not be negative"),
        ("anthropic,claude-x,2026-01-01,1,NaN\n", "line 2, column output: 'NaN' is not a finite number"),
        ("anthropic,claude-x,2026-01-01,Infinity,5\n", "line 2, column input: 'Infinity' is not a finite number"),
        ("anthropic,claude-x,2026-01-01,sNaN,5\n", "line 2, column input: 'sNaN' is not a finite number"),
        ("anthropic,claude-x,2026-01-01,abc,5\n", "line 2, column input: 'abc' is not a number"),
        ("anthropic,claude-x,2026-01-01,,5\n", "line 2, column input: is required"),
        ("anthropic,claude-x,2026-01-01,1e9,5\n", "line 2, column input: 1e9 is too large (at most 9 digits before the decimal point)"),
        ("anthropic,claude-x,2026-01-01,0.0000000001,5\n", "line 2, column input: 0.0000000001 has more than 9 decimal places"),
        (
            "anthropic,claude-x,2026-01-01,1,5\nopenai,gpt-x,2026-01-01,1,5\nanthropic,claude-x,2026-01-01,2,6\n",
            "line 4: anthropic claude-x from 2026-01-01 is also on line 2",
        ),
    ],
)  # fmt: skip
def test_a_bad_row_is_refused_with_its_line_and_column(rows, message):
    with pytest.raises(RateFileError) as refused:
        load(rows)
    assert str(refused.value) == message
    assert ModelRate.objects.count() == 0


def test_a_bad_batch_discount_is_refused():
    header = "provider,model,effective_from,input,output,batch_discount_pct\n"
    with pytest.raises(
        RateFileError, match=r"^line 2, column batch_discount_pct: must be at most 100$"
    ):
        load("anthropic,claude-x,2026-01-01,1,5,150\n", header)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("provider,model,effective_from,output\n", "missing columns: input"),
        ("provider,effective_from\n", "missing columns: input, model, output"),
        ("provider,model,effective_from,input,output,cache_reed\n", "unknown columns: cache_reed"),
        ("", "missing columns: effective_from, input, model, output, provider"),
    ],
)
def test_a_file_with_missing_or_unknown_columns_is_refused(header, message):
    with pytest.raises(RateFileError) as refused:
        model_rates_load(text=header)
    assert str(refused.value) == message


def test_line_numbers_count_the_comment_lines():
    text = "# rates\n# more notes\n" + HEADER + "anthropic,claude-x,2026-01-01,1,5\n"
    with pytest.raises(RateFileError, match=r"^line 5, column provider: unknown provider 'x'$"):
        model_rates_load(text=text + "x,claude-y,2026-01-01,1,5\n")


def test_nothing_is_stored_when_one_row_is_bad():
    with pytest.raises(RateFileError):
        load("anthropic,claude-x,2026-01-01,1,5\nanthropic,claude-y,2026-01-01,-1,5\n")
    assert not ModelRate.objects.exists()


# --- the sanity check: a price 10x off its previous row or the reference -------------------


def test_a_new_row_ten_times_off_its_previous_row_is_refused():
    load("anthropic,claude-x,2026-01-01,3,15\n")
    # A per-token price typed where a per-million one belongs: 0.000003 for 3.
    with pytest.raises(RateSanityError) as refused:
        load("anthropic,claude-x,2026-06-01,0.000003,15\n")
    assert str(refused.value) == (
        "line 2, column input: 0.000003 differs 1,000,000× from anthropic claude-x's row "
        "from 2026-01-01 (3); if it is right, load with --force"
    )
    assert ModelRate.objects.count() == 1


def test_a_row_compared_with_the_previous_row_in_the_same_file():
    with pytest.raises(RateSanityError, match=r"^line 3, column output: 151 differs 10×"):
        load("anthropic,claude-x,2026-01-01,3,15\nanthropic,claude-x,2026-06-01,3,151\n")


def test_exactly_ten_times_is_allowed():
    load("anthropic,claude-x,2026-01-01,3,15\nanthropic,claude-x,2026-06-01,30,1.5\n")
    assert ModelRate.objects.count() == 2


def test_a_row_ten_times_off_the_reference_price_is_refused():
    # claude-haiku-4-5 is $1 input in the kept reference map.
    with pytest.raises(RateSanityError) as refused:
        load("anthropic,claude-haiku-4-5,2026-01-01,1000,5\n")
    assert str(refused.value) == (
        "line 2, column input: 1000 differs 1,000× from the reference price (1); "
        "if it is right, load with --force"
    )


def test_a_correction_of_an_existing_row_is_checked_too():
    load("anthropic,claude-x,2026-01-01,3,15\nanthropic,claude-x,2026-06-01,3,15\n")
    with pytest.raises(RateSanityError, match="line 3, column input: 300 differs 100×"):
        load("anthropic,claude-x,2026-01-01,3,15\nanthropic,claude-x,2026-06-01,300,15\n")


def test_force_loads_the_row_and_reports_what_it_overrode():
    load("anthropic,claude-x,2026-01-01,3,15\n")
    result = load("anthropic,claude-x,2026-06-01,300,15\n", force=True)
    assert result.created == 1
    assert [str(w) for w in result.forced] == [
        "line 2, column input: 300 differs 100× from anthropic claude-x's row from 2026-01-01 (3)"
    ]
    assert ModelRate.objects.get(effective_from=date(2026, 6, 1)).input_usd_per_mtok == 300


def test_the_shipped_table_passes_the_sanity_check():
    result = model_rates_load(text=DEFAULT_RATES_CSV.read_text())
    assert result.forced == ()


def test_the_command_refuses_and_force_loads(tmp_path, capsys):
    path = tmp_path / "rates.csv"
    path.write_text(HEADER + "anthropic,claude-haiku-4-5,2026-01-01,1000,5\n")
    with pytest.raises(CommandError, match="differs 1,000× from the reference price"):
        call_command("load_model_rates", str(path))
    assert not ModelRate.objects.exists()
    call_command("load_model_rates", str(path), "--force")
    out = capsys.readouterr().out
    assert "1 created, 0 updated, 0 unchanged" in out
    assert "loaded with --force: line 2, column input: 1000 differs 1,000×" in out


def rate_form(**fields: str) -> dict[str, str]:
    return {
        "provider": "anthropic", "model": "claude-haiku-4-5", "effective_from": "2026-06-01",
        "input_usd_per_mtok": "1", "output_usd_per_mtok": "5", "batch_discount_pct": "50",
        **fields,
    }  # fmt: skip


def test_admin_warns_and_refuses_a_price_ten_times_off_until_confirmed(admin_client):
    url = "/admin/tracking/modelrate/add/"
    response = admin_client.post(url, rate_form(input_usd_per_mtok="1000"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "input: 1000 differs 1,000× from the reference price (1)" in page
    assert "Save anyway" in page
    assert not ModelRate.objects.exists()
    response = admin_client.post(url, rate_form(input_usd_per_mtok="1000", confirm_prices="on"))
    assert response.status_code == 302
    assert ModelRate.objects.get().input_usd_per_mtok == 1000


def test_admin_compares_with_the_models_previous_row(admin_client):
    load("anthropic,claude-x,2026-01-01,3,15\n")
    response = admin_client.post(
        "/admin/tracking/modelrate/add/",
        rate_form(model="claude-x", input_usd_per_mtok="3", output_usd_per_mtok="0.015"),
    )
    assert (
        "output: 0.015 differs 1,000× from anthropic claude-x&#x27;s row from 2026-01-01 (15)"
        in (response.content.decode())
    )
    assert ModelRate.objects.count() == 1


def test_admin_saves_an_ordinary_price_change_without_asking(admin_client):
    load("anthropic,claude-x,2026-01-01,3,15\n")
    response = admin_client.post(
        "/admin/tracking/modelrate/add/", rate_form(model="claude-x", input_usd_per_mtok="2.5")
    )
    assert response.status_code == 302
    assert ModelRate.objects.count() == 2


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


postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="RateBook.current holds a book on PostgreSQL only"
)


@postgresql_only
def test_current_book_is_reused_while_no_rate_changes(rates):
    assert RateBook.current() is RateBook.current()


@postgresql_only
def test_current_book_sees_a_rate_changed_without_signals(rates):
    before = RateBook.current().resolve("anthropic", "claude-sonnet-4-5", date(2026, 11, 2))
    assert before is not None
    # A queryset update sends no signal: only the table itself can tell.
    ModelRate.objects.filter(pk=before.rate.pk).update(input_usd_per_mtok=Decimal("4.25"))

    after = RateBook.current().resolve("anthropic", "claude-sonnet-4-5", date(2026, 11, 2))

    assert after is not None
    assert after.card.input == Decimal("4.25")


@postgresql_only
def test_current_book_sees_a_new_rate_row(rates):
    RateBook.current()
    ModelRate.objects.create(
        provider="anthropic",
        model="claude-test-new",
        effective_from=date(2026, 1, 1),
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("2"),
    )

    assert RateBook.current().resolve("anthropic", "claude-test-new", date(2026, 11, 2))


@postgresql_only
def test_current_book_is_renewed_once_it_remembers_too_many_resolutions(rates, monkeypatch):
    """Clients choose the model names: a book held for the process must not grow forever."""
    monkeypatch.setattr("tracking.rates.MAX_HELD", 3)
    book = RateBook.current()
    for name in ("unknown-a", "unknown-b", "unknown-c"):
        book.resolve("anthropic", name, date(2026, 11, 2))

    assert RateBook.current() is not book
