"""The JSON API's request and response shapes, declared once.

These msgspec Structs are the whole contract: ingest validates every posted event by
converting it to ``Event`` (msgspec's C validator, strict: no ``true`` for an integer, no
``2.0`` for one either), the budget API checks its query with ``BudgetQuery``, the
responses are encoded from ``IngestResponse`` and ``Budget``, and tracking/openapi.py
builds the OpenAPI document's schemas from these very classes. A constraint added here is
enforced and documented at once.

A per-event error names its field and says what is wrong in words. The words come from
the declaration too: a field's ``Meta(extra={"message": ...})`` when it has one, else a
message derived from its constraints (tracking/ingest/validate.py).

The budget API is billing's, but its shapes sit here beside ingest's so that the one
OpenAPI document (served by tracking) can be built without tracking importing billing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import UNSET, Meta, UnsetType

# Regular expressions are written to mean the same in Python (msgspec, the server) and in
# ECMA-262 (JSON Schema, the document's readers). Python's ``$`` also matches before a
# final newline; the lookahead makes it the end of the text in both.
END = r"$(?!\n)"
# Text a PostgreSQL column can hold: no NUL, and no lone surrogate (a JSON "\ud800"
# escape decodes to one; UTF-8 cannot encode it).
STORABLE = r"^[^\x00\ud800-\udfff]*$"
NUL_MESSAGE = "must not contain NUL (U+0000) or unpaired surrogate characters"
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})" + END
# A month ClientMeter keeps: agency.calendar.parse_month's range, 2000-01 to 2100-12
# (tests/tracking/test_schema.py holds the two to the same edges).
MONTH = r"^(20[0-9]{2}|2100)-(0[1-9]|1[0-2])" + END
MONTH_RULE = "month must be YYYY-MM, from 2000-01 to 2100-12."
DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"
MAX_INT4 = 2_147_483_647
# The raw JSON objects an event carries (usage, metadata) are stored as they came. Bounded
# so that no event can be too big to store, or too deep for a JSON encoder or decoder
# (Python's recursion limit sat at ~940 levels): depth counts the object itself.
MAX_JSON_BYTES = 16 * 1024
MAX_JSON_DEPTH = 8

Provider = Literal["anthropic", "openai", "google"]

Tag = Annotated[
    str, Meta(max_length=200, pattern=STORABLE, description="Optional tag, at most 200 characters.")
]
Count = Annotated[int, Meta(ge=0, le=MAX_INT4)]
Money = Annotated[str, Meta(pattern=DECIMAL)]
BudgetStatus = Literal["green", "yellow", "red", ""]
JSON_BOUNDS = f"At most {MAX_JSON_BYTES:,} bytes as JSON and {MAX_JSON_DEPTH} levels deep."


class Event(msgspec.Struct):
    """One LLM call. Unknown fields are ignored (never stored)."""

    id: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=128,
            pattern=r"^[\x20-\x7e]{1,128}" + END,
            description="Idempotency key, unique per client, printable ASCII. Resending the "
            "same id with the same content is a duplicate.",
            extra={"message": "must be 1 to 128 printable ASCII characters"},
        ),
    ]
    model: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=128,
            pattern=STORABLE,
            description="The model id as sent to the provider.",
            extra={"message": "must be a string of 1 to 128 chars"},
        ),
    ]
    usage: Annotated[
        dict[str, Any],
        Meta(
            description="The provider's usage object exactly as its API returned it. Token "
            "counts are integers from 0 to 100,000,000, and one call counts at most "
            f"100,000,000 tokens in all. {JSON_BOUNDS}",
        ),
    ]
    provider: Annotated[
        Provider, Meta(extra={"message": f"must be one of {', '.join(get_args(Provider))}"})
    ] = "anthropic"
    client: (
        Annotated[
            str,
            Meta(
                pattern=STORABLE,
                description="Client slug. Required with an agency-wide key; with a client key "
                "it must be that key's client (or be left out).",
            ),
        ]
        | None
    ) = None
    backfill: bool = False
    project: (
        Annotated[Tag, Meta(description="Project name; created under the client if new.")] | None
    ) = None
    feature: Tag | None = None
    user: (
        Annotated[Tag, Meta(description="The client's opaque end-user id (not an email).")] | None
    ) = None
    team: Tag | None = None
    deploy_sha: Tag | None = None
    prompt_hash: Tag | None = None
    request_id: Annotated[Tag, Meta(description="The provider's request id.")] | None = None
    occurred_at: (
        Annotated[
            str,
            Meta(
                pattern=RFC3339,
                description="RFC 3339 with an offset. Default: now. At most 5 minutes in the "
                "future; older than the backfill window (default 62 days) is rejected as "
                "too_old unless an agency-wide key sends backfill: true.",
                extra_json_schema={"format": "date-time"},
                extra={"message": "must be an RFC 3339 date-time with an offset"},
            ),
        ]
        | None
    ) = None
    service_tier: (
        Annotated[
            str,
            Meta(
                max_length=32,
                pattern=STORABLE,
                description="Overrides the usage object's service tier (e.g. batch).",
            ),
        ]
        | None
    ) = None
    status_code: Count | None = None
    latency_ms: Count | None = None
    metadata: (
        Annotated[
            dict[
                Annotated[
                    str,
                    Meta(
                        min_length=1,
                        max_length=64,
                        pattern=STORABLE,
                        extra={"message": "keys must be 1 to 64 characters"},
                    ),
                ],
                Annotated[
                    str,
                    Meta(
                        max_length=200,
                        pattern=STORABLE,
                        extra={"message": "must be a string of at most 200 chars"},
                    ),
                ],
            ],
            Meta(
                max_length=20,
                description=f"Free-form string pairs. At most {MAX_JSON_BYTES:,} bytes as JSON.",
            ),
        ]
        | None
    ) = None


class IngestRequest(msgspec.Struct):
    """The body of POST /usage: one to INGEST_MAX_EVENTS (1,000 by default) events."""

    events: Annotated[list[Event], Meta(min_length=1)]


class Problem(msgspec.Struct, omit_defaults=True):
    """Why an event was refused (``errors``) or what to know about it (``warnings``)."""

    code: str
    message: str
    field: Annotated[str, Meta(examples=["events[3].usage.input_tokens"])] | UnsetType = UNSET


class EventResult(msgspec.Struct, omit_defaults=True):
    """The outcome of one event, in request order."""

    id: Annotated[str, Meta(description="The event's id; null when it had no valid id.")] | None
    status: Literal["accepted", "duplicate", "rejected"]
    cost_usd: (
        Annotated[
            Money,
            Meta(description="Raw provider cost, exact; null when the model has no rate."),
        ]
        | UnsetType
        | None
    ) = UNSET
    errors: (
        Annotated[
            list[Problem],
            Meta(
                description="Why a rejected event was refused. Codes: invalid, required, "
                "forbidden_client, unknown_client, report_sourced_client, too_old, in_future, "
                "duplicate_id, conflict."
            ),
        ]
        | UnsetType
    ) = UNSET
    warnings: (
        Annotated[list[Problem], Meta(description="Codes: unpriced_model, needs_review.")]
        | UnsetType
    ) = UNSET


class IngestResponse(msgspec.Struct):
    """One result per posted event, in order, and the counts of each status."""

    accepted: Annotated[int, Meta(ge=0)]
    duplicates: Annotated[int, Meta(ge=0)]
    rejected: Annotated[int, Meta(ge=0)]
    results: list[EventResult]


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    field: str | UnsetType = UNSET


class Error(msgspec.Struct):
    """A whole-request failure."""

    error: ErrorDetail


class BudgetQuery(msgspec.Struct):
    """The query string of ``GET /budget``."""

    client: (
        Annotated[
            str,
            Meta(
                description="Client slug. Optional with a client key (default: its own "
                "client); required with an agency-wide key."
            ),
        ]
        | None
    ) = None
    month: (
        Annotated[str, Meta(pattern=MONTH, description="YYYY-MM; default the current month.")]
        | None
    ) = None


class NotPriced(msgspec.Struct):
    """Calls whose model has no rate yet: counted, never priced at $0."""

    calls: Annotated[int, Meta(ge=1)]


class Budget(msgspec.Struct):
    """A client's budget position for a month; money as exact decimal text, rounded."""

    client: str
    month: str
    budget_usd: Money | None
    cost_usd: Money
    billed_usd: Money
    percent_used: Money | None
    status: BudgetStatus | None
    projected_billed_usd: Annotated[
        Money | None,
        Meta(
            description=(
                "Month-end billed at the burn rate; null in the first 24 hours of a month "
                "(too early to project)."
            )
        ),
    ]
    projected_status: BudgetStatus | None
    unpriced_events: Annotated[
        int,
        Meta(
            ge=0, description="Events with no rate yet: actual spend is higher than these figures."
        ),
    ]
    billed_basis: Annotated[
        Literal["invoice", "estimate"],
        Meta(
            description=(
                "invoice: billed_usd is the issued invoice's; estimate: what the invoice "
                "would say today (each line rounded to the cent, then summed)."
            )
        ),
    ] = "estimate"
    not_priced: Annotated[
        NotPriced | None,
        Meta(description="Calls to models without a rate (not in any figure); null if none."),
    ] = None


