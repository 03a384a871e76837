"""SDK benchmark: what wrapping a client costs the app per call, and sender throughput.

    .venv/bin/python benchmarks/sdk_bench.py [--calls 2000] [--events 50000]

Stand-ins for the Anthropic and OpenAI APIs and for ClientMeter run as real HTTP servers
on the loopback interface, in a separate process (so they do not share the app's GIL),
answering with the bodies of tests/sdk/anthropic_api.py and openai_api.py. For each kind
of call, plain and wrapped calls alternate, so drift in the machine's load hits both
alike; the overhead is the median of the paired differences (target: under 0.5 ms).
The load average is printed before and after: the machine is shared.

The second part times the sender alone: events recorded per second by the app thread,
and delivered per second (batching, spool file write and delete, JSON, POST) until all
arrived, with ClientMeter answering after 20 ms.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anthropic
import clientmeter as meter
import openai
from clientmeter._sender import Sender

from tests.sdk import anthropic_api, openai_api

ASK: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, Claude"}],
}
CHAT: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
RESPOND: dict[str, Any] = {"model": "gpt-5", "input": "A story"}


class StandIn(BaseHTTPRequestHandler):
    """Anthropic, OpenAI and ClientMeter on one loopback port, with keep-alive."""

    protocol_version = "HTTP/1.1"
    # Headers and body in one segment, sent at once: otherwise Nagle's algorithm and the
    # client's delayed ACK add 40 ms to every response, drowning what is measured.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    meter_delay = 0.0

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._send(200, "application/json", json.dumps({"status": "green"}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/api/v1/usage":
            time.sleep(self.meter_delay)
            results = [{"id": e["id"], "status": "accepted"} for e in body["events"]]
            self._send(200, "application/json", json.dumps({"results": results}).encode())
        elif self.path.startswith("/v1/messages"):
            if body.get("stream"):
                self._send(
                    200, "text/event-stream", anthropic_api.sse(anthropic_api.stream_events())
                )
            else:
                self._send(
                    200, "application/json", json.dumps(anthropic_api.message_body()).encode()
                )
        elif self.path == "/v1/chat/completions":
            if body.get("stream"):
                include = bool((body.get("stream_options") or {}).get("include_usage"))
                chunks = openai_api.sse_data(openai_api.chat_chunks(include), named=False)
                self._send(200, "text/event-stream", b"".join(chunks) + b"data: [DONE]\n\n")
            else:
                self._send(
                    200, "application/json", json.dumps(openai_api.chat_completion()).encode()
                )
        elif self.path == "/v1/responses":
            self._send(200, "application/json", json.dumps(openai_api.response_body()).encode())
        else:
            self._send(404, "application/json", b"{}")

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
        self.end_headers()
        self.wfile.write(payload)


def serve(port_queue: Any, meter_delay: float) -> None:
    StandIn.meter_delay = meter_delay
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    port_queue.put(server.server_address[1])
    server.serve_forever()


def start_stand_in(meter_delay: float = 0.0) -> tuple[str, multiprocessing.Process]:
    ports: Any = multiprocessing.Queue()
    process = multiprocessing.Process(target=serve, args=(ports, meter_delay), daemon=True)
    process.start()
    return f"http://127.0.0.1:{ports.get(timeout=30)}", process


def paired(plain: Callable[[], Any], wrapped: Callable[[], Any], count: int) -> dict[str, float]:
    for _ in range(100):  # warm up connections, caches, the sender thread
        plain()
        wrapped()
    plain_us, wrapped_us, diffs = [], [], []
    for number in range(count):
        order = (plain, wrapped) if number % 2 else (wrapped, plain)
        took = {}
        for call in order:
            started = time.perf_counter()
            call()
            took[call] = (time.perf_counter() - started) * 1e6
        plain_us.append(took[plain])
        wrapped_us.append(took[wrapped])
        diffs.append(took[wrapped] - took[plain])
    return {
        "plain": statistics.median(plain_us),
        "wrapped": statistics.median(wrapped_us),
        "overhead": statistics.median(diffs),
        "overhead_p90": statistics.quantiles(diffs, n=10)[-1],
    }


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--events", type=int, default=50000)
    args = parser.parse_args()
    spool = Path(tempfile.mkdtemp(prefix="clientmeter-bench-"))
    url, stand_in = start_stand_in()
    options: dict[str, Any] = {
        "url": url,
        "api_key": "cm_live_BenchBen_" + "b" * 32,
        "spool_dir": spool,
    }

    plain_a = anthropic.Anthropic(api_key="sk-ant-bench", base_url=url, max_retries=0)
    metered_a = meter.wrap(
        anthropic.Anthropic(api_key="sk-ant-bench", base_url=url, max_retries=0),
        client="acme",
        project="bench",
        **options,
    )
    plain_o = openai.OpenAI(api_key="sk-bench", base_url=f"{url}/v1", max_retries=0)
    metered_o = meter.wrap(
        openai.OpenAI(api_key="sk-bench", base_url=f"{url}/v1", max_retries=0),
        client="acme",
        **options,
    )

    def helper_stream(client: anthropic.Anthropic) -> None:
        with client.messages.stream(**ASK) as stream:
            stream.until_done()

    def raw_stream(client: anthropic.Anthropic) -> None:
        for _ in client.messages.create(**ASK, stream=True):
            pass

    def chat_stream(client: openai.OpenAI) -> None:
        for _ in client.chat.completions.create(**CHAT, stream=True):
            pass

    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        (
            "anthropic messages.create",
            lambda: plain_a.messages.create(**ASK),
            lambda: metered_a.messages.create(**ASK),
        ),
        (
            "anthropic messages.stream",
            lambda: helper_stream(plain_a),
            lambda: helper_stream(metered_a),
        ),
        (
            "anthropic create(stream=True)",
            lambda: raw_stream(plain_a),
            lambda: raw_stream(metered_a),
        ),
        (
            "openai chat.completions",
            lambda: plain_o.chat.completions.create(**CHAT),
            lambda: metered_o.chat.completions.create(**CHAT),
        ),
        ("openai chat stream", lambda: chat_stream(plain_o), lambda: chat_stream(metered_o)),
        (
            "openai responses.create",
            lambda: plain_o.responses.create(**RESPOND),
            lambda: metered_o.responses.create(**RESPOND),
        ),
    ]
    print(f"{args.calls} paired calls each, stand-ins on the loopback; load average {load()}")
    print(f"{'call':<31}{'plain p50':>11}{'wrapped p50':>13}{'overhead p50':>14}{'p90':>9}")
    worst = 0.0
    for name, plain, wrapped in cases:
        figures = paired(plain, wrapped, args.calls)
        worst = max(worst, figures["overhead"])
        print(
            f"{name:<31}{figures['plain']:>8.0f} µs{figures['wrapped']:>10.0f} µs"
            f"{figures['overhead']:>+11.0f} µs{figures['overhead_p90']:>+6.0f} µs"
        )
    verdict = "met" if worst < 500 else "MISSED"
    print(
        f"largest median overhead {worst:.0f} µs (target < 500 µs: {verdict}); load average {load()}"
    )
    assert meter.flush(timeout=60)
    stand_in.terminate()

    slow_url, slow = start_stand_in(meter_delay=0.02)
    sender = Sender(url=slow_url, api_key="cm_live_BenchBen_" + "c" * 32, spool_dir=spool)
    event = {
        "client": "acme",
        "model": "claude-sonnet-4-6",
        "usage": {"input_tokens": 2048, "output_tokens": 503, "service_tier": "standard"},
        "occurred_at": "2026-11-23T09:00:00.000+00:00",
    }
    started = time.perf_counter()
    for number in range(args.events):
        sender.record({**event, "id": f"bench-{number}"})
    recorded = time.perf_counter() - started
    assert sender.flush(timeout=300)
    delivered = time.perf_counter() - started
    print(
        f"sender: {args.events} events recorded at {args.events / recorded:,.0f}/s by the app "
        f"thread; all delivered in {delivered:.2f} s = {args.events / delivered:,.0f} events/s "
        f"(batches of {sender.max_batch}, spooled before each send, ClientMeter answering in "
        f"20 ms); load average {load()}"
    )
    slow.terminate()


if __name__ == "__main__":
    main()
