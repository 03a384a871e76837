"""GET /api/v1/reconciliation: agency-wide keys only, exact figures, errors as JSON."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine

from agency.models import Client
from tests.billing.test_reconciliation import make_book
from tests.tracking.test_schemathesis import CHECKS
from tracking.keys import api_key_create
from tracking.openapi import openapi_document


@pytest.fixture
def book(db: None) -> dict[str, Client]:
    return make_book()


pytestmark = pytest.mark.usefixtures("private_cache")

URL = "/api/v1/reconciliation"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def get(http: Any, key: str | None, **params: str) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with time_machine.travel(NOW, tick=False):
        return http.get(URL, params, headers=headers)


@pytest.fixture
def agency_key(db: None) -> str:
    return api_key_create(name="finance", client=None)[1]


def test_agency_key_reads_the_month_with_exact_money(
    client: Any, book: dict[str, Client], agency_key: str
) -> None:
    response = get(client, agency_key, month="2026-11")

    assert response.status_code == 200
    body = response.json()
    assert body["month"] == "2026-11"
    assert body["has_report"] is True
    assert body["provider_cost_usd"] == "11.40"
    assert body["tracked_cost_usd"] == "7.50"
    assert body["untracked_cost_usd"] == "3.90"
    assert body["coverage_pct"] == "65.79"  # 7.5 / 11.4
    assert body["report_sourced_cost_usd"] == "2.00"
    assert body["not_in_report_cost_usd"] == "12.00"
    assert body["drift_pct"] == "0.07"
    # -0.00004% rounds to zero: written "0.00", never "-0.00".
    assert next(m for m in body["models"] if m["model"] == "recon-model")["drift_pct"] == "0.00"
    drift = next(m for m in body["models"] if m["model"] == "drift-model")
    assert drift["drift_pct"] == "1.01"
    assert drift["drifting"] is True
    assert drift["provider_tokens"]["input_tokens"] == 1_000_000
    assert drift["tracked_tokens"]["input_tokens"] == 0
    assert len(body["days"]) == 30
    third = body["days"][2]
    assert third["day"] == "2026-11-03"
    assert third["coverage_pct"] == "100.00"
    assert [m["model"] for m in third["models"]] == ["recon-model"]
    assert body["days"][0]["coverage_pct"] is None


def test_default_month_is_the_current_one(
    client: Any, book: dict[str, Client], agency_key: str
) -> None:
    assert get(client, agency_key).json()["month"] == "2026-11"


def test_a_month_without_a_report_has_no_coverage(
    client: Any, book: dict[str, Client], agency_key: str
) -> None:
    body = get(client, agency_key, month="2026-10").json()
    assert body["has_report"] is False
    assert body["coverage_pct"] is None
    assert body["provider_cost_usd"] == "0.00"


def test_client_key_gets_404(client: Any, book: dict[str, Client]) -> None:
    key = api_key_create(name="acme app", client=book["acme"])[1]
    response = get(client, key, month="2026-11")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_no_key_gets_401(client: Any, db: None) -> None:
    assert get(client, None).status_code == 401


@pytest.mark.parametrize("month", ["2026-13", "nov", "1999-12", "2026-1", "2026-11\x00"])
def test_bad_month_is_a_400_naming_the_field(client: Any, agency_key: str, month: str) -> None:
    response = get(client, agency_key, month=month)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "month"
    assert "YYYY-MM" in error["message"]


def test_post_is_a_json_405(client: Any, agency_key: str) -> None:
    response = client.post(URL, headers={"Authorization": f"Bearer {agency_key}"})
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_openapi_documents_the_endpoint() -> None:
    document = openapi_document()
    operation = document["paths"]["/reconciliation"]["get"]
    assert set(operation["responses"]) == {"200", "400", "401", "404", "429"}
    assert "Reconciliation" in document["components"]["schemas"]


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_api_conforms_to_its_openapi_document(live_server: Any, tmp_path: Path) -> None:
    """schemathesis against /reconciliation with an agency-wide key (report rows in
    place, so 200s carry figures): every response documented, none a 5xx."""
    make_book()
    _, raw_key = api_key_create(name="fuzz", client=None)
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run",
        f"{live_server.url}/api/v1/openapi.json",
        "--include-path", "/reconciliation",
        "--header", f"Authorization: Bearer {raw_key}",
        "--checks", CHECKS,
        "--max-examples", "60",
        "--seed", "20261204",
        "--workers", "1",
        "--request-timeout", "30",
        "--report-dir", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
