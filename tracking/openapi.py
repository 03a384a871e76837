"""The OpenAPI 3.1 document of the JSON API, served at /api/v1/openapi.json.

Every request and response schema is generated from the msgspec Structs in
tracking/schema.py, the same classes the views validate and encode with; this module adds
only what OpenAPI says around them (paths, status codes, headers, an example).
schemathesis fuzzes the running app against the document in the test suite
(tests/tracking/test_schemathesis.py). The budget endpoint is billing's but lives in the
same document, so the SDK and the fuzzer see one spec.
"""

from __future__ import annotations

from typing import Any

import msgspec
from django.conf import settings

from tracking.schema import Budget, BudgetQuery, Error, IngestRequest, IngestResponse

_REF = "#/components/schemas/{name}"


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(struct: type[msgspec.Struct]) -> dict[str, Any]:
    return {"$ref": _REF.format(name=struct.__name__)}


def _error(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json(_ref(Error))}
    if headers:
        response["headers"] = headers
    return response


_RATE_LIMITED = _error(
    "Too many requests for this key.",
    headers={
        "Retry-After": {
            "required": True,
            "description": "Seconds to wait.",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    },
)


def _query_parameters(struct: type[msgspec.Struct]) -> list[dict[str, Any]]:
    """A query-string Struct's fields as OpenAPI parameters (a query value is never null)."""
    _, components = msgspec.json.schema_components([struct], ref_template=_REF)
    declared = components[struct.__name__]
    parameters = []
    for name, prop in declared["properties"].items():
        options = [s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"]
        value = {k: v for k, v in options[0].items() if k not in ("description", "default")}
        parameter = {
            "name": name,
            "in": "query",
            "required": name in declared.get("required", []),
            "schema": value,
        }
        if "description" in options[0]:
            parameter["description"] = options[0]["description"]
        parameters.append(parameter)
    return parameters


def _usage_path() -> dict[str, Any]:
    max_events = settings.INGEST_MAX_EVENTS
    return {
        "post": {
            "operationId": "postUsage",
            "summary": "Record a batch of usage events",
            "description": "One result per event, in order. Accepted events are committed "
            "before the response. Retry 429 and 5xx with the same batch; do not retry other "
            "4xx.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _ref(IngestRequest),
                        "example": {
                            "events": [
                                {
                                    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                                    "client": "acme",
                                    "project": "support-bot",
                                    "model": "claude-sonnet-4-5",
                                    "occurred_at": "2026-11-23T10:15:00Z",
                                    "usage": {"input_tokens": 1200, "output_tokens": 450},
                                }
                            ]
                        },
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Per-event results.",
                    "content": _json(_ref(IngestResponse)),
                },
                "400": _error('Malformed JSON, or not {"events": [...]} with events.'),
                "401": _error(
                    "Missing, unknown or revoked API key.",
                    headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
                ),
                "405": _error("Only POST."),
                "411": _error("No Content-Length (a chunked body is not accepted)."),
                "413": _error(
                    f"More than {max_events} events, or a body over "
                    f"{settings.INGEST_MAX_BODY_BYTES} bytes."
                ),
                "415": _error("Content-Type is not application/json."),
                "429": _RATE_LIMITED,
            },
        }
    }


def _budget_path() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "getBudget",
            "summary": "A client's budget position for a month",
            "description": "Same API keys as ingest; a client key sees only its own client "
            "(another client's slug is 404).",
            "parameters": _query_parameters(BudgetQuery),
            "responses": {
                "200": {"description": "The budget position.", "content": _json(_ref(Budget))},
                "400": _error("Bad month, or no client with an agency-wide key."),
                "401": _error("Missing, unknown or revoked API key."),
                "404": _error("No such client for this key."),
                "429": _RATE_LIMITED,
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(
        [IngestRequest, IngestResponse, Error, Budget], ref_template=_REF
    )
    # The batch limit is a setting, not a constant of the declaration.
    schemas["IngestRequest"]["properties"]["events"]["maxItems"] = settings.INGEST_MAX_EVENTS
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ClientMeter API",
            "version": "1.0.0",
            "description": "Post LLM usage per client; read a client's budget position.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}],
        "paths": {"/usage": _usage_path(), "/budget": _budget_path()},
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: cm_live_<prefix>_<secret>.",
                }
            },
            "schemas": schemas,
        },
    }
