"""The row shape both dashboards show: calls, tokens by the usage tables' columns, money."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tracking.buckets import GROUPED, PROMPT_GROUPS

ZERO = Decimal("0")
# How long sums of past days (overview) and top-N lists (client page) are reused.
TREND_CACHE_SECONDS = 300


# The usage tables' token columns (each the sum of its buckets' tokens), in order.
TOKEN_GROUPS = tuple(dict.fromkeys(str(b.group) for b in GROUPED))


@dataclass
class UsageTotals:
    """Calls, tokens by the usage tables' columns and money of one group of rollup rows."""

    name: str = ""
    events: int = 0
    unpriced_events: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_GROUPS, 0))
    raw_usd: Decimal = ZERO
    billed_usd: Decimal = ZERO

    def add(self, row: Mapping[str, Any]) -> None:
        self.events += row["events"]
        self.unpriced_events += row["unpriced_events"]
        for bucket in GROUPED:
            self.tokens[str(bucket.group)] += row[str(bucket.token_column)]
        self.raw_usd += row["cost_usd"]
        self.billed_usd += row["billed_usd"]

    @property
    def priced_events(self) -> int:
        """The calls that have a price: what a client's user who is not shown pricing
        details counts (its bill leaves the calls without a rate out)."""
        return self.events - self.unpriced_events

    @property
    def input_tokens(self) -> int:
        return self.tokens["input"]

    @property
    def cache_write_tokens(self) -> int:
        return self.tokens["cache_write"]

    @property
    def cache_read_tokens(self) -> int:
        return self.tokens["cache_read"]

    @property
    def output_tokens(self) -> int:
        return self.tokens["output"]

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached or not: what the prompt weighs."""
        return sum(self.tokens[group] for group in PROMPT_GROUPS)

    @property
    def cache_hit_ratio(self) -> Decimal | None:
        """cache_read / (input + cache_read + cache writes); None without input."""
        if not self.prompt_tokens:
            return None
        return Decimal(self.tokens["cache_read"]) / Decimal(self.prompt_tokens)

    @property
    def margin_usd(self) -> Decimal:
        return self.billed_usd - self.raw_usd


TOKEN_COLUMNS = tuple(str(b.token_column) for b in GROUPED)
ROLLUP_FIELDS = (
    "day", "project", "feature", "provider", "model", "events", "unpriced_events",
    *TOKEN_COLUMNS, "cost_usd", "billed_usd",
)  # fmt: skip


def group_totals(
    rows: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], str]
) -> list[UsageTotals]:
    groups: dict[str, UsageTotals] = {}
    for row in rows:
        name = key(row)
        groups.setdefault(name, UsageTotals(name=name)).add(row)
    return sorted(groups.values(), key=lambda g: (-g.billed_usd, -g.events, g.name))
