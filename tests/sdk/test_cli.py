"""``python -m clientmeter spool``: the queue and dead letters per key; retry or drop them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import clientmeter as meter
import httpx2
from clientmeter._cli import main
from clientmeter._sender import Sender
from django.conf import settings

from tests.sdk.conftest import METER_URL, MeterServer

ACME_KEY = "cm_live_AcmeAcme_" + "a" * 32
GLOBEX_KEY = "cm_live_GlobexGl_" + "g" * 32


def event(event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "model": "claude-sonnet-4-6",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


def sender(server: Any, spool: Path, key: str) -> Sender:
    made = Sender(
        url=METER_URL,
        api_key=key,
        spool_dir=spool,
        http_client=httpx2.Client(transport=httpx2.MockTransport(server)),
        backoff_base=60,
    )
    meter._all_senders.append(made)
    return made


def spool_with_both_kinds(spool: Path) -> None:
    """Acme: 2 events queued (meter down), 1 dead letter (refused); Globex: 1 queued."""
    refusing = MeterServer()
    refusing.script = [httpx2.Response(422, json={"error": {"code": "invalid", "field": "x"}})]
    acme = sender(refusing, spool, ACME_KEY)
    acme.record(event("refused"))
    acme.flush(timeout=5)
    refusing.down = True
    acme.record(event("q1"))
    acme.record(event("q2"))
    acme.flush(timeout=5)
    down = MeterServer()
    down.down = True
    globex = sender(down, spool, GLOBEX_KEY)
    globex.record(event("g1"))
    globex.flush(timeout=5)


def blocks(text: str) -> dict[str, str]:
    """The show output per key: a heading line, then indented lines."""
    found: dict[str, str] = {}
    heading = ""
    for line in text.splitlines():
        if not line.startswith(" "):
            heading = line.split()[0]
            found[heading] = ""
        found[heading] += line + "\n"
    return found


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["spool", *args], out=out)
    return code, out.getvalue()


def test_show_lists_queue_and_dead_letters_per_key(tmp_path):
    spool_with_both_kinds(tmp_path)

    code, text = run("--dir", str(tmp_path))

    assert code == 0
    acme, globex = blocks(text)["cm_live_AcmeAcme"], blocks(text)["cm_live_GlobexGl"]
    assert "cm_live_AcmeAcme at https://meter.test" in acme
    assert "queued:       2 events in 1 batches" in acme
    assert "dead letters: 1 events in 1 files" in acme
    assert 'last refusal: 422 {"error":{"code":"invalid","field":"x"}}' in acme
    assert "last error:   ConnectError('connection refused')" in acme
    assert "queued:       1 events in 1 batches" in globex
    assert "dead letters: 0 events" in globex
    assert ACME_KEY not in text and GLOBEX_KEY not in text


def test_retry_puts_dead_letters_back_in_their_keys_queue(tmp_path):
    spool_with_both_kinds(tmp_path)

    code, text = run("retry", "--dir", str(tmp_path), "--key", "cm_live_AcmeAcme")

    assert code == 0
    assert "1 events queued again" in text
    assert list(tmp_path.glob("*/dead/*.json")) == []
    queued = {
        e["id"]
        for path in tmp_path.glob("*/queue/*.json")
        for e in json.loads(path.read_text())["events"]
    }
    assert queued == {"refused", "q1", "q2", "g1"}


def test_retried_events_go_out_with_their_own_key(tmp_path):
    spool_with_both_kinds(tmp_path)
    run("retry", "--dir", str(tmp_path))
    server = MeterServer(keys={ACME_KEY: "acme", GLOBEX_KEY: "globex"})

    sender(server, tmp_path, ACME_KEY).flush(timeout=5)

    assert server.stored_under == {"refused": "acme", "q1": "acme", "q2": "acme"}


def test_drop_needs_a_key_or_all(tmp_path):
    spool_with_both_kinds(tmp_path)

    code, text = run("drop", "--dir", str(tmp_path))

    assert (code, len(list(tmp_path.glob("*/dead/*.json")))) == (2, 1)
    assert "--key" in text


def test_drop_deletes_one_keys_dead_letters_and_with_queue_its_queue(tmp_path):
    spool_with_both_kinds(tmp_path)

    code, text = run("drop", "--dir", str(tmp_path), "--key", "cm_live_AcmeAcme", "--queue")

    assert code == 0
    assert "dropped 1 dead-letter events and 2 queued events" in text
    remaining = [
        e["id"]
        for path in tmp_path.glob("*/queue/*.json")
        for e in json.loads(path.read_text())["events"]
    ]
    assert remaining == ["g1"]


def test_an_unknown_key_is_an_error(tmp_path):
    spool_with_both_kinds(tmp_path)

    assert run("show", "--dir", str(tmp_path), "--key", "cm_live_Nobody00")[0] == 1


def test_the_module_runs_from_the_command_line(tmp_path):
    spool_with_both_kinds(tmp_path)

    result = subprocess.run(
        [sys.executable, "-m", "clientmeter", "spool", "--dir", str(tmp_path)],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "dead letters: 1 events in 1 files" in result.stdout
