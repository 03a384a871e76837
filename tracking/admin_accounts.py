"""Admin for provider accounts and a client's usage source.

``agency`` may not import ``tracking``, so the client admin's additions live here: the
client admin is re-registered as a subclass of ``agency.admin.ClientAdmin`` with the
usage-source field, its provider API keys and workspaces inline, and the switching rule.
Imported by ``TrackingConfig.ready``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from agency.admin import ClientAdmin, HistoryAdmin
from agency.models import Client, UsageSource
from tracking.models import ProviderAccount
from tracking.report_usage import usage_source_switch_problem

EVENTS_ONLY_WARNING = (
    "{client} is metered from its own events: the report rows of {account} count in the "
    "reconciliation only, never as {client}'s usage (switch its usage source to the "
    "provider report for that)."
)


class ClientUsageSourceForm(forms.ModelForm):
    """The client form, refusing a switch to the provider report that would count a day
    from both sources (``usage_source_switch_problem``)."""

    class Meta:
        model = Client
        # Admin builds the form from the fieldsets; declared here is only the field this
        # form checks (all fields would build the webhook field without admin's overrides).
        fields = ["usage_source"]

    def clean_usage_source(self) -> str:
        value: str = self.cleaned_data["usage_source"]
        stored = (
            Client.objects.filter(pk=self.instance.pk)
            .values_list("usage_source", flat=True)
            .first()
            if self.instance.pk
            else None
        )
        if value == UsageSource.PROVIDER_REPORT and stored != UsageSource.PROVIDER_REPORT:
            problem = usage_source_switch_problem(self.instance)
            if problem:
                raise forms.ValidationError(problem)
        return value


class ProviderAccountInline(admin.TabularInline):
    model = ProviderAccount
    extra = 0
    fields = ["provider", "kind", "external_id", "label"]
    verbose_name = "provider API key or workspace"
    verbose_name_plural = (
        "provider API keys and workspaces (their report rows are this client's usage when "
        "its usage source is the provider report)"
    )


class ReportClientAdmin(ClientAdmin):
    form = ClientUsageSourceForm
    inlines = [*ClientAdmin.inlines, ProviderAccountInline]
    fieldsets = [
        *ClientAdmin.fieldsets,
        ("Usage source", {"fields": ["usage_source"]}),
    ]
    list_display = [*ClientAdmin.list_display, "usage_source"]
    list_filter = [*ClientAdmin.list_filter, "usage_source"]


class ProviderAccountForm(forms.ModelForm):
    class Meta:
        model = ProviderAccount
        fields = ["provider", "kind", "external_id", "client", "label"]


class ProviderAccountAdmin(HistoryAdmin):
    form = ProviderAccountForm
    list_display = ["external_id", "kind", "provider", "client", "source", "label", "created_at"]
    list_filter = ["provider", "kind", "client__usage_source", "client"]
    search_fields = ["external_id", "label", "client__name", "client__slug"]
    list_select_related = ["client"]
    autocomplete_fields = ["client"]

    @admin.display(description="client's usage source", ordering="client__usage_source")
    def source(self, obj: ProviderAccount) -> str:
        return obj.client.get_usage_source_display()

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if obj.client.usage_source != UsageSource.PROVIDER_REPORT:
            warning = EVENTS_ONLY_WARNING.format(client=obj.client, account=obj.external_id)
            self.message_user(request, warning, messages.WARNING)


def register() -> None:
    """Register the provider-account admin and the client admin with its additions."""
    if admin.site.is_registered(ProviderAccount):
        return
    admin.site.register(ProviderAccount, ProviderAccountAdmin)
    if admin.site.is_registered(Client):
        admin.site.unregister(Client)
    admin.site.register(Client, ReportClientAdmin)
