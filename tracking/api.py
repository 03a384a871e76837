"""The JSON API: POST /api/v1/usage and the OpenAPI document. Plain Django, bearer keys."""

from __future__ import annotations

import msgspec
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from tracking.ingest import RequestError, parse_events_body, usage_ingest
from tracking.keys import api_error, api_key_required, rate_limit_hit
from tracking.openapi import openapi_document


def _read_body(request: HttpRequest) -> bytes:
    """The body, refused before reading when its declared length is over the limit.

    A body without a Content-Length (chunked) is refused with 411: Django reads such a
    body as empty, which would answer a well-formed batch with "malformed JSON".
    """
    limit = settings.INGEST_MAX_BODY_BYTES
    too_big = RequestError(413, "body_too_large", f"The body must be at most {limit} bytes.")
    if not request.META.get("CONTENT_LENGTH"):
        raise RequestError(
            411, "length_required", "Send the body with a Content-Length header (not chunked)."
        )
    try:
        declared = int(request.META["CONTENT_LENGTH"])
    except ValueError:
        raise RequestError(400, "invalid_body", "Content-Length is not a number.") from None
    if declared > limit:
        raise too_big
    body = request.read(limit + 1)
    if len(body) > limit:
        raise too_big
    return body


def _post_only(request: HttpRequest) -> HttpResponse | None:
    if request.method == "POST":
        return None
    return api_error(405, "method_not_allowed", "Use POST.", headers={"Allow": "POST"})


# Bearer-key only: the view never reads the session, so CSRF does not apply.
@csrf_exempt
def usage_create(request: HttpRequest) -> HttpResponse:
    return _post_only(request) or _usage_create(request)


@api_key_required
def _usage_create(request: HttpRequest) -> HttpResponse:
    key = request.api_key  # type: ignore[attr-defined]
    wait = rate_limit_hit(
        key, scope="ingest", limit_per_minute=settings.INGEST_RATE_LIMIT_PER_MINUTE
    )
    if wait is not None:
        return api_error(
            429,
            "rate_limited",
            "Too many requests for this key.",
            headers={"Retry-After": str(wait)},
        )
    if (request.content_type or "").lower() != "application/json":
        return api_error(415, "unsupported_media_type", "Send Content-Type: application/json.")
    try:
        events = parse_events_body(_read_body(request))
    except RequestError as exc:
        return api_error(exc.status, exc.code, exc.message, field=exc.field)
    outcome = usage_ingest(events=events, client=key.client, backfill_allowed=key.is_agency_wide)
    return HttpResponse(msgspec.json.encode(outcome.as_response()), content_type="application/json")


@require_GET
def openapi_json(request: HttpRequest) -> HttpResponse:
    return JsonResponse(openapi_document())
