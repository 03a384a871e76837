from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Min, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from agency.admin import HistoryAdmin
from agency.admin_display import TEXTAREA_OVERRIDES
from tracking.keys import ApiKeyError, api_key_create, api_key_revoke, api_key_rotate
from tracking.models import (
    ApiKey,
    ModelRate,
    ProviderReportRow,
    ProviderSyncRun,
    SyncStatus,
    UsageEvent,
)
from tracking.rates import rate_price_warnings


class ModelRateForm(forms.ModelForm):
    """The loader's sanity check in admin: a price more than 10× off the model's previous
    row or the reference price is refused until the "save anyway" box is ticked."""

    confirm_prices = forms.BooleanField(
        required=False,
        label="Save anyway",
        help_text="Tick to save prices more than 10× off the previous row or the reference.",
    )

    class Meta:
        model = ModelRate
        # The admin's fieldsets choose the fields shown; these are the editable ones.
        fields = [
            f.name for f in ModelRate._meta.concrete_fields if f.editable and not f.primary_key
        ]

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if self.errors or data.get("confirm_prices"):
            return data
        fields = {name: data.get(name) for name in data}
        previous = (
            ModelRate.objects.filter(
                provider=data.get("provider"),
                model=data.get("model"),
                effective_from__lt=data.get("effective_from"),
            )
            .exclude(pk=self.instance.pk)
            .order_by("-effective_from")
            .values()
            .first()
        )
        warnings = rate_price_warnings(fields, previous=previous)
        if warnings:
            raise forms.ValidationError(
                [f"{w}." for w in warnings]
                + ["If these prices are right, tick “Save anyway” and save again."]
            )
        return data


