from __future__ import annotations

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: the app registry must be ready before models load.
        from billing.signals import alert_deliveries_created
        from billing.tasks import alert_deliveries_enqueue, budgets_recompute_soon
        from tracking.signals import usage_recorded

        # New usage → one debounced budget recompute (tracking never imports billing).
        usage_recorded.connect(budgets_recompute_soon, dispatch_uid="billing-budgets-recompute")
        # New alert deliveries → their send tasks (the services never import the tasks).
        alert_deliveries_created.connect(
            alert_deliveries_enqueue, dispatch_uid="billing-alert-deliveries-enqueue"
        )
