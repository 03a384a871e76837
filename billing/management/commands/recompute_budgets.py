from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from agency.money import format_usd
from billing.services.budgets import budgets_recompute
from billing.services.rollups import rollups_rebuild_dirty


class Command(BaseCommand):
    help = "Rebuild dirty rollups, recompute every client's budget status and fire alerts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--quiet", action="store_true", help="Print only the count.")

    def handle(self, *args: Any, quiet: bool, **options: Any) -> None:
        rollups_rebuild_dirty()
        positions = budgets_recompute()
        if not quiet:
            for p in positions:
                if p.budget_usd is None:
                    continue
                self.stdout.write(
                    f"client {p.client_id}: {format_usd(p.billed_usd)} of "
                    f"{format_usd(p.budget_usd)} ({p.status}), projected "
                    f"{format_usd(p.projected_billed_usd)} ({p.projected_status})"
                )
        self.stdout.write(f"recomputed {len(positions)} clients")
