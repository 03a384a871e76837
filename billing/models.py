"""Money owed: daily rollups, budget status, alerts and invoices."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.files.storage import Storage, storages
from django.db import models

from agency.calendar import local_day
from agency.db import CostField
from agency.models import Client
from tracking.buckets import GROUPED, Reach, token_columns
from tracking.models import InvoiceBuckets, RollupBuckets, TrailingFields


class UsageCounts(TrailingFields):
    """How many events a row sums, and how many of them have no price yet."""

    events = models.BigIntegerField(default=0)
    unpriced_events = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


# --- rollups, budgets, alerts -----------------------------------------------------------


class DailyRollup(UsageCounts, RollupBuckets):
    """Usage of one client on one agency-local day, per project, feature and model.

    Rebuilt whole from the raw events of its (client, day) whenever that day is marked
    dirty, so late and re-priced events are included and a rebuild is idempotent.
    ``project`` and ``feature`` are names ('' = untagged); ``model`` is the canonical
    model of the rate that priced the events (the id as sent when unpriced).
    """

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="daily_rollups")
    day = models.DateField()
    project = models.CharField(max_length=200, blank=True)
    feature = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=128)
    # events, unpriced_events: UsageCounts; token and cost columns: RollupBuckets.
    cost_usd = CostField(default=0, help_text="Raw provider cost of the priced events.")
    markup_pct = models.DecimalField(max_digits=7, decimal_places=2)
    billed_usd = CostField(default=0, help_text="cost_usd with the day's markup, unrounded.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["client", "day", "project", "feature", "provider", "model"],
                name="dailyrollup_unique_bucket",
            ),
        ]
        indexes = [models.Index(fields=["day", "client"], name="dailyrollup_day_client")]

    def __str__(self) -> str:
        return f"{self.client_id} {self.day} {self.model}"


class HourlyRollup(UsageCounts):
    """Spend of one client in one UTC hour, split by the agency-local day it falls in.

    Feeds the spend-anomaly alert (a 14-day hourly baseline read from ~336 rows per
    client instead of scanning raw events). Rebuilt with the day's DailyRollup rows, in
    the same transaction. ``day`` is in the key because with a half-hour time-zone offset
    one UTC hour straddles two local days.
    """

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    hour = models.DateTimeField(help_text="Start of the hour (UTC).")
    cost_usd = CostField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["client", "day", "hour"], name="hourlyrollup_unique_bucket"
            ),
        ]
        indexes = [models.Index(fields=["hour", "client"], name="hourlyrollup_hour_client")]

    def __str__(self) -> str:
        return f"{self.client_id} {self.hour:%Y-%m-%d %H:00}"


def _top_list_tokens() -> Any:
    """An abstract model with the token columns the dashboards' usage tables add up
    (``tracking.buckets.GROUPED``): what a top-list row shows, without the per-bucket
    costs a DailyRollup keeps for invoices."""
    fields: dict[str, Any] = {
        str(bucket.token_column): models.BigIntegerField(default=0) for bucket in GROUPED
    }
    meta = type("Meta", (), {"abstract": True})
    return type(
        "TopListTokens", (TrailingFields,), {"__module__": __name__, "Meta": meta, **fields}
    )


TopListTokens = _top_list_tokens()


class EndUserDailyRollup(UsageCounts, TopListTokens):  # type: ignore[misc, valid-type]
    """Usage of one end user of a client on one agency-local day: what the client page's
    top end users read (instead of scanning the month's raw events). Rebuilt with the
    day's DailyRollup rows, in the same transaction, from the same raw events."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    end_user = models.CharField(max_length=200, blank=True)
    cost_usd = CostField(default=0, help_text="Raw provider cost of the priced events.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["client", "day", "end_user"], name="enduserdailyrollup_unique_bucket"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client_id} {self.day} {self.end_user}"


class PromptDailyRollup(UsageCounts):
    """Calls and raw cost of one prompt hash of a client on one agency-local day, with
    its first and last call: what the client page's top prompts read. Events without a
    prompt hash are left out (the list never shows them). Rebuilt with DailyRollup."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    prompt_hash = models.CharField(max_length=200)
    cost_usd = CostField(default=0, help_text="Raw provider cost of the priced events.")
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["client", "day", "prompt_hash"], name="promptdailyrollup_unique_bucket"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client_id} {self.day} {self.prompt_hash}"


def _recon_tokens() -> Any:
    """An abstract model with the token columns the reconciliation compares
    (``tracking.buckets.token_columns(Reach.INVOICE)``: the billed buckets)."""
    fields: dict[str, Any] = {
        name: models.BigIntegerField(default=0) for name in token_columns(Reach.INVOICE)
    }
    meta = type("Meta", (), {"abstract": True})
    return type("ReconTokens", (TrailingFields,), {"__module__": __name__, "Meta": meta, **fields})


ReconTokens = _recon_tokens()


class ModelDailyRollup(UsageCounts, ReconTokens):  # type: ignore[misc, valid-type]
    """Usage of one client on one agency-local day per provider and model: what the
    reconciliation reads (instead of the wide ``DailyRollup``, ~800,000 rows a month at
    200 clients). Every client's events, tagged or not (``project``/``feature`` are
    summed away). Rebuilt with the day's DailyRollup rows, in the same transaction, as
    their sums, so the two always agree to the last decimal.

    The agency overview reads it too (issue 14): a client not invoiced by project has one
    invoice line per provider and model, so these rows (~1,600 a day at 200 clients,
    against ~26,000 DailyRollup rows) are all its month, today and sparkline need; hence
    ``billed_usd`` and ``untagged_events``, also sums of the DailyRollup rows."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=128)
    cost_usd = CostField(default=0, help_text="Raw provider cost of the priced events.")
    billed_usd = CostField(default=0, help_text="Sum of the DailyRollup rows' billed_usd.")
    untagged_events = models.BigIntegerField(
        default=0, help_text="Events without a project (DailyRollup rows with project '')."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "provider", "model", "client"],
                name="modeldailyrollup_unique_bucket",
            ),
        ]
        indexes = [models.Index(fields=["client", "day"], name="modeldailyrollup_client_day")]

    def __str__(self) -> str:
        return f"{self.client_id} {self.day} {self.provider} {self.model}"


