"""What ingest answers: whole-request errors, and one outcome per event."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from tracking.schema import EventResult, IngestResponse, Problem


class RequestError(Exception):
    """A whole-request failure: the view answers ``status`` with ``{"error": ...}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


@dataclass(slots=True)
class EventOutcome:
    """One event's fate while the batch moves through the steps; rejected until stored."""

    id: str | None
    status: str = "rejected"
    cost_usd: Decimal | None = None
    priced: bool = False
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)

    def reject(self, where: str, message: str, code: str = "invalid") -> None:
        self.status = "rejected"
        self.errors.append({"code": code, "field": where, "message": message})

    def as_result(self) -> EventResult:
        if self.status == "accepted":
            return EventResult(
                id=self.id,
                status="accepted",
                cost_usd=_decimal_text(self.cost_usd) if self.priced else None,
                warnings=[Problem(**w) for w in self.warnings] or msgspec.UNSET,
            )
        if self.status == "rejected":
            return EventResult(
                id=self.id, status="rejected", errors=[Problem(**e) for e in self.errors]
            )
        return EventResult(id=self.id, status="duplicate")

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.as_result())


@dataclass
class IngestOutcome:
    results: list[EventOutcome]
    client_ids: set[int] = field(default_factory=set)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    def as_response(self) -> IngestResponse:
        return IngestResponse(
            accepted=self.count("accepted"),
            duplicates=self.count("duplicate"),
            rejected=self.count("rejected"),
            results=[r.as_result() for r in self.results],
        )

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.as_response())


def _decimal_text(value: Decimal | None) -> str | None:
    """Fixed-point text without trailing zeros: never '1E-7'."""
    if value is None:
        return None
    return format(value.normalize(), "f") if value else "0"
