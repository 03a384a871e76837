"""gunicorn settings for the benchmarks: each worker's clock is fixed, ticking, to the
instant in ``BENCH_CLOCK`` (ISO 8601), as the in-process benchmarks fix theirs with
time-machine. Used as ``gunicorn -c benchmarks/gunicorn_clock.py``."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import time_machine


def post_fork(server: Any, worker: Any) -> None:
    # Before the worker loads the application: everything it does sees the fixed clock.
    time_machine.travel(datetime.fromisoformat(os.environ["BENCH_CLOCK"]), tick=True).start()
