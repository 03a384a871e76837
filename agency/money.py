"""Money helpers. Every amount is a Decimal; rounding happens here and nowhere else.

Per-event costs keep full precision (15 places). Rounding to cents happens once, at the
edge (invoice lines, CSV, PDF, display), with ROUND_HALF_UP: commercial rounding, the
mode customers expect on an invoice.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ONE_HUNDRED = Decimal("100")
MILLION = Decimal("1000000")
ZERO = Decimal("0")
# Storage scale of per-event costs and rollups: NUMERIC(30, 15).
COST_PLACES = Decimal("1e-15")


def round_money(amount: Decimal) -> Decimal:
    """Round a USD amount to the cent, half-up. The only rounding helper for money."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def split_cents(parts: Sequence[Decimal]) -> list[Decimal]:
    """Round each part to the cent so that the rounded parts add up to the rounded sum.

    For figures printed one above another with their total below them (an invoice line
    and its token-kind sub-rows, a table and its total row): ``round_money`` of each part
    alone can disagree with the rounded total by a cent or more. Largest remainder: every
    part is first rounded down, then the cents still missing go, one each, to the parts
    that lost the most (ties to the earlier part). Each part moves by less than a cent.
    """
    if not parts:
        return []
    target = round_money(sum(parts, ZERO))
    floors = [part.quantize(CENT, rounding=ROUND_FLOOR) for part in parts]
    # 0 <= missing <= the number of parts with a remainder: see the tests' property.
    missing = int((target - sum(floors, ZERO)) / CENT)
    order = sorted(range(len(parts)), key=lambda i: (floors[i] - parts[i], i))
    result = list(floors)
    for i in order[:missing]:
        result[i] += CENT
    return result


def format_usd_exact(amount: Decimal | None) -> str:
    """Display form of a full-precision cost, unrounded: ``$0.0075``, ``$1,234.50``: every
    significant digit, no trailing zeros beyond the cents, thousands separated."""
    if amount is None:
        return "—"
    sign = "-" if amount < 0 else ""
    digits = abs(amount).normalize()
    places = max(2, -int(digits.as_tuple().exponent))
    return f"{sign}${digits:,.{places}f}"


def format_pct(value: Decimal | None) -> str:
    """A percentage as people write it: ``25 %``, ``12.5 %`` (never ``25.00``)."""
    if value is None:
        return "—"
    return f"{value.normalize():f} %"


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
