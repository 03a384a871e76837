"""Reconciliation: what ClientMeter tracked next to the provider's own books, for a month.

The provider's usage and cost report (``tracking.models.ProviderReportRow``, synced from
the provider) is the source of truth; the events, through their daily rollups, are the
operational record. For each day × model, and for the month:

* **provider cost**: the report's ``amount`` (cents → dollars, exact);
* **tracked cost**: the raw cost (before markup) of every client's events, tagged or not,
  from ``billing.models.ModelDailyRollup`` (the daily rollups summed per client,
  provider and model: the same figures as ``DailyRollup``, in ~1/16 of the rows);
* **coverage %** = tracked ÷ provider cost × 100;
* **untracked** = provider − tracked, in dollars and per token kind (negative: we
  tracked more than the provider counted);
* **rate drift**: our price (``tracking.pricing.price_report_row`` under our rate table)
  for exactly the report's tokens, against the report's ``list_amount``; flagged when
  they differ by more than ``DRIFT_LIMIT_PCT``.

Rules (the README's "What each figure means" says the same for users):

* **Days.** The provider's days are UTC days; ClientMeter's days and months are the
  agency's (``agency.calendar``). A month here is the agency's ``YYYY-MM`` and a day is
  compared by its date: the provider's UTC day D with the rollups' agency-local day D.
  With ``CLIENTMETER_TIME_ZONE=UTC`` they are the same 24 hours; otherwise each day's
  two windows are offset by the zone's UTC offset, so a call near midnight can sit on
  neighbouring days in the two books (the month totals differ only by the calls in
  those few hours at each end of the month). Rollups are the only tracked figures
  cheap enough for this page; they are kept by local day.
* **Only what the provider reported.** Tracked spend is compared only for the
  (provider, day) pairs the report has rows for: a provider with no report (Google) or
  a day not synced yet (today, usually) would otherwise count as tracked against
  nothing. That spend is shown apart (``not_in_report``).
* **Report-sourced clients are set aside.** A client whose usage source is the provider
  report has events made from the report itself; counting them as tracked would
  measure the report against itself. So their events are left out of tracked, and the
  report rows of their API keys and workspaces (a row belongs to them when its API key
  *or* its workspace maps to them, the rule that turns rows into their usage) are left
  out of provider cost; both are shown apart (``report_sourced``). Drift still covers
  those rows: a wrong rate bills those clients wrongly too.
* **Models** are compared under their canonical name: a report row's model id is
  resolved through the rate table (aliases, date suffixes) like an event's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, localcontext
from typing import Any, TypeVar

from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from agency.calendar import local_days, month_bounds
from agency.db import ExactSum
from agency.models import Client, UsageSource
from billing.models import (
    DailyRollup,
    ModelDailyRollup,
    ReconciliationOutput,
    TrackedClientMonth,
    TrackedModelDay,
)
from tracking.buckets import Reach, token_columns
from tracking.models import (
    AccountKind,
    DataKind,
    ModelRate,
    MonthVersion,
    ProviderAccount,
    ProviderReportRow,
    ReportAccountDay,
    ReportModelDay,
)
from tracking.pricing import price_report_row
from tracking.rates import RateBook

T = TypeVar("T")
# What tracked spend is read from: the per-model rollup. ``DailyRollup`` has the same
# columns and the same sums (the tests compare the two, see ``_reconciliation``).
Rollup = type[ModelDailyRollup] | type[DailyRollup]
ZERO = Decimal("0")
CENTS_PER_USD = Decimal("100")
HUNDRED = Decimal("100")
# How long the cache keeps a month's figures (see cached and stored).
RECON_CACHE_SECONDS = 300
# A model's price differs from the provider's list price by more than this: drift.
DRIFT_LIMIT_PCT = Decimal("0.5")
# The token kinds both books count (the billed buckets), in declaration order.
TOKEN_KINDS = token_columns(Reach.INVOICE)
# How a report row groups for pricing: every field that changes the price.
_PRICE_DIMENSIONS = (
    "service_tier",
    "context_window",
    "inference_geo",
    "speed",
    "batch",
)


def _no_tokens() -> dict[str, int]:
    return dict.fromkeys(TOKEN_KINDS, 0)


@dataclass
class Figures:
    """One cell of the reconciliation (a day × model, a model, a day or the month)."""

    provider_cost_usd: Decimal = ZERO
    tracked_cost_usd: Decimal = ZERO
    # Drift: the provider's list amount and our price for the same rows (those whose
    # model has a rate and that carry a list amount).
    list_cost_usd: Decimal = ZERO
    our_price_usd: Decimal = ZERO
    unrated_rows: int = 0  # report rows (grouped) whose model has no rate: not in drift
    provider_tokens: dict[str, int] = field(default_factory=_no_tokens)
    tracked_tokens: dict[str, int] = field(default_factory=_no_tokens)
    tracked_unpriced_events: int = 0
    requests: int = 0

    def merge(self, other: Figures) -> None:
        self.provider_cost_usd += other.provider_cost_usd
        self.tracked_cost_usd += other.tracked_cost_usd
        self.list_cost_usd += other.list_cost_usd
        self.our_price_usd += other.our_price_usd
        self.unrated_rows += other.unrated_rows
        self.tracked_unpriced_events += other.tracked_unpriced_events
        self.requests += other.requests
        for kind in TOKEN_KINDS:
            self.provider_tokens[kind] += other.provider_tokens[kind]
            self.tracked_tokens[kind] += other.tracked_tokens[kind]

    @property
    def coverage_pct(self) -> Decimal | None:
        """Tracked ÷ provider cost × 100, exact to the context's precision; None when the
        provider reported no cost (never a division by zero, never a made-up 0%)."""
        if self.provider_cost_usd <= 0:
            return None
        return self.tracked_cost_usd * HUNDRED / self.provider_cost_usd

    @property
    def untracked_cost_usd(self) -> Decimal:
        return self.provider_cost_usd - self.tracked_cost_usd

    @property
    def untracked_tokens(self) -> dict[str, int]:
        return {k: self.provider_tokens[k] - self.tracked_tokens[k] for k in TOKEN_KINDS}

    @property
    def drift_pct(self) -> Decimal | None:
        """(our price − list amount) ÷ list amount × 100; None without a list amount."""
        if self.list_cost_usd <= 0:
            return None
        return (self.our_price_usd - self.list_cost_usd) * HUNDRED / self.list_cost_usd

    @property
    def drifting(self) -> bool:
        drift = self.drift_pct
        return drift is not None and abs(drift) > DRIFT_LIMIT_PCT


@dataclass
class ModelFigures:
    provider: str
    model: str
    figures: Figures


@dataclass
class DayFigures:
    day: date
    figures: Figures
    models: list[ModelFigures]


@dataclass
class AccountRow:
    """Provider spend of one owner: a mapped client (all its keys and workspaces) or
    one unmapped API key / workspace pair. ``tracked_cost_usd`` is None when there is
    nothing to set against the spend: an unmapped key (events do not say which key made
    them) or a report-sourced client (its usage is the report)."""

    provider: str
    accounts: list[str]
    client: Client | None
    report_sourced: bool
    provider_cost_usd: Decimal
    tracked_cost_usd: Decimal | None

    @property
    def untracked_cost_usd(self) -> Decimal | None:
        if self.tracked_cost_usd is None:
            return None
        return self.provider_cost_usd - self.tracked_cost_usd


@dataclass
class Reconciliation:
    month: date
    days: list[date]
    total: Figures
    by_day: list[DayFigures]
    by_model: list[ModelFigures]
    accounts: list[AccountRow]
    # Tracked spend of unmapped clients, set against the unmapped keys' spend together.
    unattributed_tracked_usd: Decimal
    report_sourced: Figures  # set aside (see the module docstring)
    not_in_report: Figures  # tracked where the provider reported nothing
    has_report: bool

    @property
    def drifting_models(self) -> list[ModelFigures]:
        return [m for m in self.by_model if m.figures.drifting]

    @property
    def unattributed_untracked_usd(self) -> Decimal:
        unmapped = sum((a.provider_cost_usd for a in self.accounts if a.client is None), ZERO)
        return unmapped - self.unattributed_tracked_usd


def _month_rows(first: date, last: date) -> Any:
    return ProviderReportRow.objects.filter(day__gte=first, day__lte=last).order_by()


def _sourced_accounts() -> Any:
    """Report rows belonging to a report-sourced client: its API key or its workspace."""
    accounts = ProviderAccount.objects.filter(
        client__usage_source=UsageSource.PROVIDER_REPORT, provider=OuterRef("provider")
    )
    by_key = accounts.filter(kind=AccountKind.API_KEY, external_id=OuterRef("api_key_id"))
    by_workspace = accounts.filter(kind=AccountKind.WORKSPACE, external_id=OuterRef("workspace_id"))
    return (Q(~Q(api_key_id="")) & Exists(by_key)) | (Q(~Q(workspace_id="")) & Exists(by_workspace))


def _report_groups_raw(first: date, last: date) -> Any:
    """The month's report rows summed per day, model and price dimensions, split by
    whether they belong to a report-sourced client. One grouped query over every row
    (300,000 for 50 models × 200 keys): the former path, the tests' reference."""
    sums: dict[str, Any] = {kind: Sum(kind) for kind in TOKEN_KINDS}
    sums["n_requests"] = Sum("requests")
    sums["amount"] = ExactSum("amount_cents")
    sums["list_amount"] = ExactSum("list_amount_cents")
    return (
        _month_rows(first, last)
        .annotate(sourced=_sourced_accounts())
        .values("day", "provider", "model", *_PRICE_DIMENSIONS, "sourced")
        .annotate(**sums)
    )


