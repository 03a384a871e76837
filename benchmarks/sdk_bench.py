"""SDK benchmark: what wrapping the Anthropic client costs the app, and sender throughput.

    .venv/bin/python benchmarks/sdk_bench.py [--calls 3000] [--events 50000]

Both Anthropic and ClientMeter are in-process fakes (httpx2 MockTransport; ClientMeter
answers after 20 ms, like a nearby server), so the figures are the SDK's own cost:

1. ``messages.create`` and a streamed ``messages.stream`` on a plain client and on the
   wrapped one: p50/p99 per call in microseconds and the difference (target: no
   noticeable latency, i.e. well under a millisecond per call, no network wait);
2. the sender alone: events recorded per second by the app thread, and events delivered
   per second (batching, spool file write and delete, JSON, POST) until all arrived.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anthropic
import clientmeter as meter
import httpx2
from clientmeter._sender import Sender

from tests.sdk.anthropic_api import AnthropicAPI

ASK: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, Claude"}],
}


class SlowMeter:
    """Accepts every event after 20 ms."""

    def __init__(self) -> None:
        self.received = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        time.sleep(0.02)
        events = json.loads(request.content)["events"]
        self.received += len(events)
        results = [{"id": event["id"], "status": "accepted"} for event in events]
        return httpx2.Response(200, json={"results": results})


def timed(call: Callable[[], Any], count: int) -> list[float]:
    for _ in range(50):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1]


def compare(name: str, plain: Callable[[], Any], wrapped: Callable[[], Any], count: int) -> None:
    base = timed(plain, count)
    metered = timed(wrapped, count)
    print(
        f"{name:<22} plain p50 {p(base, 50):7.0f} µs  p99 {p(base, 99):7.0f} µs | "
        f"wrapped p50 {p(metered, 50):7.0f} µs  p99 {p(metered, 99):7.0f} µs | "
        f"overhead p50 {p(metered, 50) - p(base, 50):+6.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--events", type=int, default=50000)
    args = parser.parse_args()
    spool = Path(tempfile.mkdtemp(prefix="clientmeter-bench-"))

    api = AnthropicAPI()
    server = SlowMeter()
    plain: anthropic.Anthropic = api.client()
    wrapped = meter.wrap(
        api.client(),
        client="acme",
        project="bench",
        url="https://meter.test",
        api_key="cm_live_bench",
        spool_dir=spool,
        http_client=httpx2.Client(transport=httpx2.MockTransport(server)),
    )

    def stream(client: anthropic.Anthropic) -> None:
        with client.messages.stream(**ASK) as events:
            events.until_done()

    print(f"{args.calls} calls each, fake Anthropic in-process:")
    compare(
        "messages.create",
        lambda: plain.messages.create(**ASK),
        lambda: wrapped.messages.create(**ASK),
        args.calls,
    )
    compare("messages.stream", lambda: stream(plain), lambda: stream(wrapped), args.calls)
    meter.flush(timeout=30)

    sender = Sender(
        url="https://meter.test",
        api_key="cm_live_bench",
        spool_dir=spool,
        http_client=httpx2.Client(transport=httpx2.MockTransport(server)),
    )
    event = {
        "client": "acme",
        "model": "claude-sonnet-4-6",
        "usage": {"input_tokens": 2048, "output_tokens": 503, "service_tier": "standard"},
        "occurred_at": "2026-11-23T09:00:00.000+00:00",
    }
    before = server.received
    started = time.perf_counter()
    for number in range(args.events):
        sender.record({**event, "id": f"bench-{number}"})
    recorded = time.perf_counter() - started
    sender.flush(timeout=300)
    delivered = time.perf_counter() - started
    assert server.received - before == args.events
    print(
        f"sender: {args.events} events recorded at {args.events / recorded:,.0f}/s by the app "
        f"thread; all delivered in {delivered:.2f} s = {args.events / delivered:,.0f} events/s "
        f"(batches of {sender.max_batch}, server answering in 20 ms)"
    )


if __name__ == "__main__":
    main()
