"""A posted body is decoded in one pass, by ``CleanEvent`` when it holds no ``\\u`` escape.

``CleanEvent`` is ``Event`` without its STORABLE patterns (no NUL, no lone surrogate):
JSON text can only spell those characters as escapes, so a body without any cannot hold
them, and the patterns were three quarters of the decode's time. These tests hold the two
declarations to the same verdicts and values, and show what a body with escapes gets.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agency.models import Client
from tests.factories import ClientFactory
from tracking.ingest import parse_events_body, usage_ingest
from tracking.ingest.validate import CleanEvent
from tracking.models import UsageEvent
from tracking.schema import NUL_MESSAGE, STORABLE, Event, IngestRequest
from tracking.services import event_fingerprint

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

_declared = msgspec.json.Decoder(IngestRequest)

tags = st.text(max_size=12) | st.none()
events = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=8),
        "model": st.text(min_size=1, max_size=8),
        "usage": st.dictionaries(
            st.text(max_size=6), st.integers(0, 10**6) | st.text(max_size=6), max_size=4
        ),
    },
    optional={
        "project": tags,
        "user": tags,
        "service_tier": tags,
        "client": tags,
        "metadata": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
    },
)


def test_clean_event_is_the_declaration_without_its_storable_patterns() -> None:
    def without_storable(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: without_storable(v)
                for k, v in node.items()
                if not (k == "pattern" and v == STORABLE)
            }
        if isinstance(node, list):
            return [without_storable(v) for v in node]
        return node

    declared = msgspec.json.schema(Event)["$defs"]["Event"]
    clean = msgspec.json.schema(CleanEvent)["$defs"]["CleanEvent"]

    assert "pattern" in json.dumps(declared["properties"]["model"])
    assert clean["properties"] == without_storable(declared["properties"])
    assert clean["required"] == declared["required"]


@given(st.lists(events, min_size=1, max_size=3))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_without_escapes_both_declarations_agree(batch: list[dict[str, Any]]) -> None:
    # Raw UTF-8 (no \u escapes for non-ASCII); control characters, NUL included, are still
    # escaped by json.dumps, and such bodies are left out here.
    body = json.dumps({"events": batch}, ensure_ascii=False).encode()
    if b"\\u" in body:
        return
    try:
        declared = _declared.decode(body).events
    except msgspec.ValidationError:
        declared = None
    try:
        clean = parse_events_body(body)
    except Exception:  # a RequestError or events as raw values: not all valid
        clean = None
    if declared is None:
        assert clean is None or not all(type(e) is CleanEvent for e in clean)
        return
    assert clean is not None
    assert [type(e) for e in clean] == [CleanEvent] * len(batch)
    assert [msgspec.structs.asdict(e) for e in clean] == [
        msgspec.structs.asdict(e) for e in declared
    ]


def test_a_body_without_escapes_is_decoded_by_clean_event() -> None:
    body = json.dumps(
        {"events": [{"id": "a", "model": "m", "usage": {}, "user": "Zoë"}]}, ensure_ascii=False
    ).encode()

    (event,) = parse_events_body(body)

    assert type(event) is CleanEvent and isinstance(event, Event)
    assert event.user == "Zoë"


def test_a_body_with_an_escape_is_decoded_as_declared() -> None:
    body = json.dumps({"events": [{"id": "a", "model": "m", "usage": {}, "user": "Zoë"}]})
    assert "\\u00eb" in body

    (event,) = parse_events_body(body.encode())

    assert type(event) is Event
    assert event.user == "Zoë"


@pytest.mark.django_db
class TestPosted:
    @pytest.fixture(autouse=True)
    def _frozen(self):
        with time_machine.travel(NOW, tick=False):
            yield

    @pytest.fixture
    def acme(self) -> Client:
        return cast(Client, ClientFactory(slug="acme"))

    def post(self, client: Client, *events: dict[str, Any], ascii: bool = True) -> Any:
        body = json.dumps({"events": list(events)}, ensure_ascii=ascii).encode()
        return usage_ingest(events=parse_events_body(body), client=client)

    def event(self, event_id: str, **fields: Any) -> dict[str, Any]:
        return {
            "id": event_id,
            "model": "claude-sonnet-4-5",
            "occurred_at": "2026-11-30T10:00:00Z",
            "usage": {"input_tokens": 1200, "output_tokens": 450},
            **fields,
        }

    @pytest.mark.parametrize(
        ("field", "value"), [("user", "a\x00b"), ("feature", "\ud800"), ("model", "m\x00")]
    )
    def test_a_nul_or_lone_surrogate_is_refused_alone(self, rates, acme, field, value):
        outcome = self.post(acme, self.event("ok"), self.event("bad", **{field: value}))

        assert [r.status for r in outcome.results] == ["accepted", "rejected"]
        assert outcome.results[1].errors == [
            {"code": "invalid", "field": f"events[1].{field}", "message": NUL_MESSAGE}
        ]

    @pytest.mark.parametrize("where", ["usage", "metadata"])
    def test_a_nul_inside_a_json_object_is_refused(self, rates, acme, where):
        bad = self.event("bad")
        bad[where] = {**bad["usage"], "note": "x\x00"} if where == "usage" else {"k": "\x00"}

        outcome = self.post(acme, self.event("ok"), bad)

        assert [r.status for r in outcome.results] == ["accepted", "rejected"]
        assert outcome.results[1].errors[0]["message"] == NUL_MESSAGE

    @pytest.mark.parametrize("ascii", [True, False])
    def test_text_beyond_ascii_is_stored_either_way(self, rates, acme, ascii):
        usage = {"input_tokens": 1200, "output_tokens": 450, "note": "café 😀"}

        outcome = self.post(acme, self.event("e", user="Zoë", usage=usage), ascii=ascii)

        assert [r.status for r in outcome.results] == ["accepted"]
        stored = UsageEvent.objects.get(client=acme)
        assert (stored.end_user, stored.usage) == ("Zoë", usage)

    @pytest.mark.parametrize(
        "usage",
        [
            {"input_tokens": 1200, "output_tokens": 450, "ratio": 1e16},
            {"input_tokens": 1200, "output_tokens": 450, "note": "café", "b": {"z": 1, "a": 2}},
            {"output_tokens": 450, "input_tokens": 1200, "service_tier": "standard"},
        ],
    )
    def test_the_stored_fingerprint_is_that_of_the_json_dumps_text(self, rates, acme, usage):
        self.post(acme, self.event("e", usage=usage, service_tier="batch"), ascii=False)

        stored = UsageEvent.objects.get(client=acme)
        assert stored.fingerprint == event_fingerprint(
            client_id=acme.pk,
            provider="anthropic",
            model="claude-sonnet-4-5",
            usage=usage,
            occurred_at=datetime(2026, 11, 30, 10, tzinfo=UTC),
            service_tier="batch",
        )
        # Sent again with its keys in another order: the same event.
        again = self.post(
            acme,
            self.event("e", usage=dict(reversed(usage.items())), service_tier="batch"),
        )
        assert [r.status for r in again.results] == ["duplicate"]
