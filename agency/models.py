"""The agency's own domain: its clients, their projects, markups, budgets and users."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from simple_history.models import HistoricalRecords

# Alert thresholds are percentages of the budget; above 100 warns of overspend.
MAX_ALERT_THRESHOLD = 1000


def default_alert_thresholds() -> str:
    """A new client's thresholds: ``settings.DEFAULT_ALERT_THRESHOLDS`` (50, 80, 100)."""
    return ",".join(str(value) for value in settings.DEFAULT_ALERT_THRESHOLDS)


def validate_alert_thresholds(value: str) -> None:
    """Whole percentages from 1 to 1000, comma-separated. Refused rather than skipped: a
    threshold typed as "80%" that silently never fires is worse than an error."""
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts:
        raise ValidationError("Give at least one threshold, e.g. 50,80,100.")
    for part in parts:
        if not (part.isascii() and part.isdigit()) or not 1 <= int(part) <= MAX_ALERT_THRESHOLD:
            raise ValidationError(
                f"{part!r} is not a whole percentage from 1 to {MAX_ALERT_THRESHOLD}.",
                code="invalid",
            )


class Currency(models.TextChoices):
    USD = "USD", "US dollar"


class UsageSource(models.TextChoices):
    EVENTS = "events", "Events (SDK or ingest API)"
    PROVIDER_REPORT = "provider_report", "Provider report (no code change)"


class Client(models.Model):
    """One customer of the agency: the tenant every usage event belongs to."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    markup_pct = models.DecimalField(
        "markup %",
        max_digits=7,
        decimal_places=2,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("-100"))],
        help_text="Added to raw provider cost to get the billed amount; 25 means cost × 1.25.",
    )
    monthly_budget_usd = models.DecimalField(
        "monthly budget (USD)",
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="On the billed amount (cost plus markup). Empty: no budget, no status.",
    )
    billing_email = models.EmailField(blank=True)
    billing_name = models.CharField(max_length=200, blank=True)
    billing_address = models.TextField(blank=True)
    billing_tax_id = models.CharField("tax ID", max_length=64, blank=True)
    currency = models.CharField(max_length=3, choices=Currency, default=Currency.USD)
    active = models.BooleanField(default=True)

    # Invoices.
    invoice_split_by_project = models.BooleanField(
        default=False, help_text="One invoice line per model and project instead of per model."
    )
    invoice_show_markup = models.BooleanField(
        default=False,
        help_text=(
            "Show the raw provider cost and the markup on invoices (most agencies don't)."
            " Takes effect only with show pricing details on."
        ),
    )
    tax_rate_pct = models.DecimalField(
        "tax rate %",
        max_digits=6,
        decimal_places=3,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
    )
    tax_label = models.CharField(max_length=40, default="Tax", blank=True)
    invoice_note = models.TextField(
        blank=True,
        help_text=(
            "Printed on every invoice and in its CSV, e.g. a reverse-charge statement:"
            ' "Reverse charge: VAT to be accounted for by the recipient."'
        ),
    )

    # The client portal.
    show_pricing_details = models.BooleanField(
        "show pricing details",
        default=False,
        help_text=(
            "Let this client's users see per-token unit prices, the markup, usage without a"
            " project and models not yet priced. Off: amounts per line only."
        ),
    )

    # Alerts.
    alert_thresholds = models.CharField(
        max_length=100,
        default=default_alert_thresholds,
        validators=[validate_alert_thresholds],
        help_text="Percentages of the budget, comma-separated, for actual and projected spend.",
    )
    alert_billing_contact = models.BooleanField(
        default=False, help_text="Also email budget alerts to the billing email."
    )
    slack_webhook_url = models.URLField(
        "Slack webhook URL",
        blank=True,
        help_text="Slack-compatible incoming webhook for this client's alerts.",
    )

    # Where this client's usage comes from.
    usage_source = models.CharField(
        max_length=20,
        choices=UsageSource,
        default=UsageSource.EVENTS,
        help_text=(
            "Events: the client's apps post each call (SDK or ingest API). Provider report:"
            " the provider's daily usage report for the API keys or workspaces mapped to"
            " this client becomes its usage; its events are refused."
        ),
    )

    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(markup_pct__gte=Decimal("-100")),
                name="client_markup_gte_minus_100",
            ),
            models.CheckConstraint(
                condition=models.Q(monthly_budget_usd__isnull=True)
                | models.Q(monthly_budget_usd__gte=0),
                name="client_budget_non_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(tax_rate_pct__gte=0), name="client_tax_rate_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def threshold_list(self) -> list[int]:
        values = []
        for part in self.alert_thresholds.split(","):
            part = part.strip()
            if part.isdigit():
                values.append(int(part))
        return sorted(set(values))


class Project(models.Model):
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["client__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "name"], name="project_unique_name_per_client"
            )
        ]

    def __str__(self) -> str:
        return f"{self.client.slug}/{self.name}"


class ClientMembership(models.Model):
    """Links a user to the one client whose data they may read. Staff need none."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="client_membership"
    )
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="memberships")

    def __str__(self) -> str:
        return f"{self.user} → {self.client}"


MAX_PAYMENT_TERMS_DAYS = 365


class AgencyProfile(models.Model):
    """The agency's own details, printed on every invoice. One row."""

    name = models.CharField(max_length=200, default="Your Agency")
    address = models.TextField(blank=True)
    tax_id = models.CharField("tax ID", max_length=64, blank=True)
    email = models.EmailField(blank=True)
    logo = models.FileField(upload_to="agency/", blank=True)
    # At most a year: the due date (issue date + terms) must stay a real date, or every
    # finalization fails (an OverflowError past the year 9999).
    payment_terms_days = models.PositiveIntegerField(
        default=30, validators=[MaxValueValidator(MAX_PAYMENT_TERMS_DAYS)]
    )
    payment_instructions = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(payment_terms_days__lte=MAX_PAYMENT_TERMS_DAYS),
                name="agency_profile_payment_terms_at_most_a_year",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def load(cls) -> AgencyProfile:
        profile, _ = cls.objects.get_or_create(pk=1)
        return profile
