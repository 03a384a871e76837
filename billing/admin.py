from __future__ import annotations

from datetime import date
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from agency.admin_display import MonthFilter, day, month, nowrap, pct, usd
from agency.calendar import today
from agency.money import format_usd
from billing.models import (
    Alert,
    AlertDelivery,
    BudgetSnapshot,
    DeliveryStatus,
    Invoice,
    InvoiceLine,
    MonthEndRun,
)
from billing.services.invoices import (
    InvoiceError,
    invoice_finalize,
    invoice_generate,
    invoice_mark_paid,
    invoice_send,
    invoice_void,
    rollups_refresh,
)
from billing.tasks import alert_delivery_send_task
from tracking.buckets import Reach, token_columns

# --- budgets and alerts -------------------------------------------------------------------


@admin.register(BudgetSnapshot)
class BudgetSnapshotAdmin(admin.ModelAdmin):
    list_display = [
        "client", "month_name", "budget", "billed", "percent_used", "status",
        "projected_billed", "projected_status", "unpriced_events", "computed_at",
    ]  # fmt: skip
    list_filter = ["status", "projected_status", MonthFilter]
    month_name = month()
    budget = usd("budget_usd", "budget")
    billed = usd("billed_usd", "billed")
    projected_billed = usd("projected_billed_usd", "projected billed")
    search_fields = ["client__name", "client__slug"]
    list_select_related = ["client"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class AlertDeliveryInline(admin.TabularInline):
    model = AlertDelivery
    extra = 0
    can_delete = False
    fields = ("channel", "target", "status", "attempts", "last_error", "sent_at", "updated_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """Alert history: filter by client to see one client's."""

    list_display = ["created_at", "client", "kind", "threshold", "month_name", "subject"]
    list_filter = ["kind", MonthFilter, "client"]
    search_fields = ["client__name", "client__slug", "subject"]
    list_select_related = ["client"]
    date_hierarchy = "created_at"
    inlines = [AlertDeliveryInline]
    fields = readonly_fields = (
        "client", "month_name", "kind", "threshold", "key", "budget", "billed",
        "projected_billed", "subject", "message", "created_at",
    )  # fmt: skip
    month_name = month()
    budget = usd("budget_usd", "budget")
    billed = usd("billed_usd", "billed")
    projected_billed = usd("projected_billed_usd", "projected billed")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(admin.ModelAdmin):
    list_display = ["alert", "channel", "target", "status", "attempts", "updated_at", "sent_at"]
    list_filter = ["status", "channel"]
    search_fields = ["alert__client__name", "target", "last_error"]
    list_select_related = ["alert", "alert__client"]
    readonly_fields = [
        "alert", "channel", "target", "status", "attempts", "last_error", "updated_at", "sent_at",
    ]  # fmt: skip
    actions = ["retry_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Retry the selected unsent deliveries now")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[AlertDelivery]) -> None:
        due = list(queryset.exclude(status=DeliveryStatus.SENT).values_list("pk", flat=True))
        queryset.filter(pk__in=due, status=DeliveryStatus.GAVE_UP).update(
            status=DeliveryStatus.FAILED
        )
        for delivery_id in due:
            alert_delivery_send_task.delay(delivery_id)
        self.message_user(request, f"{len(due)} deliveries queued.")


# --- invoices -----------------------------------------------------------------------------


_LINE_FIELDS = (
    "position", "kind", "usage_month_name", "description", "events",
    *token_columns(Reach.INVOICE), "raw_cost", "markup", "billed", "amount",
)  # fmt: skip


class InvoiceLineInline(admin.TabularInline):
    """Read-only: lines come from the rollups (regenerate a draft to change them)."""

    model = InvoiceLine
    extra = 0
    can_delete = False
    fields = _LINE_FIELDS
    readonly_fields = _LINE_FIELDS
    usage_month_name = month("usage_month", "usage month")
    raw_cost = usd("raw_cost_usd", "raw cost", exact=True)
    markup = pct("markup_pct", "markup")
    billed = usd("billed_usd", "billed", exact=True)
    amount = usd("amount_usd", "amount")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    """Invoices are generated, never typed in: every field is read-only, and the status
    moves only through the actions (each one a service call)."""

    list_display = [
        "number_or_draft", "client", "month_name", "status", "subtotal", "tax", "total",
        "issued", "due", "pdf_link",
    ]  # fmt: skip
    list_filter = ["status", MonthFilter, "client"]
    search_fields = ["number", "client__name", "client__slug"]
    list_select_related = ["client"]
    inlines = [InvoiceLineInline]
    actions = ["regenerate", "finalize", "send", "mark_paid", "void"]
    fieldsets = [
        (None, {"fields": ["client", "month_name", "kind", "status", "number", "replaces"]}),
        ("Dates", {"fields": ["issue_date", "due_date", "generated_at", "finalized_at",
                              "sent_at", "paid_on", "paid_at", "voided_at"]}),
        ("Money", {"fields": ["raw_cost", "markup", "subtotal", "tax_rate", "tax", "total",
                              "unpriced_events"]}),
        ("Client details", {"fields": ["client_name", "billing_name", "billing_email",
                                       "billing_address", "billing_tax_id", "invoice_note",
                                       "show_pricing_details", "show_markup",
                                       "split_by_project"]}),
        ("Agency details", {"fields": ["agency_name", "agency_address", "agency_tax_id",
                                       "agency_email", "payment_terms_days",
                                       "payment_instructions"]}),
        ("Document", {"fields": ["pdf_file", "pdf_sha256", "void_reason"]}),
    ]  # fmt: skip

    month_name = month()
    issued = day("issue_date", "issue date")
    due = day("due_date", "due date")
    raw_cost = usd("raw_cost_usd", "raw cost", exact=True)
    markup = pct("markup_pct", "markup")
    tax_rate = pct("tax_rate_pct", "tax rate")
    subtotal = usd("subtotal_usd", "subtotal")
    tax = usd("tax_usd", "tax")
    total = usd("total_usd", "total")

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [str(f) for _, options in self.fieldsets for f in options["fields"]]

    @admin.display(description="invoice", ordering="number")
    def number_or_draft(self, obj: Invoice) -> str:
        # Numbers never wrap: INV-2026-00001 broken at its hyphens reads as three values.
        return nowrap(obj.number or "Draft")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Invoice | None = None) -> bool:
        # Only a draft may be deleted; an issued invoice is voided instead.
        return obj is None or obj.is_draft

    @admin.display(description="PDF")
    def pdf_link(self, obj: Invoice) -> str:
        url = reverse("invoice_pdf", kwargs={"slug": obj.client.slug, "pk": obj.pk})
        return format_html('<a href="{}">PDF</a>', url)

    @admin.display(description="PDF")
    def pdf_file(self, obj: Invoice) -> str:
        # Private storage has no URL: link to the permission-checked download view.
        url = reverse("invoice_pdf", kwargs={"slug": obj.client.slug, "pk": obj.pk})
        label = obj.pdf.name or "preview (rendered now, marked DRAFT)"
        return format_html('<a href="{}">{}</a>', url, label)

    def _each(
        self, request: HttpRequest, queryset: QuerySet[Invoice], verb: str, call: Any
    ) -> None:
        done = 0
        for invoice in queryset.order_by("month", "client__name"):
            try:
                call(invoice)
            except InvoiceError as exc:
                self.message_user(request, f"{invoice}: {exc}", messages.WARNING)
            else:
                done += 1
        self.message_user(request, f"{done} invoice(s) {verb}.")

    @admin.action(description="Regenerate the selected drafts from current usage")
    def regenerate(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        rollups_refresh()
        self._each(
            request, queryset, "regenerated",
            lambda inv: invoice_generate(client_id=inv.client_id, month=inv.month),
        )  # fmt: skip

    @admin.action(description="Finalize the selected drafts…")
    def finalize(
        self, request: HttpRequest, queryset: QuerySet[Invoice]
    ) -> TemplateResponse | None:
        # Irreversible (a number is used, the invoice frozen): a page to confirm first.
        if "confirm" in request.POST:
            self._each(
                request, queryset, "finalized", lambda inv: invoice_finalize(invoice_id=inv.pk)
            )
            return None
        return self._confirm(request, queryset, "finalize", "Finalize invoices")

    @admin.action(description="Email the selected invoices to the client's billing address")
    def send(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        self._each(request, queryset, "sent", lambda inv: invoice_send(invoice_id=inv.pk))

    @admin.action(description="Mark the selected invoices paid…")
    def mark_paid(
        self, request: HttpRequest, queryset: QuerySet[Invoice]
    ) -> TemplateResponse | None:
        # Asks the day the payment was received: it is printed ("Paid on …").
        if "confirm" in request.POST:
            try:
                paid_on = date.fromisoformat(request.POST.get("paid_on", ""))
            except ValueError:
                self.message_user(request, "Give the day the payment was received.", messages.ERROR)
                return None
            self._each(
                request, queryset, "marked paid",
                lambda inv: invoice_mark_paid(invoice_id=inv.pk, paid_on=paid_on),
            )  # fmt: skip
            return None
        return self._confirm(request, queryset, "mark_paid", "Mark invoices paid")

    def _confirm(
        self, request: HttpRequest, queryset: QuerySet[Invoice], action: str, title: str
    ) -> TemplateResponse:
        invoices = queryset.select_related("client").order_by("month", "client__name")
        return TemplateResponse(
            request,
            f"admin/billing/invoice/{action}_confirm.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "rows": [
                    (inv, f"{inv.month:%B %Y}", format_usd(inv.total_usd)) for inv in invoices
                ],
                "today": today(),
                "action": action,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Void the selected invoices…")
    def void(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> TemplateResponse | None:
        reason = request.POST.get("void_reason", "").strip()
        if "confirm" in request.POST and reason:
            self._each(
                request, queryset, "voided",
                lambda inv: invoice_void(invoice_id=inv.pk, reason=reason),
            )  # fmt: skip
            return None
        return self._confirm(request, queryset, "void", "Void invoices")


# --- month-end runs -----------------------------------------------------------------------


@admin.register(MonthEndRun)
class MonthEndRunAdmin(admin.ModelAdmin):
    """Each month-end drafting run: an unfinished one that is not running any more is
    finished by the daily job (``invoices_finalize_due_task``); nothing here changes a run."""

    list_display = ["month_name", "state", "started_at", "finished_at", "attempts"]
    month_name = month()

    @admin.display(description="state")
    def state(self, obj: MonthEndRun) -> str:
        return "finished" if obj.finished_at else "unfinished"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