def _sourced_rows() -> Q | None:
    """The report rows of report-sourced clients' API keys and workspaces, as a filter
    on (provider, key) and (provider, workspace) (indexed); None when there are none."""
    accounts = (
        ProviderAccount.objects.filter(client__usage_source=UsageSource.PROVIDER_REPORT)
        .exclude(external_id="")
        .values_list("provider", "kind", "external_id")
    )
    ids: dict[tuple[str, str], list[str]] = defaultdict(list)
    for provider, kind, external_id in accounts:
        ids[(provider, kind)].append(external_id)
    condition: Q | None = None
    for (provider, kind), external_ids in sorted(ids.items()):
        column = "api_key_id" if kind == AccountKind.API_KEY else "workspace_id"
        part = Q(provider=provider, **{f"{column}__in": sorted(external_ids)})
        condition = part if condition is None else condition | part
    return condition


def _report_groups(first: date, last: date) -> Iterator[dict[str, Any]]:
    """What ``_report_groups_raw`` returns, to the last decimal, from the day sums
    (``ReportModelDay``, every key) minus the rows of report-sourced clients' keys and
    workspaces (few, read through their index). A mapping or a usage source changes
    without touching the sums."""
    key_fields = ("day", "provider", "model", *_PRICE_DIMENSIONS)
    sourced: dict[tuple[Any, ...], dict[str, Any]] = {}
    condition = _sourced_rows()
    if condition is not None:
        sums: dict[str, Any] = {kind: Sum(kind) for kind in TOKEN_KINDS}
        parts = (
            _month_rows(first, last)
            .filter(condition)
            .values(*key_fields)
            .annotate(
                n_requests=Sum("requests"),
                amount=ExactSum("amount_cents"),
                list_amount=ExactSum("list_amount_cents"),
                n_rows=Count("pk"),
                n_amount=Count("amount_cents"),
                n_list=Count("list_amount_cents"),
                **sums,
            )
        )
        for part in parts:
            sourced[tuple(part[f] for f in key_fields)] = part
    days = ReportModelDay.objects.filter(day__gte=first, day__lte=last).order_by()
    for values in days.values():
        whole: dict[str, Any] = dict(values)
        key = tuple(whole[f] for f in key_fields)
        part = sourced.pop(key, None)
        base = {f: whole[f] for f in key_fields}
        if part is None:
            yield {
                **base,
                "sourced": False,
                **{kind: whole[kind] for kind in TOKEN_KINDS},
                "n_requests": whole["requests"],
                "amount": whole["amount_cents"],
                "list_amount": whole["list_amount_cents"],
            }
            continue
        yield _sourced_group(part)
        if whole["rows"] == part["n_rows"]:
            continue  # every row of the group is a report-sourced client's
        with localcontext(prec=60):  # exact: no rounding of either sum
            amount = _minus(whole["amount_cents"], whole["amount_rows"], part, "amount")
            list_amount = _minus(whole["list_amount_cents"], whole["list_rows"], part, "list")
        yield {
            **base,
            "sourced": False,
            **{kind: whole[kind] - (part[kind] or 0) for kind in TOKEN_KINDS},
            "n_requests": whole["requests"] - (part["n_requests"] or 0),
            "amount": amount,
            "list_amount": list_amount,
        }
    # Sourced rows with no day sum: sums not refreshed after a write (a bug); count the
    # rows rather than drop them.
    for part in sourced.values():
        yield _sourced_group(part)


