from __future__ import annotations

from django.urls import path

from billing.views import dashboard, invoices, reconciliation

urlpatterns = [
    path("overview/", dashboard.overview, name="overview"),
    path("overview.csv", dashboard.overview_csv, name="overview_csv"),
    path("alerts/", dashboard.alerts_page, name="alerts"),
    path("reconciliation/", reconciliation.reconciliation, name="reconciliation"),
    path("clients/<slug:slug>/", dashboard.client_detail, name="client_detail"),
    path("clients/<slug:slug>/top/", dashboard.client_top_lists, name="client_top_lists"),
    path("clients/<slug:slug>/invoices/<int:pk>.pdf", invoices.invoice_pdf, name="invoice_pdf"),
    path(
        "clients/<slug:slug>/invoices/<int:pk>.csv",
        invoices.invoice_lines_csv,
        name="invoice_lines_csv",
    ),
    path(
        "clients/<slug:slug>/invoices/<int:pk>/events.csv",
        invoices.invoice_events_csv,
        name="invoice_events_csv",
    ),
    path(
        "clients/<slug:slug>/usage/<str:month>.csv",
        invoices.usage_month_csv,
        name="usage_month_csv",
    ),
]
