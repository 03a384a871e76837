"""usage_ingest: validation, idempotency, pricing and side effects of a stored batch."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agency.models import Project
from tests.factories import new_client
from tracking.ingest import usage_ingest
from tracking.models import ClosedPeriod, DirtyDay, PricingStatus, UsageEvent
from tracking.signals import usage_recorded

pytestmark = pytest.mark.django_db


NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def event(event_id: str = "e1", **fields: object) -> dict[str, object]:
    data: dict[str, object] = {
        "id": event_id,
        "model": "claude-sonnet-4-5",
        "occurred_at": "2026-11-23T09:00:00Z",
        "usage": {"input_tokens": 1200, "output_tokens": 450},
    }
    data.update(fields)
    return data


def ingest(client, *events, **kwargs):
    return usage_ingest(events=list(events), client=client, **kwargs)


def statuses(outcome) -> list[str]:
    return [r.status for r in outcome.results]


def errors(outcome, index: int = 0) -> list[dict[str, str]]:
    return outcome.results[index].errors


def test_accepted_event_is_stored_priced(rates):
    acme = new_client()
    outcome = ingest(acme, event())
    stored = UsageEvent.objects.get(client=acme, event_id="e1")
    # 1,200 × $3/M + 450 × $15/M
    assert outcome.results[0].cost_usd == Decimal("0.01035")
    assert stored.cost_usd == Decimal("0.01035")
    assert stored.pricing_status == PricingStatus.PRICED
    assert (stored.input_tokens, stored.output_tokens) == (1200, 450)


def test_response_shape_matches_the_issue(rates):
    outcome = ingest(new_client(), event())
    assert outcome.as_dict() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": 0,
        "results": [{"id": "e1", "status": "accepted", "cost_usd": "0.01035"}],
    }


def test_replay_with_same_content_is_a_duplicate_and_changes_nothing(rates):
    acme = new_client()
    ingest(acme, event(feature="chat"))
    before = list(UsageEvent.objects.values())
    outcome = ingest(acme, event(feature="chat"))
    assert statuses(outcome) == ["duplicate"]
    assert list(UsageEvent.objects.values()) == before


def test_replay_with_extra_tags_is_still_a_duplicate(rates):
    acme = new_client()
    ingest(acme, event())
    assert statuses(ingest(acme, event(feature="chat", user="u-9"))) == ["duplicate"]


def test_same_id_different_usage_is_a_conflict_and_never_overwrites(rates):
    acme = new_client()
    ingest(acme, event())
    outcome = ingest(acme, event(usage={"input_tokens": 9999, "output_tokens": 1}))
    assert statuses(outcome) == ["rejected"]
    assert errors(outcome)[0]["code"] == "conflict"
    assert UsageEvent.objects.get(event_id="e1").input_tokens == 1200


def test_event_without_occurred_at_replayed_later_is_a_duplicate(rates):
    acme = new_client()
    ingest(acme, event(occurred_at=None))
    with time_machine.travel(NOW + timedelta(minutes=10), tick=False):
        assert statuses(ingest(acme, event(occurred_at=None))) == ["duplicate"]


def test_event_without_occurred_at_is_stamped_now(rates):
    acme = new_client()
    ingest(acme, event(occurred_at=None))
    assert UsageEvent.objects.get(event_id="e1").occurred_at == NOW


def test_same_id_for_two_clients_is_two_events(rates):
    ingest(new_client(), event())
    assert statuses(ingest(new_client(), event())) == ["accepted"]


def test_repeated_id_inside_one_request_rejects_the_later_one(rates):
    outcome = ingest(new_client(), event("a"), event("a", feature="x"), event("b"))
    assert statuses(outcome) == ["accepted", "rejected", "accepted"]
    assert errors(outcome, 1)[0] == {
        "code": "duplicate_id",
        "field": "events[1].id",
        "message": "repeats the id of events[0] in this request",
    }


def test_one_bad_event_does_not_sink_the_others(rates):
    outcome = ingest(
        new_client(),
        event("a"),
        event("b", usage={"input_tokens": -1, "output_tokens": 3}),
        event("c"),
    )
    assert statuses(outcome) == ["accepted", "rejected", "accepted"]
    assert UsageEvent.objects.count() == 2


def test_error_field_says_where(rates):
    outcome = ingest(
        new_client(), event("a"), event("b", usage={"input_tokens": 1.0, "output_tokens": 3})
    )
    assert errors(outcome, 1)[0]["field"] == "events[1].usage.input_tokens"
    assert errors(outcome, 1)[0]["message"] == "must be a non-negative integer"


@pytest.mark.parametrize("bad", [-1, 1.5, 1.0, True, "12", None, 100_000_001])
def test_bad_token_counts_are_rejected(rates, bad):
    outcome = ingest(new_client(), event(usage={"input_tokens": bad, "output_tokens": 3}))
    assert statuses(outcome) == ["rejected"]
    assert errors(outcome)[0]["field"] == "events[0].usage.input_tokens"


@pytest.mark.parametrize(
    ("provider", "usage"),
    [
        # Each field under the 100M cap, the call over it.
        ("anthropic", {"input_tokens": 60_000_000, "output_tokens": 50_000_000}),
        (
            "anthropic",
            {
                "input_tokens": 1,
                "output_tokens": 1,
                "cache_read_input_tokens": 99_999_999,
                "cache_creation_input_tokens": 99_999_999,
            },
        ),
        # 1-hour cache writes count too.
        (
            "anthropic",
            {
                "input_tokens": 1,
                "output_tokens": 1,
                "cache_creation_input_tokens": 99_999_999,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 0,
                    "ephemeral_1h_input_tokens": 99_999_999,
                },
            },
        ),
        # Compaction iterations add to the top-level counts.
        (
            "anthropic",
            {
                "input_tokens": 1,
                "output_tokens": 1,
                "iterations": [{"type": "compaction", "input_tokens": 99_999_999}] * 3,
            },
        ),
        ("openai", {"prompt_tokens": 90_000_000, "completion_tokens": 20_000_000}),
        ("google", {"promptTokenCount": 90_000_000, "thoughtsTokenCount": 20_000_000}),
    ],
)
def test_more_than_100_million_tokens_in_one_call_is_rejected(rates, provider, usage):
    acme = new_client()
    outcome = ingest(acme, event(provider=provider, model="m", usage=usage))
    assert statuses(outcome) == ["rejected"]
    assert errors(outcome)[0]["field"] == "events[0].usage"
    assert "at most 100,000,000 in one call" in errors(outcome)[0]["message"]
    assert not UsageEvent.objects.filter(client=acme).exists()


@pytest.mark.parametrize(
    ("usage", "field", "message"),
    [
        ({"server_tool_use": "web_search"}, "usage.server_tool_use", "must be an object"),
        (
            {"server_tool_use": [{"web_search_requests": 1}]},
            "usage.server_tool_use",
            "must be an object",
        ),
        ({"service_tier": 5}, "usage.service_tier", "must be a string"),
        ({"service_tier": ["batch"]}, "usage.service_tier", "must be a string"),
    ],
)
def test_a_malformed_usage_field_rejects_its_event_only(rates, usage, field, message):
    acme = new_client()
    bad = event("bad", usage={"input_tokens": 10, "output_tokens": 10, **usage})

    outcome = ingest(acme, bad, event("good"))

    assert statuses(outcome) == ["rejected", "accepted"]
    assert errors(outcome) == [
        {"code": "invalid", "field": f"events[0].{field}", "message": message}
    ]
    assert list(UsageEvent.objects.filter(client=acme).values_list("event_id", flat=True)) == [
        "good"
    ]


def test_exactly_100_million_tokens_in_one_call_is_accepted(rates):
    usage = {"input_tokens": 40_000_000, "output_tokens": 10_000_000}
    usage["cache_read_input_tokens"] = 50_000_000
    outcome = ingest(new_client(), event(usage=usage))
    assert statuses(outcome) == ["accepted"]


def test_unknown_provider_is_rejected(rates):
    outcome = ingest(new_client(), event(provider="mistral"))
    assert errors(outcome)[0]["field"] == "events[0].provider"


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"id": ""}, "events[0].id"),
        ({"id": "x" * 129}, "events[0].id"),
        ({"id": 12}, "events[0].id"),
        ({"model": ""}, "events[0].model"),
        ({"usage": [1, 2]}, "events[0].usage"),
        ({"feature": "f" * 201}, "events[0].feature"),
        ({"status_code": -1}, "events[0].status_code"),
        ({"latency_ms": 2.5}, "events[0].latency_ms"),
        ({"metadata": {f"k{i}": "v" for i in range(21)}}, "events[0].metadata"),
        ({"metadata": {"k": 3}}, "events[0].metadata.k"),
        ({"occurred_at": "2026-11-23T09:00:00"}, "events[0].occurred_at"),
        ({"occurred_at": "yesterday"}, "events[0].occurred_at"),
        ({"backfill": "yes"}, "events[0].backfill"),
        ({"feature": "a\x00b"}, "events[0].feature"),
        ({"model": "claude\ud800"}, "events[0].model"),
        ({"client": "ac\x00me"}, "events[0].client"),
        ({"metadata": {"k": "v\x00"}}, "events[0].metadata"),
        (
            {"usage": {"input_tokens": 1, "output_tokens": 1, "x": ["ok", "\x00"]}},
            "events[0].usage.x[1]",
        ),
    ],
)
def test_schema_violations_are_rejected_with_their_field(rates, fields, where):
    outcome = ingest(new_client(), event(**fields))
    assert statuses(outcome) == ["rejected"]
    assert errors(outcome)[0]["field"] == where


def test_non_object_event_is_rejected_without_id(rates):
    outcome = ingest(new_client(), "not an event")
    assert outcome.results[0].as_dict() == {
        "id": None,
        "status": "rejected",
        "errors": [{"code": "invalid", "field": "events[0]", "message": "must be an object"}],
    }


def test_unknown_fields_are_ignored(rates):
    outcome = ingest(new_client(), event(cost_usd="0", client_id=99))
    assert statuses(outcome) == ["accepted"]
    assert UsageEvent.objects.get().cost_usd == Decimal("0.01035")


def test_unknown_model_is_accepted_unpriced_with_a_warning(rates):
    outcome = ingest(new_client(), event(model="claude-experimental-9"))
    result = outcome.results[0].as_dict()
    assert result["status"] == "accepted"
    assert result["cost_usd"] is None
    assert result["warnings"][0]["code"] == "unpriced_model"
    stored = UsageEvent.objects.get()
    assert (stored.pricing_status, stored.cost_usd) == (PricingStatus.UNPRICED, None)


def test_service_tier_overrides_the_usage_object(rates):
    outcome = ingest(new_client(), event(service_tier="batch"))
    assert outcome.results[0].cost_usd == Decimal("0.005175")


def test_more_than_five_minutes_in_the_future_is_rejected(rates):
    outcome = ingest(new_client(), event(occurred_at="2026-11-23T10:05:01Z"))
    assert errors(outcome)[0]["code"] == "in_future"


def test_five_minutes_in_the_future_is_accepted(rates):
    outcome = ingest(new_client(), event(occurred_at="2026-11-23T11:05:00+01:00"))
    assert statuses(outcome) == ["accepted"]


def test_older_than_backfill_window_is_too_old(rates, settings):
    settings.INGEST_BACKFILL_DAYS = 30
    outcome = ingest(new_client(), event(occurred_at="2026-10-20T00:00:00Z"))
    assert errors(outcome)[0]["code"] == "too_old"


def test_client_key_cannot_backfill_even_with_the_flag(rates, settings):
    settings.INGEST_BACKFILL_DAYS = 30
    outcome = ingest(new_client(), event(occurred_at="2026-10-20T00:00:00Z", backfill=True))
    assert errors(outcome)[0]["code"] == "too_old"


def test_agency_key_backfills_old_events_with_the_flag(rates, settings):
    settings.INGEST_BACKFILL_DAYS = 30
    acme = new_client(slug="acme")
    outcome = usage_ingest(
        events=[event(client="acme", occurred_at="2026-10-20T00:00:00Z", backfill=True)],
        client=None,
        backfill_allowed=True,
    )
    assert statuses(outcome) == ["accepted"]
    assert UsageEvent.objects.filter(client=acme).count() == 1


def test_client_key_event_naming_another_client_is_forbidden(rates):
    acme, other = new_client(slug="acme"), new_client(slug="globex")
    outcome = ingest(acme, event(client="globex"))
    assert errors(outcome)[0]["code"] == "forbidden_client"
    assert not UsageEvent.objects.filter(client=other).exists()


def test_client_key_event_naming_its_own_client_is_accepted(rates):
    acme = new_client(slug="acme")
    assert statuses(ingest(acme, event(client="acme"))) == ["accepted"]


def test_agency_key_event_must_name_a_client(rates):
    outcome = usage_ingest(events=[event()], client=None)
    assert errors(outcome)[0] == {
        "code": "required",
        "field": "events[0].client",
        "message": "is required with an agency-wide key",
    }


def test_agency_key_unknown_client_is_rejected(rates):
    outcome = usage_ingest(events=[event(client="nobody")], client=None)
    assert errors(outcome)[0]["code"] == "unknown_client"


def test_agency_key_posts_for_several_clients(rates):
    acme, globex = new_client(slug="acme"), new_client(slug="globex")
    outcome = usage_ingest(
        events=[event("a", client="acme"), event("a", client="globex")], client=None
    )
    assert statuses(outcome) == ["accepted", "accepted"]
    assert {e.client for e in UsageEvent.objects.all()} == {acme, globex}


def test_new_project_is_created_under_the_client(rates):
    acme = new_client()
    ingest(acme, event("a", project="support-bot"), event("b", project="support-bot"))
    project = Project.objects.get(client=acme, name="support-bot")
    assert set(UsageEvent.objects.values_list("project", flat=True)) == {project.pk}


def test_existing_project_is_reused(rates):
    acme = new_client()
    existing = Project.objects.create(client=acme, name="support-bot")
    ingest(acme, event(project="support-bot"))
    assert UsageEvent.objects.get().project == existing
    assert Project.objects.count() == 1


def test_tags_and_metadata_are_stored(rates):
    ingest(
        new_client(),
        event(
            feature="chat", user="u-1", team="t", deploy_sha="abc", prompt_hash="ph",
            request_id="req_1", status_code=200, latency_ms=830, metadata={"plan": "pro"},
        ),
    )  # fmt: skip
    stored = UsageEvent.objects.get()
    assert (stored.feature, stored.end_user, stored.team, stored.deploy_sha) == (
        "chat", "u-1", "t", "abc",
    )  # fmt: skip
    assert (stored.prompt_hash, stored.request_id, stored.status_code, stored.latency_ms) == (
        "ph", "req_1", 200, 830,
    )  # fmt: skip
    assert stored.metadata == {"plan": "pro"}


def test_raw_usage_object_is_kept_exactly(rates):
    usage = {"input_tokens": 5, "output_tokens": 6, "some_new_field": {"x": [1, 2]}}
    ingest(new_client(), event(usage=usage))
    assert UsageEvent.objects.get().usage == usage


def test_touched_days_are_marked_dirty(rates):
    acme = new_client()
    ingest(acme, event("a"), event("b", occurred_at="2026-11-21T12:00:00Z"))
    assert set(DirtyDay.objects.values_list("client_id", "day")) == {
        (acme.pk, datetime(2026, 11, 23).date()),
        (acme.pk, datetime(2026, 11, 21).date()),
    }


def test_duplicates_mark_nothing_dirty(rates):
    acme = new_client()
    ingest(acme, event())
    DirtyDay.objects.all().delete()
    ingest(acme, event())
    assert not DirtyDay.objects.exists()


def test_usage_recorded_is_sent_after_commit(rates, django_capture_on_commit_callbacks):
    acme = new_client()
    received: list[set[int]] = []

    def receiver(sender, client_ids, **kwargs):
        received.append(client_ids)

    usage_recorded.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            ingest(acme, event())
            assert received == []
    finally:
        usage_recorded.disconnect(receiver)
    assert received == [{acme.pk}]


def test_event_in_a_closed_month_is_accepted(rates):
    acme = new_client()
    ClosedPeriod.objects.create(client=acme, month=datetime(2026, 10, 1).date())
    outcome = ingest(acme, event(occurred_at="2026-10-15T12:00:00Z"))
    assert statuses(outcome) == ["accepted"]


def test_a_batch_larger_than_one_insert_statement_is_stored(rates):
    acme = new_client()
    outcome = ingest(acme, *(event(f"e{i}") for i in range(1000)))
    assert outcome.count("accepted") == 1000
    assert UsageEvent.objects.filter(client=acme).count() == 1000


def test_dirty_day_is_the_agency_local_day(rates, settings):
    settings.TIME_ZONE = "Asia/Kathmandu"  # UTC+5:45: local midnight is at 18:15 UTC
    acme = new_client()
    ingest(
        acme,
        event("before", occurred_at="2026-11-22T18:14:59Z"),
        event("after", occurred_at="2026-11-22T18:15:00Z"),
    )
    assert set(DirtyDay.objects.values_list("day", flat=True)) == {
        datetime(2026, 11, 22).date(),
        datetime(2026, 11, 23).date(),
    }


def test_a_batch_over_several_days_marks_them_in_one_ordered_statement(rates):
    acme = new_client()
    days = [f"2026-11-{day:02d}T09:00:00Z" for day in (21, 3, 17, 9, 12, 5, 19, 1, 14, 7)]
    events = [event(f"e{i}", occurred_at=at) for i, at in enumerate(days)]

    with CaptureQueriesContext(connection) as queries:
        ingest(acme, *events)

    marks = [q["sql"] for q in queries.captured_queries if '"tracking_dirtyday"' in q["sql"]]
    assert len(marks) == 1
    # Rows in (client, day) order: concurrent requests lock them in the same order.
    marked = re.findall(r"2026-11-\d\d(?=[,}'])", marks[0])
    assert len(marked) == len(days)
    assert marked == sorted(marked)
