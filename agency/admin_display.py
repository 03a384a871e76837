"""Admin columns and read-only fields as people read them: money with thousands
separators and no trailing zeros, percentages without ``.00``, months as "November 2026".

Django's admin shows a DecimalField at its full scale (``0.007500000000000``) and a month
as its first day (``Nov. 1, 2026``). Each helper returns a display callable to set on a
ModelAdmin (or inline) class and name in ``list_display``, ``readonly_fields`` or
fieldsets in place of the raw field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin
from django.db import models
from django.utils.html import format_html

from agency.money import format_pct, format_usd, format_usd_exact

Display = Callable[[Any, Any], str]


def usd(field: str, description: str, *, exact: bool = False) -> Display:
    """A USD amount: rounded to the cent (``$1,234.50``) or, ``exact``, every digit
    (``$0.0075``) for full-precision costs."""
    show = format_usd_exact if exact else format_usd

    @admin.display(description=description, ordering=field)
    def display(self: Any, obj: Any) -> str:
        return show(getattr(obj, field))

    return display


def pct(field: str, description: str) -> Display:
    @admin.display(description=description, ordering=field)
    def display(self: Any, obj: Any) -> str:
        return format_pct(getattr(obj, field))

    return display


def month(field: str = "month", description: str = "month") -> Display:
    @admin.display(description=description, ordering=field)
    def display(self: Any, obj: Any) -> str:
        value = getattr(obj, field)
        return "—" if value is None else nowrap(f"{value:%B %Y}")

    return display


def day(field: str, description: str) -> Display:
    """A date as the invoice prints it: ``20 Nov 2026``, on one line."""

    @admin.display(description=description, ordering=field)
    def display(self: Any, obj: Any) -> str:
        value = getattr(obj, field)
        return "—" if value is None else nowrap(f"{value.day} {value:%b %Y}")

    return display


def nowrap(text: str) -> str:
    """Text that never wraps in a table cell (invoice numbers, money)."""
    return format_html('<span style="white-space: nowrap">{}</span>', text)


class MonthFilter(admin.SimpleListFilter):
    """Filter by a month column, its choices written "November 2026", newest first."""

    title = "month"
    parameter_name = "month"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        months = (
            model_admin.get_queryset(request).order_by("-month").values_list("month", flat=True)
        )
        return [(f"{m:%Y-%m-%d}", f"{m:%B %Y}") for m in dict.fromkeys(months)]

    def queryset(self, request: Any, queryset: Any) -> Any:
        value = self.value()
        return queryset.filter(month=value) if value else queryset


class TextareaField(forms.CharField):
    """A textarea's text with the line breaks it was stored with.

    Browsers submit a textarea's line breaks as CRLF; stored as typed, every save of an
    unchanged address would look like an edit (a phantom row in the client's history) and
    change what invoices print. Plain ``\\n`` it is, as the data was entered elsewhere.
    """

    def to_python(self, value: Any) -> str | None:
        text = super().to_python(value)
        return text.replace("\r\n", "\n").replace("\r", "\n") if text else text


# ModelAdmin.formfield_overrides for every text field edited in admin.
TEXTAREA_OVERRIDES: dict[type[models.Field[Any, Any]], dict[str, Any]] = {
    models.TextField: {"form_class": TextareaField}
}
