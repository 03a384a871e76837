"""Generated hostile bodies and query strings against the ingest and budget APIs, with a
client-bound key and an agency-wide key (issue 10).

For every request: no 5xx; a 4xx is JSON naming what is wrong (``code``, ``message``) and
where (``field``, or the whole body when absent); an event is stored exactly when its
result says ``accepted`` (rows counted before and after), under the right client;
every event built valid is accepted and every event built invalid is rejected with an
error naming its own ``events[i]...`` field; resending the same body stores nothing new.
A client's key never reads or writes another client's data.
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import NOW, World
from tests.fuzz.hostile import (
    RAW_TOKENS,
    encode,
    fuzz_settings,
    hostile_value,
    months,
    nested,
    odd_text,
    queries,
)
from tracking.models import UsageEvent

pytestmark = pytest.mark.django_db

USAGE_URL = "/api/v1/usage"
BUDGET_URL = "/api/v1/budget"
SLUGS = ("acme", "globex")

EVENT_FIELDS = [
    "id", "model", "usage", "provider", "client", "backfill", "project", "feature", "user",
    "team", "deploy_sha", "prompt_hash", "request_id", "occurred_at", "service_tier",
    "status_code", "latency_ms", "metadata",
]  # fmt: skip
USAGE_FIELDS = [
    "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
    "service_tier", "speed", "inference_geo", "server_tool_use", "cache_creation",
]  # fmt: skip
ODD_INSTANTS = [
    "2026-11-20T10:00:00z",
    "2026-11-20 10:00:00+00:00",
    "2026-11-20T10:00:00.123456789+05:30",
    "2026-02-30T00:00:00Z",
    "2026-11-20T25:00:00Z",
    "2026-11-20T12:00:00+24:00",
    "2026-11-20T12:00:00",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "1970-01-01T00:00:00Z",
    "2030-01-01T00:00:00Z",
    "2026-11-20T12:04:59Z",
]


# --- events ---------------------------------------------------------------------------


def valid_event(
    draw: Any, token: str, index: int, *, agency: bool, owner: str = "acme"
) -> dict[str, Any]:
    """An event that must be accepted (ids unique per example)."""
    event: dict[str, Any] = {
        "id": f"v-{token}-{index}",
        "model": draw(st.sampled_from(["claude-sonnet-4-5", "claude-haiku-4-5", "no-such-model"])),
        "usage": {
            "input_tokens": draw(st.integers(0, 1_000_000)),
            "output_tokens": draw(st.integers(0, 100_000)),
        },
        "occurred_at": (NOW - timedelta(minutes=draw(st.integers(0, 60 * 24 * 30)))).isoformat(),
    }
    if agency:
        event["client"] = draw(st.sampled_from(SLUGS))
    elif draw(st.booleans()):
        event["client"] = owner
    if draw(st.booleans()):
        event["feature"] = draw(st.text(max_size=20).filter(lambda t: "\x00" not in t))
    return event


# Each (field, value) makes an event invalid whatever else it holds.
INVALID: list[tuple[str, Any]] = [
    *[("id", v) for v in (None, 7, "", "x" * 129, "a\x00b", "é", ["x"])],
    *[("model", v) for v in (None, "", "x" * 129, 12, "a\x00")],
    *[("usage", v) for v in (None, "usage", 3, True, [1])],
    *[("usage.input_tokens", v) for v in (-1, 100_000_001, 2**31, 2**64, "12", 1.5, True, None)],
    ("usage.output_tokens", -(2**63)),
    ("usage.speed", "x" * 17),
    ("usage.service_tier", "x" * 33),
    ("usage.inference_geo", "x" * 33),
    ("usage.deep", nested(8)),
    ("usage.deep", nested(1000, as_list=True)),
    ("usage.pad", "x" * 17_000),
    ("usage.nul", "\x00"),
    ("usage.surrogate", "\udc00"),
    *[("provider", v) for v in ("azure", "", 1, None)],
    *[("occurred_at", v) for v in ("yesterday", "2026-02-30T00:00:00Z", "2026-11-20T12:00:00",
                                   "2020-01-01T00:00:00Z", "2030-01-01T00:00:00Z", 123)],
    *[(tag, v) for tag in ("project", "feature", "user", "request_id")
      for v in ("x" * 201, 5, "\x00")],
    *[("status_code", v) for v in (-1, 2**31, "200", 1.5)],
    ("latency_ms", -5),
    ("service_tier", "x" * 33),
    *[("metadata", v) for v in ({"k": 1}, {"": "v"}, {"k" * 65: "v"},
                                {f"k{i}": "v" for i in range(21)}, "meta", {"k": "x" * 201})],
    ("backfill", "yes"),
    ("client", "no-such-client"),
    ("client", ["acme"]),
]  # fmt: skip


def put(event: dict[str, Any], path: str, value: Any) -> None:
    if path.startswith("usage.") and isinstance(event.get("usage"), dict):
        event["usage"][path.removeprefix("usage.")] = value
    else:
        event[path] = value


@st.composite
def invalid_event(draw: Any, token: str, index: int, *, agency: bool) -> dict[str, Any]:
    event = valid_event(draw, token, index, agency=agency)
    event["id"] = f"x-{token}-{index}"
    path, value = draw(st.sampled_from(INVALID))
    put(event, path, value)
    if agency and draw(st.integers(0, 9)) == 0:
        del event["client"]  # an agency-wide key must name the client
    elif not agency and draw(st.integers(0, 9)) == 0:
        event["client"] = "globex"  # a client key may not post for another client
    return event


@st.composite
def hostile_event(draw: Any, token: str, index: int, *, agency: bool) -> Any:
    """Anything at all: valid or not, the server decides; stored exactly when accepted."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(hostile_value)
    event = valid_event(draw, token, index, agency=agency)
    event["id"] = f"h-{token}-{index}"
    for _ in range(draw(st.integers(1, 3))):
        where = draw(
            st.one_of(
                st.sampled_from(EVENT_FIELDS),
                st.sampled_from(USAGE_FIELDS).map(lambda f: f"usage.{f}"),
                odd_text,
            )
        )
        choice = draw(st.integers(0, 5))
        if choice == 0:
            event.pop(where, None)
        elif where == "occurred_at" or choice == 1:
            put(event, "occurred_at", draw(st.one_of(st.sampled_from(ODD_INSTANTS), odd_text)))
        elif choice == 2:
            put(event, where, draw(odd_text))
        else:
            put(event, where, draw(hostile_value))
    return event


