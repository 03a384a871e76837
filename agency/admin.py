from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse
from simple_history.admin import SimpleHistoryAdmin

from agency.admin_display import TEXTAREA_OVERRIDES, pct, usd
from agency.models import AgencyProfile, Client, ClientMembership, Project


class HistoryAdmin(SimpleHistoryAdmin):
    """SimpleHistoryAdmin whose history page answers 404 for an id that is not one (its
    own filters by the raw text: a 500), as admin's other pages of one object do."""

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        try:
            self.model._meta.pk.to_python(unquote(object_id))
        except ValidationError:
            raise Http404("No such object") from None
        return super().history_view(request, object_id, extra_context)


class ProjectInline(admin.TabularInline):
    model = Project
    extra = 0
    fields = ["name", "description"]


class MembershipInline(admin.TabularInline):
    model = ClientMembership
    extra = 0
    autocomplete_fields = ["user"]
    verbose_name = "client user"
    verbose_name_plural = "client users (read-only access to this client only)"


@admin.register(Client)
class ClientAdmin(HistoryAdmin):
    list_display = ["name", "slug", "markup", "monthly_budget", "billing_email", "active"]
    list_filter = ["active"]
    search_fields = ["name", "slug", "billing_email"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [ProjectInline, MembershipInline]
    history_list_display = ["markup_pct", "monthly_budget_usd"]
    # A webhook typed without a scheme is an https one (Django 6's default, asked for now).
    formfield_overrides: dict[type[models.Field[Any, Any]], dict[str, Any]] = {
        models.URLField: {"assume_scheme": "https"},
        **TEXTAREA_OVERRIDES,
    }
    fieldsets = [
        (None, {"fields": ["name", "slug", "active", "currency"]}),
        ("Money", {"fields": ["markup_pct", "monthly_budget_usd"]}),
        (
            "Billing details",
            {"fields": ["billing_name", "billing_email", "billing_address", "billing_tax_id"]},
        ),
        (
            "Invoices",
            {
                "fields": [
                    "invoice_split_by_project",
                    "show_pricing_details",
                    "invoice_show_markup",
                    "tax_rate_pct",
                    "tax_label",
                    "invoice_note",
                ]
            },
        ),
        ("Alerts", {"fields": ["alert_thresholds", "alert_billing_contact", "slack_webhook_url"]}),
    ]

    markup = pct("markup_pct", "markup")
    monthly_budget = usd("monthly_budget_usd", "monthly budget")

    def get_readonly_fields(self, request, obj=None):
        # USD only for now: invoices and rates are in USD.
        return ["currency"]

    def save_model(self, request, obj, form, change):
        # django-simple-history records every save(); saving the form as it came (say,
        # to edit only a project inline) would add a history row that changes nothing.
        if change and not form.has_changed():
            return
        super().save_model(request, obj, form, change)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "client", "created_at"]
    list_filter = ["client"]
    search_fields = ["name", "client__name"]


@admin.register(ClientMembership)
class ClientMembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "client"]
    list_filter = ["client"]
    autocomplete_fields = ["user"]


@admin.register(AgencyProfile)
class AgencyProfileAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "payment_terms_days"]
    formfield_overrides = TEXTAREA_OVERRIDES

    def has_add_permission(self, request):
        return not AgencyProfile.objects.exists()