def _sourced_group(part: dict[str, Any]) -> dict[str, Any]:
    """A report-sourced part in the shape of ``_report_groups_raw``'s groups."""
    group = {f: v for f, v in part.items() if f not in ("n_rows", "n_amount", "n_list")}
    group["sourced"] = True
    return group


def _minus(total: Decimal | None, rows: int, part: dict[str, Any], name: str) -> Decimal | None:
    """A day sum minus a part of it, NULL (no amount on any row left) like SQL's SUM."""
    counted = part["n_amount" if name == "amount" else "n_list"]
    if rows - counted == 0:
        return None
    value: Decimal | None = part["amount" if name == "amount" else "list_amount"]
    assert total is not None  # rows with an amount remain, so the sum has one
    return total if value is None else total - value


def _report_figures(group: dict[str, Any], book: RateBook) -> tuple[str, Figures]:
    """A grouped report row's figures and its model under its canonical name."""
    figures = Figures()
    amount = group["amount"] or ZERO
    list_amount = group["list_amount"]
    figures.provider_cost_usd = amount / CENTS_PER_USD
    figures.requests = group["n_requests"] or 0
    for kind in TOKEN_KINDS:
        figures.provider_tokens[kind] = group[kind] or 0
    resolution = book.resolve(group["provider"], group["model"], group["day"])
    if resolution is None:
        figures.unrated_rows = 1
        return group["model"], figures
    if list_amount is not None:
        figures.list_cost_usd = list_amount / CENTS_PER_USD
        figures.our_price_usd = price_report_row(group, resolution.card).total
    return resolution.rate.model, figures


