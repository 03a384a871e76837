from __future__ import annotations

from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

import billing.api
from agency import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(extra_context=views.login_failure_policy()),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/budget", billing.api.budget, name="api-budget"),
    path("api/v1/reconciliation", billing.api.reconciliation, name="api-reconciliation"),
    path("api/v1/", include("tracking.urls")),
    path("", include("billing.urls")),
]
handler500 = "agency.views.server_error"
if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
