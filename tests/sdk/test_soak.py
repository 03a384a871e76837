"""Soak: two keys, three processes (one of them forks a worker) on one spool, the meter
stopped and started twice; every event lands exactly once, under its own client.

The real app serves behind a loopback proxy that the test stops (listener closed, open
connections cut, as a restarting server does) and starts again on the same port. The
apps are subprocesses with the in-process Anthropic stand-in, sharing one spool folder.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from typing import cast

import clientmeter as meter
import pytest
from django.conf import settings
from django.db import connection

from agency.models import Client
from tests.factories import ClientFactory
from tests.sdk.anthropic_api import AnthropicAPI
from tracking.keys import api_key_create
from tracking.models import UsageEvent

pytestmark = [
    pytest.mark.live,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor == "sqlite",
        reason="the live server's shared in-memory SQLite database locks up under concurrent "
        "ingest requests from several processes; CI runs this on PostgreSQL",
    ),
]

CALLS_PER_KEY = 60  # per process: 4 processes × 2 keys × 60 = 480 events

APP = """
import os, sys, time
import clientmeter as meter
from tests.sdk.anthropic_api import AnthropicAPI

url, spool, name, acme_key, globex_key, calls, fork_at = sys.argv[1:8]
calls, fork_at = int(calls), int(fork_at)
api = AnthropicAPI()
clients = {
    "acme": meter.wrap(api.client(), client="acme", url=url, api_key=acme_key, spool_dir=spool),
    "globex": meter.wrap(api.client(), url=url, api_key=globex_key, spool_dir=spool),
}
ASK = dict(model="claude-sonnet-4-6", max_tokens=64, messages=[])

def work(who: str, start: int, stop: int) -> None:
    for number in range(start, stop):
        for slug, client in clients.items():
            client.messages.create(**ASK, metadata={"user_id": f"msg_{slug}_{who}_{number:03}"})
        time.sleep(0.05)

if fork_at:
    work(name, 0, fork_at)
    pid = os.fork()
    if pid == 0:  # a forked worker: the parent's wrapped clients, its own sender threads
        work(name + "w", 0, calls)
        meter.flush(timeout=30)
        os._exit(0)
    work(name, fork_at, calls)
    os.waitpid(pid, 0)
else:
    work(name, 0, calls)
meter.flush(timeout=30)
"""


class Proxy:
    """A loopback TCP proxy to the live server that can be stopped and started."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave
            # the port listening until then.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self.lock:
            connections, self.connections = self.connections, []
        for open_socket in connections:
            with contextlib.suppress(OSError):
                open_socket.shutdown(socket.SHUT_RDWR)
            open_socket.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                downstream.close()
                continue
            with self.lock:
                self.connections += [downstream, upstream]
            for source, target in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


def test_two_keys_three_processes_two_meter_restarts_every_event_once(rates, live_server, tmp_path):
    _, acme_key = api_key_create(name="acme app", client=cast(Client, ClientFactory(slug="acme")))
    _, globex_key = api_key_create(
        name="globex app", client=cast(Client, ClientFactory(slug="globex"))
    )
    host, port = live_server.thread.host, live_server.thread.port
    proxy = Proxy((host, port))
    proxy.start()
    spool = tmp_path / "spool"

    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                APP,
                proxy.url,
                str(spool),
                name,
                acme_key,
                globex_key,
                str(CALLS_PER_KEY),
                str(fork_at),
            ],
            cwd=settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, fork_at in (("p1", 0), ("p2", 0), ("p3", CALLS_PER_KEY // 3))
    ]
    for _ in range(2):  # the meter goes down and comes back, twice, while the apps run
        time.sleep(1.0)
        proxy.stop()
        time.sleep(1.5)
        proxy.start()
    outputs = [process.communicate(timeout=90) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs

    # Anything an app could not send before it exited waits in the spool for its key.
    for key in (acme_key, globex_key):
        meter.wrap(AnthropicAPI().client(), url=proxy.url, api_key=key, spool_dir=spool)
    assert meter.flush(timeout=30)
    proxy.stop()

    expected: dict[str, set[str]] = {"acme": set(), "globex": set()}
    for who in ("p1", "p2", "p3", "p3w"):
        for slug in expected:
            expected[slug] |= {f"msg_{slug}_{who}_{n:03}" for n in range(CALLS_PER_KEY)}
    stored = {
        slug: list(UsageEvent.objects.filter(client__slug=slug).values_list("event_id", flat=True))
        for slug in expected
    }
    assert {slug: len(ids) for slug, ids in stored.items()} == {"acme": 240, "globex": 240}
    assert {slug: set(ids) for slug, ids in stored.items()} == expected
    assert list(spool.glob("*/queue/*.json")) == []
    assert list(spool.glob("*/dead/*.json")) == []
