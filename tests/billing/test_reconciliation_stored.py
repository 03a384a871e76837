"""The reconciliation's page and API, stored in the database under a watermark: a flushed
cache reads them back, and every input replaces them (a rollup rebuild, a sync, even one
that only deletes rows, a rate edit, a key mapping), to the digit of a fresh computation.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import time_machine
from django.core.cache import cache

from agency.models import Client
from billing.models import ReconciliationOutput
from billing.recon_outputs import reconciliation_payload
from billing.selectors import reconciliation as recon
from billing.services.rollups import rollups_rebuild_dirty
from billing.tasks import recon_outputs_refresh_task
from tests.billing.test_reconciliation import make_book, report
from tests.factories import StaffFactory, priced_event
from tracking.keys import api_key_create
from tracking.models import (
    AccountKind,
    DataKind,
    ModelRate,
    ProviderAccount,
    ProviderReportRow,
)
from tracking.provider_reports.summaries import report_summaries_refresh
from tracking.services import month_versions_touch

NOVEMBER = date(2026, 11, 1)
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
PAGE = "/reconciliation/"
API = "/api/v1/reconciliation"

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(autouse=True)
def frozen() -> Any:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def book(db: None) -> dict[str, Client]:
    return make_book()


@pytest.fixture
def http(client: Any, db: None) -> Any:
    client.force_login(StaffFactory.create())
    key = api_key_create(name="finance", client=None)[1]
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


def fresh_api() -> bytes:
    """What the API would answer computed now, with nothing reused."""
    return msgspec.json.encode(reconciliation_payload(recon.reconciliation_for(NOVEMBER)))


def api(http: Any) -> bytes:
    response = http.get(API, {"month": "2026-11"})
    assert response.status_code == 200
    return bytes(response.content)


def test_a_flushed_cache_reads_the_page_and_the_api_back_from_the_database(
    http: Any, book: dict[str, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    htmx = {"HX-Request": "true"}  # the body alone (the full page has a CSRF token)
    page = http.get(PAGE, {"month": "2026-11"}, headers=htmx).content
    answer = api(http)
    assert ReconciliationOutput.objects.filter(month=NOVEMBER).count() == 2
    cache.clear()

    def fail(month: date) -> Any:
        raise AssertionError("recomputed although nothing changed")

    monkeypatch.setattr(recon, "reconciliation_for", fail)
    assert http.get(PAGE, {"month": "2026-11"}, headers=htmx).content == page
    assert api(http) == answer
    assert b'data-testid="provider-cost">$11.40<' in page


def test_a_rollup_rebuild_replaces_the_stored_month(http: Any, book: dict[str, Client]) -> None:
    before = api(http)
    priced_event(
        book["acme"], at=datetime(2026, 11, 10, 12, tzinfo=UTC), model="recon-model",
        input_tokens=1_000_000, output_tokens=0,
    )  # fmt: skip
    # Until the rollup job runs, the rollups (so the page) do not have the event.
    assert api(http) == before
    rollups_rebuild_dirty()
    after = api(http)
    assert after != before
    assert after == fresh_api()
    # 10 November is not in the report: the $3 is tracked where nothing is compared.
    assert msgspec.json.decode(after)["not_in_report_cost_usd"] == "15.00"  # 12.00 + 3


def test_a_sync_that_only_deletes_rows_replaces_the_stored_month(
    http: Any, book: dict[str, Client]
) -> None:
    """The highest report row id does not move when a re-sync drops a day's rows; the
    report's month version does."""
    assert b'data-testid="provider-cost">$11.40<' in http.get(PAGE, {"month": "2026-11"}).content
    ProviderReportRow.objects.filter(day=date(2026, 11, 4), model="drift-model").delete()
    report_summaries_refresh(provider="anthropic", since=date(2026, 11, 4), until=date(2026, 11, 4))
    cache.clear()
    page = http.get(PAGE, {"month": "2026-11"}).content
    assert b'data-testid="provider-cost">$10.50<' in page
    assert b'data-testid="drift-count">No drift<' in page
    assert api(http) == fresh_api()