@admin.register(ModelRate)
class ModelRateAdmin(HistoryAdmin):
    form = ModelRateForm
    # Notes keep their line breaks as typed: no phantom edits in the rate's history.
    formfield_overrides = TEXTAREA_OVERRIDES
    list_display = [
        "model", "provider", "effective_from", "in_force", "aliases", "input", "output",
        "cache_write_5m", "cache_write_1h", "cache_read", "long_context_threshold",
    ]  # fmt: skip
    list_filter = ["provider"]
    # Searching a dated id such as claude-sonnet-4-5-20250929 finds the row that has it
    # as an alias: how a model id resolves is visible here.
    search_fields = ["model", "aliases", "display_name"]
    history_list_display = ["input_usd_per_mtok", "output_usd_per_mtok", "cache_read_usd_per_mtok"]
    fieldsets = [
        (None, {"fields": ["provider", "model", "display_name", "aliases", "effective_from"]}),
        (
            "USD per million tokens",
            {"fields": [
                "input_usd_per_mtok", "output_usd_per_mtok", "cache_write_5m_usd_per_mtok",
                "cache_write_1h_usd_per_mtok", "cache_read_usd_per_mtok",
            ]},
        ),
        (
            "Long context (whole request above the threshold)",
            {"fields": [
                "long_context_threshold", "long_context_input_usd_per_mtok",
                "long_context_output_usd_per_mtok", "long_context_cache_write_5m_usd_per_mtok",
                "long_context_cache_write_1h_usd_per_mtok", "long_context_cache_read_usd_per_mtok",
            ]},
        ),
        (
            "Modifiers",
            {"fields": [
                "batch_discount_pct", "web_search_usd_per_1k", "us_inference_multiplier",
                "fast_multiplier",
            ]},
        ),
        (None, {"fields": ["notes", "confirm_prices"]}),
    ]  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelRate]:
        # The day the next row of the same model takes over: this row's last day + 1.
        later = ModelRate.objects.filter(
            provider=OuterRef("provider"),
            model=OuterRef("model"),
            effective_from__gt=OuterRef("effective_from"),
        ).order_by("effective_from")
        return (
            super()
            .get_queryset(request)
            .annotate(superseded_from=Subquery(later.values("effective_from")[:1]))
        )

    @admin.display(description="in force")
    def in_force(self, rate: ModelRate) -> str:
        """Current, superseded (a later row of the model has taken over) or future; in
        UTC days, as effective_from is."""
        today = datetime.now(UTC).date()
        superseded_from: date | None = getattr(rate, "superseded_from", None)
        if rate.effective_from > today:
            return format_html(
                '<span style="color: #6b7280">from {}</span>', _day(rate.effective_from)
            )
        if superseded_from is not None and superseded_from <= today:
            return format_html(
                '<span style="color: #9a5b00; white-space: nowrap">superseded {}</span>',
                _day(superseded_from),
            )
        return format_html('<strong style="color: {}">current</strong>', "#146c3a")

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, object]:
        """``?provider=…&model=…`` (the unpriced-usage warning links here) fills in the
        model, and the day its first unpriced call happened, so the new row prices them."""
        initial = super().get_changeform_initial_data(request)
        if initial.get("model") and "effective_from" not in initial:
            first = UsageEvent.objects.filter(
                provider=initial.get("provider", ""), model=initial["model"], cost_usd__isnull=True
            ).aggregate(first=Min("occurred_at"))["first"]
            if first is not None:
                initial["effective_from"] = first.astimezone(UTC).date()
        return initial

    @admin.display(description="input $/MTok", ordering="input_usd_per_mtok")
    def input(self, rate: ModelRate) -> str:
        return _per_mtok(rate.input_usd_per_mtok)

    @admin.display(description="output $/MTok", ordering="output_usd_per_mtok")
    def output(self, rate: ModelRate) -> str:
        return _per_mtok(rate.output_usd_per_mtok)

    @admin.display(description="5m write", ordering="cache_write_5m_usd_per_mtok")
    def cache_write_5m(self, rate: ModelRate) -> str:
        return _per_mtok(rate.cache_write_5m_usd_per_mtok)

    @admin.display(description="1h write", ordering="cache_write_1h_usd_per_mtok")
    def cache_write_1h(self, rate: ModelRate) -> str:
        return _per_mtok(rate.cache_write_1h_usd_per_mtok)

    @admin.display(description="cache read", ordering="cache_read_usd_per_mtok")
    def cache_read(self, rate: ModelRate) -> str:
        return _per_mtok(rate.cache_read_usd_per_mtok)


def _day(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def _per_mtok(price: Decimal | None) -> str:
    """A rate as people read it: 3.00, 0.30, 0.075 (never 0.075000000)."""
    if price is None:
        return "-"
    exponent = price.normalize().as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    return f"{price:.{places}f}"


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin):
    list_display = [
        "event_id", "client", "project", "model", "resolved_as", "occurred_at",
        "input_tokens", "output_tokens", "cost_usd", "pricing_status",
    ]  # fmt: skip
    list_filter = ["pricing_status", "provider", "client", "needs_review", "priced_at_list"]
    search_fields = ["event_id", "model", "request_id", "prompt_hash"]
    date_hierarchy = "occurred_at"
    list_select_related = ["client", "project", "rate"]
    show_full_result_count = False

    @admin.display(description="priced as")
    def resolved_as(self, obj: UsageEvent) -> str:
        return obj.rate.model if obj.rate_id and obj.rate else "—"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# Session entry holding keys just created, until the page that shows them once.
_CREATED_SESSION_KEY = "tracking_apikeys_created"


