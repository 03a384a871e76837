"""The demo behind bin/start: clients, users, ~60 days of usage, budgets, alerts and
invoices, sized so that whatever today's date is (the 1st of a month included) the pages
show a green, a yellow and a red budget, a client without one, alerts (this month and
past months), and invoices in every state: draft, finalized, sent, paid and void. It
prints the sign-ins and an API key for the README's curl example."""

from __future__ import annotations

import random
import secrets
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from agency.calendar import (
    local_day,
    local_moment,
    month_range,
    month_start,
    previous_month,
    today,
)
from agency.models import AgencyProfile, Client, ClientMembership, Project
from agency.money import apply_markup, round_money
from billing.models import Invoice
from billing.selectors.budgets import budget_status_for
from billing.services.alerts import alerts_evaluate
from billing.services.budgets import budgets_recompute
from billing.services.invoices import (
    invoice_finalize,
    invoice_mark_paid,
    invoice_send,
    invoice_void,
    invoices_generate_month,
)
from billing.services.rollups import rollups_rebuild_period
from tracking import demo, demo_reports
from tracking.keys import api_key_create
from tracking.models import UsageEvent
from tracking.pricing import normalize_usage
from tracking.rates import RateBook
from tracking.services import event_fingerprint, pricing_fields, usage_fields

CLIENTS = [
    # slug, name, markup %, budget, projects, events per day, providers
    ("acme", "Acme Corp", "25", "900", ["support-bot", "doc-summarizer"], 70, "anthropic"),
    ("globex", "Globex", "40", "250", ["sales-assistant"], 45, "anthropic"),
    ("initech", "Initech", "15", "3000", ["code-review", "search"], 40, "mixed"),
    ("umbrella", "Umbrella Health", "20", None, ["triage"], 25, "mixed"),
]