class TrackedModelDay(UsageCounts, ReconTokens):  # type: ignore[misc, valid-type]
    """Every client's ``ModelDailyRollup`` rows of one agency-local day summed per
    provider and model: the tracked side of the reconciliation's day × model cells (a
    few rows a day instead of one per client and model). ``rows`` counts the rows
    summed, so the report-sourced clients' part can be taken out exactly. Refreshed by
    the rollup rebuild, in its transaction, for the days it rewrites."""

    day = models.DateField()
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=128)
    rows = models.BigIntegerField(default=0)
    cost_usd = CostField(default=0, help_text="Raw provider cost of the priced events.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "provider", "model"], name="trackedmodelday_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.provider} {self.model}"


class TrackedClientMonth(models.Model):
    """One client's ``ModelDailyRollup`` rows of one agency month and provider, summed:
    the tracked side of the reconciliation's spend by client (a row per client instead
    of one per day and model). ``rows`` counts the rows summed, so the days the provider
    has not reported can be taken out exactly. Refreshed by the rollup rebuild, in its
    transaction, for the clients and months it rewrites."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    month = models.DateField(help_text="First day of the agency month.")
    provider = models.CharField(max_length=20)
    rows = models.BigIntegerField(default=0)
    cost_usd = CostField(default=0, help_text="Raw provider cost of the priced events.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["month", "provider", "client"], name="trackedclientmonth_unique"
            ),
        ]
        indexes = [models.Index(fields=["client", "month"], name="trackedclientmonth_client")]

    def __str__(self) -> str:
        return f"{self.client_id} {self.month:%Y-%m} {self.provider}"


class ReconciliationOutput(models.Model):
    """A month's reconciliation as a page or the API shows it (rendered HTML, encoded
    JSON), stored with the watermark it was computed under: every input's version (the
    report's and the rollups' ``MonthVersion`` tokens, the key mapping's, the clients'
    and the rate table's history). Reused, from any process and after the cache is
    flushed, only while the watermark is the same; anything else is recomputed."""

    month = models.DateField(help_text="First day of the agency month.")
    what = models.CharField(max_length=40, help_text="Which output: 'api', 'page:<month>'.")
    watermark = models.CharField(max_length=300)
    content = models.BinaryField()
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["month", "what"], name="reconciliationoutput_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.what}"


class BudgetStatus(models.TextChoices):
    GREEN = "green", "Green (below 80%)"
    YELLOW = "yellow", "Yellow (80% to below 100%)"
    RED = "red", "Red (100% or more)"


class BudgetSnapshot(models.Model):
    """A client's budget position for one month, as of the last recompute.

    One row per (client, month), overwritten by every recompute (idempotent): the record
    of where each client stood, browsed in admin. Nothing else reads it: alerts use the
    positions the recompute computes, and the budget API, the overview and the client page
    compute the same figures live from the rollups, so an edited budget shows at once.
    """

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="budget_snapshots")
    month = models.DateField(help_text="First day of the month, agency time zone.")
    budget_usd = models.DecimalField(
        "budget (USD)", max_digits=14, decimal_places=2, null=True, blank=True
    )
    cost_usd = CostField("cost (USD)", default=0)
    billed_usd = CostField("billed (USD)", default=0)
    events = models.BigIntegerField(default=0)
    unpriced_events = models.BigIntegerField(
        default=0, help_text="Events with no rate yet: spend not counted (unknown spend)."
    )
    percent_used = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    status = models.CharField(max_length=8, choices=BudgetStatus, blank=True)
    projected_billed_usd = CostField("projected billed (USD)", default=0)
    projected_percent = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    projected_status = models.CharField(max_length=8, choices=BudgetStatus, blank=True)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["client", "month"], name="budgetsnapshot_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.client_id} {self.month:%Y-%m}"


class AlertKind(models.TextChoices):
    ACTUAL = "actual", "Budget threshold reached"
    PROJECTED = "projected", "Projected to reach threshold"
    ANOMALY = "anomaly", "Spend anomaly"
    RECON_COVERAGE = "recon_coverage", "Reconciliation: coverage below threshold"
    RECON_DRIFT = "recon_drift", "Reconciliation: model rate drift"


RECON_KINDS = (AlertKind.RECON_COVERAGE, AlertKind.RECON_DRIFT)


class Alert(models.Model):
    """An alert that fired. The unique key makes it fire once per client, month, kind
    and threshold (and, for anomalies, local day) even with concurrent workers: only the
    transaction that inserted the row delivers it. Reconciliation alerts are the agency's
    (no client): once per month, kind, threshold and key (the drifting model)."""

    client = models.ForeignKey(
        Client,
        on_delete=models.CASCADE,
        related_name="alerts",
        null=True,
        blank=True,
        help_text="Empty: an agency-wide alert (reconciliation).",
    )
    month = models.DateField(help_text="First day of the month, agency time zone.")
    kind = models.CharField(max_length=16, choices=AlertKind)
    threshold = models.PositiveIntegerField(
        help_text="Percent of budget; for anomalies the number of standard deviations."
    )
    key = models.CharField(
        max_length=200,
        blank=True,
        help_text="Anomalies: the local day (one per client per day); drift: the model.",
    )
    budget_usd = models.DecimalField(
        "budget (USD)", max_digits=14, decimal_places=2, null=True, blank=True
    )
    billed_usd = CostField("billed (USD)", default=0)
    projected_billed_usd = CostField("projected billed (USD)", default=0)
    subject = models.CharField(max_length=200)
    message = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "month", "kind", "threshold", "key"], name="alert_fires_once"
            ),
            # NULLs are distinct in a unique index: agency-wide alerts need their own.
            models.UniqueConstraint(
                fields=["month", "kind", "threshold", "key"],
                condition=models.Q(client__isnull=True),
                name="alert_agency_fires_once",
            ),
        ]
        indexes = [models.Index(fields=["client", "-created_at"], name="alert_client_recent")]

    def __str__(self) -> str:
        return self.subject


class DeliveryChannel(models.TextChoices):
    EMAIL = "email", "Email"
    SLACK = "slack", "Slack webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (will retry)"
    GAVE_UP = "gave_up", "Gave up"


class AlertDelivery(models.Model):
    """One alert to one destination. Status moves by conditional UPDATEs, so a retried or
    duplicated task never sends twice."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=8, choices=DeliveryChannel)
    target = models.CharField(max_length=1000, help_text="Email addresses or webhook URL.")
    status = models.CharField(max_length=8, choices=DeliveryStatus, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "alert deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["alert", "channel", "target"], name="alertdelivery_unique_target"
            ),
        ]
        indexes = [
            models.Index(
                fields=["status", "updated_at"],
                name="alertdelivery_unsent",
                condition=~models.Q(status="sent"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} → {self.target[:60]}"


# --- invoices ---------------------------------------------------------------------------


def _money(verbose: str, **kwargs: object) -> models.DecimalField:
    """A rounded USD amount on an invoice: NUMERIC(14, 2)."""
    return models.DecimalField(verbose, max_digits=14, decimal_places=2, **kwargs)  # type: ignore[arg-type]


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    FINALIZED = "finalized", "Finalized"
    SENT = "sent", "Sent"
    PAID = "paid", "Paid"
    VOID = "void", "Void"


class InvoiceKind(models.TextChoices):
    MONTHLY = "monthly", "Monthly usage"


class InvoiceLineKind(models.TextChoices):
    USAGE = "usage", "Usage"
    ADJUSTMENT = "adjustment", "Late usage adjustment"


class ImmutableInvoiceError(Exception):
    """A write to the money of an invoice that is no longer a draft."""


def invoice_storage() -> Storage:
    """Where invoice PDFs live: private storage, outside MEDIA_ROOT, with no URL."""
    return storages["invoices"]


class InvoiceNumberCounter(models.Model):
    """The last number handed out in a year; locked (SELECT … FOR UPDATE) by finalization,
    so numbers are gapless: a rolled-back finalization rolls its increment back too."""

    year = models.PositiveIntegerField(unique=True)
    last_seq = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.year}: {self.last_seq}"


# Fields frozen once an invoice leaves draft; Invoice.save() refuses to change them.
INVOICE_FROZEN_FIELDS = (
    "client_id", "kind", "month", "number", "year", "seq", "issue_date", "due_date",
    "markup_pct", "tax_rate_pct", "tax_label", "show_markup", "show_pricing_details",
    "invoice_note", "split_by_project",
    "raw_cost_usd", "subtotal_usd", "tax_usd", "total_usd",
    "client_name", "billing_name", "billing_email", "billing_address", "billing_tax_id",
    "agency_name", "agency_address", "agency_tax_id", "agency_email", "agency_logo",
    "payment_terms_days", "payment_instructions",
)  # fmt: skip


class Invoice(models.Model):
    """A client's invoice for one month of usage (agency time zone).

    A draft is regenerated freely from the rollups. Finalization gives it a gapless number
    and freezes every figure and detail printed on it; after that only its status moves
    (finalized → sent → paid, or → void) and, when voided, its PDF gets a VOID mark.
    """

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="invoices")
    kind = models.CharField(max_length=16, choices=InvoiceKind, default=InvoiceKind.MONTHLY)
    month = models.DateField(help_text="First day of the invoiced month, agency time zone.")
    status = models.CharField(max_length=16, choices=InvoiceStatus, default=InvoiceStatus.DRAFT)
    replaces = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="replaced_by",
        help_text="The void invoice this one corrects.",
    )
    number = models.CharField(max_length=32, null=True, blank=True, unique=True)
    year = models.PositiveIntegerField(null=True, blank=True)
    seq = models.PositiveIntegerField(null=True, blank=True)
    issue_date = models.DateField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)

    # Snapshot of the client's settings and details (refreshed while a draft).
    markup_pct = models.DecimalField("markup %", max_digits=7, decimal_places=2, default=0)
    tax_rate_pct = models.DecimalField("tax rate %", max_digits=6, decimal_places=3, default=0)
    tax_label = models.CharField(max_length=40, blank=True)
    show_markup = models.BooleanField(
        default=False, help_text="Cost and markup columns: the client's choice, with details on."
    )
    show_pricing_details = models.BooleanField(
        default=False,
        help_text="Tokens, unit prices and unpriced calls printed; off: amounts per line only.",
    )
    invoice_note = models.TextField(blank=True, help_text="The client's note, e.g. reverse charge.")
    split_by_project = models.BooleanField(default=False)
    client_name = models.CharField(max_length=200, blank=True)
    billing_name = models.CharField(max_length=200, blank=True)
    billing_email = models.EmailField(blank=True)
    billing_address = models.TextField(blank=True)
    billing_tax_id = models.CharField("billing tax ID", max_length=64, blank=True)
    # Snapshot of the agency's details, taken at finalization.
    agency_name = models.CharField(max_length=200, blank=True)
    agency_address = models.TextField(blank=True)
    agency_tax_id = models.CharField("agency tax ID", max_length=64, blank=True)
    agency_email = models.EmailField(blank=True)
    agency_logo = models.CharField(max_length=255, blank=True, help_text="Storage name.")
    payment_terms_days = models.PositiveIntegerField(default=30)
    payment_instructions = models.TextField(blank=True)

    raw_cost_usd = CostField(
        "raw cost (USD)", default=0, help_text="Sum of the lines' raw cost, unrounded."
    )
    subtotal_usd = _money("subtotal (USD)", default=0)
    tax_usd = _money("tax (USD)", default=0)
    total_usd = _money("total (USD)", default=0)
    unpriced_events = models.BigIntegerField(default=0)

    pdf = models.FileField("PDF", upload_to="invoices/", blank=True, storage=invoice_storage)
    pdf_sha256 = models.CharField("PDF SHA-256", max_length=64, blank=True)
    void_reason = models.TextField(blank=True)

    generated_at = models.DateTimeField(null=True, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    paid_on = models.DateField(
        null=True, blank=True, help_text="The day the payment was received, as printed."
    )
    voided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-month", "client__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "month"],
                condition=models.Q(kind="monthly") & ~models.Q(status="void"),
                name="invoice_one_monthly_per_client_month",
            ),
            models.UniqueConstraint(fields=["year", "seq"], name="invoice_unique_year_seq"),
            models.CheckConstraint(
                condition=models.Q(status="draft", number__isnull=True)
                | (~models.Q(status="draft") & models.Q(number__isnull=False)),
                name="invoice_number_iff_not_draft",
            ),
        ]
        indexes = [models.Index(fields=["status", "month"], name="invoice_status_month")]

    def __str__(self) -> str:
        return self.number or f"Draft {self.client_id} {self.month:%Y-%m}"

    def save(self, *args: object, **kwargs: object) -> None:
        # Guard, not workflow: a finalized invoice's figures are read-only. Status moves
        # go through conditional UPDATEs in billing.services.invoices, not through save().
        if self.pk is not None:
            stored = (
                Invoice.objects.filter(pk=self.pk).values("status", *INVOICE_FROZEN_FIELDS).first()
            )
            if stored is not None and stored["status"] != InvoiceStatus.DRAFT:
                changed = [f for f in INVOICE_FROZEN_FIELDS if stored[f] != getattr(self, f)]
                if changed or self.status != stored["status"]:
                    raise ImmutableInvoiceError(
                        f"invoice {stored['number']} is {stored['status']}: "
                        f"refusing to change {', '.join(changed) or 'status'}"
                    )
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def is_draft(self) -> bool:
        return self.status == InvoiceStatus.DRAFT

    @property
    def paid_day(self) -> date | None:
        """The day printed as "Paid on": ``paid_on``, or for invoices paid before it
        existed, the agency-local day they were marked paid. None unless paid."""
        if self.status != InvoiceStatus.PAID:
            return None
        return self.paid_on or (local_day(self.paid_at) if self.paid_at else None)