def _tracked_groups(first: date, last: date, rollup: Rollup) -> Any:
    sums: dict[str, Any] = {kind: Coalesce(Sum(kind), 0) for kind in TOKEN_KINDS}
    return (
        rollup.objects.filter(day__gte=first, day__lte=last)
        .exclude(client__usage_source=UsageSource.PROVIDER_REPORT)
        .order_by()
        .values("day", "provider", "model")
        .annotate(cost=ExactSum("cost_usd"), unpriced=Sum("unpriced_events"), **sums)
    )


def _tracked_from_sums(first: date, last: date) -> tuple[list[dict[str, Any]], Figures]:
    """What ``_tracked_groups`` and ``_sourced_tracked`` return, to the last decimal,
    from the day sums (``TrackedModelDay``, every client) minus the per-model rollups of
    report-sourced clients (few, read through their (client, day) index): the month's
    tracked groups of the other clients, and the report-sourced clients' figures. A
    client's usage source changes without touching the sums."""
    key_fields = ("day", "provider", "model")
    parts = (
        ModelDailyRollup.objects.filter(
            day__gte=first, day__lte=last, client__usage_source=UsageSource.PROVIDER_REPORT
        )
        .order_by()
        .values(*key_fields)
        .annotate(
            n_rows=Count("pk"),
            cost=ExactSum("cost_usd"),
            unpriced=Sum("unpriced_events"),
            **{kind: Sum(kind) for kind in TOKEN_KINDS},
        )
    )
    sourced_figures = Figures()
    sourced: dict[tuple[Any, ...], dict[str, Any]] = {}
    with localcontext(prec=60):  # exact: no rounding of any sum
        for part in parts:
            sourced[tuple(part[f] for f in key_fields)] = part
            sourced_figures.tracked_cost_usd += part["cost"]
            for kind in TOKEN_KINDS:
                sourced_figures.tracked_tokens[kind] += part[kind] or 0
        groups = []
        sums = TrackedModelDay.objects.filter(day__gte=first, day__lte=last).order_by()
        for values in sums.values():
            whole: dict[str, Any] = dict(values)
            part = sourced.get(tuple(whole[f] for f in key_fields))
            if part is None:
                groups.append(
                    {
                        **{f: whole[f] for f in key_fields},
                        "cost": whole["cost_usd"],
                        "unpriced": whole["unpriced_events"],
                        **{kind: whole[kind] for kind in TOKEN_KINDS},
                    }
                )
            elif part["n_rows"] < whole["rows"]:  # else every row is a sourced client's
                groups.append(
                    {
                        **{f: whole[f] for f in key_fields},
                        "cost": whole["cost_usd"] - part["cost"],
                        "unpriced": whole["unpriced_events"] - (part["unpriced"] or 0),
                        **{kind: whole[kind] - (part[kind] or 0) for kind in TOKEN_KINDS},
                    }
                )
    return groups, sourced_figures


