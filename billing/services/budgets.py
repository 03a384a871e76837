"""Budget recompute: snapshot every client's month-to-date position and fire alerts.

Reads only rollups (one grouped query for all clients, one for the anomaly baselines), so
it is cheap enough to run every few minutes and shortly after new usage. The billed
amount is the month's bill (``billing.selectors.lines``: the invoice's per-line
rounding), the figure every page shows, so a snapshot or an alert never sits in another
band than the screen by a rounding cent. It overwrites
the month's snapshot rows and alerts are unique in the database: running it twice, or on
two workers at once, gives the same result.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.utils import timezone

from agency.calendar import current_month
from agency.models import Client
from billing.models import BudgetSnapshot
from billing.selectors.budgets import BudgetPosition, bill_totals, budget_of, budget_position
from billing.selectors.lines import month_bills
from billing.services.alerts import alerts_evaluate, anomalies_detect

SNAPSHOT_FIELDS = [
    "budget_usd", "cost_usd", "billed_usd", "events", "unpriced_events", "percent_used",
    "status", "projected_billed_usd", "projected_percent", "projected_status", "computed_at",
]  # fmt: skip


def _snapshot(position: BudgetPosition, now: datetime) -> BudgetSnapshot:
    return BudgetSnapshot(
        client_id=position.client_id,
        month=position.month,
        budget_usd=position.budget_usd,
        cost_usd=position.cost_usd,
        billed_usd=position.billed_usd,
        events=position.events,
        unpriced_events=position.unpriced_events,
        percent_used=position.percent_used,
        status=position.status or "",
        projected_billed_usd=position.projected_billed_usd,
        projected_percent=position.projected_percent,
        projected_status=position.projected_status or "",
        computed_at=now,
    )


def budgets_recompute(
    *, client_ids: Iterable[int] | None = None, now: datetime | None = None
) -> list[BudgetPosition]:
    """Recompute the current month's budget position of these clients (all by default):
    upsert their BudgetSnapshot rows, then fire threshold and anomaly alerts.

    Call ``rollups_rebuild_dirty()`` first for fresh figures (the task does). Not one
    transaction on purpose: each alert commits (and is delivered) on its own, so a
    failure on one client does not hold back another's alert.
    """
    moment = now or timezone.now()
    month = current_month(moment)
    clients_qs = Client.objects.all()
    if client_ids is not None:
        clients_qs = clients_qs.filter(pk__in=list(client_ids))
    clients = {c.pk: c for c in clients_qs}
    bills = month_bills(clients.values(), month, labels=False)
    positions = [
        budget_position(
            client=client,
            month=month,
            totals=bill_totals(bills[pk]),
            now=moment,
            budget=budget_of(client, month, moment),
            billed_basis=bills[pk].basis,
        )
        for pk, client in clients.items()
    ]
    BudgetSnapshot.objects.bulk_create(
        [_snapshot(p, moment) for p in positions],
        batch_size=500,
        update_conflicts=True,
        unique_fields=["client", "month"],
        update_fields=SNAPSHOT_FIELDS,
    )
    alerts_evaluate(positions=positions, clients=clients, now=moment)
    anomalies_detect(client_ids=None if client_ids is None else list(clients), now=moment)
    return positions
