from __future__ import annotations

from django.urls import path

from tracking import api

urlpatterns = [
    path("usage", api.usage_create, name="api-usage"),
    path("openapi.json", api.openapi_json, name="api-openapi"),
]
