"""Seed a PostgreSQL database with benchmark usage: 200 clients, 10 million events.

Everything runs server-side (``INSERT … SELECT`` over ``generate_series``): skewed client
sizes (the biggest client gets ~9% of all events, like a real agency's anchor client),
working-hours-heavy timestamps over the last ``--months`` agency-local months up to now
(in time order, as ingest leaves the table),
a realistic model mix with cache reads and writes, ~0.3% events of a model without a rate
(unpriced), and costs computed in SQL from the shipped rate table. Then the rollups are
built, budgets are set so that every status occurs, and one recompute snapshots them.

Used by the budget, invoice and dashboard benchmarks under ``benchmarks/``.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, connections, transaction
from django.utils import timezone

from agency.calendar import current_month, day_bounds, local_day, previous_month
from agency.models import Client, Project
from agency.money import round_money
from billing.selectors.budgets import month_hours, project_month
from billing.selectors.rollups import month_totals
from billing.services.budgets import budgets_recompute
from billing.services.rollups import rollups_rebuild_period
from tracking.buckets import buckets
from tracking.models import ModelRate, UsageEvent, UsageEventKey
from tracking.partitions import is_partitioned, partitions_ensure

KEYS = UsageEventKey._meta.db_table
KEY_TRIGGER = "usageevent_keys_insert"
# The key table's primary key, named like the plain table's unique constraint.
KEYS_PKEY = "usageevent_unique_client_event_id"

SLUG_PREFIX = "bench-"
PROJECTS_PER_CLIENT = 3
UNPRICED_MODEL = "bench-experimental-1"
# (provider, canonical model, weight %): a typical agency mix.
MODEL_MIX = [
    ("anthropic", "claude-sonnet-4-5", Decimal("30")),
    ("anthropic", "claude-haiku-4-5", Decimal("25")),
    ("anthropic", "claude-opus-4-7", Decimal("5")),
    ("openai", "gpt-5-mini", Decimal("15")),
    ("openai", "gpt-4.1", Decimal("8")),
    ("google", "gemini-2.5-flash", Decimal("12")),
    ("google", "gemini-2.5-pro", Decimal("4.7")),
    ("anthropic", UNPRICED_MODEL, Decimal("0.3")),
]

# The buckets the mix draws: (tokens, cost) as SQL over the shaped rows ``t``. A price is
# NULL without a rate, so is the cost then. Every other bucket holds 0 tokens, and $0 once
# priced (NULL while unpriced), as ingest stores it.
_DRAWN = {
    "input": ("t.input_tokens", "t.input_tokens * t.p_in / 1000000"),
    "cache_write_5m": ("t.cache_write_tokens", "t.cache_write_tokens * t.p_w5 / 1000000"),
    "cache_read": ("t.cache_read_tokens", "t.cache_read_tokens * t.p_read / 1000000"),
    "output": ("t.output_tokens", "t.output_tokens * t.p_out / 1000000"),
}
_NOT_DRAWN = ("0", "CASE WHEN t.rate_id IS NULL THEN NULL ELSE 0 END")


def bucket_sql() -> dict[str, str]:
    """The INSERT's bucket columns and the SELECT's values for them, in the same order."""
    columns, values = [], []
    for bucket in buckets():
        tokens, cost = _DRAWN.get(bucket.name, _NOT_DRAWN)
        if bucket.token_column:
            columns.append(bucket.token_column)
            values.append(tokens)
        if bucket.cost_column:
            columns.append(bucket.cost_column)
            values.append(cost)
    return {"bucket_columns": ", ".join(columns), "bucket_values": ", ".join(values)}


_INSERT = """
INSERT INTO tracking_usageevent (
    client_id, project_id, event_id, fingerprint, feature, end_user, team, deploy_sha,
    prompt_hash, request_id, metadata, provider, model, occurred_at, received_at,
    {bucket_columns}, service_tier, inference_geo, speed, status_code, latency_ms, usage,
    rate_id, pricing_status, long_context, priced_at_list, needs_review, cost_usd, priced_at
)
WITH draws AS (
    SELECT i, random() AS r_client, random() AS r_project, random() AS r_model,
           (random() + random() + random()) / 3 AS r_hour,
           random() AS r_in, random() AS r_out, random() AS r_cache, random() AS r_prefix,
           random() AS r_feature, random() AS r_user
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
), shaped AS (
    SELECT d.i,
           floor(power(d.r_client, 2.2) * %(n_clients)s)::int AS client_index,
           CASE WHEN d.r_project < 0.05 THEN NULL ELSE floor(d.r_project * 3)::int END
               AS project_index,
           m.provider, m.model, m.rate_id, m.p_in, m.p_out, m.p_w5, m.p_read,
           -- Days follow i, so the table is in time order as real ingest leaves it (a
           -- day's events share pages; a per-day rollup rebuild reads few of them).
           %(start)s::timestamptz + floor((d.i - 1) * %(days)s::float8 / %(total)s) * interval '1 day'
               + d.r_hour * interval '24 hours' AS moment,
           (20 + power(d.r_in, 2) * 6000)::bigint AS input_tokens,
           (40 + d.r_out * 1500)::bigint AS output_tokens,
           CASE WHEN d.r_cache < 0.45 THEN 2048 * (1 + floor(d.r_prefix * 8))::bigint ELSE 0 END
               AS cache_read_tokens,
           CASE WHEN d.r_cache >= 0.45 AND d.r_cache < 0.52 AND m.p_w5 IS NOT NULL
               THEN 2048 * (1 + floor(d.r_prefix * 8))::bigint ELSE 0 END AS cache_write_tokens,
           (ARRAY['chat', 'summarize', 'classify', 'extract', 'search'])[1 + floor(d.r_feature * 5)::int]
               AS feature,
           'user-' || floor(d.r_user * 50)::int AS end_user
    FROM draws d
    JOIN (VALUES {model_values}) AS m (lo, hi, provider, model, rate_id, p_in, p_out, p_w5, p_read)
      ON d.r_model >= m.lo AND d.r_model < m.hi
), timed AS (
    SELECT s.*, CASE WHEN s.moment > %(now)s::timestamptz THEN s.moment - interval '1 day'
                     ELSE s.moment END AS occurred_at,
           (%(client_ids)s::bigint[])[1 + s.client_index] AS client_id
    FROM shaped s
)
SELECT t.client_id,
       CASE WHEN t.project_index IS NULL THEN NULL
            ELSE (%(project_ids)s::bigint[])[1 + t.client_index * 3 + t.project_index] END,
       'b' || t.i, md5(t.i::text), t.feature, t.end_user, '', '', 'p' || (t.i %% 20), '',
       '{{}}'::jsonb, t.provider, t.model, t.occurred_at, t.occurred_at + interval '300 ms',
       {bucket_values}, '', '', '', 200, 800 + (t.i %% 4000)::int,
       jsonb_build_object('input_tokens', t.input_tokens, 'output_tokens', t.output_tokens,
                          'cache_read_input_tokens', t.cache_read_tokens,
                          'cache_creation_input_tokens', t.cache_write_tokens),
       t.rate_id, CASE WHEN t.rate_id IS NULL THEN 'unpriced' ELSE 'priced' END,
       false, false, false,
       (t.input_tokens * t.p_in + t.output_tokens * t.p_out
        + t.cache_write_tokens * COALESCE(t.p_w5, 0) + t.cache_read_tokens * t.p_read) / 1000000,
       CASE WHEN t.rate_id IS NULL THEN NULL ELSE %(now)s::timestamptz END
FROM timed t
"""


class Command(BaseCommand):
    help = "PostgreSQL only: seed benchmark clients and millions of usage events, fast."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clients", type=int, default=200)
        parser.add_argument("--events", type=int, default=10_000_000)
        parser.add_argument("--months", type=int, default=2)
        parser.add_argument("--chunk", type=int, default=500_000)
        parser.add_argument("--jobs", type=int, default=2, help="Parallel insert connections.")
        parser.add_argument("--seed", type=int, default=42)

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("seed_benchmark needs PostgreSQL (set DATABASE_URL).")
        if Client.objects.filter(slug__startswith=SLUG_PREFIX).exists():
            raise CommandError("Benchmark clients already exist: use a fresh database.")
        rng = random.Random(options["seed"])
        began = time.perf_counter()
        self._step("rates", lambda: call_command("load_model_rates", verbosity=0))
        now = timezone.now()
        first_month = current_month(now)
        for _ in range(options["months"] - 1):
            first_month = previous_month(first_month)
        start = day_bounds(first_month)[0]
        days = (local_day(now) - first_month).days + 1
        client_ids, project_ids = self._step(
            "clients", lambda: self._clients(options["clients"], rng)
        )
        models = self._models(first_month)
        params = {
            "start": start,
            "days": days,
            "now": now,
            "n_clients": len(client_ids),
            "total": options["events"],
            "client_ids": client_ids,
            "project_ids": project_ids,
        }
        partitioned = is_partitioned()
        if partitioned:
            self._step("partitions", lambda: partitions_ensure(since=first_month, now=now))
        self.keys_pkey_dropped = False
        restore = self._step("drop indexes", self._drop_indexes)
        if partitioned:
            self._sql(f"ALTER TABLE {UsageEvent._meta.db_table} DISABLE TRIGGER {KEY_TRIGGER}")
        try:
            self._step(
                f"{options['events']:,} events",
                lambda: self._events(
                    options["events"], options["chunk"], options["jobs"], params, models
                ),
            )
        finally:
            self._step("restore indexes", lambda: self._restore(restore, options["jobs"]))
            if partitioned:
                self._step("event keys", lambda: self._keys(client_ids))
        # The 200 clients and their projects too: the planner otherwise keeps the empty
        # tables' estimates until autovacuum gets to them.
        self._step(
            "analyze",
            lambda: self._sql(
                "ANALYZE tracking_usageevent; ANALYZE agency_client; ANALYZE agency_project"
            ),
        )
        written = self._step(
            "rollups",
            lambda: rollups_rebuild_period(start=first_month, end=local_day(now)),
        )
        self.stdout.write(f"  {written:,} daily rollup rows")
        self._step(
            "analyze",
            lambda: self._sql("ANALYZE billing_dailyrollup; ANALYZE billing_hourlyrollup"),
        )
        self._step("budgets", lambda: self._budgets(rng, now))
        self._step("recompute", lambda: budgets_recompute(now=now))
        self.stdout.write(self.style.SUCCESS(f"done in {time.perf_counter() - began:.1f} s"))

    def _step(self, label: str, action: Any) -> Any:
        began = time.perf_counter()
        result = action()
        self.stdout.write(f"{label}: {time.perf_counter() - began:.1f} s")
        self.stdout.flush()
        return result

    def _sql(self, sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    @transaction.atomic
    def _clients(self, count: int, rng: random.Random) -> tuple[list[int], list[int]]:
        client_ids: list[int] = []
        project_ids: list[int] = []
        for index in range(1, count + 1):
            client = Client.objects.create(
                name=f"Benchmark Client {index:03d}",
                slug=f"{SLUG_PREFIX}{index:03d}",
                markup_pct=Decimal(rng.choice(["0", "10", "15", "20", "25", "30", "50"])),
                billing_email=f"accounts@bench-{index:03d}.example",
            )
            client_ids.append(client.pk)
            for name in ("web-app", "support-bot", "batch-jobs")[:PROJECTS_PER_CLIENT]:
                project_ids.append(Project.objects.create(client=client, name=name).pk)
        return client_ids, project_ids

    def _models(self, first_month: Any) -> str:
        total = sum(weight for _, _, weight in MODEL_MIX)
        low = Decimal(0)
        rows = []
        for provider, model, weight in MODEL_MIX:
            high = low + weight / total
            rate = (
                ModelRate.objects.filter(
                    provider=provider, model=model, effective_from__lte=first_month
                )
                .order_by("-effective_from")
                .first()
                or ModelRate.objects.filter(provider=provider, model=model)
                .order_by("-effective_from")
                .first()
            )
            if rate is None and model != UNPRICED_MODEL:
                raise CommandError(f"No rate for {provider}/{model}: load_model_rates first.")
            prices = (
                [
                    rate.input_usd_per_mtok,
                    rate.output_usd_per_mtok,
                    rate.cache_write_5m_usd_per_mtok,
                    rate.cache_read_usd_per_mtok or rate.input_usd_per_mtok,
                ]
                if rate
                else [None, None, None, None]
            )
            literal = ", ".join("NULL::numeric" if p is None else f"{p}::numeric" for p in prices)
            upper = "1.0000001" if model == MODEL_MIX[-1][1] else f"{high:.9f}"
            rate_id = f"{rate.pk}::bigint" if rate else "NULL::bigint"
            rows.append(f"({low:.9f}, {upper}, '{provider}', '{model}', {rate_id}, {literal})")
            low = high
        return ", ".join(rows)

    def _drop_indexes(self) -> list[str]:
        """On an empty event table, drop its secondary indexes and unique constraint for
        the bulk load (building them once afterwards is several times faster than
        maintaining them row by row). Returns the statements that restore them."""
        if UsageEvent.objects.exists():
            return []
        table = UsageEvent._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'u'",
                [table],
            )
            constraints = cursor.fetchall()
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s "
                "AND indexname <> %s",
                [table, f"{table}_pkey"],
            )
            names = {name for name, _ in constraints}
            indexes = [(n, d) for n, d in cursor.fetchall() if n not in names]
            for name, _ in constraints:
                cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            for name, _ in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
            if is_partitioned():
                # The event keys are written in one pass after the load (``_keys``), their
                # primary key built once like the indexes.
                cursor.execute(f"ALTER TABLE {KEYS} DROP CONSTRAINT {KEYS_PKEY}")
                self.keys_pkey_dropped = True
        # A partitioned table's index reads "ON ONLY" (the parent alone); recreated
        # without it, it is built on every partition.
        return [f'ALTER TABLE {table} ADD CONSTRAINT "{n}" {d}' for n, d in constraints] + [
            d.replace(" ON ONLY ", " ON ", 1) for _, d in indexes
        ]

    @transaction.atomic
    def _keys(self, client_ids: list[int]) -> None:
        """The loaded events' keys (tracking.partitions), which the load's insert left to
        this one statement instead of a trigger call per row; then the trigger is back."""
        table = UsageEvent._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {KEYS} (client_id, event_id, row_id, occurred_at) "
                f"SELECT client_id, event_id, id, occurred_at FROM {table} "
                "WHERE client_id = ANY(%s)",
                [client_ids],
            )
            if self.keys_pkey_dropped:
                cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
                cursor.execute(
                    f"ALTER TABLE {KEYS} ADD CONSTRAINT {KEYS_PKEY} PRIMARY KEY (client_id, event_id)"
                )
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {KEY_TRIGGER}")
            cursor.execute(f"ANALYZE {KEYS}")

    def _restore(self, statements: list[str], jobs: int) -> None:
        def run(statement: str) -> None:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SET maintenance_work_mem = '512MB'")
                    cursor.execute(statement)
            finally:
                connections.close_all()

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(run, statements))

    def _events(
        self, total: int, chunk: int, jobs: int, params: dict[str, Any], models: str
    ) -> None:
        sql = _INSERT.format(model_values=models, **bucket_sql())
        ranges = [(lo, min(lo + chunk - 1, total)) for lo in range(1, total + 1, chunk)]

        def insert(bounds: tuple[int, int]) -> None:
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                    row = cursor.fetchone()
                    if row and row[0]:
                        # Generated ids are valid by construction: skip per-row FK triggers.
                        cursor.execute("SET LOCAL session_replication_role = replica")
                    cursor.execute(sql, {**params, "lo": bounds[0], "hi": bounds[1]})
                self.stdout.write(f"  events {bounds[0]:,}–{bounds[1]:,}")
                self.stdout.flush()
            finally:
                connections.close_all()

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(insert, ranges))

    def _budgets(self, rng: random.Random, now: datetime) -> None:
        """Budgets around each client's projected month: ~10% none, the rest spread so
        that green, yellow and red all occur."""
        month = current_month(now)
        totals = month_totals(month=month)
        elapsed, hours = month_hours(month, now)
        for client in Client.objects.filter(slug__startswith=SLUG_PREFIX):
            if rng.random() < 0.1:
                continue
            billed = totals[client.pk].billed_usd if client.pk in totals else Decimal(0)
            projected = project_month(billed, elapsed, hours)
            factor = Decimal(str(round(rng.uniform(0.7, 1.6), 2)))
            budget = max(Decimal("10"), round_money(projected * factor))
            client.monthly_budget_usd = budget
            client.save(update_fields=["monthly_budget_usd"])  # recorded in history