def _tracked_figures(group: dict[str, Any]) -> Figures:
    figures = Figures()
    figures.tracked_cost_usd = group["cost"] if group["cost"] is not None else ZERO
    figures.tracked_unpriced_events = group["unpriced"] or 0
    for kind in TOKEN_KINDS:
        figures.tracked_tokens[kind] = group[kind] or 0
    return figures


def _sourced_tracked(first: date, last: date, rollup: Rollup) -> Figures:
    """Events of report-sourced clients (made from the report): set aside, summed."""
    figures = Figures()
    rows = (
        rollup.objects.filter(
            day__gte=first, day__lte=last, client__usage_source=UsageSource.PROVIDER_REPORT
        )
        .order_by()
        .aggregate(cost=ExactSum("cost_usd"), **{k: Sum(k) for k in TOKEN_KINDS})
    )
    figures.tracked_cost_usd = rows["cost"] if rows["cost"] is not None else ZERO
    for kind in TOKEN_KINDS:
        figures.tracked_tokens[kind] = rows[kind] or 0
    return figures


def _accounts(
    first: date, last: date, reported: dict[str, set[date]], rollup: Rollup, *, legacy: bool
) -> tuple[list[AccountRow], Decimal]:
    """Provider spend per owner (see ``AccountRow``), largest gap first, and the tracked
    spend of events-clients that have no mapped key (set against the unmapped keys)."""
    source = (
        _month_rows(first, last)
        if legacy
        else ReportAccountDay.objects.filter(day__gte=first, day__lte=last).order_by()
    )
    spend = source.values("provider", "api_key_id", "workspace_id").annotate(
        amount=ExactSum("amount_cents")
    )
    # In key order: an owner lists its keys the same way on every request.
    spend = spend.order_by("provider", "api_key_id", "workspace_id")
    mapping = {
        (a.provider, a.kind, a.external_id): a
        for a in ProviderAccount.objects.select_related("client")
    }
    by_client: dict[tuple[str, int], AccountRow] = {}
    rows: list[AccountRow] = []
    for group in spend:
        provider = group["provider"]
        key, workspace = group["api_key_id"], group["workspace_id"]
        cost = (group["amount"] or ZERO) / CENTS_PER_USD
        account = (key and mapping.get((provider, AccountKind.API_KEY, key))) or (
            workspace and mapping.get((provider, AccountKind.WORKSPACE, workspace))
        )
        names = [name for name in (key, workspace) if name]
        label = " · ".join(names) or "(no key or workspace)"
        if not account:
            rows.append(AccountRow(provider, [label], None, False, cost, None))
            continue
        client = account.client
        owner = by_client.get((provider, client.pk))
        if owner is None:
            sourced = client.usage_source == UsageSource.PROVIDER_REPORT
            owner = AccountRow(provider, [], client, sourced, ZERO, ZERO)
            by_client[(provider, client.pk)] = owner
        owner.accounts.append(account.label or label)
        owner.provider_cost_usd += cost
    tracked = (
        _tracked_by_client(first, last, reported, rollup)
        if legacy
        else _tracked_by_client_from_sums(first, last, reported)
    )
    mapped_clients = {client_id for _, client_id in by_client}
    for (provider, client_id), owner in by_client.items():
        # A report-sourced client's usage is the report: nothing to set against it.
        owner.tracked_cost_usd = (
            None if owner.report_sourced else tracked.get((provider, client_id), ZERO)
        )
    unattributed = sum(
        (cost for (_, client_id), cost in tracked.items() if client_id not in mapped_clients),
        ZERO,
    )
    rows.extend(by_client.values())
    rows.sort(
        key=lambda r: (
            -(r.untracked_cost_usd if r.untracked_cost_usd is not None else r.provider_cost_usd),
            r.provider,
            r.accounts,
        )
    )
    return rows, unattributed


