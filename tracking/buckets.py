"""The usage buckets: the one ordered declaration of what a call is counted and priced in.

Every token (and request) of a call falls in exactly one bucket: uncached input, cache
writes (5 minutes, 1 hour), cache reads and output are disjoint, so no token is priced
twice; reasoning is informational (already inside output) and the batch discount is a
cost without a quantity. Each bucket names its columns once, here:

* the models' columns come from the abstract mixins in ``tracking.models``
  (``EventBuckets``, ``RollupBuckets``, ``InvoiceBuckets``), built from this list;
* rollups, invoices, the CSV and PDF exports, admin, the dashboards and the benchmark
  seed read the column names below instead of spelling them.

Adding a bucket is one entry here plus ``makemigrations``. How a provider reports it and
how a rate prices it stays pricing logic (``tracking.pricing``: the ``NormalizedUsage``
attribute is named after ``token_column``, the ``CostBreakdown`` attribute after
``name``), and its price is a column of ``ModelRate`` (``price_field``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum


class Reach(IntEnum):
    """How far a bucket's figures travel. Each level includes the ones before it."""

    EVENT = 1  # stored on each event only
    ROLLUP = 2  # also summed into the daily rollups and the raw-event CSV
    INVOICE = 3  # also billed on invoice lines: their CSV, PDF and admin


@dataclass(frozen=True)
class Unit:
    """What a bucket counts and what its unit price is quoted per."""

    label: str  # after a unit price: "$3.00 / MTok"
    per: Decimal  # how many of the counted things one unit price is for
    # Per-event counts of requests fit a 4-byte integer; token counts take 8 bytes.
    # Rollups and invoice lines sum many events, so their columns are 8 bytes for both.
    requests: bool = False


MTOK = Unit("MTok", Decimal(1_000_000))
THOUSAND_REQUESTS = Unit("1k", Decimal(1_000), requests=True)


@dataclass(frozen=True)
class Bucket:
    name: str  # the CostBreakdown attribute in tracking.pricing
    label: str  # as printed on invoices
    unit: Unit
    reach: Reach
    token_column: str | None  # its quantity on events, rollups and lines (None: no quantity)
    cost_column: str | None  # its unrounded USD cost (None: not priced on its own)
    price_field: str | None = None  # its price on tracking.models.ModelRate
    # The dashboards' usage-table column its tokens add into (None: not shown there).
    group: str | None = None
    help_text: str = ""  # on the event's column (admin shows it there)


BUCKETS: tuple[Bucket, ...] = (
    Bucket(
        "input", "Input", MTOK, Reach.INVOICE, "input_tokens", "cost_input_usd",
        "input_usd_per_mtok", group="input", help_text="Uncached input.",
    ),
    Bucket(
        "cache_write_5m", "Cache write (5 min)", MTOK, Reach.INVOICE, "cache_write_5m_tokens",
        "cost_cache_write_5m_usd", "cache_write_5m_usd_per_mtok", group="cache_write",
    ),
    Bucket(
        "cache_write_1h", "Cache write (1 h)", MTOK, Reach.INVOICE, "cache_write_1h_tokens",
        "cost_cache_write_1h_usd", "cache_write_1h_usd_per_mtok", group="cache_write",
    ),
    Bucket(
        "cache_read", "Cache read", MTOK, Reach.INVOICE, "cache_read_tokens",
        "cost_cache_read_usd", "cache_read_usd_per_mtok", group="cache_read",
    ),
    Bucket(
        "output", "Output", MTOK, Reach.INVOICE, "output_tokens", "cost_output_usd",
        "output_usd_per_mtok", group="output", help_text="All output, thinking included.",
    ),
    # Inside output_tokens already: counted, never priced or billed on its own.
    Bucket(
        "reasoning", "Reasoning", MTOK, Reach.ROLLUP, "reasoning_tokens", None,
        help_text="The thinking/reasoning part of output_tokens (informational).",
    ),
    Bucket(
        "web_search", "Web searches", THOUSAND_REQUESTS, Reach.INVOICE, "web_search_requests",
        "cost_web_search_usd", "web_search_usd_per_1k",
    ),
    # Free beyond the tokens the fetched pages add: kept on the event for the record.
    Bucket("web_fetch", "Web fetches", THOUSAND_REQUESTS, Reach.EVENT, "web_fetch_requests", None),
    # Negative (batch and flex tiers): a cost without a quantity of its own.
    Bucket("discount", "Batch discount", MTOK, Reach.INVOICE, None, "cost_discount_usd"),
)  # fmt: skip


def buckets(reach: Reach = Reach.EVENT) -> tuple[Bucket, ...]:
    """The buckets that travel at least as far as ``reach``, in declaration order."""
    return tuple(b for b in BUCKETS if b.reach >= reach)


def token_columns(reach: Reach = Reach.EVENT) -> tuple[str, ...]:
    return tuple(b.token_column for b in buckets(reach) if b.token_column)


def cost_columns(reach: Reach = Reach.EVENT) -> tuple[str, ...]:
    return tuple(b.cost_column for b in buckets(reach) if b.cost_column)


# An event's quantity and cost columns, in declaration order (what ingest writes).
TOKEN_COLUMNS = token_columns(Reach.EVENT)
COST_COLUMNS = cost_columns(Reach.EVENT)
# The dashboards' token columns and the groups they add into.
GROUPED = tuple(b for b in BUCKETS if b.group and b.token_column)
# Every prompt-side token (what a prompt weighs, the base of the cache hit ratio).
PROMPT_GROUPS = ("input", "cache_write", "cache_read")
