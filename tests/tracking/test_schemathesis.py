"""Fuzz the running API against its own OpenAPI document with schemathesis.

Starts the app (pytest-django's live server on a transactional test database) and runs
the schemathesis CLI at /api/v1/openapi.json with a valid client key: every response
must be documented (status code, content type, headers, body schema) and none may be a
5xx. Requests without the key are tried too (schemathesis' ignored_auth check).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from django.urls import Resolver404, resolve

from agency.models import Client
from tests.factories import ClientFactory
from tracking.keys import api_key_create

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,ignored_auth"
)
# Per operation and phase; keeps each run to about a minute on a 2-core machine.
MAX_EXAMPLES = 60


def _routed(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


@pytest.mark.parametrize("path", ["/usage", "/budget"])
def test_api_conforms_to_its_openapi_document(live_server, rates, settings, tmp_path, path):
    if not _routed(f"/api/v1{path}"):
        pytest.skip(f"{path} is in the document but not routed yet")
    # Fuzzing sends hundreds of requests a minute: the rate limit is tested elsewhere.
    settings.INGEST_RATE_LIMIT_PER_MINUTE = 1_000_000
    acme = cast(Client, ClientFactory(slug="acme"))
    _, raw_key = api_key_create(name="fuzz", client=acme)
    command = [
        str(SCHEMATHESIS), "run", f"{live_server.url}/api/v1/openapi.json",
        "--include-path", path,
        "--header", f"Authorization: Bearer {raw_key}",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", "20261123",
        "--workers", "1",
        "--request-timeout", "30",
        "--report-dir", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