def _reported_filter(reported: dict[str, set[date]]) -> Q:
    condition = Q(pk__in=[])
    for provider, days in reported.items():
        condition |= Q(provider=provider, day__in=sorted(days))
    return condition


def _tracked_by_client(
    first: date, last: date, reported: dict[str, set[date]], rollup: Rollup
) -> dict[tuple[str, int], Decimal]:
    if not reported:
        return {}
    rows = (
        rollup.objects.filter(_reported_filter(reported), day__gte=first, day__lte=last)
        .exclude(client__usage_source=UsageSource.PROVIDER_REPORT)
        .order_by()
        .values("provider", "client_id")
        .annotate(cost=ExactSum("cost_usd"))
    )
    return {
        (row["provider"], row["client_id"]): row["cost"] if row["cost"] is not None else ZERO
        for row in rows
    }


def _tracked_by_client_from_sums(
    first: date, last: date, reported: dict[str, set[date]]
) -> dict[tuple[str, int], Decimal]:
    """What ``_tracked_by_client`` returns, to the last decimal, from the clients' month
    sums (``TrackedClientMonth``) minus their per-model rollups of the days the provider
    did not report (none for a month synced in full; today, usually, for this month)."""
    if not reported:
        return {}
    sums = (
        TrackedClientMonth.objects.filter(month=first, provider__in=sorted(reported))
        .exclude(client__usage_source=UsageSource.PROVIDER_REPORT)
        .values_list("provider", "client_id", "rows", "cost_usd")
    )
    tracked = {(provider, client_id): (rows, cost) for provider, client_id, rows, cost in sums}
    missing = Q(pk__in=[])
    for provider, days in reported.items():
        gaps = [day for day in local_days(first, last) if day not in days]
        if gaps:
            missing |= Q(provider=provider, day__in=gaps)
    parts = (
        ModelDailyRollup.objects.filter(missing)
        .exclude(client__usage_source=UsageSource.PROVIDER_REPORT)
        .order_by()
        .values("provider", "client_id")
        .annotate(n_rows=Count("pk"), cost=ExactSum("cost_usd"))
    )
    with localcontext(prec=60):  # exact: no rounding of either sum
        for part in parts:
            key = (part["provider"], part["client_id"])
            rows, cost = tracked.get(key, (0, ZERO))
            tracked[key] = (rows - part["n_rows"], cost - part["cost"])
    return {key: cost for key, (rows, cost) in tracked.items() if rows > 0}


def reconciliation_for(month: date) -> Reconciliation:
    """The reconciliation of the agency month containing ``month`` (see the module
    docstring for the rules). Unrounded: rounding happens where figures are shown."""
    return _reconciliation(month, legacy=False)


