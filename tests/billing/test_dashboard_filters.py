from __future__ import annotations

from decimal import Decimal

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
