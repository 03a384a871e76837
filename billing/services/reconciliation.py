"""Reconciliation alerts: a month's coverage below the threshold, a model's rate drifting.

Delivered exactly like budget alerts (``billing.services.alerts.alert_fire``): one
``Alert`` row, unique per month, kind, threshold and key, so each fires once even with
concurrent workers, and one delivery per destination sent by a task after commit. They
are the agency's own (no client): they go to the agency's email and Slack only.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_FLOOR, Decimal

from django.conf import settings

from agency.money import format_usd
from billing.models import Alert, AlertKind
from billing.selectors.reconciliation import (
    DRIFT_LIMIT_PCT,
    ModelFigures,
    Reconciliation,
    reconciliation_for,
)
from billing.services.alerts import alert_fire

ONE_PLACE = Decimal("0.1")


def _recon_url(month: date) -> str:
    return f"{settings.SITE_URL}/reconciliation/?month={month:%Y-%m}"


def _coverage_alert(data: Reconciliation, threshold: Decimal, now: datetime) -> Alert:
    total = data.total
    coverage = total.coverage_pct or Decimal(0)
    label = data.month.strftime("%B %Y")
    subject = (
        f"Reconciliation: tracked {coverage.quantize(ONE_PLACE)}% of the provider's "
        f"{label} spend (threshold {threshold}%)"
    )
    text = (
        f"The provider reported {format_usd(total.provider_cost_usd)} for {label}; "
        f"ClientMeter tracked {format_usd(total.tracked_cost_usd)} of it "
        f"({coverage.quantize(ONE_PLACE)}%, threshold {threshold}%). Untracked: "
        f"{format_usd(total.untracked_cost_usd)}: spend that bypassed the meter (an API "
        f"key not sending events, a client not tagged).\n{_recon_url(data.month)}"
    )
    return Alert(
        client=None,
        month=data.month,
        kind=AlertKind.RECON_COVERAGE,
        threshold=int(threshold.to_integral_value(rounding=ROUND_FLOOR)),
        key=f"coverage<{threshold}",
        billed_usd=total.tracked_cost_usd,
        projected_billed_usd=total.provider_cost_usd,
        subject=subject,
        message=text,
        created_at=now,
    )


def _drift_alert(data: Reconciliation, model: ModelFigures, now: datetime) -> Alert:
    f = model.figures
    drift = (f.drift_pct or Decimal(0)).quantize(Decimal("0.01"))
    label = data.month.strftime("%B %Y")
    subject = f"Reconciliation: {model.model} priced {drift:+}% off the provider's list price"
    text = (
        f"For {model.model} ({model.provider}) in {label}, our rate table prices the "
        f"provider's tokens at {format_usd(f.our_price_usd)} where the provider's list "
        f"amount is {format_usd(f.list_cost_usd)} ({drift:+}%, limit ±{DRIFT_LIMIT_PCT}%). "
        "A rate row is wrong or stale: check the model rate table.\n"
        f"{_recon_url(data.month)}"
    )
    return Alert(
        client=None,
        month=data.month,
        kind=AlertKind.RECON_DRIFT,
        threshold=0,
        key=f"{model.provider}:{model.model}"[:200],
        billed_usd=f.our_price_usd,
        projected_billed_usd=f.list_cost_usd,
        subject=subject,
        message=text,
        created_at=now,
    )


def recon_alerts_evaluate(*, month: date, now: datetime) -> list[Alert]:
    """Fire the month's reconciliation alerts that have not fired yet: coverage below
    ``settings.RECON_COVERAGE_ALERT_PCT`` (once per month and threshold) and each
    drifting model (once per month and model). A month without a report fires nothing.
    Returns the alerts this call fired. Safe to run twice or concurrently."""
    data = reconciliation_for(month)
    if not data.has_report:
        return []
    candidates = []
    threshold = settings.RECON_COVERAGE_ALERT_PCT
    coverage = data.total.coverage_pct
    if coverage is not None and coverage < threshold:
        candidates.append(_coverage_alert(data, threshold, now))
    candidates.extend(_drift_alert(data, model, now) for model in data.drifting_models)
    existing = set(Alert.objects.filter(client=None, month=data.month).values_list("kind", "key"))
    return [
        alert
        for alert in candidates
        if (alert.kind, alert.key) not in existing and alert_fire(alert, deliver=True, now=now)
    ]