def _reconciliation(month: date, *, legacy: bool) -> Reconciliation:
    """``reconciliation_for``, or with ``legacy`` what the page computed before the
    reconciliation's rollups: tracked spend from the wide ``DailyRollup`` and the
    provider's figures from every report row. The tests require both to give the same
    figures to the last decimal; the benchmark times both."""
    rollup: Rollup = DailyRollup if legacy else ModelDailyRollup
    groups = _report_groups_raw if legacy else _report_groups
    first, last = month_bounds(month)
    days = list(local_days(first, last))
    book = RateBook.load()
    cells: dict[tuple[date, str, str], Figures] = defaultdict(Figures)
    report_sourced = Figures()
    reported: dict[str, set[date]] = defaultdict(set)
    for group in groups(first, last):
        model, figures = _report_figures(group, book)
        if group["sourced"]:
            # Out of coverage, still in drift (see the module docstring).
            drift_only = Figures(
                list_cost_usd=figures.list_cost_usd,
                our_price_usd=figures.our_price_usd,
                unrated_rows=figures.unrated_rows,
            )
            cells[(group["day"], group["provider"], model)].merge(drift_only)
            report_sourced.merge(figures)
            figures = Figures()  # the pair below still counts as reported
        reported[group["provider"]].add(group["day"])
        cells[(group["day"], group["provider"], model)].merge(figures)
    not_in_report = Figures()
    if reported:
        if legacy:
            tracked_groups, sourced_tracked = (
                _tracked_groups(first, last, rollup),
                _sourced_tracked(first, last, rollup),
            )
        else:
            tracked_groups, sourced_tracked = _tracked_from_sums(first, last)
        for group in tracked_groups:
            tracked = _tracked_figures(group)
            if group["day"] in reported.get(group["provider"], ()):
                cells[(group["day"], group["provider"], group["model"])].merge(tracked)
            else:
                not_in_report.merge(tracked)
        report_sourced.merge(sourced_tracked)
    accounts, unattributed = (
        _accounts(first, last, reported, rollup, legacy=legacy) if reported else ([], ZERO)
    )
    return _assemble(
        month, days, cells, report_sourced, not_in_report, reported, accounts, unattributed
    )


def _assemble(
    month: date,
    days: list[date],
    cells: dict[tuple[date, str, str], Figures],
    report_sourced: Figures,
    not_in_report: Figures,
    reported: dict[str, set[date]],
    accounts: list[AccountRow],
    unattributed: Decimal,
) -> Reconciliation:
    total = Figures()
    per_day: dict[date, Figures] = defaultdict(Figures)
    per_day_models: dict[date, list[ModelFigures]] = defaultdict(list)
    per_model: dict[tuple[str, str], Figures] = defaultdict(Figures)
    for (day, provider, model), figures in sorted(cells.items()):
        total.merge(figures)
        per_day[day].merge(figures)
        per_day_models[day].append(ModelFigures(provider, model, figures))
        per_model[(provider, model)].merge(figures)
    by_day = [DayFigures(day, per_day[day], per_day_models[day]) for day in days]
    by_model = sorted(
        (
            ModelFigures(provider, model, figures)
            for (provider, model), figures in per_model.items()
        ),
        key=lambda m: (-m.figures.provider_cost_usd, m.provider, m.model),
    )
    return Reconciliation(
        month=month_bounds(month)[0],
        days=days,
        total=total,
        by_day=by_day,
        by_model=by_model,
        accounts=accounts,
        unattributed_tracked_usd=unattributed,
        report_sourced=report_sourced,
        not_in_report=not_in_report,
        has_report=bool(reported),
    )


def _latest(table: str, column: str, fn: str = "MAX") -> str:
    return f'(SELECT {fn}("{column}") FROM "{table}")'


def _version(kind: str) -> str:
    return (
        f'(SELECT "token" FROM "{MonthVersion._meta.db_table}" '
        f'WHERE "month" = %(month)s AND "kind" = %({kind})s)'
    )


_REPORT_ROWS = ProviderReportRow._meta.db_table
_WATERMARK_SQL = "SELECT " + ", ".join(
    [
        f"COALESCE({_version('report')}, '-')",
        f"COALESCE({_version('rollups')}, '-')",
        _latest(_REPORT_ROWS, "id"),
        _latest(_REPORT_ROWS, "sync_run_id"),
        _latest(_REPORT_ROWS, "day", "MIN"),
        _latest(_REPORT_ROWS, "day"),
        _latest(ProviderAccount.history.model._meta.db_table, "history_id"),
        _latest(Client.history.model._meta.db_table, "history_id"),
        _latest(ModelRate.history.model._meta.db_table, "history_id"),
    ]
)


def _watermark(month: date) -> str:
    """A version of everything the month's reconciliation is computed from: the report
    rows and the rollups of its days (their ``MonthVersion`` tokens, replaced in the
    transaction that rewrites them: a sync, a rollup rebuild), the key/workspace mapping
    and the clients' usage source and names (their history), and the rate table. The
    highest report row and sync run ids stay as a second guard, with the report's first
    and last day (the page's month picker, ``report_months``). Index reads only."""
    # One round trip: each part is an index probe, and five queries cost more in round
    # trips than in work (the overview shows the coverage line on every request).
    with connection.cursor() as cursor:
        cursor.execute(
            _WATERMARK_SQL,
            {"month": month, "report": DataKind.REPORT, "rollups": DataKind.ROLLUPS},
        )
        parts = cursor.fetchone()
    return ":".join(str(part) for part in parts)


