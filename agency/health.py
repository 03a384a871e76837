"""Readiness: can this process serve requests? The database answers, every migration is
applied, and Redis (when configured) answers. Liveness (``/healthz``) checks none of it:
a process whose database is down is alive, and restarting it would not help."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse

from agency.http import UNAVAILABLE

logger = logging.getLogger(__name__)


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _migrations() -> str:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return f"{len(plan)} unapplied" if plan else "ok"


def _redis() -> str:
    if not settings.REDIS_URL:
        return "not configured"
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def readiness() -> dict[str, str]:
    """Each check's state: "ok", or what is wrong. Never raises."""
    checks: dict[str, str] = {}
    try:
        checks["database"] = _database()
        checks["migrations"] = _migrations()
    except UNAVAILABLE:
        logger.warning("readiness: database unavailable", exc_info=True)
        checks.setdefault("database", "unavailable")
        checks["migrations"] = "unknown"
    try:
        checks["redis"] = _redis()
    except UNAVAILABLE:
        logger.warning("readiness: Redis unavailable", exc_info=True)
        checks["redis"] = "unavailable"
    return checks


def is_ready(checks: dict[str, str]) -> bool:
    return all(state in ("ok", "not configured") for state in checks.values())


class ProbeMiddleware:
    """Answer ``/healthz`` and ``/readyz`` before anything reads the Host header.

    An orchestrator probes the container at its own address (docker-compose's healthcheck
    asks 127.0.0.1), which production's ALLOWED_HOSTS rightly does not list. The probes
    reveal nothing but "ok" and the checks' states, so they skip host validation; every
    other path goes on through the stack and is refused as usual. First in MIDDLEWARE.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from agency import views  # the views import this module

        probe = {"/healthz": views.healthz, "/readyz": views.readyz}.get(request.path_info)
        if probe is not None and request.method in ("GET", "HEAD"):
            return probe(request)
        return self.get_response(request)
