"""Usage events, the model-rate table and the API keys that post usage."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords

from agency.db import CostField
from agency.models import Client, Project
from tracking.buckets import Reach, buckets, token_columns


class TrailingFields(models.Model):
    """An abstract base whose fields come after the own fields of the model that uses it.

    Django orders a model's fields by when each was created, which would put an abstract
    base's fields first. The models keep their key fields first (admin, ``values()`` and
    positional reads see client, day, … before the figures): as each model is defined, the
    fields it is about to inherit from these bases are renumbered past its own, in MRO
    order (``__init_subclass__`` runs after the class body, before Django copies them).
    """

    class Meta:
        abstract = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__mro__[1:]:
            if base is not TrailingFields and issubclass(base, TrailingFields):
                for field in base._meta.local_fields:
                    field.creation_counter = models.Field.creation_counter
                    models.Field.creation_counter += 1


def _bucket_mixin(name: str, reach: Reach, *, per_event: bool) -> Any:
    """An abstract model with the token and cost columns of the buckets that reach
    ``reach``, in declaration order. On events a cost is NULL while the event is unpriced
    (never $0); sums (rollups, invoice lines) default to 0."""
    fields: dict[str, models.Field[Any, Any]] = {}
    for bucket in buckets(reach):
        if bucket.token_column is None:
            continue
        if per_event and bucket.unit.requests:
            fields[bucket.token_column] = models.IntegerField(default=0)
        else:
            fields[bucket.token_column] = models.BigIntegerField(
                default=0, help_text=bucket.help_text if per_event else ""
            )
    for bucket in buckets(reach):
        if bucket.cost_column is not None:
            label = f"{bucket.label.lower()} (USD)"
            fields[bucket.cost_column] = (
                CostField(label, null=True, blank=True)
                if per_event
                else CostField(label, default=0)
            )
    meta = type("Meta", (), {"abstract": True})
    return type(name, (TrailingFields,), {"__module__": __name__, "Meta": meta, **fields})


if TYPE_CHECKING:
    # What mypy sees: the columns are generated from tracking.buckets at run time, so it
    # types them as Any (the django-stubs plugin still checks lookups and constructors
    # against the real fields).

    class _GeneratedBuckets(TrailingFields):
        class Meta:
            abstract = True

        def __getattr__(self, name: str) -> Any: ...

    class EventBuckets(_GeneratedBuckets):
        class Meta:
            abstract = True

    class RollupBuckets(_GeneratedBuckets):
        class Meta:
            abstract = True

    class InvoiceBuckets(_GeneratedBuckets):
        class Meta:
            abstract = True

else:
    # Every bucket, as each event stores it.
    EventBuckets = _bucket_mixin("EventBuckets", Reach.EVENT, per_event=True)
    # Summed per (client, day, project, feature, model).
    RollupBuckets = _bucket_mixin("RollupBuckets", Reach.ROLLUP, per_event=False)
    # Billed per invoice line.
    InvoiceBuckets = _bucket_mixin("InvoiceBuckets", Reach.INVOICE, per_event=False)


class Provider(models.TextChoices):
    ANTHROPIC = "anthropic", "Anthropic"
    OPENAI = "openai", "OpenAI"
    GOOGLE = "google", "Google"


def _rate(verbose: str, **kwargs: object) -> models.DecimalField:
    """A price in USD per million tokens: NUMERIC(18, 9)."""
    return models.DecimalField(verbose, max_digits=18, decimal_places=9, **kwargs)  # type: ignore[arg-type]


class ModelRate(models.Model):
    """The price of one model from one date on. A price change is a new row, never an edit."""

    provider = models.CharField(max_length=20, choices=Provider)
    model = models.CharField(
        max_length=128, help_text="Canonical model id, e.g. claude-sonnet-4-5."
    )
    aliases = models.TextField(
        blank=True,
        help_text="Space-separated model ids that price as this model "
        "(e.g. claude-sonnet-4-5-20250929). An alias beats the date-suffix fallback.",
    )
    display_name = models.CharField(max_length=128, blank=True)
    effective_from = models.DateField(help_text="First day (UTC) this price applies.")
    input_usd_per_mtok = _rate("input")
    output_usd_per_mtok = _rate("output")
    cache_write_5m_usd_per_mtok = _rate("cache write 5m", null=True, blank=True)
    cache_write_1h_usd_per_mtok = _rate("cache write 1h", null=True, blank=True)
    cache_read_usd_per_mtok = _rate("cache read", null=True, blank=True)
    long_context_threshold = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Input tokens above which the whole request is priced at the long-context "
        "rates (strictly greater than).",
    )
    long_context_input_usd_per_mtok = _rate("long-context input", null=True, blank=True)
    long_context_output_usd_per_mtok = _rate("long-context output", null=True, blank=True)
    long_context_cache_write_5m_usd_per_mtok = _rate(
        "long-context cache write 5m", null=True, blank=True
    )
    long_context_cache_write_1h_usd_per_mtok = _rate(
        "long-context cache write 1h", null=True, blank=True
    )
    long_context_cache_read_usd_per_mtok = _rate("long-context cache read", null=True, blank=True)
    batch_discount_pct = models.DecimalField(
        "batch discount %", max_digits=5, decimal_places=2, default=Decimal("50")
    )
    web_search_usd_per_1k = models.DecimalField(
        "web search (USD per 1,000)", max_digits=12, decimal_places=6, null=True, blank=True
    )
    us_inference_multiplier = models.DecimalField(
        "US inference multiplier",
        max_digits=6,
        decimal_places=3,
        null=True,
        blank=True,
        help_text="Multiplier on every token price when usage.inference_geo is 'us'.",
    )
    fast_multiplier = models.DecimalField(
        max_digits=6,
        decimal_places=3,
        null=True,
        blank=True,
        help_text="Multiplier on every token price when usage.speed is 'fast'.",
    )
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["provider", "model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "model", "effective_from"], name="modelrate_unique_effective"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from}"

    def alias_list(self) -> list[str]:
        return self.aliases.split()

    @property
    def label(self) -> str:
        return self.display_name or self.model


class PricingStatus(models.TextChoices):
    PRICED = "priced", "Priced"
    UNPRICED = "unpriced", "Unpriced (no rate for the model)"


class UsageEvent(EventBuckets):
    """One LLM call: who it was for, what it used, and what it cost at the rate of its day."""

    # No index of its own: (client, occurred_at) below starts with it.
    client = models.ForeignKey(
        Client, on_delete=models.PROTECT, related_name="usage_events", db_index=False
    )
    project = models.ForeignKey(
        Project, on_delete=models.PROTECT, null=True, blank=True, related_name="usage_events"
    )
    event_id = models.CharField(
        "event ID", max_length=128, help_text="Client-supplied idempotency key."
    )
    fingerprint = models.CharField(
        max_length=64,
        help_text="SHA-256 of the billing-relevant content, to tell a replay "
        "from a conflicting reuse of the same id.",
    )
    feature = models.CharField(max_length=200, blank=True)
    end_user = models.CharField(max_length=200, blank=True)
    team = models.CharField(max_length=200, blank=True)
    deploy_sha = models.CharField("deploy SHA", max_length=200, blank=True)
    prompt_hash = models.CharField(max_length=200, blank=True)
    request_id = models.CharField("request ID", max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    provider = models.CharField(max_length=20, choices=Provider)
    model = models.CharField(max_length=128, help_text="As sent by the client app.")
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()

    # Token and cost columns per bucket: EventBuckets (tracking.buckets).
    service_tier = models.CharField(max_length=32, blank=True)
    inference_geo = models.CharField(max_length=32, blank=True)
    speed = models.CharField(max_length=16, blank=True)
    status_code = models.IntegerField(null=True, blank=True)
    latency_ms = models.IntegerField(null=True, blank=True)
    usage = models.JSONField(help_text="The provider's usage object exactly as received.")

    rate = models.ForeignKey(
        ModelRate, on_delete=models.PROTECT, null=True, blank=True, related_name="usage_events"
    )
    pricing_status = models.CharField(
        max_length=16, choices=PricingStatus, default=PricingStatus.UNPRICED
    )
    long_context = models.BooleanField(default=False)
    priced_at_list = models.BooleanField(
        default=False,
        help_text="Priority tier: priced at list price; the actual charge is set by contract.",
    )
    needs_review = models.BooleanField(
        default=False, help_text="Usage carries parts whose pricing is not verified."
    )
    cost_usd = CostField(
        "cost (USD)", null=True, blank=True, help_text="Raw provider cost; NULL if unpriced."
    )
    priced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # On PostgreSQL the table is partitioned by month of ``occurred_at``
        # (tracking.partitions), and a unique index there would have to include
        # ``occurred_at``; the (client, event_id) key is then kept unique across months by
        # ``UsageEventKey`` and triggers instead, under this constraint's name.
        constraints = [
            models.UniqueConstraint(
                fields=["client", "event_id"], name="usageevent_unique_client_event_id"
            ),
        ]
        indexes = [
            # "This client, this month": every client-scoped read and rollup rebuild.
            models.Index(fields=["client", "occurred_at"], name="usageevent_client_time"),
            # Period-wide rebuilds across clients.
            models.Index(fields=["occurred_at"], name="usageevent_time"),
            # Re-pricing finds unpriced events without scanning priced ones.
            models.Index(
                fields=["model"],
                name="usageevent_unpriced_model",
                condition=models.Q(pricing_status="unpriced"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client_id}:{self.event_id}"


class UsageEventKey(models.Model):
    """PostgreSQL only: the idempotency key of every event ever stored, across monthly
    partitions (and archived months), where it is the primary key.

    Written only by triggers on the event table (tracking 0006): an insert whose key is
    taken fails with ``unique_violation`` on ``usageevent_unique_client_event_id``, as
    the plain table's unique constraint did; a delete removes the key; an update follows
    it. ``row_id`` and ``occurred_at`` find the event row (and its partition). Detaching
    an archived month keeps its keys, so a replay of an archived event is still a
    duplicate, never a second row. Empty on SQLite, whose event table keeps the unique
    constraint.
    """

    pk = models.CompositePrimaryKey("client_id", "event_id")
    client_id = models.BigIntegerField()
    event_id = models.CharField(max_length=128)
    row_id = models.BigIntegerField()
    occurred_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.client_id}:{self.event_id}"


class ArchivedMonth(models.Model):
    """An agency-local month whose events were detached from the event table
    (``manage.py usage_partitions archive``). Its rollups, invoices and event keys stay;
    new events for it are refused and its rollups are never rebuilt."""

    month = models.DateField(unique=True, help_text="First day of the month, agency time zone.")
    archived_at = models.DateTimeField()
    events = models.BigIntegerField(help_text="Events detached.")
    file = models.CharField(
        max_length=500, blank=True, help_text="Where the events were written (gzipped CSV)."
    )
    table = models.CharField(
        max_length=63, blank=True, help_text="The detached table, if it was kept."
    )

    class Meta:
        ordering = ["month"]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m}"


class ApiKey(models.Model):
    """A bearer key for the ingest and budget APIs. Only a prefix and a hash are stored."""

    name = models.CharField(max_length=100)
    client = models.ForeignKey(
        Client,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="api_keys",
        help_text="Empty: an agency-wide key that may post for any client.",
    )
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_agency_wide(self) -> bool:
        return self.client_id is None


class ClosedPeriod(models.Model):
    """A client's month whose invoice is finalized: its priced events are never re-priced.

    Written by billing when it finalizes; read by re-pricing. Unpriced events in a closed
    month may still be priced: they then reach the next invoice as adjustments.
    """

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="closed_periods")
    month = models.DateField(help_text="First day of the month, agency time zone.")
    closed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["client", "month"], name="closedperiod_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.client_id} {self.month:%Y-%m}"


class DirtyDay(models.Model):
    """A (client, agency-local day) whose events changed since its rollup was last built.

    Ingest and re-pricing mark days here; billing's rollup job rebuilds them and deletes
    the marks it consumed (only those not touched again meanwhile, by ``marked_at``).
    """

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    marked_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["client", "day"], name="dirtyday_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.client_id} {self.day}"


class DataKind(models.TextChoices):
    REPORT = "report", "Provider report rows"
    ROLLUPS = "rollups", "Rollups"


class MonthVersion(models.Model):
    """A token replaced, in the same transaction, whenever one kind of a month's data is
    rewritten: the provider's report rows of its days (with their day sums) or the
    rollups of its days. What is computed from a month (the stored reconciliation) keeps
    the tokens it was computed under and is reused only while they are the same."""

    kind = models.CharField(max_length=16, choices=DataKind)
    month = models.DateField(help_text="First day of the month (the days' dates).")
    token = models.CharField(max_length=32)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "month"], name="monthversion_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.month:%Y-%m} {self.token}"


class SyncStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ProviderSyncRun(models.Model):
    """One pull of a provider's usage and cost reports for a range of UTC days.

    A failed run stays here (admin lists it) so a gap in the provider's figures is never
    silent.
    """

    provider = models.CharField(max_length=20, choices=Provider)
    since = models.DateField(help_text="First UTC day pulled.")
    until = models.DateField(help_text="Last UTC day pulled (inclusive).")
    trigger = models.CharField(max_length=20, default="command", help_text="command or schedule.")
    status = models.CharField(max_length=16, choices=SyncStatus, default=SyncStatus.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    pages = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.provider} {self.since}..{self.until} {self.status}"


class ProviderReportRow(models.Model):
    """One day of a provider's own usage and cost report, for one combination of model,
    API key, workspace (OpenAI: project) and pricing dimensions.

    The provider's books: reconciliation compares them with the tracked events, and for
    report-sourced clients they become the client's usage. Re-syncing a day replaces its
    rows. Amounts are the provider's, in exact fractional cents.
    """

    provider = models.CharField(max_length=20, choices=Provider)
    day = models.DateField(help_text="UTC day of the provider's daily bucket.")
    model = models.CharField(max_length=128, blank=True)
    api_key_id = models.CharField("API key ID", max_length=128, blank=True)
    workspace_id = models.CharField(
        "workspace ID", max_length=128, blank=True, help_text="OpenAI: the project ID."
    )
    service_tier = models.CharField(max_length=32, blank=True)
    context_window = models.CharField(max_length=32, blank=True)
    inference_geo = models.CharField(max_length=32, blank=True)
    speed = models.CharField(max_length=16, blank=True)
    batch = models.BooleanField(default=False)

    input_tokens = models.BigIntegerField(default=0, help_text="Uncached input.")
    cache_write_5m_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    web_search_requests = models.BigIntegerField(default=0)
    requests = models.BigIntegerField(default=0)
    amount_cents = models.DecimalField(
        max_digits=28,
        decimal_places=12,
        null=True,
        blank=True,
        help_text="The provider's amount (after discounts, before credits), in cents.",
    )
    list_amount_cents = models.DecimalField(
        max_digits=28,
        decimal_places=12,
        null=True,
        blank=True,
        help_text="The provider's list-price amount, in cents.",
    )
    sync_run = models.ForeignKey(
        ProviderSyncRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        indexes = [
            models.Index(fields=["provider", "day"], name="reportrow_provider_day"),
            models.Index(fields=["day"], name="reportrow_day"),
            # The rows of a report-sourced client's keys and workspaces (reconciliation).
            models.Index(fields=["provider", "api_key_id", "day"], name="reportrow_key_day"),
            models.Index(
                fields=["provider", "workspace_id", "day"], name="reportrow_workspace_day"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.day} {self.model}"


# The price dimensions of a report row (everything but the model that changes its price).
REPORT_PRICE_DIMENSIONS = ("service_tier", "context_window", "inference_geo", "speed", "batch")
# The report's token columns: the billed buckets (what the reconciliation compares).
REPORT_TOKEN_COLUMNS = token_columns(Reach.INVOICE)


def _report_cents(help_text: str) -> CostField:
    """A sum of report amounts: exact (text on SQLite), the rows' 12 places."""
    return CostField(max_digits=30, decimal_places=12, null=True, blank=True, help_text=help_text)


