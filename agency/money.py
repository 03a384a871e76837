"""Money helpers. Every amount is a Decimal; rounding happens here and nowhere else.

Per-event costs keep full precision (15 places). Rounding to cents happens once, at the
edge (invoice lines, CSV, PDF, display), with ROUND_HALF_UP: commercial rounding, the
mode customers expect on an invoice.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ONE_HUNDRED = Decimal("100")
MILLION = Decimal("1000000")
ZERO = Decimal("0")
# Storage scale of per-event costs and rollups: NUMERIC(30, 15).
COST_PLACES = Decimal("1e-15")


def round_money(amount: Decimal) -> Decimal:
    """Round a USD amount to the cent, half-up. The only rounding helper for money."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def apply_markup(raw_usd: Decimal, markup_pct: Decimal) -> Decimal:
    """Billed amount for a raw cost under a markup percentage, unrounded."""
    return raw_usd * (ONE_HUNDRED + markup_pct) / ONE_HUNDRED


def format_usd(amount: Decimal | None) -> str:
    """Display form, e.g. ``$1,234.50``; rounding goes through ``round_money``."""
    if amount is None:
        return "—"
    rounded = round_money(amount)
    sign = "-" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,.2f}"
