from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.template.defaultfilters import floatformat
from hypothesis import given
from hypothesis import strategies as st

from billing.selectors.budgets import BudgetPosition
from billing.templatetags import dashboard as filters


def test_usd_rounds_half_up_to_the_cent():
    assert filters.usd(Decimal("1234.565")) == "$1,234.57"


def test_pct_shows_one_place():
    assert filters.pct(Decimal("84.25")) == "84.3%"


def test_signed_pct_carries_its_sign():
    assert filters.signed_pct(Decimal("12")) == "+12.0%"
    assert filters.signed_pct(Decimal("-3.45")) == "-3.5%"
    assert filters.signed_pct(None) == "—"


def test_bar_width_is_capped_to_the_meter():
    assert filters.bar_width(Decimal("150")) == "100.0%"
    assert filters.bar_width(Decimal("-5")) == "0.0%"


def test_status_label_reads_without_colour():
    assert filters.status_label("yellow") == "Near budget"
    assert filters.status_label(None) == "No budget"


def test_per_minute_hides_ordinary_traffic_and_shows_storms():
    assert filters.per_minute(None) == "—"
    assert filters.per_minute(Decimal("0.004")) == "<0.1"
    assert filters.per_minute(Decimal("37.25")) == "37.3"


@given(
    st.one_of(
        st.none(),
        st.decimals(min_value=-1000, max_value=100_000, places=4, allow_nan=False),
        st.sampled_from([Decimal("-0.04"), Decimal("-0.05"), Decimal("0.05"), Decimal("99.95")]),
    )
)
def test_one_place_is_floatformat_to_one_place(value: Decimal | None) -> None:
    # The budget meter's aria-valuenow: the same text as the template filter gave.
    assert filters.one_place(value) == floatformat(value, 1)


def test_the_meter_escapes_what_it_shows() -> None:
    budget = BudgetPosition(
        client_id=1,
        month=date(2026, 11, 1),
        budget_usd=Decimal("10"),
        cost_usd=Decimal("4"),
        billed_usd=Decimal("5"),
        events=3,
        unpriced_events=2,
        percent_used=Decimal("50"),
        status="<red>",
        projected_billed_usd=Decimal("5"),
        projected_percent=Decimal("50"),
        projected_status="<red>",
        elapsed_hours=1,
        month_hours=720,
    )
    html = filters.budget_meter(budget)
    assert "status-&lt;red&gt;" in html
    assert "<red>" not in html
    assert "Too early to project" in html
    assert "+ 2 calls not priced" in html
