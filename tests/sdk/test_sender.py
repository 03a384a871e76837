"""Delivery: batching, retries with backoff, the spool, and never raising into the app."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import clientmeter as meter
import httpx2
import pytest
from clientmeter._sender import Sender, default_spool_dir

from tests.sdk.anthropic_api import MODEL, message_body
from tests.sdk.conftest import METER_URL, MeterServer

ASK: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, Claude"}],
}
KEY = "cm_live_AbCdEfGh_" + "x" * 32


def event(event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "client": "acme",
        "model": MODEL,
        "usage": {"input_tokens": 10, "output_tokens": 5},
        "occurred_at": "2026-11-23T09:00:00.000+00:00",
    }


def sender_for(server: Any, spool: Path, **options: Any) -> Sender:
    sender = Sender(
        url=METER_URL,
        api_key=KEY,
        spool_dir=spool,
        http_client=httpx2.Client(transport=httpx2.MockTransport(server)),
        **options,
    )
    meter._all_senders.append(sender)  # so the autouse fixture stops it after the test
    return sender


def spooled(spool: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted(spool.glob("*/queue/*.json")):
        events.extend(json.loads(path.read_text())["events"])
    return events


def dead_letters(spool: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(spool.glob("*/dead/*.json"))]


def posted_ids(server: MeterServer) -> list[list[str]]:
    return [[e["id"] for e in json.loads(r.content)["events"]] for r in server.requests]


def test_events_go_out_in_the_background_without_flush(meter_server, tmp_path):
    sender = sender_for(meter_server, tmp_path, interval=0.1)

    sender.record(event("a"))

    assert [e["id"] for e in meter_server.wait_for(1)] == ["a"]


def test_a_full_batch_goes_out_before_the_interval(meter_server, tmp_path):
    sender = sender_for(meter_server, tmp_path, interval=60, max_batch=100)

    for number in range(100):
        sender.record(event(f"e{number}"))

    assert len(meter_server.wait_for(100, timeout=5)) == 100
    assert len(meter_server.requests) == 1


def test_posts_carry_the_bearer_key(meter_server, tmp_path):
    sender = sender_for(meter_server, tmp_path)
    sender.record(event("a"))

    assert sender.flush(timeout=5)

    assert meter_server.requests[0].headers["Authorization"] == f"Bearer {KEY}"


def test_a_503_is_retried_in_the_background(meter_server, tmp_path):
    meter_server.script = [httpx2.Response(503, headers={"Retry-After": "0"})]
    sender = sender_for(meter_server, tmp_path, backoff_base=0.05)
    sender.record(event("a"))

    assert not sender.flush(timeout=5)

    assert [e["id"] for e in meter_server.wait_for(1)] == ["a"]
    assert posted_ids(meter_server) == [["a"], ["a"]]


def test_retry_after_is_honored(meter_server, tmp_path):
    meter_server.script = [httpx2.Response(429, headers={"Retry-After": "1"})]
    sender = sender_for(meter_server, tmp_path, backoff_base=0.01)
    sender.record(event("a"))
    sender.flush(timeout=5)

    meter_server.wait_for(1)

    first, second = meter_server.attempt_times
    assert second - first >= 1.0


def test_backoff_grows_while_the_server_keeps_failing(meter_server, tmp_path):
    meter_server.script = [httpx2.Response(500) for _ in range(4)]
    sender = sender_for(meter_server, tmp_path, backoff_base=0.1)
    sender.record(event("a"))

    meter_server.wait_for(1, timeout=10)

    times = meter_server.attempt_times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(times) == 5
    # Delays are drawn from [base·2ⁿ/2, base·2ⁿ]: the 4th wait is at least 0.4 s.
    assert gaps[-1] >= 0.4


def test_an_event_the_server_rejects_goes_to_the_dead_letters_not_retried(meter_server, tmp_path):
    rejected = {"id": "a", "status": "rejected", "errors": [{"field": "usage", "message": "x"}]}
    meter_server.script = [httpx2.Response(200, json={"rejected": 1, "results": [rejected]})]
    sender = sender_for(meter_server, tmp_path)
    sender.record(event("a"))

    assert not sender.flush(timeout=5)  # left behind, in the dead letters

    [letter] = dead_letters(tmp_path)
    assert (len(meter_server.requests), spooled(tmp_path)) == (1, [])
    assert ([e["id"] for e in letter["events"]], json.loads(letter["answer"])) == (
        ["a"],
        [rejected],
    )


def test_a_refused_batch_is_halved_until_only_the_bad_event_is_a_dead_letter(tmp_path):
    server = MeterServer()

    def refuse_bad(request: httpx2.Request) -> httpx2.Response:
        if any(e["id"] == "bad" for e in json.loads(request.content)["events"]):
            server.requests.append(request)
            return httpx2.Response(400, json={"error": {"code": "invalid"}})
        return server(request)

    sender = sender_for(refuse_bad, tmp_path)
    for event_id in ("a", "b", "bad", "c"):
        sender.record(event(event_id))

    assert not sender.flush(timeout=5)

    assert sorted(e["id"] for e in server.events) == ["a", "b", "c"]
    assert spooled(tmp_path) == []
    [letter] = dead_letters(tmp_path)
    assert ([e["id"] for e in letter["events"]], letter["status"]) == (["bad"], 400)
    assert json.loads(letter["answer"]) == {"error": {"code": "invalid"}}


def test_a_repeated_id_is_sent_once_per_batch(meter_server, tmp_path):
    sender = sender_for(meter_server, tmp_path)
    sender.record(event("a"))
    sender.record(event("a"))

    assert sender.flush(timeout=5)

    assert posted_ids(meter_server) == [["a"]]


def test_a_bad_key_keeps_the_events_in_the_spool(meter_server, tmp_path):
    meter_server.script = [httpx2.Response(401, json={"error": {"code": "unauthorized"}})]
    sender = sender_for(meter_server, tmp_path)
    sender.record(event("a"))

    assert not sender.flush(timeout=5)

    assert [e["id"] for e in spooled(tmp_path)] == ["a"]


def test_the_spool_survives_a_restart(tmp_path):
    down = MeterServer()
    down.script = [httpx2.Response(503) for _ in range(100)]
    before = sender_for(down, tmp_path, backoff_base=30)
    before.record(event("a"))
    before.record(event("b"))
    assert not before.close(timeout=5)

    after_restart = MeterServer()
    sender_for(after_restart, tmp_path)

    assert [e["id"] for e in after_restart.wait_for(2)] == ["a", "b"]
    assert spooled(tmp_path) == []


def test_a_resent_event_is_byte_for_byte_the_first_one(tmp_path):
    down = MeterServer()
    down.script = [httpx2.Response(503)]
    before = sender_for(down, tmp_path, backoff_base=30)
    before.record(event("a"))
    before.close(timeout=5)

    up = MeterServer()
    sender_for(up, tmp_path)
    up.wait_for(1)

    assert json.loads(up.requests[0].content) == json.loads(down.requests[0].content)


def test_flush_on_timeout_spools_what_is_still_buffered(tmp_path):
    def slow(request: httpx2.Request) -> httpx2.Response:
        time.sleep(1.0)
        return httpx2.Response(503)

    sender = sender_for(slow, tmp_path, interval=0.01, backoff_base=30)
    sender.record(event("in-flight"))
    time.sleep(0.2)  # the thread is now stuck sending "in-flight"
    sender.record(event("buffered"))

    assert not sender.flush(timeout=0.1)

    assert sorted(e["id"] for e in spooled(tmp_path)) == ["buffered", "in-flight"]


def test_spool_directory_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIENTMETER_SPOOL_DIR", str(tmp_path / "here"))

    assert default_spool_dir() == tmp_path / "here"


def test_default_spool_directory_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("CLIENTMETER_SPOOL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    assert default_spool_dir() == tmp_path / "clientmeter" / "spool"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_app_never_sees_an_error_when_clientmeter_is_down(anthropic_api, tmp_path):
    client = meter.wrap(
        anthropic_api.client(),
        client="acme",
        url=f"http://127.0.0.1:{closed_port()}",
        api_key=KEY,
        spool_dir=tmp_path,
    )

    message = client.messages.create(**ASK)

    assert message.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert not meter.flush(timeout=5)
    assert [e["id"] for e in spooled(tmp_path)] == ["msg_01XFDUDYJgAACzvnptvVoYEL"]


def test_recording_adds_no_network_time_to_the_call(anthropic_api, tmp_path):
    def hanging(request: httpx2.Request) -> httpx2.Response:
        time.sleep(5)
        return httpx2.Response(503)

    client = meter.wrap(
        anthropic_api.client(),
        client="acme",
        url=METER_URL,
        api_key=KEY,
        spool_dir=tmp_path,
        http_client=httpx2.Client(transport=httpx2.MockTransport(hanging)),
    )
    client.messages.create(**ASK)
    time.sleep(1.2)  # the first batch is now being sent, slowly

    started = time.monotonic()
    for _ in range(20):
        client.messages.create(**ASK)

    # Waiting on ClientMeter even once would take 5 s; 20 in-process calls take milliseconds.
    assert time.monotonic() - started < 2.5


def test_the_event_id_without_a_response_id_is_stable_across_resends(
    anthropic_api, meter_options, meter_server
):
    body = message_body()
    del body["id"]
    anthropic_api.message = body
    meter_server.script = [httpx2.Response(503, headers={"Retry-After": "0"})]
    client = meter.wrap(anthropic_api.client(), client="acme", **meter_options)
    client.messages.create(**ASK)
    meter.flush(timeout=5)

    meter_server.wait_for(1)

    first, second = posted_ids(meter_server)
    assert first == second
    assert len(first[0]) == 36  # a UUID drawn once, before the first send


@pytest.mark.parametrize("header", ["Thu, 01 Jan 1970 00:00:00 GMT", "soon"])
def test_an_odd_retry_after_header_does_not_stop_delivery(meter_server, tmp_path, header):
    meter_server.script = [httpx2.Response(503, headers={"Retry-After": header})]
    sender = sender_for(meter_server, tmp_path, backoff_base=0.05)
    sender.record(event("a"))
    sender.flush(timeout=5)

    assert [e["id"] for e in meter_server.wait_for(1)] == ["a"]


def test_flush_succeeds_while_other_threads_keep_recording(meter_server, tmp_path):
    sender = sender_for(meter_server, tmp_path)
    stop = threading.Event()

    def busy_app() -> None:
        number = 0
        while not stop.is_set():
            sender.record(event(f"busy-{number}"))
            number += 1
            time.sleep(0.001)

    worker = threading.Thread(target=busy_app)
    worker.start()
    sender.record(event("before-flush"))
    try:
        delivered = sender.flush(timeout=5)
    finally:
        stop.set()
        worker.join()

    assert delivered
    assert "before-flush" in {e["id"] for e in meter_server.events}


# --- poison isolation (issue 9, finding 2) --------------------------------------------


def answer_500_for(bad_id: str, server: MeterServer) -> None:
    """The server fails every batch that holds ``bad_id`` with the same 500."""

    def poison(request: httpx2.Request) -> httpx2.Response | None:
        if any(e["id"] == bad_id for e in json.loads(request.content)["events"]):
            return httpx2.Response(500, json={"error": {"code": "server_error"}})
        return None

    server.poison = poison


def wait_until(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_batch_failing_with_the_same_500_is_bisected_to_a_dead_letter(meter_server, tmp_path):
    answer_500_for("poison", meter_server)
    sender = sender_for(meter_server, tmp_path, backoff_base=0.01)
    for event_id in ("a", "b", "poison", "c", "d", "e"):
        sender.record(event(event_id))

    sender.flush(timeout=5)
    assert wait_until(lambda: len(dead_letters(tmp_path)) == 1)

    assert sorted(e["id"] for e in meter_server.events) == ["a", "b", "c", "d", "e"]
    [letter] = dead_letters(tmp_path)
    assert ([e["id"] for e in letter["events"]], letter["status"]) == (["poison"], 500)
    assert json.loads(letter["answer"]) == {"error": {"code": "server_error"}}
    assert spooled(tmp_path) == []


def test_a_poisoned_call_does_not_hold_back_the_calls_after_it(
    anthropic_api, meter_options, meter_server
):
    answer_500_for("msg_poisoned", meter_server)
    client = meter.wrap(anthropic_api.client(), client="acme", **meter_options)
    client.messages.create(**ASK, metadata={"user_id": "msg_poisoned"})
    meter.flush(timeout=5)  # the poisoned batch has failed once

    for number in range(5):
        client.messages.create(**ASK, metadata={"user_id": f"msg_after_{number}"})

    meter_server.wait_for(5, timeout=10)
    assert sorted(e["id"] for e in meter_server.events) == [f"msg_after_{n}" for n in range(5)]


def test_while_the_server_fails_everything_nothing_is_dead_lettered(meter_server, tmp_path):
    failing = [httpx2.Response(503) for _ in range(30)]
    meter_server.script = list(failing)
    sender = sender_for(meter_server, tmp_path, backoff_base=0.01, backoff_max=0.05)
    for event_id in ("a", "b", "c"):
        sender.record(event(event_id))
    sender.flush(timeout=5)

    assert wait_until(lambda: not meter_server.script)  # all 30 failures served
    meter_server.wait_for(3)

    assert dead_letters(tmp_path) == []
    assert sorted(e["id"] for e in meter_server.events) == ["a", "b", "c"]


def test_flush_says_false_and_logs_once_when_events_are_left_behind(tmp_path, caplog):
    server = MeterServer()
    server.script = [httpx2.Response(400, json={"error": {"code": "invalid"}})] * 3
    sender = sender_for(server, tmp_path)
    for event_id in ("a", "b"):
        sender.record(event(event_id))

    with caplog.at_level("WARNING", logger="clientmeter"):
        assert not meter.flush(timeout=5)

    left_behind = [r for r in caplog.records if "not everything was delivered" in r.message]
    assert len(left_behind) == 1
    assert "python -m clientmeter spool" in left_behind[0].message
    assert meter.flush(timeout=5)  # reported once: nothing new is left behind


def test_a_full_spool_refuses_new_batches_and_says_so(tmp_path, caplog):
    down = MeterServer()
    down.down = True
    sender = sender_for(down, tmp_path, queue_max_bytes=1, backoff_base=60)
    sender.record(event("first"))
    assert not sender.flush(timeout=5)

    sender.record(event("second"))
    with caplog.at_level("ERROR", logger="clientmeter"):
        assert not sender.flush(timeout=5)

    assert [e["id"] for e in spooled(tmp_path)] == ["first"]
    assert any(
        "is full" in r.message and "1 new events dropped" in r.message for r in caplog.records
    )


def test_full_dead_letters_drop_with_the_ids_logged(tmp_path, caplog):
    server = MeterServer()
    server.script = [httpx2.Response(422, json={"error": {"code": "invalid"}})] * 2
    sender = sender_for(server, tmp_path, dead_max_bytes=1)
    sender.record(event("kept"))
    sender.flush(timeout=5)

    sender.record(event("lost"))
    with caplog.at_level("ERROR", logger="clientmeter"):
        assert not sender.flush(timeout=5)

    assert [[e["id"] for e in letter["events"]] for letter in dead_letters(tmp_path)] == [["kept"]]
    assert any("dropped: lost" in r.message for r in caplog.records)
