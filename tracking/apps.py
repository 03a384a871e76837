from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_delete


class TrackingConfig(AppConfig):
    name = "tracking"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tracking.keys import api_key_deleted

        post_delete.connect(api_key_deleted, sender="tracking.ApiKey", weak=False)

        # The provider-account admin and the client admin's usage source (agency cannot
        # import tracking, so they are added from here).
        from tracking.admin_accounts import register

        register()
