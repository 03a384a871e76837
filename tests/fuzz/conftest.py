"""The world every fuzz test attacks: two clients with their users and keys, an agency-wide
key, staff, usage and invoices; the clock pinned at 20 November 2026, noon (agency time)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from agency.models import Client
from billing.models import Invoice, InvoiceStatus
from billing.services.invoices import invoice_finalize, invoices_generate_month
from tests.factories import (
    ClientFactory,
    ClientMembershipFactory,
    StaffFactory,
    UserFactory,
    at,
    priced_event,
)
from tracking.keys import api_key_create

NOW = at(11, 20)
SEP = date(2026, 9, 1)
OCT = date(2026, 10, 1)


@dataclass
class World:
    acme: Client
    globex: Client
    keys: dict[str, str]  # "acme" (client-bound), "globex" (client-bound), "agency"
    users: dict[str, Any] = field(
        default_factory=dict
    )  # "staff", "admin", "acme", "globex", "none"
    invoices: dict[str, list[int]] = field(default_factory=dict)  # "<slug>-issued/-draft"


def _world(clock: Any, *, invoices: bool) -> World:
    clock.move_to(at(9, 20), tick=False)
    acme = ClientFactory.create(slug="acme", name="Acme", monthly_budget_usd=Decimal("900"))
    globex = ClientFactory.create(slug="globex", name="Globex", monthly_budget_usd=Decimal("5"))
    for client in (acme, globex):
        priced_event(client, at=at(9, 10))
    if invoices:
        # Acme's September is issued, its October stays a draft (staff only); Globex's
        # October is issued, its September a draft.
        clock.move_to(at(10, 1, 2), tick=False)
        invoices_generate_month(month=SEP)
        invoice_finalize(invoice_id=Invoice.objects.get(client=acme, month=SEP).pk)
    clock.move_to(at(10, 20), tick=False)
    for client in (acme, globex):
        priced_event(client, at=at(10, 3))
    if invoices:
        clock.move_to(at(11, 1, 2), tick=False)
        invoices_generate_month(month=OCT)
        invoice_finalize(invoice_id=Invoice.objects.get(client=globex, month=OCT).pk)
    clock.move_to(at(11, 3), tick=False)
    for client in (acme, globex):
        priced_event(client, at=at(11, 2), model="claude-haiku-4-5")
    clock.move_to(NOW, tick=False)
    keys = {
        "acme": api_key_create(name="acme", client=acme)[1],
        "globex": api_key_create(name="globex", client=globex)[1],
        "agency": api_key_create(name="agency", client=None)[1],
    }
    users = {
        "staff": StaffFactory.create(username="fuzz-staff"),
        "admin": StaffFactory.create(username="fuzz-admin", is_superuser=True),
        "acme": ClientMembershipFactory.create(client=acme).user,
        "globex": ClientMembershipFactory.create(client=globex).user,
        "none": UserFactory.create(username="fuzz-nobody"),
    }
    world = World(acme=acme, globex=globex, keys=keys, users=users)
    for client in (acme, globex):
        rows = Invoice.objects.filter(client=client)
        drafts = rows.filter(status=InvoiceStatus.DRAFT)
        world.invoices[f"{client.slug}-draft"] = list(drafts.values_list("pk", flat=True))
        issued = rows.exclude(status=InvoiceStatus.DRAFT)
        world.invoices[f"{client.slug}-issued"] = list(issued.values_list("pk", flat=True))
    return world


@pytest.fixture
def fuzz_world(rates: None, settings: Any, time_machine: Any, private_cache: None) -> World:
    """The world without invoices (the API tests)."""
    settings.INGEST_RATE_LIMIT_PER_MINUTE = 10**9
    return _world(time_machine, invoices=False)


@pytest.fixture
def fuzz_world_invoiced(
    rates: None, settings: Any, time_machine: Any, private_cache: None
) -> World:
    """The world with invoices: issued and draft, of both clients (the page tests)."""
    settings.INGEST_RATE_LIMIT_PER_MINUTE = 10**9
    return _world(time_machine, invoices=True)
