"""Exact money storage and sums on both PostgreSQL and SQLite.

PostgreSQL stores costs as NUMERIC(30, 15) and sums them exactly. SQLite has no decimal
type: a DECIMAL column gets NUMERIC affinity, values become 8-byte floats and SUM() adds
floats, so 0.000123456789012345 comes back altered (measured). ``CostField`` stores text
on SQLite instead, and ``ExactSum`` uses a Python aggregate registered on every SQLite
connection that adds ``Decimal`` values. The same code and tests then give the same
figures to the last decimal on both databases.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import Expression


class CostField(models.DecimalField):
    """A USD amount at full precision: NUMERIC(30, 15), or exact text on SQLite."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", 30)
        kwargs.setdefault("decimal_places", 15)
        super().__init__(*args, **kwargs)

    def get_internal_type(self) -> str:
        # Not "DecimalField": that would make the SQLite backend parse values as floats.
        return "CostField"

    def db_type(self, connection: BaseDatabaseWrapper) -> str:
        if connection.vendor == "sqlite":
            return "text"
        return f"numeric({self.max_digits}, {self.decimal_places})"

    def rel_db_type(self, connection: BaseDatabaseWrapper) -> str:
        return self.db_type(connection)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        return Decimal(str(value))


class ExactSum(models.Aggregate):
    """SUM that stays exact for CostField columns on SQLite too."""

    function = "SUM"
    name = "ExactSum"

    def __init__(self, expression: str | Expression, **extra: Any) -> None:
        extra.setdefault("output_field", CostField())
        super().__init__(expression, **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        return super().as_sql(compiler, connection, function="decimal_sum", **extra_context)


class _SqliteDecimalSum:
    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is None:
            return
        amount = Decimal(str(value))
        self.total = amount if self.total is None else self.total + amount

    def finalize(self) -> str | None:
        return None if self.total is None else str(self.total)


def register_sqlite_functions(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate("decimal_sum", 1, _SqliteDecimalSum)