# --- reconciliation (billing's, declared here for the one OpenAPI document) -------------

Exact = Annotated[str, Meta(pattern=DECIMAL, description="USD, exact (unrounded) decimal text.")]
Percent = Annotated[
    str | None,
    Meta(description="Percent to two places; null when there is nothing to divide by."),
]


class ReconciliationQuery(msgspec.Struct):
    """The query string of ``GET /reconciliation``."""

    month: (
        Annotated[str, Meta(pattern=MONTH, description="YYYY-MM; default the current month.")]
        | None
    ) = None


class ReportTokens(msgspec.Struct):
    """Tokens by kind (disjoint buckets) and web search requests."""

    input_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_read_tokens: int
    output_tokens: int
    web_search_requests: int


class ReconciliationModel(msgspec.Struct):
    """One model's figures (canonical model id, as the rate table names it)."""

    provider: str
    model: str
    provider_cost_usd: Exact
    tracked_cost_usd: Exact
    untracked_cost_usd: Exact
    coverage_pct: Percent
    drift_pct: Annotated[
        str | None,
        Meta(
            description="Our price for the provider's tokens vs its list amount, percent "
            "to two places; null without a rate or a list amount."
        ),
    ]
    drifting: Annotated[bool, Meta(description="drift_pct beyond ±0.5%.")]
    provider_tokens: ReportTokens
    tracked_tokens: ReportTokens


class ReconciliationDay(msgspec.Struct):
    """One day: the provider's UTC day set against the agency-local day of that date."""

    day: str
    provider_cost_usd: Exact
    tracked_cost_usd: Exact
    untracked_cost_usd: Exact
    coverage_pct: Percent
    drift_pct: str | None
    provider_tokens: ReportTokens
    tracked_tokens: ReportTokens
    models: list[ReconciliationModel]


class Reconciliation(msgspec.Struct):
    """The provider's books against what ClientMeter tracked, for one agency month.
    Report-sourced clients are left out of both sides (``report_sourced_cost_usd``)."""

    month: str
    has_report: Annotated[bool, Meta(description="false: no provider report synced.")]
    provider_cost_usd: Exact
    tracked_cost_usd: Exact
    coverage_pct: Percent
    untracked_cost_usd: Exact
    untracked_tokens: ReportTokens
    drift_pct: str | None
    report_sourced_cost_usd: Exact
    not_in_report_cost_usd: Annotated[
        str,
        Meta(
            pattern=DECIMAL,
            description="Tracked spend on days or providers the report has no rows for.",
        ),
    ]
    models: list[ReconciliationModel]
    days: list[ReconciliationDay]
