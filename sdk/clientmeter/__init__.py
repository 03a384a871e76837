"""ClientMeter SDK: wrap your Anthropic client and every call's usage is recorded.

    import anthropic
    import clientmeter as meter

    client = meter.wrap(anthropic.Anthropic(), client="acme", project="support-bot")

Configuration comes from arguments or the environment: CLIENTMETER_URL,
CLIENTMETER_API_KEY, CLIENTMETER_SPOOL_DIR (where unsent events wait; default a per-user
cache directory) and CLIENTMETER_EXIT_TIMEOUT (seconds the exit flush may take; 5).
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from clientmeter._budget import BudgetExceeded, BudgetGuard
from clientmeter._sender import Sender, default_spool_dir
from clientmeter._tags import make_tags, tags
from clientmeter._wrap import Meter, MeteredClient

__all__ = ["BudgetExceeded", "flush", "tags", "with_tags", "wrap"]
__version__ = "0.1.0"

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


def _is_async(anthropic_client: Any) -> bool:
    """AsyncAnthropic, and the async Bedrock and Vertex clients, share the SDK's async base."""
    try:
        from anthropic._base_client import AsyncAPIClient
    except ImportError:  # pragma: no cover - an SDK that moved its base class
        create = inspect.unwrap(anthropic_client.messages.create)
        return inspect.iscoroutinefunction(create)
    return isinstance(anthropic_client, AsyncAPIClient)


def wrap(
    anthropic_client: C,
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
    """Return ``anthropic_client`` with the usage of every call sent to ClientMeter.

    ``client`` is the client's slug (required with an agency-wide key), the other tags are
    defaults for every call. ``budget_guard=True`` makes calls raise ``BudgetExceeded``
    while the client's budget status is red. ``http_client`` (an ``httpx2.Client``) is
    used to talk to ClientMeter, for proxies or tests.
    """
    if budget_guard and not client:
        raise ValueError("budget_guard=True needs client=<the client's slug>")
    inner: Any = anthropic_client
    if type(inner) is MeteredClient:
        inner = inner._cm_inner
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
    metered: Any = MeteredClient(inner, meter, is_async=_is_async(inner))
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
    proxy: Any = metered_client
    if type(proxy) is not MeteredClient:
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
    derived: Any = proxy._cm_derive(proxy._cm_inner, proxy._cm_meter.with_tags(call_tags))
    return derived


def flush(timeout: float | None = 5.0) -> bool:
    """Send everything recorded so far; True when all of it reached ClientMeter.

    Whatever could not be sent within ``timeout`` seconds stays in the spool directory and
    goes out in the background, or at the next start.
    """
    with _registry_lock:
        senders = list(_all_senders)
    ok = True
    for sender in senders:
        ok = sender.flush(timeout) and ok
    return ok


def _flush_at_exit() -> None:
    try:
        timeout = float(os.environ.get("CLIENTMETER_EXIT_TIMEOUT", "5"))
    except ValueError:
        timeout = 5.0
    try:
        flush(timeout)
    except Exception:
        log.exception("ClientMeter: flush at exit failed")


atexit.register(_flush_at_exit)
