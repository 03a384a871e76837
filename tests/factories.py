"""factory_boy factories shared by every test package. Add yours; don't change others'."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from agency.models import Client, ClientMembership, Project
from billing.models import DailyRollup
from billing.services.rollups import model_rollups_refresh
from tests.clock import AGENCY_TZ
from tracking.models import PricingStatus, UsageEvent
from tracking.pricing import normalize_usage
from tracking.rates import RateBook
from tracking.services import dirty_days_mark, local_day, pricing_fields, usage_fields


def at(month: int, day: int, hour: int = 12) -> datetime:
    """A moment of 2026 on the agency's clock: noon of the day unless ``hour`` says
    otherwise (so the day is the same in any CLIENTMETER_TIME_ZONE)."""
    return datetime(2026, month, day, hour, tzinfo=AGENCY_TZ)


# --- agency --------------------------------------------------------------------------


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-for-tests")


class StaffFactory(UserFactory):
    is_staff = True


class ClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Client

    name = factory.Sequence(lambda n: f"Client {n}")
    slug = factory.Sequence(lambda n: f"client-{n}")
    markup_pct = Decimal("25")
    monthly_budget_usd = None


def new_client(**fields: Any) -> Client:
    """A saved client (typed: factory_boy's create() is not)."""
    return cast(Client, ClientFactory(**fields))


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    client = factory.SubFactory(ClientFactory)
    name = factory.Sequence(lambda n: f"project-{n}")


class ClientMembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClientMembership

    user = factory.SubFactory(UserFactory)
    client = factory.SubFactory(ClientFactory)


# --- tracking ------------------------------------------------------------------------


class UsageEventFactory(factory.django.DjangoModelFactory):
    """A priced Anthropic call; pass cost_usd (and tokens) to taste."""

    class Meta:
        model = UsageEvent

    client = factory.SubFactory(ClientFactory)
    event_id = factory.Sequence(lambda n: f"evt-{n}")
    fingerprint = factory.Sequence(lambda n: f"{n:064x}")
    provider = "anthropic"
    model = "claude-sonnet-4-5"
    occurred_at = factory.LazyFunction(timezone.now)
    received_at = factory.LazyAttribute(lambda e: e.occurred_at)
    input_tokens = 1000
    output_tokens = 200
    usage = factory.LazyAttribute(
        lambda e: {"input_tokens": e.input_tokens, "output_tokens": e.output_tokens}
    )
    pricing_status = PricingStatus.PRICED
    cost_usd = Decimal("0.006")


# --- billing -------------------------------------------------------------------------


class DailyRollupFactory(factory.django.DjangoModelFactory):
    """One rollup bucket; billed_usd follows cost_usd and the client's markup."""

    class Meta:
        model = DailyRollup

    client = factory.SubFactory(ClientFactory)
    day = factory.LazyFunction(lambda: timezone.localdate())
    project = ""
    feature = ""
    provider = "anthropic"
    model = "claude-sonnet-4-5"
    events = 1
    input_tokens = 1000
    output_tokens = 200
    cost_usd = Decimal("1")
    markup_pct = factory.LazyAttribute(lambda r: r.client.markup_pct)
    billed_usd = factory.LazyAttribute(lambda r: r.cost_usd * (100 + r.markup_pct) / 100)

    @classmethod
    def _create(cls, model_class: Any, *args: Any, **kwargs: Any) -> DailyRollup:
        # The rollup job writes a day's per-model sums with its daily rows, in one
        # transaction; a row made here gets them too, as the job would have written them
        # (the overview and the bills read them).
        row = super()._create(model_class, *args, **kwargs)
        model_rollups_refresh(start=row.day, end=row.day)
        return row


# --- invoices ------------------------------------------------------------------------


def priced_event(
    client: Client,
    *,
    at: datetime,
    model: str = "claude-sonnet-4-5",
    input_tokens: int = 1000,
    output_tokens: int = 200,
    project: Project | None = None,
    received_at: datetime | None = None,
    save: bool = True,
) -> UsageEvent:
    """An Anthropic event priced exactly as ingest prices it (rate of its day) and its day
    marked dirty for the rollups. Needs the ``rates`` fixture. ``save=False`` returns it
    unsaved, for bulk_create (then mark the days with ``dirty_days_mark``)."""
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    normalized = normalize_usage("anthropic", usage, service_tier=None)
    resolution = RateBook.load().resolve("anthropic", model, at)
    event = UsageEvent(
        client=client,
        project=project,
        event_id=f"inv-{next(_event_numbers)}",
        fingerprint=f"{next(_event_numbers):064x}",
        provider="anthropic",
        model=model,
        occurred_at=at,
        received_at=received_at or at,
        usage=usage,
        **usage_fields(normalized),
        **pricing_fields(normalized, resolution, now=timezone.now()),
    )
    if save:
        event.save()
        dirty_days_mark([(client.pk, local_day(event.occurred_at))])
    return event


_event_numbers = iter(range(1, 10**9))