def test_a_rate_edit_replaces_the_stored_month(http: Any, book: dict[str, Client]) -> None:
    assert msgspec.json.decode(api(http))["drift_pct"] == "0.07"
    rate = ModelRate.objects.get(model="drift-model")
    rate.input_usd_per_mtok = Decimal("0.99")
    rate.save()
    answer = api(http)
    drift = next(m for m in msgspec.json.decode(answer)["models"] if m["model"] == "drift-model")
    assert drift["drift_pct"] == "0.00"
    assert answer == fresh_api()


def test_mapping_a_key_replaces_the_stored_page(http: Any, book: dict[str, Client]) -> None:
    assert b"apikey_x" in http.get(PAGE, {"month": "2026-11"}).content
    ProviderAccount.objects.create(
        provider="anthropic", kind=AccountKind.API_KEY, external_id="apikey_x",
        client=book["acme"], label="Acme key X",
    )  # fmt: skip
    assert b"Acme key X" in http.get(PAGE, {"month": "2026-11"}).content


def test_an_output_built_while_its_inputs_changed_is_not_reused(
    book: dict[str, Client],
) -> None:
    """The watermark is read before the build: a rebuild committed during it leaves the
    stored output under the old watermark, which no later request matches."""

    def build_during_a_rebuild() -> bytes:
        month_versions_touch(kind=DataKind.ROLLUPS, days=[date(2026, 11, 10)])
        return b"built from half-old rollups"

    assert recon.stored(NOVEMBER, "test", build_during_a_rebuild) == b"built from half-old rollups"
    cache.clear()
    assert recon.stored(NOVEMBER, "test", lambda: b"rebuilt") == b"rebuilt"
    assert recon.stored(NOVEMBER, "test", lambda: b"not called") == b"rebuilt"


def test_a_months_version_is_its_own(book: dict[str, Client]) -> None:
    """A rebuild of October leaves November's stored output in use."""
    assert recon.stored(NOVEMBER, "test", lambda: b"november") == b"november"
    month_versions_touch(kind=DataKind.ROLLUPS, days=[date(2026, 10, 31)])
    cache.clear()
    assert recon.stored(NOVEMBER, "test", lambda: b"not called") == b"november"


def test_the_rollup_job_stores_a_changed_month_again(
    http: Any, book: dict[str, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the rollup job, the first visitor reads what the job stored."""
    assert recon_outputs_refresh_task() == 2  # nothing stored yet: November and October
    assert recon_outputs_refresh_task() == 0  # nothing changed
    priced_event(
        book["acme"], at=datetime(2026, 11, 10, 12, tzinfo=UTC), model="recon-model",
        input_tokens=1_000_000, output_tokens=0,
    )  # fmt: skip
    rollups_rebuild_dirty()
    assert recon_outputs_refresh_task() == 1  # November only
    expected = fresh_api()
    cache.clear()

    def fail(month: date) -> Any:
        raise AssertionError("computed on the request")

    monkeypatch.setattr(recon, "reconciliation_for", fail)
    assert api(http) == expected
    page = http.get(PAGE, {"month": "2026-11"}, headers={"HX-Request": "true"}).content
    assert b'data-testid="provider-cost">$11.40<' in page


def test_the_month_picker_follows_the_reports_days(http: Any, book: dict[str, Client]) -> None:
    """A re-sync that empties another month changes no version of this one, nor the
    highest report row id: the report's last day moves the watermark."""
    report(date(2026, 12, 1), "recon-model", "1")
    report(date(2026, 11, 20), "recon-model", "1")  # the highest row id is November's

    def page() -> bytes:
        return bytes(http.get(PAGE, {"month": "2026-11"}, headers={"HX-Request": "true"}).content)

    assert b'value="2026-12"' in page()
    ProviderReportRow.objects.filter(day=date(2026, 12, 1)).delete()
    report_summaries_refresh(provider="anthropic", since=date(2026, 12, 1), until=date(2026, 12, 1))
    cache.clear()
    assert b'value="2026-12"' not in page()
