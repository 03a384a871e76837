"""HTTP answers every app shares: the API's one JSON error shape, and the 503 given when
the database or Redis cannot be reached."""

from __future__ import annotations

from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What "a backing service is down" raises: the database refusing or dropping connections
# (also a deadlock or a statement timeout: transient too), Redis refusing or timing out.
UNAVAILABLE = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError)
# Long enough for a database restart or failover; the SDK waits this long, then resends.
RETRY_AFTER_SECONDS = 30


def api_error(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    """The one shape of every whole-request API error: ``{"error": {code, message, field?}}``."""
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return JsonResponse({"error": error}, status=status, headers=headers)


def unavailable(request: HttpRequest) -> HttpResponse:
    """503 with Retry-After: JSON on the API (clients retry the same batch, safe by event
    ids), a plain page elsewhere. Rendered without the request's context: the user and
    session would need the database that is down."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if request.path.startswith("/api/"):
        return api_error(
            503,
            "unavailable",
            "The service is briefly unavailable; retry the same request later.",
            headers=headers,
        )
    return HttpResponse(render_to_string("503.html"), status=503, headers=headers)


class ServiceUnavailableMiddleware:
    """Turns a database or Redis outage during a view into a 503, never a 500 (an HTML
    debug page in development). Everything else propagates as before."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, UNAVAILABLE):
            return unavailable(request)
        return None
