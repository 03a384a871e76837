from __future__ import annotations

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing.tasks import budgets_recompute_soon
        from tracking.signals import usage_recorded

        # New usage → one debounced budget recompute (tracking never imports billing).
        usage_recorded.connect(budgets_recompute_soon, dispatch_uid="billing-budgets-recompute")
