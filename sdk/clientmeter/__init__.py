"""ClientMeter SDK: wrap your Anthropic or OpenAI client and every call's usage is recorded.

    import anthropic
    import clientmeter as meter

    client = meter.wrap(anthropic.Anthropic(), client="acme", project="support-bot")

Configuration comes from arguments or the environment: CLIENTMETER_URL,
CLIENTMETER_API_KEY, CLIENTMETER_SPOOL_DIR (where unsent events wait; default a per-user
cache directory) and CLIENTMETER_EXIT_TIMEOUT (seconds the exit may take; 5).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from clientmeter import _observe, _sender
from clientmeter._budget import BudgetExceeded, BudgetGuard
from clientmeter._sender import Sender, default_spool_dir
from clientmeter._tags import make_tags, tags
from clientmeter._wrap import Meter, Provider, meter_of, metered_copy

__all__ = ["BudgetExceeded", "flush", "tags", "with_tags", "wrap"]
__version__ = "0.2.0"

log = logging.getLogger("clientmeter")

C = TypeVar("C")

_registry_lock = threading.Lock()
_shared_senders: dict[tuple[str, str, str], Sender] = {}
_all_senders: list[Sender] = []


def _sender_for(*, url: str, api_key: str, spool_dir: Path, http_client: Any) -> Sender:
    """One sender (one thread) per server, key and spool, shared by every wrapped client."""
    key = (url.rstrip("/"), api_key, str(spool_dir))
    with _registry_lock:
        if http_client is None and key in _shared_senders:
            return _shared_senders[key]
        sender = Sender(url=url, api_key=api_key, spool_dir=spool_dir, http_client=http_client)
        if http_client is None:
            _shared_senders[key] = sender
        _all_senders.append(sender)
        return sender


def _provider_of(provider_client: Any) -> tuple[Provider, bool]:
    """Which SDK the client comes from (by its classes' modules), and whether it is async."""
    mro = type(provider_client).__mro__
    is_async = any(cls.__name__ == "AsyncAPIClient" for cls in mro)
    for cls in mro:
        root = cls.__module__.split(".", 1)[0]
        if root == "anthropic":
            from clientmeter._anthropic import ANTHROPIC

            return ANTHROPIC, is_async
        if root == "openai":
            from clientmeter._openai import OPENAI

            return OPENAI, is_async
    raise TypeError(
        f"meter.wrap() takes an anthropic or openai client, not {type(provider_client).__name__}"
    )


def wrap(
    provider_client: C,
    /,
    *,
    client: str | None = None,
    project: str | None = None,
    feature: str | None = None,
    user: str | None = None,
    team: str | None = None,
    deploy_sha: str | None = None,
    metadata: Mapping[str, object] | None = None,
    url: str | None = None,
    api_key: str | None = None,
    budget_guard: bool = False,
    spool_dir: str | os.PathLike[str] | None = None,
    http_client: Any = None,
) -> C:
    """A copy of ``provider_client`` that sends the usage of every call to ClientMeter.

    ``provider_client`` is an ``anthropic`` client (``Anthropic``, ``AsyncAnthropic``, the
    Bedrock and Vertex ones) or an ``openai`` one (``OpenAI``, ``AsyncOpenAI``, Azure).
    ``client`` is the client's slug (required with an agency-wide key), the other tags are
    defaults for every call. ``budget_guard=True`` makes calls raise ``BudgetExceeded``
    while the client's budget status is red. ``http_client`` (an ``httpx2.Client``) is
    used to talk to ClientMeter, for proxies or tests.
    """
    if budget_guard and not client:
        raise ValueError("budget_guard=True needs client=<the client's slug>")
    provider, is_async = _provider_of(provider_client)
    url = url or os.environ.get("CLIENTMETER_URL")
    api_key = api_key or os.environ.get("CLIENTMETER_API_KEY")
    sender = guard = None
    if url and api_key:
        spool = Path(spool_dir) if spool_dir is not None else default_spool_dir()
        sender = _sender_for(url=url, api_key=api_key, spool_dir=spool, http_client=http_client)
        if budget_guard and client:
            guard = BudgetGuard(url=url, api_key=api_key, client=client, http_client=http_client)
    else:
        log.warning(
            "ClientMeter: set CLIENTMETER_URL and CLIENTMETER_API_KEY (or pass url= and "
            "api_key=); until then usage is not recorded"
        )
    defaults = make_tags(
        project=project,
        feature=feature,
        user=user,
        team=team,
        deploy_sha=deploy_sha,
        metadata=metadata,
    )
    meter = Meter(sender=sender, client=client, defaults=defaults, guard=guard)
    metered: Any = metered_copy(provider_client, meter, provider, is_async=is_async)
    return metered


def with_tags(
    metered_client: C,
    /,
    *,
    project: str | None = None,
    feature: str | None = None,
    user: str | None = None,
    team: str | None = None,
    prompt_hash: str | None = None,
    metadata: Mapping[str, object] | None = None,
) -> C:
    """The same wrapped client with tags for the calls made through it (per call tagging).

    ``meter.with_tags(client, user="u-42").messages.create(...)``. These tags win over
    ``tags()`` blocks and the ``wrap`` defaults.
    """
    meter = meter_of(metered_client)
    if meter is None:
        log.warning("ClientMeter: with_tags() needs a client returned by wrap(); tags ignored")
        return metered_client
    call_tags = make_tags(
        project=project,
        feature=feature,
        user=user,
        team=team,
        prompt_hash=prompt_hash,
        metadata=metadata,
    )
    derived: Any = metered_client
    derived = derived.copy()
    derived._cm_meter = meter.with_tags(call_tags)
    return derived


def flush(timeout: float | None = 5.0) -> bool:
    """Send everything recorded so far; True when all of it reached ClientMeter.

    Whatever could not be sent within ``timeout`` seconds stays in the spool directory and
    goes out in the background, or at the next start. False (with one warning) when
    anything is left behind: still queued, or moved to the dead letters since the last
    ``flush()``.
    """
    with _registry_lock:
        senders = list(_all_senders)
    deadline = None if timeout is None else time.monotonic() + timeout
    tickets = [(sender, sender.request_flush()) for sender in senders]
    left = [sender for sender, ticket in tickets if not sender.await_flush(ticket, deadline)]
    if left:
        queued = sum(sender.queued_batches() for sender in left)
        folders = ", ".join(str(sender.spool.directory or "memory") for sender in left)
        log.warning(
            "ClientMeter: not everything was delivered: %d batch(es) still queued, or events "
            "moved to the dead letters, in %s; see `python -m clientmeter spool`",
            queued,
            folders,
        )
    return not left


def exit_timeout() -> float:
    try:
        return max(0.0, float(os.environ.get("CLIENTMETER_EXIT_TIMEOUT", "5")))
    except ValueError:
        return 5.0


def _flush_at_exit() -> None:
    """Bounded: calls still in flight are recorded as seen so far, then one shared deadline."""
    try:
        _observe.finish_all()
        flush(exit_timeout())
    except Exception:
        log.exception("ClientMeter: flush at exit failed")
    finally:
        # From here on (module teardown, a stream collected late) events go straight to
        # the spool: no thread may start while the interpreter shuts down.
        _sender.exit_flush_done()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    _observe.forget_all()


atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
