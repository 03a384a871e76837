from __future__ import annotations

from django.apps import AppConfig
from django.db.backends.signals import connection_created


class AgencyConfig(AppConfig):
    name = "agency"
    verbose_name = "Agency"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agency.db import register_sqlite_functions

        connection_created.connect(register_sqlite_functions)
