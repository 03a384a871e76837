from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agency.env import EnvError, env_bool, env_int
from agency.money import apply_markup, format_usd, round_money, split_cents


@pytest.mark.parametrize(
    ("amount", "rounded"),
    [
        ("0.005", "0.01"),  # half-up, not banker's rounding
        ("0.015", "0.02"),
        ("0.0049999999999999", "0.00"),
        ("-0.005", "-0.01"),
        ("12.345000000000001", "12.35"),
    ],
)
def test_round_money_rounds_half_up_to_the_cent(amount, rounded):
    assert round_money(Decimal(amount)) == Decimal(rounded)


def test_markup_is_exact_before_rounding():
    assert apply_markup(Decimal("0.015384"), Decimal("25")) == Decimal("0.01923")
    assert apply_markup(Decimal("10"), Decimal("0")) == Decimal("10")


def test_format_usd_groups_thousands_and_rounds_once():
    assert format_usd(Decimal("1234.505")) == "$1,234.51"
    assert format_usd(Decimal("-3")) == "-$3.00"
    assert format_usd(None) == "—"


@pytest.mark.parametrize("amount", ["0", "0.00", "-0", "-0.004", "0.004"])
def test_format_usd_of_nothing_is_zero_dollars_never_negative(amount):
    assert format_usd(Decimal(amount)) == "$0.00"


def test_bad_environment_values_fail_loudly(monkeypatch):
    monkeypatch.setenv("SOME_FLAG", "maybe")
    monkeypatch.setenv("SOME_NUMBER", "12a")
    with pytest.raises(EnvError, match="SOME_FLAG"):
        env_bool("SOME_FLAG")
    with pytest.raises(EnvError, match="SOME_NUMBER"):
        env_int("SOME_NUMBER", 1)


def test_split_cents_keeps_the_total_of_the_rounded_parts():
    # Three parts of 1/3 dollar: each alone rounds to 0.33, the total to 1.00.
    third = Decimal("1") / 3
    assert split_cents([third, third, third]) == [Decimal("0.34"), Decimal("0.33"), Decimal("0.33")]
    # The cent goes to the part that lost most in rounding, not to the first.
    assert split_cents([Decimal("0.101"), Decimal("0.109"), Decimal("0.005")]) == [
        Decimal("0.10"),
        Decimal("0.11"),
        Decimal("0.01"),
    ]
    assert split_cents([]) == []


def test_split_cents_of_negative_parts_keeps_their_total():
    third = Decimal("-1") / 3
    assert split_cents([third, third, third]) == [
        Decimal("-0.33"),
        Decimal("-0.33"),
        Decimal("-0.34"),
    ]


@given(
    st.lists(
        st.decimals(
            min_value=-1000, max_value=1000, places=6, allow_nan=False, allow_infinity=False
        ),
        max_size=30,
    )
)
def test_split_cents_sums_to_the_rounded_total_and_moves_no_part_by_a_cent(parts):
    rounded = split_cents(parts)
    assert sum(rounded, Decimal(0)) == round_money(sum(parts, Decimal(0)))
    for part, cents in zip(parts, rounded, strict=True):
        assert cents == cents.quantize(Decimal("0.01"))
        assert abs(cents - part) < Decimal("0.01")
