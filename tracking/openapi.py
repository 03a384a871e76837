"""The OpenAPI 3.1 document of the JSON API, served at /api/v1/openapi.json.

Written by hand to match tracking/ingest.py and tracking/api.py; schemathesis fuzzes the
running app against it in the test suite (tests/tracking/test_schemathesis.py), so a
drift between this document and the behaviour fails CI. The budget endpoint is billing's
but lives in the same document, so the SDK and the fuzzer see one spec.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


def _error(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
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


def _optional_string(description: str, max_length: int) -> dict[str, Any]:
    return {"type": ["string", "null"], "maxLength": max_length, "description": description}


def _event_schema() -> dict[str, Any]:
    tag = "Optional tag, at most 200 characters."
    return {
        "type": "object",
        "required": ["id", "model", "usage"],
        "description": "One LLM call. Unknown fields are ignored (never stored).",
        "properties": {
            "id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "pattern": "^[\\x20-\\x7e]{1,128}$",
                "description": "Idempotency key, unique per client, printable ASCII. "
                "Resending the same id with the same content is a duplicate.",
            },
            "client": {
                "type": ["string", "null"],
                "description": "Client slug. Required with an agency-wide key; with a client "
                "key it must be that key's client (or be left out).",
            },
            "model": {"type": "string", "minLength": 1, "maxLength": 128},
            "usage": {
                "type": "object",
                "description": "The provider's usage object exactly as its API returned it. "
                "Token counts are integers from 0 to 100,000,000, and one call counts at most "
                "100,000,000 tokens in all.",
                "additionalProperties": True,
            },
            "provider": {"type": "string", "enum": ["anthropic", "openai", "google"]},
            "occurred_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "RFC 3339 with an offset. Default: now. At most 5 minutes in "
                "the future; older than the backfill window (default 62 days) is rejected "
                "as too_old unless an agency-wide key sends backfill: true.",
            },
            "backfill": {"type": "boolean", "default": False},
            "project": _optional_string(
                "Project name; created under the client if it does not exist.", 200
            ),
            "feature": _optional_string(tag, 200),
            "user": _optional_string("The client's opaque end-user id (not an email).", 200),
            "team": _optional_string(tag, 200),
            "deploy_sha": _optional_string(tag, 200),
            "prompt_hash": _optional_string(tag, 200),
            "request_id": _optional_string("The provider's request id.", 200),
            "service_tier": _optional_string(
                "Overrides the usage object's service tier (e.g. batch).", 32
            ),
            "status_code": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": 2147483647,
            },
            "latency_ms": {"type": ["integer", "null"], "minimum": 0, "maximum": 2147483647},
            "metadata": {
                "type": ["object", "null"],
                "maxProperties": 20,
                "propertyNames": {"minLength": 1, "maxLength": 64},
                "additionalProperties": {"type": "string", "maxLength": 200},
            },
        },
        "additionalProperties": True,
    }


def _result_schema() -> dict[str, Any]:
    problem = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string"},
            "field": {"type": "string", "examples": ["events[3].usage.input_tokens"]},
            "message": {"type": "string"},
        },
    }
    return {
        "type": "object",
        "required": ["id", "status"],
        "properties": {
            "id": {
                "type": ["string", "null"],
                "description": "The event's id; null when it had no valid id.",
            },
            "status": {"type": "string", "enum": ["accepted", "duplicate", "rejected"]},
            "cost_usd": {
                "type": ["string", "null"],
                "pattern": DECIMAL_PATTERN,
                "description": "Raw provider cost, exact; null when the model has no rate.",
            },
            "errors": {
                "type": "array",
                "items": problem,
                "description": "Why a rejected event was refused. Codes: invalid, required, "
                "forbidden_client, unknown_client, too_old, in_future, duplicate_id, conflict.",
            },
            "warnings": {
                "type": "array",
                "items": problem,
                "description": "Codes: unpriced_model, needs_review.",
            },
        },
    }


def _budget_path() -> dict[str, Any]:
    money = {"type": "string", "pattern": DECIMAL_PATTERN}
    nullable_money = {"type": ["string", "null"], "pattern": DECIMAL_PATTERN}
    status = {"type": ["string", "null"], "enum": ["green", "yellow", "red", "", None]}
    return {
        "get": {
            "operationId": "getBudget",
            "summary": "A client's budget position for a month",
            "description": "Same API keys as ingest; a client key sees only its own client "
            "(another client's slug is 404).",
            "parameters": [
                {
                    "name": "client",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                },
                {
                    "name": "month",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                    "description": "YYYY-MM; default the current month.",
                },
            ],
            "responses": {
                "200": {
                    "description": "The budget position.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": [
                                    "client",
                                    "month",
                                    "budget_usd",
                                    "cost_usd",
                                    "billed_usd",
                                    "percent_used",
                                    "status",
                                    "projected_billed_usd",
                                    "projected_status",
                                ],
                                "properties": {
                                    "client": {"type": "string"},
                                    "month": {"type": "string"},
                                    "budget_usd": nullable_money,
                                    "cost_usd": money,
                                    "billed_usd": money,
                                    "percent_used": nullable_money,
                                    "status": status,
                                    "projected_billed_usd": money,
                                    "projected_status": status,
                                    "unpriced_events": {
                                        "type": "integer",
                                        "minimum": 0,
                                        "description": "Events with no rate yet: actual "
                                        "spend is higher than these figures.",
                                    },
                                },
                            }
                        }
                    },
                },
                "400": _error("Bad month or missing client."),
                "401": _error("Missing, unknown or revoked API key."),
                "404": _error("No such client for this key."),
                "429": _RATE_LIMITED,
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    max_events = settings.INGEST_MAX_EVENTS
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ClientMeter API",
            "version": "1.0.0",
            "description": "Post LLM usage per client; read a client's budget position.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}],
        "paths": {
            "/usage": {
                "post": {
                    "operationId": "postUsage",
                    "summary": "Record a batch of usage events",
                    "description": "One result per event, in order. Accepted events are "
                    "committed before the response. Retry 429 and 5xx with the same batch; "
                    "do not retry other 4xx.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["events"],
                                    "properties": {
                                        "events": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": max_events,
                                            "items": {"$ref": "#/components/schemas/Event"},
                                        }
                                    },
                                },
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
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/IngestResponse"}
                                }
                            },
                        },
                        "400": _error('Malformed JSON, or not {"events": [...]} with events.'),
                        "401": _error(
                            "Missing, unknown or revoked API key.",
                            headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
                        ),
                        "405": _error("Only POST."),
                        "413": _error(
                            f"More than {max_events} events, or a body over "
                            f"{settings.INGEST_MAX_BODY_BYTES} bytes."
                        ),
                        "415": _error("Content-Type is not application/json."),
                        "429": _RATE_LIMITED,
                    },
                }
            },
            "/budget": _budget_path(),
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: cm_live_<prefix>_<secret>.",
                }
            },
            "schemas": {
                "Event": _event_schema(),
                "EventResult": _result_schema(),
                "IngestResponse": {
                    "type": "object",
                    "required": ["accepted", "duplicates", "rejected", "results"],
                    "properties": {
                        "accepted": {"type": "integer", "minimum": 0},
                        "duplicates": {"type": "integer", "minimum": 0},
                        "rejected": {"type": "integer", "minimum": 0},
                        "results": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/EventResult"},
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "field": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
    }