@st.composite
def batches(draw: Any, *, agency: bool) -> tuple[list[Any], list[str]]:
    """Events in random order, and what each was built to be: valid, invalid or hostile."""
    token = "b"  # check_batch makes the ids unique per example
    kinds = draw(st.lists(st.sampled_from(["valid", "invalid", "hostile"]), min_size=1, max_size=8))
    events = []
    for index, kind in enumerate(kinds):
        if kind == "valid":
            events.append(valid_event(draw, token, index, agency=agency))
        elif kind == "invalid":
            events.append(draw(invalid_event(token, index, agency=agency)))
        else:
            events.append(draw(hostile_event(token, index, agency=agency)))
    return events, kinds


# --- checks ---------------------------------------------------------------------------


def stored() -> set[tuple[str, str]]:
    return set(UsageEvent.objects.values_list("client__slug", "event_id"))


def assert_api_error(response: Any) -> dict[str, Any]:
    """A 4xx of the API: JSON ``{"error": {code, message, field?}}``, all of it words."""
    assert 400 <= response.status_code < 500, response.status_code
    assert response["Content-Type"].startswith("application/json")
    error = json.loads(response.content)["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "field"}
    if "field" in error:
        assert isinstance(error["field"], str) and error["field"]
    return error


def post(http: Any, key: str | None, body: bytes, **extra: Any) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return http.generic(
        "POST", USAGE_URL, body, content_type="application/json", **headers, **extra
    )


_RUNS = itertools.count(1)
_OURS = ("v-", "x-", "h-")


def check_batch(http: Any, world: World, key_name: str, events: list[Any], kinds: list[str]):
    key = world.keys[key_name]
    agency = key_name == "agency"
    # Ids unique to this example: examples repeat, the database keeps what each stored.
    run = next(_RUNS)
    events = [
        {**e, "id": f"{run}{e['id']}"}
        if isinstance(e, dict) and isinstance(e.get("id"), str) and e["id"][:2] in _OURS
        else e
        for e in events
    ]
    body = encode({"events": events})
    before = stored()
    response = post(http, key, body)
    after = stored()
    new = after - before

    assert response.status_code < 500
    if response.status_code != 200:
        error = assert_api_error(response)
        assert new == set(), "a refused request stored something"
        # Only a body that is not strict JSON is refused whole here: the raw tokens.
        assert any(marker in body.decode() for marker in RAW_TOKENS.values()), error
        return

    outcome = json.loads(response.content)
    results = outcome["results"]
    assert len(results) == len(events)
    counts = {s: sum(r["status"] == s for r in results) for s in ("accepted", "duplicate")}
    assert (outcome["accepted"], outcome["duplicates"]) == (counts["accepted"], counts["duplicate"])
    assert outcome["rejected"] == len(events) - counts["accepted"] - counts["duplicate"]
    accepted = {r["id"] for r in results if r["status"] == "accepted"}
    # Exactly the accepted events were stored (no more, no less), each under its client.
    assert {event_id for _, event_id in new} == accepted
    assert len(new) == counts["accepted"] == len(after) - len(before)
    for slug, _event_id in new:
        if not agency:
            assert slug == key_name, "a client-bound key stored for another client"
    for index, (event, kind, result) in enumerate(zip(events, kinds, results, strict=True)):
        if result["status"] == "accepted" and agency:
            assert (event["client"], event["id"]) in new
        if kind == "valid":
            assert result["status"] == "accepted", result
        if kind == "invalid":
            assert result["status"] == "rejected", (event, result)
        if result["status"] == "rejected":
            assert result["errors"], result
            for problem in result["errors"]:
                assert problem["message"] and problem["code"]
                assert problem["field"].startswith(f"events[{index}]"), problem

    # The same body again (an SDK retry): nothing new is stored, nothing accepted twice.
    replay = post(http, key, body)
    assert replay.status_code == 200
    again = json.loads(replay.content)
    assert again["accepted"] == 0
    assert stored() == after
    for first, second in zip(results, again["results"], strict=True):
        if first["status"] == "accepted":
            assert second["status"] == "duplicate"


@pytest.mark.parametrize("key_name", ["acme", "agency"])
@fuzz_settings(120)
@given(batch=batches(agency=False), agency_batch=batches(agency=True))
def test_ingest_stores_exactly_the_accepted_events(
    client, fuzz_world, key_name, batch, agency_batch
):
    events, kinds = agency_batch if key_name == "agency" else batch
    check_batch(client, fuzz_world, key_name, events, kinds)


# --- whole bodies ---------------------------------------------------------------------

whole_bodies = st.one_of(
    st.binary(max_size=300),
    hostile_value.map(encode),
    st.builds(lambda v: encode({"events": v}), hostile_value),
    st.builds(lambda v: encode({"events": [v]}), hostile_value),
    st.sampled_from(
        [
            b"",
            b"{",
            b"[" * 100_000,
            b'{"events": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            b'{"events": []}',
            b'{"events": {}}',
            b'{"events": null}',
            b"\xef\xbb\xbf" + b'{"events": [1]}',
            b'{"events": [' + b"1," * 1000 + b"1]}",
            b'{"events": [1], "events": 2}',
            b" " * 1_048_577,
            b'{"events": [{"id": "a", "usage": {"input_tokens": NaN}}]}',
            '{"events": ["\ud800"]}'.encode("utf-8", "surrogatepass"),
        ]
    ),
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain",
     "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""]
)  # fmt: skip
lengths = st.one_of(
    st.none(), st.sampled_from(["", "abc", "-1", "0", "1", "99999999999999999999", " 12 ", "1e3"])
)
authorizations = st.sampled_from(
    ["acme", "agency", "", "Bearer", "Bearer ", "Basic YWJj", "Bearer cm_live_x_y",
     "Bearer cm_live_AAAAAAAA_" + "a" * 32, "bearer\x00", "Bearer " + "é" * 40]
)  # fmt: skip


@fuzz_settings(150)
@given(
    body=whole_bodies,
    content_type=content_types,
    length=lengths,
    auth=authorizations,
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH"]),
)
def test_ingest_answers_any_body_without_a_5xx(
    client, fuzz_world, body, content_type, length, auth, method
):
    if auth in fuzz_world.keys:
        auth = f"Bearer {fuzz_world.keys[auth]}"
    extra: dict[str, str] = {"HTTP_AUTHORIZATION": auth}
    if length is not None:
        extra["CONTENT_LENGTH"] = length
    before = stored()
    response = client.generic(method, USAGE_URL, body, content_type=content_type, **extra)

    assert response.status_code < 500
    if response.status_code == 200:
        outcome = json.loads(response.content)
        assert len(stored()) - len(before) == outcome["accepted"]
        for slug, _event_id in stored() - before:
            assert slug == "acme" or auth.endswith(fuzz_world.keys["agency"])
    else:
        assert_api_error(response)
        assert stored() == before


# --- the budget API -------------------------------------------------------------------

budget_values = st.one_of(
    st.sampled_from(["acme", "globex", "ACME", " acme ", "acme\x00", "no-such", "", "a" * 65]),
    months,
)


@fuzz_settings(200)
@given(
    query=queries(["client", "month"], budget_values),
    key_name=st.sampled_from(["acme", "globex", "agency", "none"]),
    method=st.sampled_from(["GET", "GET", "GET", "HEAD", "POST"]),
)
def test_budget_api_answers_any_query_and_only_about_the_keys_client(
    client, fuzz_world, query, key_name, method
):
    headers = (
        {"HTTP_AUTHORIZATION": f"Bearer {fuzz_world.keys[key_name]}"}
        if key_name in fuzz_world.keys
        else {}
    )
    response = client.generic(method, f"{BUDGET_URL}?{query}", **headers)

    assert response.status_code < 500
    if response.status_code == 200:
        if method == "HEAD":
            return
        budget = json.loads(response.content)
        assert key_name != "none"
        if key_name != "agency":
            assert budget["client"] == key_name, "a client key read another client's budget"
        assert budget["client"] in SLUGS
        assert "2000-01" <= budget["month"] <= "2100-12"
    elif method != "HEAD":
        error = assert_api_error(response)
        if response.status_code == 400:
            assert error["field"] in ("client", "month")
