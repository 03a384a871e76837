"""Budget alerts: decide which fire, record each once, deliver by email and webhook.

An alert fires once per (client, month, kind, threshold, key), enforced by the database:
the worker whose INSERT wins delivers it; a concurrent worker's INSERT fails on the
unique constraint and it moves on. Deliveries are rows (one per destination) sent by a
Celery task after commit, so a slow or failing destination never blocks a recompute, let
alone ingest; their status moves by conditional UPDATEs and failures are retried.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from agency.calendar import local_time, month_start
from agency.models import Client
from agency.money import ONE_HUNDRED, format_usd
from billing.models import (
    Alert,
    AlertDelivery,
    AlertKind,
    DeliveryChannel,
    DeliveryStatus,
    HourlyRollup,
)
from billing.selectors.budgets import PROJECTION_MIN_HOURS, BudgetPosition
from billing.signals import alert_deliveries_created

logger = logging.getLogger(__name__)

# The anomaly baseline: trailing 14 days of hourly spend; it needs a week of history and
# an hour worth noticing, or a client's first dollar would be "infinite sigma".
BASELINE_DAYS = 14
BASELINE_MIN_HISTORY = timedelta(days=7)
ANOMALY_MIN_HOUR_USD = Decimal("1")
MAX_ATTEMPTS = 6
# A delivery stuck in "sending" this long was lost with its worker: it may be claimed again.
SENDING_TIMEOUT = timedelta(minutes=10)
WEBHOOK_TIMEOUT_SECONDS = 10
HOUR = timedelta(hours=1)


class AlertDeliveryError(Exception):
    """A destination refused or could not be reached; the delivery will be retried."""


def client_url(client: Client) -> str:
    return f"{settings.SITE_URL}/clients/{client.slug}/"


def _pct(value: Decimal | None) -> str:
    return "—" if value is None else f"{value:.1f}%"


def _month_label(position: BudgetPosition) -> str:
    return position.month.strftime("%B %Y")


def _unknown(position: BudgetPosition) -> str:
    if not position.unpriced_events:
        return ""
    return (
        f"\n{position.unpriced_events:,} events have no price yet (unknown spend): "
        "the real amount is higher."
    )


def budget_message(
    client: Client, position: BudgetPosition, kind: str, threshold: int
) -> tuple[str, str]:
    """Subject and text of a threshold alert: who, how much, which threshold, the
    projection and a link. Billed amounts only, so it can go to the client as is."""
    budget = format_usd(position.budget_usd)
    billed = format_usd(position.billed_usd)
    projected = format_usd(position.projected_billed_usd)
    if kind == AlertKind.ACTUAL:
        subject = f"{client.name} reached {threshold}% of its {_month_label(position)} budget"
        lead = (
            f"{client.name} has been billed {billed} of its {budget} budget for "
            f"{_month_label(position)} ({_pct(position.percent_used)}, threshold {threshold}%)."
        )
    else:
        subject = (
            f"{client.name} is projected to reach {threshold}% of its "
            f"{_month_label(position)} budget"
        )
        lead = (
            f"At its current burn rate {client.name} will be billed about {projected} for "
            f"{_month_label(position)}, {_pct(position.projected_percent)} of its {budget} "
            f"budget (threshold {threshold}%). Billed so far: {billed} "
            f"({_pct(position.percent_used)})."
        )
    text = (
        f"{lead}\nProjected month-end: {projected} ({_pct(position.projected_percent)}), "
        f"after {position.elapsed_hours} of {position.month_hours} hours."
        f"{_unknown(position)}\n{client_url(client)}"
    )
    return subject, text


def _targets(client: Client | None) -> list[tuple[str, str]]:
    """Where an alert goes: the agency's channels, plus the client's own for a client's
    alert (an agency-wide alert, ``client`` None, stays with the agency)."""
    targets: list[tuple[str, str]] = []
    if settings.AGENCY_ALERT_EMAILS:
        targets.append((DeliveryChannel.EMAIL, ", ".join(settings.AGENCY_ALERT_EMAILS)))
    if client is not None and client.alert_billing_contact and client.billing_email:
        targets.append((DeliveryChannel.EMAIL, client.billing_email))
    if settings.AGENCY_SLACK_WEBHOOK_URL:
        targets.append((DeliveryChannel.SLACK, settings.AGENCY_SLACK_WEBHOOK_URL))
    if client is not None and client.slack_webhook_url:
        targets.append((DeliveryChannel.SLACK, client.slack_webhook_url))
    return targets


def alert_fire(alert: Alert, *, deliver: bool, now: datetime) -> bool:
    """Insert the alert; True if this call inserted it (and so owns its delivery)."""
    try:
        with transaction.atomic():
            alert.save(force_insert=True)
            if deliver:
                deliveries = AlertDelivery.objects.bulk_create(
                    AlertDelivery(alert=alert, channel=channel, target=target, updated_at=now)
                    for channel, target in _targets(alert.client)
                )
                ids = [d.pk for d in deliveries if d.pk is not None]
                transaction.on_commit(
                    lambda: alert_deliveries_created.send(sender=Alert, delivery_ids=ids)
                )
    except IntegrityError:
        return False  # another worker fired it first: it delivers
    return True


@dataclass(frozen=True)
class _Candidate:
    kind: str
    threshold: int


def _candidates(client: Client, position: BudgetPosition, *, current: bool) -> list[_Candidate]:
    budget = position.budget_usd
    if budget is None:
        return []
    found = []
    for threshold in client.threshold_list():
        line = budget * threshold / ONE_HUNDRED
        reached = position.billed_usd >= line and position.billed_usd > 0
        if reached:
            found.append(_Candidate(AlertKind.ACTUAL, threshold))
        elif (
            current
            and position.elapsed_hours >= PROJECTION_MIN_HOURS
            and position.projected_billed_usd >= line
            and position.projected_billed_usd > 0
        ):
            # Only while not yet reached: "projected to reach 80%" after "reached 80%"
            # says nothing new.
            found.append(_Candidate(AlertKind.PROJECTED, threshold))
    return found


def alerts_evaluate(
    *, positions: Iterable[BudgetPosition], clients: dict[int, Client], now: datetime
) -> list[Alert]:
    """Fire the threshold alerts these positions call for (actual and projected spend).

    All crossed thresholds are recorded, but when one recompute crosses several of the
    same kind at once only the highest is delivered: one message, not three.
    """
    position_list = [p for p in positions if p.budget_usd is not None]
    if not position_list:
        return []
    months = {p.month for p in position_list}
    existing = set(
        Alert.objects.filter(
            client_id__in=[p.client_id for p in position_list], month__in=months, key=""
        ).values_list("client_id", "month", "kind", "threshold")
    )
    fired: list[Alert] = []
    for position in position_list:
        client = clients[position.client_id]
        if not client.active:
            continue
        current = position.elapsed_hours < position.month_hours
        new = [
            c
            for c in _candidates(client, position, current=current)
            if (client.pk, position.month, c.kind, c.threshold) not in existing
        ]
        highest = {c.kind: max(x.threshold for x in new if x.kind == c.kind) for c in new}
        for candidate in new:
            subject, text = budget_message(client, position, candidate.kind, candidate.threshold)
            alert = Alert(
                client=client,
                month=position.month,
                kind=candidate.kind,
                threshold=candidate.threshold,
                key="",
                budget_usd=position.budget_usd,
                billed_usd=position.billed_usd,
                projected_billed_usd=position.projected_billed_usd,
                subject=subject,
                message=text,
                created_at=now,
            )
            deliver = candidate.threshold == highest[candidate.kind]
            if alert_fire(alert, deliver=deliver, now=now):
                fired.append(alert)
    return fired


# --- spend anomalies ------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    hours: int
    mean_usd: Decimal
    stddev_usd: Decimal
    first_hour: datetime

    def limit(self, sigmas: Decimal) -> Decimal:
        return self.mean_usd + sigmas * self.stddev_usd


def _hourly_sum_sql() -> str:
    # Exact on PostgreSQL; SQLite stores costs as text, so use the Decimal aggregate.
    return "decimal_sum(cost_usd)" if connection.vendor == "sqlite" else "SUM(cost_usd)"


def hourly_baselines(
    *, start: datetime, end: datetime, client_ids: Iterable[int] | None = None
) -> dict[int, Baseline]:
    """Mean and standard deviation of each client's hourly raw spend over [start, end),
    hours without spend counting as $0. One grouped query over the hourly rollups.

    The variance is a statistic, not money: computed in SQL from Σx and Σx² (floating
    point on SQLite), then carried as Decimal.
    """
    hours = int((end - start) / HOUR)
    client_filter = ""
    params: list[Any] = [start, end]
    if client_ids is not None:
        ids = list(client_ids)
        if not ids:
            return {}
        client_filter = f"AND client_id IN ({', '.join(['%s'] * len(ids))})"
        params.extend(ids)
    # Summed per hour first: with a half-hour zone offset an hour has two rows (two days).
    sql = f"""
        SELECT client_id, SUM(spend), SUM(spend * spend), MIN(hour) FROM (
            SELECT client_id, hour, {_hourly_sum_sql()} AS spend
            FROM billing_hourlyrollup
            WHERE hour >= %s AND hour < %s {client_filter}
            GROUP BY client_id, hour
        ) per_hour GROUP BY client_id
    """
    baselines = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for client_id, total, squares, first_hour in cursor.fetchall():
            mean = Decimal(str(total)) / hours
            variance = Decimal(str(squares)) / hours - mean * mean
            stddev = Decimal(math.sqrt(max(float(variance), 0.0)))
            if isinstance(first_hour, str):  # SQLite returns text from a raw query
                first_hour = datetime.fromisoformat(first_hour).replace(tzinfo=UTC)
            baselines[client_id] = Baseline(hours, mean, stddev, first_hour)
    return baselines


def anomalies_detect(*, client_ids: Iterable[int] | None = None, now: datetime) -> list[Alert]:
    """Fire a spend-anomaly alert for a client whose spend in the previous or current hour
    is more than ``settings.ANOMALY_STDDEV`` standard deviations above its trailing
    14-day hourly baseline. At most one per client and agency-local day."""
    current_hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    previous_hour = current_hour - HOUR
    ids = None if client_ids is None else list(client_ids)
    recent = HourlyRollup.objects.filter(hour__in=[previous_hour, current_hour])
    if ids is not None:
        recent = recent.filter(client_id__in=ids)
    spend: dict[tuple[int, datetime], Decimal] = {}
    for client_id, hour, cost in recent.values_list("client_id", "hour", "cost_usd"):
        spend[(client_id, hour)] = spend.get((client_id, hour), Decimal(0)) + cost
    candidates = {
        client_id for (client_id, _), cost in spend.items() if cost >= ANOMALY_MIN_HOUR_USD
    }
    if not candidates:
        return []
    baselines = hourly_baselines(
        start=previous_hour - timedelta(days=BASELINE_DAYS),
        end=previous_hour,
        client_ids=candidates,
    )
    sigmas = settings.ANOMALY_STDDEV
    clients = Client.objects.in_bulk(list(candidates))
    fired = []
    for (client_id, hour), cost in sorted(spend.items()):
        baseline = baselines.get(client_id)
        client = clients.get(client_id)
        if (
            client is None
            or not client.active
            or baseline is None
            or cost < ANOMALY_MIN_HOUR_USD
            or baseline.first_hour > previous_hour - BASELINE_MIN_HISTORY
            or cost <= baseline.limit(sigmas)
        ):
            continue
        local = local_time(hour)
        subject = f"Spend anomaly: {client.name} spent {format_usd(cost)} in one hour"
        text = (
            f"{client.name} spent {format_usd(cost)} (raw provider cost) in the hour from "
            f"{local:%Y-%m-%d %H:%M} ({local.tzname()}), against a trailing {BASELINE_DAYS}-day "
            f"hourly baseline of {format_usd(baseline.mean_usd)} ± "
            f"{format_usd(baseline.stddev_usd)} (threshold {format_usd(baseline.limit(sigmas))}, "
            f"{sigmas} standard deviations).\n{client_url(client)}"
        )
        alert = Alert(
            client=client,
            month=month_start(local.date()),
            kind=AlertKind.ANOMALY,
            threshold=int(sigmas),
            key=local.date().isoformat(),
            budget_usd=client.monthly_budget_usd,
            billed_usd=cost,
            subject=subject,
            message=text,
            created_at=now,
        )
        if alert_fire(alert, deliver=True, now=now):
            fired.append(alert)
    return fired


# --- delivery -------------------------------------------------------------------------


def _claim(delivery_id: int, now: datetime) -> bool:
    """Move a delivery to "sending" if nobody else holds it (conditional UPDATE)."""
    claimable = Q(status__in=[DeliveryStatus.PENDING, DeliveryStatus.FAILED]) | Q(
        status=DeliveryStatus.SENDING, updated_at__lt=now - SENDING_TIMEOUT
    )
    return (
        AlertDelivery.objects.filter(claimable, pk=delivery_id).update(
            status=DeliveryStatus.SENDING, attempts=F("attempts") + 1, updated_at=now
        )
        == 1
    )


def _post_webhook(url: str, text: str) -> None:
    if not url.startswith(("https://", "http://")):
        raise AlertDeliveryError(f"not an http(s) URL: {url[:60]}")
    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise AlertDeliveryError(f"webhook answered HTTP {response.status}")
    except OSError as exc:  # URLError, HTTPError and timeouts are OSErrors
        raise AlertDeliveryError(f"webhook failed: {exc}") from exc


def alert_delivery_send(*, delivery_id: int, now: datetime | None = None) -> str:
    """Send one delivery if it is still unsent. Returns its status afterwards.

    Raises AlertDeliveryError after recording the failure, so the task retries; the last
    allowed attempt ends in "gave_up" instead.
    """
    moment = now or timezone.now()
    if not _claim(delivery_id, moment):
        return (
            AlertDelivery.objects.filter(pk=delivery_id).values_list("status", flat=True).first()
            or ""
        )
    delivery = AlertDelivery.objects.select_related("alert").get(pk=delivery_id)
    alert = delivery.alert
    try:
        if delivery.channel == DeliveryChannel.EMAIL:
            recipients = [part.strip() for part in delivery.target.split(",") if part.strip()]
            send_mail(alert.subject, alert.message, None, recipients)
        else:
            _post_webhook(delivery.target, f"*{alert.subject}*\n{alert.message}")
    except Exception as exc:
        failed = (
            DeliveryStatus.GAVE_UP if delivery.attempts >= MAX_ATTEMPTS else DeliveryStatus.FAILED
        )
        AlertDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.SENDING).update(
            status=failed, last_error=str(exc)[:2000], updated_at=timezone.now()
        )
        logger.warning("alert delivery %s failed: %s", delivery_id, exc)
        if failed == DeliveryStatus.GAVE_UP:
            return failed
        raise AlertDeliveryError(str(exc)) from exc
    AlertDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.SENT, sent_at=timezone.now(), updated_at=timezone.now(), last_error=""
    )
    return DeliveryStatus.SENT


def alert_deliveries_due(*, now: datetime | None = None) -> list[int]:
    """Deliveries to (re)send: failed ones, pending ones whose task may have been lost,
    and sends lost with their worker."""
    moment = now or timezone.now()
    return list(
        AlertDelivery.objects.filter(
            Q(status=DeliveryStatus.FAILED, updated_at__lt=moment - timedelta(minutes=1))
            | Q(status=DeliveryStatus.PENDING, updated_at__lt=moment - timedelta(minutes=2))
            | Q(status=DeliveryStatus.SENDING, updated_at__lt=moment - SENDING_TIMEOUT)
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:500]
    )