class ReportModelDay(models.Model):
    """A provider's report of one UTC day summed per model and price dimensions over
    every API key and workspace: the provider side of the reconciliation (about 1,500
    rows for a month instead of 300,000 at 50 models × 200 keys). Replaced with the day's
    rows, in the same transaction, by whatever replaces them (the sync, the demo):
    ``tracking.provider_reports.summaries.report_summaries_refresh``.

    ``rows``, ``amount_rows`` and ``list_rows`` count the rows summed and those with an
    amount and a list amount, so that a part of the sum (a report-sourced client's keys)
    can be taken out exactly, NULL sums included."""

    provider = models.CharField(max_length=20, choices=Provider)
    day = models.DateField()
    model = models.CharField(max_length=128, blank=True)
    service_tier = models.CharField(max_length=32, blank=True)
    context_window = models.CharField(max_length=32, blank=True)
    inference_geo = models.CharField(max_length=32, blank=True)
    speed = models.CharField(max_length=16, blank=True)
    batch = models.BooleanField(default=False)
    rows = models.BigIntegerField(default=0)
    amount_rows = models.BigIntegerField(default=0)
    list_rows = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cache_write_5m_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    web_search_requests = models.BigIntegerField(default=0)
    requests = models.BigIntegerField(default=0)
    amount_cents = _report_cents("Sum of the rows' amounts, in cents (NULL: none had one).")
    list_amount_cents = _report_cents("Sum of the rows' list amounts, in cents.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "provider", "model", *REPORT_PRICE_DIMENSIONS],
                name="reportmodelday_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.day} {self.model}"


class ReportAccountDay(models.Model):
    """A provider's report of one UTC day summed per API key and workspace: the
    reconciliation's spend by key (a few hundred rows a day instead of every model's).
    Kept with ``ReportModelDay``."""

    provider = models.CharField(max_length=20, choices=Provider)
    day = models.DateField()
    api_key_id = models.CharField(max_length=128, blank=True)
    workspace_id = models.CharField(max_length=128, blank=True)
    amount_cents = _report_cents("Sum of the rows' amounts, in cents (NULL: none had one).")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "provider", "api_key_id", "workspace_id"],
                name="reportaccountday_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.day} {self.api_key_id or self.workspace_id}"


class AccountKind(models.TextChoices):
    API_KEY = "api_key", "API key"
    WORKSPACE = "workspace", "Workspace (OpenAI: project)"


class ProviderAccount(models.Model):
    """A provider API key or workspace that belongs to one client.

    For a client whose usage source is the provider report, the report rows of its
    accounts become its usage. Reconciliation also uses the mapping to name untracked
    spend.
    """

    provider = models.CharField(max_length=20, choices=Provider)
    kind = models.CharField(max_length=16, choices=AccountKind)
    external_id = models.CharField(
        "provider's ID", max_length=128, help_text="e.g. apikey_01… or wrkspc_01…"
    )
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="provider_accounts")
    label = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        verbose_name = "provider API key or workspace"
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "kind", "external_id"], name="provideraccount_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.external_id} → {self.client}"
