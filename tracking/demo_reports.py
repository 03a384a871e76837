"""The demo's reconciliation month: the provider's own report, made up without network.

``provider_reports_seed`` runs after the demo's events are stored. It writes the
``ProviderReportRow``s a sync would have pulled from the start of last month to today:

* every demo client's Anthropic and OpenAI usage, from its events (one row per UTC day ×
  model × tier), under an API key of its own that is mapped to it (they post events, so
  those rows count in the reconciliation only);
* an API key nobody mapped ("prototype"), about 2.5% of each day's spend: the spend that
  bypassed the meter, so coverage is partial;
* Claude Haiku 4.5 at a provider list price 2% above our rate: a drifting model;
* **Hooli**, a client metered from the provider report through its own API key: its rows
  become its usage events through ``apply_report_rows``, as after a real sync.

The provider's amounts are our price for exactly the row's tokens (``price_report_row``),
so coverage and drift show only what the demo put there on purpose.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from agency.calendar import month_start, previous_month, today
from agency.models import Client, UsageSource
from tracking.models import AccountKind, DirtyDay, ProviderAccount, ProviderReportRow, UsageEvent
from tracking.pricing import RateCard, price_report_row
from tracking.provider_reports.summaries import report_summaries_refresh
from tracking.rates import RateBook
from tracking.report_usage import apply_report_rows, booked_at

REPORT_CLIENT = ("hooli", "Hooli")
DRIFTING_MODEL = "claude-haiku-4-5-20251001"
DRIFT = Decimal("1.02")
UNMAPPED_KEY = "apikey_demo_prototype"
UNTRACKED_SHARE = Decimal("0.025")
WORKSPACE = {"anthropic": "wrkspc_demo_default", "openai": "proj_demo_default"}
# A model the demo has no rate for is still billed by the provider: at Sonnet's list price.
FALLBACK_CARD = RateCard(input=Decimal("3"), output=Decimal("15"))
CENT_PLACES = Decimal("1e-12")
TOKENS = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "web_search_requests",
)


def demo_key(slug: str, provider: str) -> str:
    return f"{'apikey' if provider == 'anthropic' else 'key'}_demo_{slug}"


@dataclass
class Seeded:
    rows: int
    report_events: int


def provider_reports_seed(*, now: datetime, rng: random.Random) -> Seeded:
    """Write the demo's provider report rows and Hooli's usage from them (see module)."""
    first = previous_month(month_start(today(now)))
    last = now.astimezone(UTC).date()
    book = RateBook.load()
    rows = _rows_from_events(first, now, book)
    hooli = _report_client()
    hooli_days = [
        day
        for day in _days(first, last)
        if booked_at(day) <= now  # a report day is booked at local noon: never ahead of now
    ]
    rows += [_priced(row, book) for day in hooli_days for row in _hooli_rows(day, rng)]
    rows += _unmapped_rows(rows, book)
    ProviderReportRow.objects.bulk_create(rows, batch_size=2000)
    for provider in sorted({row.provider for row in rows}):
        days = [row.day for row in rows if row.provider == provider]
        report_summaries_refresh(provider=provider, since=min(days), until=max(days))
    result = apply_report_rows("anthropic", hooli_days, notify=False)
    # The demo rebuilds every rollup of its period itself, right after.
    DirtyDay.objects.filter(client=hooli).delete()
    return Seeded(rows=len(rows), report_events=result.created)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _report_client() -> Client:
    slug, name = REPORT_CLIENT
    client = Client.objects.create(
        name=name,
        slug=slug,
        markup_pct=Decimal("30"),
        usage_source=UsageSource.PROVIDER_REPORT,
        billing_email=f"accounts@{slug}.example",
        billing_name=f"{name} Accounts Payable",
        billing_address="1 Hacker Way\nPalo Alto",
    )
    ProviderAccount.objects.create(
        provider="anthropic",
        kind=AccountKind.API_KEY,
        external_id=demo_key(slug, "anthropic"),
        client=client,
        label="Hooli production (metered from the report)",
    )
    return client


def _rows_from_events(first: date, now: datetime, book: RateBook) -> list[ProviderReportRow]:
    """The provider's view of the demo clients' own events: summed per UTC day, model and
    tier, under each client's own (mapped) key."""
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    sums: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: dict.fromkeys(TOKENS, 0))
    counts: dict[tuple[Any, ...], int] = defaultdict(int)
    events = UsageEvent.objects.filter(
        occurred_at__gte=start, occurred_at__lte=now, provider__in=WORKSPACE
    ).values_list("client__slug", "provider", "model", "service_tier", "occurred_at", *TOKENS)
    for slug, provider, model, tier, occurred_at, *tokens in events.iterator(chunk_size=5000):
        key = (slug, provider, model, tier, occurred_at.astimezone(UTC).date())
        for name, value in zip(TOKENS, tokens, strict=True):
            sums[key][name] += value
        counts[key] += 1
    for slug in sorted({key[0] for key in sums}):
        for provider in WORKSPACE:
            ProviderAccount.objects.get_or_create(
                provider=provider,
                kind=AccountKind.API_KEY,
                external_id=demo_key(slug, provider),
                defaults={"client": Client.objects.get(slug=slug), "label": "production"},
            )
    rows = []
    for key in sorted(sums):
        slug, provider, model, tier, day = key
        row = ProviderReportRow(
            provider=provider,
            day=day,
            model=model,
            api_key_id=demo_key(slug, provider),
            workspace_id=WORKSPACE[provider],
            service_tier="standard" if tier in ("", "batch") else tier,
            context_window="0-200k",
            batch=tier == "batch",
            requests=counts[key],
            **sums[key],
        )
        rows.append(_priced(row, book))
    return rows


