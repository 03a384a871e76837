"""API-key check benchmark: ``api_key_lookup`` as every API request runs it.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<a migrated database> \\
    REDIS_URL=redis://127.0.0.1:6379/<your db> .venv/bin/python benchmarks/key_bench.py

Prints p50/p99 in microseconds of: a cached lookup (one Redis MGET of the cache generation
and the entry, SHA-256 of the key, constant-time compare), the same right after a revoke
of another key (a new generation: one database query, then cached again), and the floor,
a bare Redis GET of the same entry; with the load average. Target: under 1 ms at p99.
Creates one client and two keys, and deletes them at the end.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agency.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ["API_KEY_CACHE_SECONDS"] = "60"

import django

django.setup()

from django.core.cache import cache  # noqa: E402

from agency.models import Client  # noqa: E402
from tracking.keys import api_key_create, api_key_lookup, api_keys_forget  # noqa: E402

RUNS = 3000


def percentiles(action: Callable[[], object]) -> str:
    action()
    timings = []
    for _ in range(RUNS):
        began = time.perf_counter()
        action()
        timings.append((time.perf_counter() - began) * 1e6)
    timings.sort()
    return f"p50 {timings[RUNS // 2]:6.0f} us   p99 {timings[RUNS * 99 // 100]:6.0f} us"


def main() -> None:
    if not os.environ.get("REDIS_URL"):
        sys.exit("set REDIS_URL: the key cache is only used with a shared cache")
    client = Client.objects.create(slug="key-bench", name="Key bench")
    try:
        key, raw_key = api_key_create(name="bench", client=client)

        def lookup() -> None:
            assert api_key_lookup(raw_key) is not None

        def after_a_revoke() -> None:
            api_keys_forget()  # what revoking, rotating or deleting any key does
            lookup()

        cache.set("key-bench:floor", key, 60)
        print(f"load average {os.getloadavg()[0]:.2f}, {RUNS} runs each")
        print(f"cached lookup:               {percentiles(lookup)}")
        print(f"lookup after a revoke:       {percentiles(after_a_revoke)}")
        print(f"floor, one Redis GET:        {percentiles(lambda: cache.get('key-bench:floor'))}")
        print(f"load average {os.getloadavg()[0]:.2f}")
    finally:
        client.api_keys.all().delete()
        client.delete()
        cache.delete("key-bench:floor")


if __name__ == "__main__":
    main()
