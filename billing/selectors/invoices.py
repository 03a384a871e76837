"""Reads of invoices: per client, one invoice scoped to its client, and raw events behind them."""

from __future__ import annotations

from datetime import date

from django.db.models import Max, Q, QuerySet
from django.http import Http404

from agency.calendar import month_range
from agency.models import Client
from billing.models import Invoice, InvoiceLineKind, InvoiceStatus
from tracking.models import UsageEvent


def invoices_for(client: Client, *, include_drafts: bool = True) -> QuerySet[Invoice]:
    """A client's invoices, newest month first. Client users should get
    ``include_drafts=False``: a draft is not issued yet."""
    queryset = Invoice.objects.filter(client=client).select_related("client", "replaces")
    if not include_drafts:
        queryset = queryset.exclude(status=InvoiceStatus.DRAFT)
    return queryset.order_by("-month", "-pk")


def invoice_for(client: Client, pk: int, *, include_drafts: bool) -> Invoice:
    """One invoice of this client, or 404 (another client's invoice is never found)."""
    try:
        return invoices_for(client, include_drafts=include_drafts).get(pk=pk)
    except Invoice.DoesNotExist:
        raise Http404("No such invoice") from None


def month_events(client: Client, month: date) -> QuerySet[UsageEvent]:
    """Every raw event of a client's month (agency time zone), in time order."""
    start, end = month_range(month)
    return (
        UsageEvent.objects.filter(client=client, occurred_at__gte=start, occurred_at__lt=end)
        .select_related("project")
        .order_by("occurred_at", "pk")
    )


def invoice_events(invoice: Invoice) -> QuerySet[UsageEvent]:
    """The raw events behind an invoice: its month's events, plus, for each month it
    adjusts, that month's events received or priced after the month was last invoiced."""
    start, end = month_range(invoice.month)
    condition = Q(occurred_at__gte=start, occurred_at__lt=end)
    adjusted = (
        invoice.lines.filter(kind=InvoiceLineKind.ADJUSTMENT)
        .values_list("usage_month", flat=True)
        .distinct()
    )
    for month in adjusted:
        m_start, m_end = month_range(month)
        cutoff = (
            Invoice.objects.filter(client_id=invoice.client_id, lines__usage_month=month)
            .exclude(pk=invoice.pk)
            .exclude(status__in=[InvoiceStatus.DRAFT, InvoiceStatus.VOID])
            .aggregate(last=Max("finalized_at"))["last"]
        )
        late = Q(occurred_at__gte=m_start, occurred_at__lt=m_end)
        if cutoff is not None:
            late &= Q(received_at__gt=cutoff) | Q(priced_at__gt=cutoff)
        condition |= late
    return (
        UsageEvent.objects.filter(condition, client_id=invoice.client_id)
        .select_related("project")
        .order_by("occurred_at", "pk")
    )