@admin.register(ApiKey)
class ApiKeyAdmin(HistoryAdmin):
    """Keys are created through ``api_key_create``; the full key is shown once, on the page
    that follows the add form, and is stored nowhere."""

    list_display = ["name", "prefix", "client", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["client"]
    search_fields = ["name", "prefix"]
    readonly_fields = [
        "prefix",
        "key_hash",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke", "rotate"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "client"]
        return ["name", "client", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        # A key's client decides what it may post: it never changes after creation.
        return [*self.readonly_fields, "client"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        created, raw_key = api_key_create(name=obj.name, client=obj.client, created_by=request.user)
        obj.__dict__.update(created.__dict__)
        obj.raw_key = raw_key

    def response_add(self, request, obj, post_url_continue=None):
        return self._show_once(request, [(obj, obj.raw_key)])

    def get_urls(self):
        created = self.admin_site.admin_view(self.created_view)
        return [
            path("created/", created, name="tracking_apikey_created"),
            *super().get_urls(),
        ]

    def _show_once(self, request, created):
        # POST/redirect/GET: the new keys wait in the session for the one page that shows
        # them, so reloading that page never posts the form again (no second key) and
        # never shows the key again either.
        request.session[_CREATED_SESSION_KEY] = [(key.pk, raw) for key, raw in created]
        return HttpResponseRedirect(reverse("admin:tracking_apikey_created"))

    def created_view(self, request):
        pending = request.session.pop(_CREATED_SESSION_KEY, [])
        keys = ApiKey.objects.select_related("client").in_bulk([pk for pk, _ in pending])
        created = [(keys[pk], raw) for pk, raw in pending if pk in keys]
        title = "API key created" if len(created) == 1 else "API keys created"
        return TemplateResponse(
            request,
            "admin/tracking/apikey/key_created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "created": created,
                "title": title if created else "API key already shown",
                "site_url": settings.SITE_URL,
            },
        )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        keys = list(queryset.filter(revoked_at__isnull=True))
        for key in keys:
            api_key_revoke(key=key)
        self.message_user(request, f"Revoked {len(keys)} key(s).")

    @admin.action(description="Rotate selected keys (new keys shown once; old ones stop at once)")
    def rotate(self, request, queryset):
        created = []
        for key in queryset.select_related("client"):
            try:
                created.append(api_key_rotate(key=key, created_by=request.user))
            except ApiKeyError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if not created:
            return None
        return self._show_once(request, created)


class _ReadOnlyAdmin(admin.ModelAdmin):
    """Written only by the provider report sync: admin shows, never edits."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ProviderSyncRun)
class ProviderSyncRunAdmin(_ReadOnlyAdmin):
    list_display = [
        "started_at", "provider", "since", "until", "trigger", "outcome", "pages", "rows",
        "duration", "error_summary",
    ]  # fmt: skip
    list_filter = ["status", "provider", "trigger"]
    date_hierarchy = "started_at"

    @admin.display(description="status", ordering="status")
    def outcome(self, obj: ProviderSyncRun) -> str:
        # A failed run is the one thing to see on this list: a gap in the provider's figures.
        if obj.status == SyncStatus.FAILED:
            return format_html('<strong style="color:#ba2121">{}</strong>', "✖ failed")
        return obj.get_status_display()

    @admin.display(description="took")
    def duration(self, obj: ProviderSyncRun) -> str:
        if obj.finished_at is None:
            return "—"
        return f"{(obj.finished_at - obj.started_at).total_seconds():.1f} s"

    @admin.display(description="error")
    def error_summary(self, obj: ProviderSyncRun) -> str:
        return obj.error if len(obj.error) <= 160 else f"{obj.error[:160]}…"


@admin.register(ProviderReportRow)
class ProviderReportRowAdmin(_ReadOnlyAdmin):
    list_display = [
        "day", "provider", "model", "api_key_id", "workspace_id", "service_tier",
        "context_window", "inference_geo", "speed", "batch", "input_tokens",
        "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens", "output_tokens",
        "web_search_requests", "requests", "amount_cents", "list_amount_cents",
    ]  # fmt: skip
    list_filter = ["provider", "service_tier", "inference_geo", "speed", "batch"]
    search_fields = ["model", "api_key_id", "workspace_id"]
    date_hierarchy = "day"
    # A month of a large organization is hundreds of thousands of rows: no full count.
    show_full_result_count = False