def _hooli_rows(day: date, rng: random.Random) -> list[ProviderReportRow]:
    key = demo_key(REPORT_CLIENT[0], "anthropic")
    common = {
        "provider": "anthropic",
        "day": day,
        "api_key_id": key,
        "workspace_id": WORKSPACE["anthropic"],
        "context_window": "0-200k",
    }
    rows = [
        ProviderReportRow(
            **common,
            model="claude-sonnet-4-5-20250929",
            service_tier="standard",
            input_tokens=rng.randint(150_000, 450_000),
            cache_write_5m_tokens=rng.randint(20_000, 90_000),
            cache_read_tokens=rng.randint(800_000, 2_500_000),
            output_tokens=rng.randint(20_000, 70_000),
            requests=rng.randint(60, 220),
        ),
        ProviderReportRow(
            **common,
            model=DRIFTING_MODEL,
            service_tier="standard",
            input_tokens=rng.randint(100_000, 300_000),
            output_tokens=rng.randint(10_000, 40_000),
            requests=rng.randint(40, 160),
        ),
    ]
    if day.weekday() == 6:  # a weekly batch job
        rows.append(
            ProviderReportRow(
                **common,
                model=DRIFTING_MODEL,
                service_tier="standard",
                batch=True,
                input_tokens=rng.randint(1_000_000, 3_000_000),
                output_tokens=rng.randint(100_000, 300_000),
                requests=rng.randint(500, 1500),
            )
        )
    return rows


def _unmapped_rows(rows: list[ProviderReportRow], book: RateBook) -> list[ProviderReportRow]:
    """A key nobody mapped, spending UNTRACKED_SHARE of each day's Anthropic spend on Claude
    Sonnet 4.6 (half on input at $3, half on output at $15 per million)."""
    spend: dict[date, Decimal] = defaultdict(Decimal)
    for row in rows:
        if row.provider == "anthropic" and row.list_amount_cents is not None:
            spend[row.day] += row.list_amount_cents / 100
    extra = []
    for day in sorted(spend):
        target = spend[day] * UNTRACKED_SHARE
        row = ProviderReportRow(
            provider="anthropic",
            day=day,
            model="claude-sonnet-4-6",
            api_key_id=UNMAPPED_KEY,
            workspace_id=WORKSPACE["anthropic"],
            service_tier="standard",
            context_window="0-200k",
            input_tokens=int(target / 2 / Decimal("3") * 1_000_000),
            output_tokens=int(target / 2 / Decimal("15") * 1_000_000),
            requests=max(1, int(target * 10)),
        )
        extra.append(_priced(row, book))
    return extra


def _priced(row: ProviderReportRow, book: RateBook) -> ProviderReportRow:
    """The provider's amounts: our price for exactly its tokens, in cents (the drifting
    model 2% above it)."""
    resolution = book.resolve(row.provider, row.model, row.day)
    card = resolution.card if resolution is not None else FALLBACK_CARD
    cents = price_report_row(row, card).total * 100
    if row.model == DRIFTING_MODEL:
        cents *= DRIFT
    # The report's amounts are decimal text with a bounded scale (the column's 12 places).
    row.list_amount_cents = row.amount_cents = cents.quantize(CENT_PLACES)
    return row