class InvoiceLine(UsageCounts, InvoiceBuckets):
    """One model (and project, if the client splits by project) of one month's usage.

    ``amount_usd`` is ``billed_usd`` rounded once, half-up. Adjustment lines bill what a
    closed month's rollups hold beyond what its finalized invoices already billed.
    """

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=16, choices=InvoiceLineKind, default=InvoiceLineKind.USAGE)
    usage_month = models.DateField(help_text="The month whose usage this line bills.")
    provider = models.CharField(max_length=20)
    model = models.CharField(max_length=128)
    project = models.CharField(max_length=200, blank=True)
    description = models.CharField(max_length=300)
    # events, unpriced_events: UsageCounts; token and cost columns: InvoiceBuckets.
    raw_cost_usd = CostField("raw cost (USD)", default=0)
    markup_pct = models.DecimalField(
        "markup %",
        max_digits=7,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Empty: it varied.",
    )
    billed_usd = CostField("billed (USD)", default=0, help_text="Raw cost with markup, unrounded.")
    amount_usd = _money("amount (USD)")

    class Meta:
        ordering = ["invoice", "position"]

    def __str__(self) -> str:
        return self.description

    def save(self, *args: object, **kwargs: object) -> None:
        _refuse_unless_draft(self.invoice_id)
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        _refuse_unless_draft(self.invoice_id)
        return super().delete(*args, **kwargs)  # type: ignore[arg-type]


def _refuse_unless_draft(invoice_id: int | None) -> None:
    if invoice_id is None:
        return
    status = Invoice.objects.filter(pk=invoice_id).values_list("status", flat=True).first()
    if status is not None and status != InvoiceStatus.DRAFT:
        raise ImmutableInvoiceError(f"the lines of a {status} invoice cannot change")


class MonthEndRun(models.Model):
    """One month-end invoicing run: drafting every client's invoice of a month.

    Started and finished by ``month_end_run``. A run whose worker died midway keeps an
    empty ``finished_at``; the daily job notices and finishes it (drafting is idempotent).
    """

    month = models.DateField(unique=True, help_text="First day of the month, agency time zone.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-month"]

    def __str__(self) -> str:
        state = "finished" if self.finished_at else "unfinished"
        return f"month-end {self.month:%Y-%m} ({state})"
