"""Focused tests of what the fuzz suite found, each first seen as a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fuzz.conftest import World
from tracking.models import UsageEvent

pytestmark = pytest.mark.django_db


def _post(http: Any, key: str, events: list[Any]) -> Any:
    # ensure_ascii: a lone surrogate goes out as the JSON escape \ud800, as any client sends it
    body = json.dumps({"events": events}, ensure_ascii=True)
    return http.post(
        "/api/v1/usage", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )


def _event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "model": "claude-sonnet-4-5",
        "usage": {"input_tokens": 10, "output_tokens": 5},
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        # A lone surrogate where msgspec compares text (a Literal, a bool, an int, an
        # unknown key) raised UnicodeEncodeError out of the validator: a 500.
        ({"provider": "\ud800"}, "events[1].provider", "must be one of"),
        ({"provider": "anthropic\udfff"}, "events[1].provider", "must be one of"),
        ({"backfill": "\ud800"}, "events[1].backfill", "must be true or false"),
        ({"status_code": "\ud800"}, "events[1].status_code", "must be a non-negative integer"),
        ({"\ud800": 1}, "events[1]", "must not contain NUL"),
    ],
)
def test_lone_surrogate_anywhere_in_an_event_rejects_that_event_alone(
    client, fuzz_world: World, fields, field, message
):
    response = _post(client, fuzz_world.keys["acme"], [_event("ok"), _event("bad", **fields)])

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected"]
    [problem] = results[1]["errors"]
    assert problem["field"] == field
    assert problem["message"].startswith(message)
    assert set(
        UsageEvent.objects.filter(client=fuzz_world.acme).values_list("event_id", flat=True)
    ) >= {"ok"}
    assert not UsageEvent.objects.filter(event_id="bad").exists()


@pytest.mark.parametrize("model", ["agency/client", "tracking/modelrate", "tracking/apikey"])
@pytest.mark.parametrize("object_id", ["abc", "1.5", "%00"])
def test_admin_history_of_an_id_that_is_not_a_number_is_404(
    client, fuzz_world: World, model, object_id
):
    # django-simple-history's history page filtered by the raw id: ValueError, a 500.
    client.force_login(fuzz_world.users["admin"])
    response = client.get(f"/admin/{model}/{object_id}/history/")

    assert response.status_code == 404


def test_admin_history_of_a_real_object_still_shows(client, fuzz_world: World):
    client.force_login(fuzz_world.users["admin"])
    response = client.get(f"/admin/agency/client/{fuzz_world.acme.pk}/history/")

    assert response.status_code == 200
    assert b"Acme" in response.content