class Command(BaseCommand):
    help = "Create demo clients, projects, users and ~60 days of realistic usage."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=60)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--admin-password", default="")

    def handle(self, *args: Any, days: int, seed: int, admin_password: str, **options: Any) -> None:
        call_command("load_model_rates", stdout=self.stdout)
        if Client.objects.filter(slug="acme").exists():
            self.stdout.write("demo data already present; nothing to do")
        else:
            with transaction.atomic():
                count = self._seed(days=days, rng=random.Random(seed))
            self.stdout.write(f"created {count} usage events over {days} days")
            # Rollups of the whole seeded period in one pass (no need for dirty marks:
            # nothing else writes while the demo is seeded).
            last = today()
            rows = rollups_rebuild_period(start=last - timedelta(days=days), end=last)
            self.stdout.write(f"rolled up {rows} daily rows")
        self._users(admin_password)
        if not Invoice.objects.exists():
            self._past_alerts()
            self._invoices()
        # Budget snapshots (and this month's alerts), as the Celery beat would build them.
        positions = budgets_recompute()
        self.stdout.write(f"recomputed {len(positions)} budgets")
        self._api_key()

    def _api_key(self) -> None:
        """A fresh key of Acme's for the README's curl example (keys are stored hashed, so
        a key can only be shown when it is made)."""
        _, key = api_key_create(
            name="demo: README curl example", client=Client.objects.get(slug="acme")
        )
        self.stdout.write(
            self.style.SUCCESS(f"API key (Acme) for the README's curl examples: {key}")
        )

    def _past_alerts(self) -> None:
        """The threshold alerts the beat would have fired in the seeded past months (the
        demo loads them after the fact, so nothing recorded them then): each is dated the
        last hour of its month."""
        now = timezone.now()
        this_month = month_start(today(now))
        clients = {c.pk: c for c in Client.objects.all()}
        months = sorted(
            {month_start(d) for d in UsageEvent.objects.dates("occurred_at", "day")} - {this_month}
        )
        for month in months:
            if month >= this_month:
                continue
            moment = month_range(month)[1] - timedelta(hours=1)
            positions = [budget_status_for(c, month, now=now) for c in clients.values()]
            fired = alerts_evaluate(positions=positions, clients=clients, now=moment)
            self.stdout.write(f"{len(fired)} alerts recorded for {month:%B %Y}")

    def _invoices(self) -> None:
        """Last month issued in every state after a draft (Acme's paid, Globex's sent,
        Initech's voided with its correction back in draft, Umbrella's finalized); the
        month before still in draft, to review."""
        last = previous_month(month_start(today()))
        for invoice_id in invoices_generate_month(month=previous_month(last)).invoice_ids:
            draft = Invoice.objects.select_related("client").get(pk=invoice_id)
            self.stdout.write(f"draft invoice for {draft.client}, {draft.month:%B %Y}")
        for invoice_id in invoices_generate_month(month=last).invoice_ids:
            invoice = invoice_finalize(invoice_id=invoice_id)
            if invoice.client.slug == "acme":
                invoice = invoice_mark_paid(invoice_id=invoice_id)
            elif invoice.client.slug == "globex":
                invoice = invoice_send(invoice_id=invoice_id)
            elif invoice.client.slug == "initech":
                invoice = invoice_void(invoice_id=invoice_id, reason="Wrong billing address")
            self.stdout.write(f"invoice {invoice.number} ({invoice.status}) for {invoice.client}")
        # The voided month's correction: a new draft that replaces it.
        invoices_generate_month(month=last, client_slug="initech")

    def _users(self, admin_password: str) -> None:
        user_model = get_user_model()
        password = admin_password or secrets.token_urlsafe(12)
        admin, created = user_model.objects.get_or_create(
            username="admin",
            defaults={"is_staff": True, "is_superuser": True, "email": "admin@example.com"},
        )
        if created or admin_password:
            admin.set_password(password)
            admin.save()
            self.stdout.write(self.style.SUCCESS(f"admin login: admin / {password}"))
        viewer, created = user_model.objects.get_or_create(username="acme-viewer")
        if created or admin_password:
            viewer.set_password(password)
            viewer.save()
            ClientMembership.objects.get_or_create(
                user=viewer, defaults={"client": Client.objects.get(slug="acme")}
            )
            self.stdout.write(
                self.style.SUCCESS(f"client login (Acme only): acme-viewer / {password}")
            )

    def _seed(self, *, days: int, rng: random.Random) -> int:
        profile = AgencyProfile.load()
        profile.name = "Northwind AI Agency"
        profile.address = "12 Harbour Street\nBristol BS1 4XE\nUnited Kingdom"
        profile.tax_id = "GB 123 4567 89"
        profile.email = "billing@northwind.example"
        profile.payment_instructions = (
            "Bank transfer to IBAN GB00 NWBK 0000 0000 0000 00, reference the invoice number."
        )
        profile.save()
        book = RateBook.load()
        now = timezone.now()
        day_now = today(now)
        events: list[UsageEvent] = []
        for slug, name, markup, budget, project_names, per_day, providers in CLIENTS:
            client = Client.objects.create(
                name=name,
                slug=slug,
                markup_pct=Decimal(markup),
                monthly_budget_usd=Decimal(budget) if budget else None,
                billing_email=f"accounts@{slug}.example",
                billing_name=f"{name} Accounts Payable",
                billing_address=f"{rng.randint(1, 99)} Market Street\nSpringfield",
                invoice_split_by_project=slug == "acme",
            )
            projects = [Project.objects.create(client=client, name=p) for p in project_names]
            prompts = [demo.prompt_hash(f"{slug}-prompt-{i}") for i in range(8)]
            for offset in range(days, -1, -1):
                start = local_moment(day_now - timedelta(days=offset))
                # Usage grows over time: this month runs hotter than last.
                volume = int(per_day * (0.6 + 0.8 * (days - offset) / days) * rng.uniform(0.7, 1.3))
                for moment in demo.spread(rng, start, volume):
                    if moment > now:
                        continue
                    events.append(self._event(client, projects, prompts, moment, rng, providers))
            # One nightly batch job per client, priced at half.
            batch_day = day_now - timedelta(days=rng.randint(3, 20))
            moment = local_moment(batch_day, time(2, 0))
            for _ in range(120):
                events.append(
                    self._event(client, projects, prompts, moment, rng, "anthropic", batch=True)
                )
        # The month so far always has usage, even in its first minutes: otherwise on the
        # 1st every budget would read green.
        month_begins = local_moment(month_start(day_now))
        for client in Client.objects.all():
            for i in range(12):
                moment = month_begins + (now - month_begins) * (i + 1) / 13
                events.append(self._event(client, [], [], moment, rng, "anthropic"))
        # A model without a rate: stored unpriced, priced once a rate is added.
        acme = Client.objects.get(slug="acme")
        for i in range(5):
            moment = now - timedelta(hours=i + 1)
            events.append(
                self._event(acme, [], [], moment, rng, "anthropic", model="claude-experimental-9")
            )
        for event in events:
            usage = normalize_usage(event.provider, event.usage, service_tier=None)
            resolution = book.resolve(event.provider, event.model, event.occurred_at)
            for key, value in {
                **usage_fields(usage),
                **pricing_fields(usage, resolution, now=now),
            }.items():
                setattr(event, key, value)
            event.fingerprint = event_fingerprint(
                client_id=event.client_id,
                provider=event.provider,
                model=event.model,
                usage=event.usage,
                occurred_at=event.occurred_at,
                service_tier="",
            )
        UsageEvent.objects.bulk_create(events, batch_size=2000)
        self._fit_budgets(events, month_start(day_now))
        # The provider's report of last month and this one, and Hooli, metered from it.
        seeded = demo_reports.provider_reports_seed(now=now, rng=random.Random(rng.random()))
        self.stdout.write(
            f"created {seeded.rows} provider report rows ({seeded.report_events} usage events "
            "of Hooli, a client metered from the provider report)"
        )
        return len(events) + seeded.report_events

    def _fit_budgets(self, events: list[UsageEvent], month: date) -> None:
        """Budgets sized so the demo shows every status whatever the day of the month:
        Acme yellow (~85% used), Globex red (~110%), Initech green (~30%)."""
        share = {"acme": Decimal("0.85"), "globex": Decimal("1.10"), "initech": Decimal("0.30")}
        for client in Client.objects.filter(slug__in=share):
            raw = sum(
                (
                    e.cost_usd
                    for e in events
                    if e.client_id == client.pk
                    and e.cost_usd is not None
                    and local_day(e.occurred_at) >= month
                ),
                Decimal(0),
            )
            billed = apply_markup(raw, client.markup_pct)
            client.monthly_budget_usd = max(
                Decimal("0.01"), round_money(billed / share[client.slug])
            )
            client.save(update_fields=["monthly_budget_usd"])

    def _event(
        self,
        client: Client,
        projects: list[Project],
        prompts: list[str],
        moment: datetime,
        rng: random.Random,
        providers: str,
        *,
        batch: bool = False,
        model: str = "",
    ) -> UsageEvent:
        provider = "anthropic"
        if providers == "mixed" and not batch and not model:
            provider = rng.choices(["anthropic", "openai", "google"], [6, 2, 2])[0]
        if provider == "openai":
            model, usage = (
                rng.choice(["gpt-5-mini", "gpt-4o-2024-08-06", "gpt-4.1"]),
                demo.openai_usage(rng),
            )
        elif provider == "google":
            model, usage = (
                rng.choice(["gemini-2.5-flash", "gemini-2.5-pro"]),
                demo.gemini_usage(rng),
            )
        else:
            if not model:
                names, weights = zip(*demo.ANTHROPIC_MODELS, strict=True)
                model = rng.choices(names, weights)[0]
            feature = rng.choice(demo.FEATURES)
            usage = demo.anthropic_usage(
                rng, batch=batch, search=feature == "search" and rng.random() < 0.5
            )
        # About 5% of calls come untagged: no project.
        project = rng.choice(projects) if projects and rng.random() > 0.05 else None
        return UsageEvent(
            client=client,
            project=project,
            event_id=f"demo-{secrets.token_hex(8)}",
            feature="batch-enrichment" if batch else rng.choice(demo.FEATURES),
            end_user=f"user-{rng.randint(1, 40)}",
            team=rng.choice(["platform", "growth", "support"]),
            prompt_hash=rng.choice(prompts) if prompts else "",
            request_id=f"req_{secrets.token_hex(10)}",
            provider=provider,
            model=model,
            occurred_at=moment,
            received_at=moment + timedelta(milliseconds=rng.randint(50, 900)),
            status_code=200,
            latency_ms=rng.randint(300, 9000),
            usage=usage,
        )
