"""Ingest benchmark: POST /api/v1/usage on gunicorn + PostgreSQL, then the COPY floor.

    .venv/bin/python benchmarks/ingest_bench.py [--batches 300] [--senders 4] [--workers 3]

What it does:

1. Drops and creates a scratch database (default ``clientmeter_bench`` on the local
   PostgreSQL; ``--database-url`` to change), migrates it and loads the shipped rates.
2. Creates one client and its API key, and builds ``--batches`` request bodies of
   ``--batch-size`` realistic events (tracking/demo.py usage objects: Anthropic with cache
   reads and writes, OpenAI, Gemini; projects, features, users, prompt hashes).
3. Starts gunicorn (``--workers`` sync workers, production settings: DEBUG off) and
   posts the bodies from ``--senders`` threads of this process, after a short warm-up.
   Prints events/second and the batch latency percentiles, then replays a slice of the
   batches (all duplicates) and prints that too.
4. Copies the very rows ingest stored into an identical plain table (same indexes, and a
   unique index on the event key) with PostgreSQL COPY, one transaction per batch, and
   prints that floor.
5. With ``--cpu-batches N`` (default 40): posts N more batches in this process, straight
   to the view (Django's RequestFactory, no HTTP, no server), and prints the Python CPU
   time each 500-event batch costs: JSON parsing, validation, pricing, the insert's
   client side and the response body. Less noisy than throughput on a shared machine.

The clock is fixed to noon UTC on the 15th of last month (``floor.mid_month``) in the
gunicorn workers (``benchmarks/gunicorn_clock.py``) and in this process, as in the other
benchmarks. Each figure line ends with the load average (1 minute) when it was taken, and the ratio
of ingest to its COPY floor is printed.

With ``--keep-database`` it posts into ``--database-url`` as it is, for example a
``seed_benchmark`` database with 30 million events (the 100M plan's question: does a full
table slow ingest?), and measures the floor twice: into an empty copy of the table and
into the full table itself.

Everything runs on this machine, load generator included, so the figures are
conservative. Targets (issue 3): at least 5,000 events/s sustained, p99 under 300 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import time_machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from floor import mid_month  # noqa: E402  (this folder, on the path when run as a script)

from tracking import demo  # noqa: E402  (a plain module: no Django needed)

PYTHON = str(Path(sys.executable))
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def _django_env(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        DATABASE_CONN_MAX_AGE="600",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="bench-" + "k" * 60,
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_SECURE_COOKIES="0",
        ALLOWED_HOSTS="127.0.0.1",
        INGEST_RATE_LIMIT_PER_MINUTE="100000000",
        LOG_LEVEL="WARNING",
    )
    env.update(extra or {})
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def recreate_database(database_url: str) -> None:
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def make_event(rng: random.Random, now: datetime) -> dict[str, Any]:
    kind = rng.choices(["anthropic", "openai", "google"], [6, 2, 2])[0]
    if kind == "openai":
        model = rng.choice(["gpt-5-mini", "gpt-4o-2024-08-06", "gpt-4.1"])
        usage = demo.openai_usage(rng)
    elif kind == "google":
        model = rng.choice(["gemini-2.5-flash", "gemini-2.5-pro"])
        usage = demo.gemini_usage(rng)
    else:
        names, weights = zip(*demo.ANTHROPIC_MODELS, strict=True)
        model = rng.choices(names, weights)[0]
        usage = demo.anthropic_usage(rng, search=rng.random() < 0.05)
    occurred = now - timedelta(seconds=rng.randint(0, 3 * 86400))
    return {
        "id": f"msg_{uuid.UUID(int=rng.getrandbits(128)).hex}",
        "provider": kind,
        "model": model,
        "occurred_at": occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "usage": usage,
        "project": rng.choice(["support-bot", "doc-summarizer", "search"]),
        "feature": rng.choice(demo.FEATURES),
        "user": f"user-{rng.randint(1, 400)}",
        "prompt_hash": demo.prompt_hash(f"prompt-{rng.randint(1, 30)}"),
        "request_id": f"req_{rng.getrandbits(64):016x}",
        "status_code": 200,
        "latency_ms": rng.randint(300, 9000),
    }


def build_bodies(count: int, size: int, seed: int, now: datetime | None = None) -> list[bytes]:
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    return [
        json.dumps({"events": [make_event(rng, now) for _ in range(size)]}).encode()
        for _ in range(count)
    ]


def post(port: int, key: str, body: bytes) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "POST",
        "/api/v1/usage",
        body=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {payload[:500]!r}")
    return elapsed, json.loads(payload)


def run_load(
    port: int, key: str, bodies: list[bytes], senders: int
) -> tuple[float, list[float], dict[str, int]]:
    """Post every body once from ``senders`` threads; wall time, latencies, counts."""
    latencies: list[float] = []
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0}
    lock = threading.Lock()
    queue = list(reversed(bodies))

    errors: list[BaseException] = []

    def sender() -> None:
        while not errors:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            try:
                elapsed, result = post(port, key, body)
            except Exception as exc:
                errors.append(exc)
                return
            with lock:
                latencies.append(elapsed)
                for name in counts:
                    counts[name] += result[name]

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"a request failed: {errors[0]}")
    return time.perf_counter() - started, latencies, counts


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def load() -> str:
    return f"[load {os.getloadavg()[0]:.2f}]"


def report(label: str, events: int, wall: float, latencies: list[float]) -> float:
    ms = [v * 1000 for v in latencies]
    print(
        f"{label}: {events:,} events in {wall:.1f} s = {events / wall:,.0f} events/s; "
        f"batch latency p50 {statistics.median(ms):.0f} ms, p95 {percentile(ms, 95):.0f} ms, "
        f"p99 {percentile(ms, 99):.0f} ms, max {max(ms):.0f} ms {load()}"
    )
    return events / wall


def cpu_per_batch(env: dict[str, str], key: str, bodies: list[bytes]) -> list[float]:
    """Python CPU seconds per body, posted to the ingest view in this very process."""
    # Imported here, not at the top: Django reads its settings from the environment at
    # import and setup, and the rest of this script runs without Django at all.
    os.environ.update(env, DJANGO_SETTINGS_MODULE="agency.settings")
    import django

    django.setup()
    from django.test import RequestFactory

    from tracking.api import usage_create

    factory = RequestFactory(headers={"Authorization": f"Bearer {key}"})
    seconds = []
    for body in bodies:
        request = factory.post("/api/v1/usage", body, content_type="application/json")
        started = time.process_time()
        response = usage_create(request)
        seconds.append(time.process_time() - started)
        if response.status_code != 200 or json.loads(response.content)["rejected"]:
            raise SystemExit(f"in-process batch failed: {response.content[:300]!r}")
    return seconds


def copy_floor(
    database_url: str, batch_size: int, *, into_itself: bool = False
) -> tuple[int, float]:
    """COPY the events ingest stored for the bench client into an identical empty table,
    one transaction per batch; with ``into_itself``, into the event table itself (beside
    the rows already there, under new ids, deleted afterwards): the floor on a full table."""
    with psycopg.connect(database_url) as conn:
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'tracking_usageevent' AND column_name <> 'id' "
                "ORDER BY ordinal_position"
            )
        ]
        column_list = ", ".join(f'"{c}"' for c in columns)
        # As text: COPY's own format, and jsonb then needs no adapter on the way back.
        as_text = ", ".join(
            "\"event_id\" || '-floor'" if into_itself and c == "event_id" else f'"{c}"::text'
            for c in columns
        )
        rows = conn.execute(
            f"SELECT {as_text} FROM tracking_usageevent WHERE client_id = "
            "(SELECT id FROM agency_client WHERE slug = 'bench') ORDER BY id"
        ).fetchall()
        target = "tracking_usageevent" if into_itself else "bench_copy"
        if not into_itself:
            conn.execute("DROP TABLE IF EXISTS bench_copy")
            conn.execute("CREATE TABLE bench_copy (LIKE tracking_usageevent INCLUDING ALL)")
            # A partitioned event table keeps its (client, event_id) key unique in a table
            # of its own (tracking 0006), which LIKE does not copy: the floor keeps it too.
            conn.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS bench_copy_key "
                "ON bench_copy (client_id, event_id)"
            )
        conn.commit()
        started = time.perf_counter()
        for start in range(0, len(rows), batch_size):
            with conn.cursor().copy(f"COPY {target} ({column_list}) FROM STDIN") as copy:
                for row in rows[start : start + batch_size]:
                    copy.write_row(row)
            conn.commit()
        seconds = time.perf_counter() - started
        if into_itself:
            conn.execute(
                "DELETE FROM tracking_usageevent WHERE event_id LIKE '%-floor' AND client_id = "
                "(SELECT id FROM agency_client WHERE slug = 'bench')"
            )
            conn.commit()
        return len(rows), seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(server: subprocess.Popen[bytes], port: int, deadline: float) -> None:
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit("gunicorn exited")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/clientmeter_bench"
    )
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--cpu-batches", type=int, default=40, help="0: skip step 5")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        help="cache, rate limits and the Celery broker, as in production",
    )
    parser.add_argument(
        "--keep-database",
        action="store_true",
        help="post into --database-url as it is (e.g. a seed_benchmark database with tens "
        "of millions of events) instead of a fresh scratch one; the floor is then also "
        "measured into the full event table",
    )
    args = parser.parse_args()

    name = urlsplit(args.database_url).path.lstrip("/")
    env = _django_env(args.database_url, {"REDIS_URL": args.redis_url})
    port = args.port or free_port()
    if args.keep_database:
        with psycopg.connect(args.database_url) as conn:
            found = conn.execute("SELECT count(*) FROM tracking_usageevent").fetchone()
            existing = found[0] if found else 0
            conn.execute(
                "DELETE FROM tracking_usageevent WHERE client_id IN "
                "(SELECT id FROM agency_client WHERE slug = 'bench')"
            )
        print(f"database {name} as it is: {existing:,} events already stored")
    else:
        print(f"scratch database {name}: migrating…")
        recreate_database(args.database_url)
        _manage(env, "migrate", "--noinput")
        _manage(env, "load_model_rates")
    _manage(
        env,
        "shell",
        "-c",
        "from agency.models import Client; "
        "Client.objects.get_or_create(slug='bench', defaults={'name': 'Bench'})",
    )
    key = _manage(env, "create_api_key", "--client", "bench", "--name", "bench").strip()

    warmup = 10
    # Noon on the 15th of last month, in the server's workers and here: the events (up to
    # three days before it) land in one month's partition whatever the date of the run.
    clock = mid_month()
    print(f"clock fixed to {clock:%Y-%m-%d %H:%M} UTC (time-machine, ticking)")
    print(f"building {args.batches + warmup} bodies of {args.batch_size} events…")
    bodies = build_bodies(args.batches + warmup, args.batch_size, seed=3, now=clock)

    server = subprocess.Popen(
        [
            GUNICORN, "agency.wsgi:application", "--bind", f"127.0.0.1:{port}",
            "--config", str(ROOT / "benchmarks" / "gunicorn_clock.py"),
            "--workers", str(args.workers), "--worker-class", "sync", "--timeout", "120",
        ],
        cwd=ROOT, env={**env, "BENCH_CLOCK": clock.isoformat()},
    )  # fmt: skip
    try:
        wait_for(server, port, time.time() + 30)
        run_load(port, key, bodies[:warmup], args.senders)
        print(
            f"posting {args.batches} batches of {args.batch_size} from {args.senders} "
            f"sender threads to gunicorn ({args.workers} sync workers)…"
        )
        generator_cpu = time.process_time()
        wall, latencies, counts = run_load(port, key, bodies[warmup:], args.senders)
        generator_cpu = time.process_time() - generator_cpu
        if counts["accepted"] != args.batches * args.batch_size:
            raise SystemExit(f"not everything was accepted: {counts}")
        rate = report("ingest (new events)", counts["accepted"], wall, latencies)
        # The bodies are encoded before the run: the senders only post and read answers.
        print(
            f"load generator (this process): {generator_cpu:.2f} s of CPU in {wall:.1f} s "
            f"({100 * generator_cpu / wall:.0f}% of one core)"
        )
        replay = bodies[warmup : warmup + max(1, args.batches // 5)]
        wall, latencies, counts = run_load(port, key, replay, args.senders)
        if counts["duplicates"] != len(replay) * args.batch_size:
            raise SystemExit(f"replay was not all duplicates: {counts}")
        report("replay (all duplicates)", counts["duplicates"], wall, latencies)
    finally:
        server.terminate()
        server.wait(timeout=30)

    rows, seconds = copy_floor(args.database_url, args.batch_size)
    print(
        f"COPY floor: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s "
        f"(batches of {args.batch_size}, one transaction each) {load()}"
    )
    print(f"ingest ÷ floor: {rate / (rows / seconds):.2f}")
    if args.keep_database:
        rows, seconds = copy_floor(args.database_url, args.batch_size, into_itself=True)
        print(
            f"COPY floor into the full event table: {rows:,} rows in {seconds:.1f} s = "
            f"{rows / seconds:,.0f} rows/s {load()}"
        )
        print(f"ingest ÷ that floor: {rate / (rows / seconds):.2f}")
    if args.cpu_batches:
        bodies = build_bodies(args.cpu_batches, args.batch_size, seed=4, now=clock)
        with time_machine.travel(clock, tick=True):
            ms = sorted(s * 1000 for s in cpu_per_batch(env, key, bodies))
        print(
            f"in-process CPU per {args.batch_size}-event batch ({len(ms)} batches): best "
            f"{ms[0]:.0f} ms, median {statistics.median(ms):.0f} ms, p90 {percentile(ms, 90):.0f} "
            f"ms {load()}"
        )


if __name__ == "__main__":
    main()
