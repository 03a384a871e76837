"""One provider's report for a range of days, merged by row key before it is stored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

# The row key: the report's dimensions, in ProviderReportRow's column names.
KEY_COLUMNS = (
    "day", "model", "api_key_id", "workspace_id", "service_tier", "context_window",
    "inference_geo", "speed", "batch",
)  # fmt: skip
# The figures summed under a key, in ProviderReportRow's column names.
COUNT_COLUMNS = (
    "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
    "output_tokens", "web_search_requests", "requests",
)  # fmt: skip
AMOUNT_COLUMNS = ("amount_cents", "list_amount_cents")
COLUMNS = (*KEY_COLUMNS, *COUNT_COLUMNS, *AMOUNT_COLUMNS)

Key = tuple[date, str, str, str, str, str, str, str, bool]
_N = len(COUNT_COLUMNS)


class ReportRows:
    """Usage and cost items of one provider's report, merged by key.

    The usage and cost endpoints are separate lists with the same dimensions: a key's
    tokens and its amounts end up on one row. A key with cost but no usage (code
    execution, a revision the usage list has not caught up with) keeps zero tokens; a key
    with usage but no cost keeps empty amounts (not zero: the provider said nothing).
    """

    def __init__(self) -> None:
        # key -> [7 counts..., amount, list_amount]; lists, not objects: a month of a
        # large organization is a few hundred thousand keys.
        self._rows: dict[Key, list[Any]] = {}
        self.pages = 0

    def __len__(self) -> int:
        return len(self._rows)

    def _row(self, key: Key) -> list[Any]:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [0] * _N + [None, None]
        return row

    def add_usage(self, key: Key, counts: tuple[int, ...]) -> None:
        row = self._row(key)
        for i, count in enumerate(counts):
            row[i] += count

    def add_cost(self, key: Key, amount_cents: Decimal, list_amount_cents: Decimal | None) -> None:
        row = self._row(key)
        row[_N] = amount_cents if row[_N] is None else row[_N] + amount_cents
        if list_amount_cents is not None:
            before = row[_N + 1]
            row[_N + 1] = list_amount_cents if before is None else before + list_amount_cents

    def days(self) -> set[date]:
        return {key[0] for key in self._rows}

    def tuples(self) -> Iterator[tuple[Any, ...]]:
        """Each row as values in ``COLUMNS`` order."""
        for key, figures in self._rows.items():
            yield (*key, *figures)
