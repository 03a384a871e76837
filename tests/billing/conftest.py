"""Fixtures shared by the billing tests."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agency.models import Client
from tests.factories import ClientFactory, at


@pytest.fixture
def acme(rates: None, time_machine: object) -> Client:
    """Acme Corp (25% markup, billing details) on 20 September 2026, the shipped rates
    loaded: the invoice tests add October's usage and invoice it on 1 November. A module
    that needs another Acme defines its own ``acme``."""
    time_machine.move_to(at(9, 20), tick=False)  # type: ignore[attr-defined]
    client: Client = ClientFactory.create(
        name="Acme Corp",
        slug="acme",
        markup_pct=Decimal("25"),
        billing_email="ap@acme.example",
        billing_name="Acme Accounts Payable",
        billing_address="1 Main Street\nSpringfield",
    )
    return client
