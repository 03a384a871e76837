"""Every field label admin shows is spelled as people write it: "US inference multiplier",
"tax ID", "cost (USD)", "PDF", never "Us", "usd", "id", "pct", "url" from a column name."""

from __future__ import annotations

import re

from django.contrib import admin
from django.utils.text import capfirst

MISSPELT = re.compile(r"\b(Us|usd|Usd|id|Id|pct|Pct|url|Url|pdf|Pdf|sha|Sha|sha256|mtok)\b")


def test_admin_field_labels_are_spelled_right():
    wrong = []
    models = set(admin.site._registry)
    for model_admin in admin.site._registry.values():
        models |= {inline.model for inline in model_admin.inlines}
    for model in models:
        if model._meta.app_label not in {"agency", "tracking", "billing"}:
            continue  # third-party apps (django-axes) label their own
        for field in model._meta.concrete_fields:
            label = str(capfirst(field.verbose_name))
            if MISSPELT.search(label):
                wrong.append(f"{model.__name__}.{field.name}: {label!r}")
    assert wrong == [], "\n".join(wrong)
