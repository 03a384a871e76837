"""Delivery state per (meter URL, key): a batch only ever leaves with the key it was recorded under.

Issue 9, finding 1: the spool was keyed by URL only, so a process sent another key's
spooled batches with its own key (stored under the wrong client, or rejected and dropped
while ``flush()`` said True), and two keys in one process lost events. The stand-in meter
binds keys to clients as the real one does (the live tests repeat this on the real app).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import clientmeter as meter
import httpx2
import pytest
from clientmeter._sender import Sender
from clientmeter._spool import key_fingerprint

from tests.sdk.anthropic_api import MODEL, AnthropicAPI
from tests.sdk.conftest import METER_URL, MeterServer, process_exit

ACME_KEY = "cm_live_AcmeAcme_" + "a" * 32
GLOBEX_KEY = "cm_live_GlobexGl_" + "g" * 32
KEYS = {ACME_KEY: "acme", GLOBEX_KEY: "globex"}
ASK: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "messages": []}


@pytest.fixture
def server() -> MeterServer:
    return MeterServer(keys=KEYS)


def app(server: MeterServer, spool: Path, key: str, slug: str | None) -> Any:
    """One client app: its own Anthropic client, wrapped with its own key."""
    return meter.wrap(
        AnthropicAPI().client(),
        client=slug,
        url=METER_URL,
        api_key=key,
        spool_dir=spool,
        http_client=httpx2.Client(transport=httpx2.MockTransport(server)),
    )


def calls(client: Any, prefix: str, count: int) -> list[str]:
    ids = [f"msg_{prefix}_{number:03}" for number in range(count)]
    for message_id in ids:
        client.messages.create(**ASK, metadata={"user_id": message_id})
    return ids


def queued_ids(spool: Path, key: str) -> list[str]:
    folder = spool / key_fingerprint(METER_URL, key) / "queue"
    return sorted(
        event["id"]
        for path in folder.glob("*.json")
        for event in json.loads(path.read_text())["events"]
    )


@pytest.mark.parametrize("slug", [True, False], ids=["client-tagged", "key-only"])
def test_a_restarted_app_sends_only_its_own_keys_spooled_events(server, tmp_path, slug):
    server.down = True
    acme_ids = calls(app(server, tmp_path, ACME_KEY, "acme" if slug else None), "acme", 20)
    globex_ids = calls(app(server, tmp_path, GLOBEX_KEY, "globex" if slug else None), "globex", 20)
    process_exit()
    server.down = False

    app(server, tmp_path, ACME_KEY, "acme" if slug else None)  # only Acme's app comes back

    assert meter.flush(timeout=10)
    assert server.stored_under == dict.fromkeys(acme_ids, "acme")
    assert queued_ids(tmp_path, GLOBEX_KEY) == globex_ids  # waiting for its own key

    app(server, tmp_path, GLOBEX_KEY, "globex" if slug else None)
    assert meter.flush(timeout=10)
    assert server.stored_under == {
        **dict.fromkeys(acme_ids, "acme"),
        **dict.fromkeys(globex_ids, "globex"),
    }


def test_two_keys_in_two_threads_lose_nothing(server, tmp_path):
    acme = app(server, tmp_path, ACME_KEY, "acme")
    globex = app(server, tmp_path, GLOBEX_KEY, "globex")
    sent: dict[str, list[str]] = {}

    def run(client: Any, prefix: str) -> None:
        sent[prefix] = calls(client, prefix, 300)

    threads = [
        threading.Thread(target=run, args=(acme, "acme")),
        threading.Thread(target=run, args=(globex, "globex")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert meter.flush(timeout=20)
    assert server.stored_under == {
        **dict.fromkeys(sent["acme"], "acme"),
        **dict.fromkeys(sent["globex"], "globex"),
    }


def test_the_key_is_never_written_to_disk(server, tmp_path):
    server.down = True
    calls(app(server, tmp_path, ACME_KEY, "acme"), "acme", 3)
    process_exit()

    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert files
    assert not any(ACME_KEY.split("_")[-1].encode() in path.read_bytes() for path in files)
    [key_file] = tmp_path.glob("*/key.json")
    assert json.loads(key_file.read_text())["key_prefix"] == "cm_live_AcmeAcme"


def test_each_url_and_key_has_its_own_folder(tmp_path):
    folders = {
        key_fingerprint("https://meter.test", ACME_KEY),
        key_fingerprint("https://meter.test/", ACME_KEY),
        key_fingerprint("https://meter.test", GLOBEX_KEY),
        key_fingerprint("https://other.test", ACME_KEY),
    }

    assert len(folders) == 3  # a trailing slash is the same server


def test_two_senders_on_one_spool_send_each_batch_once(server, tmp_path):
    """Two processes (here: two senders, each with its own locks) share one spool."""
    server.down = True
    before = Sender(url=METER_URL, api_key=ACME_KEY, spool_dir=tmp_path, backoff_base=60)
    for number in range(500):
        before.record(
            {
                "id": f"e{number:03}",
                "model": MODEL,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            }
        )
        if number % 50 == 49:
            before._spool_buffer()  # ten batches on disk
    before._closed = True
    server.down = False

    def slow(request: httpx2.Request) -> httpx2.Response:
        threading.Event().wait(0.02)
        return server(request)

    senders = [
        Sender(
            url=METER_URL,
            api_key=ACME_KEY,
            spool_dir=tmp_path,
            http_client=httpx2.Client(transport=httpx2.MockTransport(slow)),
        )
        for _ in range(2)
    ]
    meter._all_senders.extend(senders)

    assert meter.flush(timeout=20)
    assert len(server.accepted) == 500
    assert set(server.posts_per_id.values()) == {1}