def cached(month: date, what: str, build: Callable[[], T]) -> T:
    """``build()``, reused for ``RECON_CACHE_SECONDS`` under a key of the month, ``what``
    and the watermark (see ``_watermark``). Alerts read ``reconciliation_for`` uncached.

    Why: summing a month takes hundreds of milliseconds at 200 clients and 10M events.
    The watermark moves with every input, so a sync, a rebuild, a mapping or a rate edit
    shows at once; the expiry only bounds what the cache holds.
    """
    first = month_bounds(month)[0]
    key = f"recon:v2:{what}:{first}:{_watermark(first)}"
    value: tuple[T] | None = cache.get(key)
    if value is None:
        value = (build(),)  # a 1-tuple: None is a value (no report), not a miss
        cache.set(key, value, RECON_CACHE_SECONDS)
    return value[0]


def stored(month: date, what: str, build: Callable[[], bytes]) -> bytes:
    """What the page or the API shows for a month (``build()``: rendered, encoded),
    from the cache, else from ``ReconciliationOutput`` (the database: it survives a
    flushed cache and serves every process), else built and stored in both. Reused only
    under the same watermark: the watermark is read before anything is computed, so an
    input changed meanwhile leaves a stored output that no later request matches."""
    first = month_bounds(month)[0]
    watermark = _watermark(first)
    key = f"recon:v2:{what}:{first}:{watermark}"
    value: bytes | None = cache.get(key)
    if value is not None:
        return value
    row = ReconciliationOutput.objects.filter(month=first, what=what, watermark=watermark)
    content = row.values_list("content", flat=True).first()
    if content is None:
        content = build()
        # An upsert: two requests building the same month at once both succeed.
        ReconciliationOutput.objects.bulk_create(
            [
                ReconciliationOutput(
                    month=first,
                    what=what,
                    watermark=watermark,
                    content=content,
                    computed_at=timezone.now(),
                )
            ],
            update_conflicts=True,
            unique_fields=["month", "what"],
            update_fields=["watermark", "content", "computed_at"],
        )
    value = bytes(content)
    cache.set(key, value, RECON_CACHE_SECONDS)
    return value


def coverage_summary(month: date) -> Figures | None:
    """The month's totals for the overview's one line; None without report rows."""

    def build() -> Figures | None:
        data = reconciliation_for(month)
        return data.total if data.has_report else None

    return cached(month, "total", build)


def report_months() -> list[date]:
    """Every month from the first to the last day the provider reported (the page's
    picker): two index reads instead of a scan for distinct months."""
    rows = ProviderReportRow.objects.order_by()
    first = rows.order_by("day").values_list("day", flat=True).first()
    last = rows.order_by("-day").values_list("day", flat=True).first()
    if first is None or last is None:
        return []
    months = []
    month = first.replace(day=1)
    while month <= last:
        months.append(month)
        month = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return months


def chart_series(data: Reconciliation) -> dict[str, list[Decimal]]:
    """The daily chart's stacks: each day's provider cost split into its tracked and
    untracked parts, plus what was tracked beyond the provider's figure."""
    tracked, untracked, beyond = [], [], []
    for day in data.by_day:
        f = day.figures
        tracked.append(min(f.tracked_cost_usd, f.provider_cost_usd))
        untracked.append(max(f.untracked_cost_usd, ZERO))
        beyond.append(max(-f.untracked_cost_usd, ZERO))
    return {
        "Tracked": tracked,
        "Missed by the meter": untracked,
        "Tracked beyond the report": beyond,
    }


@dataclass(frozen=True)
class AccountsRest:
    """The owners beyond the first ``shown`` rows of the spend-by-key table, summed."""

    count: int
    provider_cost_usd: Decimal


def accounts_rest(data: Reconciliation, shown: int) -> AccountsRest:
    rest = data.accounts[shown:]
    return AccountsRest(len(rest), sum((a.provider_cost_usd for a in rest), ZERO))
