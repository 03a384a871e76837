"""The model-rate admin: superseded rows marked, and "Add a model rate" from the unpriced
warning prefilled with the model and the day of its first unpriced call."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.factories import UsageEventFactory
from tracking.models import PricingStatus
from tracking.rates import model_rates_load

pytestmark = pytest.mark.django_db


def _in_force(page: str) -> list[str]:
    cells = re.findall(r'<td class="field-in_force">(.*?)</td>', page, re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]


def test_superseded_rows_are_marked(admin_client):
    # Days around today (UTC, as effective_from is), whatever instant the suite runs at:
    # the admin's session was opened at that instant, so the clock is not moved.
    today = datetime.now(UTC).date()
    old, current, future = today - timedelta(200), today - timedelta(30), today + timedelta(30)
    model_rates_load(
        text="provider,model,effective_from,input,output\n"
        f"anthropic,claude-x,{old},3,15\n"
        f"anthropic,claude-x,{current},2.5,12.5\n"
        f"anthropic,claude-x,{future},2,10\n"
    )
    page = admin_client.get("/admin/tracking/modelrate/?q=claude-x").content.decode()
    # Newest first: the future row, the current one, the one it superseded.
    assert _in_force(page) == [
        f"from {future.day} {future:%b %Y}",
        "current",
        f"superseded {current.day} {current:%b %Y}",
    ]


def test_add_a_model_rate_prefills_the_model_and_its_first_unpriced_day(admin_client):
    for day in (14, 9):
        UsageEventFactory.create(
            model="claude-experimental-9",
            occurred_at=datetime(2026, 11, day, 23, 30, tzinfo=UTC),
            pricing_status=PricingStatus.UNPRICED,
            cost_usd=None,
        )
    page = admin_client.get(
        "/admin/tracking/modelrate/add/?provider=anthropic&model=claude-experimental-9"
    ).content.decode()
    assert re.search(r'name="model"[^>]*value="claude-experimental-9"', page)
    assert re.search(r'<option value="anthropic" selected>', page)
    assert re.search(r'name="effective_from"[^>]*value="2026-11-09"', page)


def test_the_add_form_without_a_model_is_empty(admin_client):
    page = admin_client.get("/admin/tracking/modelrate/add/").content.decode()
    assert not re.search(r'name="effective_from"[^>]*value="2', page)
