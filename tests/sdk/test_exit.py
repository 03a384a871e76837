"""Exit is bounded by CLIENTMETER_EXIT_TIMEOUT, and calls in flight at exit are kept.

Issue 9, finding 3: a half-read stream kept referenced hung the interpreter at exit (its
cleanup started a sender thread during shutdown) and the call was lost. Each test runs a
small app in a subprocess against the in-process Anthropic stand-in, with ClientMeter down
or hanging, and reads the spool it leaves.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

EXIT_TIMEOUT = 2.0
# Interpreter teardown after the SDK's exit hook: generous on a loaded machine.
SLACK = 3.0

PRELUDE = """
import sys, threading, time
import clientmeter as meter
from tests.sdk.anthropic_api import AnthropicAPI

api = AnthropicAPI()
client = meter.wrap(
    api.client(), client="acme", url=sys.argv[1], api_key="cm_live_AbCdEfGh_" + "x" * 32,
    spool_dir=sys.argv[2],
)
ASK = dict(model="claude-sonnet-4-6", max_tokens=64, messages=[])
"""

HALF_READ_STREAM = """
stream = client.messages.create(**ASK, stream=True)
for number, event in enumerate(stream):
    if event.type == "content_block_delta":
        break  # and keep the reference: the interpreter must still exit
"""

IN_FLIGHT_STREAM = """
api.gate = threading.Event()  # never opened: the rest of the stream never arrives
api.gate_at = 4

def read() -> None:
    for event in client.messages.create(**ASK, stream=True):
        pass

threading.Thread(target=read, daemon=True).start()
time.sleep(0.5)  # the thread now waits inside the stream
"""

CREATE = """
client.messages.create(**ASK)
"""

EPILOGUE = """
print(time.time(), flush=True)
"""


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def hanging_meter() -> Iterator[str]:
    """A ClientMeter that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def run_app(body: str, url: str, spool: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the app; return its result and the seconds from its last line to its exit."""
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + body + EPILOGUE, url, str(spool)],
        cwd=settings.BASE_DIR,
        env={**_env(), "CLIENTMETER_EXIT_TIMEOUT": str(EXIT_TIMEOUT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ended = time.time()
    assert result.returncode == 0, result.stderr
    return result, ended - float(result.stdout.split()[-1])


def _env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if not key.startswith("CLIENTMETER")}


def spooled(spool: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted(spool.glob("*/queue/*.json")):
        events.extend(json.loads(path.read_text())["events"])
    return events


def test_a_half_read_stream_does_not_hold_the_exit_and_is_kept(tmp_path):
    _, exit_seconds = run_app(HALF_READ_STREAM, closed_port_url(), tmp_path)

    assert exit_seconds < EXIT_TIMEOUT + SLACK
    [event] = spooled(tmp_path)
    # Read up to the first text delta: message_start's preliminary counts are all there is.
    assert (event["id"], event["usage"]["input_tokens"], event["usage"]["output_tokens"]) == (
        "msg_01StreamedAAAAAAAAAAAAAA",
        25,
        1,
    )


def test_a_stream_in_flight_in_another_thread_is_recorded_at_exit(tmp_path):
    _, exit_seconds = run_app(IN_FLIGHT_STREAM, closed_port_url(), tmp_path)

    assert exit_seconds < EXIT_TIMEOUT + SLACK
    [event] = spooled(tmp_path)
    assert (event["id"], event["usage"]["output_tokens"]) == ("msg_01StreamedAAAAAAAAAAAAAA", 1)


def test_a_meter_that_never_answers_costs_at_most_the_exit_timeout(hanging_meter, tmp_path):
    _, exit_seconds = run_app(CREATE, hanging_meter, tmp_path)

    assert exit_seconds < EXIT_TIMEOUT + SLACK
    assert [event["id"] for event in spooled(tmp_path)] == ["msg_01XFDUDYJgAACzvnptvVoYEL"]


def test_the_exit_timeout_is_shared_by_every_key(hanging_meter, tmp_path):
    two_keys = CREATE + (
        "other = meter.wrap(api.client(), client='globex', url=sys.argv[1], "
        "api_key='cm_live_ZyXwVuTs_' + 'y' * 32, spool_dir=sys.argv[2])\n"
        "other.messages.create(**ASK, metadata={'user_id': 'msg_for_globex'})\n"
    )

    _, exit_seconds = run_app(two_keys, hanging_meter, tmp_path)

    assert exit_seconds < EXIT_TIMEOUT + SLACK
    assert sorted(event["id"] for event in spooled(tmp_path)) == [
        "msg_01XFDUDYJgAACzvnptvVoYEL",
        "msg_for_globex",
    ]
