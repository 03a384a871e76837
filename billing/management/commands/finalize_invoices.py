from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agency.calendar import MonthError, parse_month
from agency.models import Client
from billing.models import Invoice, InvoiceStatus
from billing.services.invoices import InvoiceError, invoice_finalize, invoices_finalize_due
from billing.services.month_end import month_end_resume


class Command(BaseCommand):
    help = (
        "Finish month-end runs cut short and finalize draft invoices whose grace period is "
        "over (the daily beat job's work), or, with "
        "--month (and --client), finalize that month's drafts now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--month", help="YYYY-MM: finalize this month's drafts now")
        parser.add_argument("--client", help="Only this client's slug (with --month)")

    def handle(self, *args: Any, month: str | None, client: str | None, **options: Any) -> None:
        if not month:
            if client:
                raise CommandError("--client needs --month")
            for resumed in month_end_resume():
                self.stdout.write(f"{resumed:%Y-%m}: month-end run finished")
            result = invoices_finalize_due()
            self.stdout.write(
                f"{result.refreshed} draft(s) refreshed, {len(result.finalized)} finalized, "
                f"{len(result.failed)} failed"
            )
            return
        try:
            first_day = parse_month(month)
        except MonthError as exc:
            raise CommandError(str(exc)) from None
        drafts = Invoice.objects.filter(month=first_day, status=InvoiceStatus.DRAFT)
        if client:
            if not Client.objects.filter(slug=client).exists():
                raise CommandError(f"no client {client!r}")
            drafts = drafts.filter(client__slug=client)
        for invoice_id in drafts.order_by("client__name").values_list("pk", flat=True):
            try:
                invoice = invoice_finalize(invoice_id=invoice_id)
            except InvoiceError as exc:
                self.stderr.write(str(exc))
                continue
            self.stdout.write(f"{invoice.number}: {invoice.client_name} ${invoice.total_usd:,.2f}")
